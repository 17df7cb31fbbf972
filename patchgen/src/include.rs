//! Closing the set of changed functions over what they need.
//!
//! Model: the patch carries code for every changed and new function, every
//! new data object, every changed read-only static local copied for its
//! users, and, transitively, every *anonymous* section their relocations
//! reach (jump tables, mergeable constants). Strings are not sections here:
//! `emit` copies each referenced string literal by content. Everything
//! else a relocation reaches exists in the original and becomes a reference
//! resolved at load time.
//!
//! Two kinds of unnamed sections are carried too: code reached in a
//! function's own (or shared) code section outside any function symbol —
//! fixup code — is copied with its whole section; and clang's private
//! writable objects (`.data..L__unnamed_1`: sanitizer source locations and
//! other data without a symbol) are copied *fresh* like the special statics
//! of [`crate::correlate`]: having no name, the running copy cannot be
//! referenced.
//!
//! Invariants: every entity in the plan has no original or is changed or
//! copied; no writable anonymous section is copied unless it is a
//! compiler-private object (`..L` in its name); carried code never holds a
//! `rel8` branch into code left behind ([`crate::shared::ShortEdge`]); the
//! plan lists symbols and sections in increasing index order, so output is
//! deterministic.

use crate::Error;
use crate::compare::Analysis;
use crate::read::{ObjectFile, Target};
use std::collections::BTreeSet;

/// What the patch object carries (indices into the patched object).
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Functions copied as code.
    pub funcs: Vec<usize>,
    /// Data objects copied (new, copied read-only, and new data they reach).
    pub data: Vec<usize>,
    /// Anonymous sections copied whole.
    pub anon: Vec<usize>,
}

impl Plan {
    /// Whether patched entity `sym` is defined in the patch.
    pub fn defines(&self, sym: usize) -> bool {
        self.funcs.binary_search(&sym).is_ok() || self.data.binary_search(&sym).is_ok()
    }
}

/// Refuses a plan whose carried code holds a `rel8` branch to code outside
/// it: the copy could not reach it.
fn check_short_edges(
    patched: &ObjectFile,
    funcs: &BTreeSet<usize>,
    anon: &BTreeSet<usize>,
) -> Result<(), Error> {
    for e in &patched.short_edges {
        if anon.contains(&e.section) {
            continue; // the whole section travels
        }
        let holder = funcs.iter().filter_map(|&f| patched.sym(f)).find(|f| {
            f.section == Some(e.section) && e.from >= f.value && e.from < f.value + f.size
        });
        if let Some(f) = holder {
            let sec = patched.sec(e.section).map_or("?", |s| s.name.as_str());
            return Err(Error::Unresolvable {
                file: patched.name.clone(),
                symbol: f.name.clone(),
                reason: format!(
                    "a short (rel8) branch at {sec}+{:#x} reaches {sec}+{:#x}, code of the shared section that is not carried; rebuild with -fno-reorder-blocks-and-partition or carry it by hand",
                    e.from, e.to
                ),
            });
        }
    }
    Ok(())
}

/// Builds the plan for `an` over the patched object.
pub fn plan(patched: &ObjectFile, an: &Analysis) -> Result<Plan, Error> {
    let mut funcs: BTreeSet<usize> = an.changed.iter().map(|c| c.patched).collect();
    funcs.extend(an.new_funcs.iter().copied());
    let mut data: BTreeSet<usize> = an.new_data.iter().copied().collect();
    data.extend(an.copied_data.iter().copied());
    let mut anon: BTreeSet<usize> = BTreeSet::new();
    // Worklist of containers: Ok(entity) or Err(anonymous section).
    let mut work: Vec<Result<usize, usize>> =
        funcs.iter().chain(data.iter()).map(|&s| Ok(s)).collect();
    while let Some(item) = work.pop() {
        let (relocs, who): (Vec<_>, String) = match item {
            Ok(s) => match patched.sym(s) {
                Some(sym) => (
                    patched.symbol_relocs(sym).copied().collect(),
                    sym.name.clone(),
                ),
                None => continue,
            },
            Err(sec) => match patched.sec(sec) {
                Some(section) => (section.relocs.clone(), section.name.clone()),
                None => continue,
            },
        };
        for r in &relocs {
            match patched.resolve(r) {
                Target::Entity { sym, .. } => {
                    if funcs.contains(&sym) || data.contains(&sym) {
                        continue;
                    }
                    if an.corr.orig_of(sym).is_some() {
                        continue; // a reference to the original
                    }
                    let Some(t) = patched.sym(sym) else { continue };
                    if t.is_func() {
                        funcs.insert(sym);
                    } else {
                        data.insert(sym);
                    }
                    work.push(Ok(sym));
                }
                Target::Anon { section, .. } => {
                    let Some(sec) = patched.sec(section) else {
                        continue;
                    };
                    let private =
                        sec.name.contains("..L") && patched.entities_in(section).next().is_none();
                    if (sec.is_writable() && !private) || !sec.is_alloc() {
                        return Err(Error::Unresolvable {
                            file: patched.name.clone(),
                            symbol: who,
                            reason: format!(
                                "references {}+{:#x}, which has no symbol and cannot be copied",
                                sec.name, r.addend
                            ),
                        });
                    }
                    if anon.insert(section) {
                        work.push(Err(section));
                    }
                }
                Target::Absolute { sym, .. } if sym != 0 => {
                    return Err(Error::Unresolvable {
                        file: patched.name.clone(),
                        symbol: who,
                        reason: "references an absolute or common symbol".into(),
                    });
                }
                _ => {}
            }
        }
    }
    check_short_edges(patched, &funcs, &anon)?;
    Ok(Plan {
        funcs: funcs.into_iter().collect(),
        data: data.into_iter().collect(),
        anon: anon.into_iter().collect(),
    })
}
