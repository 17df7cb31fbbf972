//! Stopping and resuming every thread of a target.
//!
//! Model: `PTRACE_SEIZE` then `PTRACE_INTERRUPT` every thread listed in
//! `/proc/PID/task` (all interrupts first, then all waits, so threads stop in
//! parallel), then re-read the list until no new thread appears: a stopped
//! thread cannot create another, so the set is then stable. A thread that
//! reports a signal-delivery-stop instead of the interrupt stop gets its
//! signal passed on (`PTRACE_CONT` with that signal, keeping its siginfo)
//! and stops right after, in the signal handler; so no signal, real-time or
//! not, is lost or reordered, and blocked pending signals are never touched.
//! No `SIGSTOP` is ever sent: the target's parent and terminal see nothing.
//!
//! Invariants: [`Frozen`] owns the attachment; dropping it detaches every
//! thread (resuming it), so any error path resumes the target. Never
//! `PTRACE_O_EXITKILL`: if hotfix dies, the kernel detaches and the target
//! runs on. This module is the one place that lists `/proc/PID/task`
//! (for [`freeze`] and [`stop_any`]).

use crate::error::{Error, Result};
use crate::sys::{self, Regs, Wait};
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// One stopped thread.
#[derive(Debug, Clone)]
pub struct Thread {
    /// Thread id.
    pub tid: i32,
    /// Registers at the stop.
    pub regs: Regs,
    /// Registers to restore at resume (set by syscall injection).
    pub restore: Option<Regs>,
}

/// Every thread of a process, stopped.
pub struct Frozen {
    /// The process.
    pub pid: i32,
    /// The stopped threads.
    pub threads: Vec<Thread>,
    /// When the first thread was interrupted.
    pub started: Instant,
    detached: bool,
}

fn list_tasks(pid: i32) -> Result<Vec<i32>> {
    let dir = format!("/proc/{pid}/task");
    let rd = std::fs::read_dir(&dir).map_err(|e| Error::Process {
        pid,
        reason: format!("cannot list {dir}: {e}"),
    })?;
    Ok(rd
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
        .collect())
}

/// Waits until `tid` is in a ptrace stop that is not a signal-delivery-stop,
/// passing on any signal it reports meanwhile. `Ok(false)`: the thread is gone.
pub fn wait_stopped(pid: i32, tid: i32) -> Result<bool> {
    loop {
        match sys::wait(tid).map_err(|err| Error::Ptrace {
            pid,
            tid,
            op: "waitpid",
            err,
        })? {
            Wait::Gone => return Ok(false),
            Wait::Stopped { event, .. } if event == sys::EVENT_STOP => return Ok(true),
            Wait::Stopped { sig, event: 0 } if sig == (libc::SIGTRAP | 0x80) => return Ok(true),
            Wait::Stopped { sig, event: 0 } => {
                // Signal-delivery-stop: deliver it; the pending interrupt
                // stops the thread again right after.
                tracing::trace!("thread {tid}: passing signal {sig}");
                if sys::cont(tid, sig).is_err() {
                    return Ok(false);
                }
            }
            Wait::Stopped { .. } => {
                // Another ptrace event (none requested): resume and re-stop.
                let _ = sys::interrupt(tid);
                if sys::cont(tid, 0).is_err() {
                    return Ok(false);
                }
            }
        }
    }
}

/// Seizes and stops one thread (for syscall injection outside a freeze).
pub fn stop_one(pid: i32, tid: i32) -> Result<Frozen> {
    let started = Instant::now();
    let op_err = |op, err| Error::Ptrace { pid, tid, op, err };
    sys::seize(tid).map_err(|e| op_err("PTRACE_SEIZE", e))?;
    let mut f = Frozen {
        pid,
        threads: Vec::new(),
        started,
        detached: false,
    };
    sys::interrupt(tid).map_err(|e| op_err("PTRACE_INTERRUPT", e))?;
    if !wait_stopped(pid, tid)? {
        return Err(Error::Process {
            pid,
            reason: format!("thread {tid} exited"),
        });
    }
    let regs = sys::get_regs(tid).map_err(|e| op_err("PTRACE_GETREGS", e))?;
    f.threads.push(Thread {
        tid,
        regs,
        restore: None,
    });
    Ok(f)
}

/// Stops one thread of `pid`, the main thread if it can, else the first
/// other thread that lets itself be stopped (for injected system calls).
pub fn stop_any(pid: i32) -> Result<Frozen> {
    let mut last = None;
    let tids = list_tasks(pid)?;
    for tid in std::iter::once(pid).chain(tids.into_iter().filter(|t| *t != pid)) {
        match stop_one(pid, tid) {
            Ok(f) => return Ok(f),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or(Error::Process {
        pid,
        reason: "no thread to stop".into(),
    }))
}

/// Stops every thread of `pid`.
pub fn freeze(pid: i32) -> Result<Frozen> {
    let started = Instant::now();
    let mut f = Frozen {
        pid,
        threads: Vec::new(),
        started,
        detached: false,
    };
    let mut seized: HashSet<i32> = HashSet::new();
    let mut stopped: Vec<i32> = Vec::new();
    loop {
        let tids = list_tasks(pid)?;
        let new: Vec<i32> = tids.into_iter().filter(|t| !seized.contains(t)).collect();
        if new.is_empty() {
            break;
        }
        let mut interrupted = Vec::with_capacity(new.len());
        for &tid in &new {
            seized.insert(tid);
            match sys::seize(tid) {
                Ok(()) => {}
                // Exited (ESRCH) or a zombie thread (EPERM): nothing to stop.
                Err(e) if matches!(e.raw_os_error(), Some(libc::ESRCH) | Some(libc::EPERM)) => {
                    continue;
                }
                Err(err) => {
                    return Err(Error::Ptrace {
                        pid,
                        tid,
                        op: "PTRACE_SEIZE",
                        err,
                    });
                }
            }
            // From here Drop detaches it.
            f.threads.push(Thread {
                tid,
                regs: zero_regs(),
                restore: None,
            });
            if sys::interrupt(tid).is_ok() {
                interrupted.push(tid);
            }
        }
        for tid in interrupted {
            if wait_stopped(pid, tid)? {
                stopped.push(tid);
            }
        }
    }
    f.threads.retain(|t| stopped.contains(&t.tid));
    if f.threads.is_empty() {
        return Err(Error::Process {
            pid,
            reason: "no live thread (process exited?)".into(),
        });
    }
    for t in &mut f.threads {
        t.regs = sys::get_regs(t.tid).map_err(|err| Error::Ptrace {
            pid,
            tid: t.tid,
            op: "PTRACE_GETREGS",
            err,
        })?;
        // Restart an epoll_wait the stop failed with EINTR right now, so the
        // program never sees the EINTR even if hotfix dies before resuming.
        if let Some(r) = no_eintr(pid, t.tid, &t.regs)
            && sys::set_regs(t.tid, &r).is_ok()
        {
            t.regs = r;
        }
    }
    Ok(f)
}

/// System calls the kernel fails with `EINTR` (instead of restarting) when
/// a stop interrupts them, even with no signal delivered (signal(7)).
const EINTR_ON_STOP: [u64; 3] = [
    libc::SYS_epoll_wait as u64,
    libc::SYS_epoll_pwait as u64,
    441, // epoll_pwait2
];

/// If the stop made `epoll_wait` fail with `EINTR` and no signal is pending
/// that could explain it, the registers that restart the call instead: the
/// program sees no trace of the stop. (A finite timeout restarts in full.)
fn no_eintr(pid: i32, tid: i32, regs: &Regs) -> Option<Regs> {
    if !EINTR_ON_STOP.contains(&regs.orig_rax) || regs.rax as i64 != -(libc::EINTR as i64) {
        return None;
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).ok()?;
    let mask = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
    };
    let pending = mask("SigPnd:")? | mask("ShdPnd:")?;
    if pending & !mask("SigBlk:")? != 0 {
        return None;
    }
    let mut r = *regs;
    r.rax = regs.orig_rax;
    r.rip = regs.rip.wrapping_sub(2);
    Some(r)
}

fn zero_regs() -> Regs {
    // Built field by field to stay free of `unsafe`.
    Regs {
        r15: 0,
        r14: 0,
        r13: 0,
        r12: 0,
        rbp: 0,
        rbx: 0,
        r11: 0,
        r10: 0,
        r9: 0,
        r8: 0,
        rax: 0,
        rcx: 0,
        rdx: 0,
        rsi: 0,
        rdi: 0,
        orig_rax: 0,
        rip: 0,
        cs: 0,
        eflags: 0,
        rsp: 0,
        ss: 0,
        fs_base: 0,
        gs_base: 0,
        ds: 0,
        es: 0,
        fs: 0,
        gs: 0,
    }
}

impl Frozen {
    /// Restores injected-over registers and detaches every thread; returns
    /// the pause window (first interrupt to last detach).
    pub fn resume(mut self) -> Duration {
        self.detach_all();
        self.started.elapsed()
    }

    fn detach_all(&mut self) {
        if self.detached {
            return;
        }
        self.detached = true;
        for t in &self.threads {
            if let Some(r) = &t.restore
                && let Err(e) = sys::set_regs(t.tid, r)
            {
                tracing::warn!("thread {}: cannot restore registers: {e}", t.tid);
            }
            if let Err(e) = sys::detach(t.tid, 0) {
                tracing::debug!("thread {}: detach: {e}", t.tid);
            }
        }
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        self.detach_all();
    }
}
