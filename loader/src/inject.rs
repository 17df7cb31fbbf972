//! System calls injected into a stopped thread of the target (`mmap`,
//! `mprotect`, `munmap`), without writing a single byte of the target: the
//! thread's registers are pointed at an existing `syscall` instruction
//! (`0f 05`, found in the text of a mapped object), run with
//! `PTRACE_SYSCALL` to the system-call exit, and restored.
//!
//! Invariants: `orig_rax` is set to -1 while injecting, so the kernel does
//! not apply syscall-restart logic to the injected registers; after the
//! injection the thread sits in a syscall-exit-stop, where the kernel would
//! no longer restart an interrupted system call of the program, so the
//! restart is applied to the restored registers by hand (as the kernel
//! would: `-ERESTARTSYS`/`-ERESTARTNOINTR`/`-ERESTARTNOHAND` re-execute the
//! call, `-ERESTART_RESTARTBLOCK` becomes `restart_syscall`). A signal that
//! arrives during the injection is handed back to the original context and
//! delivered, and the injection is retried.

use crate::error::{Error, Result};
use crate::freeze::{Thread, wait_stopped};
use crate::sys::{self, Regs, Wait};

const ERESTARTSYS: i64 = -512;
const ERESTARTNOINTR: i64 = -513;
const ERESTARTNOHAND: i64 = -514;
const ERESTART_RESTARTBLOCK: i64 = -516;
const NR_RESTART_SYSCALL: u64 = 219;

/// The registers to restore after an injection: `saved` with the kernel's
/// system-call restart applied.
pub fn restart_fixup(saved: &Regs) -> Regs {
    let mut r = *saved;
    if saved.orig_rax as i64 >= 0 {
        match saved.rax as i64 {
            ERESTARTSYS | ERESTARTNOINTR | ERESTARTNOHAND => {
                r.rax = saved.orig_rax;
                r.rip = saved.rip.wrapping_sub(2);
            }
            ERESTART_RESTARTBLOCK => {
                r.rax = NR_RESTART_SYSCALL;
                r.rip = saved.rip.wrapping_sub(2);
            }
            _ => {}
        }
    }
    r
}

/// Runs system call `nr` with `args` in the stopped thread `t` using the
/// `syscall` instruction at `gadget`; returns the raw result (negative errno
/// on failure). `t.restore` is set to the registers to restore at resume.
pub fn syscall(
    pid: i32,
    t: &mut Thread,
    gadget: u64,
    name: &'static str,
    nr: u64,
    args: [u64; 6],
) -> Result<i64> {
    let tid = t.tid;
    let perr = |op, err| Error::Ptrace { pid, tid, op, err };
    let fail = |reason: String| Error::Inject {
        pid,
        tid,
        syscall: name,
        reason,
    };
    let mut orig = t.regs;
    for _attempt in 0..16 {
        let mut r = orig;
        r.rip = gadget;
        r.rax = nr;
        r.orig_rax = u64::MAX;
        r.rdi = args[0];
        r.rsi = args[1];
        r.rdx = args[2];
        r.r10 = args[3];
        r.r8 = args[4];
        r.r9 = args[5];
        sys::set_regs(tid, &r).map_err(|e| perr("PTRACE_SETREGS", e))?;
        sys::cont_syscall(tid, 0).map_err(|e| perr("PTRACE_SYSCALL", e))?;
        match sys::wait(tid).map_err(|e| perr("waitpid", e))? {
            Wait::Stopped { sig, event: 0 } if sig == (libc::SIGTRAP | 0x80) => {}
            Wait::Stopped { sig, event: 0 } => {
                // A signal arrived before the syscall ran: give it back to the
                // original context, deliver it, stop again and retry.
                sys::set_regs(tid, &orig).map_err(|e| perr("PTRACE_SETREGS", e))?;
                sys::interrupt(tid).map_err(|e| perr("PTRACE_INTERRUPT", e))?;
                sys::cont(tid, sig).map_err(|e| perr("PTRACE_CONT", e))?;
                if !wait_stopped(pid, tid)? {
                    return Err(fail("thread exited".into()));
                }
                orig = sys::get_regs(tid).map_err(|e| perr("PTRACE_GETREGS", e))?;
                t.regs = orig;
                continue;
            }
            Wait::Stopped { .. } => {
                sys::set_regs(tid, &orig).map_err(|e| perr("PTRACE_SETREGS", e))?;
                continue;
            }
            Wait::Gone => return Err(fail("thread exited".into())),
        }
        // Syscall-entry stop reached; run to the exit stop.
        sys::cont_syscall(tid, 0).map_err(|e| perr("PTRACE_SYSCALL", e))?;
        match sys::wait(tid).map_err(|e| perr("waitpid", e))? {
            Wait::Stopped { sig, event: 0 } if sig == (libc::SIGTRAP | 0x80) => {}
            other => return Err(fail(format!("unexpected stop {other:?} at syscall exit"))),
        }
        let out = sys::get_regs(tid).map_err(|e| perr("PTRACE_GETREGS", e))?;
        let restore = restart_fixup(&orig);
        sys::set_regs(tid, &restore).map_err(|e| perr("PTRACE_SETREGS", e))?;
        t.restore = Some(restore);
        return Ok(out.rax as i64);
    }
    Err(fail("signals kept arriving; gave up".into()))
}

/// `mmap(addr, len, prot, MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED_NOREPLACE)`;
/// `Ok(None)` when the range is taken.
pub fn mmap_fixed(
    pid: i32,
    t: &mut Thread,
    gadget: u64,
    addr: u64,
    len: u64,
    prot: i32,
) -> Result<Option<u64>> {
    let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE) as u64;
    let r = syscall(
        pid,
        t,
        gadget,
        "mmap",
        libc::SYS_mmap as u64,
        [addr, len, prot as u64, flags, u64::MAX, 0],
    )?;
    if r == -(libc::EEXIST as i64) {
        return Ok(None);
    }
    if r < 0 {
        return Err(Error::Inject {
            pid,
            tid: t.tid,
            syscall: "mmap",
            reason: std::io::Error::from_raw_os_error(-r as i32).to_string(),
        });
    }
    if r as u64 != addr {
        // Old kernels ignore MAP_FIXED_NOREPLACE and treat it as a hint.
        let _ = munmap(pid, t, gadget, r as u64, len);
        return Ok(None);
    }
    Ok(Some(r as u64))
}

/// `mprotect(addr, len, prot)`.
pub fn mprotect(
    pid: i32,
    t: &mut Thread,
    gadget: u64,
    addr: u64,
    len: u64,
    prot: i32,
) -> Result<()> {
    let r = syscall(
        pid,
        t,
        gadget,
        "mprotect",
        libc::SYS_mprotect as u64,
        [addr, len, prot as u64, 0, 0, 0],
    )?;
    check(pid, t.tid, "mprotect", r)
}

/// `munmap(addr, len)`.
pub fn munmap(pid: i32, t: &mut Thread, gadget: u64, addr: u64, len: u64) -> Result<()> {
    let r = syscall(
        pid,
        t,
        gadget,
        "munmap",
        libc::SYS_munmap as u64,
        [addr, len, 0, 0, 0, 0],
    )?;
    check(pid, t.tid, "munmap", r)
}

fn check(pid: i32, tid: i32, syscall: &'static str, r: i64) -> Result<()> {
    if r < 0 {
        return Err(Error::Inject {
            pid,
            tid,
            syscall,
            reason: std::io::Error::from_raw_os_error(-r as i32).to_string(),
        });
    }
    Ok(())
}
