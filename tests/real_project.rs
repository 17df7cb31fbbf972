//! Real third-party code: tinyproxy 1.11.1, taken from its Debian source
//! package and built with its own autotools build through `hotfix build`,
//! gets the two upstream security fixes Debian carries in `debian/patches/`
//! (CVE-2022-40468, upstream 3764b85; CVE-2023-49606, upstream 12a8484)
//! applied live to one running tinyproxy, then reverted.
//!
//! The sources and fixes come from `scripts/real-project fetch` (apt-get
//! source, sha256-pinned, cached under `$HOTFIX_CACHE/real/`). Each bug is
//! shown by a probe over loopback (`testkernels/real/tinyproxy/probe`):
//! before the fix, after it, and again after the revert. The second bug
//! aborts the daemon (glibc detects the double free), which the test checks
//! by the process's exit signal.
//!
//! Second project: memcached 1.6.18 (Debian source package, upstream tarball
//! plus Debian's patches before the fixes) in proxy mode, 13 threads: the
//! CVE-2023-46852 fix applied live and reverted, and the CVE-2023-46853 fix
//! refused because it changes `struct mcp_parser_s`.

use assert_cmd::Command;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn hotfix() -> Command {
    // Test patches are unsigned: opt out of the trust gate (docs/trust.md).
    let mut c = Command::cargo_bin("hotfix").expect("hotfix binary");
    c.env("HOTFIX_ALLOW_UNSIGNED", "1");
    c
}

/// What `scripts/real-project fetch` reports.
struct Fetched {
    src: PathBuf,
    fix1: PathBuf,
    fix2: PathBuf,
    build_cmd: String,
    binary: String,
}

fn fetch(project: &str) -> Fetched {
    let out = std::process::Command::new(repo().join("scripts/real-project"))
        .args(["fetch", project])
        .stderr(Stdio::inherit())
        .output()
        .expect("run scripts/real-project fetch");
    assert!(
        out.status.success(),
        "scripts/real-project fetch failed ({}): the test needs Debian's source package {project}",
        out.status
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let get = |k: &str| {
        let v = text.lines().find_map(|l| l.strip_prefix(&format!("{k}=")));
        assert!(v.is_some(), "fetch printed no {k}=: {text}");
        v.unwrap_or_default().to_string()
    };
    Fetched {
        src: get("SRC").into(),
        fix1: get("FIX1").into(),
        fix2: get("FIX2").into(),
        build_cmd: get("BUILD_CMD"),
        binary: get("BINARY"),
    }
}

/// `N` distinct free loopback ports (all bound at once, then released).
fn free_ports<const N: usize>() -> [u16; N] {
    let held: Vec<std::net::TcpListener> = (0..N)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    let mut ports = [0u16; N];
    for (p, l) in ports.iter_mut().zip(&held) {
        *p = l.local_addr().expect("local addr").port();
    }
    ports
}

fn wait_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} does not listen on 127.0.0.1:{port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process killed when dropped.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Daemon {
    fn pid(&self) -> String {
        self.0.id().to_string()
    }
    /// Waits up to 5 s for the process to end; the signal that ended it.
    /// The signal that ended the daemon, waiting for it up to 30 s (a
    /// loaded CI machine may take seconds to reap an aborting process).
    fn died_of(&mut self) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(st)) = self.0.try_wait() {
                return st.signal();
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    fn alive(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }
}

/// A tinyproxy on 127.0.0.1:`port` with the probe's 400 template.
fn tinyproxy(bin: &Path, dir: &Path, port: u16) -> Daemon {
    let meta = repo().join("testkernels/real/tinyproxy");
    let conf = std::fs::read_to_string(meta.join("tinyproxy.conf.in"))
        .expect("tinyproxy.conf.in")
        .replace("@PORT@", &port.to_string())
        .replace("@DIR@", &meta.display().to_string());
    let path = dir.join(format!("tinyproxy-{port}.conf"));
    std::fs::write(&path, conf).expect("write conf");
    let log = std::fs::File::create(dir.join(format!("tinyproxy-{port}.log"))).expect("log");
    let child = std::process::Command::new(bin)
        .arg("-d")
        .arg("-c")
        .arg(&path)
        .stdout(log.try_clone().expect("log fd"))
        .stderr(log)
        .spawn()
        .expect("start tinyproxy");
    let d = Daemon(child);
    wait_port(port, "tinyproxy");
    d
}

fn probe(args: &[&str]) -> String {
    probe_of("tinyproxy", args)
}

fn probe_of(project: &str, args: &[&str]) -> String {
    let out =
        std::process::Command::new(repo().join("testkernels/real").join(project).join("probe"))
            .args(args)
            .output()
            .expect("run probe");
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(out.status.success(), "probe {args:?} failed: {line}");
    line
}

fn json(out: &assert_cmd::assert::Assert) -> serde_json::Value {
    serde_json::from_slice(&out.get_output().stdout).expect("json output")
}

#[test]
fn two_upstream_fixes_are_built_and_applied_live_to_a_running_tinyproxy() {
    for tool in ["busybox", "patch", "make"] {
        let found = std::process::Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(found, "{tool} is missing: run scripts/setup");
    }
    let f = fetch("tinyproxy");
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = dir.path().join("cache");
    let build = |extra: &[&str]| {
        let mut c = hotfix();
        c.args(["--json", "build", "--src"])
            .arg(&f.src)
            .args(["--build", &f.build_cmd, "--binary", &f.binary, "--cache"])
            .arg(&cache)
            .args(extra);
        c
    };

    // The patch-ready original build: pristine upstream 1.11.1.
    let prep = json(&build(&["--prepare"]).assert().success());
    let bin = PathBuf::from(prep["binary"].as_str().expect("binary path"));

    // An origin server, the long-running proxy, and a throw-away one.
    let [origin_port, port, port2] = free_ports::<3>();
    let www = dir.path().join("www");
    std::fs::create_dir_all(&www).expect("www");
    std::fs::write(www.join("index.html"), "hello from the origin\n").expect("index");
    let _origin = Daemon(
        std::process::Command::new("busybox")
            .args([
                "httpd",
                "-f",
                "-p",
                &format!("127.0.0.1:{origin_port}"),
                "-h",
            ])
            .arg(&www)
            .spawn()
            .expect("start busybox httpd"),
    );
    wait_port(origin_port, "busybox httpd");
    let mut tp = tinyproxy(&bin, dir.path(), port);
    let (p, o) = (port.to_string(), origin_port.to_string());

    // Both bugs, before any fix.
    let before = probe(&["error-page", &p]);
    assert!(
        before.starts_with("VULNERABLE"),
        "CVE-2022-40468 not visible before the fix: {before}"
    );
    let mut throwaway = tinyproxy(&bin, dir.path(), port2);
    let crash = probe(&["connection-header", &port2.to_string(), &o]);
    assert!(
        crash.starts_with("VULNERABLE"),
        "CVE-2023-49606 not visible before the fix: {crash}"
    );
    assert_eq!(
        throwaway.died_of(),
        Some(libc::SIGABRT),
        "the throw-away tinyproxy should abort on the double free"
    );

    // Fix 1, built against the running process and applied.
    let patch1 = dir.path().join("fix1.hfx");
    let b1 = json(
        &build(&["--pid", &tp.pid(), "--id", "cve-2022-40468", "--diff"])
            .arg(&f.fix1)
            .arg("-o")
            .arg(&patch1)
            .assert()
            .success(),
    );
    let changed1: Vec<&str> = b1["build"]["meta"]["funcs"]
        .as_array()
        .expect("funcs")
        .iter()
        .filter_map(|f| f["name"].as_str())
        .collect();
    assert_eq!(
        changed1,
        ["process_request"],
        "fix 1 should replace process_request only: {b1}"
    );
    assert_eq!(
        b1["build"]["original_cached"], true,
        "the original build should come from the cache"
    );
    let a1 = json(
        &hotfix()
            .args(["--json", "apply"])
            .arg(&patch1)
            .args(["--pid", &tp.pid()])
            .assert()
            .success(),
    );
    assert_eq!(a1["funcs"].as_array().map(Vec::len), Some(1), "{a1}");
    let after1 = probe(&["error-page", &p]);
    assert!(
        after1.starts_with("SAFE"),
        "CVE-2022-40468 after apply: {after1}"
    );

    // Fix 2, on top of fix 1, in the same process.
    let patch2 = dir.path().join("fix2.hfx");
    let b2 = json(
        &build(&["--pid", &tp.pid(), "--id", "cve-2023-49606", "--diff"])
            .arg(&f.fix2)
            .arg("-o")
            .arg(&patch2)
            .assert()
            .success(),
    );
    let changed2: Vec<&str> = b2["build"]["meta"]["funcs"]
        .as_array()
        .expect("funcs")
        .iter()
        .filter_map(|f| f["name"].as_str())
        .collect();
    assert!(
        !changed2.is_empty()
            && changed2
                .iter()
                .all(|n| n.starts_with("remove_connection_headers")),
        "fix 2 should replace remove_connection_headers only: {changed2:?}"
    );
    hotfix()
        .args(["apply"])
        .arg(&patch2)
        .args(["--pid", &tp.pid()])
        .assert()
        .success();
    let after2 = probe(&["connection-header", &p, &o]);
    assert!(
        after2.starts_with("SAFE"),
        "CVE-2023-49606 after apply: {after2}"
    );
    assert!(tp.alive(), "the patched tinyproxy died");
    let still = probe(&["error-page", &p]);
    assert!(
        still.starts_with("SAFE"),
        "fix 1 lost when fix 2 was applied: {still}"
    );

    let list = hotfix()
        .args(["list", "--pid", &tp.pid()])
        .assert()
        .success();
    let listed = String::from_utf8_lossy(&list.get_output().stdout).into_owned();
    assert!(
        listed.contains("cve-2022-40468") && listed.contains("cve-2023-49606"),
        "list: {listed}"
    );

    // Revert, last in first out: both bugs come back in the same process.
    hotfix()
        .args(["revert", "cve-2023-49606", "--pid", &tp.pid()])
        .assert()
        .success();
    hotfix()
        .args(["revert", "cve-2022-40468", "--pid", &tp.pid()])
        .assert()
        .success();
    let again = probe(&["error-page", &p]);
    assert!(
        again.starts_with("VULNERABLE"),
        "CVE-2022-40468 after revert: {again}"
    );
    let crash = probe(&["connection-header", &p, &o]);
    assert!(
        crash.starts_with("VULNERABLE"),
        "CVE-2023-49606 after revert: {crash}"
    );
    assert_eq!(
        tp.died_of(),
        Some(libc::SIGABRT),
        "the reverted tinyproxy should abort again"
    );
}

#[test]
fn memcached_fix_applies_live_and_a_struct_changing_fix_is_refused() {
    let f = fetch("memcached");
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = dir.path().join("cache");
    let build = |extra: &[&str]| {
        let mut c = hotfix();
        c.args(["--json", "build", "--src"])
            .arg(&f.src)
            .args(["--build", &f.build_cmd, "--binary", &f.binary, "--cache"])
            .arg(&cache)
            .args(extra);
        c
    };
    let prep = json(&build(&["--prepare"]).assert().success());
    let bin = PathBuf::from(prep["binary"].as_str().expect("binary path"));

    let [port] = free_ports::<1>();
    let routes = repo().join("testkernels/real/memcached/routes.lua");
    let mut mc = Daemon(
        std::process::Command::new(&bin)
            .args(["-u", "root", "-l", "127.0.0.1", "-U", "0", "-t", "4", "-p"])
            .arg(port.to_string())
            .arg("-o")
            .arg(format!("proxy_config={}", routes.display()))
            .stdout(Stdio::null())
            .spawn()
            .expect("start memcached"),
    );
    wait_port(port, "memcached");
    let p = port.to_string();
    let probe = |what: &str| probe_of("memcached", &["multiget-prefix", &p]).starts_with(what);

    assert!(
        probe("VULNERABLE"),
        "CVE-2023-46852 not visible before the fix"
    );
    let patch = dir.path().join("fix.hfx");
    let b = json(
        &build(&["--pid", &mc.pid(), "--id", "cve-2023-46852", "--diff"])
            .arg(&f.fix1)
            .arg("-o")
            .arg(&patch)
            .assert()
            .success(),
    );
    let changed: Vec<&str> = b["build"]["meta"]["funcs"]
        .as_array()
        .expect("funcs")
        .iter()
        .filter_map(|f| f["name"].as_str())
        .collect();
    assert_eq!(changed, ["proxy_process_command"], "{b}");
    let a = json(
        &hotfix()
            .args(["--json", "apply"])
            .arg(&patch)
            .args(["--pid", &mc.pid()])
            .assert()
            .success(),
    );
    assert!(
        a["threads"].as_u64().is_some_and(|t| t > 4),
        "memcached's threads: {a}"
    );
    assert!(probe("SAFE"), "CVE-2023-46852 after apply");

    // CVE-2023-46853 grows struct mcp_parser_s: refused, nothing written.
    let refused_patch = dir.path().join("refused.hfx");
    let refused = build(&["--pid", &mc.pid(), "--diff"])
        .arg(&f.fix2)
        .arg("-o")
        .arg(&refused_patch)
        .assert()
        .code(1);
    let err = String::from_utf8_lossy(&refused.get_output().stderr).into_owned();
    assert!(
        err.contains("struct mcp_parser_s") && err.contains("drain"),
        "refusal should name the struct and the remedy: {err}"
    );
    assert!(!refused_patch.exists(), "a refused fix left a patch module");
    assert!(probe("SAFE"), "the refusal disturbed the running fix");

    hotfix()
        .args(["revert", "cve-2023-46852", "--pid", &mc.pid()])
        .assert()
        .success();
    assert!(probe("VULNERABLE"), "CVE-2023-46852 after revert");
    assert!(mc.alive(), "memcached died");
}
