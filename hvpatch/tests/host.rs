//! Host plans end to end: a VMM-shaped process patched live by the loader
//! library, a real QEMU guest drained to a peer when a patch is refused as
//! unsafe, the audit log, and the `--plan` text (snapshot).
//!
//! The process patched live is the loader's test target
//! (`testkernels/proc/target.c`, started with `--stuck` so that one of its
//! functions never leaves the stack) with hand-made patches
//! (`loader/tests/support`): `compute_v2` applies live, `stuck_v2` stays
//! unsafe (exit status 3 after its retries) and forces the drain. QEMU itself
//! is not patched here (no patch for the distribution's QEMU binary exists).

#![allow(clippy::unwrap_used, clippy::panic, reason = "tests")]

mod common;
#[path = "../../loader/tests/support/mod.rs"]
mod support;

use common::{Lab, assert_consecutive, counters};
use hvpatch::audit;
use hvpatch::drain::{Options, Quiet};
use hvpatch::host::{self, Spec};
use patchgen::Status;
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::{Build, Running, TargetKind, wait_until};

const PIE: TargetKind = TargetKind {
    pie: true,
    lib: false,
};

struct Fixture {
    build: Build,
    target: Running,
    live: PathBuf,
    unsafe_: PathBuf,
}

fn fixture() -> Fixture {
    let build = Build::new();
    let bin = build.target(PIE);
    let live = build.patch(
        "compute_v2.c",
        &support::Spec::new("v2", &bin, &["compute"]),
    );
    let unsafe_ = build.patch(
        "stuck_v2.c",
        &support::Spec::new("unstick", &bin, &["stuck"]),
    );
    let mut target = Running::start(&bin, &["--stuck"]);
    assert!(wait_until(5, || target.status("stuck_spins") > 0));
    assert_eq!(target.call(5), 11);
    Fixture {
        build,
        target,
        live,
        unsafe_,
    }
}

fn spec(patches: &[&Path], vms: &[&Path], pids: &[i32], peers: &[&Path]) -> Spec {
    Spec {
        patches: patches.iter().map(|p| p.to_path_buf()).collect(),
        vms: vms.iter().map(|p| p.to_path_buf()).collect(),
        pids: pids.to_vec(),
        peers: peers.iter().map(|p| p.to_path_buf()).collect(),
        update: None,
        back: Vec::new(),
        live_timeout: Duration::from_secs(1),
        drain: Options::default(),
    }
}

/// Replaces what changes from run to run (paths, pids, hashes, host name).
fn redact(text: &str, dirs: &[(&Path, &str)], pids: &[(i32, &str)], hashes: &[&str]) -> String {
    let mut t = text.to_string();
    for (d, name) in dirs {
        t = t.replace(&d.display().to_string(), name);
    }
    for (p, name) in pids {
        t = t.replace(&format!("pid {p} "), &format!("pid {name} "));
        t = t.replace(&format!("pid {p})"), &format!("pid {name})"));
    }
    for h in hashes {
        t = t.replace(h, "[SHA256]");
    }
    if let Ok(h) = nix::unistd::gethostname() {
        t = t.replace(&*h.to_string_lossy(), "[HOST]");
    }
    t
}

#[test]
fn plan_lists_live_and_fallback_steps_and_changes_nothing() {
    let Some(lab) = Lab::new() else { return };
    let mut f = fixture();
    let src = lab.vm("src", false, "");
    let dst = lab.vm("dst", true, "");
    let mut s = spec(
        &[&f.live, &f.unsafe_],
        &[&src.qmp],
        &[f.target.pid],
        &[&dst.qmp],
    );
    s.update = Some("apt-get install -y qemu-system-x86".into());
    let plan = host::plan(&s).unwrap();
    let qemu_pid = src.child.id() as i32;
    let hashes: Vec<&str> = plan.patches.iter().map(|p| p.hash.as_str()).collect();
    let text = redact(
        &plan.to_string(),
        &[(f.build.dir.path(), "[BUILD]"), (lab.dir.path(), "[LAB]")],
        &[(f.target.pid, "[TARGET]"), (qemu_pid, "[QEMU]")],
        &hashes,
    );
    insta::assert_snapshot!("host_plan", text);
    // Nothing was done: the target still runs the old code, the VM is here.
    assert_eq!(f.target.call(5), 11);
    let mut q = hvpatch::qmp::Qmp::connect(&src.qmp).unwrap();
    assert_eq!(q.query_migrate().unwrap().state(), "none");
    assert_eq!(
        plan.live.len(),
        2,
        "two patches for the target, none for QEMU"
    );
}

#[test]
fn live_patch_then_unsafe_patch_drains_the_vm_and_updates_the_host() {
    let Some(lab) = Lab::new() else { return };
    let mut f = fixture();
    let src = lab.vm("src", false, "");
    let dst = lab.vm("dst", true, "");
    // The updated host's fresh VMM, waiting for the VM to come back.
    let back = lab.vm("back", true, "");
    src.wait_settled();
    let marker = lab.dir.path().join("updated");
    let mut s = spec(
        &[&f.live, &f.unsafe_],
        &[&src.qmp],
        &[f.target.pid],
        &[&dst.qmp],
    );
    s.update = Some(format!("echo updated > {}", marker.display()));
    s.back = vec![back.qmp.clone()];
    let logp = lab.dir.path().join("audit/audit.jsonl");
    let plan = host::plan(&s).unwrap();
    let mut log = audit::Log::open(&logp).unwrap();
    let out = host::run(&plan, &s, &mut log, &Quiet).unwrap();
    assert_eq!(out.mode, "drained");
    let results: Vec<(&str, &str)> = out
        .steps
        .iter()
        .map(|s| (s.step.kind(), s.result.as_str()))
        .collect();
    assert_eq!(
        results,
        [
            ("apply-live", "ok"),
            ("apply-live", "unsafe"),
            ("drain", "ok"),
            ("update", "ok"),
            ("bring-back", "ok")
        ]
    );
    assert_eq!(out.migrations.len(), 2);
    // The live patch is in; the unsafe one changed nothing.
    assert_eq!(f.target.call(5), 22);
    let s0 = f.target.status("stuck_spins");
    assert!(wait_until(5, || f.target.status("stuck_spins") > s0));
    // The VM moved with its counter intact; the host was updated.
    assert_eq!(std::fs::read_to_string(&marker).unwrap().trim(), "updated");
    // The VM went to the peer and came back, its counter intact throughout.
    let on_src = std::fs::read(&src.console).unwrap();
    let on_peer = std::fs::read(&dst.console).unwrap();
    assert!(!counters(&on_peer).is_empty(), "the guest ran on the peer");
    let last = *counters(&[on_src.as_slice(), &on_peer].concat())
        .last()
        .unwrap();
    back.wait_counter(last + 20, common::AFTER);
    let joined = [on_src, on_peer, std::fs::read(&back.console).unwrap()].concat();
    assert_consecutive(&counters(&joined), "source + peer + back consoles");
    let mut q = hvpatch::qmp::Qmp::connect(&back.qmp).unwrap();
    assert_eq!(q.query_status().unwrap().status, "running");
    // Every step is in the audit log, with who, when, patch hash and result.
    let recs = audit::read(&logp).unwrap();
    let steps: Vec<(&str, &str)> = recs
        .iter()
        .map(|r| (r.step.as_str(), r.result.as_str()))
        .collect();
    assert_eq!(
        steps,
        [
            ("plan", "started"),
            ("apply-live", "ok"),
            ("apply-live", "unsafe"),
            ("drain", "ok"),
            ("update", "ok"),
            ("bring-back", "ok"),
            ("done", "ok")
        ]
    );
    let who = audit::Who::current();
    for r in &recs {
        assert_eq!((r.uid, r.pid, &r.host), (who.uid, who.pid, &who.host));
        assert!(r.time.ends_with('Z') && r.time.len() >= 20, "{}", r.time);
    }
    assert_eq!(recs[1].patch.as_deref(), Some(f.live.as_path()));
    assert_eq!(
        recs[1].patch_hash.as_deref(),
        Some(plan.patches[0].hash.as_str())
    );
    assert!(recs[2].detail.contains("stuck"), "{}", recs[2].detail);
    // Append-only: a second run appends after the first.
    let mut log = audit::Log::open(&logp).unwrap();
    log.record("plan", "second run", None, "started", "")
        .unwrap();
    assert_eq!(audit::read(&logp).unwrap().len(), recs.len() + 1);
}

#[test]
fn unsafe_patch_without_peer_stops_with_status_3_and_keeps_the_vm() {
    let Some(lab) = Lab::new() else { return };
    let mut f = fixture();
    let src = lab.vm("src", false, "");
    let s = spec(&[&f.unsafe_], &[&src.qmp], &[f.target.pid], &[]);
    let plan = host::plan(&s).unwrap();
    assert!(plan.fallback.is_empty());
    let logp = lab.dir.path().join("audit.jsonl");
    let mut log = audit::Log::open(&logp).unwrap();
    let err = host::run(&plan, &s, &mut log, &Quiet).unwrap_err();
    assert_eq!(err.status(), Status::Unsafe, "{err}");
    assert!(
        err.to_string().contains(&format!("pid {}", f.target.pid)),
        "{err}"
    );
    let mut q = hvpatch::qmp::Qmp::connect(&src.qmp).unwrap();
    assert_eq!(q.query_status().unwrap().status, "running");
    assert_eq!(q.query_migrate().unwrap().state(), "none");
    assert_eq!(f.target.call(5), 11);
    let recs = audit::read(&logp).unwrap();
    assert_eq!(recs.last().unwrap().result, "failed");
}

#[test]
fn every_patch_live_means_no_drain() {
    let Some(lab) = Lab::new() else { return };
    let mut f = fixture();
    let src = lab.vm("src", false, "");
    let dst = lab.vm("dst", true, "");
    let s = spec(&[&f.live], &[&src.qmp], &[f.target.pid], &[&dst.qmp]);
    let plan = host::plan(&s).unwrap();
    let mut log = audit::Log::open(&lab.dir.path().join("audit.jsonl")).unwrap();
    let out = host::run(&plan, &s, &mut log, &Quiet).unwrap();
    assert_eq!(out.mode, "live");
    assert!(out.migrations.is_empty());
    assert_eq!(f.target.call(5), 22);
    let mut q = hvpatch::qmp::Qmp::connect(&src.qmp).unwrap();
    assert_eq!(q.query_migrate().unwrap().state(), "none");
}

#[test]
fn patch_matching_no_process_is_a_mismatch_and_garbage_is_named() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.hfx");
    std::fs::write(&junk, b"not a patch").unwrap();
    let err = host::plan(&spec(&[&junk], &[], &[f.target.pid], &[])).unwrap_err();
    assert!(err.to_string().contains("junk.hfx"), "{err}");
    assert_eq!(err.status(), Status::Error);
    let me = std::process::id() as i32;
    let err = host::plan(&spec(&[&f.live], &[], &[me], &[])).unwrap_err();
    assert_eq!(err.status(), Status::Mismatch, "{err}");
    assert!(err.to_string().contains("v2.hfx"), "{err}");
}
