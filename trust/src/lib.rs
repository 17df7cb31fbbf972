//! `trust`: what hotfix believes about a patch file before it touches a
//! target, and the tamper-evident chain of its audit log.
//!
//! Model: a patch file `P` is signed by a detached minisign signature
//! `P.minisig` (Ed25519 over the BLAKE2b-512 hash of the whole file, plus a
//! signed "trusted comment" naming the file, its SHA-256, the patch id and
//! its target: [`Subject`]). A host trusts the public keys in its trust
//! directory ([`TrustDir`], default [`DEFAULT_TRUST_DIR`]) minus the key ids
//! listed in its revocation list. [`TrustDir::verify`] either returns the
//! verified [`Verified`] facts or an [`Error`] whose [`Error::status`] is
//! [`patchgen::Status::Untrusted`] (exit 6).
//!
//! Invariants: nothing here writes outside the signature file it is asked to
//! create ([`sign::sign`]); reading is
//! the only thing done to a patch. The audit chain ([`chain`]) is pure: it
//! hashes and checks lines, the logger (hvpatch::audit) writes them.

pub mod chain;
pub mod dir;
pub mod error;
pub mod sign;
pub mod subject;

pub use dir::{DEFAULT_TRUST_DIR, REVOKED_FILE, TrustDir, Verified};
pub use error::{Error, Result};
pub use subject::Subject;

/// The detached signature file of a patch: `PATCH.minisig` (minisign's name).
pub fn signature_path(patch: &std::path::Path) -> std::path::PathBuf {
    let mut s = patch.as_os_str().to_os_string();
    s.push(".minisig");
    std::path::PathBuf::from(s)
}

/// Hex SHA-256 of some bytes (patch hashes in comments and the audit log).
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// A minisign key id as minisign prints it: 16 upper-case hex digits of the
/// little-endian 8-byte key number.
pub fn key_id(keynum: &[u8]) -> String {
    let mut b = [0u8; 8];
    let n = keynum.len().min(8);
    b[..n].copy_from_slice(&keynum[..n]);
    format!("{:016X}", u64::from_le_bytes(b))
}
