//! The operations: [`apply`], [`revert`], [`list`], [`apply_all`].
//!
//! Apply, step by step (failure-injection points in brackets: with
//! `HOTFIX_FAULT=<step>` hotfix kills itself with `SIGKILL` there):
//! 1. plan, touching nothing: read the patch, match its targets by build-id,
//!    resolve every symbol, check sizes and expected bytes (file and live),
//!    choose the mode (sites on one page: 5-byte jumps; on several: a
//!    switch through slots and detours, see [`crate::detour`]), link the
//!    image at a chosen free address within ±2 GiB `[planned]`;
//! 2. load, with one thread stopped: inject `mmap`, write the image (with its
//!    detours and slots) and the registry record, `mprotect` code r-x
//!    `[loaded]`; the new code is unreachable, so the target still runs only
//!    old code (inside each injected call: `[inject-mmap]`, `[injected-mmap]`,
//!    ...; see [`crate::inject`]);
//! 3. stop the world `[frozen]`, check every stack; busy: resume, back off,
//!    retry until the timeout, then unmap and fail (exit 3) `[checked]`;
//! 4. re-verify the live bytes; one page: write every jump in ONE write;
//!    several: write each `jmp *slot` (still leading to the detours, i.e.
//!    the old code) `[jump-N]` after the N-th, 1-based, then flip every slot
//!    to the new code in ONE write of the slot page `[switched]`;
//! 5. resume every thread `[resumed]`.
//!
//! Killed anywhere, the kernel detaches the threads and the target runs on
//! with wholly old or wholly new code: a single-page `/proc/PID/mem` write
//! is not split by a kill, and every multi-write sequence passes only
//! through states equivalent to the old code up to its one commit write.
//! `list` reads which from the target; see `docs/loader.md`.

use crate::check::{BusyRange, Module, Unwinder};
use crate::error::{Error, Result};
use crate::freeze::{self, Frozen};
use crate::link::{self, PAGE, Resolved};
use crate::registry::{self, Entry, FuncRecord, Record, State};
use crate::target::{Object, Process, Query, Symbols, read_maps};
use crate::{detour, inject, mem, trampoline};
use patchgen::format::{Binding, Kind, Meta};
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// Options of apply and revert.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long to retry while a function is busy.
    pub timeout: Duration,
    /// Root of separate debuginfo (`<dir>/.build-id/xx/rest.debug`).
    pub debug_dir: PathBuf,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            debug_dir: std::env::var_os("HOTFIX_DEBUG_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/usr/lib/debug")),
        }
    }
}

/// A patch file, read and validated.
#[derive(Debug, Clone)]
pub struct Patch {
    /// Its path.
    pub path: PathBuf,
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// Its metadata.
    pub meta: Meta,
}

impl Patch {
    /// Reads and validates a patch file.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let meta = patchgen::format::read_meta(&bytes).map_err(|e| Error::Patch {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        if meta.targets.is_empty() || meta.funcs.is_empty() {
            return Err(Error::Patch {
                path: path.to_path_buf(),
                reason: "the patch names no target object or no function to replace".into(),
            });
        }
        Ok(Self {
            path: path.to_path_buf(),
            bytes,
            meta,
        })
    }
}

/// One replaced function, as reported.
#[derive(Debug, Clone, Serialize)]
pub struct FuncReport {
    /// Name.
    pub name: String,
    /// Old address.
    pub old_addr: u64,
    /// New address.
    pub new_addr: u64,
}

/// The outcome of an apply or revert.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The process.
    pub pid: i32,
    /// The patch id.
    pub id: String,
    /// The patch mapping.
    pub base: u64,
    /// Its size.
    pub size: u64,
    /// Functions switched.
    pub funcs: Vec<FuncReport>,
    /// Threads stopped in the successful attempt.
    pub threads: usize,
    /// Attempts (1 + retries while busy).
    pub attempts: u32,
    /// Pause window of the successful attempt (first thread stopped to last
    /// resumed), microseconds.
    pub pause_us: u64,
    /// Total time, microseconds.
    pub total_us: u64,
}

impl Report {
    /// The report of a switch made for `rec` in `pid`.
    fn new(
        pid: i32,
        id: &str,
        rec: &Record,
        threads: usize,
        attempts: u32,
        pause: Duration,
        t0: Instant,
    ) -> Report {
        Report {
            pid,
            id: id.to_string(),
            base: rec.base,
            size: rec.size,
            funcs: rec
                .funcs
                .iter()
                .map(|f| FuncReport {
                    name: f.name.clone(),
                    old_addr: f.old_addr,
                    new_addr: f.new_addr,
                })
                .collect(),
            threads,
            attempts,
            pause_us: pause.as_micros() as u64,
            total_us: t0.elapsed().as_micros() as u64,
        }
    }
}

/// Writes the bytes of every site (jumps, or restored entries) while all
/// threads are stopped, then fires the fault points `STEP-1..N`.
///
/// When all sites lie within one page they are written by ONE write of the
/// page range they span (the unchanged bytes between them rewritten as read
/// under the stop): a `/proc/PID/mem` write of a single page is done by the
/// kernel once it has pinned that page, so if hotfix is killed, the target
/// gets either every site or none — never a mix. Sites spread over several
/// pages are written one by one (each site in one write); a kill between two
/// of those leaves the patch `partial` (see docs/loader.md).
fn write_sites(pid: i32, writer: &mem::Writer, sites: &[(u64, Vec<u8>)], step: &str) -> Result<()> {
    let lo = sites.iter().map(|(a, _)| *a).min();
    let hi = sites.iter().map(|(a, b)| a + b.len() as u64).max();
    if let (Some(lo), Some(hi)) = (lo, hi)
        && sites.len() > 1
        && lo / PAGE == (hi - 1) / PAGE
    {
        let mut span = mem::read_vec(pid, lo, (hi - lo) as usize)?;
        for (a, b) in sites {
            let off = (a - lo) as usize;
            span[off..off + b.len()].copy_from_slice(b);
        }
        writer.write(lo, &span)?;
        for i in 0..sites.len() {
            fault(&format!("{step}-{}", i + 1));
        }
        return Ok(());
    }
    for (i, (a, b)) in sites.iter().enumerate() {
        writer.write(*a, b)?;
        fault(&format!("{step}-{}", i + 1));
    }
    Ok(())
}

/// Writes every slot of `rec` (a switched patch) with `value(func)` in ONE
/// write: all slots lie in one page of the patch mapping, so the write is
/// the commit point of the switch (see [`crate::detour`]).
fn flip(
    pid: i32,
    writer: &mem::Writer,
    rec: &Record,
    value: impl Fn(&FuncRecord) -> u64,
) -> Result<()> {
    let slots: Vec<(u64, u64)> = rec
        .funcs
        .iter()
        .filter_map(|f| f.slot.map(|s| (s, value(f))))
        .collect();
    let (Some(lo), Some(hi)) = (
        slots.iter().map(|s| s.0).min(),
        slots.iter().map(|s| s.0 + 8).max(),
    ) else {
        return Ok(());
    };
    if lo / PAGE != (hi - 1) / PAGE {
        return Err(Error::Registry {
            pid,
            id: rec.id.clone(),
            reason: format!("slots {lo:#x}..{hi:#x} are not in one page"),
        });
    }
    let mut buf = mem::read_vec(pid, lo, (hi - lo) as usize)?;
    for (a, v) in slots {
        let off = (a - lo) as usize;
        buf[off..off + 8].copy_from_slice(&v.to_le_bytes());
    }
    writer.write(lo, &buf)
}

/// Fires failure-injection point `step`: with `HOTFIX_FAULT=<step>` hotfix
/// kills itself with `SIGKILL` here.
pub(crate) fn fault(step: &str) {
    if std::env::var("HOTFIX_FAULT").is_ok_and(|v| v == step) {
        tracing::warn!("HOTFIX_FAULT={step}: killing hotfix");
        crate::sys::kill_self();
    }
}

struct Planned {
    object: usize,
    name: String,
    old_addr: u64,
    old_size: u64,
    site: u64,
    /// The live bytes from the site (up to 32), the source of a detour.
    live_entry: Vec<u8>,
    /// The bytes the entry write replaces (5, or 6 with a switch).
    saved: Vec<u8>,
    new_symbol: String,
    prev: Option<(u64, u64)>,
}

fn sym_query<'a>(name: &'a str, binding: Binding, file: Option<&'a str>, sympos: u32) -> Query<'a> {
    Query {
        name,
        local: binding == Binding::Local,
        file,
        sympos,
    }
}

struct Ctx<'p> {
    proc: &'p Process,
    debug_dir: PathBuf,
    syms: HashMap<usize, Symbols>,
}

impl Ctx<'_> {
    fn symbols(&mut self, obj: usize) -> Result<&Symbols> {
        if !self.syms.contains_key(&obj) {
            let s = self.proc.objects[obj].symbols(&self.debug_dir)?;
            self.syms.insert(obj, s);
        }
        self.syms.get(&obj).ok_or_else(|| Error::Process {
            pid: self.proc.pid,
            reason: "symbol cache".into(),
        })
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

/// Unwind modules: every mapped object plus the code of loaded patches.
fn modules(pid: i32, proc: &Process, entries: &[Entry]) -> Vec<Module> {
    let mut m: Vec<Module> = proc.objects.iter().map(Module::from_object).collect();
    for e in entries {
        let r = &e.record;
        if let Some((addr, len)) = r.eh_frame
            && let Ok(bytes) = mem::read_vec(pid, addr, len as usize)
        {
            m.push(Module::from_patch(&r.id, r.code, addr, bytes));
        }
    }
    m
}

/// Symbolizes a stack for error messages.
fn symbolize(ctx: &mut Ctx<'_>, entries: &[Entry], stack: &[u64]) -> String {
    let mut out = String::new();
    for (i, &pc) in stack.iter().enumerate() {
        let mut what = format!("{pc:#x}");
        if let Some(oi) = ctx.proc.objects.iter().position(|o| o.contains_text(pc)) {
            let bias = ctx.proc.objects[oi].bias;
            let path = ctx.proc.objects[oi].path.clone();
            let f = ctx.symbols(oi).ok().and_then(|s| {
                s.containing(pc - bias)
                    .map(|s| (s.name.clone(), pc - bias - s.value))
            });
            what = match f {
                Some((n, off)) => format!("{pc:#x} {n}+{off:#x} ({path})"),
                None => format!("{pc:#x} ({path})"),
            };
        } else if let Some(e) = entries
            .iter()
            .find(|e| pc >= e.record.code.0 && pc < e.record.code.1)
        {
            let f = e
                .record
                .funcs
                .iter()
                .map(|f| (f.name.clone(), f.new_addr, f.new_size))
                .chain(e.record.new_funcs.iter().cloned())
                .find(|(_, a, s)| pc >= *a && pc < a + s);
            what = match f {
                Some((n, a, _)) => format!("{pc:#x} {n}+{:#x} (patch {})", pc - a, e.record.id),
                None => format!("{pc:#x} (patch {})", e.record.id),
            };
        }
        out.push_str(&format!("  #{i} {what}\n"));
    }
    out
}

fn first_thread(pid: i32) -> Result<Frozen> {
    let mut last = None;
    let dir = format!("/proc/{pid}/task");
    let tids: Vec<i32> = std::fs::read_dir(&dir)
        .map_err(|e| Error::Process {
            pid,
            reason: format!("cannot list {dir}: {e}"),
        })?
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
        .collect();
    for tid in std::iter::once(pid).chain(tids.into_iter().filter(|t| *t != pid)) {
        match freeze::stop_one(pid, tid) {
            Ok(f) => return Ok(f),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or(Error::Process {
        pid,
        reason: "no thread to stop".into(),
    }))
}

/// Where injected system calls run: a cave of a mapped object (kill-safe,
/// see [`inject`]), else an existing `syscall` instruction.
fn gadget(proc: &Process) -> Result<inject::Gadget> {
    let syscall = proc.objects.iter().find_map(Object::syscall_gadget);
    let cave = proc.objects.iter().find_map(|o| o.cave(inject::CAVE_LEN));
    if let Some(c) = cave {
        tracing::debug!(
            "process {}: injected system calls run in the cave at {c:#x}",
            proc.pid
        );
    } else {
        tracing::warn!(
            "process {}: no {}-byte cave in any mapped object; a kill of hotfix during an injected system call would leave that thread with wrong registers",
            proc.pid,
            inject::CAVE_LEN
        );
    }
    inject::Gadget::new(proc.pid, syscall, cave)
}

fn unmap_leftover(pid: i32, proc: &Process, base: u64, size: u64) {
    let res = gadget(proc).and_then(|g| {
        let mut f = first_thread(pid)?;
        let r = match f.threads.first_mut() {
            Some(t) => inject::munmap(pid, t, &g, base, size),
            None => Ok(()),
        };
        f.resume();
        r
    });
    if let Err(e) = res {
        tracing::warn!("process {pid}: could not unmap the unused patch mapping at {base:#x}: {e}");
    }
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

fn now_secs() -> (u64, u128) {
    let d = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_secs(), d.as_nanos())
}

/// Applies `patch` to process `pid`.
pub fn apply(pid: i32, patch: &Patch, opts: &Options) -> Result<Report> {
    let t0 = Instant::now();
    let meta = &patch.meta;
    let proc = Process::open(pid)?;
    let entries = registry::scan(pid, &proc.maps)?;
    if let Some(e) = entries
        .iter()
        .find(|e| e.record.id == meta.id && e.state != State::Inactive)
    {
        return Err(Error::Registry {
            pid,
            id: meta.id.clone(),
            reason: format!("is already applied ({:?})", e.state).to_lowercase(),
        });
    }
    let targets: Vec<usize> = meta
        .targets
        .iter()
        .map(|t| object_index(&proc, &t.build_id, &t.name))
        .collect::<Result<_>>()?;
    let mut ctx = Ctx {
        proc: &proc,
        debug_dir: opts.debug_dir.clone(),
        syms: HashMap::new(),
    };
    // Replaced functions.
    let mut plan: Vec<Planned> = Vec::new();
    for f in &meta.funcs {
        let oi = targets[f.target];
        let obj = &proc.objects[oi];
        let s = ctx
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
        let (Ok(expected), Ok(mask)) = (hex::decode(&f.expected), hex::decode(&f.expected_mask))
        else {
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
        if s.size < site_off + 5 {
            return Err(mismatch("function is too small for a 5-byte jump".into()));
        }
        let site = old_addr + site_off;
        let live = mem::read_vec(pid, old_addr, file.len())?;
        let so = site_off as usize;
        let mut prev = None;
        if live != file {
            // Stacking: the site must hold the jump of the newest active patch.
            let top = entries.iter().rev().find_map(|e| {
                e.record.funcs.iter().find(|r| {
                    let j = r.jump_bytes();
                    r.site == site && !j.is_empty() && live.get(so..so + j.len()) == Some(&j[..])
                })
            });
            let jl = top.map(|r| r.jump_bytes().len()).unwrap_or(5);
            let rest_ok = live[..so] == file[..so] && live.get(so + jl..) == file.get(so + jl..);
            match top {
                Some(r) if rest_ok => prev = Some((r.new_addr, r.new_size)),
                _ => {
                    return Err(mismatch(format!(
                        "live bytes {} differ from the file's {} and are not a known patch's jump",
                        hex::encode(&live),
                        hex::encode(&file)
                    )));
                }
            }
        }
        let live_entry = mem::read_vec(pid, site, (s.size - site_off).min(32) as usize)?;
        plan.push(Planned {
            object: oi,
            name: f.name.clone(),
            old_addr,
            old_size: s.size,
            site,
            live_entry,
            saved: Vec::new(),
            new_symbol: f.new_symbol.clone(),
            prev,
        });
    }
    // Entry sites on more than one page: switch through slots (see
    // `detour`); otherwise 5-byte jumps written in one write.
    let switch = {
        let mut pages: Vec<u64> = plan.iter().map(|p| p.site / PAGE).collect();
        pages.sort();
        pages.dedup();
        pages.len() > 1
    };
    let entry_len = if switch { detour::JUMP_LEN } else { 5 };
    if switch && plan.len() as u64 > detour::MAX_SLOTS {
        return Err(Error::Patch {
            path: patch.path.clone(),
            reason: format!(
                "{} functions on several pages; at most {} can be switched at once",
                plan.len(),
                detour::MAX_SLOTS
            ),
        });
    }
    for p in &mut plan {
        let obj = &proc.objects[p.object];
        let refuse = |reason: String| Error::Entry {
            pid,
            func: p.name.clone(),
            addr: p.old_addr,
            object: obj.path.clone(),
            reason,
        };
        if p.site + entry_len as u64 > p.old_addr + p.old_size {
            return Err(refuse(format!(
                "function is too small for a {entry_len}-byte entry jump"
            )));
        }
        if p.site / PAGE != (p.site + entry_len as u64 - 1) / PAGE {
            return Err(refuse(format!(
                "its {entry_len}-byte entry site {:#x} straddles a page boundary, so a kill of hotfix could tear the write",
                p.site
            )));
        }
        p.saved = p.live_entry[..entry_len].to_vec();
        if switch {
            let (_, covered) = detour::build(&p.live_entry, p.site, p.site).map_err(&refuse)?;
            let code = obj
                .file_bytes(p.old_addr.wrapping_sub(obj.bias), p.old_size as usize)
                .ok_or_else(|| refuse("function bytes are not in the file".into()))?;
            if let Some((from, to)) =
                detour::branch_into(code, p.old_addr, p.site, p.site + covered as u64)
            {
                return Err(refuse(format!(
                    "the branch at {from:#x} targets {to:#x}, inside the {covered} entry bytes a switch would displace"
                )));
            }
        }
    }
    // References.
    let mut resolved: HashMap<String, Resolved> = HashMap::new();
    for r in &meta.refs {
        let oi = targets[r.target];
        let obj = &proc.objects[oi];
        let q = sym_query(&r.name, r.binding, r.file.as_deref(), r.sympos);
        let found = ctx.symbols(oi)?.lookup(q).cloned();
        let v = match (found, r.kind) {
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
                    return Err(Error::Symbol {
                        object: obj.path.clone(),
                        name: r.name.clone(),
                        reason: "thread-local symbol but the object has no PT_TLS".into(),
                    });
                };
                let block = memsz.div_ceil(align) * align;
                Resolved::Tls(s.value as i64 - block as i64)
            }
            (Ok(s), _) if s.kind == goblin::elf::sym::STT_TLS => {
                return Err(Error::Symbol {
                    object: obj.path.clone(),
                    name: r.name.clone(),
                    reason: "is thread-local but the patch does not say so".into(),
                });
            }
            (Ok(s), _) => Resolved::Addr(obj.bias.wrapping_add(s.value)),
            (Err(reason), _) if r.binding == Binding::Local => {
                return Err(Error::Symbol {
                    object: obj.path.clone(),
                    name: r.name.clone(),
                    reason,
                });
            }
            (Err(reason), _) => {
                // An import: its definition in another object's .dynsym.
                let mut hit = None;
                for (k, o) in proc.objects.iter().enumerate() {
                    if k == oi {
                        continue;
                    }
                    if let Ok(s) = ctx.symbols(k)?.lookup(q) {
                        hit = if s.kind == goblin::elf::sym::STT_GNU_IFUNC {
                            // Its value is the resolver (strlen, memcpy... in
                            // libc): call what the dynamic linker chose.
                            Some(ifunc_target(pid, &proc.objects, oi, &r.name)?.ok_or_else(
                                || Error::Symbol {
                                    object: o.path.clone(),
                                    name: r.name.clone(),
                                    reason: "is an IFUNC and no mapped object has a GOT entry for it".into(),
                                },
                            )?)
                        } else {
                            Some(o.bias.wrapping_add(s.value))
                        };
                        break;
                    }
                }
                Resolved::Addr(hit.ok_or_else(|| Error::Symbol {
                    object: obj.path.clone(),
                    name: r.name.clone(),
                    reason: format!("{reason}, and no other mapped object defines it"),
                })?)
            }
        };
        resolved.insert(r.symbol.clone(), v);
    }
    let resolve = |name: &str| -> Result<Resolved> {
        resolved.get(name).copied().ok_or_else(|| Error::Patch {
            path: patch.path.clone(),
            reason: format!("undefined symbol {name} has no entry in the metadata's refs"),
        })
    };
    // Link near the first function's object.
    let near = proc.objects[plan[0].object].span;
    let near_name = proc.objects[plan[0].object].path.clone();
    let ndetours = if switch { plan.len() as u64 } else { 0 };
    let probe = link::link(&patch.path, &patch.bytes, near.0, ndetours, &resolve)?;
    let build = |image: link::Image| -> Result<(Vec<u8>, Record)> {
        let (secs, nanos) = now_secs();
        let mut funcs = Vec::new();
        let mut patches: Vec<(u64, Vec<u8>)> = Vec::new();
        for (i, p) in plan.iter().enumerate() {
            let (new_addr, new_size) =
                image
                    .symbols
                    .get(&p.new_symbol)
                    .copied()
                    .ok_or_else(|| Error::Patch {
                        path: patch.path.clone(),
                        reason: format!(
                            "new function {} is not defined in the patch",
                            p.new_symbol
                        ),
                    })?;
            let no_space = || Error::NoSpace {
                pid,
                object: near_name.clone(),
                size: image.bytes.len() as u64,
            };
            let (jump, slot, detour) = if switch {
                let off = image.detours_off + i as u64 * detour::DETOUR_LEN;
                let at = image.base + off;
                let slot = image.base + detour::SLOT_OFF + 8 * i as u64;
                let (code, _) =
                    detour::build(&p.live_entry, p.site, at).map_err(|reason| Error::Entry {
                        pid,
                        func: p.name.clone(),
                        addr: p.old_addr,
                        object: proc.objects[p.object].path.clone(),
                        reason,
                    })?;
                let len = code.len() as u64;
                patches.push((off, code));
                patches.push((detour::SLOT_OFF + 8 * i as u64, at.to_le_bytes().to_vec()));
                let j = detour::indirect_jump(p.site, slot).ok_or_else(no_space)?;
                (j.to_vec(), Some(slot), Some((at, len)))
            } else {
                let j = trampoline::jump(p.site, new_addr).ok_or_else(no_space)?;
                (j.to_vec(), None, None)
            };
            funcs.push(FuncRecord {
                name: p.name.clone(),
                object: proc.objects[p.object].path.clone(),
                build_id: proc.objects[p.object].build_id.clone(),
                old_addr: p.old_addr,
                old_size: p.old_size,
                site: p.site,
                new_addr,
                new_size,
                saved: hex::encode(&p.saved),
                jump: hex::encode(jump),
                slot,
                detour,
            });
        }
        let pick = |names: &[String]| {
            names
                .iter()
                .filter_map(|n| image.symbols.get(n).map(|(a, s)| (n.clone(), *a, *s)))
                .collect::<Vec<_>>()
        };
        let mut rec = Record {
            id: meta.id.clone(),
            description: meta.description.clone(),
            source_hash: meta.source_hash.clone(),
            applied_at: secs,
            seq: nanos,
            applied_by: std::process::id(),
            base: image.base,
            size: 0,
            code: (
                image.base + image.code.0,
                image.base + image.code.0 + image.code.1,
            ),
            eh_frame: image.eh_frame,
            targets: targets
                .iter()
                .map(|&i| {
                    (
                        proc.objects[i].build_id.clone(),
                        proc.objects[i].path.clone(),
                    )
                })
                .collect(),
            funcs,
            new_funcs: pick(&meta.new_funcs),
            new_data: pick(&meta.new_data),
        };
        let rec_off = image.bytes.len() as u64;
        // The size depends on the record's length, which includes the size:
        // fix the size at the page-rounded length of a generous estimate.
        let est = serde_json::to_vec(&rec).map(|v| v.len()).unwrap_or(0) as u64 + 64;
        rec.size = (rec_off + est).div_ceil(PAGE) * PAGE;
        let json = serde_json::to_vec(&rec).map_err(|e| Error::Registry {
            pid,
            id: meta.id.clone(),
            reason: e.to_string(),
        })?;
        let mut bytes = image.bytes;
        for (off, b) in &patches {
            let off = *off as usize;
            bytes[off..off + b.len()].copy_from_slice(b);
        }
        bytes[..registry::HEADER_LEN]
            .copy_from_slice(&registry::header(rec_off, json.len() as u64));
        bytes.extend_from_slice(&json);
        bytes.resize(rec.size as usize, 0);
        Ok((bytes, rec))
    };
    let (probe_bytes, _) = build(probe)?;
    let size = probe_bytes.len() as u64;
    fault("planned");

    // Load, with one thread stopped.
    let g = gadget(&proc)?;
    let mut one = first_thread(pid)?;
    let mut loaded: Option<Record> = None;
    for skip in 0..16 {
        let Some(base) = proc.free_range_near(near, size, skip) else {
            break;
        };
        let image = link::link(&patch.path, &patch.bytes, base, ndetours, &resolve)?;
        let code = image.code;
        let (bytes, rec) = build(image)?;
        let Some(t) = one.threads.first_mut() else {
            break;
        };
        let prot_rw = libc::PROT_READ | libc::PROT_WRITE;
        if inject::mmap_fixed(pid, t, &g, base, rec.size, prot_rw)?.is_none() {
            continue;
        }
        let res = (|| -> Result<()> {
            let w = mem::Writer::open(pid)?;
            w.write(base, &bytes)?;
            inject::mprotect(pid, t, &g, base, PAGE, libc::PROT_READ)?;
            if code.1 > 0 {
                inject::mprotect(
                    pid,
                    t,
                    &g,
                    base + code.0,
                    code.1,
                    libc::PROT_READ | libc::PROT_EXEC,
                )?;
            }
            Ok(())
        })();
        if let Err(e) = res {
            let _ = inject::munmap(pid, t, &g, base, rec.size);
            return Err(e);
        }
        loaded = Some(rec);
        break;
    }
    one.resume();
    let rec = loaded.ok_or_else(|| Error::NoSpace {
        pid,
        object: near_name.clone(),
        size,
    })?;
    fault("loaded");

    // Stop the world, check, switch.
    let mut ranges: Vec<BusyRange> = Vec::new();
    for p in &plan {
        ranges.push(BusyRange {
            start: p.old_addr,
            end: p.old_addr + p.old_size,
            label: p.name.clone(),
        });
        if let Some((a, s)) = p.prev {
            ranges.push(BusyRange {
                start: a,
                end: a + s,
                label: format!("{} (previous patch)", p.name),
            });
        }
        // A thread in an earlier patch's detour runs the old function.
        for e in &entries {
            for f in e.record.funcs.iter().filter(|f| f.site == p.site) {
                if let Some((a, s)) = f.detour {
                    ranges.push(BusyRange {
                        start: a,
                        end: a + s,
                        label: format!("{} (detour of patch {})", p.name, e.record.id),
                    });
                }
            }
        }
    }
    let mut unwinder = Unwinder::new(pid, modules(pid, &proc, &entries));
    let deadline = Instant::now() + opts.timeout;
    let mut backoff = Duration::from_millis(1);
    let mut attempts = 0u32;
    let writer = mem::Writer::open(pid)?;
    loop {
        attempts += 1;
        let frozen = freeze::freeze(pid)?;
        fault("frozen");
        let maps = read_maps(pid)?;
        if let Some(b) = unwinder.check(&frozen.threads, &maps, &ranges) {
            drop(frozen);
            if Instant::now() >= deadline {
                unmap_leftover(pid, &proc, rec.base, rec.size);
                let stack = symbolize(&mut ctx, &entries, &b.stack);
                return Err(Error::Busy {
                    pid,
                    tid: b.tid,
                    func: b.label,
                    stack: if b.scanned {
                        format!("{stack}  (unwind incomplete; found by scanning the stack)\n")
                    } else {
                        stack
                    },
                    timeout: opts.timeout,
                    attempts,
                });
            }
            tracing::debug!("attempt {attempts}: thread {} busy in {}", b.tid, b.label);
            std::thread::sleep(backoff.min(deadline.saturating_duration_since(Instant::now())));
            backoff = (backoff * 2).min(Duration::from_millis(100));
            continue;
        }
        fault("checked");
        // Re-verify the live bytes under the stop.
        for (p, f) in plan.iter().zip(&rec.funcs) {
            let live = mem::read_vec(pid, p.site, p.saved.len())?;
            if live != p.saved {
                drop(frozen);
                unmap_leftover(pid, &proc, rec.base, rec.size);
                return Err(Error::ExpectedBytes {
                    pid,
                    func: f.name.clone(),
                    addr: p.old_addr,
                    object: f.object.clone(),
                    reason: "live bytes changed while applying (another patcher?)".into(),
                });
            }
        }
        let sites: Vec<(u64, Vec<u8>)> = rec
            .funcs
            .iter()
            .map(|f| (f.site, hex::decode(&f.jump).unwrap_or_default()))
            .collect();
        write_sites(pid, &writer, &sites, "jump")?;
        if switch {
            // The commit point: one write of the slot page.
            flip(pid, &writer, &rec, |f| f.new_addr)?;
            fault("switched");
        }
        let threads = frozen.threads.len();
        let pause = frozen.resume();
        fault("resumed");
        return Ok(Report::new(
            pid, &meta.id, &rec, threads, attempts, pause, t0,
        ));
    }
}

/// Reverts patch `id` in process `pid`: checks no thread runs its code,
/// restores the saved bytes, unmaps it. Refuses if a later patch is stacked
/// on one of its functions.
pub fn revert(pid: i32, id: &str, opts: &Options) -> Result<Report> {
    let t0 = Instant::now();
    let proc = Process::open(pid)?;
    let entries = registry::scan(pid, &proc.maps)?;
    let Some(pos) = entries.iter().rposition(|e| e.record.id == id) else {
        return Err(Error::Registry {
            pid,
            id: id.to_string(),
            reason: "is not applied to this process".into(),
        });
    };
    let e = &entries[pos];
    let rec = e.record.clone();
    if e.state == State::Stacked {
        let later: Vec<String> = entries[pos + 1..]
            .iter()
            .filter(|l| {
                l.state != State::Inactive
                    && l.record
                        .funcs
                        .iter()
                        .any(|lf| rec.funcs.iter().any(|f| f.site == lf.site))
            })
            .map(|l| l.record.id.clone())
            .collect();
        return Err(Error::Registry {
            pid,
            id: id.to_string(),
            reason: format!(
                "functions {} are patched again by {}; revert in last-in-first-out order ({} first)",
                e.overridden.join(", "),
                later.join(", "),
                later.last().cloned().unwrap_or_default()
            ),
        });
    }
    let switched = rec.funcs.iter().any(|f| f.slot.is_some());
    let mut holds_jump = false;
    for f in &rec.funcs {
        holds_jump |= mem::read_vec(pid, f.site, f.jump_bytes().len())? == f.jump_bytes();
    }
    if e.state == State::Inactive && !holds_jump {
        // A leftover of an interrupted apply or revert: nothing runs it.
        unmap_leftover(pid, &proc, rec.base, rec.size);
        return Err(Error::Registry {
            pid,
            id: id.to_string(),
            reason: "is not active (leftover mapping of an interrupted apply, now unmapped)".into(),
        });
    }
    let mut ctx = Ctx {
        proc: &proc,
        debug_dir: opts.debug_dir.clone(),
        syms: HashMap::new(),
    };
    let ranges = vec![BusyRange {
        start: rec.code.0,
        end: rec.code.1,
        label: format!("new code of patch {id}"),
    }];
    let g = gadget(&proc)?;
    let mut unwinder = Unwinder::new(pid, modules(pid, &proc, &entries));
    let deadline = Instant::now() + opts.timeout;
    let mut backoff = Duration::from_millis(1);
    let mut attempts = 0u32;
    let writer = mem::Writer::open(pid)?;
    loop {
        attempts += 1;
        let mut frozen = freeze::freeze(pid)?;
        fault("frozen");
        let maps = read_maps(pid)?;
        if let Some(b) = unwinder.check(&frozen.threads, &maps, &ranges) {
            drop(frozen);
            if Instant::now() >= deadline {
                let stack = symbolize(&mut ctx, &entries, &b.stack);
                return Err(Error::Busy {
                    pid,
                    tid: b.tid,
                    func: b.label,
                    stack,
                    timeout: opts.timeout,
                    attempts,
                });
            }
            std::thread::sleep(backoff.min(deadline.saturating_duration_since(Instant::now())));
            backoff = (backoff * 2).min(Duration::from_millis(100));
            continue;
        }
        fault("checked");
        if switched {
            // The commit point: every function back to its detour at once.
            flip(pid, &writer, &rec, |f| {
                f.detour.map(|d| d.0).unwrap_or(f.new_addr)
            })?;
            fault("unswitched");
        }
        let mut sites = Vec::new();
        for f in &rec.funcs {
            let jump = f.jump_bytes();
            if mem::read_vec(pid, f.site, jump.len())? == jump {
                sites.push((f.site, f.saved_bytes()));
            }
        }
        write_sites(pid, &writer, &sites, "restore")?;
        if let Some(t) = frozen.threads.first_mut() {
            inject::munmap(pid, t, &g, rec.base, rec.size)?;
        }
        let threads = frozen.threads.len();
        let pause = frozen.resume();
        return Ok(Report::new(pid, id, &rec, threads, attempts, pause, t0));
    }
}

/// The patches loaded in process `pid`, oldest first, with their state.
pub fn list(pid: i32) -> Result<Vec<Entry>> {
    registry::scan(pid, &read_maps(pid)?)
}

/// The outcome of [`apply_all`] for one process.
#[derive(Debug)]
pub struct AllOutcome {
    /// The process.
    pub pid: i32,
    /// Its command name.
    pub comm: String,
    /// What happened.
    pub result: Result<Report>,
}

/// Applies `patch` to every process that maps an object with the build-id
/// of the patch's first target, each independently.
pub fn apply_all(patch: &Patch, opts: &Options) -> Result<Vec<AllOutcome>> {
    let want = patch.meta.targets[0].build_id.to_ascii_lowercase();
    let me = std::process::id() as i32;
    let mut cache: HashMap<(String, u64), String> = HashMap::new();
    let mut out = Vec::new();
    let rd = std::fs::read_dir("/proc").map_err(|source| Error::Io {
        path: "/proc".into(),
        source,
    })?;
    let mut pids: Vec<i32> = rd
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
        .filter(|p| *p != me)
        .collect();
    pids.sort();
    for pid in pids {
        let Ok(maps) = read_maps(pid) else { continue };
        let mut hit = false;
        for m in maps
            .iter()
            .filter(|m| m.path.starts_with('/') && m.inode != 0 && m.offset == 0)
        {
            let key = (m.path.clone(), m.inode);
            let id = match cache.get(&key) {
                Some(v) => v.clone(),
                None => {
                    let mf = format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end);
                    let v = crate::target::build_id_of(Path::new(&mf)).unwrap_or_default();
                    cache.insert(key, v.clone());
                    v
                }
            };
            if !want.is_empty() && id == want {
                hit = true;
                break;
            }
        }
        if !hit {
            continue;
        }
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .unwrap_or_default()
            .trim()
            .to_string();
        out.push(AllOutcome {
            pid,
            comm,
            result: apply(pid, patch, opts),
        });
    }
    Ok(out)
}
