//! Writing the patch object: an x86-64 `ET_REL` ELF file plus the
//! `.hotfix.meta` section (see [`crate::format`]).
//!
//! Model: each function of the plan gets its own `.text.<name>` section and a
//! defined `STT_FUNC` symbol; each data object its own section named like
//! the original; anonymous sections are copied whole; referenced string
//! literals are copied, deduplicated, into one mergeable string section.
//! Every other relocation target becomes an undefined symbol with one
//! [`Ref`]: globals keep their name; locals get a unique mangled name
//! (`name.hotfix.<file>.<sympos>`) and the `Ref` carries the real name, the
//! source file and the sympos in the *original* object.
//!
//! Invariants: relocation types are copied unchanged; addends are
//! re-expressed relative to the copied entity, section or string; undefined
//! symbol names are unique; [`Meta::validate_self`] holds for the output.

use crate::Error;
use crate::compare::{Analysis, ENDBR64};
use crate::format::{Binding, Func, Kind, Meta, Ref, Target as MetaTarget};
use crate::include::Plan;
use crate::read::{Bind, ObjectFile, Reloc, Target, shf, sht};
use object::write::{Object, Relocation, SectionId, Symbol, SymbolId, SymbolSection};
use object::{
    Architecture, BinaryFormat, Endianness, RelocationFlags, SectionFlags, SectionKind,
    SymbolFlags, SymbolKind, SymbolScope, elf,
};
use std::collections::HashMap;

/// Inputs of [`emit`] besides the objects.
#[derive(Debug, Clone)]
pub struct EmitInput<'a> {
    /// Patch id.
    pub id: &'a str,
    /// Human description.
    pub description: &'a str,
    /// Hex SHA-256 of the source fix or of the patched object.
    pub source_hash: String,
    /// The target object.
    pub target: MetaTarget,
}

fn eerr(file: &str, reason: impl std::fmt::Display) -> Error {
    Error::Emit {
        file: file.to_owned(),
        reason: reason.to_string(),
    }
}

fn section_kind(flags: u64, sh_type: u32) -> SectionKind {
    let nobits = sh_type == sht::NOBITS;
    if nobits {
        if flags & shf::TLS != 0 {
            SectionKind::UninitializedTls
        } else {
            SectionKind::UninitializedData
        }
    } else if flags & shf::EXECINSTR != 0 {
        SectionKind::Text
    } else if flags & shf::TLS != 0 {
        SectionKind::Tls
    } else if flags & shf::WRITE != 0 {
        SectionKind::Data
    } else {
        SectionKind::ReadOnlyData
    }
}

fn mangle(name: &str, file: Option<&str>, sympos: u32) -> String {
    let file: String = file
        .unwrap_or("")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{name}.hotfix.{file}.{sympos}")
}

/// Expected first bytes of an original function and their mask.
pub fn expected_bytes(orig: &ObjectFile, sym: usize) -> (Vec<u8>, Vec<u8>) {
    let Some(s) = orig.sym(sym) else {
        return (Vec::new(), Vec::new());
    };
    let bytes = orig.symbol_bytes(s);
    let min = if bytes.starts_with(&ENDBR64) { 9 } else { 5 };
    let n = bytes.len().min(16.max(min));
    let mut exp = bytes.get(..n).unwrap_or(bytes).to_vec();
    let mut mask = vec![0xffu8; exp.len()];
    for r in orig.symbol_relocs(s) {
        let start = (r.offset - s.value) as usize;
        for i in start..start + r.width() as usize {
            if let (Some(e), Some(m)) = (exp.get_mut(i), mask.get_mut(i)) {
                *e = 0;
                *m = 0;
            }
        }
    }
    (exp, mask)
}

struct Writer<'a> {
    orig: &'a ObjectFile,
    patched: &'a ObjectFile,
    an: &'a Analysis,
    obj: Object<'static>,
    defined: HashMap<usize, SymbolId>,
    anon: HashMap<usize, SectionId>,
    refs: HashMap<String, SymbolId>,
    meta_refs: Vec<Ref>,
    strings: Vec<u8>,
    string_at: HashMap<(Vec<u8>, u64), u64>,
    string_section: Option<SectionId>,
    out: &'a str,
}

impl Writer<'_> {
    fn ref_symbol(&mut self, t: Target) -> Result<(SymbolId, i64), Error> {
        let (key, r, addend) = match t {
            Target::Entity { sym, offset } => {
                let Some(o) = self.an.corr.orig_of(sym).and_then(|o| self.orig.sym(o)) else {
                    return Err(eerr(
                        self.out,
                        format!(
                            "internal: {} is neither in the patch nor in the original",
                            self.patched.sym(sym).map_or("?", |s| s.name.as_str())
                        ),
                    ));
                };
                let sympos = self.orig.sympos(o.index);
                let (symbol, file) = if o.bind == Bind::Local {
                    (mangle(&o.name, o.file.as_deref(), sympos), o.file.clone())
                } else {
                    (o.name.clone(), None)
                };
                let r = Ref {
                    symbol: symbol.clone(),
                    name: o.name.clone(),
                    binding: o.bind.into(),
                    kind: o.format_kind(),
                    file,
                    sympos,
                    target: 0,
                };
                (symbol, r, offset)
            }
            Target::Undefined { sym, addend } => {
                let Some(s) = self.patched.sym(sym) else {
                    return Err(eerr(self.out, "bad symbol index"));
                };
                let r = Ref {
                    symbol: s.name.clone(),
                    name: s.name.clone(),
                    binding: if s.bind == Bind::Weak {
                        Binding::Weak
                    } else {
                        Binding::Global
                    },
                    kind: s.format_kind(),
                    file: None,
                    sympos: 0,
                    target: 0,
                };
                (s.name.clone(), r, addend)
            }
            _ => return Err(eerr(self.out, "internal: not a reference")),
        };
        if let Some(&id) = self.refs.get(&key) {
            return Ok((id, addend));
        }
        let kind = match r.kind {
            Kind::Func => SymbolKind::Text,
            Kind::Object => SymbolKind::Data,
            Kind::Tls => SymbolKind::Tls,
            Kind::Notype => SymbolKind::Unknown,
        };
        let id = self.obj.add_symbol(Symbol {
            name: key.clone().into_bytes(),
            value: 0,
            size: 0,
            kind,
            scope: SymbolScope::Dynamic,
            weak: r.binding == Binding::Weak,
            section: SymbolSection::Undefined,
            flags: SymbolFlags::None,
        });
        self.refs.insert(key, id);
        self.meta_refs.push(r);
        Ok((id, addend))
    }

    fn string(&mut self, sec: usize, start: u64, end: u64) -> u64 {
        let Some(s) = self.patched.sec(sec) else {
            return 0;
        };
        let bytes = s.bytes(start, end - start).unwrap_or(&[]).to_vec();
        let align = s.align.max(1);
        if let Some(&off) = self.string_at.get(&(bytes.clone(), align)) {
            return off;
        }
        while (self.strings.len() as u64).checked_rem(align) != Some(0) {
            self.strings.push(0);
        }
        let off = self.strings.len() as u64;
        self.strings.extend_from_slice(&bytes);
        if !bytes.ends_with(&[0]) {
            self.strings.push(0);
        }
        self.string_at.insert((bytes, align), off);
        off
    }

    /// Copies the relocations of patched section `sec` in `[base, base+len)`
    /// onto output section `to`.
    fn relocate(&mut self, sec: usize, base: u64, len: u64, to: SectionId) -> Result<(), Error> {
        let Some(section) = self.patched.sec(sec) else {
            return Ok(());
        };
        let relocs: Vec<(u64, Reloc)> = section
            .relocs
            .iter()
            .filter(|r| r.offset >= base && r.offset < base.saturating_add(len))
            .map(|r| (r.offset - base, *r))
            .collect();
        let who = section.name.clone();
        self.add_relocs(&relocs, to, &who)
    }

    /// Adds relocations (new offset, original relocation) to section `to`,
    /// mapping each target into the patch.
    fn add_relocs(
        &mut self,
        relocs: &[(u64, Reloc)],
        to: SectionId,
        who: &str,
    ) -> Result<(), Error> {
        for &(new_offset, r) in relocs {
            let t = self.patched.resolve(&r);
            let (symbol, addend) = match t {
                Target::Entity { sym, offset } => match self.defined.get(&sym) {
                    Some(&id) => (id, offset),
                    None => self.ref_symbol(t)?,
                },
                Target::Undefined { .. } => self.ref_symbol(t)?,
                Target::Str {
                    section,
                    start,
                    end,
                    rel,
                } => {
                    let off = self.string(section, start, end);
                    let sid = match self.string_section {
                        Some(s) => s,
                        None => {
                            let s = self.obj.add_section(
                                Vec::new(),
                                b".rodata.str1.1".to_vec(),
                                SectionKind::ReadOnlyString,
                            );
                            self.string_section = Some(s);
                            s
                        }
                    };
                    (
                        self.obj.section_symbol(sid),
                        (off as i64).saturating_add(rel),
                    )
                }
                Target::Anon { section, offset } => match self.anon.get(&section) {
                    Some(&id) => (self.obj.section_symbol(id), offset),
                    None => return Err(eerr(self.out, "internal: anonymous section not planned")),
                },
                Target::Absolute { .. } => {
                    if r.r_type == 0 {
                        continue;
                    }
                    return Err(Error::Unresolvable {
                        file: self.patched.name.clone(),
                        symbol: who.to_owned(),
                        reason: format!("relocation at {:#x} against an absolute symbol", r.offset),
                    });
                }
            };
            self.obj
                .add_relocation(
                    to,
                    Relocation {
                        offset: new_offset,
                        symbol,
                        addend,
                        flags: RelocationFlags::Elf {
                            r_type: elf::RelocationType(r.r_type),
                        },
                    },
                )
                .map_err(|e| eerr(self.out, e))?;
        }
        Ok(())
    }
}

/// Writes the patch object for `plan`; returns its bytes and metadata.
pub fn emit(
    orig: &ObjectFile,
    patched: &ObjectFile,
    an: &Analysis,
    plan: &Plan,
    input: &EmitInput<'_>,
    out_name: &str,
) -> Result<(Vec<u8>, Meta), Error> {
    let mut w = Writer {
        orig,
        patched,
        an,
        obj: Object::new(BinaryFormat::Elf, Architecture::X86_64, Endianness::Little),
        defined: HashMap::new(),
        anon: HashMap::new(),
        refs: HashMap::new(),
        meta_refs: Vec::new(),
        strings: Vec::new(),
        string_at: HashMap::new(),
        string_section: None,
        out: out_name,
    };
    if let Some(f) = &patched.source_file {
        w.obj.add_file_symbol(f.clone().into_bytes());
    }
    // Sections and defined symbols first; relocations after.
    let mut copies: Vec<(usize, u64, u64, SectionId)> = Vec::new();
    for &s in plan.funcs.iter().chain(plan.data.iter()) {
        let Some(sym) = patched.sym(s) else { continue };
        let Some(sec) = sym.section.and_then(|i| patched.sec(i)) else {
            continue;
        };
        let name = if sym.is_func() {
            format!(".text.{}", sym.name)
        } else {
            sec.name.clone()
        };
        let id = w.obj.add_section(
            Vec::new(),
            name.into_bytes(),
            section_kind(sec.flags, sec.sh_type),
        );
        let keep = sec.flags & (shf::WRITE | shf::ALLOC | shf::EXECINSTR | shf::TLS);
        w.obj.section_mut(id).flags = SectionFlags::Elf {
            sh_type: elf::SectionType(if sec.sh_type == sht::NOBITS {
                sht::NOBITS
            } else {
                sht::PROGBITS
            }),
            sh_flags: elf::SectionFlags(keep),
        };
        if sec.sh_type == sht::NOBITS {
            w.obj.append_section_bss(id, sym.size, sec.align);
        } else {
            let bytes = sec
                .bytes(sym.value, sym.size)
                .ok_or_else(|| eerr(out_name, format!("{}: contents out of bounds", sym.name)))?;
            w.obj.set_section_data(id, bytes.to_vec(), sec.align);
        }
        let kind = if sym.is_func() {
            SymbolKind::Text
        } else if sym.kind == crate::read::STT_TLS.0 {
            SymbolKind::Tls
        } else {
            SymbolKind::Data
        };
        let sid = w.obj.add_symbol(Symbol {
            name: sym.name.clone().into_bytes(),
            value: 0,
            size: sym.size,
            kind,
            scope: if sym.bind == Bind::Local {
                SymbolScope::Compilation
            } else {
                SymbolScope::Dynamic
            },
            weak: sym.bind == Bind::Weak,
            section: SymbolSection::Section(id),
            flags: SymbolFlags::None,
        });
        w.defined.insert(s, sid);
        copies.push((sec.index, sym.value, sym.size, id));
    }
    for &a in &plan.anon {
        let Some(sec) = patched.sec(a) else { continue };
        let id = w.obj.add_section(
            Vec::new(),
            sec.name.clone().into_bytes(),
            section_kind(sec.flags, sec.sh_type),
        );
        if sec.sh_type == sht::NOBITS {
            w.obj.append_section_bss(id, sec.size, sec.align);
        } else {
            w.obj.set_section_data(id, sec.data.clone(), sec.align);
        }
        w.anon.insert(a, id);
        copies.push((a, 0, sec.size, id));
    }
    for (sec, base, len, id) in copies {
        w.relocate(sec, base, len, id)?;
    }
    if let Some(eh) = crate::unwind::select(patched, &plan.funcs) {
        let id = w
            .obj
            .add_section(Vec::new(), b".eh_frame".to_vec(), SectionKind::ReadOnlyData);
        w.obj.section_mut(id).flags = SectionFlags::Elf {
            sh_type: elf::SectionType(eh.sh_type),
            sh_flags: elf::SectionFlags(shf::ALLOC),
        };
        w.obj.set_section_data(id, eh.data, eh.align);
        w.add_relocs(&eh.relocs, id, ".eh_frame")?;
    }
    if let Some(sid) = w.string_section {
        let data = std::mem::take(&mut w.strings);
        let align = w.string_at.keys().map(|(_, a)| *a).max().unwrap_or(1);
        w.obj.set_section_data(sid, data, align);
    }
    // Metadata.
    let mut funcs = Vec::new();
    let mut meta_new_funcs = Vec::new();
    for c in &an.changed {
        let (Some(o), Some(p)) = (orig.sym(c.orig), patched.sym(c.patched)) else {
            continue;
        };
        if !c.replace {
            meta_new_funcs.push(p.name.clone());
            continue;
        }
        let (exp, mask) = expected_bytes(orig, c.orig);
        funcs.push(Func {
            name: o.name.clone(),
            file: (o.bind == Bind::Local).then(|| o.file.clone()).flatten(),
            sympos: orig.sympos(c.orig),
            binding: o.bind.into(),
            old_size: o.size,
            new_symbol: p.name.clone(),
            target: 0,
            expected: hex::encode(exp),
            expected_mask: hex::encode(mask),
        });
    }
    for &f in &plan.funcs {
        if an.changed.iter().any(|c| c.patched == f) {
            continue;
        }
        if let Some(s) = patched.sym(f) {
            meta_new_funcs.push(s.name.clone());
        }
    }
    let meta = Meta {
        id: input.id.to_owned(),
        description: input.description.to_owned(),
        source_hash: input.source_hash.clone(),
        targets: vec![input.target.clone()],
        funcs,
        new_funcs: meta_new_funcs,
        new_data: plan
            .data
            .iter()
            .filter_map(|&d| patched.sym(d).map(|s| s.name.clone()))
            .collect(),
        refs: std::mem::take(&mut w.meta_refs),
    };
    meta.validate_self()
        .map_err(|e| eerr(out_name, format!("metadata: {e}")))?;
    let mid = w.obj.add_section(
        Vec::new(),
        crate::format::META_SECTION.as_bytes().to_vec(),
        SectionKind::Other,
    );
    w.obj.section_mut(mid).flags = SectionFlags::Elf {
        sh_type: elf::SHT_PROGBITS,
        sh_flags: elf::SectionFlags(0),
    };
    w.obj.set_section_data(mid, meta.encode(), 1);
    let bytes = w.obj.write().map_err(|e| eerr(out_name, e))?;
    Ok((bytes, meta))
}
