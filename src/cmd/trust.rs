//! The trust gate and audit records shared by the commands that change a
//! target (`apply`, `revert`, `host apply`).
//!
//! Model: [`admit`] runs before a command reads its target: it verifies the
//! patch's detached signature against the trust directory ([`trust`]),
//! or lets an unsigned patch through only under `--allow-unsigned` (which
//! is then logged, on stderr and in the audit log). [`Audit`] appends one
//! chained line per apply, revert or refusal to the audit log
//! ([`hvpatch::audit`]); the log is opened before anything else, so a
//! command whose record cannot be written changes nothing.

use hvpatch::audit::{Event, Log};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Where patches must be signed from (flags of `apply` and `host apply`).
#[derive(Debug, Clone, clap::Args)]
pub struct TrustArgs {
    /// Directory of trusted minisign public keys (`*.pub`) and of the
    /// revocation list (`revoked`, one key id per line).
    #[arg(long, env = "HOTFIX_TRUST_DIR", default_value = trust::DEFAULT_TRUST_DIR)]
    pub trust_dir: PathBuf,
    /// Accept a patch without a signature (lab and test hosts only; logged
    /// as such). A patch that has a signature is still verified.
    #[arg(long, env = "HOTFIX_ALLOW_UNSIGNED", value_parser = clap::builder::FalseyValueParser::new())]
    pub allow_unsigned: bool,
}

/// Where events are recorded.
#[derive(Debug, Clone, clap::Args)]
pub struct AuditArgs {
    /// Append-only audit log (JSON lines, hash-chained).
    #[arg(long, env = "HOTFIX_AUDIT_LOG", default_value = hvpatch::audit::DEFAULT_PATH)]
    pub audit_log: PathBuf,
}

/// A patch let through the gate.
#[derive(Debug, Clone)]
pub struct Admitted {
    /// The patch file.
    pub path: PathBuf,
    /// Hex SHA-256 of its bytes (empty if unreadable: the command then
    /// fails reading it, naming it).
    pub hash: String,
    /// The signing key id, or `unsigned`.
    pub key_id: String,
    /// The verified trusted comment, if signed.
    pub subject: Option<trust::Subject>,
    /// How long the verification took (µs), outside any pause window.
    pub verify_us: u64,
}

/// Verifies `patch` (see the module doc). Reads only the patch, its
/// signature and the trust directory.
pub fn admit(patch: &Path, t: &TrustArgs) -> Result<Admitted, trust::Error> {
    let start = Instant::now();
    let sig = trust::signature_path(patch);
    if t.allow_unsigned && !sig.exists() {
        eprintln!(
            "hotfix: warning: {} is unsigned; allowed by --allow-unsigned",
            patch.display()
        );
        let hash = std::fs::read(patch)
            .map(|b| trust::sha256_hex(&b))
            .unwrap_or_default();
        return Ok(Admitted {
            path: patch.to_path_buf(),
            hash,
            key_id: "unsigned".into(),
            subject: None,
            verify_us: 0,
        });
    }
    if !sig.exists() {
        std::fs::metadata(patch).map_err(|source| trust::Error::Read {
            path: patch.to_path_buf(),
            source,
        })?;
    }
    let dir = trust::TrustDir::load(&t.trust_dir)?;
    let v = dir.verify(patch)?;
    let verify_us = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
    tracing::info!(
        "{}: signature by key {} ({}) verified in {verify_us} us",
        patch.display(),
        v.key_id,
        v.key_file.display()
    );
    Ok(Admitted {
        path: patch.to_path_buf(),
        hash: v.subject.sha256.clone(),
        key_id: v.key_id,
        subject: Some(v.subject),
        verify_us,
    })
}

/// The audit log of one command.
pub struct Audit {
    log: Log,
}

impl Audit {
    /// Opens the log (before anything is changed).
    pub fn open(a: &AuditArgs) -> anyhow::Result<Audit> {
        Ok(Audit {
            log: Log::open(&a.audit_log)?,
        })
    }

    /// Records a refused patch (the gate said no).
    pub fn refused(&mut self, patch: &Path, target: &str, e: &trust::Error) -> anyhow::Result<()> {
        let hash = std::fs::read(patch)
            .map(|b| trust::sha256_hex(&b))
            .unwrap_or_default();
        self.log.event(&Event {
            step: "refuse",
            what: format!("apply {} to {target}", patch.display()),
            patch: Some((patch, &hash)),
            target: Some(target.into()),
            result: "untrusted",
            status: Some(e.status() as u8),
            detail: e.to_string(),
            ..Event::default()
        })?;
        Ok(())
    }

    /// Records the outcome of a command on `target` (`apply` or `revert`).
    pub fn outcome(
        &mut self,
        step: &str,
        what: String,
        target: &str,
        admitted: Option<&Admitted>,
        result: &anyhow::Result<u8>,
    ) -> anyhow::Result<()> {
        let (status, mut detail) = match result {
            Ok(s) => (*s, String::new()),
            Err(e) => (crate::status_of(e) as u8, crate::message(e)),
        };
        if let Some(s) = admitted.and_then(|a| a.subject.as_ref().map(|s| (a, s))) {
            let (a, s) = s;
            let sep = if detail.is_empty() { "" } else { "; " };
            detail = format!(
                "signed for {} {} (target {}), verified in {} us{sep}{detail}",
                s.kind, s.id, s.target, a.verify_us
            );
        }
        let word = match status {
            0 => "ok",
            3 => "unsafe",
            4 => "mismatch",
            6 => "untrusted",
            _ => "failed",
        };
        let patch = admitted.map(|a| (a.path.as_path(), a.hash.as_str()));
        self.log.event(&Event {
            step,
            what,
            patch,
            target: Some(target.into()),
            key_id: admitted.map(|a| a.key_id.clone()),
            result: word,
            status: Some(status),
            detail,
        })?;
        Ok(())
    }
}

/// Verifies `patch` for a command on `target`, recording a refusal.
pub fn gate(
    patch: &Path,
    target: &str,
    t: &TrustArgs,
    audit: &mut Audit,
) -> anyhow::Result<Admitted> {
    match admit(patch, t) {
        Ok(a) => Ok(a),
        Err(e) => {
            audit.refused(patch, target, &e)?;
            Err(e.into())
        }
    }
}
