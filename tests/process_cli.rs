//! `hotfix apply/list/revert` end to end on real processes: patches made by
//! `hotfix diff --target` from two builds of `testkernels/proc/target.c`,
//! exit statuses (0, 3, 4), `--json`, `--all`, and hotfix killed with
//! `SIGKILL` at every step of apply and revert (`HOTFIX_FAULT=<step>`): the
//! target runs on with the old or the new code and `list` stays truthful.

#[path = "../loader/tests/support/mod.rs"]
mod support;

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use support::{Running, field};

fn hotfix() -> Command {
    // Test patches are unsigned: opt out of the trust gate (docs/trust.md).
    let mut c = Command::new(env!("CARGO_BIN_EXE_hotfix"));
    c.env("HOTFIX_ALLOW_UNSIGNED", "1");
    c
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testkernels/proc/target.c")
}

fn sh(cmd: &mut Command) {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A target built twice (original and fixed source) and patches between them.
struct Work {
    dir: tempfile::TempDir,
}

impl Work {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }
    fn p(&self, n: &str) -> PathBuf {
        self.dir.path().join(n)
    }
    /// Compiles `target.c` with `edit` applied (old -> new text) into `<name>.o`.
    fn object(&self, name: &str, edits: &[(&str, &str)]) -> PathBuf {
        let d = self.p(name);
        std::fs::create_dir_all(&d).expect("mkdir");
        let mut text = std::fs::read_to_string(src()).expect("read target.c");
        for (old, new) in edits {
            assert!(text.contains(old), "{old:?} not in target.c");
            text = text.replace(old, new);
        }
        std::fs::write(d.join("target.c"), text).expect("write");
        let obj = self.p(&format!("{name}.o"));
        sh(Command::new("gcc")
            .args([
                "-c",
                "-O2",
                "-g",
                "-pthread",
                "-ffunction-sections",
                "-fdata-sections",
                "-o",
            ])
            .arg(&obj)
            .arg("target.c")
            .current_dir(&d));
        obj
    }
    fn link(&self, obj: &Path, out: &str, extra: &[&str]) -> PathBuf {
        let bin = self.p(out);
        sh(Command::new("gcc")
            .args(["-pthread", "-Wl,--build-id"])
            .args(extra)
            .arg("-o")
            .arg(&bin)
            .arg(obj));
        bin
    }
    fn diff(&self, orig: &Path, new: &Path, bin: &Path, id: &str) -> PathBuf {
        let out = self.p(&format!("{id}.hfx"));
        sh(hotfix()
            .arg("diff")
            .arg(orig)
            .arg(new)
            .arg("-o")
            .arg(&out)
            .args(["--id", id, "--target"])
            .arg(bin));
        out
    }
}

const COMPUTE_V2: (&str, &str) = ("return x * 2 + g_one;", "return x * 3 + 7;");
const STUCK_V2: (&str, &str) = ("__asm__ volatile(\"pause\");", "__asm__ volatile(\"nop\");");

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run hotfix")
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        serde_json::json!({"unparsable": e.to_string(), "stdout": String::from_utf8_lossy(&out.stdout)})
    })
}

fn list(pid: i32) -> Vec<(String, String)> {
    let out = run(hotfix().args(["--json", "list", "--pid", &pid.to_string()]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    json(&out)
        .as_array()
        .expect("array")
        .iter()
        .map(|e| {
            (
                e["id"].as_str().unwrap_or("").to_string(),
                e["state"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn setup_compute() -> (Work, PathBuf, PathBuf) {
    let w = Work::new();
    let orig = w.object("orig", &[]);
    let new = w.object("new", &[COMPUTE_V2]);
    let bin = w.link(&orig, "target", &[]);
    let patch = w.diff(&orig, &new, &bin, "v2");
    (w, bin, patch)
}

#[test]
fn apply_list_revert_json() {
    let (_w, bin, patch) = setup_compute();
    let mut t = Running::start(&bin, &["--hammer", "16"]);
    assert_eq!(t.cmd("call 5"), "11");
    let pid = t.pid.to_string();
    let out = run(hotfix()
        .args(["--json", "apply"])
        .arg(&patch)
        .args(["--pid", &pid]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j = json(&out);
    assert_eq!(j["id"], "v2");
    assert_eq!(j["threads"], 17);
    assert!(j["pause_us"].as_u64().is_some_and(|p| p > 0), "{j}");
    assert_eq!(t.cmd("call 5"), "22");
    assert_eq!(list(t.pid), vec![("v2".into(), "active".into())]);
    let human = run(hotfix().args(["list", "--pid", &pid]));
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.contains("v2 [active]") && text.contains("function compute"),
        "{text}"
    );
    // Applying it again is refused (exit 1).
    let again = run(hotfix().arg("apply").arg(&patch).args(["--pid", &pid]));
    assert_eq!(again.status.code(), Some(1));
    let out = run(hotfix().args(["revert", "v2", "--pid", &pid]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(t.cmd("call 5"), "11");
    assert!(list(t.pid).is_empty());
    assert_eq!(field(&t.cmd("status"), "bad"), 0);
}

#[test]
fn busy_until_timeout_exits_3() {
    let w = Work::new();
    let orig = w.object("orig", &[]);
    let new = w.object("new", &[STUCK_V2]);
    let bin = w.link(&orig, "target", &[]);
    let patch = w.diff(&orig, &new, &bin, "unstick");
    let mut t = Running::start(&bin, &["--stuck"]);
    let mut tid = 0;
    for _ in 0..100 {
        tid = field(&t.cmd("tids"), "stuck");
        if tid > 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = run(hotfix().arg("apply").arg(&patch).args([
        "--pid",
        &t.pid.to_string(),
        "--timeout",
        "300ms",
    ]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains(&format!("thread {tid}")) && err.contains("stuck"),
        "{err}"
    );
    assert!(list(t.pid).is_empty());
}

#[test]
fn wrong_build_id_exits_4() {
    let (w, _bin, patch) = setup_compute();
    let orig = w.p("orig.o");
    let other = w.link(&orig, "other", &["-Wl,-z,norelro"]);
    let mut t = Running::start(&other, &[]);
    let out = run(hotfix()
        .arg("apply")
        .arg(&patch)
        .args(["--pid", &t.pid.to_string()]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("build-id"), "{err}");
    assert_eq!(t.cmd("call 5"), "11");
}

#[test]
fn usage_errors_exit_2() {
    let out = run(hotfix().args(["apply", "x.hfx"]));
    assert_eq!(out.status.code(), Some(2));
    let out = run(hotfix().args(["apply", "x.hfx", "--pid", "1", "--all"]));
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn apply_all_patches_every_matching_process() {
    let (w, bin, patch) = setup_compute();
    let other = w.link(&w.p("orig.o"), "other", &["-Wl,-z,norelro"]);
    let mut a = Running::start(&bin, &["--idle", "2"]);
    let mut b = Running::start(&bin, &[]);
    let mut c = Running::start(&other, &[]);
    let out = run(hotfix().args(["--json", "apply"]).arg(&patch).arg("--all"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j = json(&out);
    let mut pids: Vec<i64> = j
        .as_array()
        .expect("array")
        .iter()
        .map(|i| i["pid"].as_i64().unwrap_or(0))
        .collect();
    pids.sort();
    let mut want = vec![a.pid as i64, b.pid as i64];
    want.sort();
    assert_eq!(pids, want, "{j}");
    assert_eq!(a.cmd("call 5"), "22");
    assert_eq!(b.cmd("call 5"), "22");
    assert_eq!(c.cmd("call 5"), "11");
}

/// Steps of apply and the code the target must run after a kill there.
const APPLY_STEPS: [(&str, &str, &[&str]); 6] = [
    ("planned", "11", &[]),
    ("loaded", "11", &["inactive"]),
    ("frozen", "11", &["inactive"]),
    ("checked", "11", &["inactive"]),
    ("jump-1", "22", &["active"]),
    ("resumed", "22", &["active"]),
];

#[test]
fn killed_at_every_step_of_apply_and_revert() {
    let (_w, bin, patch) = setup_compute();
    for (step, result, states) in APPLY_STEPS {
        let mut t = Running::start(&bin, &["--hammer", "16", "--blockers"]);
        let pid = t.pid.to_string();
        let out = run(hotfix()
            .env("HOTFIX_FAULT", step)
            .arg("apply")
            .arg(&patch)
            .args(["--pid", &pid]));
        assert_eq!(
            out.status.signal(),
            Some(9),
            "step {step}: hotfix was not killed"
        );
        assert_eq!(t.cmd("call 5"), result, "step {step}");
        let l = list(t.pid);
        let got: Vec<&str> = l.iter().map(|(_, s)| s.as_str()).collect();
        assert_eq!(got, states.to_vec(), "step {step}: list {l:?}");
        // Whatever was left, a normal apply or revert brings it to a known state.
        if result == "11" {
            let out = run(hotfix().arg("apply").arg(&patch).args(["--pid", &pid]));
            assert!(
                out.status.success(),
                "step {step}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(t.cmd("call 5"), "22");
        }
        // Now kill a revert half-way: bytes restored, mapping left behind.
        let out = run(hotfix()
            .env("HOTFIX_FAULT", "restore-1")
            .args(["revert", "v2", "--pid", &pid]));
        assert_eq!(out.status.signal(), Some(9));
        assert_eq!(t.cmd("call 5"), "11", "step {step}: after killed revert");
        let states: Vec<String> = list(t.pid)
            .into_iter()
            .filter(|(_, s)| s != "inactive")
            .map(|(_, s)| s)
            .collect();
        assert!(states.is_empty(), "step {step}: {states:?}");
        let s = t.cmd("status");
        assert_eq!(field(&s, "bad"), 0, "step {step}: {s}");
        assert_eq!(field(&s, "errors"), 0, "step {step}: {s}");
        assert_eq!(t.cmd("wake"), "ok");
    }
}

const PAIR_A_V2: (&str, &str) = (
    "int pair_a(int x) { return g_one + (x << 2); }",
    "int pair_a(int x) { return 2 + (x << 2); }",
);
const PAIR_B_V2: (&str, &str) = (
    "int pair_b(int x) { return g_one + (x << 2); }",
    "int pair_b(int x) { return 2 + (x << 2); }",
);

/// Target and a patch of pair_a and pair_b, two functions on different
/// pages: applied through the in-target switch (slots and detours).
fn setup_pair() -> (Work, PathBuf, PathBuf) {
    let w = Work::new();
    let orig = w.object("orig", &[]);
    let new = w.object("new", &[PAIR_A_V2, PAIR_B_V2]);
    let bin = w.link(&orig, "target", &[]);
    let patch = w.diff(&orig, &new, &bin, "pair");
    (w, bin, patch)
}

/// The pair hammer threads saw no mixed pair for 300 ms (no transition
/// happens without hotfix, so a mix now would be a half-switched patch),
/// made progress, and the main thread's pair agrees with `want`.
fn no_mix(t: &mut Running, want: &str, what: &str) {
    assert_eq!(t.cmd("pair 5"), want, "{what}");
    assert_eq!(t.cmd("resetpairs"), "ok");
    let c0 = field(&t.cmd("pairs"), "pair_calls");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let s = t.cmd("pairs");
    assert_eq!(field(&s, "pair_mixed"), 0, "{what}: {s}");
    assert_eq!(field(&s, "bad"), 0, "{what}: {s}");
    assert!(field(&s, "pair_calls") > c0, "{what}: no progress: {s}");
}

/// Reverts `id` until no record of it is left (an interrupted apply or
/// revert leaves records; each revert takes the newest).
fn revert_all(pid: i32, id: &str, what: &str) {
    let p = pid.to_string();
    for _ in 0..4 {
        if list(pid).iter().all(|(i, _)| i != id) {
            return;
        }
        let out = run(hotfix().args(["revert", id, "--pid", &p]));
        assert!(
            out.status.code() == Some(0) || out.status.code() == Some(1),
            "{what}: revert: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(list(pid).is_empty(), "{what}: {:?}", list(pid));
}

/// Steps of apply (a two-page switch) and what runs after a kill there.
const PAIR_APPLY_STEPS: [(&str, &str, &[&str]); 8] = [
    ("planned", "21 21", &[]),
    ("loaded", "21 21", &["inactive"]),
    ("frozen", "21 21", &["inactive"]),
    ("checked", "21 21", &["inactive"]),
    ("jump-1", "21 21", &["inactive"]),
    ("jump-2", "21 21", &["inactive"]),
    ("switched", "22 22", &["active"]),
    ("resumed", "22 22", &["active"]),
];

/// Steps of a revert of a switched patch and what runs after a kill there.
const PAIR_REVERT_STEPS: [(&str, &str); 4] = [
    ("checked", "22 22"),
    ("unswitched", "21 21"),
    ("restore-1", "21 21"),
    ("restore-2", "21 21"),
];

#[test]
fn killed_at_every_step_of_a_two_page_switch_never_mixes() {
    let (_w, bin, patch) = setup_pair();
    for (k, (step, result, states)) in PAIR_APPLY_STEPS.into_iter().enumerate() {
        let mut t = Running::start(&bin, &["--pairs", "8", "--blockers"]);
        let pid = t.pid.to_string();
        no_mix(&mut t, "21 21", "before");
        let out = run(hotfix()
            .env("HOTFIX_FAULT", step)
            .arg("apply")
            .arg(&patch)
            .args(["--pid", &pid]));
        assert_eq!(out.status.signal(), Some(9), "step {step}: not killed");
        let what = format!("apply killed at {step}");
        no_mix(&mut t, result, &what);
        let l = list(t.pid);
        let got: Vec<&str> = l.iter().map(|(_, s)| s.as_str()).collect();
        assert_eq!(got, states.to_vec(), "{what}: list {l:?}");
        // A later apply works on whatever was left.
        if result == "21 21" {
            let out = run(hotfix().arg("apply").arg(&patch).args(["--pid", &pid]));
            assert!(
                out.status.success(),
                "{what}: apply: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            no_mix(&mut t, "22 22", &format!("{what}, then applied"));
        }
        // Kill a revert at one of its steps.
        let (rstep, rresult) = PAIR_REVERT_STEPS[k % PAIR_REVERT_STEPS.len()];
        let out = run(hotfix()
            .env("HOTFIX_FAULT", rstep)
            .args(["revert", "pair", "--pid", &pid]));
        assert_eq!(
            out.status.signal(),
            Some(9),
            "revert step {rstep}: not killed"
        );
        let what = format!("{what}, revert killed at {rstep}");
        no_mix(&mut t, rresult, &what);
        let want = if rresult == "22 22" {
            "active"
        } else {
            "inactive"
        };
        let newest = list(t.pid).last().map(|(_, s)| s.clone());
        assert_eq!(newest.as_deref(), Some(want), "{what}: {:?}", list(t.pid));
        // Reverts clean up every record; the old code runs.
        revert_all(t.pid, "pair", &what);
        no_mix(&mut t, "21 21", &format!("{what}, then reverted"));
        let s = t.cmd("status");
        assert_eq!(field(&s, "errors"), 0, "{what}: {s}");
        assert_eq!(t.cmd("wake"), "ok");
    }
}

/// Kill points inside injected system calls, for apply and revert.
const INJECT_STEPS: [&str; 5] = [
    "inject-mmap",
    "injected-mmap",
    "inject-mprotect",
    "injected-mprotect",
    "inject-munmap",
];

#[test]
fn killed_inside_an_injected_system_call_the_thread_resumes_intact() {
    let (_w, bin, patch) = setup_compute();
    for step in INJECT_STEPS {
        let mut t = Running::start(&bin, &["--hammer", "4", "--blockers"]);
        let pid = t.pid.to_string();
        assert_eq!(t.cmd("call 5"), "11");
        if step == "inject-munmap" {
            let out = run(hotfix().arg("apply").arg(&patch).args(["--pid", &pid]));
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let mut cmd = hotfix();
        cmd.env("HOTFIX_FAULT", step);
        if step == "inject-munmap" {
            cmd.args(["revert", "v2", "--pid", &pid]);
        } else {
            cmd.arg("apply").arg(&patch).args(["--pid", &pid]);
        }
        let out = run(&mut cmd);
        assert_eq!(out.status.signal(), Some(9), "step {step}: not killed");
        // The injected thread (the main thread, blocked reading stdin) runs on
        // with its own registers: it answers, several times.
        for x in [5, 6, 7] {
            assert_eq!(
                t.cmd(&format!("call {x}")),
                (2 * x + 1).to_string(),
                "{step}"
            );
        }
        let s = t.cmd("status");
        assert_eq!(field(&s, "bad"), 0, "{step}: {s}");
        assert_eq!(field(&s, "errors"), 0, "{step}: {s}");
        assert_eq!(t.cmd("wake"), "ok");
        assert!(
            list(t.pid).iter().all(|(_, s)| s == "inactive"),
            "{step}: {:?}",
            list(t.pid)
        );
        // And later operations work.
        let out = run(hotfix().arg("apply").arg(&patch).args(["--pid", &pid]));
        assert!(
            out.status.success(),
            "{step}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(t.cmd("call 5"), "22");
        revert_all(t.pid, "v2", step);
        assert_eq!(t.cmd("call 5"), "11");
    }
}

#[test]
fn killed_inside_an_injected_system_call_every_register_is_restored() {
    // The main thread (the one injected into) loops in assembly with known
    // values in rbx..r15 and live flags, checking them every round.
    let (_w, bin, patch) = setup_compute();
    for step in INJECT_STEPS {
        let mut t = Running::start(&bin, &["--regcheck"]);
        let pid = t.pid.to_string();
        if step == "inject-munmap" {
            let out = run(hotfix().arg("apply").arg(&patch).args(["--pid", &pid]));
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let mut cmd = hotfix();
        cmd.env("HOTFIX_FAULT", step);
        if step == "inject-munmap" {
            cmd.args(["revert", "v2", "--pid", &pid]);
        } else {
            cmd.arg("apply").arg(&patch).args(["--pid", &pid]);
        }
        let out = run(&mut cmd);
        assert_eq!(out.status.signal(), Some(9), "step {step}: not killed");
        let r0 = field(&t.cmd("regs"), "reg_rounds");
        std::thread::sleep(std::time::Duration::from_millis(200));
        let s = t.cmd("regs");
        assert_eq!(field(&s, "reg_bad"), 0, "{step}: {s}");
        assert!(
            field(&s, "reg_rounds") > r0,
            "{step}: main thread stalled: {s}"
        );
        revert_all(t.pid, "v2", step);
        let s = t.cmd("regs");
        assert_eq!(field(&s, "reg_bad"), 0, "{step}: {s}");
    }
}
