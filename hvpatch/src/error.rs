//! The one error type of `hvpatch`. Every variant names what it concerns: the
//! QMP socket (and so the VM), the destination, the patch file, the pid or the
//! audit log; [`Error::status`] gives the CLI's exit status.
//!
//! Invariant of the migration errors ([`Error::Migration`]): they are returned
//! only after the migration was cancelled and the VM's run state on the
//! source was checked; `source_status` is that state (`running` means nothing
//! was lost).

use patchgen::Status;
use std::path::PathBuf;
use std::time::Duration;

/// Errors of QMP, draining by live migration, and host plans.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Connecting to a QMP socket failed.
    #[error("QMP socket {socket}: cannot connect: {source}")]
    Connect {
        /// The QMP socket.
        socket: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Reading from or writing to a QMP socket failed (QEMU gone?).
    #[error("QMP socket {socket}: {source}")]
    Io {
        /// The QMP socket.
        socket: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The peer does not speak QMP as expected.
    #[error("QMP socket {socket}: protocol error: {detail}")]
    Protocol {
        /// The QMP socket.
        socket: PathBuf,
        /// What was wrong.
        detail: String,
    },
    /// QEMU answered a command with an error.
    #[error("QMP socket {socket}: {command} failed: {class}: {desc}")]
    Command {
        /// The QMP socket.
        socket: PathBuf,
        /// The command executed.
        command: String,
        /// QMP error class (e.g. `GenericError`).
        class: String,
        /// QEMU's description.
        desc: String,
    },
    /// QEMU did not answer or reach a state in time.
    #[error("QMP socket {socket}: no {what} after {after:?}")]
    Timeout {
        /// The QMP socket.
        socket: PathBuf,
        /// What was awaited.
        what: String,
        /// How long we waited.
        after: Duration,
    },
    /// A VM (or destination) is not in the run state the operation needs.
    #[error("QMP socket {socket}: VM is {status}, expected {expected}")]
    State {
        /// The QMP socket.
        socket: PathBuf,
        /// Its run state (`query-status`).
        status: String,
        /// The state(s) expected.
        expected: String,
    },
    /// A migration failed, timed out, or the destination did not take over.
    /// The migration was cancelled (or had completed, see `reason`) and the
    /// VM's state on the source checked.
    #[error("drain of VM {vm} to {dest} failed: {reason}; VM is {source_status} on the source")]
    Migration {
        /// The source QMP socket (the VM).
        vm: PathBuf,
        /// The destination QMP socket.
        dest: PathBuf,
        /// Why it failed (QEMU's error, or the timeout).
        reason: String,
        /// The VM's run state on the source after the cancel.
        source_status: String,
    },
    /// Finding the process behind a QMP socket, or reading it in /proc, failed.
    #[error("QMP socket {socket}: cannot identify its QEMU process: {detail}")]
    Process {
        /// The QMP socket.
        socket: PathBuf,
        /// What failed.
        detail: String,
    },
    /// Reading a patch file failed.
    #[error("patch {path}: {detail}")]
    Patch {
        /// The patch file.
        path: PathBuf,
        /// What failed.
        detail: String,
    },
    /// A process patch targets no object mapped by any VMM process given.
    #[error("patch {patch}: no VMM process of this host maps its target (build-id {build_ids})")]
    NoTarget {
        /// The patch file.
        patch: PathBuf,
        /// The build-ids it targets.
        build_ids: String,
    },
    /// A live patch was refused (unsafe now, mismatch, or unpatchable) and the
    /// plan could not fall back to a drain; nothing was changed by it.
    #[error("patch {patch} on {target}: {source}")]
    Live {
        /// The patch file.
        patch: PathBuf,
        /// The target (`pid N (comm)` or `kernel`).
        target: String,
        /// The loader's refusal.
        source: Box<loader::Error>,
    },
    /// The fallback's update command failed.
    #[error("update command `{command}` failed: {detail}")]
    Update {
        /// The command (run by `sh -c`).
        command: String,
        /// Exit status or spawn error.
        detail: String,
    },
    /// Writing the audit log failed: the plan stops (no unlogged step).
    #[error("audit log {path}: {source}")]
    Audit {
        /// The audit log.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A Xen hypervisor live-patch operation failed ([`crate::xen`]); the
    /// inner error names the payload and the hypercall.
    #[error(transparent)]
    Xen(#[from] crate::xen::Error),
    /// Inconsistent request (for example more VMs than destinations).
    #[error("{0}")]
    Usage(String),
}

impl Error {
    /// The exit status this error maps to.
    pub fn status(&self) -> Status {
        match self {
            Error::Usage(_) => Status::Usage,
            Error::NoTarget { .. } => Status::Mismatch,
            Error::Live { source, .. } => source.status(),
            Error::Xen(e) => e.status(),
            _ => Status::Error,
        }
    }
}

/// Result of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
