//! Guest tier: a kernel thread sleeping inside the function a livepatch
//! replaces. `hotfix apply --kernel` must not hang: after `--timeout` it
//! reverses the transition, names the stalled task and its stack, and exits
//! 3 with nothing changed. Once the thread leaves the function the same
//! apply completes; revert stalls the same way while the thread sleeps in
//! the new code.

#![allow(
    clippy::panic,
    reason = "a failed check is a panic naming what the guest printed"
)]

#[path = "support/testhost.rs"]
mod testhost;

use testhost::Guest;

const M: &str = "/lib/modules/hotfix";

fn version(g: &mut Guest) -> String {
    g.ok("cat /proc/hfx_kthread").trim().to_string()
}

/// Waits until the worker reports version `v` (it leaves the wait function
/// only when released, then sleeps 3 s before waiting again).
fn wait_version(g: &mut Guest, v: u32) {
    let o = g.run(&format!(
        "for i in $(seq 100); do grep -q 'version {v}$' /proc/hfx_kthread && exit 0; sleep 0.1; done; exit 1"
    ));
    assert_eq!(o.rc, 0, "worker never reported version {v}: {}", version(g));
}

/// Waits until the worker sleeps inside (old or new) hfx_worker_wait.
fn wait_inside(g: &mut Guest) {
    g.ok(
        "w=$(grep -l '^hfx_worker$' /proc/[0-9]*/comm | head -n 1); w=${w%/comm}\n\
          for i in $(seq 100); do grep -q hfx_worker_wait $w/stack && exit 0; sleep 0.1; done\n\
          cat $w/stack; exit 1",
    );
}

/// Runs `hotfix ARGS` in the background, releases the worker, and returns
/// the command's status and output.
fn with_release(g: &mut Guest, args: &str) -> (i32, String) {
    let out = g.ok(&format!(
        "(hotfix {args} > /tmp/bg.out 2>&1; echo $? > /tmp/bg.rc) &\n\
         sleep 2; echo release > /proc/hfx_kthread; wait; cat /tmp/bg.rc; cat /tmp/bg.out"
    ));
    let (rc, rest) = out.split_once('\n').unwrap_or((out.as_str(), ""));
    (rc.trim().parse().unwrap_or(-1), rest.to_string())
}

#[test]
fn kthread_in_patched_function_stalls_then_completes() {
    if !testhost::available() {
        return;
    }
    let mut g = Guest::boot();
    g.ok(&format!("insmod {M}/hfx_kthread.ko"));
    assert_eq!(version(&mut g), "worker version 0");
    wait_inside(&mut g);

    // The worker sleeps in hfx_worker_wait: the transition cannot finish.
    let o = g.run(&format!(
        "hotfix apply {M}/lp_kthread.ko --kernel --timeout 3s"
    ));
    assert_eq!(o.rc, 3, "{o:?}");
    assert!(
        o.out
            .contains("livepatch lp_kthread: enable transition still pending"),
        "{o:?}"
    );
    assert!(
        o.out.contains("(hfx_worker)"),
        "stalled task not named: {o:?}"
    );
    assert!(o.out.contains("hfx_worker_wait"), "stack not shown: {o:?}");
    // Nothing changed: no patch, no module; the old code still runs.
    assert_eq!(
        g.ok("hotfix list --kernel").trim(),
        "no livepatches applied"
    );
    assert!(!g.ok("lsmod").contains("lp_kthread"));
    g.ok("echo release > /proc/hfx_kthread");
    wait_version(&mut g, 1);
    wait_inside(&mut g);

    // Released while the apply waits: the transition completes.
    let (rc, out) = with_release(
        &mut g,
        &format!("apply {M}/lp_kthread.ko --kernel --timeout 60s"),
    );
    assert_eq!(rc, 0, "{out}");
    assert!(out.contains("applied livepatch lp_kthread"), "{out}");
    // The worker re-enters the (now new) function; release it once more.
    g.ok("echo release > /proc/hfx_kthread");
    wait_version(&mut g, 2);
    wait_inside(&mut g);

    // Revert stalls while the worker sleeps in the new code: exit 3, the
    // patch stays enabled.
    let o = g.run("hotfix revert lp_kthread --kernel --timeout 3s");
    assert_eq!(o.rc, 3, "{o:?}");
    assert!(o.out.contains("disable transition still pending"), "{o:?}");
    assert!(o.out.contains("(hfx_worker)"), "{o:?}");
    assert!(g.ok("hotfix list --kernel").contains("lp_kthread enabled"));

    let (rc, out) = with_release(&mut g, "revert lp_kthread --kernel --timeout 60s");
    assert_eq!(rc, 0, "{out}");
    g.ok("echo release > /proc/hfx_kthread");
    wait_version(&mut g, 1);
    assert!(!g.ok("lsmod").contains("lp_kthread"));
}
