//! A host's trust directory: the public keys it accepts patches from, and
//! the key ids it no longer accepts; verification of one patch against it.
//!
//! Model: a directory (default [`DEFAULT_TRUST_DIR`]) holding minisign public
//! key files named `*.pub` and an optional revocation list [`REVOKED_FILE`]
//! (one key id per line, up to 16 hex digits as minisign prints it, `#`
//! starts a comment). The directory
//! and its files must not be world-writable (anyone could add a key). Every
//! file in it is read and parsed when it is loaded: a garbage key file is an
//! error naming it, never skipped.
//!
//! Invariants: [`TrustDir::verify`] only reads the patch and its signature;
//! it succeeds only when the signature parses, its key is in the directory
//! and not revoked, the whole file and the trusted comment verify under that
//! key, and the comment is hotfix's and names this file's SHA-256.

use crate::error::{Error, Result};
use crate::subject::Subject;
use minisign::{PublicKey, PublicKeyBox, SignatureBox};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Default trust directory.
pub const DEFAULT_TRUST_DIR: &str = "/etc/hotfix/trusted.d";
/// Name of the revocation list inside the trust directory.
pub const REVOKED_FILE: &str = "revoked";

/// A loaded trust directory.
#[derive(Debug)]
pub struct TrustDir {
    dir: PathBuf,
    keys: BTreeMap<String, (PathBuf, PublicKey)>,
    revoked: BTreeSet<String>,
}

/// What a successful verification established.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Verified {
    /// Id of the key that signed (16 hex digits).
    pub key_id: String,
    /// The key file of that key.
    pub key_file: PathBuf,
    /// The signature file.
    pub signature: PathBuf,
    /// The signed trusted comment.
    pub subject: Subject,
}

fn world_writable(dir: &Path, path: &Path) -> Result<()> {
    let md = std::fs::metadata(path).map_err(|e| Error::TrustDir {
        dir: path.to_path_buf(),
        detail: format!("unreadable: {e}"),
    })?;
    if md.permissions().mode() & 0o002 != 0 {
        return Err(Error::TrustDir {
            dir: path.to_path_buf(),
            detail: format!(
                "world-writable (mode {:o}): anyone could add a key; chmod o-w it (trust directory {})",
                md.permissions().mode() & 0o7777,
                dir.display()
            ),
        });
    }
    Ok(())
}

fn read_key(path: &Path) -> Result<PublicKey> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::BadKey {
        path: path.to_path_buf(),
        detail: format!("unreadable: {e}"),
    })?;
    parse_key(path, &text)
}

/// Parses the text of a minisign public key file (`path` for errors).
pub fn parse_key(path: &Path, text: &str) -> Result<PublicKey> {
    PublicKeyBox::from_string(text)
        .and_then(PublicKeyBox::into_public_key)
        .map_err(|e| Error::BadKey {
            path: path.to_path_buf(),
            detail: format!("not a minisign public key: {e}"),
        })
}

fn read_revoked(path: &Path) -> Result<BTreeSet<String>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeSet::new()),
        Err(e) => {
            return Err(Error::BadKey {
                path: path.to_path_buf(),
                detail: format!("unreadable: {e}"),
            });
        }
    };
    parse_revoked(path, &text)
}

/// Parses the text of a revocation list (`path` for errors).
pub fn parse_revoked(path: &Path, text: &str) -> Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    for (i, line) in text.lines().enumerate() {
        let id = line.split('#').next().unwrap_or("").trim();
        if id.is_empty() {
            continue;
        }
        // minisign prints key ids without leading zeros in some places
        // (`minisign -G`'s comment) and with them in others: both are taken.
        let parsed = (id.len() <= 16 && id.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| u64::from_str_radix(id, 16).ok())
            .flatten();
        let Some(n) = parsed else {
            return Err(Error::BadKey {
                path: path.to_path_buf(),
                detail: format!(
                    "line {}: {id:?} is not a key id (up to 16 hex digits)",
                    i + 1
                ),
            });
        };
        out.insert(format!("{n:016X}"));
    }
    Ok(out)
}

impl TrustDir {
    /// Loads the trust directory `dir`: every `*.pub` key and the revocation
    /// list. Errors name the directory or file at fault.
    pub fn load(dir: &Path) -> Result<TrustDir> {
        let tdir = |detail: String| Error::TrustDir {
            dir: dir.to_path_buf(),
            detail,
        };
        world_writable(dir, dir)?;
        let entries = std::fs::read_dir(dir).map_err(|e| tdir(format!("unreadable: {e}")))?;
        let mut keys = BTreeMap::new();
        for entry in entries {
            let path = entry.map_err(|e| tdir(format!("unreadable: {e}")))?.path();
            if path.extension().is_none_or(|e| e != "pub") {
                continue;
            }
            world_writable(dir, &path)?;
            let pk = read_key(&path)?;
            keys.insert(crate::key_id(pk.keynum()), (path, pk));
        }
        let list = dir.join(REVOKED_FILE);
        if list.exists() {
            world_writable(dir, &list)?;
        }
        let revoked = read_revoked(&list)?;
        if keys.is_empty() {
            return Err(tdir("holds no public key (*.pub)".into()));
        }
        Ok(TrustDir {
            dir: dir.to_path_buf(),
            keys,
            revoked,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Ids of the trusted (loaded, not revoked) keys.
    pub fn trusted_ids(&self) -> Vec<&str> {
        self.keys
            .keys()
            .filter(|k| !self.revoked.contains(*k))
            .map(String::as_str)
            .collect()
    }

    /// Verifies `patch` against its detached signature `PATCH.minisig`.
    pub fn verify(&self, patch: &Path) -> Result<Verified> {
        let sig_path = crate::signature_path(patch);
        let sig_text = read_signature(patch, &sig_path)?;
        let bytes = std::fs::read(patch).map_err(|source| Error::Read {
            path: patch.to_path_buf(),
            source,
        })?;
        let sig = parse_signature(&sig_path, &sig_text)?;
        let key_id = crate::key_id(sig.keynum());
        if self.revoked.contains(&key_id) {
            return Err(Error::RevokedKey {
                patch: patch.to_path_buf(),
                key_id,
                list: self.dir.join(REVOKED_FILE),
            });
        }
        let Some((key_file, pk)) = self.keys.get(&key_id) else {
            return Err(Error::UnknownKey {
                patch: patch.to_path_buf(),
                key_id,
                dir: self.dir.clone(),
            });
        };
        let sha = crate::sha256_hex(&bytes);
        if let Err(e) = minisign::verify(pk, &sig, Cursor::new(&bytes), true, false, false) {
            return Err(mismatch(
                patch,
                &sig_path,
                &sig,
                key_id,
                &sha,
                &e.to_string(),
            ));
        }
        let comment = sig.trusted_comment().unwrap_or_default();
        let subject = Subject::from_comment(&comment).ok_or_else(|| Error::Comment {
            sig: sig_path.clone(),
            detail: format!("{comment:?} is not hotfix's (sign with `hotfix sign`)"),
        })?;
        if subject.sha256 != sha {
            return Err(Error::Comment {
                sig: sig_path,
                detail: format!(
                    "names sha256 {}, but {} has {sha}",
                    subject.sha256,
                    patch.display()
                ),
            });
        }
        Ok(Verified {
            key_id,
            key_file: key_file.clone(),
            signature: sig_path,
            subject,
        })
    }
}

fn read_signature(patch: &Path, sig_path: &Path) -> Result<String> {
    match std::fs::read(sig_path) {
        Ok(b) => String::from_utf8(b).map_err(|_| Error::BadSignature {
            sig: sig_path.to_path_buf(),
            detail: "not text".into(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::Unsigned {
            patch: patch.to_path_buf(),
            sig: sig_path.to_path_buf(),
        }),
        Err(source) => Err(Error::Read {
            path: sig_path.to_path_buf(),
            source,
        }),
    }
}

/// Parses a signature file, checking first what the minisign crate does not
/// (a global signature shorter than 64 bytes would make it index out of
/// bounds): four lines, the fourth 88 base64 characters.
pub fn parse_signature(sig_path: &Path, text: &str) -> Result<SignatureBox> {
    let bad = |detail: String| Error::BadSignature {
        sig: sig_path.to_path_buf(),
        detail,
    };
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() < 4 {
        return Err(bad(format!(
            "truncated: {} line(s), a minisign signature has 4",
            lines.len()
        )));
    }
    let global = lines[3].trim();
    let b64 = |c: u8| c.is_ascii_alphanumeric() || c == b'+' || c == b'/';
    if global.len() != 88 || !global.ends_with("==") || !global.bytes().take(86).all(b64) {
        return Err(bad(format!(
            "line 4 (global signature) is {} characters, not 88 of base64: truncated?",
            global.len()
        )));
    }
    SignatureBox::from_string(text).map_err(|e| bad(e.to_string()))
}

fn mismatch(
    patch: &Path,
    sig_path: &Path,
    sig: &SignatureBox,
    key_id: String,
    sha: &str,
    detail: &str,
) -> Error {
    let claimed = sig
        .trusted_comment()
        .ok()
        .and_then(|c| Subject::from_comment(&c));
    let name = patch
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if detail.contains("omment") {
        return Error::Comment {
            sig: sig_path.to_path_buf(),
            detail: "was changed after signing (its signature does not verify)".into(),
        };
    }
    match claimed {
        Some(s) if s.file != name && s.sha256 != sha => Error::OtherFile {
            patch: patch.to_path_buf(),
            sig: sig_path.to_path_buf(),
            signed_file: s.file,
            signed_hash: s.sha256,
        },
        _ => Error::Tampered {
            patch: patch.to_path_buf(),
            sig: sig_path.to_path_buf(),
            key_id,
        },
    }
}
