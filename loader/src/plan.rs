//! Step 1 of apply, touching nothing: what to do, decided from the patch,
//! the target's objects and symbols, and its live bytes.
//!
//! Model: a [`Plan`] holds, per replaced function, where it is, the site of
//! its entry jump and the bytes that jump will replace ([`Planned`]); the
//! mode ([`Plan::switch`]: entry sites on one page get 5-byte jumps written
//! in one write, on several pages they go through the slots and detours of
//! [`crate::detour`]); and every reference of the patch resolved to an
//! address or a thread-pointer offset ([`Plan::resolved`]).
//!
//! Invariants: nothing is written and no thread is stopped; every
//! difference from what the patch expects (build-id, symbol size, expected
//! bytes in the file, live bytes that are neither the file's nor a known
//! patch's jump) is an error and the target is untouched. Addresses and
//! sizes from the target's symbol tables are added with checked arithmetic
//! ([`span`], [`check_entry`]): a hostile table gives an error, not a
//! wrapped range.

use crate::error::{Error, Result};
use crate::link::Resolved;
use crate::mem::{self, PAGE};
use crate::ops::Patch;
use crate::registry::{Entry, State};
use crate::target::{Object, Process, Query, SymbolCache};
use crate::{detour, trampoline};
use patchgen::format::{Binding, Func, Kind, Meta, Ref};
use std::collections::HashMap;

/// One replaced function, planned.
#[derive(Debug, Clone)]
pub struct Planned {
    /// Index of its object in the process's objects.
    pub object: usize,
    /// Its name.
    pub name: String,
    /// Its address in the target.
    pub old_addr: u64,
    /// Its size.
    pub old_size: u64,
    /// One past its end (`old_addr + old_size`, checked).
    pub end: u64,
    /// Where the entry jump goes (after `endbr64` when present).
    pub site: u64,
    /// The live bytes from the site (up to 32), the source of a detour.
    pub live_entry: Vec<u8>,
    /// The bytes the entry write replaces (5, or 6 with a switch).
    pub saved: Vec<u8>,
    /// The patch's symbol for the new function.
    pub new_symbol: String,
    /// When stacking: the new code of the patch whose jump is at the site.
    pub prev: Option<(u64, u64)>,
}

/// What apply will do.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The patch's targets, as indices into the process's objects.
    pub targets: Vec<usize>,
    /// The replaced functions, in the patch's order.
    pub funcs: Vec<Planned>,
    /// Entry sites on more than one page: switch through slots.
    pub switch: bool,
    /// The patch's undefined symbols, resolved.
    pub resolved: HashMap<String, Resolved>,
}

impl Plan {
    /// The length of each entry write.
    pub fn entry_len(&self) -> usize {
        if self.switch { detour::JUMP_LEN } else { 5 }
    }
}

/// `addr + size`, or an error if the range leaves the address space.
pub fn span(addr: u64, size: u64) -> std::result::Result<u64, String> {
    addr.checked_add(size).ok_or_else(|| {
        format!(
            "the function at {addr:#x} of {size:#x} bytes runs past the end of the address space"
        )
    })
}

/// Checks that an entry write of `len` bytes at `site` lies inside the
/// function `[addr, addr + size)` and within one page.
pub fn check_entry(addr: u64, size: u64, site: u64, len: u64) -> std::result::Result<(), String> {
    let end = span(addr, size)?;
    let site_end = span(site, len)?;
    if site < addr || site_end > end {
        return Err(format!("function is too small for a {len}-byte entry jump"));
    }
    if len > 0 && site / PAGE != (site_end - 1) / PAGE {
        return Err(format!(
            "its {len}-byte entry site {site:#x} straddles a page boundary, so a kill of hotfix could tear the write"
        ));
    }
    Ok(())
}

/// Plans `patch` for process `proc`, whose loaded patches are `entries`.
pub fn plan(
    proc: &Process,
    entries: &[Entry],
    patch: &Patch,
    syms: &mut SymbolCache<'_>,
) -> Result<Plan> {
    let meta = &patch.meta;
    refuse_reapply(proc.pid, entries, meta)?;
    let targets: Vec<usize> = meta
        .targets
        .iter()
        .map(|t| object_index(proc, &t.build_id, &t.name))
        .collect::<Result<_>>()?;
    let mut funcs = Vec::new();
    for f in &meta.funcs {
        let oi = target_of(patch, &targets, f.target)?;
        funcs.push(plan_func(proc, entries, patch, syms, oi, f)?);
    }
    let switch = choose_mode(proc, patch, &mut funcs)?;
    let mut resolved = HashMap::new();
    for r in &meta.refs {
        let oi = target_of(patch, &targets, r.target)?;
        resolved.insert(r.symbol.clone(), resolve_ref(proc, patch, syms, oi, r)?);
    }
    Ok(Plan {
        targets,
        funcs,
        switch,
        resolved,
    })
}

fn refuse_reapply(pid: i32, entries: &[Entry], meta: &Meta) -> Result<()> {
    match entries
        .iter()
        .find(|e| e.record.id == meta.id && e.state != State::Inactive)
    {
        Some(e) => Err(Error::Registry {
            pid,
            id: meta.id.clone(),
            reason: format!("is already applied ({:?})", e.state).to_lowercase(),
        }),
        None => Ok(()),
    }
}

fn target_of(patch: &Patch, targets: &[usize], i: usize) -> Result<usize> {
    targets.get(i).copied().ok_or_else(|| Error::Patch {
        path: patch.path.clone(),
        reason: format!("names target {i}, which does not exist"),
    })
}

fn sym_query<'a>(name: &'a str, binding: Binding, file: Option<&'a str>, sympos: u32) -> Query<'a> {
    Query {
        name,
        local: binding == Binding::Local,
        file,
        sympos,
    }
}

fn object_index(proc: &Process, build_id: &str, name: &str) -> Result<usize> {
    proc.objects
        .iter()
        .position(|o| !build_id.is_empty() && o.build_id.eq_ignore_ascii_case(build_id))
        .ok_or_else(|| Error::NoMatchingObject {
            pid: proc.pid,
            build_id: if build_id.is_empty() {
                "(none: the patch is not stamped with a build-id)".into()
            } else {
                build_id.to_string()
            },
            name: name.to_string(),
        })
}

/// Finds replaced function `f` in object `oi` and checks its size, its
/// expected bytes against the file, and its live bytes against the file or
/// (stacking) the jump of the newest patch of that function.
fn plan_func(
    proc: &Process,
    entries: &[Entry],
    patch: &Patch,
    syms: &mut SymbolCache<'_>,
    oi: usize,
    f: &Func,
) -> Result<Planned> {
    let pid = proc.pid;
    let obj = &proc.objects[oi];
    let s = syms
        .symbols(oi)?
        .lookup(sym_query(&f.name, f.binding, f.file.as_deref(), f.sympos))
        .map_err(|reason| Error::Symbol {
            object: obj.path.clone(),
            name: f.name.clone(),
            reason,
        })?
        .clone();
    let old_addr = obj.bias.wrapping_add(s.value);
    let mismatch = |reason: String| Error::ExpectedBytes {
        pid,
        func: f.name.clone(),
        addr: old_addr,
        object: obj.path.clone(),
        reason,
    };
    if s.size != f.old_size {
        return Err(mismatch(format!(
            "size is {} bytes, the patch expects {}",
            s.size, f.old_size
        )));
    }
    let end = span(old_addr, s.size).map_err(mismatch)?;
    let (Ok(expected), Ok(mask)) = (hex::decode(&f.expected), hex::decode(&f.expected_mask)) else {
        return Err(Error::Patch {
            path: patch.path.clone(),
            reason: format!("function {}: expected bytes are not hex", f.name),
        });
    };
    let n = expected.len().max(16);
    let file = obj
        .file_bytes(s.value, n.min(s.size.max(5) as usize))
        .ok_or_else(|| mismatch("function bytes are not in the file".into()))?
        .to_vec();
    trampoline::check_expected(&expected, &mask, &file).map_err(mismatch)?;
    let site_off = trampoline::site_offset(&file);
    let site = old_addr + site_off;
    if span(site, 5).map_err(&mismatch)? > end {
        return Err(mismatch("function is too small for a 5-byte jump".into()));
    }
    let live = mem::read_vec(pid, old_addr, file.len())?;
    let prev = if live == file {
        None
    } else {
        Some(stacked_on(entries, site, site_off as usize, &live, &file).map_err(mismatch)?)
    };
    let live_entry = mem::read_vec(pid, site, (s.size - site_off).min(32) as usize)?;
    Ok(Planned {
        object: oi,
        name: f.name.clone(),
        old_addr,
        old_size: s.size,
        end,
        site,
        live_entry,
        saved: Vec::new(),
        new_symbol: f.new_symbol.clone(),
        prev,
    })
}

/// Stacking: the live bytes differ from the file only by the jump of the
/// newest patch of this site (at offset `so`); its new code.
fn stacked_on(
    entries: &[Entry],
    site: u64,
    so: usize,
    live: &[u8],
    file: &[u8],
) -> std::result::Result<(u64, u64), String> {
    let top = entries.iter().rev().find_map(|e| {
        e.record.funcs.iter().find(|r| {
            let j = r.jump_bytes();
            r.site == site && !j.is_empty() && live.get(so..so + j.len()) == Some(&j[..])
        })
    });
    let jl = top.map(|r| r.jump_bytes().len()).unwrap_or(5);
    let rest_ok = live.get(..so) == file.get(..so) && live.get(so + jl..) == file.get(so + jl..);
    match top {
        Some(r) if rest_ok => Ok((r.new_addr, r.new_size)),
        _ => Err(format!(
            "live bytes {} differ from the file's {} and are not a known patch's jump",
            hex::encode(live),
            hex::encode(file)
        )),
    }
}

/// Entry sites on more than one page: switch through slots (see
/// [`crate::detour`]); otherwise 5-byte jumps written in one write. Checks
/// every entry for the chosen mode and fills in the bytes it replaces.
fn choose_mode(proc: &Process, patch: &Patch, funcs: &mut [Planned]) -> Result<bool> {
    let mut pages: Vec<u64> = funcs.iter().map(|p| p.site / PAGE).collect();
    pages.sort();
    pages.dedup();
    let switch = pages.len() > 1;
    let entry_len = if switch { detour::JUMP_LEN } else { 5 };
    if switch && funcs.len() as u64 > detour::MAX_SLOTS {
        return Err(Error::Patch {
            path: patch.path.clone(),
            reason: format!(
                "{} functions on several pages; at most {} can be switched at once",
                funcs.len(),
                detour::MAX_SLOTS
            ),
        });
    }
    for p in funcs {
        let obj = &proc.objects[p.object];
        let refuse = |reason: String| Error::Entry {
            pid: proc.pid,
            func: p.name.clone(),
            addr: p.old_addr,
            object: obj.path.clone(),
            reason,
        };
        check_entry(p.old_addr, p.old_size, p.site, entry_len as u64).map_err(refuse)?;
        p.saved = p
            .live_entry
            .get(..entry_len)
            .ok_or_else(|| refuse("its live entry is shorter than the jump".into()))?
            .to_vec();
        if switch {
            check_detour(obj, p).map_err(refuse)?;
        }
    }
    Ok(switch)
}

/// A switched function's entry must relocate into a detour, and no branch of
/// the function may land inside the bytes the detour displaces.
fn check_detour(obj: &Object, p: &Planned) -> std::result::Result<(), String> {
    let (_, covered) = detour::build(&p.live_entry, p.site, p.site)?;
    let code = obj
        .file_bytes(p.old_addr.wrapping_sub(obj.bias), p.old_size as usize)
        .ok_or("function bytes are not in the file")?;
    match detour::branch_into(code, p.old_addr, p.site, p.site + covered as u64) {
        Some((from, to)) => Err(format!(
            "the branch at {from:#x} targets {to:#x}, inside the {covered} entry bytes a switch would displace"
        )),
        None => Ok(()),
    }
}

/// Resolves reference `r` of the patch: a local or global of its object
/// `oi`, an import from another mapped object, or a TLS variable of the main
/// executable (as a thread-pointer offset).
fn resolve_ref(
    proc: &Process,
    patch: &Patch,
    syms: &mut SymbolCache<'_>,
    oi: usize,
    r: &Ref,
) -> Result<Resolved> {
    let obj = &proc.objects[oi];
    let q = sym_query(&r.name, r.binding, r.file.as_deref(), r.sympos);
    let sym_err = |reason: String| Error::Symbol {
        object: obj.path.clone(),
        name: r.name.clone(),
        reason,
    };
    match (syms.symbols(oi)?.lookup(q).cloned(), r.kind) {
        (Ok(s), Kind::Tls) => {
            if !obj.is_main {
                return Err(Error::Unsupported {
                    path: patch.path.clone(),
                    reason: format!(
                        "thread-local {} is in {}, not the main executable; only the main executable's TLS is supported",
                        r.name, obj.path
                    ),
                });
            }
            let Some((_, memsz, align)) = obj.tls else {
                return Err(sym_err(
                    "thread-local symbol but the object has no PT_TLS".into(),
                ));
            };
            let block = memsz.div_ceil(align) * align;
            Ok(Resolved::Tls(s.value as i64 - block as i64))
        }
        (Ok(s), _) if s.kind == goblin::elf::sym::STT_TLS => Err(sym_err(
            "is thread-local but the patch does not say so".into(),
        )),
        (Ok(s), _) => Ok(Resolved::Addr(obj.bias.wrapping_add(s.value))),
        (Err(reason), _) if r.binding == Binding::Local => Err(sym_err(reason)),
        (Err(reason), _) => match resolve_import(proc, syms, oi, &r.name, q)? {
            Some(a) => Ok(Resolved::Addr(a)),
            None => Err(sym_err(format!(
                "{reason}, and no other mapped object defines it"
            ))),
        },
    }
}

/// An import of object `oi`: its definition in another object's symbols.
fn resolve_import(
    proc: &Process,
    syms: &mut SymbolCache<'_>,
    oi: usize,
    name: &str,
    q: Query<'_>,
) -> Result<Option<u64>> {
    for (k, o) in proc.objects.iter().enumerate() {
        if k == oi {
            continue;
        }
        let Ok(s) = syms.symbols(k)?.lookup(q) else {
            continue;
        };
        if s.kind != goblin::elf::sym::STT_GNU_IFUNC {
            return Ok(Some(o.bias.wrapping_add(s.value)));
        }
        // Its value is the resolver (strlen, memcpy... in libc): call what
        // the dynamic linker chose.
        return ifunc_target(proc.pid, &proc.objects, oi, name)?
            .map(Some)
            .ok_or_else(|| Error::Symbol {
                object: o.path.clone(),
                name: name.to_string(),
                reason: "is an IFUNC and no mapped object has a GOT entry for it".into(),
            });
    }
    Ok(None)
}

/// Where an IFUNC import really goes: what the dynamic linker stored in a
/// `JUMP_SLOT` or `GLOB_DAT` GOT entry of an object importing `name` (the
/// referencing object `first`, then the others). Under lazy binding that is
/// still the PLT entry, which binds on its first call.
fn ifunc_target(pid: i32, objects: &[Object], first: usize, name: &str) -> Result<Option<u64>> {
    use goblin::elf::reloc::{R_X86_64_GLOB_DAT, R_X86_64_JUMP_SLOT};
    let others = (0..objects.len()).filter(|k| *k != first);
    for k in std::iter::once(first).chain(others) {
        let Some(o) = objects.get(k) else { continue };
        let Ok(elf) = goblin::elf::Elf::parse(&o.data) else {
            continue;
        };
        for r in elf.pltrelocs.iter().chain(elf.dynrelas.iter()) {
            if r.r_type != R_X86_64_JUMP_SLOT && r.r_type != R_X86_64_GLOB_DAT {
                continue;
            }
            let sym = elf.dynsyms.get(r.r_sym);
            if sym.and_then(|s| elf.dynstrtab.get_at(s.st_name)) == Some(name) {
                let v = mem::read_u64(pid, o.bias.wrapping_add(r.r_offset))?;
                if v != 0 {
                    return Ok(Some(v));
                }
            }
        }
    }
    Ok(None)
}
