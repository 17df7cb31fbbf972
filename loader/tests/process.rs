//! Process-tier tests: real target programs built from `testkernels/proc` at
//! test time, patched live through ptrace by the loader library.

mod support;

use loader::{Error, Options, Patch, State};
use patchgen::Status;
use patchgen::format::Kind;
use std::time::Duration;
use support::{Build, Running, Spec, TargetKind, field, wait_until};

const PIE: TargetKind = TargetKind {
    pie: true,
    lib: false,
};

fn opts(secs: u64) -> Options {
    Options {
        timeout: Duration::from_secs(secs),
        ..Options::default()
    }
}

fn read_patch(p: &std::path::Path) -> Patch {
    Patch::read(p).expect("read patch")
}

fn apply_revert_round(kind: TargetKind, args: &[&str]) {
    let b = Build::new();
    let bin = b.target(kind);
    let patch = read_patch(&b.patch("compute_v2.c", &Spec::new("v2", &bin, &["compute"])));
    let mut t = Running::start(&bin, args);
    assert_eq!(t.call(5), 11);
    let rep = loader::apply(t.pid, &patch, &opts(10)).expect("apply");
    assert_eq!(rep.funcs.len(), 1);
    assert!(rep.pause_us > 0);
    assert_eq!(t.call(5), 22);
    let l = loader::list(t.pid).expect("list");
    assert_eq!(l.len(), 1);
    assert_eq!(l[0].record.id, "v2");
    assert_eq!(l[0].state, State::Active);
    assert_eq!(l[0].record.funcs[0].name, "compute");
    loader::revert(t.pid, "v2", &opts(10)).expect("revert");
    assert_eq!(t.call(5), 11);
    assert!(loader::list(t.pid).expect("list").is_empty());
    // The patch mapping is gone.
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", t.pid)).expect("maps");
    // Compare start addresses as numbers: "40b000-" is also a substring
    // of "7fa27040b000-".
    let base = l[0].record.base;
    let mapped = maps
        .lines()
        .filter_map(|m| u64::from_str_radix(m.split('-').next()?, 16).ok())
        .any(|a| a == base);
    assert!(
        !mapped,
        "patch mapping {base:#x} still mapped after revert:\n{maps}"
    );
}

/// Address ranges (runtime) of functions `names` of `proc`'s main object.
fn main_functions<const N: usize>(
    proc: &loader::target::Process,
    names: [&str; N],
) -> [(u64, u64); N] {
    let main = proc
        .objects
        .iter()
        .find(|o| o.is_main)
        .expect("main object");
    let syms = main
        .symbols(std::path::Path::new("/nonexistent"))
        .expect("symbols");
    names.map(|name| {
        syms.symtab
            .iter()
            .find(|s| s.name == name)
            .map(|s| (main.bias + s.value, main.bias + s.value + s.size))
            .expect("function in the main object")
    })
}

/// Unwinder modules of every object mapped in `proc`.
fn modules(proc: &loader::target::Process) -> Vec<loader::check::Module> {
    proc.objects
        .iter()
        .map(loader::check::Module::from_object)
        .collect()
}

#[test]
fn single_thread_pie() {
    apply_revert_round(PIE, &[]);
}

#[test]
fn single_thread_non_pie() {
    apply_revert_round(
        TargetKind {
            pie: false,
            lib: false,
        },
        &[],
    );
}

#[test]
fn sixty_four_threads_non_pie() {
    apply_revert_round(
        TargetKind {
            pie: false,
            lib: false,
        },
        &["--idle", "64"],
    );
}

#[test]
fn hammer_64_threads_200_cycles() {
    let b = Build::new();
    let bin = b.target(PIE);
    let patch = read_patch(&b.patch("compute_v2.c", &Spec::new("v2", &bin, &["compute"])));
    let mut t = Running::start(&bin, &["--hammer", "64"]);
    let before = t.status("calls");
    let mut max_pause = 0;
    for i in 0..200 {
        let a = loader::apply(t.pid, &patch, &opts(20));
        assert!(a.is_ok(), "cycle {i}: apply: {:?}", a.err());
        max_pause = max_pause.max(a.map(|r| r.pause_us).unwrap_or(0));
        let r = loader::revert(t.pid, "v2", &opts(20));
        assert!(r.is_ok(), "cycle {i}: revert: {:?}", r.err());
    }
    assert!(t.alive(), "target crashed");
    let s = t.cmd("status");
    assert_eq!(field(&s, "bad"), 0, "{s}");
    assert!(
        field(&s, "calls") > before,
        "hammer threads made no progress: {s}"
    );
    assert_eq!(t.call(5), 11);
    eprintln!("200 cycles with 64 hammer threads; max pause {max_pause} us");
}

#[test]
fn busy_function_times_out_with_status_3_and_changes_nothing() {
    let b = Build::new();
    let bin = b.target(PIE);
    let patch = read_patch(&b.patch("stuck_v2.c", &Spec::new("unstick", &bin, &["stuck"])));
    let mut t = Running::start(&bin, &["--stuck"]);
    assert!(wait_until(5, || t.status("stuck_spins") > 0));
    let maps_before = std::fs::read_to_string(format!("/proc/{}/maps", t.pid)).expect("maps");
    let e = loader::apply(t.pid, &patch, &opts(1)).expect_err("must be busy");
    assert_eq!(e.status(), Status::Unsafe, "{e}");
    let msg = e.to_string();
    let tid = field(&t.cmd("tids"), "stuck");
    assert!(msg.contains(&format!("thread {tid}")), "{msg}");
    assert!(msg.contains("stuck"), "{msg}");
    assert!(msg.contains("stuck_main"), "stack not symbolized: {msg}");
    // Nothing changed: no registry entry, no new mapping, the thread still spins.
    assert!(loader::list(t.pid).expect("list").is_empty());
    let maps_after = std::fs::read_to_string(format!("/proc/{}/maps", t.pid)).expect("maps");
    assert_eq!(maps_before, maps_after);
    let s0 = t.status("stuck_spins");
    assert!(wait_until(5, || t.status("stuck_spins") > s0));
}

#[test]
fn function_leaving_the_stack_soon_succeeds_after_retries() {
    let b = Build::new();
    let bin = b.target(PIE);
    let patch = read_patch(&b.patch("sleepy_v2.c", &Spec::new("sleepy", &bin, &["sleepy"])));
    let mut t = Running::start(&bin, &["--sleepy"]);
    assert_eq!(t.status("sleepy_done"), 0);
    // sleepy() leaves the stack 300 ms into the apply.
    let mut input = t.stdin_handle();
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        use std::io::Write;
        writeln!(input, "release").expect("write release");
    });
    let rep = loader::apply(t.pid, &patch, &opts(20)).expect("apply after retries");
    releaser.join().expect("releaser");
    assert_eq!(t.line(), "ok");
    assert!(
        rep.attempts > 1,
        "sleepy was on the stack: expected retries, got {}",
        rep.attempts
    );
    assert_eq!(t.status("sleepy_done"), 1);
}

#[test]
fn shared_library_function() {
    let b = Build::new();
    let bin = b.target(TargetKind {
        pie: true,
        lib: true,
    });
    let lib = b.lib();
    let patch = read_patch(&b.patch("lib_v2.c", &Spec::new("lib2", &lib, &["lib_compute"])));
    let mut t = Running::start(&bin, &["--lib"]);
    assert_eq!(t.cmd("lib 5"), "105");
    loader::apply(t.pid, &patch, &opts(10)).expect("apply");
    assert_eq!(t.cmd("lib 5"), "205");
    let l = loader::list(t.pid).expect("list");
    assert!(l[0].record.funcs[0].object.ends_with("libcalc.so"));
    loader::revert(t.pid, "lib2", &opts(10)).expect("revert");
    assert_eq!(t.cmd("lib 5"), "105");
}

#[test]
fn new_function_and_new_global() {
    let b = Build::new();
    let bin = b.target(PIE);
    let mut spec = Spec::new("newfn", &bin, &["compute"]);
    spec.new_funcs = vec!["patch_helper".into()];
    spec.new_data = vec!["patch_calls".into()];
    let patch = read_patch(&b.patch("compute_newfunc.c", &spec));
    let mut t = Running::start(&bin, &[]);
    loader::apply(t.pid, &patch, &opts(10)).expect("apply");
    assert_eq!(t.call(5), 22);
    assert_eq!(t.call(6), 25);
    let l = loader::list(t.pid).expect("list");
    let rec = &l[0].record;
    assert_eq!(rec.new_funcs[0].0, "patch_helper");
    let (_, addr, size) = rec.new_data[0].clone();
    assert_eq!(size, 4);
    let v = loader::mem::read_vec(t.pid, addr, 4).expect("read new global");
    assert_eq!(i32::from_le_bytes([v[0], v[1], v[2], v[3]]), 2);
}

#[test]
fn static_function_and_static_data_of_the_target() {
    let b = Build::new();
    let bin = b.target(PIE);
    let spec = Spec::new("static", &bin, &["compute"])
        .local_ref("scale", Kind::Func)
        .local_ref("factor", Kind::Object);
    let patch = read_patch(&b.patch("compute_static.c", &spec));
    let mut t = Running::start(&bin, &[]);
    loader::apply(t.pid, &patch, &opts(10)).expect("apply");
    assert_eq!(t.call(5), 25 + 5000);
}

fn tls_case(cflags: Vec<&'static str>) {
    let b = Build::new();
    let bin = b.target(PIE);
    let mut spec = Spec::new("tls", &bin, &["compute"]).tls_ref("tls_val");
    spec.cflags = cflags;
    let patch = read_patch(&b.patch("compute_tls.c", &spec));
    let mut t = Running::start(&bin, &["--idle", "2"]);
    assert_eq!(t.cmd("tls 7"), "ok");
    loader::apply(t.pid, &patch, &opts(10)).expect("apply");
    assert_eq!(t.call(5), 7005);
    assert_eq!(t.cmd("tls 9"), "ok");
    assert_eq!(t.call(1), 9001);
}

#[test]
fn tls_initial_exec_in_main_program() {
    tls_case(vec![]);
}

#[test]
fn tls_local_exec_in_main_program() {
    tls_case(vec!["-ftls-model=local-exec"]);
}

#[test]
fn tls_general_dynamic_is_refused() {
    let b = Build::new();
    let bin = b.target(PIE);
    let mut spec = Spec::new("tlsgd", &bin, &["compute"]).tls_ref("tls_val");
    spec.cflags = vec!["-fPIC"];
    let patch = read_patch(&b.patch("compute_tls.c", &spec));
    let mut t = Running::start(&bin, &[]);
    let e = loader::apply(t.pid, &patch, &opts(10)).expect_err("must refuse");
    assert!(matches!(e, Error::Unsupported { .. }), "{e}");
    assert!(e.to_string().contains("initial-exec"), "{e}");
    assert_eq!(t.call(5), 11);
    assert!(loader::list(t.pid).expect("list").is_empty());
}

#[test]
fn far_import_through_stub() {
    let b = Build::new();
    let bin = b.target(PIE);
    let patch = read_patch(&b.patch("compute_printf.c", &Spec::new("printf", &bin, &["compute"])));
    let mut t = Running::start(&bin, &[]);
    loader::apply(t.pid, &patch, &opts(10)).expect("apply");
    assert_eq!(t.call(5), 22);
}

#[test]
fn vdso_spinner_unwinds_completely() {
    let b = Build::new();
    let bin = b.target(PIE);
    let patch = read_patch(&b.patch("compute_v2.c", &Spec::new("v2", &bin, &["compute"])));
    let mut t = Running::start(&bin, &["--spinner"]);
    let mut tid = 0;
    assert!(wait_until(5, || {
        tid = field(&t.cmd("tids"), "spinner");
        tid > 0
    }));
    let proc = loader::target::Process::open(t.pid).expect("open");
    let vdso = proc
        .maps
        .iter()
        .find(|m| m.path == "[vdso]")
        .map(|m| (m.start, m.end))
        .expect("vdso mapped");
    let [spinner] = main_functions(&proc, ["spinner_main"]);
    let mut u = loader::check::Unwinder::new(t.pid, modules(&proc));
    // At least 50 samples; more (up to 60 s) until one caught the spinner
    // inside the vDSO, which a loaded machine makes rarer.
    let (mut in_vdso, mut samples) = (0, 0);
    let until = std::time::Instant::now() + Duration::from_secs(60);
    while samples < 50 || (in_vdso == 0 && std::time::Instant::now() < until) {
        samples += 1;
        let f = loader::freeze::freeze(t.pid).expect("freeze");
        let th = f
            .threads
            .iter()
            .find(|x| x.tid as i64 == tid)
            .expect("spinner thread");
        let (frames, complete) = u.unwind(&th.regs, &proc.maps);
        let regs = th.regs;
        drop(f);
        assert!(complete, "unwind incomplete: {frames:x?}");
        assert!(
            frames.iter().any(|&pc| pc > spinner.0 && pc <= spinner.1),
            "spinner_main not on the unwound stack {frames:x?}"
        );
        if regs.rip >= vdso.0 && regs.rip < vdso.1 {
            in_vdso += 1;
        }
    }
    assert!(
        in_vdso > 0,
        "the spinner was never stopped inside the vDSO ({samples} samples)"
    );
    // And the check does not mistake it for busy.
    loader::apply(t.pid, &patch, &opts(10)).expect("apply");
    assert_eq!(t.call(5), 22);
}

#[test]
fn threads_blocked_in_syscalls_resume_correctly() {
    let b = Build::new();
    let bin = b.target(PIE);
    let patch = read_patch(&b.patch("compute_v2.c", &Spec::new("v2", &bin, &["compute"])));
    let mut t = Running::start(&bin, &["--blockers"]);
    std::thread::sleep(Duration::from_millis(100));
    let sleeps0 = t.status("sleeps");
    for _ in 0..20 {
        loader::apply(t.pid, &patch, &opts(10)).expect("apply");
        loader::revert(t.pid, "v2", &opts(10)).expect("revert");
    }
    // read (main thread, also the injection thread), futex, epoll_wait, nanosleep.
    assert_eq!(t.call(5), 11);
    assert_eq!(t.cmd("wake"), "ok");
    assert_eq!(t.cmd("poke"), "ok");
    assert!(wait_until(5, || t.status("futex") == 1 && t.status("epoll") == 1));
    assert!(wait_until(5, || t.status("sleeps") > sleeps0 + 2));
    assert_eq!(
        t.status("errors"),
        0,
        "a blocked syscall saw EINTR or returned early"
    );
}

#[test]
fn real_time_signals_are_delivered_not_lost() {
    let b = Build::new();
    let bin = b.target(PIE);
    let patch = read_patch(&b.patch("compute_v2.c", &Spec::new("v2", &bin, &["compute"])));
    let mut t = Running::start(&bin, &["--idle", "4"]);
    let pid = t.pid;
    let rtmin = libc::SIGRTMIN();
    // A blocked (pending) signal with a value, sent before the patch.
    loader_test_sigqueue(pid, rtmin + 1, 42);
    let sender = std::thread::spawn(move || {
        for i in 0..1000 {
            loader_test_sigqueue(pid, rtmin, i);
            if i % 50 == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    });
    for _ in 0..10 {
        loader::apply(pid, &patch, &opts(10)).expect("apply");
        loader::revert(pid, "v2", &opts(10)).expect("revert");
    }
    loader::apply(pid, &patch, &opts(10)).expect("apply");
    sender.join().expect("sender");
    let expect_sum: i64 = (0..1000).sum();
    assert!(
        wait_until(5, || {
            let s = t.cmd("sigs");
            field(&s, "rt") == 1000 && field(&s, "sum") == expect_sum
        }),
        "{}",
        t.cmd("sigs")
    );
    assert_eq!(
        field(&t.cmd("sigs"), "rt2"),
        0,
        "blocked signal delivered early"
    );
    assert_eq!(t.cmd("unblock"), "ok");
    let s = t.cmd("sigs");
    assert_eq!((field(&s, "rt2"), field(&s, "sum2")), (1, 42), "{s}");
    assert_eq!(t.call(5), 22);
}

fn loader_test_sigqueue(pid: i32, sig: i32, value: i32) {
    // sigqueue(3) through the libc crate; retried while the queue is full.
    let v = libc::sigval {
        sival_ptr: value as usize as *mut libc::c_void,
    };
    loop {
        // SAFETY: plain system call with a valid pid, signal and value.
        let r = unsafe { libc::sigqueue(pid, sig, v) };
        if r == 0 {
            return;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

#[test]
fn stacking_and_out_of_order_revert() {
    let b = Build::new();
    let bin = b.target(PIE);
    let p2 = read_patch(&b.patch("compute_v2.c", &Spec::new("v2", &bin, &["compute"])));
    let p3 = read_patch(&b.patch("compute_v3.c", &Spec::new("v3", &bin, &["compute"])));
    let mut t = Running::start(&bin, &["--hammer", "8"]);
    loader::apply(t.pid, &p2, &opts(10)).expect("apply v2");
    loader::apply(t.pid, &p3, &opts(10)).expect("apply v3 on top");
    assert_eq!(t.call(5), 28);
    let l = loader::list(t.pid).expect("list");
    assert_eq!(
        l.iter()
            .map(|e| (e.record.id.as_str(), e.state.clone()))
            .collect::<Vec<_>>(),
        vec![("v2", State::Stacked), ("v3", State::Active)]
    );
    let e = loader::revert(t.pid, "v2", &opts(10)).expect_err("out of order");
    assert!(e.to_string().contains("v3 first"), "{e}");
    assert_eq!(t.call(5), 28);
    // Applying the same id twice is refused.
    assert!(loader::apply(t.pid, &p3, &opts(10)).is_err());
    loader::revert(t.pid, "v3", &opts(10)).expect("revert v3");
    assert_eq!(t.call(5), 22);
    loader::revert(t.pid, "v2", &opts(10)).expect("revert v2");
    assert_eq!(t.call(5), 11);
    assert_eq!(t.status("bad"), 0);
}

#[test]
fn wrong_build_id_is_a_mismatch() {
    let b = Build::new();
    let bin = b.target(PIE);
    let mut spec = Spec::new("wrong", &bin, &["compute"]);
    spec.build_id = Some("ab".repeat(20));
    let patch = read_patch(&b.patch("compute_v2.c", &spec));
    let mut t = Running::start(&bin, &[]);
    let e = loader::apply(t.pid, &patch, &opts(10)).expect_err("mismatch");
    assert_eq!(e.status(), Status::Mismatch, "{e}");
    assert!(e.to_string().contains(&"ab".repeat(20)), "{e}");
    assert_eq!(t.call(5), 11);
}

#[test]
fn wrong_expected_bytes_is_a_mismatch() {
    let b = Build::new();
    let bin = b.target(PIE);
    let mut spec = Spec::new("bytes", &bin, &["compute"]);
    spec.expected = Some("9090909090909090909090".into());
    let patch = read_patch(&b.patch("compute_v2.c", &spec));
    let mut t = Running::start(&bin, &[]);
    let e = loader::apply(t.pid, &patch, &opts(10)).expect_err("mismatch");
    assert_eq!(e.status(), Status::Mismatch, "{e}");
    assert!(e.to_string().contains("compute"), "{e}");
    assert_eq!(t.call(5), 11);
    assert!(loader::list(t.pid).expect("list").is_empty());
}

#[test]
fn stripped_binary_uses_debuginfo_found_by_build_id() {
    let b = Build::new();
    let bin = b.target(PIE);
    let spec = Spec::new("static", &bin, &["compute"])
        .local_ref("scale", Kind::Func)
        .local_ref("factor", Kind::Object);
    let patch = read_patch(&b.patch("compute_static.c", &spec));
    // Split the debuginfo off and strip the binary.
    let meta = patch.meta.clone();
    let id = meta.targets[0].build_id.clone();
    let dbg_root = b.path("debug");
    let dbg_dir = dbg_root.join(".build-id").join(&id[..2]);
    std::fs::create_dir_all(&dbg_dir).expect("mkdir");
    let dbg = dbg_dir.join(format!("{}.debug", &id[2..]));
    let ok = std::process::Command::new("objcopy")
        .arg("--only-keep-debug")
        .arg(&bin)
        .arg(&dbg)
        .status()
        .expect("objcopy");
    assert!(ok.success());
    let stripped = b.path("target-stripped");
    let ok = std::process::Command::new("strip")
        .args(["--strip-all", "-o"])
        .arg(&stripped)
        .arg(&bin)
        .status()
        .expect("strip");
    assert!(ok.success());
    let mut t = Running::start(&stripped, &[]);
    // Without the debug dir: the local symbols cannot be found.
    let no_dbg = Options {
        debug_dir: b.path("nowhere"),
        ..opts(10)
    };
    let e = loader::apply(t.pid, &patch, &no_dbg).expect_err("no symbols");
    assert!(e.to_string().contains("debuginfo"), "{e}");
    assert_eq!(t.call(5), 11);
    let with_dbg = Options {
        debug_dir: dbg_root,
        ..opts(10)
    };
    loader::apply(t.pid, &patch, &with_dbg).expect("apply with debuginfo");
    assert_eq!(t.call(5), 5025);
}

#[test]
fn signal_frame_is_unwound_and_interrupted_function_is_busy() {
    let b = Build::new();
    let bin = b.target(PIE);
    let patch = read_patch(&b.patch("victim_v2.c", &Spec::new("victim", &bin, &["victim"])));
    let mut t = Running::start(&bin, &["--victim"]);
    let mut tid = 0;
    assert!(wait_until(5, || {
        tid = field(&t.cmd("tids"), "victim");
        tid > 0
    }));
    // SIGUSR1 to that thread: its handler never returns.
    // SAFETY: plain system call with valid ids.
    let r = unsafe { libc::syscall(libc::SYS_tgkill, t.pid, tid as i32, libc::SIGUSR1) };
    assert_eq!(r, 0);
    assert!(wait_until(5, || field(&t.cmd("tids"), "in_handler") == 1));
    let proc = loader::target::Process::open(t.pid).expect("open");
    let [victim, handler] = main_functions(&proc, ["victim", "on_usr1"]);
    let mut u = loader::check::Unwinder::new(t.pid, modules(&proc));
    let f = loader::freeze::freeze(t.pid).expect("freeze");
    let th = f
        .threads
        .iter()
        .find(|x| x.tid as i64 == tid)
        .expect("victim thread")
        .clone();
    let (frames, complete) = u.unwind(&th.regs, &proc.maps);
    let busy = u.check(
        std::slice::from_ref(&th),
        &proc.maps,
        &[loader::check::BusyRange {
            start: victim.0,
            end: victim.1,
            label: "victim".into(),
        }],
    );
    drop(f);
    assert!(
        complete,
        "unwind through the signal frame incomplete: {frames:x?}"
    );
    let pos = |r: (u64, u64)| frames.iter().position(|&pc| pc >= r.0 && pc <= r.1);
    let (h, v) = (pos(handler), pos(victim));
    assert!(
        h.is_some() && v.is_some() && h < v,
        "handler then victim expected: {frames:x?}"
    );
    let busy = busy.expect("victim is busy");
    assert!(!busy.scanned, "found only by the conservative scan");
    // And the apply refuses (status 3) and changes nothing.
    let e = loader::apply(t.pid, &patch, &opts(1)).expect_err("busy");
    assert_eq!(e.status(), Status::Unsafe, "{e}");
    assert!(e.to_string().contains("on_usr1"), "{e}");
    assert!(loader::list(t.pid).expect("list").is_empty());
}

#[test]
fn unwinds_through_patch_code_with_its_eh_frame() {
    let b = Build::new();
    let bin = b.target(PIE);
    let patch = read_patch(&b.patch("compute_slow.c", &Spec::new("slow", &bin, &["compute"])));
    let mut t = Running::start(&bin, &["--hammer", "4"]);
    loader::apply(t.pid, &patch, &opts(10)).expect("apply");
    std::thread::sleep(Duration::from_millis(100));
    let rec = loader::list(t.pid).expect("list")[0].record.clone();
    let (eh, eh_len) = rec.eh_frame.expect("the patch's .eh_frame is loaded");
    let proc = loader::target::Process::open(t.pid).expect("open");
    let [hm] = main_functions(&proc, ["hammer_main"]);
    let mut modules = modules(&proc);
    let bytes = loader::mem::read_vec(t.pid, eh, eh_len as usize).expect("read eh_frame");
    modules.push(loader::check::Module::from_patch(
        "slow", rec.code, eh, bytes,
    ));
    let mut u = loader::check::Unwinder::new(t.pid, modules);
    let f = loader::freeze::freeze(t.pid).expect("freeze");
    let mut through = 0;
    for th in &f.threads {
        let (frames, complete) = u.unwind(&th.regs, &proc.maps);
        let in_patch = frames
            .iter()
            .position(|&pc| pc > rec.code.0 && pc <= rec.code.1);
        let in_hammer = frames.iter().position(|&pc| pc > hm.0 && pc <= hm.1);
        if let (Some(p), Some(h)) = (in_patch, in_hammer) {
            assert!(p < h && complete, "{frames:x?}");
            through += 1;
        }
    }
    drop(f);
    assert!(
        through > 0,
        "no hammer thread was unwound through the patch's code"
    );
    // The hammer threads never leave the slow new code: revert stays busy,
    // and the busy stack is symbolized through the patch.
    let e = loader::revert(t.pid, "slow", &opts(1)).expect_err("busy");
    assert_eq!(e.status(), Status::Unsafe, "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("(patch slow)") && msg.contains("hammer_main"),
        "{msg}"
    );
    assert_eq!(t.call(5), 22);
    assert_eq!(t.status("bad"), 0);
}

fn states(pid: i32) -> Vec<(String, State)> {
    loader::list(pid)
        .expect("list")
        .into_iter()
        .map(|e| (e.record.id, e.state))
        .collect()
}

#[test]
fn switch_over_two_pages_stacks_both_ways_and_reverts_lifo() {
    let b = Build::new();
    let bin = b.target(PIE);
    let pair = read_patch(&b.patch("pair_v2.c", &Spec::new("pair", &bin, &["pair_a", "pair_b"])));
    let a3 = read_patch(&b.patch("pair_a_v3.c", &Spec::new("a3", &bin, &["pair_a"])));
    let mut t = Running::start(&bin, &["--hammer", "8"]);
    assert_eq!(t.cmd("pair 5"), "21 21");
    // The switch: slots and detours recorded, 6-byte jumps.
    loader::apply(t.pid, &pair, &opts(10)).expect("apply pair");
    assert_eq!(t.cmd("pair 5"), "22 22");
    let l = loader::list(t.pid).expect("list");
    assert!(
        l[0].record
            .funcs
            .iter()
            .all(|f| f.slot.is_some() && f.detour.is_some() && f.jump.starts_with("ff25")),
        "{:?}",
        l[0].record.funcs
    );
    // A 5-byte jump stacked over a slot jump, LIFO.
    loader::apply(t.pid, &a3, &opts(10)).expect("apply a3 on top");
    assert_eq!(t.cmd("pair 5"), "23 22");
    assert_eq!(
        states(t.pid),
        vec![
            ("pair".into(), State::Stacked),
            ("a3".into(), State::Active)
        ]
    );
    let e = loader::revert(t.pid, "pair", &opts(10)).expect_err("out of order");
    assert!(e.to_string().contains("a3 first"), "{e}");
    loader::revert(t.pid, "a3", &opts(10)).expect("revert a3");
    assert_eq!(t.cmd("pair 5"), "22 22");
    loader::revert(t.pid, "pair", &opts(10)).expect("revert pair");
    assert_eq!(t.cmd("pair 5"), "21 21");
    // A switch stacked over a 5-byte jump: its detour replays that jump.
    loader::apply(t.pid, &a3, &opts(10)).expect("apply a3");
    loader::apply(t.pid, &pair, &opts(10)).expect("apply pair on top");
    assert_eq!(t.cmd("pair 5"), "22 22");
    assert_eq!(
        states(t.pid),
        vec![
            ("a3".into(), State::Stacked),
            ("pair".into(), State::Active)
        ]
    );
    loader::revert(t.pid, "pair", &opts(10)).expect("revert pair");
    assert_eq!(t.cmd("pair 5"), "23 21");
    loader::revert(t.pid, "a3", &opts(10)).expect("revert a3");
    assert_eq!(t.cmd("pair 5"), "21 21");
    assert!(loader::list(t.pid).expect("list").is_empty());
    assert_eq!(t.status("bad"), 0);
    assert_eq!(t.call(5), 11);
}

#[test]
fn switch_hammered_200_cycles() {
    let b = Build::new();
    let bin = b.target(PIE);
    let pair = read_patch(&b.patch("pair_v2.c", &Spec::new("pair", &bin, &["pair_a", "pair_b"])));
    let mut t = Running::start(&bin, &["--pairs", "32"]);
    for i in 0..200 {
        let a = loader::apply(t.pid, &pair, &opts(20));
        assert!(a.is_ok(), "cycle {i}: apply: {:?}", a.err());
        let r = loader::revert(t.pid, "pair", &opts(20));
        assert!(r.is_ok(), "cycle {i}: revert: {:?}", r.err());
    }
    assert!(t.alive(), "target crashed");
    let s = t.cmd("pairs");
    assert_eq!(support::field(&s, "bad"), 0, "{s}");
    assert!(support::field(&s, "pair_calls") > 0, "{s}");
    assert_eq!(t.cmd("pair 5"), "21 21");
}

#[test]
fn switch_refuses_a_function_branching_into_its_entry_bytes() {
    let b = Build::new();
    let bin = b.target(PIE);
    let patch = read_patch(&b.patch("loop_v2.c", &Spec::new("loop", &bin, &["loop_a", "pair_b"])));
    let mut t = Running::start(&bin, &[]);
    assert_eq!(t.cmd("loop 5"), "5");
    let maps_before = std::fs::read_to_string(format!("/proc/{}/maps", t.pid)).expect("maps");
    let e = loader::apply(t.pid, &patch, &opts(10)).expect_err("must refuse");
    assert!(matches!(e, Error::Entry { .. }), "{e}");
    assert_eq!(e.status(), Status::Error, "{e}");
    let msg = e.to_string();
    assert!(msg.contains("loop_a") && msg.contains("branch"), "{msg}");
    // Nothing changed.
    assert!(loader::list(t.pid).expect("list").is_empty());
    let maps_after = std::fs::read_to_string(format!("/proc/{}/maps", t.pid)).expect("maps");
    assert_eq!(maps_before, maps_after);
    assert_eq!(t.cmd("loop 5"), "5");
    assert_eq!(t.cmd("pair 5"), "21 21");
}

#[test]
fn version_1_registry_records_are_still_read_and_reverted() {
    use std::os::unix::fs::FileExt;
    let b = Build::new();
    let bin = b.target(PIE);
    let patch = read_patch(&b.patch("compute_v2.c", &Spec::new("v2", &bin, &["compute"])));
    let mut t = Running::start(&bin, &[]);
    loader::apply(t.pid, &patch, &opts(10)).expect("apply");
    let base = loader::list(t.pid).expect("list")[0].record.base;
    // A one-page patch's record is exactly what version 1 wrote; say so.
    let mem = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(format!("/proc/{}/mem", t.pid))
        .expect("open mem");
    let mut v = [0u8; 4];
    mem.read_exact_at(&mut v, base + 16).expect("read version");
    assert_eq!(u32::from_le_bytes(v), loader::registry::VERSION);
    mem.write_all_at(&1u32.to_le_bytes(), base + 16)
        .expect("write version 1");
    assert_eq!(states(t.pid), vec![("v2".into(), State::Active)]);
    loader::revert(t.pid, "v2", &opts(10)).expect("revert a version-1 record");
    assert_eq!(t.call(5), 11);
    // An unknown (future) version is an error naming it, not a guess.
    loader::apply(t.pid, &patch, &opts(10)).expect("apply");
    let base = loader::list(t.pid).expect("list")[0].record.base;
    mem.write_all_at(&9u32.to_le_bytes(), base + 16)
        .expect("write version 9");
    let e = loader::list(t.pid).expect_err("version 9");
    assert!(e.to_string().contains("registry version 9"), "{e}");
}
