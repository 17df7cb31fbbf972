//! Linking a patch object into the target's address space: lay out its
//! sections at a chosen base, resolve its symbols, apply its relocations.
//!
//! Layout of the patch mapping (page granular, W^X):
//! ```text
//! base + 0      registry header page, switch slots          r--
//! base + 4096   code (.text.*), far-call stubs, detours,    r-x
//!               .rodata*, .eh_frame
//! next page     .data*, .bss*, the local GOT,               rw-
//!               the registry record (JSON)
//! ```
//! Relocations: `64`, `PC32`, `PLT32` (through a 14-byte `jmp *0(%rip)`
//! stub when the callee is more than 2 GiB away), `PC64`, `32`, `32S`,
//! `GOTPCREL`/`GOTPCRELX`/`REX_GOTPCRELX` (a small local GOT, one slot per
//! symbol), and the main executable's TLS in the initial-exec (`GOTTPOFF`,
//! the GOT slot holds the thread-pointer offset) and local-exec (`TPOFF32`)
//! models. Other TLS models (general/local dynamic, TLS descriptors) are
//! refused with a clear error: they need the target's dynamic TLS machinery.
//!
//! Invariant: the image is computed entirely in hotfix's memory before any
//! byte is written to the target; a relocation that does not fit is an
//! error, never a truncation.

use crate::error::{Error, Result};
use goblin::elf::{Elf, reloc::*, section_header as sh, sym};
use std::collections::HashMap;
use std::path::Path;

/// The linker-defined GOT symbol: resolved to the patch's local GOT.
const GOT_SYMBOL: &str = "_GLOBAL_OFFSET_TABLE_";

/// Largest section the loader accepts (bytes).
const MAX_SECTION: u64 = 256 << 20;

pub use crate::mem::PAGE;

/// A symbol resolved in the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolved {
    /// An address.
    Addr(u64),
    /// A thread-local variable of the main executable: its offset from the
    /// thread pointer.
    Tls(i64),
}

/// The linked image, ready to be written at `base`.
#[derive(Debug, Clone)]
pub struct Image {
    /// Where it goes.
    pub base: u64,
    /// Its bytes (registry page, code, data), without the registry record.
    pub bytes: Vec<u8>,
    /// Code region (offset, length), page aligned: mapped r-x.
    pub code: (u64, u64),
    /// Data region offset (page aligned); extends to the end: mapped rw-.
    pub data_off: u64,
    /// Every defined function and object of the patch: name -> (address, size).
    pub symbols: HashMap<String, (u64, u64)>,
    /// The relocated `.eh_frame` (address, length), if the patch has one.
    pub eh_frame: Option<(u64, u64)>,
    /// Offset of the space reserved for detours (`detour_space` bytes,
    /// zero-filled, in the code region).
    pub detours_off: u64,
}

struct Placed {
    addr: u64,
    off: usize,
}

fn align(v: u64, a: u64) -> u64 {
    let a = a.max(1);
    v.div_ceil(a) * a
}

/// Links the patch `elf_bytes` (file `path`) at `base`, resolving undefined
/// symbols with `resolve` (name -> target address or TLS offset), reserving
/// `detour_space` bytes of code space for detours.
pub fn link(
    path: &Path,
    elf_bytes: &[u8],
    base: u64,
    detour_space: u64,
    resolve: &dyn Fn(&str) -> Result<Resolved>,
) -> Result<Image> {
    let perr = |reason: String| Error::Patch {
        path: path.to_path_buf(),
        reason,
    };
    let elf = Elf::parse(elf_bytes).map_err(|e| perr(format!("not an ELF object: {e}")))?;
    if elf.header.e_type != goblin::elf::header::ET_REL {
        return Err(perr("not a relocatable object (ET_REL)".into()));
    }
    let sname = |i: usize| {
        elf.section_headers
            .get(i)
            .and_then(|s| elf.shdr_strtab.get_at(s.sh_name))
            .unwrap_or("?")
            .to_string()
    };
    // Classify sections.
    let mut code = Vec::new();
    let mut rodata = Vec::new();
    let mut data = Vec::new();
    for (i, s) in elf.section_headers.iter().enumerate() {
        let flags = s.sh_flags as u32;
        if flags & sh::SHF_ALLOC == 0 {
            continue;
        }
        if !matches!(
            s.sh_type,
            sh::SHT_PROGBITS | sh::SHT_NOBITS | sh::SHT_X86_64_UNWIND
        ) {
            continue;
        }
        if flags & sh::SHF_TLS != 0 {
            return Err(Error::Unsupported {
                path: path.to_path_buf(),
                reason: format!(
                    "section {} defines thread-local data; a patch cannot add TLS variables",
                    sname(i)
                ),
            });
        }
        // Sizes and alignments come from the file: bound them before any
        // arithmetic or allocation depends on them.
        if s.sh_addralign > PAGE {
            return Err(perr(format!(
                "section {} wants alignment {} (more than a page)",
                sname(i),
                s.sh_addralign
            )));
        }
        let in_file = s
            .sh_offset
            .checked_add(s.sh_size)
            .is_some_and(|end| end <= elf_bytes.len() as u64);
        if (s.sh_type != sh::SHT_NOBITS && !in_file) || s.sh_size > MAX_SECTION {
            return Err(perr(format!(
                "section {} has size {:#x} at offset {:#x}, outside the file or too large",
                sname(i),
                s.sh_size,
                s.sh_offset
            )));
        }
        if flags & sh::SHF_EXECINSTR != 0 {
            code.push(i);
        } else if flags & sh::SHF_WRITE != 0 {
            data.push(i);
        } else {
            rodata.push(i);
        }
    }
    // Undefined symbols get a GOT slot and a far-call stub each.
    let mut undef: Vec<String> = Vec::new();
    for s in elf.syms.iter() {
        if s.st_shndx == sh::SHN_UNDEF as usize && s.st_name != 0 {
            let n = elf.strtab.get_at(s.st_name).unwrap_or("").to_string();
            if !n.is_empty() && !undef.contains(&n) {
                undef.push(n);
            }
        }
    }
    let mut resolved: HashMap<String, Resolved> = HashMap::new();
    for n in &undef {
        if n != GOT_SYMBOL {
            resolved.insert(n.clone(), resolve(n)?);
        }
    }
    // Layout.
    let mut placed: HashMap<usize, Placed> = HashMap::new();
    let mut off = PAGE;
    let mut place = |idx: usize, off: &mut u64| {
        let s = &elf.section_headers[idx];
        *off = align(*off, s.sh_addralign);
        placed.insert(
            idx,
            Placed {
                addr: base + *off,
                off: *off as usize,
            },
        );
        *off += s.sh_size;
    };
    for &i in &code {
        place(i, &mut off);
    }
    off = align(off, 16);
    let stubs_off = off;
    off += 16 * undef.len() as u64;
    off = align(off, 16);
    let detours_off = off;
    off += detour_space;
    for &i in &rodata {
        place(i, &mut off);
    }
    let code_len = align(off, PAGE) - PAGE;
    off = align(off, PAGE);
    let data_off = off;
    for &i in &data {
        place(i, &mut off);
    }
    off = align(off, 8);
    let got_off = off;
    // GOT: one slot per undefined symbol, then one per defined symbol on demand.
    let mut got: HashMap<String, u64> = HashMap::new();
    for (k, n) in undef.iter().enumerate() {
        got.insert(n.clone(), got_off + 8 * k as u64);
    }
    off += 8 * undef.len() as u64;
    // Defined symbols reached through the GOT (GOTPCREL against a local).
    let mut local_got: HashMap<usize, u64> = HashMap::new();
    for (_, rs) in &elf.shdr_relocs {
        for r in rs.iter() {
            if matches!(
                r.r_type,
                R_X86_64_GOTPCREL | R_X86_64_GOTPCRELX | R_X86_64_REX_GOTPCRELX
            ) && let Some(s) = elf.syms.get(r.r_sym)
                && s.st_shndx != sh::SHN_UNDEF as usize
                && !local_got.contains_key(&r.r_sym)
            {
                local_got.insert(r.r_sym, off);
                off += 8;
            }
        }
    }
    // `_GLOBAL_OFFSET_TABLE_` is the patch's own local GOT.
    resolved.insert(GOT_SYMBOL.to_string(), Resolved::Addr(base + got_off));
    let total = align(off, 8);
    if total > 4 * MAX_SECTION {
        return Err(perr(format!("the patch image would take {total:#x} bytes")));
    }
    let mut img = vec![0u8; total as usize];
    // Copy section contents.
    for (&i, p) in &placed {
        let s = &elf.section_headers[i];
        if s.sh_type == sh::SHT_NOBITS {
            continue;
        }
        let src = elf_bytes
            .get(s.sh_offset as usize..(s.sh_offset + s.sh_size) as usize)
            .ok_or_else(|| perr(format!("section {} lies outside the file", sname(i))))?;
        img[p.off..p.off + src.len()].copy_from_slice(src);
    }
    // Symbol values.
    let sym_addr = |idx: usize| -> Result<Resolved> {
        let s = elf.syms.get(idx).ok_or_else(|| {
            perr(format!(
                "relocation names symbol #{idx}, which does not exist"
            ))
        })?;
        let name = elf.strtab.get_at(s.st_name).unwrap_or("");
        match s.st_shndx {
            x if x == sh::SHN_UNDEF as usize => resolved
                .get(name)
                .copied()
                .ok_or_else(|| perr(format!("undefined symbol {name} was not resolved"))),
            x if x == sh::SHN_ABS as usize => Ok(Resolved::Addr(s.st_value)),
            x if x == sh::SHN_COMMON as usize => Err(perr(format!(
                "symbol {name} is a COMMON symbol; build the patch with -fno-common"
            ))),
            x => match placed.get(&x) {
                Some(p) => Ok(Resolved::Addr(p.addr + s.st_value)),
                None => Err(perr(format!(
                    "symbol {name} is in section {} which is not loaded",
                    sname(x)
                ))),
            },
        }
    };
    // GOT contents.
    for (n, slot) in &got {
        let v = match resolved.get(n) {
            Some(Resolved::Addr(a)) => *a,
            Some(Resolved::Tls(t)) => *t as u64,
            None => 0,
        };
        img[*slot as usize..*slot as usize + 8].copy_from_slice(&v.to_le_bytes());
    }
    for (&si, &slot) in &local_got {
        if let Resolved::Addr(a) = sym_addr(si)? {
            img[slot as usize..slot as usize + 8].copy_from_slice(&a.to_le_bytes());
        }
    }
    // Stubs: jmp *0(%rip); .quad target.
    let mut stub_of: HashMap<String, u64> = HashMap::new();
    for (k, n) in undef.iter().enumerate() {
        if let Some(Resolved::Addr(a)) = resolved.get(n) {
            let o = (stubs_off + 16 * k as u64) as usize;
            img[o..o + 6].copy_from_slice(&[0xff, 0x25, 0, 0, 0, 0]);
            img[o + 6..o + 14].copy_from_slice(&a.to_le_bytes());
            stub_of.insert(n.clone(), base + o as u64);
        }
    }
    // Relocations.
    for (ridx, rs) in &elf.shdr_relocs {
        let Some(rsec) = elf.section_headers.get(*ridx) else {
            continue;
        };
        let tgt = rsec.sh_info as usize;
        let Some(p) = placed.get(&tgt) else {
            continue;
        };
        let tsize = elf.section_headers[tgt].sh_size;
        for r in rs.iter() {
            let a = r.r_addend.unwrap_or(0);
            let place_addr = p.addr + r.r_offset;
            let at = p.off + r.r_offset as usize;
            let s = elf.syms.get(r.r_sym);
            let sname_ = s
                .and_then(|s| {
                    if s.st_type() == sym::STT_SECTION {
                        Some(sname(s.st_shndx))
                    } else {
                        elf.strtab.get_at(s.st_name).map(str::to_string)
                    }
                })
                .unwrap_or_default();
            let rerr = |reason: String| Error::Reloc {
                path: path.to_path_buf(),
                at: format!(
                    "{} at {}+{:#x} against {}",
                    r_to_str(r.r_type, goblin::elf::header::EM_X86_64),
                    sname(tgt),
                    r.r_offset,
                    sname_
                ),
                reason,
            };
            let width = match r.r_type {
                R_X86_64_NONE => continue,
                R_X86_64_64 | R_X86_64_PC64 | R_X86_64_GOTPC64 | R_X86_64_GOTOFF64 => 8,
                _ => 4,
            };
            if r.r_offset.checked_add(width).is_none_or(|end| end > tsize) {
                return Err(rerr("relocation lies outside its section".into()));
            }
            let is_undef = s.is_some_and(|s| s.st_shndx == sh::SHN_UNDEF as usize);
            let sv = sym_addr(r.r_sym)?;
            let addr_of = |v: Resolved| match v {
                Resolved::Addr(x) => Ok(x),
                Resolved::Tls(_) => Err(rerr(
                    "a thread-local symbol is referenced by a non-TLS relocation".into(),
                )),
            };
            let pcrel32 = |target: u64| -> Result<[u8; 4]> {
                let v = (target as i64)
                    .wrapping_add(a)
                    .wrapping_sub(place_addr as i64);
                i32::try_from(v)
                    .map(|x| x.to_le_bytes())
                    .map_err(|_| rerr(format!("target {target:#x} is more than 2 GiB away")))
            };
            let bytes: Vec<u8> = match r.r_type {
                R_X86_64_64 => (addr_of(sv)? as i64).wrapping_add(a).to_le_bytes().to_vec(),
                R_X86_64_PC64 => (addr_of(sv)? as i64)
                    .wrapping_add(a)
                    .wrapping_sub(place_addr as i64)
                    .to_le_bytes()
                    .to_vec(),
                R_X86_64_PC32 | R_X86_64_PLT32 => {
                    let t = addr_of(sv)?;
                    match pcrel32(t) {
                        Ok(b) => b.to_vec(),
                        Err(e) => {
                            // A far function: call through its stub.
                            let stub = if is_undef && r.r_type == R_X86_64_PLT32 {
                                stub_of.get(&sname_).copied()
                            } else {
                                None
                            };
                            match stub {
                                Some(st) => pcrel32(st)?.to_vec(),
                                None => return Err(e),
                            }
                        }
                    }
                }
                R_X86_64_32 => {
                    let v = (addr_of(sv)? as i64).wrapping_add(a);
                    u32::try_from(v)
                        .map_err(|_| rerr(format!("value {v:#x} does not fit 32 bits")))?
                        .to_le_bytes()
                        .to_vec()
                }
                R_X86_64_32S => {
                    let v = (addr_of(sv)? as i64).wrapping_add(a);
                    i32::try_from(v)
                        .map_err(|_| rerr(format!("value {v:#x} does not fit 32 bits signed")))?
                        .to_le_bytes()
                        .to_vec()
                }
                R_X86_64_GOTPCREL | R_X86_64_GOTPCRELX | R_X86_64_REX_GOTPCRELX => {
                    let slot = if is_undef {
                        got.get(&sname_).copied()
                    } else {
                        local_got.get(&r.r_sym).copied()
                    }
                    .ok_or_else(|| rerr("no GOT slot".into()))?;
                    pcrel32(base + slot)?.to_vec()
                }
                R_X86_64_GOTPC32 => pcrel32(base + got_off)?.to_vec(),
                R_X86_64_GOTPC64 => ((base + got_off) as i64)
                    .wrapping_add(a)
                    .wrapping_sub(place_addr as i64)
                    .to_le_bytes()
                    .to_vec(),
                R_X86_64_GOTOFF64 => (addr_of(sv)? as i64)
                    .wrapping_add(a)
                    .wrapping_sub((base + got_off) as i64)
                    .to_le_bytes()
                    .to_vec(),
                R_X86_64_GOTTPOFF => {
                    if !matches!(sv, Resolved::Tls(_)) {
                        return Err(rerr("GOTTPOFF against a non-TLS symbol".into()));
                    }
                    let slot = got
                        .get(&sname_)
                        .copied()
                        .ok_or_else(|| rerr("no GOT slot".into()))?;
                    pcrel32(base + slot)?.to_vec()
                }
                R_X86_64_TPOFF32 => match sv {
                    Resolved::Tls(t) => {
                        let v = t.wrapping_add(a);
                        i32::try_from(v)
                            .map_err(|_| rerr("TLS offset does not fit 32 bits".into()))?
                            .to_le_bytes()
                            .to_vec()
                    }
                    Resolved::Addr(_) => {
                        return Err(rerr("TPOFF32 against a non-TLS symbol".into()));
                    }
                },
                R_X86_64_TLSGD
                | R_X86_64_TLSLD
                | R_X86_64_DTPOFF32
                | R_X86_64_DTPOFF64
                | R_X86_64_GOTPC32_TLSDESC
                | R_X86_64_TLSDESC_CALL
                | R_X86_64_TLSDESC
                | R_X86_64_TPOFF64 => {
                    return Err(Error::Unsupported {
                        path: path.to_path_buf(),
                        reason: format!(
                            "relocation {} against {} in {}: only the initial-exec and local-exec TLS models of the main executable are supported; build the patch without -fPIC (or with -ftls-model=initial-exec)",
                            r_to_str(r.r_type, goblin::elf::header::EM_X86_64),
                            sname_,
                            sname(tgt)
                        ),
                    });
                }
                other => {
                    return Err(rerr(format!(
                        "relocation type {other} is not supported by the loader"
                    )));
                }
            };
            img[at..at + bytes.len()].copy_from_slice(&bytes);
        }
    }
    // Defined functions and objects.
    let mut symbols = HashMap::new();
    for s in elf.syms.iter() {
        let kind = s.st_type();
        if (kind == sym::STT_FUNC || kind == sym::STT_OBJECT)
            && let Some(p) = placed.get(&s.st_shndx)
            && let Some(n) = elf.strtab.get_at(s.st_name)
        {
            symbols.insert(n.to_string(), (p.addr + s.st_value, s.st_size));
        }
    }
    let eh_frame = elf.section_headers.iter().enumerate().find_map(|(i, s)| {
        (s.sh_type == sh::SHT_X86_64_UNWIND || sname(i) == ".eh_frame")
            .then(|| placed.get(&i).map(|p| (p.addr, s.sh_size)))
            .flatten()
    });
    Ok(Image {
        base,
        bytes: img,
        code: (PAGE, code_len),
        data_off,
        symbols,
        eh_frame,
        detours_off,
    })
}
