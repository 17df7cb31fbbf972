//! The append-only, tamper-evident audit log of hotfix: one JSON document
//! per line ("JSON lines"), one line per step of a host plan and per apply,
//! revert, refusal and crash-guard event of the CLI.
//!
//! Model: every record is appended by opening the file with `O_APPEND |
//! O_CREAT` (mode 0640), taking an exclusive `flock`, reading the last line,
//! and writing the whole new line in one `write`; the file is never
//! truncated or rewritten by hotfix. Each line's `prev` is the SHA-256 of the
//! line before it ([`trust::chain`]), so an edited, removed or inserted line
//! is found by `hotfix audit verify`. A rotated log keeps the chain: when
//! the file is empty, the first line links to the last line of `PATH.1`
//! (logrotate's name for the previous file; see docs/trust.md).
//!
//! Every record says who (user, uid, pid, host), what (step, target), when
//! (RFC 3339, UTC, milliseconds), which patch (path, SHA-256 of its bytes,
//! signing key id), the result and the exit status. A record that cannot be
//! written stops what it records ([`Error::Audit`]): no step runs unlogged.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
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
    /// The target: `pid N`, `kernel`, `xen`, or the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Id of the key whose signature was verified, or `unsigned` when an
    /// unsigned patch was let through by `--allow-unsigned`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// Exit status of the command this record ends, when it ends one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u8>,
    /// SHA-256 of the previous line ([`trust::chain`]).
    #[serde(default)]
    pub prev: String,
}

/// One CLI event to record (apply, revert, refusal, guard).
#[derive(Debug, Clone, Default)]
pub struct Event<'a> {
    /// `apply`, `revert`, `refuse`, `guard`.
    pub step: &'a str,
    /// What, in words.
    pub what: String,
    /// Patch file and its SHA-256.
    pub patch: Option<(&'a Path, &'a str)>,
    /// The target (`pid N`, `kernel`, `xen`).
    pub target: Option<String>,
    /// Signing key id, or `unsigned`.
    pub key_id: Option<String>,
    /// `ok`, `refused`, `untrusted`, `unsafe`, `mismatch`, `failed`...
    pub result: &'a str,
    /// Exit status.
    pub status: Option<u8>,
    /// Details (the error, figures).
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
        // Opened once here so that an unwritable log stops the caller before
        // it changes anything; each record opens it again under a lock.
        OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o640)
            .open(path)
            .map_err(err)?;
        Ok(Log {
            path: path.to_path_buf(),
            who: Who::current(),
        })
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record of a host-plan step (one line, one write).
    pub fn record(
        &mut self,
        step: &str,
        what: &str,
        patch: Option<(&Path, &str)>,
        result: &str,
        detail: &str,
    ) -> Result<Record> {
        self.event(&Event {
            step,
            what: what.into(),
            patch,
            result,
            detail: detail.into(),
            ..Event::default()
        })
    }

    /// Appends one event (one line, one write, chained to the last line).
    pub fn event(&mut self, ev: &Event<'_>) -> Result<Record> {
        let mut rec = Record {
            time: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            user: self.who.user.clone(),
            uid: self.who.uid,
            pid: self.who.pid,
            host: self.who.host.clone(),
            step: ev.step.into(),
            what: ev.what.clone(),
            patch: ev.patch.map(|p| p.0.to_path_buf()),
            patch_hash: ev.patch.map(|p| p.1.to_string()),
            result: ev.result.into(),
            detail: ev.detail.clone(),
            target: ev.target.clone(),
            key_id: ev.key_id.clone(),
            status: ev.status,
            prev: String::new(),
        };
        append(&self.path, &mut rec).map_err(|source| Error::Audit {
            path: self.path.clone(),
            source,
        })?;
        Ok(rec)
    }
}

/// Under an exclusive lock: links `rec` to the last line and appends it.
fn append(path: &Path, rec: &mut Record) -> std::io::Result<()> {
    let file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o640)
        .open(path)?;
    let mut file = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| std::io::Error::from(e))?;
    let (last, ends_with_newline) = last_line(&mut file)?;
    let last = match last {
        Some(l) => Some(l),
        None => last_line_of(&rotated(path))?,
    };
    rec.prev = trust::chain::link(last.as_deref());
    let mut line = Vec::new();
    if !ends_with_newline {
        line.push(b'\n');
    }
    line.extend(serde_json::to_vec(&rec).map_err(std::io::Error::other)?);
    line.push(b'\n');
    file.write_all(&line)
}

/// The previous (rotated) file of a log: `PATH.1`.
pub fn rotated(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(".1");
    PathBuf::from(s)
}

fn last_line_of(path: &Path) -> std::io::Result<Option<String>> {
    match File::open(path) {
        Ok(mut f) => Ok(last_line(&mut f)?.0),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The last line of a file (without its newline) and whether the file ends
/// with a newline (true for an empty file). Reads only the tail.
fn last_line(f: &mut File) -> std::io::Result<(Option<String>, bool)> {
    let len = f.seek(SeekFrom::End(0))?;
    if len == 0 {
        return Ok((None, true));
    }
    let mut back = 4096u64;
    loop {
        let start = len.saturating_sub(back);
        f.seek(SeekFrom::Start(start))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        let complete = buf.last() == Some(&b'\n');
        let body = if complete {
            &buf[..buf.len() - 1]
        } else {
            &buf[..]
        };
        if let Some(i) = body.iter().rposition(|b| *b == b'\n') {
            return Ok((
                Some(String::from_utf8_lossy(&body[i + 1..]).into()),
                complete,
            ));
        }
        if start == 0 {
            return Ok((Some(String::from_utf8_lossy(body).into()), complete));
        }
        back *= 4;
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
