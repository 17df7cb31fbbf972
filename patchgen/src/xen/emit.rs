//! Writing the Xen live-patch payload: one relocatable ELF object that Xen's
//! own loader (`xen/common/livepatch.c`, `livepatch_elf.c`) accepts.
//!
//! Model: the input is, per recompiled object, the patch object of the
//! shared object diff ([`crate::diff_objects`]: new code in `.text.<name>`
//! sections at offset 0, strings, new read-only data, undefined symbols with
//! a [`crate::format::Ref`] each) and the recompiled object itself (for its
//! special sections). The payload gets:
//!
//! - every allocated section of the patch objects, relocations kept (Xen's
//!   x86 loader applies `R_X86_64_64`, `PC32`, `PLT32` only: anything else
//!   is refused here);
//! - every reference to the hypervisor as an `SHN_ABS` symbol holding the
//!   address from the target `xen-syms`. Xen's loader resolves undefined
//!   symbols by name only (`symbols_lookup_by_name`), which cannot tell
//!   apart the many same-named `static` functions and variables (three
//!   `trace_emulate_write_val` in the shadow code alone); Xen is linked at
//!   fixed addresses, so resolving at build time by name, source file and
//!   position is exact, and absolute symbols are accepted as they are;
//! - `.livepatch.funcs`: one `struct livepatch_func` per replaced function
//!   (`old_addr` absolute, `new_addr` and `name` by `R_X86_64_64`, sizes,
//!   version, and expected bytes: the first bytes of the old function in
//!   `xen-syms`, up to `LIVEPATCH_OPAQUE_SIZE`, cut before any site that
//!   Xen's boot-time alternatives may have rewritten);
//! - `.livepatch.xen_depends` (the hypervisor's build-id),
//!   `.livepatch.depends` (the payload below, or the hypervisor's build-id)
//!   and the payload's own `.note.gnu.build-id` (SHA-256 of its name and
//!   contents, 20 bytes);
//! - the entries of `.altinstructions`, `.ex_table` and `.bug_frames.N`
//!   whose first field points into an included function, with the
//!   sections they need (`.altinstr_replacement` — one section, as Xen's
//!   loader looks it up by name —, `.fixup`, strings) copied whole. Entry
//!   sizes come from the tree's headers ([`super::build::Sizes`]); an
//!   assertion frame (`.bug_frames.3`) is two `struct bug_frame`s.
//!
//! Symbols the payload defines are local; new functions and data are
//! renamed `NAME.PAYLOAD` because Xen refuses a new symbol whose name the
//! hypervisor or a loaded payload already has; replaced functions keep
//! their name (Xen recognises them by `new_addr`).
//!
//! Invariants: no undefined symbol is left; every relocation's type is one
//! Xen applies; anonymous references to writable data are refused (a copy
//! would not be the running hypervisor's data).

use super::build::Sizes;
use super::target::XenSyms;
use crate::Error;
use crate::format::{Binding, Meta};
use crate::read::{ObjectFile, Reloc, Section, Target, shf, sht};
use object::write::{Object, Relocation, SectionId, Symbol, SymbolId, SymbolSection};
use object::{
    Architecture, BinaryFormat, Endianness, RelocationFlags, SectionFlags, SectionKind,
    SymbolFlags, SymbolKind, SymbolScope, elf,
};
use serde::Serialize;
use sha2::Digest;
use std::collections::{BTreeMap, HashMap};

/// Relocation types Xen's x86 payload loader applies.
pub const XEN_RELOCS: &[u32] = &[0, 1, 2, 4];

/// One recompiled object's contribution.
#[derive(Debug)]
pub struct Part<'a> {
    /// Object path relative to `xen/`.
    pub rel: String,
    /// The recompiled object (its special sections).
    pub patched: &'a ObjectFile,
    /// The object diff's patch object.
    pub patch: &'a ObjectFile,
    /// Its metadata.
    pub meta: &'a Meta,
}

/// What the payload is for.
#[derive(Debug)]
pub struct PayloadInput<'a> {
    /// Payload name (what Xen lists).
    pub name: &'a str,
    /// The target hypervisor.
    pub xen: &'a XenSyms,
    /// ABI sizes from the tree's headers.
    pub sizes: &'a Sizes,
    /// `.livepatch.depends`: build-id of the payload below, or of the
    /// hypervisor.
    pub depends: Vec<u8>,
    /// The contributions.
    pub parts: Vec<Part<'a>>,
}

/// One `struct livepatch_func` record written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PayloadFunc {
    /// Function name.
    pub name: String,
    /// Its source file, for a local function.
    pub file: Option<String>,
    /// Object it came from.
    pub object: String,
    /// `old_addr` (hex).
    pub old_addr: String,
    /// `old_size`.
    pub old_size: u64,
    /// `new_size`.
    pub new_size: u64,
    /// Expected bytes (hex) Xen checks before patching.
    pub expect: String,
}

/// The written payload.
#[derive(Debug, Clone, Serialize)]
pub struct Emitted {
    /// ELF bytes.
    #[serde(skip)]
    pub bytes: Vec<u8>,
    /// Its own build-id (hex).
    pub build_id: String,
    /// The records of `.livepatch.funcs`.
    pub funcs: Vec<PayloadFunc>,
    /// New functions carried (payload symbol names).
    pub new_funcs: Vec<String>,
    /// References resolved against `xen-syms`: (name, address hex).
    pub resolved: Vec<(String, String)>,
    /// Special-section entries carried: section → count.
    pub special: BTreeMap<String, usize>,
}

fn eerr(file: &str, reason: impl std::fmt::Display) -> Error {
    Error::Emit {
        file: file.to_owned(),
        reason: reason.to_string(),
    }
}

fn out_flags(flags: u64) -> u64 {
    flags & (shf::WRITE | shf::ALLOC | shf::EXECINSTR)
}

fn kind_of(flags: u64, sh_type: u32) -> SectionKind {
    if sh_type == sht::NOBITS {
        SectionKind::UninitializedData
    } else if flags & shf::EXECINSTR != 0 {
        SectionKind::Text
    } else if flags & shf::WRITE != 0 {
        SectionKind::Data
    } else {
        SectionKind::ReadOnlyData
    }
}

/// A copy of section `s` (name, kind, write/alloc/exec flags, contents or
/// size) added to `obj`.
fn copy_section(obj: &mut Object<'static>, s: &Section) -> SectionId {
    let id = obj.add_section(
        Vec::new(),
        s.name.as_bytes().to_vec(),
        kind_of(s.flags, s.sh_type),
    );
    obj.section_mut(id).flags = SectionFlags::Elf {
        sh_type: elf::SectionType(if s.sh_type == sht::NOBITS {
            sht::NOBITS
        } else {
            sht::PROGBITS
        }),
        sh_flags: elf::SectionFlags(out_flags(s.flags)),
    };
    if s.sh_type == sht::NOBITS {
        obj.append_section_bss(id, s.size, s.align.max(1));
    } else {
        obj.set_section_data(id, s.data.clone(), s.align.max(1));
    }
    id
}

/// GNU build-id note bytes for `id`.
pub fn build_id_note(id: &[u8]) -> Vec<u8> {
    let mut n = Vec::with_capacity(16 + id.len());
    n.extend_from_slice(&4u32.to_le_bytes());
    n.extend_from_slice(&(id.len() as u32).to_le_bytes());
    n.extend_from_slice(&3u32.to_le_bytes()); // NT_GNU_BUILD_ID
    n.extend_from_slice(b"GNU\0");
    n.extend_from_slice(id);
    while n.len() % 4 != 0 {
        n.push(0);
    }
    n
}

struct Writer<'a> {
    input: &'a PayloadInput<'a>,
    obj: Object<'static>,
    out: String,
    /// (part, patch symbol index) → payload symbol.
    defined: HashMap<(usize, usize), SymbolId>,
    /// (part, patch section index) → payload section.
    patch_sections: HashMap<(usize, usize), SectionId>,
    /// Absolute symbols by address and name.
    abs: HashMap<(String, u64), SymbolId>,
    /// (part, patched-object section) → (payload section, base offset).
    aux: HashMap<(usize, usize), (SectionId, u64)>,
    /// Aux copies whose relocations are still to be added.
    aux_pending: Vec<(usize, usize, SectionId, u64)>,
    /// Shared payload sections by name (`.altinstr_replacement`,
    /// `.altinstructions`, `.ex_table`, `.bug_frames.N`).
    shared: HashMap<String, SectionId>,
    resolved: Vec<(String, String)>,
}

impl Writer<'_> {
    fn absolute(&mut self, name: &str, addr: u64) -> SymbolId {
        let key = (name.to_owned(), addr);
        if let Some(&id) = self.abs.get(&key) {
            return id;
        }
        let id = self.obj.add_symbol(Symbol {
            name: name.as_bytes().to_vec(),
            value: addr,
            size: 0,
            kind: SymbolKind::Data,
            scope: SymbolScope::Compilation,
            weak: false,
            section: SymbolSection::Absolute,
            flags: SymbolFlags::None,
        });
        self.abs.insert(key, id);
        self.resolved.push((name.to_owned(), format!("{addr:#x}")));
        id
    }

    fn resolve_xen(
        &mut self,
        part: &Part<'_>,
        name: &str,
        binding: Binding,
        file: Option<&str>,
        sympos: u32,
    ) -> Result<SymbolId, Error> {
        let s = self
            .input
            .xen
            .resolve(name, binding, file, sympos)
            .map_err(|reason| Error::Unresolvable {
                file: part.patched.name.clone(),
                symbol: name.to_owned(),
                reason,
            })?;
        let addr = s.addr;
        Ok(self.absolute(name, addr))
    }

    fn shared(&mut self, name: &str, flags: u64, align: u64) -> SectionId {
        if let Some(&id) = self.shared.get(name) {
            return id;
        }
        let id = self.obj.add_section(
            Vec::new(),
            name.as_bytes().to_vec(),
            kind_of(flags, sht::PROGBITS),
        );
        self.obj.section_mut(id).flags = SectionFlags::Elf {
            sh_type: elf::SectionType(sht::PROGBITS),
            sh_flags: elf::SectionFlags(flags),
        };
        self.obj.set_section_data(id, Vec::new(), align.max(1));
        self.shared.insert(name.to_owned(), id);
        id
    }

    /// A whole section of the patched object, copied once per part.
    fn aux_section(&mut self, pi: usize, sec: usize) -> Result<(SectionId, u64), Error> {
        if let Some(&v) = self.aux.get(&(pi, sec)) {
            return Ok(v);
        }
        let part = &self.input.parts[pi];
        let s = part
            .patched
            .sec(sec)
            .ok_or_else(|| eerr(&self.out, "internal: bad section index"))?;
        if s.flags & shf::WRITE != 0 {
            return Err(Error::Unresolvable {
                file: part.patched.name.clone(),
                symbol: s.name.clone(),
                reason: "special-section entry refers to writable data by section: a copy would not be the hypervisor's data".into(),
            });
        }
        let (id, base) = if s.name == ".altinstr_replacement" {
            let id = self.shared(".altinstr_replacement", shf::ALLOC | shf::EXECINSTR, 1);
            let base = self.obj.append_section_data(id, &s.data, s.align.max(1));
            (id, base)
        } else {
            (copy_section(&mut self.obj, s), 0)
        };
        self.aux.insert((pi, sec), (id, base));
        self.aux_pending.push((pi, sec, id, base));
        Ok((id, base))
    }

    /// The payload symbol of an included function or datum of part `pi`,
    /// by its name in the recompiled object.
    fn included(&self, pi: usize, name: &str) -> Option<SymbolId> {
        let part = &self.input.parts[pi];
        part.patch
            .symbols
            .iter()
            .find(|s| s.name == name && s.section.is_some() && !s.undefined && !s.is_section())
            .and_then(|s| self.defined.get(&(pi, s.index)).copied())
    }

    /// Maps a relocation of the recompiled object (special sections and
    /// their aux copies) into the payload.
    fn map_patched(&mut self, pi: usize, r: &Reloc) -> Result<Option<(SymbolId, i64)>, Error> {
        let part = &self.input.parts[pi];
        let p = part.patched;
        Ok(Some(match p.resolve(r) {
            Target::Entity { sym, offset } => {
                let e = p
                    .sym(sym)
                    .ok_or_else(|| eerr(&self.out, "internal: bad symbol"))?;
                match self.included(pi, &e.name) {
                    Some(id) => (id, offset),
                    None => {
                        let file = (e.bind == crate::read::Bind::Local)
                            .then(|| e.file.clone())
                            .flatten();
                        let name = e.name.clone();
                        let id = self.resolve_xen(
                            part,
                            &name,
                            e.bind.into(),
                            file.as_deref(),
                            p.sympos(sym),
                        )?;
                        (id, offset)
                    }
                }
            }
            Target::Undefined { sym, addend } => {
                let e = p
                    .sym(sym)
                    .ok_or_else(|| eerr(&self.out, "internal: bad symbol"))?;
                let name = e.name.clone();
                (
                    self.resolve_xen(part, &name, Binding::Global, None, 0)?,
                    addend,
                )
            }
            Target::Str {
                section,
                start,
                rel,
                ..
            } => {
                let (id, base) = self.aux_section(pi, section)?;
                (
                    self.obj.section_symbol(id),
                    (base.wrapping_add(start) as i64).wrapping_add(rel),
                )
            }
            Target::Anon { section, offset } => {
                // Inside a function's section but outside the symbol: the
                // hypervisor's copy of that function.
                if let Some(f) = p.entities_in(section).find(|e| e.is_func()).cloned() {
                    if let Some(id) = self.included(pi, &f.name) {
                        (id, offset.wrapping_sub(f.value as i64))
                    } else {
                        let file = (f.bind == crate::read::Bind::Local)
                            .then(|| f.file.clone())
                            .flatten();
                        let id = self.resolve_xen(
                            part,
                            &f.name,
                            f.bind.into(),
                            file.as_deref(),
                            p.sympos(f.index),
                        )?;
                        (id, offset.wrapping_sub(f.value as i64))
                    }
                } else {
                    let (id, base) = self.aux_section(pi, section)?;
                    (
                        self.obj.section_symbol(id),
                        (base as i64).wrapping_add(offset),
                    )
                }
            }
            Target::Absolute { .. } => {
                if r.r_type == 0 {
                    return Ok(None);
                }
                return Err(Error::Unresolvable {
                    file: p.name.clone(),
                    symbol: format!("relocation at {:#x}", r.offset),
                    reason: "relocation against an absolute symbol".into(),
                });
            }
        }))
    }

    /// Adds relocation `(offset, symbol, addend, type)` to `to`; `who` is
    /// `(file, section)` for errors.
    fn add_reloc(
        &mut self,
        to: SectionId,
        (offset, symbol, addend, r_type): (u64, SymbolId, i64, u32),
        (file, what): (&str, &str),
    ) -> Result<(), Error> {
        if !XEN_RELOCS.contains(&r_type) {
            return Err(Error::Unresolvable {
                file: file.to_owned(),
                symbol: what.to_owned(),
                reason: format!(
                    "relocation type {r_type} at {offset:#x}: Xen's payload loader applies only R_X86_64_64, PC32 and PLT32"
                ),
            });
        }
        self.obj
            .add_relocation(
                to,
                Relocation {
                    offset,
                    symbol,
                    addend,
                    flags: RelocationFlags::Elf {
                        r_type: elf::RelocationType(r_type),
                    },
                },
            )
            .map_err(|e| eerr(&self.out, e))
    }

    fn flush_aux(&mut self) -> Result<(), Error> {
        while let Some((pi, sec, id, base)) = self.aux_pending.pop() {
            let part = &self.input.parts[pi];
            let Some(s) = part.patched.sec(sec) else {
                continue;
            };
            let relocs = s.relocs.clone();
            let (file, what) = (part.patched.name.clone(), s.name.clone());
            for r in &relocs {
                if let Some((sym, addend)) = self.map_patched(pi, r)? {
                    self.add_reloc(
                        id,
                        (base.saturating_add(r.offset), sym, addend, r.r_type),
                        (&file, &what),
                    )?;
                }
            }
        }
        Ok(())
    }
}

/// Which special sections are carried, and their entry size.
fn special_entry_size(name: &str, sizes: &Sizes) -> Option<u64> {
    match name {
        ".altinstructions" => Some(sizes.alt_instr),
        ".ex_table" => Some(sizes.ex_entry),
        ".bug_frames.0" | ".bug_frames.1" | ".bug_frames.2" => Some(sizes.bug_frame),
        ".bug_frames.3" => Some(2 * sizes.bug_frame),
        _ => None,
    }
}

/// Expected bytes for a function at `addr` of `size` bytes.
pub fn expectation(
    xen: &XenSyms,
    sizes: &Sizes,
    alt_sites: &[(u64, u64)],
    addr: u64,
    size: u64,
) -> Vec<u8> {
    let mut len = size.min(sizes.opaque);
    for &(a, l) in alt_sites {
        if l > 0 && a < addr.saturating_add(len) && a.saturating_add(l) > addr {
            len = len.min(a.saturating_sub(addr));
        }
    }
    xen.bytes_at(addr, len)
        .map(<[u8]>::to_vec)
        .unwrap_or_default()
}

/// Writes the payload.
pub fn emit(input: &PayloadInput<'_>, out_name: &str) -> Result<Emitted, Error> {
    let sizes = input.sizes;
    let mut w = Writer {
        input,
        obj: Object::new(BinaryFormat::Elf, Architecture::X86_64, Endianness::Little),
        out: out_name.to_owned(),
        defined: HashMap::new(),
        patch_sections: HashMap::new(),
        abs: HashMap::new(),
        aux: HashMap::new(),
        aux_pending: Vec::new(),
        shared: HashMap::new(),
        resolved: Vec::new(),
    };
    let mut hasher = sha2::Sha256::new();
    hasher.update(input.name.as_bytes());
    hasher.update(&input.xen.build_id);
    hasher.update(&input.depends);
    let mut new_funcs = Vec::new();
    // 1. The patch objects' sections and defined symbols.
    for (pi, part) in input.parts.iter().enumerate() {
        let q = part.patch;
        for s in &q.sections {
            if s.flags & shf::ALLOC == 0 {
                continue;
            }
            let id = copy_section(&mut w.obj, s);
            if s.sh_type != sht::NOBITS {
                hasher.update(&s.data);
            }
            w.patch_sections.insert((pi, s.index), id);
        }
        let replaced: Vec<&str> = part
            .meta
            .funcs
            .iter()
            .map(|f| f.new_symbol.as_str())
            .collect();
        for s in &q.symbols {
            let Some(sec) = s.section else { continue };
            if s.undefined || s.is_section() || s.name.is_empty() || !s.is_defined_entity() {
                continue;
            }
            let Some(&sid) = w.patch_sections.get(&(pi, sec)) else {
                continue;
            };
            let name = if replaced.contains(&s.name.as_str()) {
                s.name.clone()
            } else {
                let n = format!("{}.{}", s.name, input.name);
                if s.is_func() {
                    new_funcs.push(n.clone());
                }
                n
            };
            let id = w.obj.add_symbol(Symbol {
                name: name.into_bytes(),
                value: s.value,
                size: s.size,
                kind: if s.is_func() {
                    SymbolKind::Text
                } else {
                    SymbolKind::Data
                },
                scope: SymbolScope::Compilation,
                weak: false,
                section: SymbolSection::Section(sid),
                flags: SymbolFlags::None,
            });
            w.defined.insert((pi, s.index), id);
        }
    }
    // 2. Their relocations; undefined symbols resolved against xen-syms.
    for (pi, part) in input.parts.iter().enumerate() {
        let q = part.patch;
        for s in &q.sections {
            let Some(&to) = w.patch_sections.get(&(pi, s.index)) else {
                continue;
            };
            for r in &s.relocs {
                let Some(t) = q.sym(r.symbol) else {
                    return Err(eerr(out_name, "internal: bad relocation symbol"));
                };
                let (sym, addend) = if t.undefined {
                    let Some(rf) = part.meta.refs.iter().find(|x| x.symbol == t.name) else {
                        return Err(Error::Unresolvable {
                            file: part.rel.clone(),
                            symbol: t.name.clone(),
                            reason: "undefined symbol without a reference record".into(),
                        });
                    };
                    let id =
                        w.resolve_xen(part, &rf.name, rf.binding, rf.file.as_deref(), rf.sympos)?;
                    (id, r.addend)
                } else if t.is_section() {
                    let sec = t.section.unwrap_or(0);
                    let id =
                        w.patch_sections.get(&(pi, sec)).copied().ok_or_else(|| {
                            eerr(out_name, "relocation against a dropped section")
                        })?;
                    (w.obj.section_symbol(id), r.addend)
                } else if let Some(&id) = w.defined.get(&(pi, r.symbol)) {
                    (id, r.addend)
                } else if r.r_type == 0 {
                    continue;
                } else {
                    return Err(Error::Unresolvable {
                        file: part.rel.clone(),
                        symbol: t.name.clone(),
                        reason: "relocation against a symbol the payload does not carry".into(),
                    });
                };
                w.add_reloc(to, (r.offset, sym, addend, r.r_type), (&part.rel, &s.name))?;
            }
        }
    }
    // 3. Special sections: entries of included functions.
    let mut special: BTreeMap<String, usize> = BTreeMap::new();
    for (pi, part) in input.parts.iter().enumerate() {
        let p = part.patched;
        for s in &p.sections {
            let Some(esize) = special_entry_size(&s.name, sizes) else {
                continue;
            };
            if esize == 0 || s.size % esize != 0 {
                return Err(Error::Parse {
                    file: p.name.clone(),
                    reason: format!(
                        "{} is {} bytes, not a multiple of its {esize}-byte entries",
                        s.name, s.size
                    ),
                });
            }
            for i in 0..s.size / esize {
                let start = i * esize;
                let relocs = s.relocs_in(start, start + esize).to_vec();
                let Some(first) = relocs.iter().find(|r| r.offset == start) else {
                    continue;
                };
                // The function owning the first field's section (bug
                // frames carry line bits in their addends, so the target
                // offset alone can point past the function).
                let owner = p.sym(first.symbol).and_then(|t| {
                    if t.is_func() {
                        Some(t.name.clone())
                    } else {
                        t.section.and_then(|sec| {
                            p.entities_in(sec)
                                .find(|e| e.is_func())
                                .map(|e| e.name.clone())
                        })
                    }
                });
                let Some(owner) = owner else { continue };
                if w.included(pi, &owner).is_none() {
                    continue;
                }
                let Some(bytes) = s.bytes(start, esize) else {
                    continue;
                };
                let flags = shf::ALLOC;
                let id = w.shared(&s.name, flags, s.align);
                let at = w.obj.append_section_data(id, bytes, s.align.max(1));
                hasher.update(bytes);
                for r in &relocs {
                    if let Some((sym, addend)) = w.map_patched(pi, r)? {
                        let what = s.name.clone();
                        w.add_reloc(
                            id,
                            (at + (r.offset - start), sym, addend, r.r_type),
                            (&part.rel, &what),
                        )?;
                    }
                }
                *special.entry(s.name.clone()).or_default() += 1;
            }
        }
        w.flush_aux()?;
    }
    // 4. .livepatch.funcs.
    let alt_sites = input.xen.alt_sites(sizes);
    let mut funcs = Vec::new();
    let names_id = w.obj.add_section(
        Vec::new(),
        b".rodata.livepatch.names".to_vec(),
        SectionKind::ReadOnlyData,
    );
    w.obj.section_mut(names_id).flags = SectionFlags::Elf {
        sh_type: elf::SectionType(sht::PROGBITS),
        sh_flags: elf::SectionFlags(shf::ALLOC),
    };
    w.obj.set_section_data(names_id, Vec::new(), 1);
    let funcs_id = w
        .obj
        .add_section(Vec::new(), b".livepatch.funcs".to_vec(), SectionKind::Data);
    w.obj.section_mut(funcs_id).flags = SectionFlags::Elf {
        sh_type: elf::SectionType(sht::PROGBITS),
        sh_flags: elf::SectionFlags(shf::ALLOC | shf::WRITE),
    };
    w.obj.set_section_data(funcs_id, Vec::new(), 8);
    for (pi, part) in input.parts.iter().enumerate() {
        for f in &part.meta.funcs {
            let old = input
                .xen
                .resolve(&f.name, f.binding, f.file.as_deref(), f.sympos)
                .map_err(|reason| Error::Unresolvable {
                    file: part.rel.clone(),
                    symbol: f.name.clone(),
                    reason,
                })?
                .clone();
            if old.size != f.old_size {
                return Err(Error::Unresolvable {
                    file: part.rel.clone(),
                    symbol: f.name.clone(),
                    reason: format!(
                        "is {} bytes in {} but {} bytes in the original object: the tree is not the target's build",
                        old.size,
                        input.xen.path.display(),
                        f.old_size
                    ),
                });
            }
            let new_sym = part
                .patch
                .symbols
                .iter()
                .find(|s| s.name == f.new_symbol && !s.undefined && s.section.is_some())
                .ok_or_else(|| eerr(out_name, format!("new symbol {} missing", f.new_symbol)))?;
            let new_id = w
                .defined
                .get(&(pi, new_sym.index))
                .copied()
                .ok_or_else(|| {
                    eerr(out_name, format!("new symbol {} not carried", f.new_symbol))
                })?;
            let mut name = f.name.clone().into_bytes();
            name.push(0);
            let name_off = w.obj.append_section_data(names_id, &name, 1);
            let expect = expectation(input.xen, sizes, &alt_sites, old.addr, old.size);
            let mut rec = vec![0u8; sizes.func as usize];
            let put = |rec: &mut Vec<u8>, at: u64, bytes: &[u8]| {
                if let Some(dst) = rec.get_mut(at as usize..at as usize + bytes.len()) {
                    dst.copy_from_slice(bytes);
                }
            };
            put(&mut rec, sizes.func_old_addr, &old.addr.to_le_bytes());
            put(
                &mut rec,
                sizes.func_new_size,
                &(new_sym.size as u32).to_le_bytes(),
            );
            put(
                &mut rec,
                sizes.func_old_size,
                &(old.size as u32).to_le_bytes(),
            );
            put(&mut rec, sizes.func_version, &[sizes.version as u8]);
            if !expect.is_empty() {
                put(
                    &mut rec,
                    sizes.func_expect,
                    &[1 | ((expect.len() as u8) << 1)],
                );
                put(&mut rec, sizes.func_expect + 1, &expect);
            }
            hasher.update(&rec);
            let at = w.obj.append_section_data(funcs_id, &rec, 8);
            let names_sym = w.obj.section_symbol(names_id);
            w.add_reloc(
                funcs_id,
                (at, names_sym, name_off as i64, 1),
                (out_name, ".livepatch.funcs"),
            )?;
            w.add_reloc(
                funcs_id,
                (at + sizes.func_new_addr, new_id, 0, 1),
                (out_name, ".livepatch.funcs"),
            )?;
            funcs.push(PayloadFunc {
                name: f.name.clone(),
                file: f.file.clone(),
                object: part.rel.clone(),
                old_addr: format!("{:#x}", old.addr),
                old_size: old.size,
                new_size: new_sym.size,
                expect: hex::encode(&expect),
            });
        }
    }
    if funcs.is_empty() {
        return Err(eerr(out_name, "no function to replace"));
    }
    // 5. Build-id notes.
    let own: Vec<u8> = hasher.finalize().get(..20).unwrap_or_default().to_vec();
    for (name, id, note) in [
        (".livepatch.xen_depends", &input.xen.build_id, false),
        (".livepatch.depends", &input.depends, false),
        (".note.gnu.build-id", &own, true),
    ] {
        let sid = w.obj.add_section(
            Vec::new(),
            name.as_bytes().to_vec(),
            SectionKind::ReadOnlyData,
        );
        w.obj.section_mut(sid).flags = SectionFlags::Elf {
            sh_type: if note {
                elf::SHT_NOTE
            } else {
                elf::SectionType(sht::PROGBITS)
            },
            sh_flags: elf::SectionFlags(shf::ALLOC),
        };
        w.obj.set_section_data(sid, build_id_note(id), 4);
    }
    let bytes = w.obj.write().map_err(|e| eerr(out_name, e))?;
    Ok(Emitted {
        bytes,
        build_id: hex::encode(&own),
        funcs,
        new_funcs,
        resolved: w.resolved,
        special,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_id_note_is_a_gnu_note() {
        let n = build_id_note(&[0xab; 20]);
        assert_eq!(n.len(), 36);
        assert_eq!(&n[..12], &[4, 0, 0, 0, 20, 0, 0, 0, 3, 0, 0, 0]);
        assert_eq!(&n[12..16], b"GNU\0");
        assert_eq!(&n[16..], &[0xab; 20]);
    }
}
