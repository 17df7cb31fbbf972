//! The running target as the loader sees it: the mappings of
//! `/proc/PID/maps`, the ELF objects behind them (read through
//! `/proc/PID/map_files`, so deleted or replaced files and other mount
//! namespaces still give the bytes actually mapped), their GNU build-ids,
//! load biases and symbol tables (`.symtab`, else separate debuginfo found by
//! build-id under a debug root, plus `.dynsym`).
//!
//! Invariants: an [`Object`]'s `bias` is the difference between run-time
//! addresses (AVMA) and the object's virtual addresses (SVMA); symbol values
//! are SVMAs. The maps are read once per [`Process::open`].

use crate::error::{Error, Result};
use crate::sys::FileMap;
use goblin::elf::{Elf, program_header as ph, sym};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One line of `/proc/PID/maps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// Permissions, e.g. `r-xp`.
    pub perms: String,
    /// File offset.
    pub offset: u64,
    /// Inode (0 for anonymous mappings).
    pub inode: u64,
    /// Path or pseudo-name (`[vdso]`, `[stack]`), empty for anonymous.
    pub path: String,
}

impl Mapping {
    /// Whether the mapping is executable.
    pub fn exec(&self) -> bool {
        self.perms.as_bytes().get(2) == Some(&b'x')
    }
}

/// Reads and parses `/proc/PID/maps`.
pub fn read_maps(pid: i32) -> Result<Vec<Mapping>> {
    let path = format!("/proc/{pid}/maps");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::Process {
        pid,
        reason: format!("cannot read {path}: {e}"),
    })?;
    let mut out = Vec::new();
    for line in text.lines() {
        let mut it = line.splitn(6, ' ');
        let (Some(range), Some(perms), Some(off), Some(_dev), Some(inode)) =
            (it.next(), it.next(), it.next(), it.next(), it.next())
        else {
            continue;
        };
        let path = it.next().unwrap_or("").trim_start().to_string();
        let Some((s, e)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end), Ok(offset), Ok(inode)) = (
            u64::from_str_radix(s, 16),
            u64::from_str_radix(e, 16),
            u64::from_str_radix(off, 16),
            inode.parse::<u64>(),
        ) else {
            continue;
        };
        out.push(Mapping {
            start,
            end,
            perms: perms.to_string(),
            offset,
            inode,
            path,
        });
    }
    Ok(out)
}

/// Bytes of an object: a file mapping or a copy (the vDSO).
pub enum Bytes {
    /// A read-only file mapping.
    Map(FileMap),
    /// Bytes read from the target.
    Owned(Vec<u8>),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Map(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

/// A symbol of a target object (values are SVMAs).
#[derive(Debug, Clone)]
pub struct Sym {
    /// Name.
    pub name: String,
    /// `st_value`.
    pub value: u64,
    /// `st_size`.
    pub size: u64,
    /// `STT_*`.
    pub kind: u8,
    /// `STB_*`.
    pub bind: u8,
    /// The `STT_FILE` symbol preceding a local symbol.
    pub file: Option<String>,
}

/// An ELF object mapped by the target.
pub struct Object {
    /// Path as in the maps (or `[vdso]`).
    pub path: String,
    /// The bytes of the object.
    pub data: Arc<Bytes>,
    /// Hex GNU build-id, empty if none.
    pub build_id: String,
    /// AVMA - SVMA.
    pub bias: u64,
    /// `ET_EXEC` (not position-independent).
    pub is_exec: bool,
    /// Whether this is the main executable of the process.
    pub is_main: bool,
    /// Executable mapped ranges (AVMA).
    pub text: Vec<(u64, u64)>,
    /// Lowest and highest mapped addresses (AVMA).
    pub span: (u64, u64),
    /// `.eh_frame_hdr` (SVMA, file offset, size) when present.
    pub eh_frame_hdr: Option<(u64, usize, usize)>,
    /// `.eh_frame` (SVMA, file offset, size) when present.
    pub eh_frame: Option<(u64, usize, usize)>,
    /// `PT_TLS` (vaddr, memsz, align) when present.
    pub tls: Option<(u64, u64, u64)>,
    loads: Vec<(u64, u64, u64)>,
    /// `PT_LOAD` (vaddr, memsz).
    load_mem: Vec<(u64, u64)>,
}

impl Object {
    /// Parses `data`, mapped at `maps` (the mappings of this object).
    pub fn new(path: &str, data: Bytes, maps: &[&Mapping], is_main: bool) -> Result<Self> {
        let bad = |reason: String| Error::Object {
            path: path.to_string(),
            reason,
        };
        let elf = Elf::parse(&data).map_err(|e| bad(e.to_string()))?;
        if elf.header.e_machine != goblin::elf::header::EM_X86_64 {
            return Err(bad(format!(
                "e_machine {} is not x86-64",
                elf.header.e_machine
            )));
        }
        let mut build_id = String::new();
        if let Some(notes) = elf.iter_note_headers(&data) {
            for n in notes.flatten() {
                if n.n_type == goblin::elf::note::NT_GNU_BUILD_ID && n.name.starts_with("GNU") {
                    build_id = hex::encode(n.desc);
                }
            }
        }
        let loads: Vec<(u64, u64, u64)> = elf
            .program_headers
            .iter()
            .filter(|p| p.p_type == ph::PT_LOAD)
            .map(|p| (p.p_vaddr, p.p_offset, p.p_filesz))
            .collect();
        let load_mem: Vec<(u64, u64)> = elf
            .program_headers
            .iter()
            .filter(|p| p.p_type == ph::PT_LOAD)
            .map(|p| (p.p_vaddr, p.p_memsz))
            .collect();
        let tls = elf
            .program_headers
            .iter()
            .find(|p| p.p_type == ph::PT_TLS)
            .map(|p| (p.p_vaddr, p.p_memsz, p.p_align.max(1)));
        // Bias: the lowest mapping corresponds to the PT_LOAD whose page-aligned
        // file offset equals the mapping's offset.
        let first = maps.iter().min_by_key(|m| m.start);
        let bias = match first {
            Some(m) => {
                let seg = loads
                    .iter()
                    .find(|(_, off, _)| off & !0xfff == m.offset)
                    .or(loads.first());
                match seg {
                    Some((vaddr, _, _)) => m.start.wrapping_sub(vaddr & !0xfff),
                    None => m.start,
                }
            }
            None => 0,
        };
        let sect = |name: &str| {
            elf.section_headers.iter().find_map(|s| {
                (elf.shdr_strtab.get_at(s.sh_name) == Some(name)).then_some((
                    s.sh_addr,
                    s.sh_offset as usize,
                    s.sh_size as usize,
                ))
            })
        };
        let eh_frame_hdr = sect(".eh_frame_hdr");
        let eh_frame = sect(".eh_frame");
        let text = maps
            .iter()
            .filter(|m| m.exec())
            .map(|m| (m.start, m.end))
            .collect();
        let span = (
            maps.iter().map(|m| m.start).min().unwrap_or(0),
            maps.iter().map(|m| m.end).max().unwrap_or(0),
        );
        let is_exec = elf.header.e_type == goblin::elf::header::ET_EXEC;
        drop(elf);
        Ok(Self {
            path: path.to_string(),
            data: Arc::new(data),
            build_id,
            bias,
            is_exec,
            is_main,
            text,
            span,
            eh_frame_hdr,
            eh_frame,
            tls,
            loads,
            load_mem,
        })
    }

    /// File bytes at SVMA `addr` (`len` bytes), if inside a `PT_LOAD`'s file part.
    pub fn file_bytes(&self, addr: u64, len: usize) -> Option<&[u8]> {
        let (vaddr, off, filesz) = self
            .loads
            .iter()
            .find(|(v, _, sz)| addr >= *v && addr + len as u64 <= v + sz)?;
        let _ = filesz;
        let start = (off + (addr - vaddr)) as usize;
        self.data.get(start..start + len)
    }

    /// The AVMA of a `syscall` instruction (`0f 05`) in this object's text.
    pub fn syscall_gadget(&self) -> Option<u64> {
        for &(s, e) in &self.text {
            let svma = s.wrapping_sub(self.bias);
            for &(vaddr, off, filesz) in &self.loads {
                let lo = svma.max(vaddr);
                let hi = (svma + (e - s)).min(vaddr + filesz);
                if lo >= hi {
                    continue;
                }
                let start = (off + (lo - vaddr)) as usize;
                let Some(bytes) = self.data.get(start..start + (hi - lo) as usize) else {
                    continue;
                };
                if let Some(i) = bytes.windows(2).position(|w| w == [0x0f, 0x05]) {
                    return Some(lo + i as u64 + self.bias);
                }
            }
        }
        None
    }

    /// A *cave*: the AVMA of `len` bytes (16-aligned) of an executable
    /// mapping of this object that no `PT_LOAD` covers — the padding after
    /// the end of the executable segment up to the end of its last page.
    /// The program never executes or reads these bytes.
    pub fn cave(&self, len: u64) -> Option<u64> {
        if self.path.starts_with('[') {
            return None;
        }
        for &(s, e) in &self.text {
            let (lo, hi) = (s.wrapping_sub(self.bias), e.wrapping_sub(self.bias));
            let mut start = lo;
            for &(v, m) in &self.load_mem {
                if v < hi && v + m > start {
                    start = start.max(v + m);
                }
            }
            let start = start.div_ceil(16) * 16;
            let end = self
                .load_mem
                .iter()
                .map(|&(v, _)| v)
                .filter(|&v| v >= start && v < hi)
                .min()
                .unwrap_or(hi);
            if start < end && end - start >= len {
                return Some(start.wrapping_add(self.bias));
            }
        }
        None
    }

    /// Whether AVMA `addr` is in an executable mapping of this object.
    pub fn contains_text(&self, addr: u64) -> bool {
        self.text.iter().any(|(s, e)| addr >= *s && addr < *e)
    }

    /// The symbols of this object: `.symtab` (or that of the separate
    /// debuginfo found by build-id under `debug_dir`) and `.dynsym`.
    pub fn symbols(&self, debug_dir: &Path) -> Result<Symbols> {
        let elf = Elf::parse(&self.data).map_err(|e| Error::Object {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        let mut out = Symbols::default();
        if elf.syms.is_empty() && !self.build_id.is_empty() && self.build_id.len() > 2 {
            let dbg = debug_dir
                .join(".build-id")
                .join(&self.build_id[..2])
                .join(format!("{}.debug", &self.build_id[2..]));
            out.missing = Some(format!(
                "the object has no .symtab and no debuginfo {}",
                dbg.display()
            ));
            if let Ok(f) = std::fs::File::open(&dbg) {
                let map = FileMap::new(&f).map_err(|e| Error::Io {
                    path: dbg.clone(),
                    source: e,
                })?;
                let delf = Elf::parse(&map).map_err(|e| Error::Object {
                    path: dbg.display().to_string(),
                    reason: e.to_string(),
                })?;
                out.symtab = collect(&delf.syms, &delf.strtab);
                out.debug_file = Some(dbg);
                out.missing = None;
            }
        } else {
            out.symtab = collect(&elf.syms, &elf.strtab);
        }
        out.dynsym = collect(&elf.dynsyms, &elf.dynstrtab);
        Ok(out)
    }
}

fn collect(tab: &goblin::elf::Symtab<'_>, strtab: &goblin::strtab::Strtab<'_>) -> Vec<Sym> {
    let mut file: Option<String> = None;
    let mut out = Vec::with_capacity(tab.len());
    for s in tab.iter() {
        let name = strtab.get_at(s.st_name).unwrap_or("").to_string();
        let kind = s.st_type();
        if kind == sym::STT_FILE {
            file = Some(name);
            continue;
        }
        if s.st_shndx == 0 || kind == sym::STT_SECTION || name.is_empty() {
            continue;
        }
        let bind = s.st_bind();
        out.push(Sym {
            file: (bind == sym::STB_LOCAL).then(|| file.clone()).flatten(),
            name,
            value: s.st_value,
            size: s.st_size,
            kind,
            bind,
        });
    }
    out
}

/// Symbol tables of one object.
#[derive(Debug, Default)]
pub struct Symbols {
    /// `.symtab` (possibly from separate debuginfo), defined symbols only.
    pub symtab: Vec<Sym>,
    /// `.dynsym`, defined symbols only.
    pub dynsym: Vec<Sym>,
    /// The debuginfo file used, if any.
    pub debug_file: Option<PathBuf>,
    /// Why there is no `.symtab`, if there is none.
    pub missing: Option<String>,
}

/// What to look up.
#[derive(Debug, Clone, Copy)]
pub struct Query<'a> {
    /// Name.
    pub name: &'a str,
    /// Local (static) symbol.
    pub local: bool,
    /// Source file of a local symbol.
    pub file: Option<&'a str>,
    /// Position among same-named locals (1-based; 0: unique).
    pub sympos: u32,
}

impl Symbols {
    /// Finds a symbol; `Err` carries the reason it is not found or ambiguous.
    pub fn lookup(&self, q: Query<'_>) -> std::result::Result<&Sym, String> {
        self.lookup_inner(q).map_err(|e| match &self.missing {
            Some(m) => format!("{e} ({m})"),
            None => e,
        })
    }

    fn lookup_inner(&self, q: Query<'_>) -> std::result::Result<&Sym, String> {
        if q.local {
            let same: Vec<&Sym> = self
                .symtab
                .iter()
                .filter(|s| s.bind == sym::STB_LOCAL && s.name == q.name)
                .collect();
            if q.sympos > 0 {
                let s = same.get(q.sympos as usize - 1).ok_or_else(|| {
                    format!(
                        "local symbol position {} requested, {} same-named locals exist",
                        q.sympos,
                        same.len()
                    )
                })?;
                if let (Some(want), Some(have)) = (q.file, s.file.as_deref())
                    && !file_matches(want, have)
                {
                    return Err(format!(
                        "local symbol #{} is in {have}, not {want}",
                        q.sympos
                    ));
                }
                return Ok(s);
            }
            let cands: Vec<&Sym> = same
                .iter()
                .copied()
                .filter(|s| match (q.file, s.file.as_deref()) {
                    (Some(w), Some(h)) => file_matches(w, h),
                    _ => true,
                })
                .collect();
            return match cands.as_slice() {
                [one] => Ok(one),
                [] if self.symtab.is_empty() => {
                    Err("no .symtab and no debuginfo found by build-id".into())
                }
                [] => Err("no such local symbol".into()),
                many => Err(format!(
                    "{} local symbols match; the patch needs a sympos",
                    many.len()
                )),
            };
        }
        self.symtab
            .iter()
            .chain(self.dynsym.iter())
            .find(|s| s.bind != sym::STB_LOCAL && s.name == q.name)
            .ok_or_else(|| {
                if self.symtab.is_empty() && self.dynsym.is_empty() {
                    "no .symtab, no .dynsym and no debuginfo found by build-id".into()
                } else {
                    "no such global symbol".into()
                }
            })
    }

    /// The function containing SVMA `addr`, for symbolizing stacks.
    pub fn containing(&self, addr: u64) -> Option<&Sym> {
        self.symtab
            .iter()
            .chain(self.dynsym.iter())
            .filter(|s| s.kind == sym::STT_FUNC)
            .find(|s| addr >= s.value && addr < s.value + s.size.max(1))
    }
}

fn file_matches(want: &str, have: &str) -> bool {
    want == have || Path::new(want).file_name() == Path::new(have).file_name()
}

/// A process and the objects it maps.
pub struct Process {
    /// The process id.
    pub pid: i32,
    /// The mappings, as read once.
    pub maps: Vec<Mapping>,
    /// The ELF objects with at least one mapping (file-backed, plus the vDSO).
    pub objects: Vec<Object>,
}

impl Process {
    /// Reads the maps and opens every mapped ELF object.
    pub fn open(pid: i32) -> Result<Self> {
        let maps = read_maps(pid)?;
        let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
            .ok()
            .map(|p| p.display().to_string());
        let mut objects = Vec::new();
        let mut seen: Vec<(String, u64)> = Vec::new();
        for m in &maps {
            if m.path == "[vdso]" {
                let mut buf = vec![0u8; (m.end - m.start) as usize];
                if crate::mem::read(pid, m.start, &mut buf).is_ok()
                    && let Ok(o) = Object::new("[vdso]", Bytes::Owned(buf), &[m], false)
                {
                    objects.push(o);
                }
                continue;
            }
            if !m.path.starts_with('/') || m.inode == 0 {
                continue;
            }
            let key = (m.path.clone(), m.inode);
            if seen.contains(&key) {
                continue;
            }
            seen.push(key);
            let same: Vec<&Mapping> = maps
                .iter()
                .filter(|x| x.path == m.path && x.inode == m.inode)
                .collect();
            let mf = format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end);
            let Ok(file) = std::fs::File::open(&mf) else {
                continue;
            };
            let Ok(map) = FileMap::new(&file) else {
                continue;
            };
            // Only ELF objects (data files may be mapped too).
            if map.get(..4) != Some(b"\x7fELF".as_slice()) {
                continue;
            }
            let is_main = exe.as_deref() == Some(m.path.trim_end_matches(" (deleted)"));
            match Object::new(&m.path, Bytes::Map(map), &same, is_main) {
                Ok(o) => objects.push(o),
                Err(e) => tracing::debug!("skipping {}: {e}", m.path),
            }
        }
        Ok(Self { pid, maps, objects })
    }

    /// The object with build-id `build_id`.
    pub fn by_build_id(&self, build_id: &str) -> Option<&Object> {
        if build_id.is_empty() {
            return None;
        }
        self.objects
            .iter()
            .find(|o| o.build_id.eq_ignore_ascii_case(build_id))
    }

    /// The object whose executable mappings contain `addr`.
    pub fn object_at(&self, addr: u64) -> Option<&Object> {
        self.objects.iter().find(|o| o.contains_text(addr))
    }

    /// A free range of `size` bytes within ±2 GiB (minus `size`) of every
    /// address of `near` (a span), page aligned; preferring the closest.
    pub fn free_range_near(&self, near: (u64, u64), size: u64, skip: usize) -> Option<u64> {
        const TWO_G: u64 = 0x7fff_0000;
        let lo_bound = near.1.saturating_sub(TWO_G).max(0x10000);
        let hi_bound = near.0.saturating_add(TWO_G).min(0x7fff_ffff_f000);
        // Keep clear of the room the heap (brk) and the main stack grow into.
        const HEAP_ROOM: u64 = 256 << 20;
        const STACK_ROOM: u64 = 64 << 20;
        let mut sorted: Vec<(u64, u64, &str)> = self
            .maps
            .iter()
            .map(|m| (m.start, m.end, m.path.as_str()))
            .collect();
        sorted.sort();
        let mut cands = Vec::new();
        let mut prev_end = lo_bound;
        let mut prev_heap = false;
        let end = (hi_bound, hi_bound, "");
        // Gaps, with one guard page on each side.
        for &(s, e, path) in sorted.iter().chain(std::iter::once(&end)) {
            let room_below = if prev_heap { HEAP_ROOM } else { 0 };
            let room_above = if path == "[stack]" { STACK_ROOM } else { 0 };
            let gs = prev_end.max(lo_bound) + 0x1000 + room_below;
            let ge = s.min(hi_bound).saturating_sub(0x1000 + room_above);
            if ge > gs && ge - gs >= size {
                // The end of the gap closest to the object.
                let cand = if ge <= near.0 { ge - size } else { gs };
                let cand = cand & !0xfff;
                if cand >= gs && cand + size <= ge {
                    let dist = if cand < near.0 {
                        near.0 - cand
                    } else {
                        cand - near.1.min(cand)
                    };
                    cands.push((dist, cand));
                }
            }
            if e > prev_end {
                prev_end = e;
                prev_heap = path == "[heap]";
            }
        }
        cands.sort();
        cands.get(skip).map(|c| c.1)
    }
}

/// The symbol tables of a process's objects, read on first use and kept.
pub struct SymbolCache<'p> {
    /// The process.
    pub proc: &'p Process,
    debug_dir: PathBuf,
    syms: HashMap<usize, Symbols>,
}

impl<'p> SymbolCache<'p> {
    /// An empty cache for `proc`, separate debuginfo under `debug_dir`.
    pub fn new(proc: &'p Process, debug_dir: &Path) -> Self {
        Self {
            proc,
            debug_dir: debug_dir.to_path_buf(),
            syms: HashMap::new(),
        }
    }

    /// The symbols of object `obj` (an index into `proc.objects`).
    pub fn symbols(&mut self, obj: usize) -> Result<&Symbols> {
        if !self.syms.contains_key(&obj) {
            let o = self.proc.objects.get(obj).ok_or_else(|| Error::Process {
                pid: self.proc.pid,
                reason: format!("no object #{obj}"),
            })?;
            let s = o.symbols(&self.debug_dir)?;
            self.syms.insert(obj, s);
        }
        self.syms.get(&obj).ok_or_else(|| Error::Process {
            pid: self.proc.pid,
            reason: "symbol cache".into(),
        })
    }
}

/// The hex GNU build-id of the ELF file at `path`, if any.
pub fn build_id_of(path: &Path) -> Option<String> {
    let f = std::fs::File::open(path).ok()?;
    let map = FileMap::new(&f).ok()?;
    if map.get(..4) != Some(b"\x7fELF".as_slice()) {
        return None;
    }
    let elf = Elf::parse(&map).ok()?;
    let notes = elf.iter_note_headers(&map)?;
    for n in notes.flatten() {
        if n.n_type == goblin::elf::note::NT_GNU_BUILD_ID && n.name.starts_with("GNU") {
            return Some(hex::encode(n.desc));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(start: u64, end: u64, path: &str) -> Mapping {
        Mapping {
            start,
            end,
            perms: "r--p".into(),
            offset: 0,
            inode: 0,
            path: path.into(),
        }
    }

    #[test]
    fn free_range_is_near_and_clear_of_heap() {
        let exe = (0x5555_0000_0000u64, 0x5555_0001_0000u64);
        let heap = (0x5555_0100_0000u64, 0x5555_0110_0000u64);
        let p = Process {
            pid: 0,
            maps: vec![
                m(exe.0, exe.1, "/bin/x"),
                m(heap.0, heap.1, "[heap]"),
                m(0x7fff_0000_0000, 0x7fff_0002_0000, "[stack]"),
            ],
            objects: vec![],
        };
        for skip in 0..2 {
            let a = p.free_range_near(exe, 0x3000, skip).unwrap_or(0);
            assert!(a != 0 && a & 0xfff == 0);
            assert!(a + 0x3000 <= exe.0 + 0x7fff_0000 && a + 0x7fff_0000 >= exe.1);
            let overlaps = p
                .maps
                .iter()
                .any(|m| a < m.end + 0x1000 && a + 0x3000 + 0x1000 > m.start);
            assert!(!overlaps, "{a:#x} touches a mapping");
            assert!(
                !(a >= heap.1 && a < heap.1 + (256 << 20)),
                "{a:#x} is in the heap's room"
            );
        }
    }
}
