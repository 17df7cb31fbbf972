//! The activeness check: unwind every stopped thread and find frames inside
//! code that is about to be replaced (apply) or removed (revert).
//!
//! Model: a DWARF CFI unwinder over `.eh_frame` (through the
//! `.eh_frame_hdr` search table when present) of every mapped object,
//! including the vDSO (read from the target) and the `.eh_frame` of loaded
//! patches; the glibc signal trampoline (`__restore_rt`, recognised by its
//! bytes) continues from the interrupted context saved in the signal frame;
//! code without CFI falls back to the frame-pointer chain. Unwind rules are
//! cached per address across threads and attempts; stacks are read in bulk
//! with `process_vm_readv`.
//!
//! Invariant (conservative): a thread whose unwind stops early (no rule, an
//! unreadable frame, too many frames) is also checked by scanning every word
//! of its stack for an address inside the busy ranges; any hit counts as
//! busy. A false "busy" only delays the patch; a missed frame could crash
//! the target, so uncertainty always resolves to busy.
//!
//! Also here: the unwind modules of a process and its loaded patches
//! ([`modules`]) and the symbolized stack that names a busy thread
//! ([`symbolize`]).

use crate::freeze::Thread;
use crate::registry::Entry;
use crate::target::{Bytes, Mapping, Object, Process, SymbolCache};
use gimli::{
    BaseAddresses, CfaRule, EhFrame, EhFrameHdr, LittleEndian, Register, RegisterRule,
    UnwindContext, UnwindSection,
};
use std::collections::HashMap;
use std::sync::Arc;

const MAX_FRAMES: usize = 512;
const RESTORE_RT: [u8; 9] = [0x48, 0xc7, 0xc0, 0x0f, 0x00, 0x00, 0x00, 0x0f, 0x05];
const REG_RSP: Register = Register(7);
const REG_RBP: Register = Register(6);
const REG_RA: Register = Register(16);

#[derive(Debug, Clone, Copy)]
struct Rule {
    cfa_rbp: bool,
    cfa_off: i64,
    /// Offset of the return address from the CFA; `None`: outermost frame.
    ra: Option<i64>,
    rbp: Option<i64>,
}

#[derive(Debug, Clone, Copy)]
enum Cached {
    Rule(Rule),
    Signal,
    NoInfo,
}

/// Unwind information of one object.
pub struct Module {
    /// Name (path).
    pub name: String,
    text: Vec<(u64, u64)>,
    bias: u64,
    data: Arc<Bytes>,
    eh_frame_hdr: Option<(u64, usize, usize)>,
    eh_frame: Option<(u64, usize, usize)>,
}

impl Module {
    /// The unwind information of a mapped object.
    pub fn from_object(o: &Object) -> Self {
        Self {
            name: o.path.clone(),
            text: o.text.clone(),
            bias: o.bias,
            data: o.data.clone(),
            eh_frame_hdr: o.eh_frame_hdr,
            eh_frame: o.eh_frame,
        }
    }

    /// The unwind information of loaded patch code: `eh_frame` is a copy of
    /// the patch's relocated `.eh_frame`, living at AVMA `eh_addr`.
    pub fn from_patch(name: &str, text: (u64, u64), eh_addr: u64, eh_frame: Vec<u8>) -> Self {
        let len = eh_frame.len();
        Self {
            name: name.to_string(),
            text: vec![text],
            bias: 0,
            data: Arc::new(Bytes::Owned(eh_frame)),
            eh_frame_hdr: None,
            eh_frame: Some((eh_addr, 0, len)),
        }
    }

    fn contains(&self, pc: u64) -> bool {
        self.text.iter().any(|(s, e)| pc >= *s && pc < *e)
    }

    fn rule(&self, ctx: &mut UnwindContext<usize>, pc: u64) -> Option<Rule> {
        let svma = pc.wrapping_sub(self.bias);
        let (eh_addr, eh_off, eh_len) = self.eh_frame?;
        let eh_data = self.data.get(eh_off..eh_off + eh_len)?;
        let eh = EhFrame::new(eh_data, LittleEndian);
        let mut bases = BaseAddresses::default().set_eh_frame(eh_addr);
        let row = if let Some((hdr_addr, hdr_off, hdr_len)) = self.eh_frame_hdr {
            bases = bases.set_eh_frame_hdr(hdr_addr);
            let hdr_data = self.data.get(hdr_off..hdr_off + hdr_len)?;
            let hdr = EhFrameHdr::new(hdr_data, LittleEndian)
                .parse(&bases, 8)
                .ok()?;
            let table = hdr.table()?;
            table
                .unwind_info_for_address(&eh, &bases, ctx, svma, EhFrame::cie_from_offset)
                .ok()?
                .clone()
        } else {
            eh.unwind_info_for_address(&bases, ctx, svma, EhFrame::cie_from_offset)
                .ok()?
                .clone()
        };
        let (cfa_rbp, cfa_off) = match row.cfa() {
            CfaRule::RegisterAndOffset { register, offset } if *register == REG_RSP => {
                (false, *offset)
            }
            CfaRule::RegisterAndOffset { register, offset } if *register == REG_RBP => {
                (true, *offset)
            }
            _ => return None,
        };
        let ra = match row.register(REG_RA) {
            Some(RegisterRule::Offset(o)) => Some(o),
            Some(RegisterRule::Undefined) | None => None,
            Some(_) => return None,
        };
        let rbp = match row.register(REG_RBP) {
            Some(RegisterRule::Offset(o)) => Some(o),
            Some(RegisterRule::SameValue) | None => None,
            Some(_) => return None,
        };
        Some(Rule {
            cfa_rbp,
            cfa_off,
            ra,
            rbp,
        })
    }
}

/// A range of code that must not be on any stack, with its label.
#[derive(Debug, Clone)]
pub struct BusyRange {
    /// First address.
    pub start: u64,
    /// One past the end.
    pub end: u64,
    /// Label (function name) for reports.
    pub label: String,
}

/// A thread found busy.
#[derive(Debug, Clone)]
pub struct Busy {
    /// The thread.
    pub tid: i32,
    /// The busy range's label.
    pub label: String,
    /// The frames' program counters, innermost first.
    pub stack: Vec<u64>,
    /// Whether the hit came from the conservative stack scan.
    pub scanned: bool,
}

/// The unwinder, with its caches; keep one across attempts.
pub struct Unwinder {
    modules: Vec<Module>,
    cache: HashMap<u64, Cached>,
    ctx: Box<UnwindContext<usize>>,
    pid: i32,
}

/// Reads a thread's stack in bulk, growing on demand.
struct Stack {
    pid: i32,
    base: u64,
    buf: Vec<u8>,
    limit: u64,
}

impl Stack {
    fn new(pid: i32, sp: u64, limit: u64) -> Self {
        let mut s = Self {
            pid,
            base: sp & !7,
            buf: Vec::new(),
            limit,
        };
        s.grow(2048);
        s
    }

    fn grow(&mut self, want: u64) {
        let end = (self.base + want).min(self.limit.max(self.base));
        let len = end.saturating_sub(self.base) as usize;
        if len <= self.buf.len() {
            return;
        }
        let mut b = vec![0u8; len];
        if crate::mem::read(self.pid, self.base, &mut b).is_ok() {
            self.buf = b;
        }
    }

    fn read(&mut self, addr: u64) -> Option<u64> {
        if addr >= self.base && addr + 8 <= self.limit {
            let need = addr + 8 - self.base;
            // Bulk reads stay bounded (8 MiB); beyond, word by word.
            if need as usize > self.buf.len() && need <= 8 << 20 {
                self.grow((need * 4).max(8192));
            }
            let off = (addr - self.base) as usize;
            if let Some(w) = self.buf.get(off..off + 8) {
                let mut a = [0u8; 8];
                a.copy_from_slice(w);
                return Some(u64::from_le_bytes(a));
            }
        }
        crate::mem::read_u64(self.pid, addr).ok()
    }
}

impl Unwinder {
    /// An unwinder over `modules` of process `pid`.
    pub fn new(pid: i32, modules: Vec<Module>) -> Self {
        Self {
            modules,
            cache: HashMap::new(),
            ctx: Box::new(UnwindContext::new()),
            pid,
        }
    }

    fn lookup(&mut self, pc: u64) -> Cached {
        if let Some(c) = self.cache.get(&pc) {
            return *c;
        }
        let c = match self.modules.iter().find(|m| m.contains(pc)) {
            Some(m) => match m.rule(&mut self.ctx, pc) {
                Some(r) => Cached::Rule(r),
                None => {
                    let mut b = [0u8; 9];
                    if crate::mem::read(self.pid, pc, &mut b).is_ok() && b == RESTORE_RT {
                        Cached::Signal
                    } else {
                        Cached::NoInfo
                    }
                }
            },
            None => Cached::NoInfo,
        };
        self.cache.insert(pc, c);
        c
    }

    /// Unwinds one thread; returns the frame PCs (innermost first) and
    /// whether the unwind reached the outermost frame.
    pub fn unwind(&mut self, regs: &crate::sys::Regs, maps: &[Mapping]) -> (Vec<u64>, bool) {
        let limit = stack_limit(maps, regs.rsp);
        let mut stack = Stack::new(self.pid, regs.rsp, limit);
        let (mut pc, mut sp, mut bp) = (regs.rip, regs.rsp, regs.rbp);
        let mut exact = true;
        let mut frames = Vec::new();
        for _ in 0..MAX_FRAMES {
            frames.push(pc);
            if pc == 0 {
                return (frames, true);
            }
            // Signal trampoline: the return address of a handler frame.
            if self.lookup(pc) == Cached::Signal {
                let mctx = sp + 40;
                let (Some(nbp), Some(nsp), Some(npc)) = (
                    stack.read(mctx + 10 * 8),
                    stack.read(mctx + 15 * 8),
                    stack.read(mctx + 16 * 8),
                ) else {
                    return (frames, false);
                };
                bp = nbp;
                sp = nsp;
                pc = npc;
                exact = true;
                if sp < limit && sp >= regs.rsp {
                    continue;
                }
                stack = Stack::new(self.pid, sp, stack_limit(maps, sp));
                continue;
            }
            let look = if exact { pc } else { pc.wrapping_sub(1) };
            match self.lookup(look) {
                Cached::Rule(r) => {
                    let cfa = (if r.cfa_rbp { bp } else { sp }).wrapping_add(r.cfa_off as u64);
                    let Some(ra_off) = r.ra else {
                        return (frames, true);
                    };
                    let Some(ra) = stack.read(cfa.wrapping_add(ra_off as u64)) else {
                        return (frames, false);
                    };
                    if let Some(o) = r.rbp {
                        match stack.read(cfa.wrapping_add(o as u64)) {
                            Some(v) => bp = v,
                            None => return (frames, false),
                        }
                    }
                    if cfa <= sp && !exact {
                        return (frames, false);
                    }
                    sp = cfa;
                    pc = ra;
                }
                Cached::Signal | Cached::NoInfo => {
                    // Frame-pointer fallback.
                    if bp <= sp || bp >= limit {
                        return (frames, false);
                    }
                    let (Some(nbp), Some(ra)) = (stack.read(bp), stack.read(bp + 8)) else {
                        return (frames, false);
                    };
                    sp = bp + 16;
                    bp = nbp;
                    pc = ra;
                }
            }
            exact = false;
        }
        (frames, false)
    }

    /// Checks every thread against `ranges`; returns the first busy thread.
    pub fn check(
        &mut self,
        threads: &[Thread],
        maps: &[Mapping],
        ranges: &[BusyRange],
    ) -> Option<Busy> {
        let hit = |pc: u64| ranges.iter().find(|r| pc >= r.start && pc < r.end);
        for t in threads {
            let (frames, complete) = self.unwind(&t.regs, maps);
            for (i, &pc) in frames.iter().enumerate() {
                let pc_in = if i == 0 { pc } else { pc.wrapping_sub(1) };
                if let Some(r) = hit(pc_in).or_else(|| hit(pc)) {
                    return Some(Busy {
                        tid: t.tid,
                        label: r.label.clone(),
                        stack: frames,
                        scanned: false,
                    });
                }
            }
            if !complete {
                tracing::debug!(
                    "thread {}: unwind stopped after {} frames; scanning its stack",
                    t.tid,
                    frames.len()
                );
                if let Some(r) = self.scan(&t.regs, maps, ranges) {
                    return Some(Busy {
                        tid: t.tid,
                        label: r.label.clone(),
                        stack: frames,
                        scanned: true,
                    });
                }
            }
        }
        None
    }

    fn scan<'r>(
        &self,
        regs: &crate::sys::Regs,
        maps: &[Mapping],
        ranges: &'r [BusyRange],
    ) -> Option<&'r BusyRange> {
        let limit = stack_limit(maps, regs.rsp).min(regs.rsp.saturating_add(1 << 20));
        let len = limit.saturating_sub(regs.rsp) as usize;
        let buf = crate::mem::read_vec(self.pid, regs.rsp, len).ok()?;
        buf.chunks_exact(8).find_map(|w| {
            let mut a = [0u8; 8];
            a.copy_from_slice(w);
            let v = u64::from_le_bytes(a);
            ranges.iter().find(|r| v > r.start && v <= r.end)
        })
    }
}

impl PartialEq for Cached {
    fn eq(&self, other: &Self) -> bool {
        matches!(
            (self, other),
            (Cached::Signal, Cached::Signal) | (Cached::NoInfo, Cached::NoInfo)
        )
    }
}

/// End of the mapping holding `sp` (the stack's upper bound).
fn stack_limit(maps: &[Mapping], sp: u64) -> u64 {
    maps.iter()
        .find(|m| sp >= m.start && sp < m.end)
        .map(|m| m.end)
        .unwrap_or(sp)
}
/// Unwind modules of `proc`: every mapped object plus the code of the
/// loaded patches `entries` (their `.eh_frame` read from the target).
pub fn modules(proc: &Process, entries: &[Entry]) -> Vec<Module> {
    let mut m: Vec<Module> = proc.objects.iter().map(Module::from_object).collect();
    for e in entries {
        let r = &e.record;
        if let Some((addr, len)) = r.eh_frame
            && let Ok(bytes) = crate::mem::read_vec(proc.pid, addr, len as usize)
        {
            m.push(Module::from_patch(&r.id, r.code, addr, bytes));
        }
    }
    m
}

/// A busy stack, one symbolized frame a line (`#N pc name+off (object)` or
/// `(patch ID)`), for the error that names it.
pub fn symbolize(syms: &mut SymbolCache<'_>, entries: &[Entry], stack: &[u64]) -> String {
    let mut out = String::new();
    for (i, &pc) in stack.iter().enumerate() {
        let what = if let Some(oi) = syms.proc.objects.iter().position(|o| o.contains_text(pc)) {
            let bias = syms.proc.objects[oi].bias;
            let path = syms.proc.objects[oi].path.clone();
            let f = syms.symbols(oi).ok().and_then(|s| {
                s.containing(pc.wrapping_sub(bias))
                    .map(|s| (s.name.clone(), pc.wrapping_sub(bias).wrapping_sub(s.value)))
            });
            match f {
                Some((n, off)) => format!("{pc:#x} {n}+{off:#x} ({path})"),
                None => format!("{pc:#x} ({path})"),
            }
        } else if let Some(e) = entries
            .iter()
            .find(|e| pc >= e.record.code.0 && pc < e.record.code.1)
        {
            let f = e
                .record
                .funcs
                .iter()
                .map(|f| (f.name.clone(), f.new_addr, f.new_size))
                .chain(e.record.new_funcs.iter().cloned())
                .find(|(_, a, s)| pc >= *a && pc < a.saturating_add(*s));
            match f {
                Some((n, a, _)) => format!("{pc:#x} {n}+{:#x} (patch {})", pc - a, e.record.id),
                None => format!("{pc:#x} (patch {})", e.record.id),
            }
        } else {
            format!("{pc:#x}")
        };
        out.push_str(&format!("  #{i} {what}\n"));
    }
    out
}
