//! `hotfix drain` end to end: two VMs on real QEMU (TCG) moved in parallel
//! to two destinations over loopback; the JSON report and the guests'
//! counters are checked. Plus the argument and socket errors.

#![allow(clippy::unwrap_used, clippy::panic, reason = "tests")]

#[path = "../hvpatch/tests/common/mod.rs"]
mod common;

use assert_cmd::Command;
use common::{Lab, assert_consecutive, counters};
use std::time::Duration;

fn hotfix() -> Command {
    // Test patches are unsigned: opt out of the trust gate (docs/trust.md).
    let mut c = Command::cargo_bin("hotfix").unwrap();
    c.env("HOTFIX_ALLOW_UNSIGNED", "1");
    c
}

#[test]
fn drain_two_vms_in_parallel_reports_downtime() {
    let Some(lab) = Lab::new() else { return };
    let a = lab.vm("a", false, "");
    let b = lab.vm("b", false, "");
    let a2 = lab.vm("a2", true, "");
    let b2 = lab.vm("b2", true, "");
    a.wait_settled();
    b.wait_settled();
    let out = hotfix()
        .args(["drain", "--json", "--parallel", "2", "--vm"])
        .arg(&a.qmp)
        .arg(&b.qmp)
        .arg("--to")
        .arg(&a2.qmp)
        .arg(&b2.qmp)
        .timeout(Duration::from_secs(600))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let vms = doc["vms"].as_array().unwrap();
    assert_eq!(vms.len(), 2);
    for (v, (src, dst)) in vms.iter().zip([(&a, &a2), (&b, &b2)]) {
        assert_eq!(v["ok"], true, "{v}");
        assert_eq!(v["vm"].as_str().unwrap(), src.qmp.to_str().unwrap());
        let r = &v["report"];
        for k in [
            "total_ms",
            "setup_ms",
            "downtime_ms",
            "transferred_bytes",
            "dirty_pages_rate",
        ] {
            assert!(r[k].is_u64(), "{k} missing in {r}");
        }
        assert!(r["transferred_bytes"].as_u64().unwrap() > 0);
        assert_eq!(r["dest_status"], "running");
        eprintln!(
            "{}: downtime {} ms, total {} ms",
            src.qmp.display(),
            r["downtime_ms"],
            r["total_ms"]
        );
        let before = std::fs::read(&src.console).unwrap();
        let last = *counters(&before).last().unwrap();
        dst.wait_counter(last + 20, common::AFTER);
        let joined = [before, std::fs::read(&dst.console).unwrap()].concat();
        assert_consecutive(&counters(&joined), "source + destination console");
    }
}

#[test]
fn drain_with_unequal_vm_and_destination_counts_is_a_usage_error() {
    let out = hotfix()
        .args([
            "drain",
            "--vm",
            "/nonexistent/a.qmp",
            "/nonexistent/b.qmp",
            "--to",
            "/nonexistent/c.qmp",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("2 --vm socket(s) but 1 --to"), "{err}");
}

#[test]
fn drain_from_a_missing_socket_names_it_and_exits_1() {
    let out = hotfix()
        .args([
            "drain",
            "--json",
            "--vm",
            "/nonexistent/a.qmp",
            "--to",
            "/nonexistent/c.qmp",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("QMP socket /nonexistent/a.qmp: cannot connect"),
        "{err}"
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["vms"][0]["ok"], false);
}

#[test]
fn host_apply_with_unequal_vm_and_peer_counts_is_a_usage_error() {
    let out = hotfix()
        .args([
            "host",
            "apply",
            "/nonexistent/p.hfx",
            "--plan",
            "--vm",
            "/nonexistent/a.qmp",
        ])
        .args(["--peer", "/nonexistent/b.qmp", "/nonexistent/c.qmp"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("1 VM(s) but 2 peer destination(s)"), "{err}");
}

#[test]
fn host_apply_plan_of_a_file_that_is_no_patch_names_it_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.hfx");
    std::fs::write(&junk, "not a patch").unwrap();
    let out = hotfix()
        .args(["host", "apply", "--plan"])
        .arg(&junk)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("patch {}: neither a hotfix patch", junk.display())),
        "{err}"
    );
}
