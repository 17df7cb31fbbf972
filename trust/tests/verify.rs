//! Signing and verifying real files with real keys: every refusal of
//! `TrustDir::verify`, and interoperability with Debian's `minisign` tool.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use trust::{Error, Subject, TrustDir};

struct Lab {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    dir: PathBuf,
    sk: minisign::SecretKey,
    key_id: String,
}

/// A key pair made by Debian's `minisign` tool (unencrypted: `-W`); its id.
fn genkey(secret: &Path, public: &Path) -> String {
    let out = Command::new("minisign")
        .args(["-G", "-W", "-p"])
        .arg(public)
        .arg("-s")
        .arg(secret)
        .output()
        .expect("minisign (Debian package `minisign`, installed by scripts/setup)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(public).expect("public key");
    let line = text.lines().next().expect("comment line");
    let id = line.rsplit(' ').next().expect("key id");
    // minisign's comment drops leading zeros; hotfix prints all 16 digits.
    format!("{:016X}", u64::from_str_radix(id, 16).expect("hex key id"))
}

fn subject() -> Subject {
    Subject {
        hotfix: 1,
        kind: "hfx".into(),
        file: String::new(),
        sha256: String::new(),
        id: "fix-1".into(),
        target: "0123abcd".into(),
    }
}

impl Lab {
    fn new() -> Lab {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().to_path_buf();
        let dir = root.join("trusted.d");
        std::fs::create_dir(&dir).expect("mkdir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let key_id = genkey(&root.join("k.key"), &dir.join("k.pub"));
        let sk = trust::sign::read_secret(&root.join("k.key"), "").expect("read key");
        Lab {
            _tmp: tmp,
            root,
            dir,
            sk,
            key_id,
        }
    }

    fn patch(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.root.join(name);
        std::fs::write(&p, bytes).expect("write patch");
        p
    }

    fn signed(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.patch(name, bytes);
        trust::sign::sign(&p, &self.sk, subject()).expect("sign");
        p
    }

    fn verify(&self, p: &Path) -> trust::Result<trust::Verified> {
        TrustDir::load(&self.dir)?.verify(p)
    }
}

fn untrusted(e: &Error) {
    assert_eq!(e.status() as u8, 6, "{e}");
}

#[test]
fn a_signed_file_verifies_with_its_subject() {
    let lab = Lab::new();
    let p = lab.signed("a.hfx", b"patch bytes");
    let v = lab.verify(&p).expect("verified");
    assert_eq!(v.key_id, lab.key_id);
    assert_eq!(v.subject.id, "fix-1");
    assert_eq!(v.subject.file, "a.hfx");
    assert_eq!(v.subject.sha256, trust::sha256_hex(b"patch bytes"));
}

#[test]
fn unsigned_is_refused() {
    let lab = Lab::new();
    let p = lab.patch("a.hfx", b"x");
    let e = lab.verify(&p).expect_err("unsigned");
    assert!(matches!(e, Error::Unsigned { .. }), "{e}");
    assert!(e.to_string().contains("a.hfx.minisig"), "{e}");
    untrusted(&e);
}

#[test]
fn one_changed_byte_is_refused() {
    let lab = Lab::new();
    let p = lab.signed("a.hfx", b"patch bytes");
    std::fs::write(&p, b"patch bytez").expect("tamper");
    let e = lab.verify(&p).expect_err("tampered");
    assert!(matches!(e, Error::Tampered { .. }), "{e}");
    untrusted(&e);
}

#[test]
fn the_signature_of_another_file_is_refused() {
    let lab = Lab::new();
    let a = lab.signed("a.hfx", b"patch a");
    let b = lab.patch("b.hfx", b"patch b");
    std::fs::copy(trust::signature_path(&a), trust::signature_path(&b)).expect("copy");
    let e = lab.verify(&b).expect_err("other file");
    assert!(
        matches!(e, Error::OtherFile { ref signed_file, .. } if signed_file == "a.hfx"),
        "{e}"
    );
    untrusted(&e);
}

#[test]
fn an_unknown_key_is_refused() {
    let lab = Lab::new();
    let other = lab.root.join("other");
    std::fs::create_dir(&other).expect("mkdir");
    genkey(&other.join("o.key"), &other.join("o.pub"));
    let sk = trust::sign::read_secret(&other.join("o.key"), "").expect("key");
    let p = lab.patch("a.hfx", b"x");
    trust::sign::sign(&p, &sk, subject()).expect("sign");
    let e = lab.verify(&p).expect_err("unknown key");
    assert!(matches!(e, Error::UnknownKey { .. }), "{e}");
    untrusted(&e);
}

#[test]
fn a_revoked_key_is_refused() {
    let lab = Lab::new();
    let p = lab.signed("a.hfx", b"x");
    std::fs::write(
        lab.dir.join("revoked"),
        // As minisign -G prints it: lower or upper case, leading zeros dropped.
        format!(
            "# compromised\n{}\n",
            lab.key_id.to_lowercase().trim_start_matches('0')
        ),
    )
    .expect("revoke");
    let e = lab.verify(&p).expect_err("revoked");
    assert!(matches!(e, Error::RevokedKey { .. }), "{e}");
    untrusted(&e);
}

#[test]
fn an_edited_trusted_comment_is_refused() {
    let lab = Lab::new();
    let p = lab.signed("a.hfx", b"x");
    let s = trust::signature_path(&p);
    let t = std::fs::read_to_string(&s)
        .expect("sig")
        .replace("fix-1", "fix-2");
    std::fs::write(&s, t).expect("edit");
    let e = lab.verify(&p).expect_err("comment");
    assert!(matches!(e, Error::Comment { .. }), "{e}");
    untrusted(&e);
}

#[test]
fn a_truncated_signature_is_named() {
    let lab = Lab::new();
    let p = lab.signed("a.hfx", b"x");
    let s = trust::signature_path(&p);
    let t = std::fs::read_to_string(&s).expect("sig");
    for cut in [t.len() - 10, t.len() / 2, 5, 0] {
        std::fs::write(&s, &t[..cut]).expect("truncate");
        let e = lab.verify(&p).expect_err("truncated");
        assert!(matches!(e, Error::BadSignature { .. }), "cut {cut}: {e}");
        assert!(e.to_string().contains("a.hfx.minisig"), "{e}");
        untrusted(&e);
    }
}

#[test]
fn a_garbage_key_file_is_named() {
    let lab = Lab::new();
    let p = lab.signed("a.hfx", b"x");
    std::fs::write(
        lab.dir.join("junk.pub"),
        "untrusted comment: x\nnot base64 at all\n",
    )
    .expect("junk");
    let e = lab.verify(&p).expect_err("garbage key");
    assert!(
        matches!(e, Error::BadKey { ref path, .. } if path.ends_with("junk.pub")),
        "{e}"
    );
    std::fs::write(lab.dir.join("junk.pub"), [0xffu8, 0, 1, 2]).expect("binary junk");
    let e = lab.verify(&p).expect_err("garbage key");
    assert!(e.to_string().contains("junk.pub"), "{e}");
}

#[test]
fn a_garbage_revocation_list_is_named() {
    let lab = Lab::new();
    std::fs::write(lab.dir.join("revoked"), "not-a-key-id\n").expect("junk");
    let e = TrustDir::load(&lab.dir).expect_err("bad list");
    assert!(
        e.to_string().contains("revoked") && e.to_string().contains("line 1"),
        "{e}"
    );
}

#[test]
fn a_world_writable_or_missing_trust_dir_is_refused() {
    let lab = Lab::new();
    std::fs::set_permissions(&lab.dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let e = TrustDir::load(&lab.dir).expect_err("world-writable");
    assert!(e.to_string().contains("world-writable"), "{e}");
    std::fs::set_permissions(&lab.dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::set_permissions(
        lab.dir.join("k.pub"),
        std::fs::Permissions::from_mode(0o646),
    )
    .expect("chmod");
    let e = TrustDir::load(&lab.dir).expect_err("world-writable key");
    assert!(e.to_string().contains("k.pub"), "{e}");
    let e = TrustDir::load(&lab.root.join("nope")).expect_err("missing");
    assert!(
        e.to_string().contains("nope") && e.to_string().contains("unreadable"),
        "{e}"
    );
    untrusted(&e);
    let file = lab.patch("plain", b"x");
    let e = TrustDir::load(&file).expect_err("not a dir");
    assert!(e.to_string().contains("plain"), "{e}");
}

#[test]
fn the_minisign_tool_verifies_hotfix_signatures() {
    let lab = Lab::new();
    let p = lab.signed("t.hfx", b"tool");
    let v = lab.verify(&p).expect("verified");
    let tool = |p: &Path| {
        Command::new("minisign")
            .arg("-V")
            .arg("-p")
            .arg(lab.dir.join("k.pub"))
            .arg("-m")
            .arg(p)
            .output()
            .expect("minisign -V")
    };
    let out = tool(&p);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&v.subject.sha256));
    // And the tool rejects a changed byte too.
    std::fs::write(&p, b"tooL").expect("tamper");
    assert!(!tool(&p).status.success());
}

#[test]
fn a_short_global_signature_is_an_error_not_the_crates_panic() {
    let lab = Lab::new();
    let p = lab.signed("a.hfx", b"x");
    let s = trust::signature_path(&p);
    let text = std::fs::read_to_string(&s).expect("sig");
    let lines: Vec<&str> = text.lines().collect();
    // A fourth line of valid base64 that decodes to 3 bytes.
    let short = format!("{}\n{}\n{}\nAAAA\n", lines[0], lines[1], lines[2]);
    // The minisign crate alone parses it, then panics verifying it
    // (indexes the 64-byte signature): why parse_signature checks first.
    let sig = minisign::SignatureBox::from_string(&short).expect("the crate parses it");
    let pk = minisign::PublicKey::from_file(lab.dir.join("k.pub")).expect("key");
    let crate_result = std::panic::catch_unwind(|| {
        minisign::verify(&pk, &sig, std::io::Cursor::new(b"x"), true, false, false)
    });
    assert!(
        crate_result.is_err(),
        "minisign 0.7.9 no longer panics: the pre-check may go"
    );
    std::fs::write(&s, short).expect("write");
    let e = lab.verify(&p).expect_err("short");
    assert!(matches!(e, Error::BadSignature { .. }), "{e}");
}
