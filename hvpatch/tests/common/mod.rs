//! Test lab for drain tests: local "hosts" are QEMU processes (TCG) started
//! by `scripts/vm` from a guest image built at test time from
//! `testkernels/vm` (vmload.c compiled with gcc, busybox initramfs).
//! Every QEMU is killed by a Drop guard; each lab lives in its own tempdir.
//!
//! Capabilities (QEMU, the pinned kernel, gcc, busybox) are installed by
//! `scripts/setup`. When one is missing, a test skips with a plain message,
//! except under `CI=true`, where it fails.

#![allow(dead_code, reason = "each test binary uses a part of the lab")]
#![allow(clippy::unwrap_used, clippy::panic, reason = "test harness")]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Deadline of a guest's boot up to its first counters: generous, because
/// TCG guests on a loaded 2-core machine (CI runs tests in parallel) boot
/// many times slower than the ~4 s they take on an idle one.
pub const BOOT: Duration = Duration::from_secs(240);
/// Deadline of further counters after a migration or a failure.
pub const AFTER: Duration = Duration::from_secs(120);
/// Counter value (one per 10 ms of guest time) after which the guest has
/// finished booting: its kernel switched to the refined TSC clocksource at
/// ~2.6 s of uptime and ran the clocksource watchdog a few times. Tests
/// that complete a migration start it only then: a guest migrated while
/// the kernel still changes clocksources once crashed on the destination
/// under TCG (a NULL hrtimer callback in the guest kernel, CI run of
/// 2026-11-21), which is not what these tests are about.
pub const SETTLED: u64 = 300;

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|p| p.join("scripts/vm").exists())
        .unwrap()
        .to_path_buf()
}

fn kernel() -> PathBuf {
    let cache = std::env::var_os("HOTFIX_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/hotfix"));
    cache.join("kernel/6.1.0-47/vmlinuz")
}

/// A directory with a guest image, where VMs are started.
pub struct Lab {
    pub dir: tempfile::TempDir,
    pub image: PathBuf,
}

/// One QEMU process; killed on drop.
pub struct Vm {
    pub child: Child,
    pub qmp: PathBuf,
    pub console: PathBuf,
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Vm {
    /// Whether the QEMU process still runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Counter values printed on this VM's console so far.
    pub fn counters(&self) -> Vec<u64> {
        counters(&std::fs::read(&self.console).unwrap_or_default())
    }

    /// Waits until the guest has finished booting (see [`SETTLED`]).
    pub fn wait_settled(&self) -> u64 {
        self.wait_counter(SETTLED, BOOT)
    }

    /// Waits until the guest printed counter `min` (boot takes ~4 s).
    pub fn wait_counter(&self, min: u64, within: Duration) -> u64 {
        let until = Instant::now() + within;
        loop {
            let last = self.counters().last().copied();
            if let Some(last) = last.filter(|&l| l >= min) {
                return last;
            }
            assert!(
                Instant::now() < until,
                "VM {} printed no counter {min} within {within:?}; console:\n{}",
                self.qmp.display(),
                String::from_utf8_lossy(&std::fs::read(&self.console).unwrap_or_default())
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Values of the `CTR n` lines of a console dump (other lines ignored). A
/// last line without its newline is still being written (the UART sends
/// one byte at a time) and is left out.
pub fn counters(console: &[u8]) -> Vec<u64> {
    let complete = match console.iter().rposition(|&b| b == b'\n') {
        Some(i) => &console[..=i],
        None => &[],
    };
    String::from_utf8_lossy(complete)
        .lines()
        .filter_map(|l| l.trim_end_matches('\r').strip_prefix("CTR "))
        .map(|n| {
            n.parse()
                .unwrap_or_else(|_| panic!("garbled counter line: CTR {n:?}"))
        })
        .collect()
}

/// Asserts `seq` is 0, 1, 2, ... with no gap, repeat or reset.
pub fn assert_consecutive(seq: &[u64], what: &str) {
    assert!(!seq.is_empty(), "{what}: no counter at all");
    for (i, &v) in seq.iter().enumerate() {
        assert_eq!(
            v,
            i as u64,
            "{what}: counter #{i} is {v} (gap or reset); around: {:?}",
            &seq[i.saturating_sub(3)..(i + 3).min(seq.len())]
        );
    }
}

impl Lab {
    /// A new lab, or `None` (after a plain message) when QEMU or the kernel
    /// is missing outside CI.
    pub fn new() -> Option<Lab> {
        let missing = if Command::new("qemu-system-x86_64")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_err()
        {
            Some("qemu-system-x86_64 is not installed".to_string())
        } else if !kernel().exists() {
            Some(format!("{} is missing", kernel().display()))
        } else {
            None
        };
        if let Some(why) = missing {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("drain tests need QEMU and the test kernel: {why} (run scripts/setup)");
            }
            eprintln!(
                "SKIPPED: drain test needs QEMU and the test kernel: {why} (run scripts/setup)"
            );
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("hotfix-drain")
            .tempdir()
            .unwrap();
        let root = root();
        let vmload = dir.path().join("vmload");
        let st = Command::new("gcc")
            .args(["-static", "-O2", "-o"])
            .arg(&vmload)
            .arg(root.join("testkernels/vm/vmload.c"))
            .status()
            .unwrap();
        assert!(st.success(), "gcc failed on testkernels/vm/vmload.c");
        let image = dir.path().join("guest.cpio.gz");
        let st = Command::new(root.join("scripts/guest-image"))
            .arg("-o")
            .arg(&image)
            .arg("-r")
            .arg(root.join("testkernels/vm/rc"))
            .arg("-f")
            .arg(format!("{}:/bin/vmload", vmload.display()))
            .status()
            .unwrap();
        assert!(st.success(), "scripts/guest-image failed");
        Some(Lab { dir, image })
    }

    /// Starts VM `name` (source, or destination with `incoming`), with extra
    /// kernel parameters (e.g. `vmload=wss=64,rate=100`). Waits for its QMP
    /// socket.
    pub fn vm(&self, name: &str, incoming: bool, extra: &str) -> Vm {
        self.vm_with(name, incoming, extra, &[])
    }

    /// [`Lab::vm`] with extra QEMU arguments (`scripts/vm -X`).
    pub fn vm_with(&self, name: &str, incoming: bool, extra: &str, qemu: &[&str]) -> Vm {
        let qmp = self.dir.path().join(format!("{name}.qmp"));
        let console = self.dir.path().join(format!("{name}.console"));
        let mut cmd = Command::new(root().join("scripts/vm"));
        cmd.arg("-q")
            .arg(&qmp)
            .arg("-c")
            .arg(&console)
            .arg("-i")
            .arg(&self.image)
            .arg("-a")
            .arg(extra)
            .stdin(Stdio::null());
        if incoming {
            cmd.arg("-I");
        }
        for a in qemu {
            cmd.arg("-X").arg(a);
        }
        let mut vm = Vm {
            child: cmd.spawn().unwrap(),
            qmp,
            console,
        };
        let until = Instant::now() + Duration::from_secs(20);
        while std::os::unix::net::UnixStream::connect(&vm.qmp).is_err() {
            assert!(vm.alive(), "QEMU {name} exited at start");
            assert!(Instant::now() < until, "QEMU {name}: no QMP socket");
            std::thread::sleep(Duration::from_millis(20));
        }
        vm
    }
}
