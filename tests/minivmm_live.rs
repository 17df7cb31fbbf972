//! The security-response path end to end on a running VMM-shaped process:
//! `hotfix build` turns each shipped minivmm fix into a patch, `hotfix apply`
//! puts it into a minivmm whose vCPU threads keep taking exits, the guest-side
//! probe flips from VULNERABLE to SAFE, the vCPUs never stop making progress,
//! and `hotfix revert` brings the bug back.

#![allow(
    clippy::panic,
    reason = "a failed check is a panic naming what hotfix printed"
)]

use assert_cmd::Command;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

fn hotfix() -> Command {
    // Test patches are unsigned: opt out of the trust gate (docs/trust.md).
    let mut c = Command::cargo_bin("hotfix").expect("hotfix binary");
    c.env("HOTFIX_ALLOW_UNSIGNED", "1");
    c
}

/// A running minivmm, killed when dropped.
struct Vmm {
    child: Child,
    sock: PathBuf,
    ctl: PathBuf,
}

impl Drop for Vmm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Vmm {
    fn start(bin: &Path, dir: &Path, name: &str) -> Vmm {
        let sock = dir.join(format!("{name}.sock"));
        let child = std::process::Command::new(bin)
            .args(["-n", "4"])
            .arg(&sock)
            .stdout(Stdio::null())
            .spawn()
            .expect("start minivmm");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !sock.exists() {
            assert!(
                Instant::now() < deadline,
                "minivmm did not open {}",
                sock.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let ctl = bin.with_file_name("minivmmctl");
        Vmm { child, sock, ctl }
    }
    fn pid(&self) -> String {
        self.child.id().to_string()
    }
    fn ctl(&self, cmd: &str) -> String {
        let out = std::process::Command::new(&self.ctl)
            .arg(&self.sock)
            .args(cmd.split(' '))
            .output()
            .expect("minivmmctl");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
    fn exits(&self) -> u64 {
        let s = self.ctl("stats");
        s.split_whitespace()
            .skip_while(|w| *w != "exits")
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("bad stats line {s:?}"))
    }
}

/// A private copy of the minivmm tree, a private build cache, and the
/// patch-ready original build of it (the binary a host would run).
struct Prepared {
    dir: tempfile::TempDir,
    src: PathBuf,
    cache: PathBuf,
    bin: PathBuf,
}

fn prepare() -> Prepared {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("minivmm");
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("testkernels/minivmm"))
        .arg(&src)
        .status()
        .expect("cp");
    assert!(st.success());
    let _ = std::process::Command::new("make")
        .args(["-s", "clean"])
        .current_dir(&src)
        .status();
    let cache = dir.path().join("cache");
    let out = hotfix()
        .args([
            "--json",
            "build",
            "--prepare",
            "--binary",
            "minivmm",
            "--src",
        ])
        .arg(&src)
        .arg("--cache")
        .arg(&cache)
        .assert()
        .success();
    let v: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).expect("json");
    let bin = PathBuf::from(v["binary"].as_str().expect("binary path"));
    Prepared {
        dir,
        src,
        cache,
        bin,
    }
}

#[test]
fn each_fix_is_built_and_applied_live_to_a_running_minivmm() {
    let Prepared {
        dir,
        src,
        cache,
        bin,
    } = prepare();

    for (fix, probe) in [
        ("01-xsa108-x2apic-msr-range", "xsa108"),
        ("02-blk-register-bounds", "regwrite"),
        ("03-dma-length-overflow", "dmaoverflow"),
        ("04-request-uaf-reference", "uaf"),
        ("05-pci-hide-mgmt-new-helper", "pcimgmt"),
    ] {
        let vmm = Vmm::start(&bin, dir.path(), fix);
        assert!(
            vmm.ctl(&format!("probe {probe}")).starts_with("VULNERABLE"),
            "{fix}: bug not visible before"
        );
        let patch = dir.path().join(format!("{fix}.hfx"));
        hotfix()
            .args(["build", "--binary", "minivmm", "--src"])
            .arg(&src)
            .arg("--cache")
            .arg(&cache)
            .arg("--diff")
            .arg(src.join("fixes").join(format!("{fix}.patch")))
            .args(["--pid", &vmm.pid(), "-o"])
            .arg(&patch)
            .assert()
            .success();
        let before = vmm.exits();
        let applied = hotfix()
            .args(["--json", "apply"])
            .arg(&patch)
            .args(["--pid", &vmm.pid()])
            .assert()
            .success();
        let a: serde_json::Value =
            serde_json::from_slice(&applied.get_output().stdout).expect("apply json");
        let safe = vmm.ctl(&format!("probe {probe}"));
        assert!(safe.starts_with("SAFE"), "{fix}: after apply: {safe} ({a})");
        // The vCPUs kept taking exits across the patch.
        std::thread::sleep(Duration::from_millis(50));
        assert!(vmm.exits() > before, "{fix}: vCPUs stopped");
        let list = hotfix()
            .args(["list", "--pid", &vmm.pid()])
            .assert()
            .success();
        assert!(
            String::from_utf8_lossy(&list.get_output().stdout).contains(fix),
            "{fix}: not listed"
        );
        hotfix()
            .args(["revert", fix, "--pid", &vmm.pid()])
            .assert()
            .success();
        let again = vmm.ctl(&format!("probe {probe}"));
        assert!(
            again.starts_with("VULNERABLE"),
            "{fix}: after revert: {again}"
        );
        assert_eq!(vmm.ctl("quit"), "bye");
    }
}

#[test]
fn hotfix_killed_after_the_first_jump_leaves_no_mix() {
    // The XSA-108 fix replaces two adjacent functions: their jump sites
    // share a page, so the loader writes both in one write and a SIGKILL of
    // hotfix after "jump-1" finds both switched, never one.
    let Prepared {
        dir,
        src,
        cache,
        bin,
    } = prepare();
    let vmm = Vmm::start(&bin, dir.path(), "kill");
    let patch = dir.path().join("xsa108.hfx");
    hotfix()
        .args(["build", "--binary", "minivmm", "--src"])
        .arg(&src)
        .arg("--cache")
        .arg(&cache)
        .arg("--diff")
        .arg(src.join("fixes/01-xsa108-x2apic-msr-range.patch"))
        .arg("-o")
        .arg(&patch)
        .assert()
        .success();
    let killed = std::process::Command::new(env!("CARGO_BIN_EXE_hotfix"))
        .arg("apply")
        .arg(&patch)
        .args(["--pid", &vmm.pid()])
        .env("HOTFIX_FAULT", "jump-1")
        .env("HOTFIX_ALLOW_UNSIGNED", "1")
        .output()
        .expect("run hotfix");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        killed.status.signal(),
        Some(9),
        "hotfix was not killed at jump-1"
    );
    let list = hotfix()
        .args(["list", "--pid", &vmm.pid()])
        .assert()
        .success();
    let text = String::from_utf8_lossy(&list.get_output().stdout).into_owned();
    assert!(
        text.contains("[active]"),
        "expected both jumps in place: {text}"
    );
    assert!(!text.contains("partial"), "{text}");
    assert!(vmm.ctl("probe xsa108").starts_with("SAFE"));
    hotfix()
        .args(["revert", "01-xsa108-x2apic-msr-range", "--pid", &vmm.pid()])
        .assert()
        .success();
    assert!(vmm.ctl("probe xsa108").starts_with("VULNERABLE"));
}
