//! Drain tier: real QEMU guests (TCG, 256 MB, the pinned Debian kernel)
//! migrated over loopback between two local "hosts"; the guest's console
//! counter must continue with no gap or reset across the switch.

#![allow(clippy::unwrap_used, clippy::panic, reason = "tests")]

mod common;

use common::{Lab, assert_consecutive, counters};
use hvpatch::Error;
use hvpatch::drain::{self, Options, Pair};
use hvpatch::qmp::Qmp;
use std::time::Duration;

#[test]
fn drained_guest_continues_its_counter_on_the_destination() {
    let Some(lab) = Lab::new() else { return };
    let mut src = lab.vm("src", false, "");
    let mut dst = lab.vm("dst", true, "");
    src.wait_settled();
    let pair = Pair {
        vm: src.qmp.clone(),
        dest: dst.qmp.clone(),
    };
    let samples = std::sync::Mutex::new(0usize);
    let report = drain::migrate(&pair, &Options::default(), &|_| {
        *samples.lock().unwrap() += 1
    })
    .unwrap();
    eprintln!("{report:#?}");
    assert!(*samples.lock().unwrap() >= 1);
    assert_eq!(report.dest_status, "running");
    assert_eq!(report.source, "quit");
    assert!(report.total_ms > 0 && report.transferred_bytes > 0);
    assert_eq!(report.ram_bytes / (1 << 20), 256, "256 MiB guest (+ ROMs)");
    // The source QEMU is gone; its console is final.
    let until = std::time::Instant::now() + Duration::from_secs(60);
    while src.alive() {
        assert!(
            std::time::Instant::now() < until,
            "source QEMU did not quit"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let before = std::fs::read(&src.console).unwrap();
    let last_src = *counters(&before).last().unwrap();
    // The guest goes on counting on the destination.
    dst.wait_counter(last_src + 20, common::AFTER);
    assert!(dst.alive());
    let after = std::fs::read(&dst.console).unwrap();
    let first_dst = counters(&after).first().copied();
    // A line may be cut by the switch: join the raw bytes, then check.
    let joined = [before.as_slice(), after.as_slice()].concat();
    assert_consecutive(&counters(&joined), "source console + destination console");
    eprintln!(
        "source printed up to CTR {last_src}, destination from {first_dst:?}; downtime {} ms",
        report.downtime_ms
    );
    let mut q = Qmp::connect(&dst.qmp).unwrap();
    assert_eq!(q.query_status().unwrap().status, "running");
}

/// Kills the destination mid-transfer: the migration fails, hotfix cancels
/// it, and the VM keeps running on the source with its counter going on.
#[test]
fn destination_killed_mid_transfer_leaves_vm_running_on_source() {
    let Some(lab) = Lab::new() else { return };
    let src = lab.vm("src", false, "vmload=wss=96,rate=64");
    let mut dst = lab.vm("dst", true, "vmload=wss=96,rate=64");
    src.wait_counter(50, common::BOOT);
    let pair = Pair {
        vm: src.qmp.clone(),
        dest: dst.qmp.clone(),
    };
    // 4 MiB/s: the 256 MiB guest takes far longer than the kill below.
    let opts = Options {
        bandwidth_mib: 4,
        ..Options::default()
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let result = std::thread::scope(|s| {
        let h = s.spawn(|| {
            drain::migrate(&pair, &opts, &|info| {
                let sent = info.ram.as_ref().map_or(0, |r| r.transferred);
                if info.state() == "active" && sent > 2 << 20 {
                    let _ = tx.send(sent);
                }
            })
        });
        let sent = rx.recv_timeout(common::BOOT).unwrap();
        eprintln!("killing the destination after {sent} bytes");
        dst.child.kill().unwrap();
        h.join().unwrap()
    });
    let err = result.unwrap_err();
    eprintln!("{err}");
    match &err {
        Error::Migration {
            vm, source_status, ..
        } => {
            assert_eq!(vm, &src.qmp);
            assert_eq!(source_status, "running");
        }
        e => panic!("expected a migration error, got {e:?}"),
    }
    assert!(err.to_string().contains(&src.qmp.display().to_string()));
    let mut q = Qmp::connect(&src.qmp).unwrap();
    assert_eq!(q.query_status().unwrap().status, "running");
    let n = src.counters().len() as u64;
    src.wait_counter(n + 50, common::AFTER);
    assert_consecutive(&src.counters(), "source console");
}

/// A migration that cannot finish in time is cancelled; the VM stays.
#[test]
fn drain_timeout_cancels_and_keeps_vm_on_source() {
    let Some(lab) = Lab::new() else { return };
    let src = lab.vm("src", false, "");
    let _dst = lab.vm("dst", true, "");
    src.wait_counter(20, common::BOOT);
    let pair = Pair {
        vm: src.qmp.clone(),
        dest: _dst.qmp.clone(),
    };
    let opts = Options {
        bandwidth_mib: 1,
        timeout: Duration::from_secs(2),
        ..Options::default()
    };
    let err = drain::migrate(&pair, &opts, &|_| {}).unwrap_err();
    let msg = err.to_string();
    eprintln!("{msg}");
    assert!(
        msg.contains("timeout") && msg.contains("VM is running on the source"),
        "{msg}"
    );
    let mut q = Qmp::connect(&src.qmp).unwrap();
    assert_eq!(q.query_status().unwrap().status, "running");
    let n = src.counters().len() as u64;
    src.wait_counter(n + 20, common::AFTER);
    assert_consecutive(&src.counters(), "source console");
}

/// Checks happen before anything changes: a destination that is not waiting
/// for a migration is refused, naming its socket, and the source is untouched.
#[test]
fn destination_not_incoming_is_refused_before_anything_changes() {
    let Some(lab) = Lab::new() else { return };
    let src = lab.vm("src", false, "");
    let other = lab.vm("other", false, "");
    let pair = Pair {
        vm: src.qmp.clone(),
        dest: other.qmp.clone(),
    };
    let err = drain::migrate(&pair, &Options::default(), &|_| {}).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(&other.qmp.display().to_string()) && msg.contains("inmigrate"),
        "{msg}"
    );
    let mut q = Qmp::connect(&src.qmp).unwrap();
    assert_eq!(q.query_status().unwrap().status, "running");
    assert_eq!(q.query_migrate().unwrap().state(), "none");
}

/// The destination dies at the very end (it lacks a device of the source, so
/// loading the device state fails after the source has sent everything and
/// reports `completed`): the source still holds the VM, paused; hotfix sees
/// the destination process is gone and resumes the VM on the source.
#[test]
fn destination_dying_after_source_completed_resumes_the_vm_on_source() {
    let Some(lab) = Lab::new() else { return };
    let src = lab.vm_with("src", false, "", &["-device", "virtio-rng-pci"]);
    let mut dst = lab.vm("dst", true, "");
    src.wait_counter(50, common::BOOT);
    let pair = Pair {
        vm: src.qmp.clone(),
        dest: dst.qmp.clone(),
    };
    let err = drain::migrate(&pair, &Options::default(), &|_| {}).unwrap_err();
    let msg = err.to_string();
    eprintln!("{msg}");
    match &err {
        Error::Migration { source_status, .. } => assert_eq!(source_status, "running", "{msg}"),
        e => panic!("expected a migration error, got {e:?}"),
    }
    let _ = dst.child.wait();
    let mut q = Qmp::connect(&src.qmp).unwrap();
    assert_eq!(q.query_status().unwrap().status, "running");
    let n = *src.counters().last().unwrap();
    src.wait_counter(n + 50, common::AFTER);
    assert_consecutive(&src.counters(), "source console");
}
