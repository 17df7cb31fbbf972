//! `inspect`: a stable dump of an x86-64 ELF relocatable object or hotfix patch.
//!
//! Model: the dump lists what a patch reviewer (or a snapshot test) cares
//! about — sections (name, type, flags, size, alignment), symbols (name,
//! type, binding, visibility, section, value, size), relocations per section
//! (offset, type, symbol, addend) and, when the file has a
//! [`META_SECTION`](crate::format::META_SECTION), the patch [`Meta`].
//!
//! Invariants:
//! - stable: no file offsets, section or symbol indexes, or anything else
//!   that moves when unrelated parts of the file change; sections are sorted
//!   by name, symbols by (name, section, value), relocation groups by the
//!   name of the section they apply to and entries by offset. Sections and
//!   section symbols are named by the section's name, never by index.
//! - total: every input, however malformed, gives either a [`Dump`] or an
//!   [`Error::Parse`], [`Error::WrongMachine`], [`Error::NotRelocatable`]
//!   or [`Error::Format`] naming the file; nothing panics
//!   (the fuzz target `inspect` checks this).
//! - only `ELFCLASS64`, little-endian, `EM_X86_64`, `ET_REL` files are
//!   accepted; anything else is refused with the reason.

use crate::Error;
use crate::format::{self, META_SECTION, Meta};
use object::elf;
use object::read::elf::{FileHeader, Rela, SectionHeader, SectionTable, Sym, SymbolTable};
use object::{Endianness, SectionIndex, SymbolIndex};
use serde::Serialize;
use std::fmt::{self, Write as _};
use std::path::Path;

type Hdr = elf::FileHeader64<Endianness>;

/// The dump of one object file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dump {
    /// Machine, always `"x86-64"` (others are refused).
    pub machine: String,
    /// File type, always `"relocatable"` (others are refused).
    pub file_type: String,
    /// Every section but the null one, sorted by name (ties keep file order).
    pub sections: Vec<SectionRow>,
    /// Every symbol but the null one, sorted by (name, section, value).
    pub symbols: Vec<SymbolRow>,
    /// Relocations, one group per relocated section, sorted by that section's name.
    pub relocations: Vec<RelocGroup>,
    /// The patch metadata, when the file has a metadata section.
    pub meta: Option<Meta>,
}

/// One section header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SectionRow {
    /// Section name.
    pub name: String,
    /// `sh_type` without its `SHT_` prefix (`PROGBITS`, `NOBITS`, `RELA`...),
    /// or `0x...` when unknown.
    #[serde(rename = "type")]
    pub kind: String,
    /// `sh_flags` as `readelf` letters (`W` write, `A` alloc, `X` exec,
    /// `M` merge, `S` strings, `I` info link, `L` link order, `O` OS,
    /// `G` group, `T` TLS, `E` exclude, `x` unknown).
    pub flags: String,
    /// `sh_size` in bytes.
    pub size: u64,
    /// `sh_addralign`.
    pub align: u64,
}

/// One symbol table entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SymbolRow {
    /// Symbol name; for a section symbol (`STT_SECTION`), its section's name.
    pub name: String,
    /// Type without its `STT_` prefix (`FUNC`, `OBJECT`, `SECTION`, `FILE`...).
    #[serde(rename = "type")]
    pub kind: String,
    /// Binding without its `STB_` prefix (`LOCAL`, `GLOBAL`, `WEAK`...).
    pub bind: String,
    /// Visibility without its `STV_` prefix (`DEFAULT`, `HIDDEN`...).
    pub visibility: String,
    /// Name of the defining section, or `UND`, `ABS`, `COM`.
    pub section: String,
    /// `st_value` (offset in the section for defined symbols).
    pub value: u64,
    /// `st_size`.
    pub size: u64,
}

/// The relocations applying to one section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RelocGroup {
    /// Name of the section the relocations apply to.
    pub section: String,
    /// The relocations, sorted by offset.
    pub relocs: Vec<RelocRow>,
}

/// One relocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RelocRow {
    /// Offset in the relocated section.
    pub offset: u64,
    /// Type name (`R_X86_64_PLT32`...), or the number when unknown.
    #[serde(rename = "type")]
    pub kind: String,
    /// Symbol name (section name for section symbols; empty for none).
    pub symbol: String,
    /// Addend.
    pub addend: i64,
}

/// Reads and dumps the file at `path`.
pub fn inspect_file(path: &Path) -> Result<Dump, Error> {
    let data = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    inspect(&data, path)
}

/// Dumps the object in `data`; `path` only names the file in errors.
pub fn inspect(data: &[u8], path: &Path) -> Result<Dump, Error> {
    let file = path.display().to_string();
    let bad = |reason: String| Error::Parse {
        file: file.clone(),
        reason,
    };
    let hdr = header(data, &file)?;
    let endian = hdr.endian().map_err(|e| bad(e.to_string()))?;
    let sections = hdr
        .sections(endian, data)
        .map_err(|e| bad(format!("section headers: {e} (truncated or corrupt file?)")))?;
    let symtab = sections
        .symbols(endian, data, elf::SHT_SYMTAB)
        .map_err(|e| bad(format!("symbol table: {e}")))?;

    let mut names = Vec::with_capacity(sections.len());
    for (index, sh) in sections.enumerate() {
        let name = sections
            .section_name(endian, sh)
            .map_err(|e| bad(format!("name of section {index}: {e}")))?;
        let name = String::from_utf8_lossy(name).into_owned();
        if sh.sh_type(endian) != elf::SHT_NOBITS {
            sh.data(endian, data)
                .map_err(|e| bad(format!("section {name}: {e} (truncated file?)")))?;
        }
        names.push(name);
    }
    let section_name = |index: SectionIndex| -> Result<&str, String> {
        names
            .get(index.0)
            .map(String::as_str)
            .ok_or_else(|| format!("section index {index} out of range"))
    };

    let mut rows = Vec::new();
    for (index, sh) in sections.enumerate().skip(1) {
        rows.push(SectionRow {
            name: section_name(index).map_err(bad)?.to_owned(),
            kind: section_type(sh.sh_type(endian)),
            flags: section_flags(sh.sh_flags(endian)),
            size: sh.sh_size(endian),
            align: sh.sh_addralign(endian),
        });
    }
    rows.sort_by(|a, b| a.name.cmp(&b.name));

    let symbols = symbol_rows(&symtab, endian, &section_name)
        .map_err(|e| bad(format!("symbol table: {e}")))?;
    let relocations = reloc_groups(&sections, &symtab, data, endian, &section_name).map_err(bad)?;

    let meta = match sections
        .section_by_name(endian, META_SECTION.as_bytes())
        .map(|(_, sh)| sh.data(endian, data))
    {
        None => None,
        Some(Err(e)) => return Err(bad(format!("section {META_SECTION}: {e}"))),
        Some(Ok(bytes)) => Some(Meta::decode(bytes).map_err(|source| Error::Format {
            path: path.to_path_buf(),
            source,
        })?),
    };

    Ok(Dump {
        machine: "x86-64".into(),
        file_type: "relocatable".into(),
        sections: rows,
        symbols,
        relocations,
        meta,
    })
}

/// Parses the file header and checks class, byte order, machine and type.
fn header<'data>(data: &'data [u8], file: &str) -> Result<&'data Hdr, Error> {
    let bad = |reason: String| Error::Parse {
        file: file.to_owned(),
        reason,
    };
    // e_ident: magic (4 bytes), class, byte order; EI_NIDENT is 16.
    let ident = data.get(..16).ok_or_else(|| {
        bad(format!(
            "file is {} bytes, too short for an ELF header",
            data.len()
        ))
    })?;
    if ident[..4] != elf::ELFMAG {
        return Err(bad("no ELF magic (not an ELF file)".into()));
    }
    match ident[4] {
        c if c == elf::ELFCLASS64.0 => {}
        c if c == elf::ELFCLASS32.0 => {
            return Err(bad("32-bit ELF (ELFCLASS32); need ELFCLASS64".into()));
        }
        c => return Err(bad(format!("unknown ELF class {c}"))),
    }
    if ident[5] != elf::ELFDATA2LSB.0 {
        return Err(bad("not little-endian (EI_DATA); need ELFDATA2LSB".into()));
    }
    let hdr = Hdr::parse(data).map_err(|e| bad(format!("ELF header: {e}")))?;
    let endian = hdr.endian().map_err(|e| bad(e.to_string()))?;
    let machine = hdr.e_machine(endian);
    if machine != elf::EM_X86_64 {
        return Err(Error::WrongMachine {
            file: file.to_owned(),
            machine: machine.0,
        });
    }
    let ty = hdr.e_type(endian);
    if ty != elf::ET_REL {
        return Err(Error::NotRelocatable {
            file: file.to_owned(),
            e_type: ty.0,
        });
    }
    Ok(hdr)
}

/// The rows of the symbol table (all but the null symbol), sorted.
fn symbol_rows<'data, 'n>(
    symtab: &SymbolTable<'data, Hdr, &'data [u8]>,
    endian: Endianness,
    section_name: &impl Fn(SectionIndex) -> Result<&'n str, String>,
) -> Result<Vec<SymbolRow>, String> {
    let mut rows = Vec::with_capacity(symtab.len());
    for (index, sym) in symtab.enumerate().skip(1) {
        rows.push(SymbolRow {
            name: symbol_name(symtab, endian, index, section_name)?,
            kind: strip(sym.st_type().name(), "STT_", sym.st_type().0.into()),
            bind: strip(sym.st_bind().name(), "STB_", sym.st_bind().0.into()),
            visibility: strip(
                sym.st_visibility().name(),
                "STV_",
                sym.st_visibility().0.into(),
            ),
            section: symbol_section(symtab, endian, index, section_name)?,
            value: sym.st_value(endian),
            size: sym.st_size(endian),
        });
    }
    rows.sort_by(|a, b| {
        (&a.name, &a.section, a.value, &a.kind).cmp(&(&b.name, &b.section, b.value, &b.kind))
    });
    Ok(rows)
}

/// The name shown for symbol `index`: its own name, or its section's name
/// for a section symbol.
fn symbol_name<'data, 'n>(
    symtab: &SymbolTable<'data, Hdr, &'data [u8]>,
    endian: Endianness,
    index: SymbolIndex,
    section_name: &impl Fn(SectionIndex) -> Result<&'n str, String>,
) -> Result<String, String> {
    let sym = symtab
        .symbol(index)
        .map_err(|e| format!("symbol {index}: {e}"))?;
    if sym.st_type() == elf::STT_SECTION {
        return symbol_section(symtab, endian, index, section_name);
    }
    let name = symtab
        .symbol_name(endian, sym)
        .map_err(|e| format!("name of symbol {index}: {e}"))?;
    Ok(String::from_utf8_lossy(name).into_owned())
}

/// The section column of symbol `index`: a section name, `UND`, `ABS` or `COM`.
fn symbol_section<'data, 'n>(
    symtab: &SymbolTable<'data, Hdr, &'data [u8]>,
    endian: Endianness,
    index: SymbolIndex,
    section_name: &impl Fn(SectionIndex) -> Result<&'n str, String>,
) -> Result<String, String> {
    let sym = symtab
        .symbol(index)
        .map_err(|e| format!("symbol {index}: {e}"))?;
    let shndx = sym.st_shndx(endian);
    if shndx == elf::SHN_UNDEF {
        return Ok("UND".into());
    }
    if shndx == elf::SHN_ABS {
        return Ok("ABS".into());
    }
    if shndx == elf::SHN_COMMON {
        return Ok("COM".into());
    }
    match symtab
        .symbol_section(endian, sym, index)
        .map_err(|e| format!("section of symbol {index}: {e}"))?
    {
        Some(s) => Ok(section_name(s)
            .map_err(|_| format!("symbol {index} names section {s}, out of range"))?
            .to_owned()),
        None => Ok(format!("{:#x}", shndx.0)),
    }
}

/// The relocation groups of every `SHT_RELA` section, sorted.
fn reloc_groups<'data, 'n>(
    sections: &SectionTable<'data, Hdr, &'data [u8]>,
    symtab: &SymbolTable<'data, Hdr, &'data [u8]>,
    data: &'data [u8],
    endian: Endianness,
    section_name: &impl Fn(SectionIndex) -> Result<&'n str, String>,
) -> Result<Vec<RelocGroup>, String> {
    let mut groups = Vec::new();
    for (index, sh) in sections.enumerate() {
        if sh.sh_type(endian) == elf::SHT_REL {
            return Err(format!(
                "section {} is SHT_REL; x86-64 objects use SHT_RELA",
                section_name(index)?
            ));
        }
        let here = section_name(index)?;
        let Some((relas, link)) = sh
            .rela(endian, data)
            .map_err(|e| format!("section {here}: {e}"))?
        else {
            continue;
        };
        if link != symtab.section() {
            return Err(format!(
                "relocation section {} does not link to the symbol table",
                section_name(index)?
            ));
        }
        let target = SectionIndex(sh.sh_info(endian) as usize);
        let mut relocs = Vec::with_capacity(relas.len());
        for rela in relas {
            let symbol = match rela.symbol(endian, false) {
                None => String::new(),
                Some(s) => symbol_name(symtab, endian, s, section_name)
                    .map_err(|e| format!("relocation in {here}: {e}"))?,
            };
            let ty = rela.r_type(endian, false);
            relocs.push(RelocRow {
                offset: rela.r_offset(endian),
                kind: elf::machine_names(elf::EM_X86_64)
                    .r
                    .name(ty)
                    .map(str::to_owned)
                    .unwrap_or_else(|| ty.0.to_string()),
                symbol,
                addend: rela.r_addend(endian),
            });
        }
        relocs.sort_by(|a, b| (a.offset, &a.kind).cmp(&(b.offset, &b.kind)));
        groups.push(RelocGroup {
            section: section_name(target)?.to_owned(),
            relocs,
        });
    }
    groups.sort_by(|a, b| a.section.cmp(&b.section));
    Ok(groups)
}

/// A constant's name without its prefix, or the number in hex.
fn strip(name: Option<&'static str>, prefix: &str, value: u64) -> String {
    match name {
        Some(n) => n.strip_prefix(prefix).unwrap_or(n).to_owned(),
        None => format!("{value:#x}"),
    }
}

fn section_type(ty: elf::SectionType) -> String {
    strip(ty.name(), "SHT_", ty.0.into())
}

fn section_flags(flags: elf::SectionFlags) -> String {
    const LETTERS: [(elf::SectionFlags, char); 11] = [
        (elf::SHF_WRITE, 'W'),
        (elf::SHF_ALLOC, 'A'),
        (elf::SHF_EXECINSTR, 'X'),
        (elf::SHF_MERGE, 'M'),
        (elf::SHF_STRINGS, 'S'),
        (elf::SHF_INFO_LINK, 'I'),
        (elf::SHF_LINK_ORDER, 'L'),
        (elf::SHF_OS_NONCONFORMING, 'O'),
        (elf::SHF_GROUP, 'G'),
        (elf::SHF_TLS, 'T'),
        (elf::SHF_EXCLUDE, 'E'),
    ];
    let mut out = String::new();
    let mut rest = flags.0;
    for (flag, letter) in LETTERS {
        if flags.0 & flag.0 != 0 {
            out.push(letter);
            rest &= !flag.0;
        }
    }
    if rest != 0 {
        out.push('x');
    }
    out
}

/// A left-aligned text table with a two-space indent.
struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(header: &[&str]) -> Self {
        Table {
            rows: vec![header.iter().map(|s| (*s).to_owned()).collect()],
        }
    }

    fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    fn render(&self, out: &mut String, indent: &str) {
        let cols = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..cols)
            .map(|c| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(c))
                    .map(|s| s.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        for row in &self.rows {
            let mut line = String::from(indent);
            for (c, cell) in row.iter().enumerate() {
                if c + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    let w = widths.get(c).copied().unwrap_or(0);
                    let _ = write!(line, "{cell:<w$}  ");
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
    }
}

fn opt(s: &Option<String>) -> &str {
    s.as_deref().unwrap_or("-")
}

fn write_meta(out: &mut String, m: &Meta) {
    let _ = writeln!(
        out,
        "metadata ({META_SECTION}, format version {}):",
        format::FORMAT_VERSION
    );
    let _ = writeln!(out, "  id: {}", m.id);
    let _ = writeln!(
        out,
        "  description: {}",
        m.description.replace('\n', "\n    ")
    );
    let _ = writeln!(out, "  source_hash: {}", m.source_hash);
    let _ = writeln!(out, "  targets ({}):", m.targets.len());
    let mut t = Table::new(&["index", "build_id", "name"]);
    for (i, target) in m.targets.iter().enumerate() {
        let id = if target.build_id.is_empty() {
            "-".to_owned()
        } else {
            target.build_id.clone()
        };
        t.row(vec![i.to_string(), id, target.name.clone()]);
    }
    t.render(out, "    ");
    let _ = writeln!(out, "  funcs ({}):", m.funcs.len());
    let mut t = Table::new(&[
        "name",
        "file",
        "sympos",
        "binding",
        "old_size",
        "new_symbol",
        "target",
        "expected",
        "expected_mask",
    ]);
    for f in &m.funcs {
        t.row(vec![
            f.name.clone(),
            opt(&f.file).to_owned(),
            f.sympos.to_string(),
            format!("{:?}", f.binding).to_lowercase(),
            f.old_size.to_string(),
            f.new_symbol.clone(),
            f.target.to_string(),
            f.expected.clone(),
            f.expected_mask.clone(),
        ]);
    }
    t.render(out, "    ");
    let _ = writeln!(
        out,
        "  new_funcs ({}): {}",
        m.new_funcs.len(),
        m.new_funcs.join(" ")
    );
    let _ = writeln!(
        out,
        "  new_data ({}): {}",
        m.new_data.len(),
        m.new_data.join(" ")
    );
    let _ = writeln!(out, "  refs ({}):", m.refs.len());
    let mut t = Table::new(&[
        "symbol", "name", "binding", "kind", "file", "sympos", "target",
    ]);
    for r in &m.refs {
        t.row(vec![
            r.symbol.clone(),
            r.name.clone(),
            format!("{:?}", r.binding).to_lowercase(),
            format!("{:?}", r.kind).to_lowercase(),
            opt(&r.file).to_owned(),
            r.sympos.to_string(),
            r.target.to_string(),
        ]);
    }
    t.render(out, "    ");
}

impl fmt::Display for Dump {
    /// The human dump: sections, symbols, relocations, then metadata.
    /// Sizes, values and offsets are hexadecimal; addends are signed decimal.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        let _ = writeln!(out, "{} {} object", self.machine, self.file_type);
        let _ = writeln!(out, "\nsections ({}):", self.sections.len());
        let mut t = Table::new(&["name", "type", "flags", "size", "align"]);
        for s in &self.sections {
            t.row(vec![
                s.name.clone(),
                s.kind.clone(),
                if s.flags.is_empty() {
                    "-".into()
                } else {
                    s.flags.clone()
                },
                format!("{:#x}", s.size),
                s.align.to_string(),
            ]);
        }
        t.render(&mut out, "  ");
        let _ = writeln!(out, "\nsymbols ({}):", self.symbols.len());
        let mut t = Table::new(&["name", "type", "bind", "vis", "section", "value", "size"]);
        for s in &self.symbols {
            t.row(vec![
                if s.name.is_empty() {
                    "\"\"".into()
                } else {
                    s.name.clone()
                },
                s.kind.clone(),
                s.bind.clone(),
                s.visibility.clone(),
                s.section.clone(),
                format!("{:#x}", s.value),
                format!("{:#x}", s.size),
            ]);
        }
        t.render(&mut out, "  ");
        let total: usize = self.relocations.iter().map(|g| g.relocs.len()).sum();
        let _ = writeln!(out, "\nrelocations ({total}):");
        for g in &self.relocations {
            let _ = writeln!(out, "  {} ({}):", g.section, g.relocs.len());
            let mut t = Table::new(&["offset", "type", "symbol", "addend"]);
            for r in &g.relocs {
                t.row(vec![
                    format!("{:#x}", r.offset),
                    r.kind.clone(),
                    if r.symbol.is_empty() {
                        "-".into()
                    } else {
                        r.symbol.clone()
                    },
                    r.addend.to_string(),
                ]);
            }
            t.render(&mut out, "    ");
        }
        match &self.meta {
            None => {
                let _ = writeln!(out, "\nno patch metadata ({META_SECTION} absent)");
            }
            Some(m) => {
                out.push('\n');
                write_meta(&mut out, m);
            }
        }
        for line in out.lines() {
            writeln!(f, "{}", line.trim_end())?;
        }
        Ok(())
    }
}
