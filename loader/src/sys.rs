//! Every `unsafe` operation of the loader: raw `ptrace(2)` and `waitpid(2)`
//! (nix's `waitpid` decodes statuses lossily and drops real-time stop
//! signals, so the loader keeps the raw status word), read-only file
//! mappings, and the self-kill used by failure injection.
//!
//! Invariants: each wrapper passes only pointers to live, correctly sized
//! Rust values; errors come back as `std::io::Error` from `errno`.

use std::io;

/// The general-purpose registers of a stopped thread (`struct user_regs_struct`).
pub type Regs = libc::user_regs_struct;

/// `PTRACE_EVENT_STOP`: the stop reported after `PTRACE_INTERRUPT` (and for
/// group-stops of seized tracees).
pub const EVENT_STOP: i32 = 128;

fn check(r: libc::c_long) -> io::Result<libc::c_long> {
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn ptrace(req: libc::c_uint, tid: i32, addr: usize, data: usize) -> io::Result<libc::c_long> {
    // SAFETY: every request used by this module takes either no pointer or a
    // pointer (in `addr`/`data`) to a live value of the type the kernel
    // expects, provided by the callers below.
    check(unsafe { libc::ptrace(req, tid, addr, data) })
}

/// `PTRACE_SEIZE` with `PTRACE_O_TRACESYSGOOD` (never `PTRACE_O_EXITKILL`:
/// if hotfix dies, the target lives on).
pub fn seize(tid: i32) -> io::Result<()> {
    ptrace(
        libc::PTRACE_SEIZE,
        tid,
        0,
        libc::PTRACE_O_TRACESYSGOOD as usize,
    )
    .map(drop)
}

/// `PTRACE_INTERRUPT`: stop a seized thread without any signal.
pub fn interrupt(tid: i32) -> io::Result<()> {
    ptrace(libc::PTRACE_INTERRUPT, tid, 0, 0).map(drop)
}

/// `PTRACE_CONT`, delivering `sig` (0 for none).
pub fn cont(tid: i32, sig: i32) -> io::Result<()> {
    ptrace(libc::PTRACE_CONT, tid, 0, sig as usize).map(drop)
}

/// `PTRACE_SYSCALL`: resume until the next system-call entry or exit.
pub fn cont_syscall(tid: i32, sig: i32) -> io::Result<()> {
    ptrace(libc::PTRACE_SYSCALL, tid, 0, sig as usize).map(drop)
}

/// `PTRACE_DETACH`, delivering `sig` (0 for none).
pub fn detach(tid: i32, sig: i32) -> io::Result<()> {
    ptrace(libc::PTRACE_DETACH, tid, 0, sig as usize).map(drop)
}

/// `PTRACE_GETREGS`.
pub fn get_regs(tid: i32) -> io::Result<Regs> {
    // SAFETY: `user_regs_struct` is plain old data; all-zero is a valid value.
    let mut regs: Regs = unsafe { std::mem::zeroed() };
    ptrace(
        libc::PTRACE_GETREGS,
        tid,
        0,
        &mut regs as *mut Regs as usize,
    )?;
    Ok(regs)
}

/// `PTRACE_SETREGS`.
pub fn set_regs(tid: i32, regs: &Regs) -> io::Result<()> {
    ptrace(libc::PTRACE_SETREGS, tid, 0, regs as *const Regs as usize).map(drop)
}

/// A raw wait status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Stopped: the stop signal and the ptrace event (`status >> 16`).
    Stopped {
        /// `WSTOPSIG`.
        sig: i32,
        /// The ptrace event, 0 for none.
        event: i32,
    },
    /// The thread exited or was killed.
    Gone,
}

/// `waitpid(tid, __WALL)` for one thread, retried on `EINTR`.
pub fn wait(tid: i32) -> io::Result<Wait> {
    let mut status: libc::c_int = 0;
    loop {
        // SAFETY: `status` is a live c_int the kernel writes the status into.
        let r = unsafe { libc::waitpid(tid, &mut status, libc::__WALL) };
        if r == -1 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            if e.raw_os_error() == Some(libc::ECHILD) {
                return Ok(Wait::Gone);
            }
            return Err(e);
        }
        break;
    }
    if libc::WIFSTOPPED(status) {
        Ok(Wait::Stopped {
            sig: libc::WSTOPSIG(status),
            event: (status >> 16) & 0xff,
        })
    } else {
        Ok(Wait::Gone)
    }
}

/// A read-only private mapping of a whole file.
pub struct FileMap(memmap2::Mmap);

impl FileMap {
    /// Maps `file` read-only.
    pub fn new(file: &std::fs::File) -> io::Result<Self> {
        // SAFETY: the mapping is private and read-only. The objects mapped are
        // executables and libraries in use by a running process, which the
        // kernel protects against writes (ETXTBSY) and which package managers
        // replace by rename, never in place; a concurrent truncation could
        // still raise SIGBUS, which is the documented residual risk of every
        // tool that maps object files (gdb, perf, objdump).
        unsafe { memmap2::Mmap::map(file) }.map(Self)
    }
}

impl std::ops::Deref for FileMap {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

/// Kills the calling process with `SIGKILL` (failure injection only).
pub fn kill_self() -> ! {
    // SAFETY: raising a signal has no memory-safety preconditions.
    unsafe {
        libc::raise(libc::SIGKILL);
    }
    std::process::abort()
}
