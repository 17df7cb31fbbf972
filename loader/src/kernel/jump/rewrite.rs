//! The ELF rewrite that turns a livepatch-shaped module into one the jump
//! core applies (see [`super`] for what changes), and the readers of the
//! module sections the driver needs (`.hotfix.expect`, `.klp.sym.*`, the
//! core's `ksym_` parameters and CRC).
//!
//! Invariant: every offset and size read from the module goes through the
//! checked cursor [`patchgen::bytes`]; a hostile module gives
//! [`Error::KernelModule`] naming the file, never a wrapped offset or a
//! panic. The rewrite works on a copy; the input image is not modified.

use super::kallsyms::Kallsyms;
use crate::Error;
use object::elf;
use object::read::elf::{FileHeader, SectionHeader, Sym};
use patchgen::bytes::{Bytes, write_at};
use serde::Serialize;
use std::collections::HashSet;
use std::path::Path;

const SHN_LIVEPATCH: u16 = 0xff20;
const SHN_ABS: u16 = 0xfff1;
const SHF_ALLOC: u64 = 0x2;
const SHF_RELA_LIVEPATCH: u64 = 0x0010_0000;
const KLP_ENABLE: &[u8] = b"klp_enable_patch";
const CORE_APPLY: &[u8] = b"hotfix_jmp_apply";
/// Size of an `Elf64_Sym`.
const SYM_SIZE: u64 = 24;
/// Size of a `struct modversion_info` (u64 crc, char name[56]).
const VERSION_SIZE: u64 = 64;

/// What [`rewrite_for_jump`] resolved.
#[derive(Debug, Clone, Serialize)]
pub struct Resolved {
    /// `object.name,sympos`.
    pub symbol: String,
    /// Its address in the running kernel.
    pub addr: u64,
}

/// The lines of the module's `.hotfix.expect` section (the build's
/// expected bytes per jump site, `OBJECT FUNCTION SYMPOS HEX`; see
/// `patchgen::kernel::jump`); empty when the module has none.
pub fn expect_lines(image: &[u8]) -> Vec<String> {
    use object::{Object, ObjectSection};
    let Ok(file) = object::File::parse(image) else {
        return Vec::new();
    };
    let Some(data) = file
        .section_by_name(patchgen::kernel::jump::SECTION)
        .and_then(|s| s.data().ok())
    else {
        return Vec::new();
    };
    String::from_utf8_lossy(data)
        .lines()
        .filter(|l| l.split(' ').count() == 4)
        .map(String::from)
        .collect()
}

/// The symbol names a livepatch module's `.klp.sym.<object>.<name>,<pos>`
/// symbols refer to.
pub fn klp_sym_names(image: &[u8]) -> HashSet<String> {
    use object::{Object, ObjectSymbol};
    let Ok(file) = object::File::parse(image) else {
        return HashSet::new();
    };
    file.symbols()
        .filter_map(|s| {
            let rest = s.name().ok()?.strip_prefix(".klp.sym.")?;
            let (_, name_pos) = rest.split_once('.')?;
            Some(name_pos.rsplit_once(',')?.0.to_string())
        })
        .collect()
}

/// The kernel symbols the core wants (its `ksym_<symbol>` parameters, from
/// the `parmtype=` entries of its `.modinfo`).
pub fn core_ksyms(core_path: &Path, core_image: &[u8]) -> Result<Vec<String>, Error> {
    let info = crate::kernel::read::modinfo(core_image).map_err(|reason| Error::KernelModule {
        path: core_path.to_path_buf(),
        reason,
    })?;
    Ok(info
        .iter()
        .filter(|(k, _)| k == "parmtype")
        .filter_map(|(_, v)| v.split(':').next()?.strip_prefix("ksym_").map(String::from))
        .collect())
}

/// The modversions CRC of the core's `hotfix_jmp_apply` (from its
/// `__crc_hotfix_jmp_apply` symbol), `None` when the core has none.
pub fn core_crc(core_image: &[u8]) -> Option<u32> {
    use object::{Object, ObjectSection, ObjectSymbol};
    let file = object::File::parse(core_image).ok()?;
    let sym = file
        .symbols()
        .find(|s| s.name() == Ok("__crc_hotfix_jmp_apply"))?;
    let sec = file.section_by_index(sym.section_index()?).ok()?;
    let data = sec.data().ok()?;
    let at = sym.address().checked_sub(sec.address())?;
    Bytes(data).at(at).ok()?.read_u32().ok()
}

/// Rewrites a livepatch module image for the jump method (see the module
/// documentation); returns the new image and the symbols it resolved.
/// `crc`: the core's modversions CRC of `hotfix_jmp_apply`, written into the
/// module's `__versions` entry of `klp_enable_patch` (renamed).
pub fn rewrite_for_jump(
    path: &Path,
    image: &[u8],
    ksyms: &Kallsyms,
    crc: Option<u32>,
) -> Result<(Vec<u8>, Vec<Resolved>), Error> {
    let bad = |reason: String| Error::KernelModule {
        path: path.to_path_buf(),
        reason,
    };
    let e = object::LittleEndian;
    let hdr = elf::FileHeader64::<object::LittleEndian>::parse(image)
        .map_err(|err| bad(format!("not an ELF64 object: {err}")))?;
    let sections = hdr
        .sections(e, image)
        .map_err(|err| bad(format!("section headers: {err}")))?;
    let mut out = image.to_vec();
    let resolved = resolve_livepatch_symbols(&mut out, image, &sections, ksyms).map_err(bad)?;
    clear_livepatch_relas(&mut out, image, hdr, sections.len() as u64).map_err(bad)?;
    let section = |name: &[u8]| {
        sections
            .iter()
            .find(|s| sections.section_name(e, s).is_ok_and(|n| n == name))
            .map(|s| (s.sh_offset(e), s.sh_size(e)))
    };
    if let Some((off, size)) = section(b"__versions") {
        let crc = crc.ok_or_else(|| {
            bad(
                "the module has __versions but the core module has no CRC for hotfix_jmp_apply"
                    .into(),
            )
        })?;
        retarget_versions(&mut out, off, size, crc).map_err(bad)?;
    }
    let (off, size) = section(b".modinfo").ok_or_else(|| bad("no .modinfo".into()))?;
    unmark_livepatch(&mut out, off, size).map_err(bad)?;
    Ok((out, resolved))
}

type Sections<'a> = object::read::elf::SectionTable<'a, elf::FileHeader64<object::LittleEndian>>;

/// Every livepatch symbol (`.klp.sym.<object>.<name>,<sympos>`,
/// `SHN_LIVEPATCH`) becomes absolute, valued at its kallsyms address; the
/// undefined `klp_enable_patch` is renamed `hotfix_jmp_apply` in place.
fn resolve_livepatch_symbols(
    out: &mut [u8],
    image: &[u8],
    sections: &Sections<'_>,
    ksyms: &Kallsyms,
) -> Result<Vec<Resolved>, String> {
    let e = object::LittleEndian;
    let symtab = sections
        .symbols(e, image, elf::SHT_SYMTAB)
        .map_err(|err| format!("symbol table: {err}"))?;
    let sym_off = sections
        .iter()
        .find(|s| s.sh_type(e) == elf::SHT_SYMTAB)
        .ok_or("no symbol table")?
        .sh_offset(e);
    let str_off = sections
        .section(symtab.string_section())
        .map_err(|err| format!("string table: {err}"))?
        .sh_offset(e);
    let file = Bytes(image);
    let mut resolved = Vec::new();
    // Symbol names: where each lies in the string table, to overwrite
    // klp_enable_patch only when no other undefined symbol's name shares its
    // bytes (a defined local such as `patch` may share its tail: its name
    // only shows in kallsyms).
    let mut enable: Option<u64> = None;
    let mut names: Vec<(u64, u64)> = Vec::new();
    for (i, sym) in symtab.iter().enumerate() {
        let name = symtab
            .symbol_name(e, sym)
            .map_err(|err| format!("symbol {i}: {err}"))?;
        let st_name = u64::from(sym.st_name(e));
        let outside = |err| format!("symbol {i}: {err}");
        let at = (i as u64)
            .checked_mul(SYM_SIZE)
            .and_then(|o| o.checked_add(sym_off))
            .ok_or_else(|| outside("offset overflows".into()))?;
        // st_shndx is at offset 6 of an Elf64_Sym, st_value at 8.
        let shndx = file
            .at(at)
            .and_then(|mut b| b.skip(6).and_then(|()| b.read_u16()))
            .map_err(|err| outside(err.to_string()))?;
        if shndx == 0 {
            names.push((st_name, name.len() as u64));
            if name == KLP_ENABLE {
                enable = Some(st_name);
            }
        }
        if shndx == SHN_LIVEPATCH {
            let r = resolve_one(name, ksyms)?;
            write_at(out, at + 6, &SHN_ABS.to_le_bytes())
                .and_then(|()| write_at(out, at + 8, &r.addr.to_le_bytes()))
                .map_err(|err| outside(err.to_string()))?;
            resolved.push(r);
        }
    }
    let st_name = enable
        .ok_or("the module does not call klp_enable_patch (not a livepatch-shaped module)")?;
    let len = KLP_ENABLE.len() as u64;
    if names.iter().any(|&(o, l)| {
        o != st_name && o < st_name.saturating_add(len) && o.saturating_add(l) > st_name
    }) {
        return Err(
            "klp_enable_patch shares string-table bytes with another undefined symbol".into(),
        );
    }
    str_off
        .checked_add(st_name)
        .ok_or(patchgen::bytes::OutOfBounds {
            offset: str_off,
            len,
            size: image.len() as u64,
        })
        .and_then(|at| write_at(out, at, CORE_APPLY))
        .map_err(|err| format!("string table: {err}"))?;
    Ok(resolved)
}

/// The kallsyms address of livepatch symbol `name`
/// (`.klp.sym.<object>.<name>,<sympos>`).
fn resolve_one(name: &[u8], ksyms: &Kallsyms) -> Result<Resolved, String> {
    let full = String::from_utf8_lossy(name).into_owned();
    let rest = full
        .strip_prefix(".klp.sym.")
        .ok_or_else(|| format!("livepatch symbol {full} without .klp.sym."))?;
    // Module names have no dots; symbol names may (`reads.0`).
    let (obj, name_pos) = rest
        .split_once('.')
        .ok_or_else(|| format!("livepatch symbol {full}: no object"))?;
    let (sname, pos) = name_pos
        .rsplit_once(',')
        .ok_or_else(|| format!("livepatch symbol {full}: no sympos"))?;
    let pos: u64 = pos
        .parse()
        .map_err(|_| format!("livepatch symbol {full}: bad sympos"))?;
    let addr = ksyms.lookup(obj, sname, pos).map_err(|e| e.to_string())?;
    Ok(Resolved {
        symbol: format!("{obj}.{sname},{pos}"),
        addr,
    })
}

/// Every `.klp.rela.*` section loses `SHF_RELA_LIVEPATCH` and `SHF_ALLOC`,
/// so the module loader applies it like any relocation section.
fn clear_livepatch_relas(
    out: &mut [u8],
    image: &[u8],
    hdr: &elf::FileHeader64<object::LittleEndian>,
    count: u64,
) -> Result<(), String> {
    let e = object::LittleEndian;
    let table = Bytes(image)
        .at(hdr.e_shoff(e))
        .map_err(|err| format!("section headers: {err}"))?;
    let entsize = u64::from(hdr.e_shentsize(e));
    for i in 0..count {
        let outside = |err: patchgen::bytes::OutOfBounds| format!("section header {i}: {err}");
        // sh_flags is at offset 8 of an Elf64_Shdr.
        let at = i
            .checked_mul(entsize)
            .and_then(|o| o.checked_add(8))
            .ok_or_else(|| format!("section header {i}: offset overflows"))?;
        let flags = table
            .at(at)
            .and_then(|mut b| b.read_u64())
            .map_err(outside)?;
        if flags & SHF_RELA_LIVEPATCH != 0 {
            let new = flags & !(SHF_RELA_LIVEPATCH | SHF_ALLOC);
            write_at(out, hdr.e_shoff(e) + at, &new.to_le_bytes()).map_err(outside)?;
        }
    }
    Ok(())
}

/// In `__versions` (at `off`, `size` bytes from the file: checked here) the
/// `klp_enable_patch` entry becomes `hotfix_jmp_apply` with the core's CRC.
pub fn retarget_versions(out: &mut [u8], off: u64, size: u64, crc: u32) -> Result<(), String> {
    let table: Vec<u8> = Bytes(out)
        .range(off, size)
        .map_err(|err| format!("__versions: {err}"))?
        .data()
        .to_vec();
    let entries = Bytes(&table)
        .records(VERSION_SIZE)
        .map_err(|err| format!("__versions is not a whole number of entries: {err}"))?;
    let mut found = false;
    for (k, mut entry) in entries.enumerate() {
        let name = entry
            .skip(8)
            .map(|()| entry.data())
            .map_err(|err| format!("__versions: {err}"))?;
        if name.starts_with(KLP_ENABLE) && name.get(KLP_ENABLE.len()) == Some(&0) {
            let at = off + k as u64 * VERSION_SIZE;
            write_at(out, at, &u64::from(crc).to_le_bytes())
                .and_then(|()| write_at(out, at + 8, CORE_APPLY))
                .map_err(|err| format!("__versions: {err}"))?;
            found = true;
        }
    }
    if !found {
        return Err("__versions has no entry for klp_enable_patch".into());
    }
    Ok(())
}

/// `.modinfo` (at `off`, `size` bytes: checked here): `livepatch=Y` becomes
/// `hotfixjmp=Y` (same length).
fn unmark_livepatch(out: &mut [u8], off: u64, size: u64) -> Result<(), String> {
    let info = Bytes(out)
        .range(off, size)
        .map_err(|err| format!(".modinfo: {err}"))?
        .data();
    let key = b"livepatch=Y\0";
    let at = info
        .windows(key.len())
        .position(|w| w == key)
        .filter(|&p| p == 0 || info.get(p - 1) == Some(&0))
        .ok_or("no livepatch=Y in .modinfo")?;
    write_at(out, off + at as u64, b"hotfixjmp=Y\0").map_err(|err| format!(".modinfo: {err}"))
}
