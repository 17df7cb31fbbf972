//! The append-only audit log of host plans: one JSON document per line
//! ("JSON lines"), one line per step done (or refused, or failed).
//!
//! Model: a [`Log`] is opened with `O_APPEND | O_CREAT` (mode 0640) and never
//! truncated, read back or rewritten by hotfix; each [`Record`] is serialized
//! first and written with a single `write` of the whole line, so concurrent
//! hotfix runs interleave whole lines, never parts of lines. Every record
//! says who (user, uid, pid, host), what (step, target), when (RFC 3339, UTC,
//! milliseconds), which patch (path and SHA-256 of its bytes) and the result.
//! A record that cannot be written stops the plan ([`Error::Audit`]): no step
//! runs unlogged.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Default location of the audit log.
pub const DEFAULT_PATH: &str = "/var/log/hotfix/audit.jsonl";

/// One line of the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// When (RFC 3339, UTC).
    pub time: String,
    /// User name (or the uid in decimal when it has no name).
    pub user: String,
    /// Numeric user id.
    pub uid: u32,
    /// Process id of the hotfix run.
    pub pid: u32,
    /// Host name.
    pub host: String,
    /// Step kind: `plan`, `apply-live`, `drain`, `update`, `bring-back`, `done`.
    pub step: String,
    /// What the step does, in words (names patch, pid, sockets).
    pub what: String,
    /// Patch file concerned, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch: Option<PathBuf>,
    /// Hex SHA-256 of the patch file's bytes, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch_hash: Option<String>,
    /// Result: `ok`, `unsafe`, `refused`, `mismatch`, `failed`, `started`.
    pub result: String,
    /// Details: the error, or figures (pause window, downtime).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// Who runs hotfix, stamped on every record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Who {
    /// User name.
    pub user: String,
    /// Numeric uid.
    pub uid: u32,
    /// Process id.
    pub pid: u32,
    /// Host name.
    pub host: String,
}

impl Who {
    /// The current process's identity.
    pub fn current() -> Who {
        let uid = nix::unistd::getuid();
        let user = nix::unistd::User::from_uid(uid)
            .ok()
            .flatten()
            .map(|u| u.name)
            .unwrap_or_else(|| uid.to_string());
        let host = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "unknown".into());
        Who {
            user,
            uid: uid.as_raw(),
            pid: std::process::id(),
            host,
        }
    }
}

/// An open audit log.
#[derive(Debug)]
pub struct Log {
    path: PathBuf,
    file: File,
    who: Who,
}

impl Log {
    /// Opens (creating it and its directory if needed) the log at `path`.
    pub fn open(path: &Path) -> Result<Log> {
        let err = |source| Error::Audit {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o640)
            .open(path)
            .map_err(err)?;
        Ok(Log {
            path: path.to_path_buf(),
            file,
            who: Who::current(),
        })
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record (one line, one write).
    pub fn record(
        &mut self,
        step: &str,
        what: &str,
        patch: Option<(&Path, &str)>,
        result: &str,
        detail: &str,
    ) -> Result<Record> {
        let rec = Record {
            time: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            user: self.who.user.clone(),
            uid: self.who.uid,
            pid: self.who.pid,
            host: self.who.host.clone(),
            step: step.into(),
            what: what.into(),
            patch: patch.map(|p| p.0.to_path_buf()),
            patch_hash: patch.map(|p| p.1.to_string()),
            result: result.into(),
            detail: detail.into(),
        };
        let mut line = serde_json::to_vec(&rec).map_err(|e| Error::Audit {
            path: self.path.clone(),
            source: std::io::Error::other(e),
        })?;
        line.push(b'\n');
        self.file.write_all(&line).map_err(|source| Error::Audit {
            path: self.path.clone(),
            source,
        })?;
        Ok(rec)
    }
}

/// Reads every record of a log (for `hotfix host log` and tests).
pub fn read(path: &Path) -> Result<Vec<Record>> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Audit {
        path: path.to_path_buf(),
        source,
    })?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| Error::Audit {
                path: path.to_path_buf(),
                source: std::io::Error::other(format!("line {}: {e}", i + 1)),
            })
        })
        .collect()
}
