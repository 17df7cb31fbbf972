//! The kernel backend: livepatch modules (`klp`) applied, listed and
//! reverted inside the running kernel.
//!
//! Model: a kernel patch is a livepatch module (`.ko` with
//! `MODULE_INFO(livepatch, "Y")`) whose init calls `klp_enable_patch()`. The
//! data flow is [`read`] (check the file: livepatch flag, name, `vermagic`
//! against the running kernel) → load (`finit_module`) → transition (poll
//! `/sys/kernel/livepatch/<name>/transition` until every task has switched,
//! see [`sysfs`]) → record (a JSON file per patch under
//! [`Options::registry`], for `list`'s "when, from which file").
//!
//! Invariants:
//! - apply either ends with the patch enabled and its transition complete,
//!   or with the patch gone (transition reversed, module removed): a stalled
//!   transition is reversed after [`Options::timeout`] and reported as
//!   [`Error::KernelStalled`] naming each stalled task and its stack;
//! - revert disables (waits for the reverse transition the same way; on
//!   timeout re-enables and reports), then removes the module;
//! - after an atomic-replace (`.replace = true`) patch, the patches it
//!   replaced are gone from sysfs; their modules are removed too and reported.
//!
//! The other method, [`jump`], loads the same module rewritten for the
//! stop-all-CPUs core (`docs/kernel-jump.md`).
//!
//! No `unsafe` here: module loading goes through `nix::kmod`.

pub mod jump;
pub mod read;
pub mod sysfs;

use crate::Error;
use nix::kmod::{DeleteModuleFlags, ModuleInitFlags, delete_module, finit_module};
use serde::{Deserialize, Serialize};
use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

pub use read::{ModuleInfo, read_module};
pub use sysfs::{ObjectState, PatchState, StalledTask, Sysfs};

/// How to apply or revert.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long a transition may take before it is reversed.
    pub timeout: Duration,
    /// Where the kernel's livepatch and proc trees are.
    pub sysfs: Sysfs,
    /// Directory of hotfix's records of applied kernel patches.
    pub registry: PathBuf,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            timeout: Duration::from_secs(30),
            sysfs: Sysfs::default(),
            registry: PathBuf::from("/run/hotfix/kernel"),
        }
    }
}

/// hotfix's own record of an applied kernel patch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Patch (module) name.
    pub name: String,
    /// The module file it was loaded from.
    pub path: PathBuf,
    /// `description=` of the module.
    pub description: String,
    /// When it was applied (seconds since the epoch).
    pub applied_at: u64,
    /// Time taken by `finit_module` (the patch's init, which starts the
    /// transition), in microseconds.
    pub load_us: u64,
    /// Time from the end of `finit_module` to the end of the transition,
    /// in microseconds.
    pub transition_us: u64,
    /// `klp` or `jump` (see [`jump`]).
    #[serde(default = "klp_method")]
    pub method: String,
    /// Jump method: the stop window reported by the core, in nanoseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_window_ns: Option<u64>,
}

fn klp_method() -> String {
    "klp".into()
}

/// What `apply` did.
#[derive(Debug, Clone, Serialize)]
pub struct Applied {
    /// The record written.
    pub record: Record,
    /// The kernel's view of the patch after the transition.
    pub state: PatchState,
    /// Patches this one replaced (atomic replace); their modules were removed.
    pub replaced: Vec<String>,
}

/// One line of `list`.
#[derive(Debug, Clone, Serialize)]
pub struct Listed {
    /// `klp` or `jump`.
    pub method: &'static str,
    /// The kernel's view (for `jump`: the core's, as one enabled patch).
    pub state: PatchState,
    /// hotfix's record, when hotfix applied it.
    pub record: Option<Record>,
}

/// What `revert` did.
#[derive(Debug, Clone, Serialize)]
pub struct Reverted {
    /// Patch name.
    pub name: String,
    /// Time of the disable transition, in microseconds.
    pub transition_us: u64,
}

/// The release of the running kernel (`uname -r`, read from
/// `/proc/sys/kernel/osrelease`).
pub fn running_release() -> Result<String, Error> {
    let path = Path::new("/proc/sys/kernel/osrelease");
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })
}

/// Polls the patch's `transition` until it reads 0, or the timeout.
/// `Ok(true)` when done; `Ok(false)` on timeout.
fn wait_transition(sysfs: &Sysfs, name: &str, timeout: Duration) -> Result<bool, Error> {
    let start = Instant::now();
    loop {
        match sysfs.in_transition(name) {
            Ok(false) => return Ok(true),
            Ok(true) => {}
            // A disabled patch's sysfs directory goes away (ENODEV/ENOENT
            // while it is being removed): its transition is over.
            Err(_) if !sysfs.exists(name) => return Ok(true),
            Err(Error::Io { source, .. })
                if matches!(source.raw_os_error(), Some(libc::ENODEV | libc::ENOENT)) =>
            {
                return Ok(true);
            }
            Err(e) => return Err(e),
        }
        if start.elapsed() >= timeout {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Removes a module, retrying while the kernel still holds it (livepatch
/// releases a disabled patch asynchronously).
fn remove_module(name: &str) -> Result<(), Error> {
    let cname = CString::new(name).map_err(|_| Error::KernelOp {
        name: name.to_string(),
        op: "remove module",
        reason: "name contains NUL".into(),
    })?;
    let start = Instant::now();
    loop {
        match delete_module(&cname, DeleteModuleFlags::O_NONBLOCK) {
            Ok(()) => return Ok(()),
            Err(nix::errno::Errno::ENOENT) => return Ok(()),
            Err(e @ (nix::errno::Errno::EBUSY | nix::errno::Errno::EAGAIN))
                if start.elapsed() < Duration::from_secs(10) =>
            {
                tracing::debug!(module = name, error = %e, "module still busy; retrying");
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => {
                return Err(Error::KernelOp {
                    name: name.to_string(),
                    op: "remove module",
                    reason: e.to_string(),
                });
            }
        }
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn record_path(opts: &Options, name: &str) -> PathBuf {
    opts.registry.join(format!("{name}.json"))
}

fn write_record(opts: &Options, rec: &Record) -> Result<(), Error> {
    let io = |path: &Path, source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(&opts.registry).map_err(|e| io(&opts.registry, e))?;
    let path = record_path(opts, &rec.name);
    let json = serde_json::to_vec_pretty(rec).map_err(|e| Error::KernelOp {
        name: rec.name.clone(),
        op: "record",
        reason: e.to_string(),
    })?;
    std::fs::write(&path, json).map_err(|e| io(&path, e))
}

fn read_record(opts: &Options, name: &str) -> Option<Record> {
    let bytes = std::fs::read(record_path(opts, name)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn drop_record(opts: &Options, name: &str) {
    let _ = std::fs::remove_file(record_path(opts, name));
}

/// Reads the patch module at `path` and checks it was built for the running
/// kernel (its `vermagic` release), before anything is loaded.
pub(crate) fn read_for_running(path: &Path) -> Result<ModuleInfo, Error> {
    let info = read_module(path)?;
    let running = running_release()?;
    if info.release() != running {
        return Err(Error::KernelMismatch {
            path: path.to_path_buf(),
            vermagic: info.vermagic.clone(),
            running,
        });
    }
    Ok(info)
}

/// Applies a livepatch module: load it, wait for its transition, record it.
pub fn apply(path: &Path, opts: &Options) -> Result<Applied, Error> {
    let info = read_for_running(path)?;
    let name = info.name.clone();
    let op = |op: &'static str, reason: String| Error::KernelOp {
        name: name.clone(),
        op,
        reason,
    };
    if !opts.sysfs.available() {
        return Err(op(
            "apply",
            format!(
                "{} does not exist: the running kernel has no livepatch support",
                opts.sysfs.livepatch.display()
            ),
        ));
    }
    if opts.sysfs.exists(&name) {
        return Err(op(
            "apply",
            "a livepatch of this name is applied already".into(),
        ));
    }
    let before = opts.sysfs.names()?;
    for other in &before {
        if opts.sysfs.in_transition(other)? {
            return Err(op(
                "apply",
                format!("livepatch {other} is in transition; retry when it has finished"),
            ));
        }
    }
    let file = std::fs::File::open(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let t0 = Instant::now();
    finit_module(&file, c"", ModuleInitFlags::empty()).map_err(|e| {
        op(
            "load",
            format!(
                "finit_module({}): {e} (the kernel log, dmesg, says why)",
                path.display()
            ),
        )
    })?;
    let load_us = t0.elapsed().as_micros() as u64;
    let t1 = Instant::now();
    if !wait_transition(&opts.sysfs, &name, opts.timeout)? {
        // Tasks still unpatched (state 0) block an enable transition.
        let stalled = opts.sysfs.tasks_in_state(0);
        tracing::info!(patch = %name, "transition stalled; reversing");
        opts.sysfs.set_enabled(&name, false)?;
        let grace = opts.timeout.max(Duration::from_secs(10));
        if !wait_transition(&opts.sysfs, &name, grace)? {
            return Err(op(
                "apply",
                format!(
                    "transition stalled and its reversal did not finish within {grace:?}; \
                     the patch is still loaded (see /sys/kernel/livepatch/{name})\nstalled tasks:\n{}",
                    sysfs::describe(&stalled)
                ),
            ));
        }
        remove_module(&name)?;
        return Err(Error::KernelStalled {
            name,
            action: "enable",
            timeout: opts.timeout,
            stalled: sysfs::describe(&stalled),
        });
    }
    let transition_us = t1.elapsed().as_micros() as u64;
    let state = opts.sysfs.state(&name)?;
    let mut replaced = Vec::new();
    for other in before {
        if !opts.sysfs.exists(&other) {
            remove_module(&other)?;
            drop_record(opts, &other);
            replaced.push(other);
        }
    }
    let record = Record {
        name,
        path: std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()),
        description: info.description,
        applied_at: now_secs(),
        load_us,
        transition_us,
        method: klp_method(),
        stop_window_ns: None,
    };
    write_record(opts, &record)?;
    Ok(Applied {
        record,
        state,
        replaced,
    })
}

/// Lists the livepatches of the running kernel, with hotfix's records.
pub fn list(opts: &Options) -> Result<Vec<Listed>, Error> {
    let mut out = Vec::new();
    for name in opts.sysfs.names()? {
        let state = opts.sysfs.state(&name)?;
        out.push(Listed {
            method: "klp",
            record: read_record(opts, &name),
            state,
        });
    }
    for p in jump::CoreState::read()?.patches {
        let mut objects: Vec<ObjectState> = Vec::new();
        for f in &p.funcs {
            let func = format!("{},{}", f.name, f.sympos);
            match objects.iter_mut().find(|o| o.name == f.object) {
                Some(o) => o.functions.push(func),
                None => objects.push(ObjectState {
                    name: f.object.clone(),
                    functions: vec![func],
                }),
            }
        }
        out.push(Listed {
            method: "jump",
            record: read_record(opts, &p.name),
            state: PatchState {
                name: p.name,
                enabled: true,
                transition: false,
                objects,
            },
        });
    }
    Ok(out)
}

/// The patch name meant by `arg`: a name, or a `.ko` path (its `name=`).
pub fn patch_name(arg: &str) -> Result<String, Error> {
    if arg.ends_with(".ko") && Path::new(arg).is_file() {
        return Ok(read_module(Path::new(arg))?.name);
    }
    Ok(arg.trim_end_matches(".ko").replace('-', "_"))
}

/// Reverts a livepatch: disable, wait for the transition, remove the module.
pub fn revert(name: &str, opts: &Options) -> Result<Reverted, Error> {
    let op = |op: &'static str, reason: String| Error::KernelOp {
        name: name.to_string(),
        op,
        reason,
    };
    if !opts.sysfs.exists(name) {
        let known = opts.sysfs.names()?;
        return Err(op(
            "revert",
            format!(
                "no such livepatch (applied: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ),
        ));
    }
    if opts.sysfs.in_transition(name)? {
        return Err(op(
            "revert",
            "a transition is in progress; retry later".into(),
        ));
    }
    let t0 = Instant::now();
    if opts.sysfs.state(name)?.enabled {
        opts.sysfs.set_enabled(name, false)?;
        if !wait_transition(&opts.sysfs, name, opts.timeout)? {
            // Tasks still patched (state 1) run or sleep in the new code.
            let stalled = opts.sysfs.tasks_in_state(1);
            opts.sysfs.set_enabled(name, true)?;
            let grace = opts.timeout.max(Duration::from_secs(10));
            let _ = wait_transition(&opts.sysfs, name, grace)?;
            return Err(Error::KernelStalled {
                name: name.to_string(),
                action: "disable",
                timeout: opts.timeout,
                stalled: sysfs::describe(&stalled),
            });
        }
    }
    let transition_us = t0.elapsed().as_micros() as u64;
    remove_module(name)?;
    drop_record(opts, name);
    Ok(Reverted {
        name: name.to_string(),
        transition_us,
    })
}
