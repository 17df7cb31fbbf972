//! System calls injected into a stopped thread of the target (`mmap`,
//! `mprotect`, `munmap`): the thread's registers are pointed at a `syscall`
//! instruction, run with `PTRACE_SYSCALL` to the system-call exit, and
//! restored.
//!
//! Where the `syscall` runs ([`Gadget`]): in a *cave* — padding bytes at the
//! end of an executable segment's last page, which the program never runs —
//! hotfix writes `syscall` followed by a *return stub* and a block holding
//! the thread's registers to restore; the stub reloads every general
//! register and `rflags`, then jumps to the thread's own PC. So if hotfix is
//! killed while the thread is anywhere in the injection (its registers set,
//! in the system call, or stopped after it), the kernel detaches the thread,
//! the call completes, and the stub puts the thread back where it was with
//! its own registers: the program never notices. The stub never touches the
//! program's stack above its red zone (it uses the 8 bytes below the red zone
//! to restore `rflags`). The cave's original bytes are put back when the
//! [`Gadget`] is dropped. Without a cave in any mapped object, an existing
//! `syscall` instruction of the program is used (no byte written) and a kill
//! inside the injection leaves the thread with wrong registers: a documented
//! residual risk.
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
use crate::mem;
use crate::sys::{self, Regs, Wait};
use iced_x86::{
    BlockEncoder, BlockEncoderOptions, Code, Instruction, InstructionBlock, MemoryOperand, Register,
};

/// Bytes a cave needs: `syscall`, the return stub, the register block.
pub const CAVE_LEN: u64 = 320;
/// Offset of the register block in the cave.
const BLOCK_OFF: u64 = 192;
/// Registers restored by the stub, in block order (then rsp, rip, rflags).
const GPRS: [Register; 15] = [
    Register::RAX,
    Register::RBX,
    Register::RCX,
    Register::RDX,
    Register::RSI,
    Register::RDI,
    Register::RBP,
    Register::R8,
    Register::R9,
    Register::R10,
    Register::R11,
    Register::R12,
    Register::R13,
    Register::R14,
    Register::R15,
];

/// Where injected system calls run: a cave with a return stub (kill-safe),
/// or an existing `syscall` instruction of the program.
pub struct Gadget {
    pid: i32,
    /// An existing `syscall` instruction (fallback).
    syscall: u64,
    /// The cave, its original bytes and the stub code.
    cave: Option<(u64, Vec<u8>, Vec<u8>)>,
    writer: mem::Writer,
}

/// The return stub at `cave`: `syscall`, then restore rflags (through the 8
/// bytes below the red zone of the thread's own stack), every general
/// register, rsp, and jump to the saved rip.
fn stub(cave: u64) -> std::result::Result<Vec<u8>, iced_x86::IcedError> {
    let slot = |i: usize| {
        MemoryOperand::with_base_displ(Register::RIP, (cave + BLOCK_OFF + 8 * i as u64) as i64)
    };
    let mut v = vec![
        Instruction::with(Code::Syscall),
        Instruction::with2(Code::Mov_r64_rm64, Register::RSP, slot(15))?,
        Instruction::with2(
            Code::Lea_r64_m,
            Register::RSP,
            MemoryOperand::with_base_displ(Register::RSP, -128),
        )?,
        Instruction::with1(Code::Push_rm64, slot(17))?,
        Instruction::with(Code::Popfq),
        Instruction::with2(
            Code::Lea_r64_m,
            Register::RSP,
            MemoryOperand::with_base_displ(Register::RSP, 128),
        )?,
    ];
    for (i, r) in GPRS.iter().enumerate() {
        v.push(Instruction::with2(Code::Mov_r64_rm64, *r, slot(i))?);
    }
    v.push(Instruction::with1(Code::Jmp_rm64, slot(16))?);
    let out = BlockEncoder::encode(
        64,
        InstructionBlock::new(&v, cave),
        BlockEncoderOptions::NONE,
    )?;
    Ok(out.code_buffer)
}

/// The register block for `r`.
fn block(r: &Regs) -> Vec<u8> {
    let vals = [
        r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rbp, r.r8, r.r9, r.r10, r.r11, r.r12, r.r13,
        r.r14, r.r15, r.rsp, r.rip, r.eflags,
    ];
    vals.iter().flat_map(|v| v.to_le_bytes()).collect()
}

impl Gadget {
    /// A gadget for process `pid`: the cave at `cave` when given (its bytes
    /// are read now and put back on drop), else the `syscall` at `syscall`.
    pub fn new(pid: i32, syscall: Option<u64>, cave: Option<u64>) -> Result<Self> {
        let writer = mem::Writer::open(pid)?;
        let cave = match cave {
            Some(at) => {
                let code = stub(at).map_err(|e| Error::Process {
                    pid,
                    reason: format!("cannot encode the injection stub: {e}"),
                })?;
                if code.len() as u64 > BLOCK_OFF {
                    return Err(Error::Process {
                        pid,
                        reason: format!("injection stub of {} bytes", code.len()),
                    });
                }
                Some((at, mem::read_vec(pid, at, CAVE_LEN as usize)?, code))
            }
            None => None,
        };
        let syscall = match (syscall, &cave) {
            (Some(s), _) => s,
            (None, Some((at, _, _))) => *at,
            (None, None) => {
                return Err(Error::Process {
                    pid,
                    reason: "no syscall instruction and no cave found in any mapped object".into(),
                });
            }
        };
        Ok(Self {
            pid,
            syscall,
            cave,
            writer,
        })
    }

    /// Whether injections run through a cave (kill-safe).
    pub fn kill_safe(&self) -> bool {
        self.cave.is_some()
    }

    /// Prepares an injection that must return to `restore`: the PC to run
    /// the `syscall` at.
    fn entry(&self, restore: &Regs) -> Result<u64> {
        let Some((at, _, code)) = &self.cave else {
            return Ok(self.syscall);
        };
        let mut bytes = code.clone();
        bytes.resize(BLOCK_OFF as usize, 0xcc);
        bytes.extend(block(restore));
        self.writer.write(*at, &bytes)?;
        Ok(*at)
    }
}

impl Drop for Gadget {
    fn drop(&mut self) {
        if let Some((at, orig, _)) = &self.cave
            && let Err(e) = self.writer.write(*at, orig)
        {
            tracing::warn!(
                "process {}: could not restore the {} cave bytes at {at:#x}: {e}",
                self.pid,
                orig.len()
            );
        }
    }
}

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

/// Runs system call `nr` with `args` in the stopped thread `t` through
/// `gadget`; returns the raw result (negative errno on failure). `t.restore`
/// is set to the registers to restore at resume. Failure-injection points:
/// `inject-<name>` (stopped at the call's entry), `injected-<name>` (at its
/// exit, before the registers are restored).
pub fn syscall(
    pid: i32,
    t: &mut Thread,
    gadget: &Gadget,
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
        r.rip = gadget.entry(&restart_fixup(&orig))?;
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
        crate::fault::fault(&format!("inject-{name}"));
        sys::cont_syscall(tid, 0).map_err(|e| perr("PTRACE_SYSCALL", e))?;
        match sys::wait(tid).map_err(|e| perr("waitpid", e))? {
            Wait::Stopped { sig, event: 0 } if sig == (libc::SIGTRAP | 0x80) => {}
            other => return Err(fail(format!("unexpected stop {other:?} at syscall exit"))),
        }
        crate::fault::fault(&format!("injected-{name}"));
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
    gadget: &Gadget,
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
    gadget: &Gadget,
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
pub fn munmap(pid: i32, t: &mut Thread, gadget: &Gadget, addr: u64, len: u64) -> Result<()> {
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
