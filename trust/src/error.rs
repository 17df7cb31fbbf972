//! The one error type of `trust`. Every variant names the file concerned
//! (the patch, its signature, the key file, the trust directory or the audit
//! log); [`Error::status`] gives the CLI's exit status: 6 (untrusted) for
//! every reason a patch could not be verified (trust directory problems
//! included), 1 for an unreadable patch, signing and audit failures.

use patchgen::Status;
use std::path::PathBuf;

/// Errors of signing, verifying and checking the audit chain.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The patch has no signature file.
    #[error(
        "{patch}: unsigned: no signature {sig} (sign it with `hotfix sign`, or pass --allow-unsigned on a lab host)"
    )]
    Unsigned {
        /// The patch file.
        patch: PathBuf,
        /// The signature file looked for.
        sig: PathBuf,
    },
    /// The signature file cannot be parsed (truncated, garbage).
    #[error("signature {sig}: not a minisign signature: {detail}")]
    BadSignature {
        /// The signature file.
        sig: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// Signed by a key that is not in the trust directory.
    #[error("{patch}: signed by unknown key {key_id} (not in trust directory {dir})")]
    UnknownKey {
        /// The patch file.
        patch: PathBuf,
        /// The signing key id.
        key_id: String,
        /// The trust directory.
        dir: PathBuf,
    },
    /// Signed by a revoked key.
    #[error("{patch}: signed by revoked key {key_id} (listed in {list})")]
    RevokedKey {
        /// The patch file.
        patch: PathBuf,
        /// The signing key id.
        key_id: String,
        /// The revocation list.
        list: PathBuf,
    },
    /// The signature is that of another file.
    #[error("{patch}: signature {sig} is for another file ({signed_file}, sha256 {signed_hash})")]
    OtherFile {
        /// The patch file.
        patch: PathBuf,
        /// The signature file.
        sig: PathBuf,
        /// The file the trusted comment names.
        signed_file: String,
        /// The hash the trusted comment names.
        signed_hash: String,
    },
    /// The file does not match its signature (changed since it was signed).
    #[error(
        "{patch}: does not match signature {sig} by key {key_id}: the file was changed after it was signed"
    )]
    Tampered {
        /// The patch file.
        patch: PathBuf,
        /// The signature file.
        sig: PathBuf,
        /// The signing key id.
        key_id: String,
    },
    /// The signature verifies but its trusted comment is not hotfix's or
    /// does not describe this file.
    #[error("signature {sig}: trusted comment {detail}")]
    Comment {
        /// The signature file.
        sig: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The trust directory is missing, unreadable, world-writable or empty.
    #[error("trust directory {dir}: {detail}")]
    TrustDir {
        /// The directory (or the file in it) concerned.
        dir: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// A key file or the revocation list cannot be parsed.
    #[error("key file {path}: {detail}")]
    BadKey {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// Reading a file failed.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Signing (or generating a key pair) failed.
    #[error("signing {path}: {detail}")]
    Sign {
        /// The file being signed, or the key file.
        path: PathBuf,
        /// What failed.
        detail: String,
    },
    /// The audit chain is broken at a line.
    #[error("audit log {path}: line {line}: {detail}")]
    Chain {
        /// The log file.
        path: PathBuf,
        /// The first broken line (1-based).
        line: usize,
        /// What is wrong.
        detail: String,
    },
}

impl Error {
    /// The exit status this error maps to.
    pub fn status(&self) -> Status {
        match self {
            Error::Sign { .. } | Error::Chain { .. } | Error::Read { .. } => Status::Error,
            _ => Status::Untrusted,
        }
    }
}

/// Result of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
