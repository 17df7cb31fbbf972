//! Harness shared by the Xen test-host tests (`xen_livepatch.rs`,
//! `xen_build.rs`): capabilities, `scripts/xenhost paths`, the static
//! `hotfix` for the Dom0 initramfs, one boot of a test host whose Dom0 agent
//! (`testkernels/xen/rc-*`) runs a scripted list of steps, and the reading
//! of its console transcript.
//!
//! Transcript model: the agent prints `@@STEP name`, then the step's output
//! lines as `@@OUT ...`, then `@@RC name status`; `@@EXTRA label value`
//! records a reading of `/sys/hypervisor/version/extra`; `@@DONE` ends a
//! complete run. Xen's own console lines (`(XEN) [  s.us] ...`, with
//! `console_timestamps=boot`) are interleaved.
//!
//! Invariant: the test host's QEMU runs in its own process group and is
//! killed with it when the [`Host`] guard drops, whatever the test's outcome.

#![allow(dead_code, reason = "each test binary uses a part of the harness")]
#![allow(clippy::unwrap_used, clippy::panic, reason = "test harness")]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Skips (returns `None`) with a message when not in CI; fails in CI.
pub fn capability(what: &str, ok: bool) -> Option<()> {
    if ok {
        return Some(());
    }
    assert!(!ci(), "CI=true but {what}");
    eprintln!("SKIP: {what}");
    None
}

/// Whether `bin` is on the PATH.
pub fn which(bin: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {bin}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `scripts/xenhost paths`: builds (or reuses) the hypervisor, its test
/// payloads and the Dom0 kernel; `KEY=VALUE` lines as a map.
pub fn xenhost_paths() -> Option<HashMap<String, String>> {
    capability(
        "qemu-system-x86_64 is not installed (run scripts/setup)",
        which("qemu-system-x86_64"),
    )?;
    let out = Command::new(root().join("scripts/xenhost"))
        .arg("paths")
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    capability(
        "scripts/xenhost could not build the test hypervisor (see above)",
        out.status.success(),
    )?;
    Some(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

/// Runs `cmd`, failing the test unless it succeeds.
pub fn run(cmd: &mut Command) {
    let st = cmd.status().unwrap();
    assert!(st.success(), "{cmd:?} failed: {st}");
}

/// A statically linked `hotfix` for the Dom0 initramfs (it also runs on the
/// build machine). Built exactly as scripts/testhost builds the kernel test
/// hosts' one (same target directory, dev profile, flags), so the test tiers
/// share a single build in CI.
pub fn static_hotfix() -> PathBuf {
    let target = root().join("target/testhost/cargo");
    run(Command::new(env!("CARGO"))
        .current_dir(root())
        .env_remove("RUSTC_WRAPPER")
        .env("CARGO_TARGET_DIR", &target)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .args([
            "build",
            "--quiet",
            "--profile",
            "dev",
            "--target",
            "x86_64-unknown-linux-gnu",
            "-p",
            "hotfix",
        ]));
    target.join("x86_64-unknown-linux-gnu/debug/hotfix")
}

/// Copies `src` to `dst` with its `.livepatch.xen_depends` note's build-id
/// inverted: a payload for another hypervisor.
pub fn forge_other_buildid(src: &Path, dst: &Path, dir: &Path) {
    let note = dir.join("xen_depends.bin");
    run(Command::new("objcopy")
        .args(["-O", "binary", "--only-section=.livepatch.xen_depends"])
        .arg(src)
        .arg(&note));
    let mut bytes = std::fs::read(&note).unwrap();
    assert!(bytes.len() > 16, "xen_depends note too short");
    for b in &mut bytes[16..] {
        *b ^= 0xff;
    }
    std::fs::write(&note, &bytes).unwrap();
    run(Command::new("objcopy")
        .arg(format!(
            "--update-section=.livepatch.xen_depends={}",
            note.display()
        ))
        .arg(src)
        .arg(dst));
}

/// The test host's QEMU (via scripts/xenhost boot), in its own process
/// group, killed with it on drop.
struct Host(Child);

impl Drop for Host {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.0.id()) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::SIGKILL,
            );
        }
        let _ = self.0.wait();
    }
}

/// Boots one test host whose Dom0 runs the agent `rc` (a path under
/// testkernels/xen) with `hotfix` as /bin/hotfix and `payloads` as
/// /payloads; waits for it to power off and returns its transcript and the
/// whole cycle's time. The console is kept as `target/<keep_as>` for
/// inspection after a run. Fails unless the agent reached `@@DONE`.
pub fn boot(
    dir: &Path,
    rc: &str,
    hotfix: &Path,
    payloads: &Path,
    keep_as: &str,
) -> (Transcript, Duration) {
    let image = dir.join("dom0.cpio.gz");
    run(Command::new(root().join("scripts/xenhost"))
        .arg("image")
        .arg("-o")
        .arg(&image)
        .arg("-r")
        .arg(root().join("testkernels/xen").join(rc))
        .arg("-f")
        .arg(format!("{}:/bin/hotfix", hotfix.display()))
        .arg("-f")
        .arg(format!("{}:/payloads", payloads.display())));
    let log_path = dir.join("console.log");
    let t0 = Instant::now();
    let mut host = Host(
        std::os::unix::process::CommandExt::process_group(
            Command::new(root().join("scripts/xenhost"))
                .arg("boot")
                .arg(&image)
                .arg(&log_path),
            0,
        )
        .env("XENHOST_TIMEOUT", "600")
        .spawn()
        .unwrap(),
    );
    let status = host.0.wait().unwrap();
    let cycle = t0.elapsed();
    let log =
        String::from_utf8_lossy(&std::fs::read(&log_path).unwrap_or_default()).replace('\r', "");
    let _ = std::fs::write(root().join("target").join(keep_as), &log);
    assert!(
        status.success() && log.contains("@@DONE"),
        "test host failed ({status}); console:\n{log}"
    );
    (Transcript { log }, cycle)
}

/// The console transcript of one test host run.
pub struct Transcript {
    pub log: String,
}

impl Transcript {
    /// Exit status and output of step `name`.
    pub fn step(&self, name: &str) -> (i32, String) {
        let begin = format!("@@STEP {name}\n");
        let start = self
            .log
            .find(&begin)
            .unwrap_or_else(|| panic!("step {name} missing:\n{}", self.log));
        let rc_tag = format!("@@RC {name} ");
        let mut out = String::new();
        for line in self.log[start + begin.len()..].lines() {
            if let Some(v) = line.strip_prefix(&rc_tag) {
                return (v.trim().parse().unwrap(), out);
            }
            if let Some(o) = line.strip_prefix("@@OUT ") {
                out.push_str(o);
                out.push('\n');
            }
        }
        panic!("step {name} has no exit status:\n{}", self.log)
    }

    /// Output of step `name`, which must have exited with `status`.
    pub fn expect(&self, name: &str, status: i32) -> String {
        let (rc, out) = self.step(name);
        assert_eq!(
            rc, status,
            "step {name}: exit status {rc}, expected {status}; output:\n{out}"
        );
        out
    }

    /// The JSON document printed by step `name` (which must succeed).
    pub fn json(&self, name: &str) -> serde_json::Value {
        let out = self.expect(name, 0);
        let start = out
            .find('{')
            .unwrap_or_else(|| panic!("step {name}: no JSON in:\n{out}"));
        let end = out.rfind('}').unwrap();
        serde_json::from_str(&out[start..=end])
            .unwrap_or_else(|e| panic!("step {name}: {e}:\n{out}"))
    }

    /// The extra-version reading labelled `label`.
    pub fn extra(&self, label: &str) -> String {
        let tag = format!("@@EXTRA {label} ");
        self.log
            .lines()
            .find_map(|l| l.strip_prefix(&tag))
            .unwrap_or_else(|| panic!("no extra-version reading {label}"))
            .trim()
            .to_string()
    }

    /// (name, state) of each payload in the `list --xen --json` of `step`.
    pub fn names(&self, step: &str) -> Vec<(String, String)> {
        self.json(step)["payloads"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().unwrap().to_string(),
                    p["state"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    fn xen_times<'a>(&'a self, needle: &'a str) -> impl DoubleEndedIterator<Item = f64> + 'a {
        self.log
            .lines()
            .filter(move |l| l.starts_with("(XEN) [") && l.contains(needle))
            .filter_map(|l| l[7..].split(']').next()?.trim().parse().ok())
    }

    /// Xen's own console timestamp (s) of the first line containing `needle`.
    pub fn xen_time(&self, needle: &str) -> f64 {
        self.xen_times(needle)
            .next()
            .unwrap_or_else(|| panic!("no Xen console line with {needle:?}"))
    }

    /// Xen's own console timestamp (s) of the last line containing `needle`.
    pub fn xen_time_last(&self, needle: &str) -> f64 {
        self.xen_times(needle)
            .next_back()
            .unwrap_or_else(|| panic!("no Xen console line with {needle:?}"))
    }
}
