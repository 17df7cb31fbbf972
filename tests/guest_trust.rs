//! Guest tier: the trust gate of the static `hotfix` inside a QEMU test host
//! with a kernel livepatch module: an unsigned module and a signed one with
//! one byte changed are refused (exit 6, nothing loaded, the bug still
//! there); the signed module applies and fixes the bug; the guest's audit
//! log holds the refusals and the apply, and its chain verifies.

#![allow(
    clippy::panic,
    reason = "a failed check is a panic naming what the guest printed"
)]

#[path = "support/testhost.rs"]
mod testhost;

use std::path::{Path, PathBuf};
use std::process::Command;
use testhost::Guest;

#[path = "support/x2apic.rs"]
mod x2apic;
use x2apic::{GP, LEAK, M, rdmsr};

fn sh(cmd: &mut Command) {
    let o = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        o.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A key pair (minisign), the signed module and a tampered signed copy.
fn signed_files(dir: &Path) -> (PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{e}"));
    for f in ["vendor.pub", "vendor.key"] {
        let _ = std::fs::remove_file(dir.join(f));
    }
    sh(Command::new("minisign")
        .args(["-G", "-W", "-p"])
        .arg(dir.join("vendor.pub"))
        .arg("-s")
        .arg(dir.join("vendor.key")));
    let src = testhost::kmod_dir().join("livepatch/lp_x2apic.ko");
    let ko = dir.join("lp_x2apic.ko");
    let bad = dir.join("lp_tampered.ko");
    for f in [&ko, &bad] {
        std::fs::copy(&src, f).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
        sh(Command::new(env!("CARGO_BIN_EXE_hotfix"))
            .arg("sign")
            .arg(f)
            .arg("--key")
            .arg(dir.join("vendor.key")));
    }
    let mut bytes = std::fs::read(&bad).unwrap_or_else(|e| panic!("{e}"));
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&bad, bytes).unwrap_or_else(|e| panic!("{e}"));
    (ko, bad)
}

/// Runs `hotfix` in the guest with the gate on (the agent opts out).
fn strict(g: &mut Guest, args: &str) -> testhost::Output {
    g.run(&format!("HOTFIX_ALLOW_UNSIGNED=0 hotfix {args}"))
}

#[test]
fn kernel_module_signatures_are_enforced_in_guest() {
    if !testhost::available() {
        return;
    }
    testhost::image();
    let dir = testhost::root().join("target/testhost/trust");
    let (ko, bad) = signed_files(&dir);
    let sig = |p: &Path| PathBuf::from(format!("{}.minisig", p.display()));
    let img = testhost::image_with(
        "guest-trust",
        &[
            (dir.join("vendor.pub"), "/etc/hotfix/trusted.d/vendor.pub"),
            (ko.clone(), "/root/lp_x2apic.ko"),
            (sig(&ko), "/root/lp_x2apic.ko.minisig"),
            (bad.clone(), "/root/lp_tampered.ko"),
            (sig(&bad), "/root/lp_tampered.ko.minisig"),
        ],
    );
    let mut g = Guest::boot_image(&img);
    g.ok("chmod 755 /etc/hotfix/trusted.d");
    g.ok(&format!("insmod {M}/hfx_x2apic.ko"));
    assert_eq!(rdmsr(&mut g, "0x900"), LEAK);

    let o = strict(&mut g, &format!("apply {M}/lp_x2apic.ko --kernel"));
    assert_eq!(o.rc, 6, "{}", o.out);
    assert!(o.out.contains("lp_x2apic.ko: unsigned"), "{}", o.out);
    let o = strict(&mut g, "apply /root/lp_tampered.ko --kernel");
    assert_eq!(o.rc, 6, "{}", o.out);
    assert!(o.out.contains("changed after it was signed"), "{}", o.out);
    // Nothing reached the kernel.
    assert_eq!(
        g.ok("hotfix list --kernel").trim(),
        "no livepatches applied"
    );
    assert!(!g.ok("cat /proc/modules").contains("lp_"));
    assert_eq!(rdmsr(&mut g, "0x900"), LEAK);

    let o = strict(&mut g, "apply /root/lp_x2apic.ko --kernel");
    assert_eq!(o.rc, 0, "{}\n{}", o.out, g.console_tail(2000));
    assert_eq!(rdmsr(&mut g, "0x900"), GP);

    let log = g.ok("cat /var/log/hotfix/audit.jsonl");
    let steps: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    let kinds: Vec<(&str, u64)> = steps
        .iter()
        .map(|r| {
            (
                r["step"].as_str().unwrap_or(""),
                r["status"].as_u64().unwrap_or(99),
            )
        })
        .collect();
    assert_eq!(kinds, [("refuse", 6), ("refuse", 6), ("apply", 0)]);
    assert_eq!(steps[2]["target"], "kernel");
    assert!(
        steps[2]["detail"]
            .as_str()
            .unwrap_or("")
            .contains("signed for ko lp_x2apic")
    );
    let v = g.ok("hotfix audit verify");
    assert!(v.contains("3 line(s)"), "{v}");
}
