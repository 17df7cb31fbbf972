//! `hotfix diff` and `hotfix explain` end to end: exit statuses 0/1/5,
//! `--json`, the written patch, `--target` stamping, snapshots of the human
//! output for the XSA-108 case. Objects are compiled with gcc at test time
//! from `testkernels/diffcases/`.

#![allow(clippy::unwrap_used, clippy::panic, missing_docs)]

use assert_cmd::Command;
use std::path::Path;

/// Compiles `<case>/{orig,patched}.c` as `orig/<case>.o` and
/// `patched/<case>.o` under `dir` (-O2, function and data sections).
fn build(dir: &Path, case: &str) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testkernels/diffcases")
        .join(case);
    for side in ["orig", "patched"] {
        let d = dir.join(side);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::copy(src.join(format!("{side}.c")), d.join(format!("{case}.c"))).unwrap();
        let st = std::process::Command::new("gcc")
            .current_dir(&d)
            .args(["-O2", "-ffunction-sections", "-fdata-sections", "-c"])
            .arg(format!("-I{}", src.parent().unwrap().display()))
            .arg(format!("{case}.c"))
            .status()
            .expect("gcc is required (scripts/setup installs it)");
        assert!(st.success());
    }
}

fn hotfix(dir: &Path) -> Command {
    let mut c = Command::cargo_bin("hotfix").unwrap();
    c.current_dir(dir);
    c
}

fn objs(case: &str) -> (String, String) {
    (format!("orig/{case}.o"), format!("patched/{case}.o"))
}

#[test]
fn diff_writes_a_patch_and_exits_0() {
    let t = tempfile::tempdir().unwrap();
    build(t.path(), "xsa108");
    let (o, p) = objs("xsa108");
    let out = hotfix(t.path())
        .args(["diff", &o, &p, "-o", "xsa108-fix.o"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    insta::assert_snapshot!("diff_xsa108_human", text);
    let patch = std::fs::read(t.path().join("xsa108-fix.o")).unwrap();
    let meta = patchgen::format::read_meta(&patch).unwrap();
    assert_eq!(meta.id, "xsa108-fix", "id defaults to the output stem");
    assert_eq!(meta.funcs.len(), 1);
    assert_eq!(meta.funcs[0].name, "vlapic_msr_read");
}

#[test]
fn diff_json() {
    let t = tempfile::tempdir().unwrap();
    build(t.path(), "new_helper");
    let (o, p) = objs("new_helper");
    let out = hotfix(t.path())
        .args([
            "--json",
            "diff",
            &o,
            &p,
            "-o",
            "out.o",
            "--id",
            "nh",
            "--description",
            "len check",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["result"], "patch");
    assert_eq!(v["report"]["changed"][0]["name"], "handle_desc");
    assert_eq!(v["report"]["new_data"][0], "rejected_descs");
    assert_eq!(v["report"]["meta"]["id"], "nh");
    assert_eq!(v["report"]["meta"]["description"], "len check");
}

#[test]
fn no_change_exits_5() {
    let t = tempfile::tempdir().unwrap();
    build(t.path(), "line_only");
    let (o, p) = objs("line_only");
    let out = hotfix(t.path())
        .args(["diff", &o, &p, "-o", "x.o"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&out.stdout).contains("no functional change"));
    assert!(!t.path().join("x.o").exists(), "nothing written");
    let out = hotfix(t.path())
        .args(["--json", "diff", &o, &p, "-o", "x.o"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["result"], "no-change");
    assert_eq!(v["line_only"], 1);
}

#[test]
fn refusal_exits_1_naming_file_symbol_reason() {
    let t = tempfile::tempdir().unwrap();
    build(t.path(), "data_changed");
    let (o, p) = objs("data_changed");
    let out = hotfix(t.path())
        .args(["diff", &o, &p, "-o", "x.o"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("patched/data_changed.o"), "{err}");
    assert!(err.contains("max_vcpus"), "{err}");
    assert!(err.contains("initializer"), "{err}");
    let out = hotfix(t.path())
        .args(["--json", "diff", &o, &p, "-o", "x.o"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["result"], "refused");
    assert_eq!(v["refusals"][0]["kind"], "data-changed");
    assert_eq!(v["refusals"][0]["symbol"], "max_vcpus");
}

#[test]
fn bad_input_exits_1_and_usage_exits_2() {
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("junk.o"), b"not an object").unwrap();
    let out = hotfix(t.path())
        .args(["diff", "junk.o", "junk.o", "-o", "x.o"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("junk.o"));
    let out = hotfix(t.path())
        .args(["diff", "missing.o", "junk.o", "-o", "x.o"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.o"));
    let out = hotfix(t.path()).args(["diff", "junk.o"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn target_binary_stamps_build_id() {
    let t = tempfile::tempdir().unwrap();
    build(t.path(), "xsa108");
    // A target binary linked from the original object.
    let main = t.path().join("main.c");
    std::fs::write(&main, "int main(void) { return 0; }\n").unwrap();
    let st = std::process::Command::new("gcc")
        .current_dir(t.path())
        .args([
            "-Wl,--build-id=sha1",
            "main.c",
            "orig/xsa108.o",
            "-o",
            "vmm",
        ])
        .status()
        .unwrap();
    assert!(st.success());
    let (o, p) = objs("xsa108");
    hotfix(t.path())
        .args(["diff", &o, &p, "-o", "x.o", "--target", "vmm"])
        .assert()
        .code(0);
    let meta = patchgen::format::read_meta(&std::fs::read(t.path().join("x.o")).unwrap()).unwrap();
    assert_eq!(meta.targets[0].build_id.len(), 40);
    assert_eq!(meta.targets[0].name, "vmm");
}

#[test]
fn explain_xsa108() {
    let t = tempfile::tempdir().unwrap();
    build(t.path(), "xsa108");
    let (o, p) = objs("xsa108");
    let out = hotfix(t.path()).args(["explain", &o, &p]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    insta::assert_snapshot!(
        "explain_xsa108_human",
        String::from_utf8(out.stdout).unwrap()
    );
    let out = hotfix(t.path())
        .args(["--json", "explain", &o, &p, "vlapic_msr_read"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["funcs"][0]["name"], "vlapic_msr_read");
    assert!(
        v["funcs"][0]["diff"]
            .as_str()
            .unwrap()
            .contains("+  +10: cmp esi, 0FFh")
    );
    let out = hotfix(t.path())
        .args(["explain", &o, &p, "hvm_msr_read"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("hvm_msr_read did not change"));
}

#[test]
fn explain_without_changes_exits_5() {
    let t = tempfile::tempdir().unwrap();
    build(t.path(), "line_only");
    let (o, p) = objs("line_only");
    let out = hotfix(t.path()).args(["explain", &o, &p]).output().unwrap();
    assert_eq!(out.status.code(), Some(5));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("port_write: only __LINE__ immediates differ"),
        "{text}"
    );
}

#[test]
fn diff_kernel_normalizes_init_code_and_names_the_rule() {
    let t = tempfile::tempdir().unwrap();
    build(t.path(), "kernel_sections");
    build(t.path(), "init_only");
    // .init.text, .exit.text and .static_call.text objects diff alone.
    let (o, p) = objs("kernel_sections");
    let out = hotfix(t.path())
        .args(["diff", "--kernel", &o, &p, "-o", "k.o"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("changed   dispatch:"), "{text}");
    assert!(!text.contains("mod_init"), "{text}");
    // An __init-only change: exit 1, the function and the rule named.
    let (o, p) = objs("init_only");
    for kernel in [true, false] {
        let mut args = vec!["diff"];
        if kernel {
            args.push("--kernel");
        }
        args.extend([o.as_str(), p.as_str(), "-o", "i.o"]);
        let out = hotfix(t.path()).args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "--kernel {kernel}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("refused  setup_b:") && text.contains("(rule init-code)"),
            "--kernel {kernel}: {text}"
        );
        assert!(!t.path().join("i.o").exists());
    }
    // explain --kernel works on the same objects.
    let (o, p) = objs("kernel_sections");
    let out = hotfix(t.path())
        .args(["explain", "--kernel", &o, &p])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("dispatch"));
}
