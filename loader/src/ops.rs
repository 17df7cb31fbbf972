//! The operations on a process: [`apply`], [`revert`], [`list`],
//! [`apply_all`]. Each is the data flow of the loader's modules, in order:
//!
//! apply: [`plan`] (touching nothing; `[planned]`) -> [`image`] (laid out
//! for this target) -> [`load`] (one thread stopped: inject `mmap`, write,
//! `mprotect`; `[loaded]`) -> [`switch`] (stop every thread `[frozen]`,
//! check every stack `[checked]`, commit `[jump-N]` `[switched]`, resume
//! `[resumed]`; busy: resume, back off, retry until the timeout, then unmap
//! and fail with exit 3).
//!
//! revert: the registry record gives the sites, the saved bytes and the
//! code range -> [`switch`] (stop, check that no thread runs the patch's
//! code, commit `[unswitched]` `[restore-N]`, unmap, resume).
//!
//! Killed anywhere, the kernel detaches the threads and the target runs on
//! with wholly old or wholly new code: a single-page `/proc/PID/mem` write
//! is not split by a kill, and every multi-write sequence passes only
//! through states equivalent to the old code up to its one commit write.
//! `list` reads which from the target; see `docs/loader.md`.
//!
//! [`plan`]: crate::plan
//! [`image`]: crate::image
//! [`load`]: crate::load
//! [`switch`]: crate::switch

use crate::check::{self, Busy, BusyRange, Unwinder};
use crate::error::{Error, Result};
use crate::fault::fault;
use crate::image::Builder;
use crate::registry::{self, Entry, Record, State};
use crate::retry::Outcome;
use crate::switch::{self, Switched};
use crate::target::{Process, SymbolCache, read_maps};
use crate::{load, mem, plan};
use patchgen::format::Meta;
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

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
        done: &Switched<()>,
        attempts: u32,
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
            threads: done.threads,
            attempts,
            pause_us: done.pause.as_micros() as u64,
            total_us: t0.elapsed().as_micros() as u64,
        }
    }
}

/// Applies `patch` to process `pid`.
pub fn apply(pid: i32, patch: &Patch, opts: &Options) -> Result<Report> {
    let t0 = Instant::now();
    let proc = Process::open(pid)?;
    let entries = registry::scan(pid, &proc.maps)?;
    let mut syms = SymbolCache::new(&proc, &opts.debug_dir);
    let plan = plan::plan(&proc, &entries, patch, &mut syms)?;
    let builder = Builder::new(&proc, patch, &plan);
    // A probe layout near the object gives the size to map.
    let size = builder.build(builder.near()?.span.0)?.bytes.len() as u64;
    fault("planned");
    let rec = load::load(&proc, &builder, size)?;
    fault("loaded");
    let ranges = switch::apply_ranges(&plan, &entries);
    let mut unwinder = Unwinder::new(pid, check::modules(&proc, &entries));
    let writer = mem::Writer::open(pid)?;
    let outcome = switch::when_idle(pid, &mut unwinder, &ranges, opts.timeout, |_| {
        switch::switch_in(pid, &writer, &plan, &rec)
    });
    let (done, attempts) = match outcome {
        Ok(Outcome::Done { value, attempts }) => (value, attempts),
        Ok(Outcome::TimedOut { busy, attempts }) => {
            load::unmap_leftover(&proc, rec.base, rec.size);
            return Err(busy_error(
                &mut syms,
                &entries,
                busy,
                opts.timeout,
                attempts,
            ));
        }
        Err(e @ Error::ExpectedBytes { .. }) => {
            load::unmap_leftover(&proc, rec.base, rec.size);
            return Err(e);
        }
        Err(e) => return Err(e),
    };
    fault("resumed");
    Ok(Report::new(pid, &patch.meta.id, &rec, &done, attempts, t0))
}

/// The error of a function still busy at the timeout, its stack symbolized.
fn busy_error(
    syms: &mut SymbolCache<'_>,
    entries: &[Entry],
    b: Busy,
    timeout: Duration,
    attempts: u32,
) -> Error {
    let stack = check::symbolize(syms, entries, &b.stack);
    Error::Busy {
        pid: syms.proc.pid,
        tid: b.tid,
        func: b.label,
        stack: if b.scanned {
            format!("{stack}  (unwind incomplete; found by scanning the stack)\n")
        } else {
            stack
        },
        timeout,
        attempts,
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
    refuse_stacked(pid, &entries, pos)?;
    let rec = entries[pos].record.clone();
    let mut holds_jump = false;
    for f in &rec.funcs {
        holds_jump |= mem::read_vec(pid, f.site, f.jump_bytes().len())? == f.jump_bytes();
    }
    if entries[pos].state == State::Inactive && !holds_jump {
        // A leftover of an interrupted apply or revert: nothing runs it.
        load::unmap_leftover(&proc, rec.base, rec.size);
        return Err(Error::Registry {
            pid,
            id: id.to_string(),
            reason: "is not active (leftover mapping of an interrupted apply, now unmapped)".into(),
        });
    }
    let ranges = vec![BusyRange {
        start: rec.code.0,
        end: rec.code.1,
        label: format!("new code of patch {id}"),
    }];
    let g = load::gadget(&proc)?;
    let mut unwinder = Unwinder::new(pid, check::modules(&proc, &entries));
    let writer = mem::Writer::open(pid)?;
    let outcome = switch::when_idle(pid, &mut unwinder, &ranges, opts.timeout, |frozen| {
        switch::switch_out(pid, &writer, &g, &rec, frozen)
    })?;
    match outcome {
        Outcome::Done { value, attempts } => Ok(Report::new(pid, id, &rec, &value, attempts, t0)),
        Outcome::TimedOut { busy, attempts } => {
            let mut syms = SymbolCache::new(&proc, &opts.debug_dir);
            Err(busy_error(
                &mut syms,
                &entries,
                busy,
                opts.timeout,
                attempts,
            ))
        }
    }
}

/// Refuses to revert `entries[pos]` while a later active patch replaces one
/// of its functions again (last-in-first-out order).
fn refuse_stacked(pid: i32, entries: &[Entry], pos: usize) -> Result<()> {
    let e = &entries[pos];
    if e.state != State::Stacked {
        return Ok(());
    }
    let later: Vec<String> = entries[pos + 1..]
        .iter()
        .filter(|l| {
            l.state != State::Inactive
                && l.record
                    .funcs
                    .iter()
                    .any(|lf| e.record.funcs.iter().any(|f| f.site == lf.site))
        })
        .map(|l| l.record.id.clone())
        .collect();
    Err(Error::Registry {
        pid,
        id: e.record.id.clone(),
        reason: format!(
            "functions {} are patched again by {}; revert in last-in-first-out order ({} first)",
            e.overridden.join(", "),
            later.join(", "),
            later.last().cloned().unwrap_or_default()
        ),
    })
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
