//! Test-host harness of the guest tier: boots the pinned Debian cloud kernel
//! in QEMU (TCG, 2 vCPUs) with the image of `scripts/testhost image` (static
//! `hotfix` at /bin/hotfix, test modules under /lib/modules/hotfix/) and runs
//! shell scripts in it through the control agent (`testkernels/guest/agent`).
//!
//! Model: ttyS0 is the console, written to a file (the kernel log, oopses,
//! panics); ttyS1 is the control port, a unix socket QEMU serves. Each command
//! is framed (`@@BEGIN id` / `@@END id rc=N`), so output and exit status are
//! exact. A guest that dies (panic: `panic=-1 oops=panic`, QEMU exits) or
//! stops answering fails the command with the console's tail attached.
//!
//! Invariant: the QEMU process is killed when the [`Guest`] is dropped.

#![allow(dead_code, reason = "each test file uses a part of the harness")]
#![allow(
    clippy::panic,
    reason = "test harness: a failure is a panic with the console attached"
)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Headers of the pinned kernel ABI (installed by scripts/setup).
pub const HEADERS: &str = "/usr/src/linux-headers-6.1.0-47-cloud-amd64";

/// Runs `hotfix build --kernel SRC_FLAG SRC --diff FIX --headers HEADERS
/// [EXTRA...] -o KO` on the host (`src_flag`: `--module-src` or
/// `--kernel-src`); fails the test with hotfix's output unless it succeeds.
pub fn build_patch(src_flag: &str, src: &Path, fix: &Path, extra: &[&str], ko: &Path) {
    let o = Command::new(env!("CARGO_BIN_EXE_hotfix"))
        .args(["build", "--kernel", src_flag])
        .arg(src)
        .arg("--diff")
        .arg(fix)
        .args(["--headers", HEADERS])
        .args(extra)
        .arg("-o")
        .arg(ko)
        .output()
        .unwrap_or_else(|e| panic!("hotfix build: {e}"));
    assert!(
        o.status.success(),
        "hotfix build --kernel {src_flag} {} --diff {} failed: {}{}",
        src.display(),
        fix.display(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Root of the workspace.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The pinned kernel image, unpacked by `scripts/setup`.
pub fn kernel() -> PathBuf {
    let cache = std::env::var_os("HOTFIX_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/hotfix")
        });
    let abi = std::env::var("HOTFIX_KABI").unwrap_or_else(|_| "6.1.0-47".into());
    cache.join("kernel").join(abi).join("vmlinuz")
}

/// Whether this machine can run test hosts. Outside CI a test may skip when
/// not (printing why); under `CI=true` a missing capability fails the test.
pub fn available() -> bool {
    let mut missing = Vec::new();
    if !kernel().is_file() {
        missing.push(format!("{} (run scripts/setup)", kernel().display()));
    }
    if Command::new("qemu-system-x86_64")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .map(|s| !s.success())
        .unwrap_or(true)
    {
        missing.push("qemu-system-x86_64".into());
    }
    if missing.is_empty() {
        return true;
    }
    let msg = format!("guest tier needs: {}", missing.join(", "));
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{msg} (CI=true: not skipping)"
    );
    eprintln!("SKIP: {msg}");
    false
}

/// Builds (once per test binary) the standard guest image with
/// `scripts/testhost image`; returns its path.
pub fn image() -> &'static Path {
    static IMG: OnceLock<PathBuf> = OnceLock::new();
    IMG.get_or_init(|| image_with("guest", &[]))
}

/// Builds a guest image `target/testhost/<name>.cpio.gz` carrying extra
/// files (`(host path, guest path)`) besides the standard contents.
pub fn image_with(name: &str, extra: &[(PathBuf, &str)]) -> PathBuf {
    let img = root()
        .join("target/testhost")
        .join(format!("{name}.cpio.gz"));
    let mut cmd = Command::new(root().join("scripts/testhost"));
    cmd.arg("image").arg("-o").arg(&img);
    for (src, dst) in extra {
        cmd.arg("-f").arg(format!("{}:{dst}", src.display()));
    }
    let out = cmd
        .env_remove("CARGO_TARGET_DIR")
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("scripts/testhost image: {e}"));
    assert!(out.status.success(), "scripts/testhost image failed");
    img
}

/// Where `scripts/testhost image` leaves the built test modules
/// (`<dir>/<name>.ko`, e.g. `x2apic/hfx_x2apic.ko`).
pub fn kmod_dir() -> PathBuf {
    root().join("target/testhost/kmod")
}

/// The result of one command in the guest.
#[derive(Debug, Clone)]
pub struct Output {
    /// Exit status of the script.
    pub rc: i32,
    /// Its stdout and stderr, merged.
    pub out: String,
}

/// A running test host.
pub struct Guest {
    child: Child,
    ctl: UnixStream,
    dir: tempfile::TempDir,
    next: u64,
    buf: Vec<u8>,
    /// Time from spawning QEMU to the agent's first word.
    pub boot_time: Duration,
}

const BOOT_TIMEOUT: Duration = Duration::from_secs(240);

impl Guest {
    /// Boots a guest from [`image()`].
    pub fn boot() -> Guest {
        Self::boot_image(image())
    }

    /// Boots a guest from an initramfs.
    pub fn boot_image(img: &Path) -> Guest {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let sock = dir.path().join("ctl.sock");
        let console = dir.path().join("console.log");
        let start = Instant::now();
        let child = Command::new("qemu-system-x86_64")
            .args([
                "-accel", "tcg", "-smp", "2", "-m", "512", "-display", "none",
            ])
            .args(["-no-reboot", "-monitor", "none"])
            .arg("-kernel")
            .arg(kernel())
            .arg("-initrd")
            .arg(img)
            .args(["-append", "console=ttyS0 quiet panic=-1 oops=panic"])
            .arg("-chardev")
            .arg(format!("file,id=con,path={}", console.display()))
            .args(["-serial", "chardev:con"])
            .arg("-chardev")
            .arg(format!(
                "socket,id=ctl,path={},server=on,wait=on",
                sock.display()
            ))
            .args(["-serial", "chardev:ctl"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning qemu-system-x86_64: {e}"));
        let mut child = child;
        let ctl = loop {
            if let Ok(s) = UnixStream::connect(&sock) {
                break s;
            }
            if let Ok(Some(st)) = child.try_wait() {
                panic!("qemu exited before serving its control socket: {st}");
            }
            if start.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                panic!("qemu did not create {} within 30 s", sock.display());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let _ = ctl.set_read_timeout(Some(Duration::from_millis(200)));
        let mut g = Guest {
            child,
            ctl,
            dir,
            next: 1,
            buf: Vec::new(),
            boot_time: Duration::ZERO,
        };
        if let Err(e) = g.read_until(b"@@HOTFIX-READY\n", BOOT_TIMEOUT) {
            panic!("guest did not boot: {e}");
        }
        g.buf.clear();
        g.boot_time = start.elapsed();
        g
    }

    /// The last `max` bytes of the console log.
    pub fn console_tail(&self, max: usize) -> String {
        let log = std::fs::read(self.dir.path().join("console.log")).unwrap_or_default();
        let from = log.len().saturating_sub(max);
        String::from_utf8_lossy(&log[from..]).replace('\r', "")
    }

    fn read_until(&mut self, needle: &[u8], timeout: Duration) -> Result<usize, String> {
        self.read_until_from(0, needle, timeout)
    }

    /// Reads until `needle` occurs in the buffer at or after `from`; returns
    /// the index just past it.
    fn read_until_from(
        &mut self,
        from: usize,
        needle: &[u8],
        timeout: Duration,
    ) -> Result<usize, String> {
        let start = Instant::now();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(pos) = self
                .buf
                .get(from..)
                .and_then(|b| b.windows(needle.len()).position(|w| w == needle))
            {
                return Ok(from + pos + needle.len());
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                return Err(format!(
                    "the guest died (qemu: {st}); console:\n{}",
                    self.console_tail(6000)
                ));
            }
            if start.elapsed() > timeout {
                return Err(format!(
                    "no answer within {timeout:?}; console:\n{}",
                    self.console_tail(6000)
                ));
            }
            match self.ctl.read(&mut chunk) {
                Ok(0) => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(format!("control socket: {e}")),
            }
        }
    }

    /// Runs a shell script in the guest; its output and exit status, or an
    /// error (the guest died or did not answer in time) with the console.
    pub fn try_run(&mut self, script: &str, timeout: Duration) -> Result<Output, String> {
        let id = self.next;
        self.next += 1;
        let line = format!("{id} {}\n", base64(script.as_bytes()));
        self.ctl
            .write_all(line.as_bytes())
            .map_err(|e| format!("control socket: {e}"))?;
        let begin = format!("@@BEGIN {id}\n");
        let b = self.read_until(begin.as_bytes(), timeout)?;
        self.buf.drain(..b);
        let end = format!("\n@@END {id} rc=");
        let e = self.read_until(end.as_bytes(), timeout)?;
        let tail_end = self.read_until_from(e, b"\n", timeout)? - 1;
        let out = String::from_utf8_lossy(&self.buf[..e - end.len()]).into_owned();
        let rc_text = String::from_utf8_lossy(&self.buf[e..tail_end]).into_owned();
        let rc = rc_text
            .trim()
            .parse::<i32>()
            .map_err(|_| format!("bad status line {rc_text:?}"))?;
        self.buf.drain(..=tail_end);
        Ok(Output { rc, out })
    }

    /// Runs a script (2 min timeout); panics with the console when the guest
    /// dies or hangs.
    pub fn run(&mut self, script: &str) -> Output {
        match self.try_run(script, Duration::from_secs(120)) {
            Ok(o) => o,
            Err(e) => panic!("guest command {script:?} failed: {e}"),
        }
    }

    /// Runs a script that must succeed; returns its output.
    pub fn ok(&mut self, script: &str) -> String {
        let o = self.run(script);
        assert_eq!(
            o.rc,
            0,
            "guest command {script:?} exited {}:\n{}\nconsole:\n{}",
            o.rc,
            o.out,
            self.console_tail(3000)
        );
        o.out
    }

    /// Runs a `hotfix ... --json` command that must succeed and parses its
    /// standard output, the one JSON document. The agent merges a command's
    /// stderr into its output, so stderr (hotfix's log lines and warnings,
    /// e.g. the lab's `--allow-unsigned` warning) goes to a file that is
    /// shown only when the command fails.
    pub fn json(&mut self, cmd: &str) -> serde_json::Value {
        let out = self.ok(&format!(
            "{cmd} 2>/tmp/.hotfix-stderr; rc=$?; [ $rc = 0 ] || cat /tmp/.hotfix-stderr; exit $rc"
        ));
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{cmd}: not JSON ({e}): {out}"))
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Standard base64 (the agent decodes with busybox `base64 -d`).
fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                s.push(T[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}
