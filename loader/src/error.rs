//! The one error type of `loader`. Every variant names the pid, file, symbol
//! or address concerned; [`Error::status`] gives the exit status the CLI
//! reports (3 busy, 4 target mismatch, 1 anything else).
//!
//! Invariant: an error returned by [`crate::apply`] or [`crate::revert`]
//! means the target runs exactly the code it ran before the call (old code
//! for apply, new code for revert); see `docs/loader.md` for the argument.

use patchgen::Status;
use std::path::PathBuf;
use std::time::Duration;

/// Errors of loading, checking and reverting patches in a running process.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The patch file is not a valid hotfix patch.
    #[error("{path}: {reason}")]
    Patch {
        /// The patch file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// An object of the target could not be parsed.
    #[error("{path}: malformed ELF object: {reason}")]
    Object {
        /// The object (as named in `/proc/PID/maps`).
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The process does not exist or cannot be inspected.
    #[error("process {pid}: {reason}")]
    Process {
        /// The process.
        pid: i32,
        /// What went wrong.
        reason: String,
    },
    /// A ptrace or wait operation failed on a thread.
    #[error("process {pid}, thread {tid}: {op} failed: {err}")]
    Ptrace {
        /// The process.
        pid: i32,
        /// The thread.
        tid: i32,
        /// The operation.
        op: &'static str,
        /// The error.
        err: std::io::Error,
    },
    /// Reading or writing the target's memory failed.
    #[error("process {pid}: cannot {op} {len} bytes at {addr:#x}: {err}")]
    Memory {
        /// The process.
        pid: i32,
        /// `read` or `write`.
        op: &'static str,
        /// Address in the target.
        addr: u64,
        /// Length.
        len: usize,
        /// The error.
        err: std::io::Error,
    },
    /// No object mapped by the process has the build-id the patch targets.
    #[error(
        "process {pid}: no mapped object has build-id {build_id} ({name}); the patch is for another build"
    )]
    NoMatchingObject {
        /// The process.
        pid: i32,
        /// The build-id the patch wants.
        build_id: String,
        /// The object name recorded in the patch.
        name: String,
    },
    /// The bytes of a function to replace differ from what the patch expects.
    #[error("process {pid}: function {func} at {addr:#x} in {object}: {reason}")]
    ExpectedBytes {
        /// The process.
        pid: i32,
        /// The function.
        func: String,
        /// Its address in the target.
        addr: u64,
        /// Its object.
        object: String,
        /// What differs.
        reason: String,
    },
    /// A function's entry cannot be redirected safely (its first bytes cannot
    /// be relocated into a detour, a branch targets them, or the entry
    /// straddles a page boundary).
    #[error("process {pid}: function {func} at {addr:#x} in {object}: {reason}")]
    Entry {
        /// The process.
        pid: i32,
        /// The function.
        func: String,
        /// Its address in the target.
        addr: u64,
        /// Its object.
        object: String,
        /// Why the entry cannot be used.
        reason: String,
    },
    /// A symbol of the patch could not be resolved in the target.
    #[error("{object}: symbol {name}: {reason}")]
    Symbol {
        /// The target object searched.
        object: String,
        /// The symbol.
        name: String,
        /// Why it could not be resolved.
        reason: String,
    },
    /// A relocation of the patch cannot be applied.
    #[error("{path}: relocation {at}: {reason}")]
    Reloc {
        /// The patch file.
        path: PathBuf,
        /// Type, place and symbol, e.g. `R_X86_64_PC32 at .text.f+0x10 against g`.
        at: String,
        /// Why it cannot be applied.
        reason: String,
    },
    /// A function to replace (or new code, for revert) stayed on a stack
    /// until the timeout. Nothing was changed.
    #[error(
        "process {pid}: thread {tid} is running {func} (still busy after {timeout:?}, {attempts} attempts); nothing changed\nstack of thread {tid}:\n{stack}"
    )]
    Busy {
        /// The process.
        pid: i32,
        /// A thread found busy at the last attempt.
        tid: i32,
        /// The busy function.
        func: String,
        /// Symbolized stack of that thread, one frame per line.
        stack: String,
        /// The timeout.
        timeout: Duration,
        /// Number of attempts made.
        attempts: u32,
    },
    /// A system call injected into a stopped thread failed.
    #[error("process {pid}, thread {tid}: injected {syscall} failed: {reason}")]
    Inject {
        /// The process.
        pid: i32,
        /// The thread.
        tid: i32,
        /// The system call.
        syscall: &'static str,
        /// Why.
        reason: String,
    },
    /// No free address range near the patched object.
    #[error("process {pid}: no free {size}-byte range within 2 GiB of {object}")]
    NoSpace {
        /// The process.
        pid: i32,
        /// The object the patch must be near.
        object: String,
        /// The size needed.
        size: u64,
    },
    /// The in-target registry is inconsistent or refuses the operation.
    #[error("process {pid}: patch {id}: {reason}")]
    Registry {
        /// The process.
        pid: i32,
        /// The patch id.
        id: String,
        /// What is wrong.
        reason: String,
    },
    /// A feature the loader refuses (for example a TLS model).
    #[error("{path}: {reason}")]
    Unsupported {
        /// The patch file.
        path: PathBuf,
        /// What is not supported.
        reason: String,
    },
    /// A kernel module file is not a livepatch module hotfix can apply.
    #[error("{path}: {reason}")]
    KernelModule {
        /// The `.ko` file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A kernel module was built for another kernel than the running one.
    #[error("{path}: built for kernel {vermagic:?}, but the running kernel is {running:?}")]
    KernelMismatch {
        /// The `.ko` file.
        path: PathBuf,
        /// The module's `vermagic`.
        vermagic: String,
        /// The running kernel's release (`uname -r`).
        running: String,
    },
    /// A kernel operation on a livepatch failed (module load or removal,
    /// a write to `/sys/kernel/livepatch`, a missing patch).
    #[error("livepatch {name}: {op}: {reason}")]
    KernelOp {
        /// The livepatch (module) name.
        name: String,
        /// The operation.
        op: &'static str,
        /// Why.
        reason: String,
    },
    /// A livepatch transition did not finish within the timeout; it was
    /// reversed, so nothing changed.
    #[error(
        "livepatch {name}: {action} transition still pending after {timeout:?}; reversed, nothing changed\nstalled tasks:\n{stalled}"
    )]
    KernelStalled {
        /// The livepatch (module) name.
        name: String,
        /// `enable` or `disable`.
        action: &'static str,
        /// The timeout.
        timeout: Duration,
        /// Tasks not yet switched (`pid comm` and kernel stack), one block per task.
        stalled: String,
    },
    /// The jump core found a task inside a function to replace (or, for
    /// revert, inside a new function) at every attempt until the timeout.
    /// Nothing changed.
    #[error(
        "kernel patch {name} (jump method): {action}: task {pid} ({comm}) is running {func} (still busy after {timeout:?}, {attempts} attempts); nothing changed"
    )]
    KernelBusy {
        /// The patch (module) name.
        name: String,
        /// `apply` or `revert`.
        action: &'static str,
        /// The blocking task's pid (thread id).
        pid: i32,
        /// Its `comm`.
        comm: String,
        /// The function found on its stack, as `name+off/size [module]`.
        func: String,
        /// The timeout.
        timeout: Duration,
        /// Number of attempts made.
        attempts: u32,
    },
    /// The jump core refused a patch (an NMI handler, entry or noinstr code,
    /// a function too small, a site owned by something else). Nothing changed.
    #[error("kernel patch {name} (jump method): refused: {reason}")]
    KernelRefused {
        /// The patch (module) name.
        name: String,
        /// Why, as the core reports it (names the function).
        reason: String,
    },
    /// A patch site does not hold the bytes the jump core expects (apply:
    /// the bytes it read when preparing; revert: its own jump). Nothing
    /// changed.
    #[error("kernel patch {name} (jump method): {action}: expected bytes differ: {reason}")]
    KernelSite {
        /// The patch (module) name.
        name: String,
        /// `apply` or `revert`.
        action: &'static str,
        /// What differs.
        reason: String,
    },
}

impl Error {
    /// The exit-status category of this error.
    pub fn status(&self) -> Status {
        match self {
            Error::Busy { .. } | Error::KernelStalled { .. } | Error::KernelBusy { .. } => {
                Status::Unsafe
            }
            Error::NoMatchingObject { .. }
            | Error::ExpectedBytes { .. }
            | Error::KernelMismatch { .. }
            | Error::KernelSite { .. } => Status::Mismatch,
            _ => Status::Error,
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
