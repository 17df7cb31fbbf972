//! Unwind tables for the patch: the `.eh_frame` records (CIEs and FDEs) of
//! the functions the patch carries, so that a loader can unwind through new
//! code (revert and stacking checks need it; `-O2` code has no frame
//! pointers).
//!
//! Model: `.eh_frame` of a relocatable object is a sequence of records
//! (`u32` length, `u32` id; id 0 is a CIE, otherwise the distance back to
//! the FDE's CIE). An FDE's `pc_begin` (at +8) carries a relocation to the
//! function's section. [`select`] copies every FDE whose `pc_begin` resolves
//! to a carried function, preceded by its CIE (each CIE once), rewrites the
//! CIE pointers, and returns the relocations of the copied bytes at their
//! new offsets; `emit` maps their targets like any other relocation.
//!
//! Invariants: records are copied byte for byte except the CIE pointer;
//! 64-bit (`0xffffffff`) lengths and malformed records end the scan (the
//! patch then lacks unwind data for the rest, never wrong data).

use crate::read::{ObjectFile, Reloc, Target};
use std::collections::HashMap;

/// The selected unwind records.
#[derive(Debug, Clone, Default)]
pub struct EhFrame {
    /// Section contents.
    pub data: Vec<u8>,
    /// Relocations: offset in `data`, and the original relocation.
    pub relocs: Vec<(u64, Reloc)>,
    /// Alignment of the original section.
    pub align: u64,
    /// `sh_type` of the original section.
    pub sh_type: u32,
}

fn u32_at(d: &[u8], at: usize) -> Option<u32> {
    let b = d.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Selects the records of `.eh_frame` in `patched` that describe one of
/// `funcs` (patched symbol indices); `None` when there is nothing to copy.
pub fn select(patched: &ObjectFile, funcs: &[usize]) -> Option<EhFrame> {
    let sec = patched.sections.iter().find(|s| s.name == ".eh_frame")?;
    let d = &sec.data;
    let mut out = EhFrame {
        align: sec.align,
        sh_type: sec.sh_type,
        ..Default::default()
    };
    let mut cie_at: HashMap<usize, usize> = HashMap::new();
    // Relocations are sorted by offset (see `read`): range queries by
    // binary search keep this linear in the section size.
    let relocs_in = |start: usize, end: usize| {
        let lo = sec.relocs.partition_point(|r| r.offset < start as u64);
        let hi = sec.relocs.partition_point(|r| r.offset < end as u64);
        sec.relocs.get(lo..hi.max(lo)).unwrap_or(&[]).iter()
    };
    let mut at = 0usize;
    while let Some(len) = u32_at(d, at) {
        if len == 0 || len == u32::MAX {
            break;
        }
        let Some(end) = at.checked_add(4).and_then(|x| x.checked_add(len as usize)) else {
            break;
        };
        if end > d.len() {
            break;
        }
        let Some(id) = u32_at(d, at + 4) else { break };
        if id != 0 && len < 12 {
            break; // an FDE holds at least its id, pc_begin and pc_range
        }
        if id != 0 {
            let keep = relocs_in(at + 8, at + 12).any(|r| {
                matches!(patched.resolve(r), Target::Entity { sym, .. } if funcs.binary_search(&sym).is_ok())
            });
            let Some(cie) = (at + 4).checked_sub(id as usize) else {
                break;
            };
            if keep {
                let new_cie = match cie_at.get(&cie) {
                    Some(&n) => n,
                    None => {
                        let Some(clen) = u32_at(d, cie) else { break };
                        let Some(cend) = (cie + 4).checked_add(clen as usize) else {
                            break;
                        };
                        let Some(bytes) = d.get(cie..cend) else { break };
                        let n = out.data.len();
                        out.data.extend_from_slice(bytes);
                        for r in relocs_in(cie, cend) {
                            out.relocs
                                .push(((n + (r.offset as usize - cie)) as u64, *r));
                        }
                        cie_at.insert(cie, n);
                        n
                    }
                };
                let n = out.data.len();
                out.data.extend_from_slice(&d[at..end]);
                let ptr = (n + 4 - new_cie) as u32;
                out.data[n + 4..n + 8].copy_from_slice(&ptr.to_le_bytes());
                for r in relocs_in(at, end) {
                    out.relocs.push(((n + (r.offset as usize - at)) as u64, *r));
                }
            }
        }
        at = end;
    }
    (!out.data.is_empty()).then_some(out)
}
