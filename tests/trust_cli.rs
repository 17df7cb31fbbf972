//! The trust gate end to end: `hotfix sign`, then `hotfix apply` on a real
//! process refusing (exit 6, the process untouched) an unsigned patch, an
//! unknown or revoked key, another file's signature, one changed byte, a
//! truncated signature, a garbage key file, a world-writable or missing
//! trust directory; the same gate in front of `--kernel`, `--xen` and
//! `host apply`; `--allow-unsigned`; and the audit log's chain over all of
//! it (`hotfix audit verify`).

#[path = "../loader/tests/support/mod.rs"]
mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use support::Running;

/// A lab: a trust directory with one key (made by Debian's `minisign`), a
/// second untrusted key, an audit log, and a target built twice.
struct Lab {
    dir: tempfile::TempDir,
}

fn sh(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

impl Lab {
    fn new() -> Lab {
        let lab = Lab {
            dir: tempfile::tempdir().expect("tempdir"),
        };
        std::fs::create_dir(lab.trust()).expect("mkdir");
        std::fs::set_permissions(lab.trust(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        lab.genkey("vendor", &lab.trust());
        lab.genkey("other", lab.dir.path());
        lab
    }
    fn p(&self, n: &str) -> PathBuf {
        self.dir.path().join(n)
    }
    fn trust(&self) -> PathBuf {
        self.p("trusted.d")
    }
    fn log(&self) -> PathBuf {
        self.p("audit.jsonl")
    }
    fn genkey(&self, name: &str, pubdir: &Path) {
        sh(Command::new("minisign")
            .args(["-G", "-W", "-p"])
            .arg(pubdir.join(format!("{name}.pub")))
            .arg("-s")
            .arg(self.p(&format!("{name}.key"))));
    }
    fn key_id(&self, name: &str) -> String {
        let text =
            std::fs::read_to_string(self.trust().join(format!("{name}.pub"))).expect("public key");
        text.lines()
            .next()
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|id| u64::from_str_radix(id, 16).ok())
            .map(|n| format!("{n:016X}"))
            .expect("key id")
    }
    /// `hotfix` with this lab's trust directory and audit log, nothing
    /// from the environment.
    fn hotfix(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_hotfix"));
        c.env_remove("HOTFIX_ALLOW_UNSIGNED")
            .env("HOTFIX_TRUST_DIR", self.trust())
            .env("HOTFIX_AUDIT_LOG", self.log());
        c
    }
    fn sign(&self, patch: &Path, key: &str) {
        sh(self
            .hotfix()
            .arg("sign")
            .arg(patch)
            .arg("--key")
            .arg(self.p(&format!("{key}.key"))));
    }
    fn copy(&self, from: &Path, name: &str) -> PathBuf {
        let to = self.p(name);
        std::fs::copy(from, &to).expect("copy");
        to
    }
    fn object(&self, name: &str, edit: Option<(&str, &str)>) -> PathBuf {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("testkernels/proc/target.c");
        let mut text = std::fs::read_to_string(src).expect("target.c");
        if let Some((old, new)) = edit {
            assert!(text.contains(old));
            text = text.replace(old, new);
        }
        let d = self.p(name);
        std::fs::create_dir_all(&d).expect("mkdir");
        std::fs::write(d.join("target.c"), text).expect("write");
        let o = self.p(&format!("{name}.o"));
        sh(Command::new("gcc")
            .args([
                "-c",
                "-O2",
                "-g",
                "-pthread",
                "-ffunction-sections",
                "-fdata-sections",
                "-o",
            ])
            .arg(&o)
            .arg("target.c")
            .current_dir(&d));
        o
    }
    /// The target binary and a patch for it (compute: x*2+1 -> x*3+7).
    fn target_and_patch(&self) -> (PathBuf, PathBuf) {
        let orig = self.object("orig", None);
        let new = self.object("new", Some(("return x * 2 + g_one;", "return x * 3 + 7;")));
        let bin = self.p("target");
        sh(Command::new("gcc")
            .args(["-pthread", "-Wl,--build-id", "-o"])
            .arg(&bin)
            .arg(&orig));
        let patch = self.p("v2.hfx");
        sh(self
            .hotfix()
            .arg("diff")
            .arg(&orig)
            .arg(&new)
            .arg("-o")
            .arg(&patch)
            .args(["--id", "v2", "--target"])
            .arg(&bin));
        (bin, patch)
    }
    fn records(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.log())
            .expect("audit log")
            .lines()
            .map(|l| serde_json::from_str(l).expect("JSON line"))
            .collect()
    }
}

fn apply(lab: &Lab, patch: &Path, pid: i32) -> Output {
    lab.hotfix()
        .arg("apply")
        .arg(patch)
        .args(["--pid", &pid.to_string()])
        .output()
        .expect("hotfix apply")
}

/// Exit 6, the message naming `names`, the target still running old code.
fn refused(out: &Output, names: &str, t: &mut Running) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{err}");
    assert!(err.contains(names), "expected {names:?} in: {err}");
    assert_eq!(t.cmd("call 5"), "11", "the target was changed");
}

#[test]
fn signed_patch_applies_and_every_untrusted_one_exits_6_untouched() {
    let lab = Lab::new();
    let (bin, patch) = lab.target_and_patch();
    lab.sign(&patch, "vendor");
    // Debian's minisign checks what hotfix signed.
    let v = sh(Command::new("minisign")
        .arg("-V")
        .arg("-p")
        .arg(lab.trust().join("vendor.pub"))
        .arg("-m")
        .arg(&patch));
    assert!(String::from_utf8_lossy(&v.stdout).contains(r#""id":"v2""#));
    let mut t = Running::start(&bin, &["--hammer", "4"]);
    assert_eq!(t.cmd("call 5"), "11");

    let unsigned = lab.copy(&patch, "unsigned.hfx");
    refused(
        &apply(&lab, &unsigned, t.pid),
        "unsigned.hfx: unsigned",
        &mut t,
    );

    let stranger = lab.copy(&patch, "stranger.hfx");
    lab.sign(&stranger, "other");
    refused(&apply(&lab, &stranger, t.pid), "unknown key", &mut t);

    let other_file = lab.copy(&unsigned, "other.hfx");
    std::fs::write(&other_file, b"another file").expect("write");
    std::fs::copy(lab.p("v2.hfx.minisig"), lab.p("other.hfx.minisig")).expect("copy sig");
    refused(
        &apply(&lab, &other_file, t.pid),
        "is for another file (v2.hfx",
        &mut t,
    );

    let tampered = lab.copy(&patch, "tampered.hfx");
    lab.sign(&tampered, "vendor");
    let mut bytes = std::fs::read(&tampered).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(&tampered, bytes).expect("tamper");
    refused(
        &apply(&lab, &tampered, t.pid),
        "changed after it was signed",
        &mut t,
    );

    let truncated = lab.copy(&patch, "truncated.hfx");
    let sig = std::fs::read_to_string(lab.p("v2.hfx.minisig")).expect("sig");
    std::fs::write(lab.p("truncated.hfx.minisig"), &sig[..sig.len() - 20]).expect("truncate");
    refused(
        &apply(&lab, &truncated, t.pid),
        "truncated.hfx.minisig",
        &mut t,
    );

    let revoked = lab.trust().join("revoked");
    std::fs::write(&revoked, format!("{}\n", lab.key_id("vendor"))).expect("revoke");
    refused(&apply(&lab, &patch, t.pid), "revoked key", &mut t);
    std::fs::remove_file(&revoked).expect("unrevoke");

    let junk = lab.trust().join("junk.pub");
    std::fs::write(&junk, "untrusted comment: x\n!!!!\n").expect("junk key");
    refused(&apply(&lab, &patch, t.pid), "junk.pub", &mut t);
    std::fs::remove_file(&junk).expect("rm junk");

    std::fs::set_permissions(lab.trust(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
    refused(&apply(&lab, &patch, t.pid), "world-writable", &mut t);
    std::fs::set_permissions(lab.trust(), std::fs::Permissions::from_mode(0o755)).expect("chmod");

    let out = lab
        .hotfix()
        .env("HOTFIX_TRUST_DIR", lab.p("missing.d"))
        .arg("apply")
        .arg(&patch)
        .args(["--pid", &t.pid.to_string()])
        .output()
        .expect("run");
    refused(&out, "missing.d", &mut t);

    // The signed, untouched patch applies; revert is recorded too.
    let out = apply(&lab, &patch, t.pid);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(t.cmd("call 5"), "22");
    sh(lab
        .hotfix()
        .args(["revert", "v2", "--pid", &t.pid.to_string()]));
    assert_eq!(t.cmd("call 5"), "11");

    // One audit line per refusal, apply and revert; the chain verifies.
    let recs = lab.records();
    let steps: Vec<(&str, u64)> = recs
        .iter()
        .map(|r| {
            (
                r["step"].as_str().unwrap_or(""),
                r["status"].as_u64().unwrap_or(99),
            )
        })
        .collect();
    let mut want = vec![("refuse", 6); 9];
    want.extend([("apply", 0), ("revert", 0)]);
    assert_eq!(steps, want);
    let ok = &recs[9];
    assert_eq!(ok["key_id"], lab.key_id("vendor").as_str());
    assert_eq!(ok["target"], format!("pid {}", t.pid).as_str());
    let hash = trust::sha256_hex(&std::fs::read(&patch).expect("read"));
    assert_eq!(ok["patch_hash"], hash.as_str());
    assert!(ok["user"].is_string() && ok["time"].is_string());
    let out = sh(lab
        .hotfix()
        .args(["audit", "verify", "--log"])
        .arg(lab.log()));
    assert!(String::from_utf8_lossy(&out.stdout).contains("11 line(s)"));

    // Changing a refusal into a success is caught at the line after it.
    let text = std::fs::read_to_string(lab.log()).expect("log");
    let forged = text.replacen(r#""result":"untrusted""#, r#""result":"ok""#, 1);
    std::fs::write(lab.log(), forged).expect("forge");
    let out = lab
        .hotfix()
        .args(["audit", "verify", "--log"])
        .arg(lab.log())
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("audit.jsonl: line 2"), "{err}");
}

#[test]
fn allow_unsigned_admits_only_the_unsigned_and_says_so() {
    let lab = Lab::new();
    let (bin, patch) = lab.target_and_patch();
    let mut t = Running::start(&bin, &[]);
    // A signed file that does not verify is refused even in a lab.
    let tampered = lab.copy(&patch, "tampered.hfx");
    lab.sign(&tampered, "vendor");
    std::fs::write(&tampered, b"changed").expect("tamper");
    let out = lab
        .hotfix()
        .env("HOTFIX_ALLOW_UNSIGNED", "1")
        .arg("apply")
        .arg(&tampered)
        .args(["--pid", &t.pid.to_string()])
        .output()
        .expect("run");
    refused(&out, "tampered.hfx", &mut t);
    let out = lab
        .hotfix()
        .arg("apply")
        .arg(&patch)
        .arg("--allow-unsigned")
        .args(["--pid", &t.pid.to_string()])
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("unsigned; allowed by --allow-unsigned"),
        "{err}"
    );
    assert_eq!(t.cmd("call 5"), "22");
    let recs = lab.records();
    let last = recs.last().expect("a record");
    assert_eq!(
        (last["step"].as_str(), last["key_id"].as_str()),
        (Some("apply"), Some("unsigned"))
    );
}

/// A file with a kernel livepatch module's `.modinfo` (enough for `hotfix
/// sign` to name it; never loaded: every apply below is refused).
fn fake_module(lab: &Lab) -> PathBuf {
    let c = lab.p("fake.c");
    std::fs::write(
        &c,
        "__attribute__((section(\".modinfo\"), used)) static const char mi[] =\n\
         \"name=hfx_fake\\0vermagic=6.1.0-0-cloud-amd64 SMP mod_unload\\0livepatch=Y\";\n",
    )
    .expect("write");
    let ko = lab.p("hfx_fake.ko");
    sh(Command::new("gcc").args(["-c", "-o"]).arg(&ko).arg(&c));
    ko
}

#[test]
fn kernel_xen_and_host_patches_are_verified_before_any_target_is_read() {
    let lab = Lab::new();
    // Junk that the kernel or Xen loader would refuse with exit 1 (not a
    // module / no privcmd): exit 6 shows the gate ran first.
    let junk_ko = lab.p("junk.ko");
    std::fs::write(&junk_ko, b"junk").expect("write");
    let junk_lp = lab.p("junk.livepatch");
    std::fs::write(&junk_lp, b"junk").expect("write");
    for (patch, flag) in [(&junk_ko, "--kernel"), (&junk_lp, "--xen")] {
        let out = lab
            .hotfix()
            .arg("apply")
            .arg(patch)
            .arg(flag)
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(6), "{flag}: {err}");
        assert!(err.contains("unsigned"), "{err}");
    }
    // A signed module names itself and its kernel in the signature; one
    // changed byte is refused before the kernel sees it.
    let ko = fake_module(&lab);
    let out = sh(lab
        .hotfix()
        .args(["--json", "sign"])
        .arg(&ko)
        .arg("--key")
        .arg(lab.p("vendor.key")));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(j[0]["subject"]["kind"], "ko");
    assert_eq!(j[0]["subject"]["id"], "hfx_fake");
    assert!(
        j[0]["subject"]["target"]
            .as_str()
            .unwrap_or("")
            .starts_with("6.1.0-0-cloud-amd64")
    );
    let mut bytes = std::fs::read(&ko).expect("read");
    let n = bytes.len();
    bytes[n - 1] ^= 0x40;
    std::fs::write(&ko, bytes).expect("tamper");
    let out = lab
        .hotfix()
        .arg("apply")
        .arg(&ko)
        .arg("--kernel")
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{err}");
    assert!(
        err.contains("hfx_fake.ko: does not match signature"),
        "{err}"
    );
    // host apply checks every patch before it plans.
    let (bin, patch) = lab.target_and_patch();
    let t = Running::start(&bin, &[]);
    let pid = t.pid.to_string();
    let out = lab
        .hotfix()
        .args(["host", "apply", "--plan"])
        .arg(&patch)
        .args(["--pid", &pid])
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{err}");
    assert!(err.contains("v2.hfx: unsigned"), "{err}");
    lab.sign(&patch, "vendor");
    let out = lab
        .hotfix()
        .args(["host", "apply", "--plan"])
        .arg(&patch)
        .args(["--pid", &pid])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let refusals = lab
        .records()
        .iter()
        .filter(|r| r["step"] == "refuse")
        .count();
    assert_eq!(refusals, 4);
}
