//! `hotfix build --kernel` on the host: kbuild runs against the pinned
//! kernel headers on the test modules of `testkernels/kmod/` and their fixes.
//! The generated modules are checked here as ELF files (livepatch symbols
//! and relocation sections); `tests/guest_build.rs` loads them in a guest.

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

#[test]
fn special_section_change_is_refused() {
    if headers().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let o = build("x2apic-trace.patch", &dir.path().join("lp_trace.ko"));
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("msr_write"), "{t}");
    assert!(
        t.contains("__jump_table") || t.contains("__ex_table"),
        "{t}"
    );
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
