//! Errors of the Xen live-patch driver. Every variant names the payload (file
//! or name in the hypervisor) and, where one is involved, the hypercall; the
//! refusals say whether anything was changed (it never is: a payload that was
//! uploaded and then refused is unloaded again before the error is returned).
//!
//! The crate's one error enum carries it as a single variant
//! ([`crate::Error::Xen`]), which is what the CLI sees; [`Error::status`]
//! gives the exit status.

use patchgen::Status;
use std::path::PathBuf;
use std::time::Duration;

/// Errors of reading payloads and driving `XEN_SYSCTL_livepatch_op`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file (payload, device, sysfs) could not be read or opened.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// No Xen live-patch interface here (not a Xen Dom0, or privcmd missing).
    #[error("not a Xen Dom0 with live patching: {path}: {detail}")]
    NoXen {
        /// The device or sysfs file that is missing.
        path: PathBuf,
        /// What was wrong.
        detail: String,
    },
    /// The payload file is not a well-formed Xen live-patch payload.
    #[error("payload {path}: {detail}")]
    Payload {
        /// The payload file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// The payload is built for another hypervisor (exit status 4).
    #[error(
        "payload {path} targets hypervisor build-id {payload}, but the running hypervisor is {running}; nothing changed"
    )]
    BuildIdMismatch {
        /// The payload file.
        path: PathBuf,
        /// Its `.livepatch.xen_depends` build-id (hex, or `none`).
        payload: String,
        /// The running hypervisor's build-id (hex).
        running: String,
    },
    /// The payload depends on a payload that is not the top of the applied
    /// stack (exit status 4).
    #[error(
        "payload {name}: Xen refused it: its .livepatch.depends ({depends}) is not the build-id of the top applied payload (or of the hypervisor); nothing changed"
    )]
    DependsMismatch {
        /// The payload name.
        name: String,
        /// Its `.livepatch.depends` (hex, or `none`).
        depends: String,
    },
    /// Xen's check of the expected bytes of a replaced function failed
    /// (exit status 4).
    #[error(
        "payload {name}: Xen refused it: the running code of {functions} does not match the payload's expected bytes; nothing changed"
    )]
    Expectation {
        /// The payload name.
        name: String,
        /// The functions that carry expectations.
        functions: String,
    },
    /// Xen refused the payload's dependency or expectation checks and hotfix
    /// cannot tell which (exit status 4).
    #[error("payload {name}: Xen refused it: {reason}; nothing changed")]
    Refused {
        /// The payload name.
        name: String,
        /// The possible reasons.
        reason: String,
    },
    /// A payload with this name is already loaded.
    #[error("payload {name} is already loaded in the hypervisor (state {state}); revert it first")]
    AlreadyLoaded {
        /// The payload name.
        name: String,
        /// Its current state.
        state: String,
    },
    /// No payload of this name is loaded.
    #[error("no payload named {name} is loaded in the hypervisor")]
    NotLoaded {
        /// The payload name.
        name: String,
    },
    /// Revert of a payload that is not the last one applied.
    #[error(
        "payload {name} is not the top of the applied stack (top: {top}); revert {top} first; nothing changed"
    )]
    NotTop {
        /// The payload asked for.
        name: String,
        /// The last applied payload, as far as hotfix can tell.
        top: String,
    },
    /// A hypercall failed.
    #[error("payload {name}: XEN_SYSCTL_livepatch_op {op} failed: {source}")]
    Hypercall {
        /// The payload name (empty for LIST).
        name: String,
        /// The sub-operation (`upload`, `get`, `list`, `apply`, ...).
        op: &'static str,
        /// The error Xen returned.
        source: std::io::Error,
    },
    /// Xen finished an action with an error code.
    #[error("payload {name}: {action} failed in the hypervisor: {reason}{}", if *unloaded { "; payload unloaded, nothing changed" } else { "" })]
    ActionFailed {
        /// The payload name.
        name: String,
        /// The action.
        action: &'static str,
        /// Xen's error code, as text.
        reason: String,
        /// Whether the payload was unloaded again (so nothing changed).
        unloaded: bool,
    },
    /// The action did not complete in time (Xen could not quiesce the CPUs).
    #[error("payload {name}: {action} did not complete within {after:?} (state {state})")]
    Timeout {
        /// The payload name.
        name: String,
        /// The action.
        action: &'static str,
        /// How long hotfix polled.
        after: Duration,
        /// The last state seen.
        state: String,
    },
    /// Xen could not stop every CPU within its quiesce timeout, on every
    /// attempt until hotfix's own timeout (exit status 3); nothing changed.
    #[error(
        "payload {name}: {action} unsafe now: Xen could not quiesce every CPU in {attempts} attempt(s) within {after:?}; nothing changed"
    )]
    Unsafe {
        /// The payload name.
        name: String,
        /// The action.
        action: &'static str,
        /// How many times the action was issued.
        attempts: u32,
        /// hotfix's timeout.
        after: Duration,
    },
    /// A payload name that Xen cannot take.
    #[error("payload name {name:?}: {detail}")]
    Name {
        /// The name.
        name: String,
        /// What is wrong.
        detail: String,
    },
}

impl Error {
    /// The exit status this error maps to.
    pub fn status(&self) -> Status {
        match self {
            Error::BuildIdMismatch { .. }
            | Error::DependsMismatch { .. }
            | Error::Expectation { .. }
            | Error::Refused { .. } => Status::Mismatch,
            Error::Unsafe { .. } => Status::Unsafe,
            _ => Status::Error,
        }
    }
}

/// Result of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;
