//! `hotfix build --kernel` on the host: kbuild runs against the pinned
//! kernel headers on the test modules of `testkernels/kmod/` and their fixes.
//! The generated modules are checked here as ELF files (livepatch symbols
//! and relocation sections, carried special-section entries); the guest
//! tests (`tests/guest_build.rs`, `tests/guest_special.rs`,
//! `tests/guest_vmlinux.rs`) load them. A vmlinux function is built from the
//! pinned kernel's Debian source (`scripts/kernel-src`).

#![allow(
    clippy::panic,
    reason = "a failed check is a panic naming what the guest printed"
)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn headers() -> Option<PathBuf> {
    let h = PathBuf::from("/usr/src/linux-headers-6.1.0-47-cloud-amd64");
    if h.join("Makefile").is_file() {
        return Some(h);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "kernel headers {} missing (CI=true: not skipping; run scripts/setup)",
        h.display()
    );
    eprintln!(
        "SKIP: kernel headers {} missing (run scripts/setup)",
        h.display()
    );
    None
}

fn build(fix: &str, out: &Path) -> std::process::Output {
    let Some(h) = headers() else {
        unreachable!("checked by the caller")
    };
    Command::new(env!("CARGO_BIN_EXE_hotfix"))
        .args(["build", "--kernel", "--module-src"])
        .arg(root().join("testkernels/kmod/x2apic"))
        .arg("--diff")
        .arg(root().join("testkernels/kmod/fixes").join(fix))
        .arg("--headers")
        .arg(h)
        .arg("-o")
        .arg(out)
        .output()
        .unwrap_or_else(|e| panic!("running hotfix: {e}"))
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn xsa108_fix_becomes_a_klp_module_with_klp_relocations() {
    if headers().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let ko = dir.path().join("lp_range.ko");
    let o = build("x2apic-range.patch", &ko);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    assert!(t.contains("livepatch lp_range"), "{t}");
    assert!(t.contains("replaces hfx_x2apic: x2apic_msr_read"), "{t}");
    // The static local and the module's static data are reached through
    // livepatch symbols.
    assert!(t.contains("klp symbol .klp.sym.hfx_x2apic.reads."), "{t}");
    let readelf = |args: &[&str]| {
        let o = Command::new("readelf")
            .args(args)
            .arg(&ko)
            .output()
            .unwrap_or_else(|e| panic!("readelf: {e}"));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let sections = readelf(&["-SW"]);
    let klp_rela: Vec<&str> = sections
        .lines()
        .filter(|l| l.contains(".klp.rela.hfx_x2apic..text.x2apic_msr_read"))
        .collect();
    assert_eq!(klp_rela.len(), 1, "{sections}");
    assert!(klp_rela[0].contains(" AIo "), "flags: {}", klp_rela[0]);
    let syms = readelf(&["-sW"]);
    for l in syms.lines().filter(|l| l.contains(".klp.sym.")) {
        assert!(l.contains("[0xff20]"), "not SHN_LIVEPATCH: {l}");
    }
    assert!(!syms.contains("__hotfix_klp_"), "placeholder left: {syms}");
    let info = Command::new("modinfo")
        .arg(&ko)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    assert!(info.contains("livepatch:      Y"), "{info}");
    assert!(
        info.contains("vermagic:       6.1.0-47-cloud-amd64"),
        "{info}"
    );
}

#[test]
fn init_change_is_refused() {
    if headers().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let o = build("x2apic-init.patch", &dir.path().join("lp_init.ko"));
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(
        t.contains("hfx_x2apic_init") && t.contains(".init.text"),
        "{t}"
    );
    assert!(!dir.path().join("lp_init.ko").exists());
}

fn build_from(src: &Path, fix: &str, out: &Path, extra: &[&str]) -> std::process::Output {
    let Some(h) = headers() else {
        unreachable!("checked by the caller")
    };
    Command::new(env!("CARGO_BIN_EXE_hotfix"))
        .args(["build", "--kernel", "--module-src"])
        .arg(src)
        .arg("--diff")
        .arg(root().join("testkernels/kmod/fixes").join(fix))
        .arg("--headers")
        .arg(h)
        .args(extra)
        .arg("-o")
        .arg(out)
        .output()
        .unwrap_or_else(|e| panic!("running hotfix: {e}"))
}

fn inspect(obj: &Path) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_hotfix"))
        .arg("inspect")
        .arg(obj)
        .output()
        .unwrap_or_else(|e| panic!("hotfix inspect: {e}"));
    assert!(o.status.success(), "{}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `hotfix inspect` lines of the special sections: their section rows and
/// relocation blocks (not the copied strings: a WARN's file name is the
/// build directory's absolute path).
fn special_part(inspect: &str) -> String {
    const SPECIAL: &[&str] = &[
        "__bug_table",
        "__jump_table",
        "__ex_table",
        ".altinstructions",
        ".altinstr_replacement",
        "__mcount_loc",
        ".return_sites",
        ".orc_unwind",
        ".orc_unwind_ip",
    ];
    let mut out = String::new();
    let mut in_block = false;
    for l in inspect.lines() {
        let t = l.trim_start();
        let name = t.split_whitespace().next().unwrap_or("");
        let indent = l.len() - t.len();
        if indent == 2 && l.contains('(') && l.trim_end().ends_with("):") {
            in_block = SPECIAL.contains(&name);
        } else if indent <= 2 {
            in_block = false;
        }
        let row = indent == 2
            && SPECIAL.contains(&name)
            && (l.contains("PROGBITS") || l.contains("RELA"));
        if in_block || row || (indent == 2 && SPECIAL.contains(&name) && l.ends_with("):")) {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

/// Relocation targets of one section's block in `hotfix inspect` output.
fn reloc_symbols(inspect: &str, section: &str) -> Vec<String> {
    let head = format!("  {section} (");
    let mut lines = inspect.lines().skip_while(|l| !l.starts_with(&head));
    lines.next();
    lines
        .skip(1)
        .take_while(|l| l.starts_with("    "))
        .filter_map(|l| l.split_whitespace().nth(2).map(str::to_owned))
        .collect()
}

#[test]
fn special_sections_are_carried_for_included_functions() {
    if headers().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let ko = dir.path().join("lp_trace.ko");
    let o = build_from(
        &root().join("testkernels/kmod/x2apic"),
        "x2apic-trace.patch",
        &ko,
        &["--keep"],
    );
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    assert!(t.contains("carried __jump_table: 1"), "{t}");
    assert!(t.contains("carried __bug_table: 1"), "{t}");
    let work = dir.path().join("lp_trace.ko.work");
    let part = inspect(&work.join("klp/part0.o.in"));
    let orig = inspect(&work.join("orig/hfx_x2apic.o"));
    // Entry sizes from the headers: one jump_entry (16 bytes), one
    // bug_entry (12), eleven ORC entries (6) and their s32 addresses.
    insta::assert_snapshot!("x2apic_trace_special", special_part(&part));
    // Only the entries of the patched function: the original object has
    // __mcount_loc and .return_sites entries for every function.
    for sec in ["__mcount_loc", ".return_sites", ".orc_unwind_ip"] {
        let kept = reloc_symbols(&part, sec);
        let all = reloc_symbols(&orig, sec);
        assert!(
            !kept.is_empty() && kept.len() < all.len(),
            "{sec}: {kept:?} of {all:?}"
        );
        assert!(
            kept.iter()
                .all(|s| s == "__hotfix_new_0" || s == "msr_write.cold"),
            "{sec}: {kept:?}"
        );
    }
    // The static key of the running module stays an ordinary symbol (the
    // module exports it), resolved at load with a symbol version.
    assert_eq!(
        reloc_symbols(&part, "__jump_table"),
        ["__hotfix_new_0", "msr_write.cold", "hfx_trace_msr"]
    );
    let info = Command::new("modinfo")
        .arg(&ko)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    assert!(info.contains("depends:        hfx_x2apic"), "{info}");
}

#[test]
fn user_access_fix_carries_ex_table_and_alternatives() {
    if headers().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let ko = dir.path().join("lp_user.ko");
    let o = build_from(
        &root().join("testkernels/kmod/x2apic"),
        "x2apic-user.patch",
        &ko,
        &["--keep"],
    );
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    assert!(t.contains("replaces hfx_x2apic: trace_write"), "{t}");
    let part = inspect(&dir.path().join("lp_user.ko.work/klp/part0.o.in"));
    // The exception table entry: faulting instruction and fixup, both in
    // the new function.
    assert_eq!(
        reloc_symbols(&part, "__ex_table"),
        ["__hotfix_new_0", "__hotfix_new_0"]
    );
    // Alternatives (stac/clac): each entry's code in the new function, its
    // replacement copied into the patch's own .altinstr_replacement.
    let alt = reloc_symbols(&part, ".altinstructions");
    assert!(!alt.is_empty() && alt.len().is_multiple_of(2), "{alt:?}");
    for pair in alt.chunks(2) {
        assert_eq!(pair, ["__hotfix_new_0", ".altinstr_replacement"], "{alt:?}");
    }
    insta::assert_snapshot!("x2apic_user_special", special_part(&part));
}

#[test]
fn jump_label_on_unexported_module_key_is_refused() {
    if headers().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let src = dir.path().join("x2apic");
    std::fs::create_dir_all(&src).unwrap_or_else(|e| panic!("{e}"));
    for f in ["Kbuild", "hfx_x2apic.c", "hfx_x2apic.h"] {
        std::fs::copy(root().join("testkernels/kmod/x2apic").join(f), src.join(f))
            .unwrap_or_else(|e| panic!("{f}: {e}"));
    }
    // The module as it would be without exporting its key.
    let c = src.join("hfx_x2apic.c");
    let code = std::fs::read_to_string(&c).unwrap_or_else(|e| panic!("{e}"));
    let private = code.replace(
        "DEFINE_STATIC_KEY_FALSE(hfx_trace_msr);\nEXPORT_SYMBOL_GPL(hfx_trace_msr);",
        "static DEFINE_STATIC_KEY_FALSE(hfx_trace_msr);",
    );
    assert_ne!(private, code, "the key's definition moved");
    std::fs::write(&c, private).unwrap_or_else(|e| panic!("{e}"));
    let ko = dir.path().join("lp_trace.ko");
    let o = build_from(&src, "x2apic-trace.patch", &ko, &[]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(
        t.contains("msr_write")
            && t.contains("__jump_table")
            && t.contains("hfx_trace_msr")
            && t.contains("not exported"),
        "{t}"
    );
    assert!(!ko.exists());
}

#[test]
fn comment_only_fix_is_no_functional_change() {
    if headers().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let o = build("x2apic-comment.patch", &dir.path().join("lp_comment.ko"));
    let t = text(&o);
    assert_eq!(o.status.code(), Some(5), "{t}");
    assert!(t.contains("no functional change"), "{t}");
}

#[path = "support/kernel_src.rs"]
mod kernel_src;

fn build_vmlinux(ksrc: &Path, out: &Path) -> std::process::Output {
    build_vmlinux_fix(ksrc, "vmlinux-cmdline.patch", out)
}

fn build_vmlinux_fix(ksrc: &Path, fix: &str, out: &Path) -> std::process::Output {
    let Some(h) = headers() else {
        unreachable!("checked by the caller")
    };
    Command::new(env!("CARGO_BIN_EXE_hotfix"))
        .args(["build", "--kernel", "--kernel-src"])
        .arg(ksrc)
        .arg("--diff")
        .arg(root().join("testkernels/kmod/fixes").join(fix))
        .arg("--headers")
        .arg(h)
        .arg("-o")
        .arg(out)
        .output()
        .unwrap_or_else(|e| panic!("running hotfix: {e}"))
}

#[test]
fn vmlinux_function_from_debian_source() {
    if headers().is_none() {
        return;
    }
    let Some(ksrc) = kernel_src::dir() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let ko = dir.path().join("lp_vcmdline.ko");
    let o = build_vmlinux(&ksrc, &ko);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    // Checked against the running kernel's bytes; unique in kallsyms.
    assert!(t.contains("replaces vmlinux: cmdline_proc_show,0"), "{t}");
    assert!(
        t.contains("klp symbol .klp.sym.vmlinux.saved_command_line,0"),
        "{t}"
    );
    let info = Command::new("modinfo")
        .arg(&ko)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    assert!(
        info.contains("vermagic:       6.1.0-47-cloud-amd64 SMP"),
        "{info}"
    );
    // The shared source tree is the shipped one again (checked under the
    // build's lock: other tests build in the same tree).
    let _lock = build_lock(&ksrc);
    let c = std::fs::read_to_string(ksrc.join("source/fs/proc/cmdline.c"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!c.contains("hotfix="), "{c}");
    assert!(!ksrc.join("applied.patch").exists());
}

#[test]
fn vmlinux_object_that_is_not_the_running_kernels_is_refused() {
    if headers().is_none() {
        return;
    }
    let Some(ksrc) = kernel_src::dir() else {
        return;
    };
    // The same source and output tree, compiled with frame pointers: not
    // how Debian built the image.
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let other = dir.path().join("ksrc");
    std::fs::create_dir_all(&other).unwrap_or_else(|e| panic!("{e}"));
    for f in ["source", "build", "vmlinux", "System.map", "release"] {
        std::os::unix::fs::symlink(ksrc.join(f), other.join(f)).unwrap_or_else(|e| panic!("{e}"));
    }
    let args = std::fs::read_to_string(ksrc.join("make.args")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(
        other.join("make.args"),
        format!("{args}KCPPFLAGS=-fno-omit-frame-pointer\n"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let ko = dir.path().join("lp_vcmdline.ko");
    let o = build_vmlinux(&other, &ko);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(4), "{t}");
    assert!(
        t.contains("cmdline_proc_show") && t.contains("not the running kernel's"),
        "{t}"
    );
    assert!(!ko.exists());
    let _lock = build_lock(&ksrc);
    assert!(!ksrc.join("applied.patch").exists());
}

const ZRAM_FIX: &str = "stable/zram-read-block-state-CVE-2026-89719.patch";

#[test]
fn in_tree_module_function_from_debian_source() {
    if headers().is_none() {
        return;
    }
    let Some(ksrc) = kernel_src::dir() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let ko = dir.path().join("lp_zram.ko");
    let o = build_vmlinux_fix(&ksrc, ZRAM_FIX, &ko);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    // zram_drv.o is compiled for the module (CONFIG_ZRAM=m) and checked
    // against the image's zram.ko: the patch's object is zram.
    assert!(t.contains("replaces zram: read_block_state,0"), "{t}");
    let info = |field: &str| {
        Command::new("modinfo")
            .args(["-F", field])
            .arg(&ko)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    };
    // No dependency on zram (or zsmalloc): the patch loads before them.
    assert_eq!(info("depends"), "", "{t}");
    assert!(info("livepatch") == "Y", "{t}");
    let expect = Command::new("readelf")
        .args(["-p", ".hotfix.expect"])
        .arg(&ko)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    assert!(expect.contains("zram read_block_state 0 "), "{expect}");
    zram_source_restored(&ksrc);
}

#[test]
fn module_object_that_is_not_the_shipped_modules_is_refused() {
    if headers().is_none() {
        return;
    }
    let Some(ksrc) = kernel_src::dir() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let other = dir.path().join("ksrc");
    std::fs::create_dir_all(&other).unwrap_or_else(|e| panic!("{e}"));
    for f in [
        "source",
        "build",
        "vmlinux",
        "System.map",
        "release",
        "make.args",
    ] {
        std::os::unix::fs::symlink(ksrc.join(f), other.join(f)).unwrap_or_else(|e| panic!("{e}"));
    }
    let ko = dir.path().join("lp_zram.ko");
    // No shipped modules: the build names the module it needs.
    let o = build_vmlinux_fix(&other, ZRAM_FIX, &ko);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("zram.ko"), "{t}");
    // A "zram.ko" that is another module: read_block_state is not in it.
    let fake = dir.path().join("modules");
    std::fs::create_dir_all(&fake).unwrap_or_else(|e| panic!("{e}"));
    std::fs::copy(
        ksrc.join("modules/kernel/mm/zsmalloc.ko"),
        fake.join("zram.ko"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    std::os::unix::fs::symlink(&fake, other.join("modules")).unwrap_or_else(|e| panic!("{e}"));
    let o = build_vmlinux_fix(&other, ZRAM_FIX, &ko);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(4), "{t}");
    assert!(
        t.contains("read_block_state") && t.contains("zram.ko"),
        "{t}"
    );
    assert!(!ko.exists());
    zram_source_restored(&ksrc);
}

#[test]
fn same_named_static_in_a_multi_object_module_gets_its_module_position() {
    if headers().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let ko = dir.path().join("lp_multi.ko");
    let o = build_from(
        &root().join("testkernels/kmod/multi"),
        "multi-scale.patch",
        &ko,
        &[],
    );
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    // multi_a.o's scale() comes first in hfx_multi.ko's symbol table, the
    // patched multi_b.o's second: kallsyms position 2 (unique in its object).
    assert!(t.contains("replaces hfx_multi: scale,2"), "{t}");
}

/// fs/kernfs/mount.c of the real kernel: pr_debug descriptors
/// (`__UNIQUE_ID_ddebugN`), `__func__`, `__init` code. Moving its pr_debug
/// lines used to be refused as "initializer or size of existing data
/// changed"; it is no functional change (exit 5). Changing a pr_debug
/// message changes the function it is inlined into (kernfs_fill_super
/// into kernfs_get_tree), which is carried with its descriptor.
#[test]
fn vmlinux_pr_debug_moved_is_no_change_and_a_message_fix_builds() {
    if headers().is_none() {
        return;
    }
    let Some(ksrc) = kernel_src::dir() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let ko = dir.path().join("lp_kfs_moved.ko");
    let o = build_vmlinux_fix(&ksrc, "vmlinux-kernfs-debug-moved.patch", &ko);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(5), "{t}");
    assert!(t.contains("no functional change"), "{t}");
    assert!(!ko.exists());
    let ko = dir.path().join("lp_kfs_fill.ko");
    let o = build_vmlinux_fix(&ksrc, "vmlinux-kernfs-fill-super.patch", &ko);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    assert!(t.contains("replaces vmlinux: kernfs_get_tree,0"), "{t}");
    assert!(t.contains("carried __jump_table: 2 entries"), "{t}");
    assert!(ko.exists());
}

#[test]
fn sign_key_appends_a_module_signature_for_enforcing_kernels() {
    if headers().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let pem = dir.path().join("signing_key.pem");
    let o = Command::new("openssl")
        .args(["req", "-new", "-nodes", "-utf8", "-sha256", "-days", "3650"])
        .args(["-batch", "-x509", "-subj", "/CN=hotfix test module key"])
        .args(["-newkey", "rsa:2048", "-outform", "PEM", "-keyout"])
        .arg(&pem)
        .arg("-out")
        .arg(&pem)
        .output()
        .unwrap_or_else(|e| panic!("openssl: {e}"));
    assert!(o.status.success(), "{}", text(&o));
    let ko = dir.path().join("lp_range.ko");
    let pem_s = pem.to_string_lossy().into_owned();
    let o = build_from(
        &root().join("testkernels/kmod/x2apic"),
        "x2apic-range.patch",
        &ko,
        &["--sign-key", &pem_s, "--sign-cert", &pem_s],
    );
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    assert!(t.contains("module signature appended"), "{t}");
    let bytes = std::fs::read(&ko).unwrap_or_else(|e| panic!("{e}"));
    assert!(bytes.ends_with(b"~Module signature appended~\n"));
    // Still a module hotfix can read (and sign for its trust directory).
    let info = Command::new("modinfo")
        .arg(&ko)
        .output()
        .unwrap_or_else(|e| panic!("modinfo: {e}"));
    let it = text(&info);
    assert!(it.contains("sig_id:") && it.contains("PKCS#7"), "{it}");
    assert!(
        it.contains("signer:") && it.contains("hotfix test module key"),
        "{it}"
    );
    // A key without a certificate is a usage error.
    let o = build_from(
        &root().join("testkernels/kmod/x2apic"),
        "x2apic-range.patch",
        &dir.path().join("x.ko"),
        &["--sign-key", &pem_s],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

#[test]
fn in_tree_module_statics_are_klp_symbols_of_the_module() {
    if headers().is_none() {
        return;
    }
    let Some(ksrc) = kernel_src::dir() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let ko = dir.path().join("lp_zstat.ko");
    let o = build_vmlinux_fix(&ksrc, "zram-disksize-statics.patch", &ko);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    assert!(t.contains("replaces zram: disksize_show,0"), "{t}");
    // zram's statics, positioned over the shipped zram.ko (unique there).
    assert!(t.contains("klp symbol .klp.sym.zram.zram_major,0"), "{t}");
    assert!(t.contains("klp symbol .klp.sym.zram.num_devices,0"), "{t}");
    let sections = Command::new("readelf")
        .arg("-SW")
        .arg(&ko)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    assert!(
        sections.contains(".klp.rela.zram..text.disksize_show"),
        "{sections}"
    );
    zram_source_restored(&ksrc);
}

/// The shared source tree holds the shipped zram_drv.c again; checked
/// under the build's lock, since other tests build in the same tree.
fn zram_source_restored(ksrc: &Path) {
    let _lock = build_lock(ksrc);
    let c = std::fs::read_to_string(ksrc.join("source/drivers/block/zram/zram_drv.c"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(c.contains("unsigned long nr_pages = zram->disksize >> PAGE_SHIFT;"));
    assert!(!ksrc.join("applied.patch").exists());
}

/// The lock `hotfix build --kernel-src` holds while the shared source tree
/// has a fix applied (`DIR/.lock`, flock).
fn build_lock(ksrc: &Path) -> std::fs::File {
    let lock = std::fs::File::create(ksrc.join(".lock")).unwrap_or_else(|e| panic!("{e}"));
    lock.lock().unwrap_or_else(|e| panic!("{e}"));
    lock
}
