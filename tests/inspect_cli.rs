//! `hotfix inspect` end to end: the binary on an object compiled at test
//! time, `--json`, and the exit statuses of bad input (1) and usage (2).

use assert_cmd::Command;
use std::path::Path;

fn object(dir: &Path) -> std::path::PathBuf {
    std::fs::write(
        dir.join("t.c"),
        "extern int g(int);\nint f(int x) { return g(x) + 1; }\n",
    )
    .expect("write C source");
    let status = std::process::Command::new("gcc")
        .current_dir(dir)
        .args([
            "-c",
            "-O2",
            "-ffunction-sections",
            "-fdata-sections",
            "t.c",
            "-o",
            "t.o",
        ])
        .status()
        .expect("run gcc");
    assert!(status.success());
    dir.join("t.o")
}

fn hotfix() -> Command {
    Command::cargo_bin("hotfix").expect("hotfix binary")
}

#[test]
fn text_and_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let obj = object(dir.path());
    let out = hotfix().arg("inspect").arg(&obj).output().expect("run");
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(".text.f"), "{text}");
    assert!(text.contains("R_X86_64_PLT32"), "{text}");
    assert!(text.contains("no patch metadata"), "{text}");

    let out = hotfix()
        .args(["--json", "inspect"])
        .arg(&obj)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(v["machine"], "x86-64");
    assert!(v["meta"].is_null());
    assert!(
        v["symbols"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s["name"] == "g" && s["section"] == "UND"))
    );
}

#[test]
fn bad_input_exits_1_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let junk = dir.path().join("junk.o");
    std::fs::write(&junk, b"definitely not ELF").expect("write");
    let out = hotfix().arg("inspect").arg(&junk).output().expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("junk.o") && err.contains("not an ELF"),
        "{err}"
    );

    let obj = object(dir.path());
    let bytes = std::fs::read(&obj).expect("read");
    let cut = dir.path().join("cut.o");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).expect("write");
    let out = hotfix().arg("inspect").arg(&cut).output().expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cut.o"));

    let out = hotfix()
        .args(["inspect", "/nonexistent/x.o"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/x.o"));
}

#[test]
fn usage_errors_exit_2() {
    let out = hotfix().arg("inspect").output().expect("run");
    assert_eq!(out.status.code(), Some(2));
}
