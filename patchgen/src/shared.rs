//! Code sections shared by several functions, or holding code outside any
//! function symbol: the references the assembler resolved itself.
//!
//! Model: with `-ffunction-sections` each function has its own section, and
//! every reference from one function to another is a relocation. Real code
//! breaks that in two ways: a section attribute wins over
//! `-ffunction-sections` (the kernel's `__sched`, `__init`, `noinstr`,
//! `.static_call.text` trampolines...), and gcc's clones of such a function
//! (`foo.part.0`, `foo.cold`, `foo.isra.0`) inherit its section; and inline
//! assembly may place *fixup code* in the function's own section, after the
//! function symbol's end (`.subsection 1`). Within one section the assembler
//! resolves branches and RIP-relative operands to local labels without a
//! relocation, so copying one function alone would break them.
//!
//! [`synthesize`] decodes every region of such a section (each function
//! symbol's range, and each stretch of bytes outside any function) and, for
//! each `rel32` branch or RIP-relative operand whose target lies outside the
//! region and whose field has no relocation, adds the relocation the
//! assembler left out (`R_X86_64_PC32` against the target function's
//! symbol, or the section's symbol for unnamed code). From then on the rest
//! of the pipeline sees an ordinary reference: compared through the
//! correlation, copied or resolved against the original. A `rel8` branch
//! across a region boundary cannot be relocated at all: it is recorded as a
//! [`ShortEdge`], and carrying the code that holds it is refused
//! ([`crate::include`]).
//!
//! Invariants: only relocations are added, never bytes; a field that
//! already has a relocation is never touched; sections with no function
//! symbol (pure assembly) and single-function sections the function covers
//! entirely are left as they are.

use crate::read::{ObjectFile, Reloc};
use iced_x86::{Decoder, DecoderOptions, FlowControl, OpKind};

/// `R_X86_64_PC32`.
const R_PC32: u32 = 2;

/// A `rel8` branch from one region of a shared section into another: the
/// two can only move together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShortEdge {
    /// The code section.
    pub section: usize,
    /// Offset of the branch instruction.
    pub from: u64,
    /// Offset of its target.
    pub to: u64,
}

/// One decodable stretch of a section: a function's range or a gap.
#[derive(Debug, Clone, Copy)]
struct Region {
    start: u64,
    end: u64,
}

/// The regions of code section `sec`: each function symbol's range and the
/// stretches between them. `None` when the section needs no work.
fn regions(obj: &ObjectFile, sec: usize) -> Option<Vec<Region>> {
    let s = obj.sec(sec)?;
    if !s.is_code() || s.data.is_empty() {
        return None;
    }
    let mut funcs: Vec<(u64, u64)> = obj
        .entities_in(sec)
        .filter(|e| e.is_func() && e.size > 0)
        .map(|e| (e.value, e.value.saturating_add(e.size).min(s.size)))
        .collect();
    funcs.sort_unstable();
    funcs.dedup();
    let whole = funcs.len() == 1 && funcs[0] == (0, s.size);
    if funcs.is_empty() || whole {
        return None;
    }
    let mut out = Vec::new();
    let mut at = 0;
    for (a, b) in funcs {
        if a > at {
            out.push(Region { start: at, end: a });
        }
        if b > a.max(at) {
            out.push(Region {
                start: a.max(at),
                end: b,
            });
        }
        at = at.max(b);
    }
    if at < s.size {
        out.push(Region {
            start: at,
            end: s.size,
        });
    }
    Some(out)
}

/// Adds the relocations the assembler resolved inside shared code sections
/// of `obj` and returns the `rel8` edges that cannot be relocated.
pub fn synthesize(obj: &mut ObjectFile) -> Vec<ShortEdge> {
    let mut short = Vec::new();
    for sec in 0..obj.sections.len() {
        let Some(regs) = regions(obj, sec) else {
            continue;
        };
        let mut added = Vec::new();
        for r in &regs {
            scan(obj, sec, *r, &mut added, &mut short);
        }
        if !added.is_empty()
            && let Some(s) = obj.sections.get_mut(sec)
        {
            s.relocs.extend(added);
            s.relocs.sort_by_key(|r| r.offset);
        }
    }
    short
}

/// The symbol a synthesized relocation to `target` in `sec` uses, and the
/// target's offset from it: the function covering `target`, else the
/// section symbol.
fn anchor(obj: &ObjectFile, sec: usize, target: u64) -> Option<(usize, u64)> {
    if let Some(e) = obj
        .entities_in(sec)
        .find(|e| e.is_func() && target >= e.value && target < e.value.saturating_add(e.size))
    {
        return Some((e.index, e.value));
    }
    obj.symbols
        .iter()
        .find(|s| s.is_section() && s.section == Some(sec))
        .map(|s| (s.index, s.value))
}

fn scan(
    obj: &ObjectFile,
    sec: usize,
    r: Region,
    added: &mut Vec<Reloc>,
    short: &mut Vec<ShortEdge>,
) {
    let Some(s) = obj.sec(sec) else { return };
    let Some(bytes) = s.bytes(r.start, r.end - r.start) else {
        return;
    };
    let mut d = Decoder::with_ip(64, bytes, r.start, DecoderOptions::NONE);
    while d.can_decode() {
        let insn = d.decode();
        if insn.is_invalid() {
            return; // data in code: stop, add nothing more for this region
        }
        let co = d.get_constant_offsets(&insn);
        let (field, size, target) =
            if matches!(insn.op0_kind(), OpKind::NearBranch64 | OpKind::NearBranch32)
                && matches!(
                    insn.flow_control(),
                    FlowControl::Call
                        | FlowControl::UnconditionalBranch
                        | FlowControl::ConditionalBranch
                )
            {
                (
                    insn.ip() + co.immediate_offset() as u64,
                    co.immediate_size(),
                    insn.near_branch_target(),
                )
            } else if insn.is_ip_rel_memory_operand() && co.has_displacement() {
                (
                    insn.ip() + co.displacement_offset() as u64,
                    co.displacement_size(),
                    insn.ip_rel_memory_address(),
                )
            } else {
                continue;
            };
        if target >= r.start && target < r.end {
            continue;
        }
        if !s.relocs_in(field, field + size as u64).is_empty() {
            continue; // the compiler's own relocation
        }
        if target >= s.size {
            continue; // not into this section: nothing the assembler resolved
        }
        if size != 4 {
            short.push(ShortEdge {
                section: sec,
                from: insn.ip(),
                to: target,
            });
            continue;
        }
        let Some((sym, base)) = anchor(obj, sec, target) else {
            short.push(ShortEdge {
                section: sec,
                from: insn.ip(),
                to: target,
            });
            continue;
        };
        // PC32: value = S + A - P and the CPU adds it to the next
        // instruction's address.
        let next = insn.next_ip();
        let addend = target as i64 - base as i64 - (next as i64 - field as i64);
        added.push(Reloc {
            offset: field,
            r_type: R_PC32,
            symbol: sym,
            addend,
        });
    }
}
