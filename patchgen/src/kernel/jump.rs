//! Build-time expected bytes for the kernel `jump` method.
//!
//! Model: the jump core (`testkernels/kmod/core/hotfix_core.c`) writes its
//! 5-byte jump right after a function's `__fentry__` call (or at the entry,
//! after `endbr64`, when the function has none). The build knows the
//! original object, so it records the 5 bytes the original function has
//! there, with every byte a relocation fills in at load time masked. The
//! record is one line per replaced function, `OBJECT FUNCTION SYMPOS HEX`
//! (`HEX`: 10 characters, `..` for a masked byte), in a non-allocated
//! section `.hotfix.expect` appended to the module (the kernel's module
//! loader ignores it; `klp` ignores it). The jump driver passes the lines to
//! the core, which refuses (exit 4) when the running bytes differ.
//!
//! Invariants: [`expected_site`] only reads; [`add_section`] appends (the
//! data, a new section-name table and a new section-header table) and
//! rewrites only `e_shoff`, `e_shnum` and the name table's header, so every
//! existing section keeps its bytes and offset.

use crate::Error;
use crate::bytes::Bytes;
use object::{Object, ObjectSection, ObjectSymbol, RelocationFlags};

/// Name of the section holding the expectations.
pub const SECTION: &str = ".hotfix.expect";

const ENDBR64: [u8; 4] = [0xf3, 0x0f, 0x1e, 0xfa];
const SITE_LEN: u64 = 5;

/// The 5 bytes at the jump site of `func` in the original object, as hex
/// with `..` for bytes a relocation fills in; `None` when the function is
/// not found or too small.
pub fn expected_site(orig: &[u8], func: &str) -> Option<String> {
    let file = object::File::parse(orig).ok()?;
    let sym = file.symbols().find(|s| {
        s.name() == Ok(func) && s.kind() == object::SymbolKind::Text && !s.is_undefined()
    })?;
    let sec = file.section_by_index(sym.section_index()?).ok()?;
    let data = sec.data().ok()?;
    let start = sym.address().checked_sub(sec.address())?;
    let relocs: Vec<(u64, u64, String)> = sec
        .relocations()
        .map(|(off, r)| {
            let width = match r.flags() {
                RelocationFlags::Elf { r_type } if r_type == object::elf::R_X86_64_64 => 8,
                _ => 4,
            };
            let target = match r.target() {
                object::RelocationTarget::Symbol(i) => file
                    .symbol_by_index(i)
                    .ok()
                    .and_then(|s| s.name().ok().map(String::from))
                    .unwrap_or_default(),
                _ => String::new(),
            };
            (off, width, target)
        })
        .collect();
    let byte = |at: u64| data.get(usize::try_from(at).ok()?).copied();
    let mut site = start;
    if (0..4).all(|i| byte(start + i) == Some(ENDBR64[i as usize])) {
        site += 4;
    }
    // `call __fentry__`: e8 with a relocation at +1 against __fentry__.
    if byte(site) == Some(0xe8)
        && relocs
            .iter()
            .any(|(off, _, t)| *off == site + 1 && t == "__fentry__")
    {
        site += 5;
    }
    if site + SITE_LEN > start + sym.size() {
        return None;
    }
    let mut out = String::new();
    for at in site..site + SITE_LEN {
        let relocated = relocs.iter().any(|(off, w, _)| *off <= at && at < off + w);
        match (relocated, byte(at)) {
            (false, Some(b)) => out.push_str(&format!("{b:02x}")),
            _ => out.push_str(".."),
        }
    }
    Some(out)
}

/// Appends a non-allocated `SHT_PROGBITS` section `name` holding `data` to
/// an ELF64 little-endian relocatable image.
pub fn add_section(image: &[u8], name: &str, data: &[u8], file: &str) -> Result<Vec<u8>, Error> {
    let bad = |reason: &str| Error::Parse {
        file: file.to_string(),
        reason: format!("appending {name}: {reason}"),
    };
    let file_bytes = Bytes(image);
    let field = |at: u64, len: u64| -> Result<u64, Error> {
        let mut b = file_bytes
            .at(at)
            .map_err(|e| bad(&format!("ELF header: {e}")))?;
        let v = match len {
            2 => b.read_u16().map(u64::from),
            _ => b.read_u64(),
        };
        v.map_err(|e| bad(&format!("ELF header: {e}")))
    };
    let shoff = field(0x28, 8)?;
    let shentsize = field(0x3a, 2)?;
    let shnum = field(0x3c, 2)?;
    let shstrndx = field(0x3e, 2)?;
    if shentsize != 64 || shnum == 0 || shstrndx >= shnum || shnum >= 0xff00 {
        return Err(bad("unexpected section header table"));
    }
    let headers = file_bytes
        .range(shoff, shnum * 64)
        .map_err(|e| bad(&format!("section headers: {e}")))?
        .data();
    let mut str_hdr = Bytes(headers)
        .range(shstrndx * 64, 64)
        .and_then(|h| h.at(0x18))
        .map_err(|e| bad(&format!("name table header: {e}")))?;
    let (str_off, str_size) = (
        str_hdr.read_u64().map_err(|e| bad(&e.to_string()))?,
        str_hdr.read_u64().map_err(|e| bad(&e.to_string()))?,
    );
    let names = file_bytes
        .range(str_off, str_size)
        .map_err(|e| bad(&format!("section names: {e}")))?
        .data();
    // Both below 0xff00: the casts cannot truncate.
    let (shnum, shstrndx) = (shnum as usize, shstrndx as usize);
    let mut out = image.to_vec();
    let align = |v: &mut Vec<u8>, a: usize| v.resize(v.len().div_ceil(a) * a, 0);
    // The data.
    let data_off = out.len();
    out.extend_from_slice(data);
    // A new name table: the old one plus the new name.
    let new_str_off = out.len();
    out.extend_from_slice(names);
    let name_off = names.len();
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    let new_str_size = out.len() - new_str_off;
    // The headers: the old ones (name table moved), plus the new section.
    align(&mut out, 8);
    let new_shoff = out.len();
    out.extend_from_slice(headers);
    let h = new_shoff + shstrndx * 64;
    out[h + 0x18..h + 0x20].copy_from_slice(&(new_str_off as u64).to_le_bytes());
    out[h + 0x20..h + 0x28].copy_from_slice(&(new_str_size as u64).to_le_bytes());
    let mut sh = [0u8; 64];
    sh[0..4].copy_from_slice(&(name_off as u32).to_le_bytes());
    sh[4..8].copy_from_slice(&1u32.to_le_bytes()); // SHT_PROGBITS
    // sh_flags 0 (not allocated), sh_addr 0.
    sh[0x18..0x20].copy_from_slice(&(data_off as u64).to_le_bytes());
    sh[0x20..0x28].copy_from_slice(&(data.len() as u64).to_le_bytes());
    sh[0x30..0x38].copy_from_slice(&1u64.to_le_bytes()); // sh_addralign
    out.extend_from_slice(&sh);
    out[0x28..0x30].copy_from_slice(&(new_shoff as u64).to_le_bytes());
    out[0x3c..0x3e].copy_from_slice(&((shnum + 1) as u16).to_le_bytes());
    Ok(out)
}

/// The `.hotfix.expect` text of `(object, function, sympos, hex)` entries;
/// functions without an expectation are left out.
pub fn expect_text(entries: &[(String, String, u32, Option<String>)]) -> String {
    entries
        .iter()
        .filter_map(|(o, f, p, h)| Some(format!("{o} {f} {p} {}\n", h.as_ref()?)))
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic, reason = "tests")]
    use super::*;
    use object::write::{Object as WObject, Relocation, StandardSection, Symbol, SymbolSection};
    use object::{Architecture, BinaryFormat, Endianness, SymbolFlags, SymbolKind, SymbolScope};

    /// f: call __fentry__; mov 0x0(%rip),%rax (relocated); sub $0x800,%esi; ret
    fn object_with_fentry() -> Vec<u8> {
        let mut o = WObject::new(BinaryFormat::Elf, Architecture::X86_64, Endianness::Little);
        let text = o.section_id(StandardSection::Text);
        let code = [
            0xe8, 0, 0, 0, 0, 0x48, 0x8b, 0x05, 0, 0, 0, 0, 0x81, 0xee, 0, 8, 0, 0, 0xc3,
        ];
        let off = o.append_section_data(text, &code, 16);
        o.add_symbol(Symbol {
            name: b"f".to_vec(),
            value: off,
            size: code.len() as u64,
            kind: SymbolKind::Text,
            scope: SymbolScope::Compilation,
            weak: false,
            section: SymbolSection::Section(text),
            flags: SymbolFlags::None,
        });
        for (at, name) in [(1u64, "__fentry__"), (8, "data")] {
            let s = o.add_symbol(Symbol {
                name: name.as_bytes().to_vec(),
                value: 0,
                size: 0,
                kind: SymbolKind::Unknown,
                scope: SymbolScope::Unknown,
                weak: false,
                section: SymbolSection::Undefined,
                flags: SymbolFlags::None,
            });
            o.add_relocation(
                text,
                Relocation {
                    offset: off + at,
                    symbol: s,
                    addend: -4,
                    flags: RelocationFlags::Elf {
                        r_type: object::elf::R_X86_64_PC32,
                    },
                },
            )
            .unwrap();
        }
        o.write().unwrap()
    }

    #[test]
    fn site_after_fentry_with_relocated_bytes_masked() {
        let obj = object_with_fentry();
        assert_eq!(expected_site(&obj, "f").as_deref(), Some("488b05...."));
        assert_eq!(expected_site(&obj, "missing"), None);
    }

    /// Hostile section-header fields (offsets near `u64::MAX`, counts that
    /// overflow a multiplication, a name table past the end) are errors
    /// naming the file, never a wrapped offset or a panic.
    #[test]
    fn hostile_headers_are_errors() {
        let obj = object_with_fentry();
        let with = |at: usize, bytes: &[u8]| {
            let mut o = obj.clone();
            o[at..at + bytes.len()].copy_from_slice(bytes);
            o
        };
        let cases = [
            with(0x28, &u64::MAX.to_le_bytes()),
            with(0x28, &(u64::MAX - 63).to_le_bytes()),
            with(0x3c, &0xfeffu16.to_le_bytes()),
            with(0x3e, &0xfefeu16.to_le_bytes()),
            obj[..0x30].to_vec(),
            Vec::new(),
        ];
        for (i, bad) in cases.iter().enumerate() {
            let e = add_section(bad, SECTION, b"x", "hostile.ko").unwrap_err();
            assert!(e.to_string().contains("hostile.ko"), "case {i}: {e}");
        }
        // A name table whose offset points past the file.
        let field = |at: usize, n: usize| {
            let mut v = [0u8; 8];
            v[..n].copy_from_slice(&obj[at..at + n]);
            usize::try_from(u64::from_le_bytes(v)).unwrap()
        };
        let names_hdr = field(0x28, 8) + field(0x3e, 2) * 64;
        let bad = with(names_hdr + 0x18, &(u64::MAX - 2).to_le_bytes());
        let e = add_section(&bad, SECTION, b"x", "hostile.ko").unwrap_err();
        assert!(e.to_string().contains("section names"), "{e}");
    }

    #[test]
    fn appended_section_reads_back_and_keeps_the_rest() {
        let obj = object_with_fentry();
        let text = "vmlinux f 0 488b05....\n";
        let out = add_section(&obj, SECTION, text.as_bytes(), "t.o").unwrap();
        let file = object::File::parse(&*out).unwrap();
        let sec = file.section_by_name(SECTION).unwrap();
        assert_eq!(sec.data().unwrap(), text.as_bytes());
        // The original sections and symbols are still there, unchanged.
        let before = object::File::parse(&*obj).unwrap();
        let t0 = before.section_by_name(".text").unwrap();
        let t1 = file.section_by_name(".text").unwrap();
        assert_eq!(t0.data().unwrap(), t1.data().unwrap());
        assert_eq!(file.symbols().count(), before.symbols().count());
        assert_eq!(expected_site(&out, "f").as_deref(), Some("488b05...."));
    }
}
