//! `hotfix build` on minivmm (testkernels/minivmm): every shipped fix gives
//! exactly the functions it really changes; refusals and mismatches are
//! explained. The live application of these patches is tested with the
//! loader (tests/minivmm_live.rs).

#![allow(
    clippy::panic,
    reason = "a failed check is a panic naming what hotfix printed"
)]

use assert_cmd::Command;
use std::path::{Path, PathBuf};

fn minivmm_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testkernels/minivmm")
}

/// A private copy of the minivmm tree and a private build cache.
struct Tree {
    dir: tempfile::TempDir,
}

impl Tree {
    fn new() -> Tree {
        let dir = tempfile::tempdir().expect("tempdir");
        let st = std::process::Command::new("cp")
            .arg("-a")
            .arg(minivmm_src())
            .arg(dir.path().join("minivmm"))
            .status()
            .expect("cp");
        assert!(st.success());
        // A clean tree: no objects from a build made by hand.
        let _ = std::process::Command::new("make")
            .args(["-s", "clean"])
            .current_dir(dir.path().join("minivmm"))
            .status();
        Tree { dir }
    }
    fn src(&self) -> PathBuf {
        self.dir.path().join("minivmm")
    }
    fn cache(&self) -> PathBuf {
        self.dir.path().join("cache")
    }
    fn build(&self, diff: &Path, out: &str) -> assert_cmd::assert::Assert {
        Command::cargo_bin("hotfix")
            .expect("hotfix binary")
            .args(["--json", "build", "--binary", "minivmm", "--src"])
            .arg(self.src())
            .arg("--diff")
            .arg(diff)
            .arg("--cache")
            .arg(self.cache())
            .arg("-o")
            .arg(self.dir.path().join(out))
            .assert()
    }
}

fn fix(name: &str) -> PathBuf {
    minivmm_src().join("fixes").join(name)
}

fn json(a: &assert_cmd::assert::Assert) -> serde_json::Value {
    serde_json::from_slice(&a.get_output().stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): stdout {} stderr {}",
            String::from_utf8_lossy(&a.get_output().stdout),
            String::from_utf8_lossy(&a.get_output().stderr)
        )
    })
}

fn names(v: &serde_json::Value, key: &str) -> Vec<String> {
    let mut n: Vec<String> = v["build"]["meta"][key]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| {
                    x.get("name")
                        .and_then(|n| n.as_str())
                        .or_else(|| x.as_str())
                        .unwrap_or_default()
                        .to_string()
                })
                .collect()
        })
        .unwrap_or_default();
    n.sort();
    n
}

#[test]
fn every_minivmm_fix_yields_exactly_its_functions() {
    let t = Tree::new();
    // (fix, replaced functions, new functions, new data)
    type Case<'a> = (&'a str, &'a [&'a str], &'a [&'a str], &'a [&'a str]);
    let cases: &[Case<'_>] = &[
        (
            "01-xsa108-x2apic-msr-range.patch",
            &["lapic_msr_read", "lapic_msr_write"],
            &[],
            &[],
        ),
        (
            "02-blk-register-bounds.patch",
            &["blk_mmio_write"],
            &[],
            &[],
        ),
        (
            "04-request-uaf-reference.patch",
            &["blk_request_complete", "blk_request_start"],
            &[],
            &[],
        ),
        (
            "05-pci-hide-mgmt-new-helper.patch",
            &["pio_in"],
            &["pci_devfn_guest_visible"],
            &["pci_hidden_denials"],
        ),
    ];
    let mut first = true;
    for (diff, changed, new_funcs, new_data) in cases {
        let a = t.build(&fix(diff), "p.hfx").success();
        let v = json(&a);
        assert_eq!(names(&v, "funcs"), *changed, "{diff}");
        assert_eq!(names(&v, "new_funcs"), *new_funcs, "{diff}");
        assert_eq!(names(&v, "new_data"), *new_data, "{diff}");
        // The original build is made once and reused by every later fix.
        assert_eq!(v["build"]["original_cached"], !first, "{diff}");
        first = false;
        let build_id = v["build"]["meta"]["targets"][0]["build_id"]
            .as_str()
            .unwrap_or("");
        assert_eq!(build_id.len(), 40, "{diff}: target build-id stamped");
        // Only devices.c or lapic.c was recompiled; the others are untouched.
        let objs = v["build"]["objects"].as_array().map(Vec::len).unwrap_or(0);
        assert_eq!(objs, 1, "{diff}: one recompiled object");
    }
    // The DMA fix changes blk_dma_submit (and its inlined copy in
    // blk_mmio_write when gcc inlines it).
    let v = json(
        &t.build(&fix("03-dma-length-overflow.patch"), "p.hfx")
            .success(),
    );
    assert!(
        names(&v, "funcs").contains(&"blk_dma_submit".to_string()),
        "{v}"
    );
}

#[test]
fn header_change_yields_only_the_functions_that_changed() {
    let t = Tree::new();
    let diff = t.dir.path().join("poison.patch");
    std::fs::write(
        &diff,
        "--- a/src/minivmm.h\n+++ b/src/minivmm.h\n@@ -65,3 +65,3 @@\n #define DEV_MAGIC 0xdeadbeefcafef00dULL\n-#define DEV_POISON 0x6b6b6b6b6b6b6b6bULL\n+#define DEV_POISON 0x6c6c6c6c6c6c6c6cULL\n \n",
    )
    .expect("write diff");
    let v = json(&t.build(&diff, "h.hfx").success());
    let objects = v["build"]["objects"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        objects.len(),
        5,
        "every object including the header recompiles: {v}"
    );
    let changed: Vec<_> = objects
        .iter()
        .filter(|o| o["result"] == "changed")
        .collect();
    assert_eq!(changed.len(), 1, "{v}");
    assert_eq!(changed[0]["object"], "src/devices.o");
    // blkdev_put is inlined into blk_unplug: the caller changes with it.
    assert_eq!(
        names(&v, "funcs"),
        vec!["blk_unplug".to_string(), "blkdev_put".to_string()]
    );
}

#[test]
fn struct_layout_change_is_refused_naming_the_type() {
    let t = Tree::new();
    let diff = t.dir.path().join("layout.patch");
    std::fs::write(
        &diff,
        "--- a/src/minivmm.h\n+++ b/src/minivmm.h\n@@ -52,5 +52,6 @@\n struct blkdev {\n \tint refcount;\n+\tint generation;\n \tint plugged;\n \tuint32_t regs[BLK_NR_REGS];\n \tuint32_t irq_line;         /* lies right after regs: an overflow hits it */\n",
    )
    .expect("write diff");
    let a = t.build(&diff, "l.hfx").failure().code(1);
    let err = String::from_utf8_lossy(&a.get_output().stderr).into_owned();
    assert!(err.contains("struct blkdev"), "{err}");
    assert!(err.contains("drain"), "{err}");
    assert!(!t.dir.path().join("l.hfx").exists());
}

#[test]
fn build_id_mismatch_is_explained() {
    let t = Tree::new();
    // A binary built by hand with other flags, as a host might run.
    let other = tempfile::tempdir().expect("tempdir");
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(t.src())
        .arg(other.path().join("m"))
        .status()
        .expect("cp");
    assert!(st.success());
    let st = std::process::Command::new("make")
        .args(["-s", "CFLAGS=-O1 -g"])
        .current_dir(other.path().join("m"))
        .status()
        .expect("make");
    assert!(st.success());
    let a = Command::cargo_bin("hotfix")
        .expect("hotfix")
        .args(["build", "--binary", "minivmm", "--src"])
        .arg(t.src())
        .arg("--diff")
        .arg(fix("02-blk-register-bounds.patch"))
        .arg("--cache")
        .arg(t.cache())
        .arg("--against")
        .arg(other.path().join("m/minivmm"))
        .arg("-o")
        .arg(t.dir.path().join("x.hfx"))
        .assert()
        .failure()
        .code(4);
    let err = String::from_utf8_lossy(&a.get_output().stderr).into_owned();
    assert!(err.contains("build-id mismatch"), "{err}");
    assert!(err.contains("flags differ"), "{err}");
    assert!(err.contains("-O1"), "{err}");
}

#[test]
fn prepare_gives_the_binary_whose_build_id_patches_carry() {
    let t = Tree::new();
    let a = Command::cargo_bin("hotfix")
        .expect("hotfix")
        .args([
            "--json",
            "build",
            "--prepare",
            "--binary",
            "minivmm",
            "--src",
        ])
        .arg(t.src())
        .arg("--cache")
        .arg(t.cache())
        .assert()
        .success();
    let v: serde_json::Value = serde_json::from_slice(&a.get_output().stdout).expect("json");
    let bin = PathBuf::from(v["binary"].as_str().expect("binary"));
    assert!(bin.is_file());
    let p = json(
        &t.build(&fix("02-blk-register-bounds.patch"), "p.hfx")
            .success(),
    );
    assert_eq!(p["build"]["meta"]["targets"][0]["build_id"], v["build_id"]);
    // A diff that does not apply is a clear error.
    let bad = t.dir.path().join("bad.patch");
    std::fs::write(
        &bad,
        "--- a/src/nothere.c\n+++ b/src/nothere.c\n@@ -1 +1 @@\n-a\n+b\n",
    )
    .expect("write");
    let a = t.build(&bad, "b.hfx").failure().code(1);
    let err = String::from_utf8_lossy(&a.get_output().stderr).into_owned();
    assert!(err.contains("does not apply"), "{err}");
}
