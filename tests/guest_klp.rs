//! Guest tier: hand-written klp livepatch modules applied, listed and
//! reverted by the static `hotfix` inside a QEMU test host booting the pinned
//! Debian cloud kernel (`tests/support/testhost.rs`).
//!
//! One guest runs the whole sequence (boot ~4 s on an idle machine); each
//! step checks the observable bug through `/proc`, so a patch that does not
//! take effect, or a revert that does not undo it, fails here.

#![allow(
    clippy::panic,
    reason = "a failed check is a panic naming what the guest printed"
)]

#[path = "support/testhost.rs"]
mod testhost;

use std::time::Duration;
use testhost::Guest;

#[path = "support/x2apic.rs"]
mod x2apic;
use x2apic::{GP, LEAK, M, rdmsr};

/// A copy of `lp_x2apic.ko` whose vermagic names another kernel release.
fn mismatched_module() -> std::path::PathBuf {
    let src = testhost::kmod_dir().join("livepatch/lp_x2apic.ko");
    let mut bytes = std::fs::read(&src).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
    let from = b"vermagic=6.1.0-47-cloud-amd64";
    let to = b"vermagic=6.1.0-99-cloud-amd64";
    let pos = bytes
        .windows(from.len())
        .position(|w| w == from)
        .unwrap_or_else(|| panic!("no vermagic in {}", src.display()));
    bytes[pos..pos + to.len()].copy_from_slice(to);
    let out = testhost::root().join("target/testhost/lp_x2apic_other_kernel.ko");
    std::fs::write(&out, bytes).unwrap_or_else(|e| panic!("{}: {e}", out.display()));
    out
}

#[test]
fn klp_modules_apply_list_revert_in_guest() {
    if !testhost::available() {
        return;
    }
    // Build the standard image first: it builds the modules the mismatched
    // copy is made from.
    testhost::image();
    let other = mismatched_module();
    let img = testhost::image_with("guest-klp", &[(other, "/root/lp_other_kernel.ko")]);
    let mut g = Guest::boot_image(&img);
    eprintln!("guest booted in {:?}", g.boot_time);

    // The bug is visible before.
    g.ok(&format!("insmod {M}/hfx_x2apic.ko"));
    assert_eq!(rdmsr(&mut g, "0x810"), "msr 0x810 = 0x1010");
    assert_eq!(rdmsr(&mut g, "0x900"), LEAK);
    assert_eq!(
        g.ok("hotfix list --kernel").trim(),
        "no livepatches applied"
    );

    // Fixed after apply; list shows it; a register inside the page still reads.
    let out = g.ok(&format!("hotfix apply {M}/lp_x2apic.ko --kernel"));
    assert!(out.contains("applied livepatch lp_x2apic"), "{out}");
    assert!(out.contains("hfx_x2apic: x2apic_msr_read,1"), "{out}");
    assert_eq!(rdmsr(&mut g, "0x900"), GP);
    assert_eq!(rdmsr(&mut g, "0x8ff"), "msr 0x8ff = 0x10ff");
    let list = g.ok("hotfix list --kernel");
    assert!(list.contains("lp_x2apic enabled (applied at"), "{list}");
    let json = g.json("hotfix list --kernel --json");
    assert_eq!(json[0]["state"]["name"], "lp_x2apic");
    assert_eq!(json[0]["state"]["enabled"], true);
    assert_eq!(json[0]["state"]["objects"][0]["name"], "hfx_x2apic");

    // Refusals: applied twice; not a livepatch; another kernel (status 4);
    // unknown name on revert.
    let o = g.run(&format!("hotfix apply {M}/lp_x2apic.ko --kernel"));
    assert!(o.rc == 1 && o.out.contains("applied already"), "{o:?}");
    let o = g.run(&format!("hotfix apply {M}/hfx_kthread.ko --kernel"));
    assert!(
        o.rc == 1 && o.out.contains("not a livepatch module"),
        "{o:?}"
    );
    let o = g.run("hotfix apply /root/lp_other_kernel.ko --kernel");
    assert!(
        o.rc == 4 && o.out.contains("6.1.0-99-cloud-amd64") && o.out.contains("running kernel"),
        "{o:?}"
    );
    let o = g.run("hotfix revert lp_nothing --kernel");
    assert!(
        o.rc == 1 && o.out.contains("no such livepatch (applied: lp_x2apic)"),
        "{o:?}"
    );

    // Stacking: a second patch (vmlinux's /proc/cmdline) on top of the first.
    let cmdline = g.ok("cat /proc/cmdline");
    assert!(cmdline.contains("console=ttyS0"), "{cmdline}");
    g.ok(&format!("hotfix apply {M}/lp_cmdline.ko --kernel"));
    assert_eq!(
        g.ok("cat /proc/cmdline").trim(),
        "hotfix: this kernel is live patched"
    );
    assert_eq!(rdmsr(&mut g, "0x900"), GP);
    let list = g.ok("hotfix list --kernel");
    assert!(
        list.contains("lp_x2apic enabled") && list.contains("lp_cmdline enabled"),
        "{list}"
    );
    assert!(list.contains("vmlinux: cmdline_proc_show,1"), "{list}");
    // Revert the top one: only its effect goes.
    g.ok("hotfix revert lp_cmdline --kernel");
    assert_eq!(g.ok("cat /proc/cmdline"), cmdline);
    assert_eq!(rdmsr(&mut g, "0x900"), GP);
    assert!(!g.ok("lsmod").contains("lp_cmdline"));

    // Atomic replace: a cumulative patch replaces both stacked patches.
    g.ok(&format!("hotfix apply {M}/lp_cmdline.ko --kernel"));
    let out = g.ok(&format!("hotfix apply {M}/lp_cumulative.ko --kernel"));
    assert!(
        out.contains("replaced livepatch lp_cmdline")
            && out.contains("replaced livepatch lp_x2apic"),
        "{out}"
    );
    assert_eq!(g.ok("cat /proc/cmdline"), cmdline);
    assert_eq!(rdmsr(&mut g, "0x900"), GP);
    let list = g.ok("hotfix list --kernel");
    assert!(
        list.contains("lp_cumulative enabled")
            && !list.contains("lp_x2apic ")
            && !list.contains("lp_cmdline"),
        "{list}"
    );
    let lsmod = g.ok("lsmod");
    assert!(
        !lsmod.contains("lp_x2apic") && !lsmod.contains("lp_cmdline"),
        "{lsmod}"
    );

    // Revert (by .ko path): the bug is visible again.
    let out = g.ok(&format!("hotfix revert {M}/lp_cumulative.ko --kernel"));
    assert!(out.contains("reverted livepatch lp_cumulative"), "{out}");
    assert_eq!(rdmsr(&mut g, "0x900"), LEAK);
    assert_eq!(
        g.ok("hotfix list --kernel").trim(),
        "no livepatches applied"
    );

    // A module loaded after the patch is patched when it loads.
    g.ok("rmmod hfx_x2apic");
    let applied = g.json(&format!("hotfix apply {M}/lp_x2apic.ko --kernel --json"));
    eprintln!(
        "lp_x2apic: load {} us, transition {} us",
        applied["record"]["load_us"], applied["record"]["transition_us"]
    );
    g.ok(&format!("insmod {M}/hfx_x2apic.ko"));
    assert_eq!(rdmsr(&mut g, "0x900"), GP);
    g.ok("hotfix revert lp_x2apic --kernel");
    assert_eq!(rdmsr(&mut g, "0x900"), LEAK);

    // Nothing went wrong in the kernel: no oops, no WARN.
    let dmesg = g.ok("dmesg");
    assert!(
        !dmesg.contains("Oops") && !dmesg.contains("WARNING:") && !dmesg.contains("BUG:"),
        "{dmesg}"
    );
    let o = g.try_run("true", Duration::from_secs(30));
    assert!(o.is_ok_and(|o| o.rc == 0));
}
