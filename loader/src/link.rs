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
use patchgen::bytes::{Bytes, OutOfBounds, write_at};
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
    off: u64,
}

/// `v` as 4 little-endian bytes, if it fits (as `i32` or `u32`).
fn fit32(v: i64, signed: bool) -> Option<Vec<u8>> {
    let b = if signed {
        i32::try_from(v).ok()?.to_le_bytes()
    } else {
        u32::try_from(v).ok()?.to_le_bytes()
    };
    Some(b.to_vec())
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
    let elf = Elf::parse(elf_bytes).map_err(|e| Error::Patch {
        path: path.to_path_buf(),
        reason: format!("not an ELF object: {e}"),
    })?;
    let l = Linker {
        path,
        elf: &elf,
        bytes: elf_bytes,
    };
    if elf.header.e_type != goblin::elf::header::ET_REL {
        return Err(l.perr("not a relocatable object (ET_REL)".into()));
    }
    let classes = l.classify()?;
    let undef = l.undefined();
    let mut resolved: HashMap<String, Resolved> = HashMap::new();
    for n in &undef {
        if n != GOT_SYMBOL {
            resolved.insert(n.clone(), resolve(n)?);
        }
    }
    let lay = l.layout(base, &classes, &undef, detour_space);
    // `_GLOBAL_OFFSET_TABLE_` is the patch's own local GOT.
    resolved.insert(GOT_SYMBOL.to_string(), Resolved::Addr(base + lay.got_off));
    if lay.total > 4 * MAX_SECTION {
        return Err(l.perr(format!("the patch image would take {:#x} bytes", lay.total)));
    }
    let mut img = vec![0u8; lay.total as usize];
    let syms = Symbols {
        linker: &l,
        placed: &lay.placed,
        resolved: &resolved,
    };
    l.copy_sections(&mut img, &lay.placed)?;
    let stub_of = l.fill_got_and_stubs(&mut img, &lay, &undef, &syms)?;
    for (ridx, rs) in &elf.shdr_relocs {
        l.relocate(&mut img, &lay, &syms, &stub_of, *ridx, rs)?;
    }
    Ok(Image {
        base,
        bytes: img,
        code: (PAGE, lay.code_len),
        data_off: lay.data_off,
        symbols: l.defined(&lay.placed),
        eh_frame: l.eh_frame(&lay.placed),
        detours_off: lay.detours_off,
    })
}

/// The patch object being linked.
struct Linker<'a> {
    path: &'a Path,
    elf: &'a Elf<'a>,
    bytes: &'a [u8],
}

/// Loaded sections by kind, as section indices.
struct Classes {
    code: Vec<usize>,
    rodata: Vec<usize>,
    data: Vec<usize>,
}

/// Where everything goes, as offsets from the base.
struct Layout {
    base: u64,
    placed: HashMap<usize, Placed>,
    stubs_off: u64,
    detours_off: u64,
    code_len: u64,
    data_off: u64,
    got_off: u64,
    /// GOT slot per undefined symbol name.
    got: HashMap<String, u64>,
    /// GOT slot per defined symbol reached through the GOT (symbol index).
    local_got: HashMap<usize, u64>,
    total: u64,
}

impl Layout {
    /// The address of offset `off`.
    fn addr(&self, off: u64) -> u64 {
        self.base + off
    }
}

/// Symbol values at link time.
struct Symbols<'l> {
    linker: &'l Linker<'l>,
    placed: &'l HashMap<usize, Placed>,
    resolved: &'l HashMap<String, Resolved>,
}

impl Symbols<'_> {
    /// The value of symbol `idx` of the patch.
    fn value(&self, idx: usize) -> Result<Resolved> {
        let l = self.linker;
        let s = l.elf.syms.get(idx).ok_or_else(|| {
            l.perr(format!(
                "relocation names symbol #{idx}, which does not exist"
            ))
        })?;
        let name = l.elf.strtab.get_at(s.st_name).unwrap_or("");
        match s.st_shndx {
            x if x == sh::SHN_UNDEF as usize => self
                .resolved
                .get(name)
                .copied()
                .ok_or_else(|| l.perr(format!("undefined symbol {name} was not resolved"))),
            x if x == sh::SHN_ABS as usize => Ok(Resolved::Addr(s.st_value)),
            x if x == sh::SHN_COMMON as usize => Err(l.perr(format!(
                "symbol {name} is a COMMON symbol; build the patch with -fno-common"
            ))),
            x => match self.placed.get(&x) {
                Some(p) => Ok(Resolved::Addr(p.addr.wrapping_add(s.st_value))),
                None => Err(l.perr(format!(
                    "symbol {name} is in section {} which is not loaded",
                    l.sname(x)
                ))),
            },
        }
    }
}

/// One relocation being applied, for its error messages.
struct Site<'r> {
    r: &'r goblin::elf::Reloc,
    target_section: usize,
    name: String,
    place_addr: u64,
}

impl<'a> Linker<'a> {
    fn perr(&self, reason: String) -> Error {
        Error::Patch {
            path: self.path.to_path_buf(),
            reason,
        }
    }

    fn sname(&self, i: usize) -> String {
        self.elf
            .section_headers
            .get(i)
            .and_then(|s| self.elf.shdr_strtab.get_at(s.sh_name))
            .unwrap_or("?")
            .to_string()
    }

    /// The allocated sections, by kind; sizes and alignments from the file
    /// are bounded here, before any arithmetic or allocation uses them.
    fn classify(&self) -> Result<Classes> {
        let mut c = Classes {
            code: Vec::new(),
            rodata: Vec::new(),
            data: Vec::new(),
        };
        for (i, s) in self.elf.section_headers.iter().enumerate() {
            let flags = s.sh_flags as u32;
            if flags & sh::SHF_ALLOC == 0
                || !matches!(
                    s.sh_type,
                    sh::SHT_PROGBITS | sh::SHT_NOBITS | sh::SHT_X86_64_UNWIND
                )
            {
                continue;
            }
            if flags & sh::SHF_TLS != 0 {
                return Err(Error::Unsupported {
                    path: self.path.to_path_buf(),
                    reason: format!(
                        "section {} defines thread-local data; a patch cannot add TLS variables",
                        self.sname(i)
                    ),
                });
            }
            if s.sh_addralign > PAGE {
                return Err(self.perr(format!(
                    "section {} wants alignment {} (more than a page)",
                    self.sname(i),
                    s.sh_addralign
                )));
            }
            let in_file = Bytes(self.bytes).range(s.sh_offset, s.sh_size).is_ok();
            if (s.sh_type != sh::SHT_NOBITS && !in_file) || s.sh_size > MAX_SECTION {
                return Err(self.perr(format!(
                    "section {} has size {:#x} at offset {:#x}, outside the file or too large",
                    self.sname(i),
                    s.sh_size,
                    s.sh_offset
                )));
            }
            if flags & sh::SHF_EXECINSTR != 0 {
                c.code.push(i);
            } else if flags & sh::SHF_WRITE != 0 {
                c.data.push(i);
            } else {
                c.rodata.push(i);
            }
        }
        Ok(c)
    }

    /// Undefined symbol names, each once, in symbol-table order: each gets
    /// a GOT slot and a far-call stub.
    fn undefined(&self) -> Vec<String> {
        let mut undef: Vec<String> = Vec::new();
        for s in self.elf.syms.iter() {
            if s.st_shndx == sh::SHN_UNDEF as usize && s.st_name != 0 {
                let n = self.elf.strtab.get_at(s.st_name).unwrap_or("").to_string();
                if !n.is_empty() && !undef.contains(&n) {
                    undef.push(n);
                }
            }
        }
        undef
    }

    /// Lays out code, stubs, detours, rodata (r-x), then data and the GOT
    /// (rw-) from the second page on.
    fn layout(&self, base: u64, c: &Classes, undef: &[String], detour_space: u64) -> Layout {
        let mut placed: HashMap<usize, Placed> = HashMap::new();
        let mut off = PAGE;
        let mut place = |idx: usize, off: &mut u64| {
            let (size, al) = self
                .elf
                .section_headers
                .get(idx)
                .map(|s| (s.sh_size, s.sh_addralign))
                .unwrap_or((0, 1));
            *off = align(*off, al);
            placed.insert(
                idx,
                Placed {
                    addr: base + *off,
                    off: *off,
                },
            );
            *off += size;
        };
        for &i in &c.code {
            place(i, &mut off);
        }
        off = align(off, 16);
        let stubs_off = off;
        off += 16 * undef.len() as u64;
        off = align(off, 16);
        let detours_off = off;
        off += detour_space;
        for &i in &c.rodata {
            place(i, &mut off);
        }
        let code_len = align(off, PAGE) - PAGE;
        off = align(off, PAGE);
        let data_off = off;
        for &i in &c.data {
            place(i, &mut off);
        }
        off = align(off, 8);
        let got_off = off;
        // GOT: one slot per undefined symbol, then one per defined symbol
        // reached through the GOT (GOTPCREL against a local), on demand.
        let got: HashMap<String, u64> = undef
            .iter()
            .enumerate()
            .map(|(k, n)| (n.clone(), got_off + 8 * k as u64))
            .collect();
        off += 8 * undef.len() as u64;
        let mut local_got: HashMap<usize, u64> = HashMap::new();
        for (_, rs) in &self.elf.shdr_relocs {
            for r in rs.iter() {
                if matches!(
                    r.r_type,
                    R_X86_64_GOTPCREL | R_X86_64_GOTPCRELX | R_X86_64_REX_GOTPCRELX
                ) && let Some(s) = self.elf.syms.get(r.r_sym)
                    && s.st_shndx != sh::SHN_UNDEF as usize
                    && !local_got.contains_key(&r.r_sym)
                {
                    local_got.insert(r.r_sym, off);
                    off += 8;
                }
            }
        }
        Layout {
            base,
            placed,
            stubs_off,
            detours_off,
            code_len,
            data_off,
            got_off,
            got,
            local_got,
            total: align(off, 8),
        }
    }

    /// Copies every loaded section's bytes into the image.
    fn copy_sections(&self, img: &mut [u8], placed: &HashMap<usize, Placed>) -> Result<()> {
        for (&i, p) in placed {
            let Some(s) = self.elf.section_headers.get(i) else {
                continue;
            };
            if s.sh_type == sh::SHT_NOBITS {
                continue;
            }
            let outside = |e: OutOfBounds| self.perr(format!("section {}: {e}", self.sname(i)));
            let src = Bytes(self.bytes)
                .range(s.sh_offset, s.sh_size)
                .map_err(outside)?;
            write_at(img, p.off, src.data()).map_err(outside)?;
        }
        Ok(())
    }

    /// Fills the GOT and the far-call stubs (`jmp *0(%rip); .quad target`);
    /// returns each stub's address by symbol name.
    fn fill_got_and_stubs(
        &self,
        img: &mut [u8],
        lay: &Layout,
        undef: &[String],
        syms: &Symbols<'_>,
    ) -> Result<HashMap<String, u64>> {
        let internal = |e: OutOfBounds| self.perr(format!("GOT or stub: {e}"));
        for (n, slot) in &lay.got {
            let v = match syms.resolved.get(n) {
                Some(Resolved::Addr(a)) => *a,
                Some(Resolved::Tls(t)) => *t as u64,
                None => 0,
            };
            write_at(img, *slot, &v.to_le_bytes()).map_err(internal)?;
        }
        for (&si, &slot) in &lay.local_got {
            if let Resolved::Addr(a) = syms.value(si)? {
                write_at(img, slot, &a.to_le_bytes()).map_err(internal)?;
            }
        }
        let mut stub_of: HashMap<String, u64> = HashMap::new();
        for (k, n) in undef.iter().enumerate() {
            if let Some(Resolved::Addr(a)) = syms.resolved.get(n) {
                let o = lay.stubs_off + 16 * k as u64;
                write_at(img, o, &[0xff, 0x25, 0, 0, 0, 0]).map_err(internal)?;
                write_at(img, o + 6, &a.to_le_bytes()).map_err(internal)?;
                stub_of.insert(n.clone(), lay.addr(o));
            }
        }
        Ok(stub_of)
    }

    /// Applies the relocations of section `ridx` (`rs`) to the image.
    fn relocate(
        &self,
        img: &mut [u8],
        lay: &Layout,
        syms: &Symbols<'_>,
        stub_of: &HashMap<String, u64>,
        ridx: usize,
        rs: &goblin::elf::RelocSection<'_>,
    ) -> Result<()> {
        let Some(rsec) = self.elf.section_headers.get(ridx) else {
            return Ok(());
        };
        let tgt = rsec.sh_info as usize;
        let (Some(p), Some(t)) = (lay.placed.get(&tgt), self.elf.section_headers.get(tgt)) else {
            return Ok(());
        };
        for r in rs.iter() {
            let name = self
                .elf
                .syms
                .get(r.r_sym)
                .and_then(|s| {
                    if s.st_type() == sym::STT_SECTION {
                        Some(self.sname(s.st_shndx))
                    } else {
                        self.elf.strtab.get_at(s.st_name).map(str::to_string)
                    }
                })
                .unwrap_or_default();
            let mut site = Site {
                r: &r,
                target_section: tgt,
                name,
                place_addr: 0,
            };
            let width = match r.r_type {
                R_X86_64_NONE => continue,
                R_X86_64_64 | R_X86_64_PC64 | R_X86_64_GOTPC64 | R_X86_64_GOTOFF64 => 8,
                _ => 4,
            };
            // r_offset comes from the file: bound it by the section before
            // any address or offset is computed from it.
            if r.r_offset
                .checked_add(width)
                .is_none_or(|end| end > t.sh_size)
            {
                return Err(self.rerr(&site, "relocation lies outside its section".into()));
            }
            site.place_addr = p.addr + r.r_offset;
            let bytes = self.reloc_value(&site, lay, syms, stub_of)?;
            write_at(img, p.off + r.r_offset, &bytes)
                .map_err(|e| self.rerr(&site, e.to_string()))?;
        }
        Ok(())
    }

    fn rerr(&self, site: &Site<'_>, reason: String) -> Error {
        Error::Reloc {
            path: self.path.to_path_buf(),
            at: format!(
                "{} at {}+{:#x} against {}",
                r_to_str(site.r.r_type, goblin::elf::header::EM_X86_64),
                self.sname(site.target_section),
                site.r.r_offset,
                site.name
            ),
            reason,
        }
    }

    /// The bytes relocation `site` puts at its place.
    fn reloc_value(
        &self,
        site: &Site<'_>,
        lay: &Layout,
        syms: &Symbols<'_>,
        stub_of: &HashMap<String, u64>,
    ) -> Result<Vec<u8>> {
        let r = site.r;
        let a = r.r_addend.unwrap_or(0);
        let place = site.place_addr as i64;
        let rerr = |reason: String| self.rerr(site, reason);
        let is_undef = self
            .elf
            .syms
            .get(r.r_sym)
            .is_some_and(|s| s.st_shndx == sh::SHN_UNDEF as usize);
        let sv = syms.value(r.r_sym)?;
        let addr_of = |v: Resolved| match v {
            Resolved::Addr(x) => Ok(x as i64),
            Resolved::Tls(_) => Err(rerr(
                "a thread-local symbol is referenced by a non-TLS relocation".into(),
            )),
        };
        let pcrel32 = |target: u64| -> Result<Vec<u8>> {
            let v = (target as i64).wrapping_add(a).wrapping_sub(place);
            i32::try_from(v)
                .map(|x| x.to_le_bytes().to_vec())
                .map_err(|_| rerr(format!("target {target:#x} is more than 2 GiB away")))
        };
        let fits = |v: i64, signed: bool| {
            fit32(v, signed).ok_or_else(|| {
                rerr(format!(
                    "value {v:#x} does not fit 32 bits{}",
                    if signed { " signed" } else { "" }
                ))
            })
        };
        let got_slot = |slot: Option<u64>| -> Result<Vec<u8>> {
            pcrel32(lay.addr(slot.ok_or_else(|| rerr("no GOT slot".into()))?))
        };
        let got_addr = lay.addr(lay.got_off) as i64;
        Ok(match r.r_type {
            R_X86_64_64 => addr_of(sv)?.wrapping_add(a).to_le_bytes().to_vec(),
            R_X86_64_PC64 => addr_of(sv)?
                .wrapping_add(a)
                .wrapping_sub(place)
                .to_le_bytes()
                .to_vec(),
            R_X86_64_PC32 | R_X86_64_PLT32 => {
                let t = addr_of(sv)? as u64;
                match pcrel32(t) {
                    Ok(b) => b,
                    // A far function: call through its stub.
                    Err(e) => match stub_of.get(&site.name) {
                        Some(&st) if is_undef && r.r_type == R_X86_64_PLT32 => pcrel32(st)?,
                        _ => return Err(e),
                    },
                }
            }
            R_X86_64_32 => fits(addr_of(sv)?.wrapping_add(a), false)?,
            R_X86_64_32S => fits(addr_of(sv)?.wrapping_add(a), true)?,
            R_X86_64_GOTPCREL | R_X86_64_GOTPCRELX | R_X86_64_REX_GOTPCRELX => {
                if is_undef {
                    got_slot(lay.got.get(&site.name).copied())?
                } else {
                    got_slot(lay.local_got.get(&r.r_sym).copied())?
                }
            }
            R_X86_64_GOTPC32 => pcrel32(got_addr as u64)?,
            R_X86_64_GOTPC64 => got_addr
                .wrapping_add(a)
                .wrapping_sub(place)
                .to_le_bytes()
                .to_vec(),
            R_X86_64_GOTOFF64 => addr_of(sv)?
                .wrapping_add(a)
                .wrapping_sub(got_addr)
                .to_le_bytes()
                .to_vec(),
            R_X86_64_GOTTPOFF => {
                if !matches!(sv, Resolved::Tls(_)) {
                    return Err(rerr("GOTTPOFF against a non-TLS symbol".into()));
                }
                got_slot(lay.got.get(&site.name).copied())?
            }
            R_X86_64_TPOFF32 => match sv {
                Resolved::Tls(t) => i32::try_from(t.wrapping_add(a))
                    .map_err(|_| rerr("TLS offset does not fit 32 bits".into()))?
                    .to_le_bytes()
                    .to_vec(),
                Resolved::Addr(_) => return Err(rerr("TPOFF32 against a non-TLS symbol".into())),
            },
            R_X86_64_TLSGD
            | R_X86_64_TLSLD
            | R_X86_64_DTPOFF32
            | R_X86_64_DTPOFF64
            | R_X86_64_GOTPC32_TLSDESC
            | R_X86_64_TLSDESC_CALL
            | R_X86_64_TLSDESC
            | R_X86_64_TPOFF64 => return Err(self.dynamic_tls(site)),
            other => {
                return Err(rerr(format!(
                    "relocation type {other} is not supported by the loader"
                )));
            }
        })
    }

    fn dynamic_tls(&self, site: &Site<'_>) -> Error {
        Error::Unsupported {
            path: self.path.to_path_buf(),
            reason: format!(
                "relocation {} against {} in {}: only the initial-exec and local-exec TLS models of the main executable are supported; build the patch without -fPIC (or with -ftls-model=initial-exec)",
                r_to_str(site.r.r_type, goblin::elf::header::EM_X86_64),
                site.name,
                self.sname(site.target_section)
            ),
        }
    }

    /// Every defined function and object of the patch: name -> (address, size).
    fn defined(&self, placed: &HashMap<usize, Placed>) -> HashMap<String, (u64, u64)> {
        let mut symbols = HashMap::new();
        for s in self.elf.syms.iter() {
            let kind = s.st_type();
            if (kind == sym::STT_FUNC || kind == sym::STT_OBJECT)
                && let Some(p) = placed.get(&s.st_shndx)
                && let Some(n) = self.elf.strtab.get_at(s.st_name)
            {
                symbols.insert(n.to_string(), (p.addr.wrapping_add(s.st_value), s.st_size));
            }
        }
        symbols
    }

    /// The relocated `.eh_frame` (address, length), if the patch has one.
    fn eh_frame(&self, placed: &HashMap<usize, Placed>) -> Option<(u64, u64)> {
        self.elf
            .section_headers
            .iter()
            .enumerate()
            .find_map(|(i, s)| {
                (s.sh_type == sh::SHT_X86_64_UNWIND || self.sname(i) == ".eh_frame")
                    .then(|| placed.get(&i).map(|p| (p.addr, s.sh_size)))
                    .flatten()
            })
    }
}
