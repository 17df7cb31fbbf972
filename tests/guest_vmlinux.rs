//! Guest tier: a vmlinux function patched from the running kernel's own
//! source. `hotfix build --kernel --kernel-src` compiles `fs/proc/cmdline.o`
//! from Debian's source package of the pinned image (`scripts/kernel-src`),
//! checks the original `cmdline_proc_show` against the image's vmlinux, and
//! generates the livepatch; in the QEMU test host (whose running kernel has
//! the build-id of the vmlinux checked against) `/proc/cmdline` shows the
//! fix's marker once applied and loses it after revert.

#![allow(
    clippy::panic,
    reason = "a failed check is a panic naming what the guest printed"
)]

#[path = "support/testhost.rs"]
mod testhost;

#[path = "support/kernel_src.rs"]
mod kernel_src;

use std::process::Command;
use testhost::Guest;

const MARK: &str = "hotfix=vmlinux-cmdline";

#[test]
fn vmlinux_function_patched_from_debian_source_in_guest() {
    if !testhost::available() {
        return;
    }
    let Some(ksrc) = kernel_src::dir() else {
        return;
    };
    let out = testhost::root().join("target/testhost/vmlinux");
    std::fs::create_dir_all(&out).unwrap_or_else(|e| panic!("{}: {e}", out.display()));
    let ko = out.join("lp_vcmdline.ko");
    testhost::build_patch(
        "--kernel-src",
        &ksrc,
        &testhost::root().join("testkernels/kmod/fixes/vmlinux-cmdline.patch"),
        &[],
        &ko,
    );
    let img = testhost::image_with("guest-vmlinux", &[(ko, "/root/lp_vcmdline.ko")]);
    let mut g = Guest::boot_image(&img);

    // The image the module was checked against is the running kernel: its
    // GNU build-id is in the guest's /sys/kernel/notes.
    let notes = Command::new("readelf")
        .arg("-n")
        .arg(ksrc.join("vmlinux"))
        .output()
        .unwrap_or_else(|e| panic!("readelf: {e}"));
    let notes = String::from_utf8_lossy(&notes.stdout).into_owned();
    let build_id = notes
        .lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: "))
        .unwrap_or_else(|| panic!("no build-id in {}: {notes}", ksrc.display()))
        .to_owned();
    let running = g.ok("od -An -tx1 -v /sys/kernel/notes | tr -d ' \\n'");
    assert!(
        running.contains(&build_id),
        "running kernel notes {running} lack build-id {build_id}"
    );
    let before = g.ok("cat /proc/cmdline");
    assert!(
        before.contains("console=ttyS0") && !before.contains(MARK),
        "{before}"
    );
    // The module was built for this kernel (apply checks vermagic against
    // uname -r and exits 4 otherwise).
    let o = g.ok("hotfix apply /root/lp_vcmdline.ko --kernel");
    assert!(o.contains("applied livepatch lp_vcmdline"), "{o}");
    assert!(o.contains("vmlinux: cmdline_proc_show"), "{o}");
    let during = g.ok("cat /proc/cmdline");
    assert_eq!(during.trim(), format!("{} {MARK}", before.trim()));
    g.ok("hotfix revert lp_vcmdline --kernel");
    assert_eq!(g.ok("cat /proc/cmdline"), before);
    let dmesg = g.ok("dmesg");
    assert!(
        !dmesg.contains("Oops") && !dmesg.contains("WARNING:") && !dmesg.contains("BUG:"),
        "{dmesg}"
    );
}
