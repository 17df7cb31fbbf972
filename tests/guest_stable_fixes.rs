//! Guest tier: real upstream stable fixes (Debian 6.1.177..6.1.192) live on
//! the pinned 6.1.170 kernel. Each fix in `testkernels/kmod/fixes/stable/`
//! was taken from a later `linux-source-6.1` by file and function
//! (`scripts/kernel-src --fix`; its header records the Debian version, the
//! changelog line and the CVE) and is built unedited with
//! `hotfix build --kernel --kernel-src` against the pinned kernel's source.
//! In one boot of the QEMU test host each is applied and reverted with
//! `--method klp` and with `--method jump`, with the code path it fixes
//! exercised while applied where busybox can reach it (see `FIXES`).
//! Together they carry a `BUG_ON` (`__bug_table`: clear_inode), a static
//! key (`__jump_table`: do_tcp_getsockopt), a pr_debug site
//! (fib_table_insert) and an inlined static helper (do_con_trol and
//! con_should_update, patched through their caller do_con_write).

#![allow(
    clippy::panic,
    reason = "a failed check is a panic naming what the guest printed"
)]

#[path = "support/testhost.rs"]
mod testhost;

#[path = "support/kernel_src.rs"]
mod kernel_src;

use testhost::Guest;

/// One fix: livepatch name, fix file, the function it replaces, and a
/// guest command exercising that function (or `true` when busybox cannot
/// reach it; the jump method's expected-bytes check and the listing are
/// then what is checked).
struct Fix {
    name: &'static str,
    file: &'static str,
    func: &'static str,
    exercise: &'static str,
}

const FIXES: &[Fix] = &[
    // SIOCATMARK needs an ioctl on an AF_UNIX datagram socket: no busybox
    // applet issues one.
    Fix {
        name: "lp_cve_2026_52928",
        file: "unix-ioctl-CVE-2026-52928.patch",
        func: "unix_ioctl",
        exercise: "true",
    },
    // Every inode eviction runs clear_inode (with its BUG_ONs): files
    // created and removed on tmpfs, then the dentry/inode caches dropped.
    Fix {
        name: "lp_cve_2026_99080",
        file: "clear-inode-CVE-2026-99080.patch",
        func: "clear_inode",
        exercise: "mkdir -p /tmp/ci && i=0; while [ $i -lt 100 ]; do : > /tmp/ci/f$i; rm /tmp/ci/f$i; i=$((i+1)); done; sync; echo 2 > /proc/sys/vm/drop_caches",
    },
    // The DEC screen-alignment test (ESC # 8) on a background console.
    Fix {
        name: "lp_cve_2026_98838",
        file: "vt-dec-align-CVE-2026-98838.patch",
        func: "do_con_write", // do_con_trol and con_should_update are inlined into it
        exercise: "if [ -e /dev/tty2 ]; then printf '\\033#8' > /dev/tty2; fi",
    },
    // getsockopt(TCP_CONGESTION) needs a program; busybox has none that
    // asks for it. The function carries a static-key site (__jump_table).
    Fix {
        name: "lp_cve_2026_99139",
        file: "tcp-getsockopt-CVE-2026-99139.patch",
        func: "do_tcp_getsockopt",
        exercise: "true",
    },
    // fib_table_insert (with its pr_debug site) runs for every IPv4 route
    // added: one added, seen and removed while the patch is applied.
    Fix {
        name: "lp_cve_2026_64572",
        file: "fib-table-insert-CVE-2026-64572.patch",
        func: "fib_table_insert",
        exercise: "ip link set lo up && ip route add 10.77.0.0/16 dev lo && ip route show | grep -q '^10.77.0.0/16 dev lo' && ip route del 10.77.0.0/16 dev lo",
    },
];

fn no_kernel_complaint(g: &mut Guest) {
    let dmesg = g.ok("dmesg");
    assert!(
        !dmesg.contains("Oops") && !dmesg.contains("WARNING:") && !dmesg.contains("BUG:"),
        "{dmesg}"
    );
}

#[test]
fn stable_fixes_apply_and_revert_with_klp_and_jump() {
    if !testhost::available() {
        return;
    }
    let Some(ksrc) = kernel_src::dir() else {
        return;
    };
    let out = testhost::root().join("target/testhost/stable");
    std::fs::create_dir_all(&out).unwrap_or_else(|e| panic!("{}: {e}", out.display()));
    let mut files = Vec::new();
    for f in FIXES {
        let ko = out.join(format!("{}.ko", f.name));
        testhost::build_patch(
            "--kernel-src",
            &ksrc,
            &testhost::root()
                .join("testkernels/kmod/fixes/stable")
                .join(f.file),
            &[],
            &ko,
        );
        files.push((ko, format!("/root/{}.ko", f.name)));
    }
    let extra: Vec<(std::path::PathBuf, &str)> =
        files.iter().map(|(k, p)| (k.clone(), p.as_str())).collect();
    let img = testhost::image_with("guest-stable", &extra);
    let mut g = Guest::boot_image(&img);
    for f in FIXES {
        for method in ["klp", "jump"] {
            let o = g.ok(&format!(
                "hotfix apply /root/{}.ko --kernel --method {method}",
                f.name
            ));
            assert!(o.contains(f.name) && o.contains(f.func), "{method}: {o}");
            if method == "jump" {
                assert!(o.contains("expected bytes of the build verified"), "{o}");
            }
            // Transition time (klp) and stop window (jump), for
            // docs/benchmarks.md.
            eprintln!("{}", o.lines().next().unwrap_or_default());
            let list = g.ok("hotfix list --kernel");
            assert!(
                list.contains(f.name) && list.contains(f.func),
                "{method}: {list}"
            );
            g.ok(f.exercise);
            g.ok(&format!("hotfix revert {} --kernel", f.name));
            g.ok(&format!("! grep -q '^{} ' /proc/modules", f.name));
        }
    }
    no_kernel_complaint(&mut g);
}
