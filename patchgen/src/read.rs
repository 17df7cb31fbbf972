//! Reading one x86-64 ELF relocatable object into an owned, index-stable model.
//!
//! Model: an [`ObjectFile`] is the object's sections (with their bytes and
//! their `RELA` relocations attached to the section they apply to) and its
//! symbol table, in file order. Indices are the ELF indices (section header
//! index, symbol table index), so relocations refer to symbols by index.
//!
//! Invariants established by [`ObjectFile::parse`] (relied on downstream):
//! - the file is ELF64, little-endian, `EM_X86_64`, `ET_REL`;
//! - every symbol's `section`, when `Some`, is a valid index into `sections`;
//! - every relocation's `symbol` is a valid index into `symbols`, and its
//!   `offset` lies inside its section;
//! - code is compiled with `-ffunction-sections`: no function lives in a plain
//!   `.text` section; where functions share a named section, the references
//!   between them that the assembler resolved are relocations too
//!   ([`crate::shared`]).
//!
//! Nothing here panics on malformed input: every inconsistency is an
//! [`Error::Parse`] naming the file.

use crate::Error;
use object::elf;
use object::read::elf::{FileHeader, Rela, SectionHeader, Sym};

/// `STT_*` symbol types we distinguish.
pub use object::elf::{STT_FILE, STT_FUNC, STT_NOTYPE, STT_OBJECT, STT_SECTION, STT_TLS};

/// Section flag bits (raw `sh_flags` values).
pub mod shf {
    /// `SHF_WRITE`.
    pub const WRITE: u64 = 1;
    /// `SHF_ALLOC`.
    pub const ALLOC: u64 = 2;
    /// `SHF_EXECINSTR`.
    pub const EXECINSTR: u64 = 4;
    /// `SHF_MERGE`.
    pub const MERGE: u64 = 0x10;
    /// `SHF_STRINGS`.
    pub const STRINGS: u64 = 0x20;
    /// `SHF_TLS`.
    pub const TLS: u64 = 0x400;
}

/// Section types (raw `sh_type` values) we distinguish.
pub mod sht {
    /// `SHT_PROGBITS`.
    pub const PROGBITS: u32 = 1;
    /// `SHT_NOBITS`.
    pub const NOBITS: u32 = 8;
    /// `SHT_INIT_ARRAY`.
    pub const INIT_ARRAY: u32 = 14;
    /// `SHT_FINI_ARRAY`.
    pub const FINI_ARRAY: u32 = 15;
    /// `SHT_PREINIT_ARRAY`.
    pub const PREINIT_ARRAY: u32 = 16;
}

/// One section of the object.
#[derive(Debug, Clone)]
pub struct Section {
    /// ELF section header index.
    pub index: usize,
    /// Section name.
    pub name: String,
    /// Raw `sh_type`.
    pub sh_type: u32,
    /// Raw `sh_flags`.
    pub flags: u64,
    /// `sh_addralign` (at least 1).
    pub align: u64,
    /// `sh_entsize`.
    pub entsize: u64,
    /// `sh_size` (also for `SHT_NOBITS`, whose `data` is empty).
    pub size: u64,
    /// Contents (empty for `SHT_NOBITS`).
    pub data: Vec<u8>,
    /// Relocations applying to this section, sorted by offset.
    pub relocs: Vec<Reloc>,
}

impl Section {
    /// Executable code.
    pub fn is_code(&self) -> bool {
        self.flags & shf::EXECINSTR != 0
    }
    /// Mergeable NUL-terminated strings (`.rodata.str1.*`).
    pub fn is_strings(&self) -> bool {
        self.flags & (shf::MERGE | shf::STRINGS) == shf::MERGE | shf::STRINGS
    }
    /// Mergeable fixed-size constants (`.rodata.cst*`).
    pub fn is_merge_const(&self) -> bool {
        self.flags & (shf::MERGE | shf::STRINGS) == shf::MERGE && self.entsize > 0
    }
    /// Writable at run time.
    pub fn is_writable(&self) -> bool {
        self.flags & shf::WRITE != 0
    }
    /// Occupies memory at run time.
    pub fn is_alloc(&self) -> bool {
        self.flags & shf::ALLOC != 0
    }
    /// Constructor/destructor tables (`.init_array`, `.ctors`, ...).
    pub fn is_init_table(&self) -> bool {
        matches!(
            self.sh_type,
            sht::INIT_ARRAY | sht::FINI_ARRAY | sht::PREINIT_ARRAY
        ) || self.name.starts_with(".ctors")
            || self.name.starts_with(".dtors")
    }
    /// The relocations whose place starts in `[start, end)` (binary search:
    /// relocations are sorted by offset).
    pub fn relocs_in(&self, start: u64, end: u64) -> &[Reloc] {
        let lo = self.relocs.partition_point(|r| r.offset < start);
        let hi = self.relocs.partition_point(|r| r.offset < end);
        self.relocs.get(lo..hi.max(lo)).unwrap_or(&[])
    }

    /// Bytes `[start, start+len)` of the contents, if present.
    pub fn bytes(&self, start: u64, len: u64) -> Option<&[u8]> {
        let s = usize::try_from(start).ok()?;
        let e = s.checked_add(usize::try_from(len).ok()?)?;
        self.data.get(s..e)
    }
}

/// Binding of a symbol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bind {
    /// `STB_LOCAL`.
    Local,
    /// `STB_GLOBAL` (or anything else that is not local or weak).
    Global,
    /// `STB_WEAK`.
    Weak,
}

impl From<Bind> for crate::format::Binding {
    fn from(b: Bind) -> Self {
        match b {
            Bind::Local => Self::Local,
            Bind::Global => Self::Global,
            Bind::Weak => Self::Weak,
        }
    }
}

/// One symbol-table entry.
#[derive(Debug, Clone)]
pub struct Symbol {
    /// Symbol table index.
    pub index: usize,
    /// Name (empty for section symbols and the null symbol).
    pub name: String,
    /// Raw `STT_*` type.
    pub kind: u8,
    /// Binding.
    pub bind: Bind,
    /// Defining section; `None` for undefined, absolute and common symbols.
    pub section: Option<usize>,
    /// `st_value` (offset in its section).
    pub value: u64,
    /// `st_size`.
    pub size: u64,
    /// The `STT_FILE` symbol preceding this one (the source file of a local).
    pub file: Option<String>,
    /// `st_shndx == SHN_UNDEF`.
    pub undefined: bool,
}

impl Symbol {
    /// A function (`STT_FUNC` or GNU ifunc).
    pub fn is_func(&self) -> bool {
        self.kind == STT_FUNC.0 || self.kind == 10
    }
    /// A data object (`STT_OBJECT`, `STT_TLS` or `STT_COMMON`).
    pub fn is_data(&self) -> bool {
        self.kind == STT_OBJECT.0 || self.kind == STT_TLS.0 || self.kind == 5
    }
    /// A section symbol.
    pub fn is_section(&self) -> bool {
        self.kind == STT_SECTION.0
    }
    /// A named function or object defined in a section of this object.
    pub fn is_defined_entity(&self) -> bool {
        (self.is_func() || self.is_data()) && self.section.is_some() && !self.name.is_empty()
    }
    /// The patch-format kind of this symbol.
    pub fn format_kind(&self) -> crate::format::Kind {
        use crate::format::Kind;
        if self.is_func() {
            Kind::Func
        } else if self.kind == STT_TLS.0 {
            Kind::Tls
        } else if self.is_data() {
            Kind::Object
        } else {
            Kind::Notype
        }
    }
}

/// One `RELA` relocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reloc {
    /// Offset of the place in its section.
    pub offset: u64,
    /// Raw `R_X86_64_*` type.
    pub r_type: u32,
    /// Symbol table index of the target.
    pub symbol: usize,
    /// Explicit addend.
    pub addend: i64,
}

impl Reloc {
    /// Number of bytes of the place the relocation writes.
    pub fn width(&self) -> u64 {
        match self.r_type {
            // R_X86_64_64, PC64, DTPMOD64, DTPOFF64, TPOFF64, GOTOFF64, GOTPC64, GOT64, SIZE64
            1 | 24 | 16 | 17 | 18 | 25 | 29 | 27 | 33 => 8,
            // R_X86_64_16, PC16
            12 | 13 => 2,
            // R_X86_64_8, PC8
            14 | 15 => 1,
            0 => 0,
            _ => 4,
        }
    }
    /// PC-relative relocations (the place is a displacement from the next
    /// instruction, so the addend is biased by the distance to it).
    pub fn is_pc_relative(&self) -> bool {
        // PC32, PLT32, GOTPCREL, TLSGD, TLSLD, GOTTPOFF, PC64, GOTPC32, GOTPCRELX, REX_GOTPCRELX, GOTPC32_TLSDESC
        matches!(
            self.r_type,
            2 | 4 | 9 | 19 | 20 | 22 | 24 | 26 | 41 | 42 | 34
        )
    }
}

/// A parsed x86-64 relocatable object.
#[derive(Debug, Clone)]
pub struct ObjectFile {
    /// Name used in messages (usually the path).
    pub name: String,
    /// Sections by ELF index (index 0 is the null section).
    pub sections: Vec<Section>,
    /// Symbols by symbol-table index (index 0 is the null symbol).
    pub symbols: Vec<Symbol>,
    /// Name of the first `STT_FILE` symbol, the source file.
    pub source_file: Option<String>,
    /// For each section, its defined named functions and objects (symbol
    /// indices, by increasing value).
    pub section_entities: Vec<Vec<usize>>,
    /// `rel8` branches between functions (or unnamed code) of one shared
    /// code section: code holding one cannot be moved ([`crate::shared`]).
    pub short_edges: Vec<crate::shared::ShortEdge>,
}

/// Where a relocation points, resolved from section symbols and local
/// labels to the entity (function/object), string or section it lands in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A defined function or object; `offset` is the addend relative to the
    /// entity's start (PC bias included).
    Entity {
        /// Symbol index of the entity.
        sym: usize,
        /// Addend relative to the entity's start.
        offset: i64,
    },
    /// An undefined symbol.
    Undefined {
        /// Symbol index.
        sym: usize,
        /// The addend.
        addend: i64,
    },
    /// A NUL-terminated string in a mergeable string section.
    Str {
        /// Section index.
        section: usize,
        /// Offset of the string's first byte.
        start: u64,
        /// Offset one past its NUL (or the section end).
        end: u64,
        /// Addend relative to `start` (PC bias included).
        rel: i64,
    },
    /// Bytes of a section without a named entity at that place (jump
    /// tables, mergeable constants, anonymous read-only data).
    Anon {
        /// Section index.
        section: usize,
        /// Section offset + addend.
        offset: i64,
    },
    /// The null symbol or an absolute symbol.
    Absolute {
        /// Symbol index.
        sym: usize,
        /// The addend.
        addend: i64,
    },
}

/// Largest section alignment accepted (2 MiB, a huge page); larger values
/// only come from corrupted files and would make the emitter pad the patch
/// to absurd sizes.
pub const MAX_ALIGN: u64 = 1 << 21;

fn perr(file: &str, reason: impl Into<String>) -> Error {
    Error::Parse {
        file: file.to_owned(),
        reason: reason.into(),
    }
}

impl ObjectFile {
    /// Parses `bytes` (named `name` in messages).
    pub fn parse(bytes: &[u8], name: &str) -> Result<ObjectFile, Error> {
        let header = elf::FileHeader64::<object::Endianness>::parse(bytes)
            .map_err(|e| perr(name, format!("not an ELF64 object: {e}")))?;
        let endian = header
            .endian()
            .map_err(|e| perr(name, format!("bad ELF header: {e}")))?;
        if endian != object::Endianness::Little {
            return Err(perr(name, "big-endian ELF; x86-64 is little-endian"));
        }
        let machine = header.e_machine(endian);
        if machine != elf::EM_X86_64 {
            return Err(Error::WrongMachine {
                file: name.to_owned(),
                machine: machine.0,
            });
        }
        let e_type = header.e_type(endian);
        if e_type != elf::ET_REL {
            return Err(Error::NotRelocatable {
                file: name.to_owned(),
                e_type: e_type.0,
            });
        }
        let table = header
            .sections(endian, bytes)
            .map_err(|e| perr(name, format!("bad section headers: {e}")))?;
        let mut sections = Vec::with_capacity(table.len());
        for (i, sh) in table.iter().enumerate() {
            let sname = table
                .section_name(endian, sh)
                .map_err(|e| perr(name, format!("section {i}: bad name: {e}")))?;
            let sh_type = sh.sh_type(endian).0;
            let size = sh.sh_size(endian);
            let data = if sh_type == sht::NOBITS || i == 0 {
                Vec::new()
            } else {
                sh.data(endian, bytes)
                    .map_err(|e| {
                        perr(
                            name,
                            format!(
                                "section {}: contents out of bounds: {e}",
                                String::from_utf8_lossy(sname)
                            ),
                        )
                    })?
                    .to_vec()
            };
            let align = sh.sh_addralign(endian).max(1);
            if !align.is_power_of_two() || align > MAX_ALIGN {
                return Err(perr(
                    name,
                    format!(
                        "section {}: alignment {align:#x} is not a power of two up to {MAX_ALIGN:#x}",
                        String::from_utf8_lossy(sname)
                    ),
                ));
            }
            sections.push(Section {
                index: i,
                name: String::from_utf8_lossy(sname).into_owned(),
                sh_type,
                flags: sh.sh_flags(endian).0,
                align,
                entsize: sh.sh_entsize(endian),
                size,
                data,
                relocs: Vec::new(),
            });
        }
        let symtab = table
            .symbols(endian, bytes, elf::SHT_SYMTAB)
            .map_err(|e| perr(name, format!("bad symbol table: {e}")))?;
        let mut symbols = Vec::with_capacity(symtab.len());
        let mut file: Option<String> = None;
        let mut source_file = None;
        for (i, sym) in symtab.iter().enumerate() {
            let sname = symtab
                .symbol_name(endian, sym)
                .map_err(|e| perr(name, format!("symbol {i}: bad name: {e}")))?;
            let sname = String::from_utf8_lossy(sname).into_owned();
            let kind = sym.st_type().0;
            if kind == STT_FILE.0 {
                if source_file.is_none() {
                    source_file = Some(sname.clone());
                }
                file = Some(sname.clone());
            }
            let section = symtab
                .symbol_section(endian, sym, object::SymbolIndex(i))
                .map_err(|e| perr(name, format!("symbol {sname}: {e}")))?
                .map(|s| s.0);
            if let Some(s) = section
                && s >= sections.len()
            {
                return Err(perr(
                    name,
                    format!("symbol {sname}: section index {s} out of range"),
                ));
            }
            let bind = match sym.st_bind().0 {
                0 => Bind::Local,
                2 => Bind::Weak,
                _ => Bind::Global,
            };
            symbols.push(Symbol {
                index: i,
                file: if bind == Bind::Local {
                    file.clone()
                } else {
                    None
                },
                name: sname,
                kind,
                bind,
                section,
                value: sym.st_value(endian),
                size: sym.st_size(endian),
                undefined: sym.st_shndx(endian) == elf::SHN_UNDEF && i != 0,
            });
        }
        for (i, sh) in table.iter().enumerate() {
            let Some((relas, _link)) = sh
                .rela(endian, bytes)
                .map_err(|e| perr(name, format!("section {i}: bad relocations: {e}")))?
            else {
                if sh.sh_type(endian) == elf::SHT_REL {
                    return Err(perr(
                        name,
                        format!("section {i}: REL relocations on x86-64"),
                    ));
                }
                continue;
            };
            let target = sh.info_link(endian).0;
            let tsize = match sections.get(target) {
                Some(t) if target != 0 => t.size,
                _ => {
                    return Err(perr(
                        name,
                        format!("relocation section {i} applies to bad section {target}"),
                    ));
                }
            };
            let mut relocs = Vec::with_capacity(relas.len());
            for r in relas {
                let rel = Reloc {
                    offset: r.r_offset(endian),
                    r_type: r.r_type(endian, false).0,
                    symbol: r.r_sym(endian, false) as usize,
                    addend: r.r_addend(endian),
                };
                if rel.symbol >= symbols.len() {
                    return Err(perr(
                        name,
                        format!(
                            "relocation at {:#x} in section {target}: symbol {} out of range",
                            rel.offset, rel.symbol
                        ),
                    ));
                }
                if rel
                    .offset
                    .checked_add(rel.width())
                    .is_none_or(|e| e > tsize)
                {
                    return Err(perr(
                        name,
                        format!(
                            "relocation at {:#x} runs past the end of section {target}",
                            rel.offset
                        ),
                    ));
                }
                relocs.push(rel);
            }
            relocs.sort_by_key(|r| r.offset);
            if let Some(t) = sections.get_mut(target) {
                t.relocs.extend(relocs);
                t.relocs.sort_by_key(|r| r.offset);
            }
        }
        let mut section_entities = vec![Vec::new(); sections.len()];
        for s in &symbols {
            if s.is_defined_entity()
                && let Some(list) = s.section.and_then(|i| section_entities.get_mut(i))
            {
                list.push(s.index);
            }
        }
        for list in &mut section_entities {
            list.sort_by_key(|&i| symbols.get(i).map_or(0, |s| s.value));
        }
        let mut obj = ObjectFile {
            name: name.to_owned(),
            sections,
            symbols,
            source_file,
            section_entities,
            short_edges: Vec::new(),
        };
        obj.check_function_sections()?;
        obj.short_edges = crate::shared::synthesize(&mut obj);
        Ok(obj)
    }

    /// Refuses objects built without `-ffunction-sections`: a function in
    /// the plain `.text` section. Functions sharing a *named* section (a
    /// section attribute such as the kernel's `__sched`, and gcc's clones
    /// of such a function) are accepted: see [`crate::shared`].
    fn check_function_sections(&self) -> Result<(), Error> {
        for s in &self.symbols {
            if s.is_func()
                && let Some(sec) = s.section
            {
                let Some(section) = self.sections.get(sec) else {
                    continue;
                };
                if section.name == ".text" {
                    return Err(Error::NoFunctionSections {
                        file: self.name.clone(),
                        symbol: s.name.clone(),
                        section: section.name.clone(),
                    });
                }
            }
        }
        Ok(())
    }

    /// The symbol at `index` (callers hold indices validated at parse time).
    pub fn sym(&self, index: usize) -> Option<&Symbol> {
        self.symbols.get(index)
    }

    /// The section at `index`.
    pub fn sec(&self, index: usize) -> Option<&Section> {
        self.sections.get(index)
    }

    /// Defined named functions and objects whose section is `section`.
    pub fn entities_in(&self, section: usize) -> impl Iterator<Item = &Symbol> {
        self.section_entities
            .get(section)
            .map(Vec::as_slice)
            .unwrap_or(&[])
            .iter()
            .filter_map(|&i| self.symbols.get(i))
    }

    /// Resolves where `reloc` points (see [`Target`]).
    pub fn resolve(&self, reloc: &Reloc) -> Target {
        let Some(s) = self.symbols.get(reloc.symbol) else {
            return Target::Absolute {
                sym: reloc.symbol,
                addend: reloc.addend,
            };
        };
        if s.undefined {
            return Target::Undefined {
                sym: s.index,
                addend: reloc.addend,
            };
        }
        let Some(secidx) = s.section else {
            return Target::Absolute {
                sym: s.index,
                addend: reloc.addend,
            };
        };
        if s.is_defined_entity() {
            return Target::Entity {
                sym: s.index,
                offset: reloc.addend,
            };
        }
        let off = i64::try_from(s.value)
            .unwrap_or(i64::MAX)
            .saturating_add(reloc.addend);
        let bias = if reloc.is_pc_relative() { 4 } else { 0 };
        let probe = u64::try_from(off.saturating_add(bias)).unwrap_or(0);
        let Some(sec) = self.sections.get(secidx) else {
            return Target::Absolute {
                sym: s.index,
                addend: reloc.addend,
            };
        };
        if sec.is_strings() && !sec.data.is_empty() {
            let p = usize::try_from(probe)
                .unwrap_or(usize::MAX)
                .min(sec.data.len() - 1);
            let start = sec.data[..p]
                .iter()
                .rposition(|&b| b == 0)
                .map_or(0, |z| z + 1);
            let end = sec.data[p..]
                .iter()
                .position(|&b| b == 0)
                .map_or(sec.data.len(), |z| p + z + 1);
            return Target::Str {
                section: secidx,
                start: start as u64,
                end: end as u64,
                rel: off.saturating_sub(start as i64),
            };
        }
        let ents = self
            .section_entities
            .get(secidx)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        // A data section with one object maps to it whatever the offset
        // (gcc addresses a member as `.data.x+8`); in code, only a place
        // inside a function is that function (code past its end is
        // fixup code, see [`crate::shared`]).
        let hit = if ents.len() == 1 && !sec.is_merge_const() && !sec.is_code() {
            ents.first().copied()
        } else {
            ents.iter().copied().find(|&i| {
                self.symbols.get(i).is_some_and(|e| {
                    probe >= e.value && probe < e.value.saturating_add(e.size.max(1))
                })
            })
        };
        match hit.and_then(|i| self.symbols.get(i)) {
            Some(e) => Target::Entity {
                sym: e.index,
                offset: off.saturating_sub(i64::try_from(e.value).unwrap_or(0)),
            },
            None => Target::Anon {
                section: secidx,
                offset: off,
            },
        }
    }

    /// Position of local symbol `index` among the local symbols with the same
    /// name (1-based), or 0 when its name is unique in the symbol table.
    pub fn sympos(&self, index: usize) -> u32 {
        let Some(me) = self.symbols.get(index) else {
            return 0;
        };
        if me.bind != Bind::Local {
            return 0;
        }
        let same: Vec<usize> = self
            .symbols
            .iter()
            .filter(|s| s.bind == Bind::Local && s.name == me.name && !s.is_section())
            .map(|s| s.index)
            .collect();
        if same.len() <= 1 {
            return 0;
        }
        same.iter()
            .position(|&i| i == index)
            .map_or(0, |p| u32::try_from(p + 1).unwrap_or(0))
    }

    /// The bytes of a defined symbol (empty for `NOBITS`).
    pub fn symbol_bytes(&self, sym: &Symbol) -> &[u8] {
        sym.section
            .and_then(|s| self.sections.get(s))
            .and_then(|s| s.bytes(sym.value, sym.size))
            .unwrap_or(&[])
    }

    /// Relocations of the section of `sym` that fall inside the symbol.
    pub fn symbol_relocs<'a>(&'a self, sym: &Symbol) -> impl Iterator<Item = &'a Reloc> + 'a {
        let (start, end) = (sym.value, sym.value.saturating_add(sym.size));
        sym.section
            .and_then(|s| self.sections.get(s))
            .map(|s| s.relocs_in(start, end))
            .unwrap_or(&[])
            .iter()
    }
}

/// The GNU build-id of any ELF file (executable, library, object), as hex.
pub fn build_id(bytes: &[u8], name: &str) -> Result<Option<String>, Error> {
    use object::Object;
    let file = object::File::parse(bytes).map_err(|e| perr(name, format!("not an object: {e}")))?;
    let id = file
        .build_id()
        .map_err(|e| perr(name, format!("bad build-id note: {e}")))?;
    Ok(id.map(hex::encode))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use object::write::{Object, Symbol as WSymbol, SymbolSection};
    use object::{Architecture, BinaryFormat, Endianness, SectionKind, SymbolFlags, SymbolKind};

    /// An object with two local functions named `dup` (as after `ld -r` of
    /// two files) and one global `g`.
    fn dup_object() -> Vec<u8> {
        let mut o = Object::new(BinaryFormat::Elf, Architecture::X86_64, Endianness::Little);
        o.add_file_symbol(b"a.c".to_vec());
        for (name, local) in [("dup", true), ("dup", true), ("g", false)] {
            let s = o.add_section(
                Vec::new(),
                format!(".text.{name}").into_bytes(),
                SectionKind::Text,
            );
            o.set_section_data(s, vec![0xc3; 8], 16);
            o.add_symbol(WSymbol {
                name: name.as_bytes().to_vec(),
                value: 0,
                size: 8,
                kind: SymbolKind::Text,
                scope: if local {
                    object::SymbolScope::Compilation
                } else {
                    object::SymbolScope::Dynamic
                },
                weak: false,
                section: SymbolSection::Section(s),
                flags: SymbolFlags::None,
            });
        }
        o.write().unwrap()
    }

    #[test]
    fn sympos_counts_same_named_locals() {
        let bytes = dup_object();
        let obj = ObjectFile::parse(&bytes, "dup.o").unwrap();
        let dups: Vec<usize> = obj
            .symbols
            .iter()
            .filter(|s| s.name == "dup")
            .map(|s| s.index)
            .collect();
        assert_eq!(dups.len(), 2);
        assert_eq!(obj.sympos(dups[0]), 1);
        assert_eq!(obj.sympos(dups[1]), 2);
        let g = obj.symbols.iter().find(|s| s.name == "g").unwrap();
        assert_eq!(obj.sympos(g.index), 0);
        assert_eq!(obj.symbols[dups[0]].file.as_deref(), Some("a.c"));
        assert_eq!(g.file, None);
        assert_eq!(obj.source_file.as_deref(), Some("a.c"));
    }
}
