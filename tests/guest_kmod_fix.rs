//! Guest tier: a real upstream stable fix to a loadable in-tree module,
//! applied with livepatch *before* the module is loaded and taking effect
//! when it loads.
//!
//! The fix (`testkernels/kmod/fixes/stable/zram-read-block-state-CVE-2026-89719.patch`,
//! taken from Debian 6.1.192-3's `linux-source-6.1` with
//! `scripts/kernel-src --fix`) replaces `read_block_state` of `zram`, which
//! the cloud flavour builds as a module (`CONFIG_ZRAM=m`, with
//! `CONFIG_ZRAM_MEMORY_TRACKING=y`: the function serves
//! `/sys/kernel/debug/zram/zram0/block_state`). `hotfix build --kernel
//! --kernel-src` compiles `drivers/block/zram/zram_drv.o` as kbuild does for
//! the module, checks the original function against the image's shipped
//! `zram.ko` and emits a livepatch whose object is `zram`.
//!
//! In one boot of the QEMU test host, with the image's own `zsmalloc.ko`
//! and `zram.ko` carried in the guest image:
//! - `--method jump` refuses the patch while `zram` is not loaded (exit 1,
//!   naming `zram`; nothing loaded);
//! - `--method klp` applies it while `zram` is not loaded: livepatch lists
//!   the object unpatched (`patched` 0) and the function has no ftrace
//!   handler; `insmod` of `zsmalloc` and `zram` then patches it (`patched`
//!   1, `read_block_state [zram]` now in `enabled_functions` with
//!   `klp_ftrace_handler`),
//!   and a zram device's `block_state`, read through the patched function,
//!   lists the pages written; revert removes the handler;
//! - with `zram` loaded, `--method jump` applies and reverts it (expected
//!   bytes verified against the loaded module), `block_state` still read;
//! - not upstream (`testkernels/kmod/fixes/zram-disksize-statics.patch`,
//!   our own change): `disksize_show` printing zram's statics `zram_major`
//!   and `num_devices` (`.klp.rela.zram.*`), applied with klp before zram
//!   loads; once zram loads, `/sys/block/zram0/disksize` shows zram's own
//!   major (as in `/proc/devices`) and `devices=0` (zram's init counts
//!   `num_devices=1` down to 0 as it adds the device); revert restores it;
//! - no Oops/WARNING/BUG in dmesg.
//!
//! The bug itself (a race of `block_state` against a device reset) is not
//! reproduced.

#![allow(
    clippy::panic,
    reason = "a failed check is a panic naming what the guest printed"
)]

#[path = "support/testhost.rs"]
mod testhost;

#[path = "support/kernel_src.rs"]
mod kernel_src;

use std::path::PathBuf;
use testhost::Guest;

const NAME: &str = "lp_cve_2026_89719";
const STATICS: &str = "lp_zram_statics";
const FIX: &str = "zram-read-block-state-CVE-2026-89719.patch";
const LP: &str = "/sys/kernel/livepatch/lp_cve_2026_89719";
const FTRACE: &str = "/sys/kernel/tracing/enabled_functions";

/// The image's shipped module `rel` (under `modules/kernel/`).
fn shipped(rel: &str) -> PathBuf {
    let ko = testhost::kernel()
        .parent()
        .map(|d| d.join("modules/kernel").join(rel))
        .unwrap_or_default();
    assert!(ko.is_file(), "{} missing (run scripts/setup)", ko.display());
    ko
}

/// A zram device with four pages written; prints its `block_state`
/// (one line per allocated page, read by `read_block_state`).
const ZRAM_USE: &str = "echo deflate > /sys/block/zram0/comp_algorithm && \
     echo 4M > /sys/block/zram0/disksize && \
     dd if=/dev/urandom of=/dev/zram0 bs=4096 count=4 2>/dev/null && sync && \
     cat /sys/kernel/debug/zram/zram0/block_state";

fn no_kernel_complaint(g: &mut Guest) {
    let dmesg = g.ok("dmesg");
    assert!(
        !dmesg.contains("Oops") && !dmesg.contains("WARNING:") && !dmesg.contains("BUG:"),
        "{dmesg}"
    );
}

/// `block_state` lists the four pages written (indices 0..3).
fn four_pages(out: &str) {
    let idx: Vec<&str> = out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(idx, ["0", "1", "2", "3"], "block_state: {out}");
}

#[test]
fn module_fix_applied_before_the_module_loads() {
    if !testhost::available() {
        return;
    }
    let Some(ksrc) = kernel_src::dir() else {
        return;
    };
    let out = testhost::root().join("target/testhost/stable");
    std::fs::create_dir_all(&out).unwrap_or_else(|e| panic!("{}: {e}", out.display()));
    let ko = out.join(format!("{NAME}.ko"));
    testhost::build_patch(
        "--kernel-src",
        &ksrc,
        &testhost::root()
            .join("testkernels/kmod/fixes/stable")
            .join(FIX),
        &[],
        &ko,
    );
    let statics = out.join(format!("{STATICS}.ko"));
    testhost::build_patch(
        "--kernel-src",
        &ksrc,
        &testhost::root().join("testkernels/kmod/fixes/zram-disksize-statics.patch"),
        &[],
        &statics,
    );
    let extra = [
        (ko, "/root/lp_cve_2026_89719.ko"),
        (statics, "/root/lp_zram_statics.ko"),
        (shipped("mm/zsmalloc.ko"), "/root/zsmalloc.ko"),
        (shipped("drivers/block/zram/zram.ko"), "/root/zram.ko"),
    ];
    let img = testhost::image_with("guest-kmod-fix", &extra);
    let mut g = Guest::boot_image(&img);
    g.ok("! grep -q '^zram ' /proc/modules");

    // jump: refused while zram is not loaded, naming it; nothing loaded.
    let o = g.run(&format!(
        "hotfix apply /root/{NAME}.ko --kernel --method jump"
    ));
    assert!(
        o.rc == 1 && o.out.contains("module zram, which is not loaded"),
        "{o:?}"
    );
    g.ok(&format!("! grep -q '^{NAME} ' /proc/modules"));

    // klp, before zram is loaded: the object waits, unpatched.
    let o = g.ok(&format!(
        "hotfix apply /root/{NAME}.ko --kernel --method klp"
    ));
    assert!(o.contains(NAME) && o.contains("read_block_state"), "{o}");
    // Load and transition time, for docs/kernel-stable.md.
    eprintln!("klp: {}", o.lines().next().unwrap_or_default());
    let list = g.ok("hotfix list --kernel");
    assert!(
        list.contains(NAME) && list.contains("read_block_state"),
        "{list}"
    );
    assert_eq!(g.ok(&format!("cat {LP}/zram/patched")).trim(), "0");
    // livepatch names the function directory with sympos 0 shown as 1.
    g.ok(&format!("test -d '{LP}/zram/read_block_state,1'"));
    g.ok(&format!("! grep -q '^read_block_state ' {FTRACE}"));

    // The module loads: livepatch patches it at once.
    g.ok("insmod /root/zsmalloc.ko && insmod /root/zram.ko num_devices=1");
    assert_eq!(g.ok(&format!("cat {LP}/zram/patched")).trim(), "1");
    let ft = g.ok(&format!("grep '^read_block_state ' {FTRACE}"));
    // livepatch's handler is now the function's ftrace user (none before).
    assert!(
        ft.contains("[zram]") && ft.contains("klp_ftrace_handler"),
        "read_block_state not redirected by livepatch: {ft}"
    );
    eprintln!("enabled_functions: {}", ft.trim());
    four_pages(&g.ok(ZRAM_USE));
    g.ok(&format!("hotfix revert {NAME} --kernel"));
    g.ok(&format!("! grep -q '^{NAME} ' /proc/modules"));
    g.ok(&format!("! grep -q '^read_block_state ' {FTRACE}"));
    four_pages(&g.ok("cat /sys/kernel/debug/zram/zram0/block_state"));

    // jump, with zram loaded: applied and reverted.
    let o = g.ok(&format!(
        "hotfix apply /root/{NAME}.ko --kernel --method jump"
    ));
    assert!(o.contains("expected bytes of the build verified"), "{o}");
    eprintln!("jump: {}", o.lines().next().unwrap_or_default());
    four_pages(&g.ok("cat /sys/kernel/debug/zram/zram0/block_state"));
    g.ok(&format!("hotfix revert {NAME} --kernel"));
    g.ok(&format!("! grep -q '^{NAME} ' /proc/modules"));

    g.ok("echo 1 > /sys/block/zram0/reset && rmmod zram");

    // Not upstream: a change reading zram's statics (`.klp.rela.zram`),
    // applied before zram loads; the values livepatch resolved when zram
    // loaded are zram's own (its major from /proc/devices).
    g.ok(&format!(
        "hotfix apply /root/{STATICS}.ko --kernel --method klp"
    ));
    g.ok("insmod /root/zram.ko num_devices=1");
    let o =
        g.ok("cat /sys/block/zram0/disksize; sed -n 's/^ *\\([0-9]*\\) zram$/\\1/p' /proc/devices");
    let mut lines = o.lines();
    let (shown, major) = (lines.next().unwrap_or(""), lines.next().unwrap_or("?"));
    assert_eq!(
        shown,
        // zram_init counts num_devices (1) down to 0 as it adds zram0.
        format!("0 hotfix-zram major={major} devices=0"),
        "{o}"
    );
    g.ok(&format!("hotfix revert {STATICS} --kernel"));
    assert_eq!(g.ok("cat /sys/block/zram0/disksize").trim(), "0");
    g.ok("rmmod zram && rmmod zsmalloc");
    no_kernel_complaint(&mut g);
}
