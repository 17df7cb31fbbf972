//! Making signatures: the detached `PATCH.minisig` of a patch file.
//!
//! Model: keys are minisign's own files, made by the tool users already
//! trust (`minisign -G`, Debian package `minisign`), which can also check
//! what hotfix signed (`minisign -V -p KEY.pub -m PATCH`). No key generation
//! here: the minisign crate's unencrypted key pairs are not readable by the
//! tool, and its encrypted ones need a 1 GiB scrypt run. The secret key may be encrypted with
//! a password (scrypt, as minisign does); the password is passed in, never
//! prompted for here. Invariant: [`sign`] writes the signature file only
//! after it verified the new signature with the key pair's public half when
//! one is given, and writes it whole (a temporary file renamed over it).

use crate::error::{Error, Result};
use crate::subject::Subject;
use minisign::{PublicKey, SecretKey, SecretKeyBox};
use std::io::Cursor;
use std::path::{Path, PathBuf};

/// Reads a secret key file. An unencrypted key (`minisign -G -W`: KDF
/// algorithm zero; minisign 0.11 leaves its checksum zero, which the
/// minisign crate would take for a wrong password) is decoded as is; an
/// encrypted one is decrypted with `password`.
pub fn read_secret(path: &Path, password: &str) -> Result<SecretKey> {
    use ct_codecs::{Base64, Decoder};
    let err = |detail: String| Error::Sign {
        path: path.to_path_buf(),
        detail,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let line = text
        .lines()
        .nth(1)
        .ok_or_else(|| err("not a minisign secret key: no key line".into()))?;
    let bytes = Base64::decode_to_vec(line.trim(), None)
        .map_err(|e| err(format!("not a minisign secret key: {e}")))?;
    if bytes.len() < 4 || &bytes[..2] != b"Ed" {
        return Err(err("not a minisign Ed25519 secret key".into()));
    }
    if bytes[2..4] == [0, 0] {
        return SecretKey::from_bytes(&bytes)
            .map_err(|e| err(format!("not a minisign secret key: {e}")));
    }
    if password.is_empty() {
        return Err(err(
            "an encrypted key: give its password in HOTFIX_SIGN_PASSWORD".into(),
        ));
    }
    let sk_box = SecretKeyBox::from_string(&text).map_err(|e| err(e.to_string()))?;
    sk_box
        .into_secret_key(Some(password.to_string()))
        .map_err(|e| err(e.to_string()))
}

/// Signs `patch` with `sk`: writes `PATCH.minisig` whose trusted comment is
/// `subject` (its `file` and `sha256` are filled here from the file).
/// Returns the signature path and the completed subject.
pub fn sign(
    patch: &Path,
    sk: &SecretKey,
    mut subject: Subject,
) -> Result<(PathBuf, Subject, String)> {
    let err = |detail: String| Error::Sign {
        path: patch.to_path_buf(),
        detail,
    };
    let bytes = std::fs::read(patch).map_err(|e| err(e.to_string()))?;
    subject.file = patch
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    subject.sha256 = crate::sha256_hex(&bytes);
    let pk = PublicKey::from_secret_key(sk).map_err(|e| err(e.to_string()))?;
    let key_id = crate::key_id(pk.keynum());
    let untrusted = format!("hotfix signature of {} by key {key_id}", subject.file);
    let sig = minisign::sign(
        Some(&pk),
        sk,
        Cursor::new(&bytes),
        Some(&subject.to_comment()),
        Some(&untrusted),
    )
    .map_err(|e| err(e.to_string()))?;
    let path = crate::signature_path(patch);
    let mut tmp = path.clone().into_os_string();
    tmp.push(".tmp");
    std::fs::write(&tmp, sig.into_string()).map_err(|e| err(format!("{}: {e}", path.display())))?;
    std::fs::rename(&tmp, &path).map_err(|e| err(format!("{}: {e}", path.display())))?;
    Ok((path, subject, key_id))
}
