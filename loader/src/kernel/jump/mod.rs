//! The kernel's `jump` method: the stop-all-CPUs core module
//! (`testkernels/kmod/core/hotfix_core.c`) driven from userspace.
//!
//! Model: a kernel patch is the same livepatch-shaped module as for `klp`
//! (a `struct klp_patch` whose init calls `klp_enable_patch`). For the jump
//! method the driver loads a rewritten copy of it ([`rewrite_for_jump`]):
//! - the init's call to `klp_enable_patch` becomes a call to the core's
//!   `hotfix_jmp_apply` (same signature; the name is overwritten in place, the
//!   two names have the same length);
//! - every livepatch symbol (`.klp.sym.<object>.<name>,<sympos>`,
//!   `SHN_LIVEPATCH`) becomes an absolute symbol (`SHN_ABS`) whose value is
//!   the address of that symbol in the running kernel, from `/proc/kallsyms`
//!   (the running kernel's addresses: KASLR is accounted for; `sympos` counts
//!   same-named symbols of the object in kallsyms order, as livepatch does);
//! - every `.klp.rela.*` section loses `SHF_RELA_LIVEPATCH` (and
//!   `SHF_ALLOC`), so the module loader applies it like any relocation;
//! - `.modinfo`'s `livepatch=Y` becomes `hotfixjmp=Y`: the kernel loads it as
//!   an ordinary module (no livepatch taint; works without
//!   `CONFIG_LIVEPATCH` for modules that do not need its headers).
//!
//! The core itself is loaded on first use with the kallsyms addresses of the
//! kernel internals it needs (its `ksym_<symbol>` parameters, listed in its
//! `.modinfo`). The patch module's init returns the core's verdict: `EBUSY`
//! (a function on a stack: the driver backs off and retries until the
//! timeout, then reports the task and function), `EILSEQ` (a site changed:
//! exit 4), `EPERM` (refused: NMI/entry/noinstr code...). Details come from
//! the core's `/proc/hotfix_core` (`last ...` line). Revert writes
//! `revert NAME` there (same stack check against the new functions), then
//! removes the module.
//!
//! Only code loaded now is patched: a module loaded later would run its
//! original code, so a patch whose build's expected-bytes lines name a
//! module not in `/proc/modules` is refused before anything is loaded,
//! naming the module (klp patches such a module when it loads).
//!
//! Invariants: nothing is written to the kernel before the vermagic check
//! and the rewrite succeeded; a failed apply leaves no module loaded; a
//! record (`/run/hotfix/kernel/NAME.json`, method `jump`) exists exactly for
//! the patches the core lists as applied by this driver.

mod core;
mod kallsyms;
mod rewrite;

pub use self::core::{
    CORE_NAME, CORE_PATHS, CORE_PROC, CoreFunc, CoreLast, CorePatch, CoreState, core_module_path,
    ensure_core,
};
pub use kallsyms::{KSym, Kallsyms};
pub use rewrite::{
    Resolved, core_crc, core_ksyms, expect_lines, klp_sym_names, retarget_versions,
    rewrite_for_jump,
};

use self::core::stage_expect;
use super::{Options, Record, read_for_running};
use crate::Error;
use crate::retry::{self, Attempt, Backoff, Outcome};
use nix::errno::Errno;
use nix::kmod::{ModuleInitFlags, finit_module};
use serde::Serialize;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What a jump apply did.
#[derive(Debug, Clone, Serialize)]
pub struct JumpApplied {
    /// The record written.
    pub record: Record,
    /// The core's view of the patch.
    pub patch: CorePatch,
    /// Symbols resolved from kallsyms for the patch's references.
    pub resolved: Vec<Resolved>,
    /// Load attempts (more than 1 when a function was busy).
    pub attempts: u32,
}

/// What a jump revert did.
#[derive(Debug, Clone, Serialize)]
pub struct JumpReverted {
    /// Patch name.
    pub name: String,
    /// Stop window of the revert, ns.
    pub window_ns: u64,
    /// Attempts.
    pub attempts: u32,
}

fn busy_error(
    name: &str,
    action: &'static str,
    last: Option<CoreLast>,
    timeout: Duration,
    attempts: u32,
) -> Error {
    let (pid, comm, func) =
        last.map(|l| (l.pid, l.comm, l.what))
            .unwrap_or((0, "?".into(), "?".into()));
    Error::KernelBusy {
        name: name.to_string(),
        action,
        pid,
        comm,
        func,
        timeout,
        attempts,
    }
}

/// The core's verdict on a busy attempt of `name` (operation newer than
/// sequence number `before`), logged.
fn blocker(name: &str, before: u64) -> Result<Option<CoreLast>, Error> {
    let last = CoreState::read()?.last_for(name, before).cloned();
    if let Some(l) = &last {
        tracing::debug!(patch = %name, pid = l.pid, comm = %l.comm, func = %l.what, "busy");
    }
    Ok(last)
}

/// Applies a livepatch-shaped module with the jump method.
pub fn apply(path: &Path, opts: &Options) -> Result<JumpApplied, Error> {
    let info = read_for_running(path)?;
    let name = info.name.clone();
    let op = |op: &'static str, reason: String| Error::KernelOp {
        name: name.clone(),
        op,
        reason,
    };
    if Path::new("/sys/module").join(&name).exists() {
        return Err(op(
            "apply",
            "a module of this name is loaded already (applied already?)".into(),
        ));
    }
    let image = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let expect = expect_lines(&image);
    let loaded = std::fs::read_to_string("/proc/modules").map_err(|source| Error::Io {
        path: "/proc/modules".into(),
        source,
    })?;
    if let Some(m) = unloaded_objects(&expect, &loaded).first() {
        return Err(op(
            "apply",
            format!(
                "it patches module {m}, which is not loaded: the jump method patches only \
                 code loaded now ({m} loaded later would run its original code); load {m} \
                 first, or apply with --method klp, which patches {m} when it loads"
            ),
        ));
    }
    let (copy, resolved) = prepare(path, &name, &image, opts)?;
    let outcome = retry::until_done(opts.timeout, Backoff::KERNEL, |_| {
        load_once(path, &name, &copy, &expect)
    });
    let (load_us, attempts) = match outcome {
        Ok(Outcome::Done { value, attempts }) => (value, attempts),
        Ok(Outcome::TimedOut { busy, attempts }) => {
            let _ = std::fs::remove_file(&copy);
            return Err(busy_error(&name, "apply", busy, opts.timeout, attempts));
        }
        Err(e) => {
            let _ = std::fs::remove_file(&copy);
            return Err(e);
        }
    };
    let st = CoreState::read()?;
    let patch = st
        .patches
        .iter()
        .find(|p| p.name == name)
        .cloned()
        .ok_or_else(|| op("apply", "loaded, but the core does not list it".into()))?;
    let record = Record {
        name: name.clone(),
        path: std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()),
        description: info.description,
        applied_at: patch.applied_at,
        load_us,
        transition_us: 0,
        method: "jump".into(),
        stop_window_ns: Some(patch.window_ns),
    };
    super::write_record(opts, &record)?;
    Ok(JumpApplied {
        record,
        patch,
        resolved,
        attempts,
    })
}

/// The patched objects named by the build's expected-bytes lines
/// (`OBJECT FUNCTION SYMPOS HEX`) that are neither vmlinux nor a module
/// listed in `proc_modules` (the text of `/proc/modules`), sorted.
fn unloaded_objects(expect: &[String], proc_modules: &str) -> Vec<String> {
    let loaded: HashSet<&str> = proc_modules
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let mut out: Vec<String> = expect
        .iter()
        .filter_map(|l| l.split(' ').next())
        .filter(|o| *o != "vmlinux" && !loaded.contains(o))
        .map(str::to_owned)
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Resolves what the patch and the core need from `/proc/kallsyms`, loads
/// the core if needed, and writes the rewritten module beside the registry;
/// returns that copy's path and the resolved symbols.
fn prepare(
    path: &Path,
    name: &str,
    image: &[u8],
    opts: &Options,
) -> Result<(PathBuf, Vec<Resolved>), Error> {
    let core_path = core_module_path()?;
    let core_image = std::fs::read(&core_path).map_err(|source| Error::Io {
        path: core_path.clone(),
        source,
    })?;
    // /proc/kallsyms only when something must be resolved: the patch's
    // .klp.sym references, and the core's parameters if it is not loaded.
    let mut wanted = klp_sym_names(image);
    if !Path::new(CORE_PROC).exists() {
        wanted.extend(core_ksyms(&core_path, &core_image)?);
    }
    let ksyms = if wanted.is_empty() {
        Kallsyms::default()
    } else {
        Kallsyms::read(&wanted)?
    };
    let (rewritten, resolved) = rewrite_for_jump(path, image, &ksyms, core_crc(&core_image))?;
    ensure_core(&core_path, &core_image, &ksyms)?;
    std::fs::create_dir_all(&opts.registry).map_err(|source| Error::Io {
        path: opts.registry.clone(),
        source,
    })?;
    let copy = opts.registry.join(format!("{name}.jump.ko"));
    std::fs::write(&copy, &rewritten).map_err(|source| Error::Io {
        path: copy.clone(),
        source,
    })?;
    Ok((copy, resolved))
}

/// One apply attempt: stage the expected bytes, load the rewritten module
/// `copy`; inside its init the core stops every CPU, checks every stack,
/// commits the jumps and resumes. Done: the load time in microseconds.
fn load_once(
    path: &Path,
    name: &str,
    copy: &Path,
    expect: &[String],
) -> Result<Attempt<u64, Option<CoreLast>>, Error> {
    stage_expect(name, expect)?;
    let before = CoreState::read()?.seq();
    let file = std::fs::File::open(copy).map_err(|source| Error::Io {
        path: copy.to_path_buf(),
        source,
    })?;
    let t0 = Instant::now();
    match finit_module(&file, c"", ModuleInitFlags::empty()) {
        Ok(()) => Ok(Attempt::Done(t0.elapsed().as_micros() as u64)),
        Err(Errno::EBUSY) => Ok(Attempt::Busy(blocker(name, before)?)),
        Err(e) => {
            let st = CoreState::read()?;
            let what = st
                .last_for(name, before)
                .map(|l| l.what.clone())
                .filter(|w| !w.is_empty())
                .unwrap_or_else(|| "see dmesg".into());
            let name = name.to_string();
            Err(match e {
                Errno::EPERM => Error::KernelRefused { name, reason: what },
                Errno::EILSEQ => Error::KernelSite {
                    name,
                    action: "apply",
                    reason: what,
                },
                _ => Error::KernelOp {
                    name,
                    op: "load",
                    reason: format!("finit_module({}): {e}: {what}", path.display()),
                },
            })
        }
    }
}

/// Reverts a jump patch: the core unpatches (retrying while a new function
/// is on a stack, until the timeout), then the module is removed.
pub fn revert(name: &str, opts: &Options) -> Result<JumpReverted, Error> {
    let st = CoreState::read()?;
    if !st.patches.iter().any(|p| p.name == name) {
        return Err(Error::KernelOp {
            name: name.to_string(),
            op: "revert",
            reason: "not applied with the jump method".into(),
        });
    }
    let before = match retry::until_done(opts.timeout, Backoff::KERNEL, |_| unpatch_once(name))? {
        Outcome::Done { value, attempts } => (value, attempts),
        Outcome::TimedOut { busy, attempts } => {
            return Err(busy_error(name, "revert", busy, opts.timeout, attempts));
        }
    };
    let (before, attempts) = before;
    let window_ns = CoreState::read()?
        .last_for(name, before)
        .map(|l| l.window_ns)
        .unwrap_or(0);
    super::remove_module(name)?;
    super::drop_record(opts, name);
    let _ = std::fs::remove_file(opts.registry.join(format!("{name}.jump.ko")));
    Ok(JumpReverted {
        name: name.to_string(),
        window_ns,
        attempts,
    })
}

/// One revert attempt: `revert NAME` to the core, which stops every CPU,
/// checks every stack, restores the sites and resumes. Done: the core's
/// sequence number before it.
fn unpatch_once(name: &str) -> Result<Attempt<u64, Option<CoreLast>>, Error> {
    let before = CoreState::read()?.seq();
    match std::fs::write(CORE_PROC, format!("revert {name}\n")) {
        Ok(()) => Ok(Attempt::Done(before)),
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
            Ok(Attempt::Busy(blocker(name, before)?))
        }
        Err(e) if e.raw_os_error() == Some(libc::EILSEQ) => Err(Error::KernelSite {
            name: name.to_string(),
            action: "revert",
            reason: "a patch site no longer holds the core's jump".into(),
        }),
        Err(source) => Err(Error::Io {
            path: CORE_PROC.into(),
            source,
        }),
    }
}

/// Whether `name` is a patch applied by the jump core.
pub fn is_applied(name: &str) -> bool {
    CoreState::read().is_ok_and(|s| s.patches.iter().any(|p| p.name == name))
}

#[cfg(test)]
mod tests {
    use super::unloaded_objects;

    #[test]
    fn a_patch_of_a_module_not_loaded_names_it() {
        let expect = [
            "vmlinux cmdline_proc_show 0 e8".to_owned(),
            "zram read_block_state 0 55".to_owned(),
            "hfx_x2apic x2apic_msr_read 0 48".to_owned(),
        ];
        let proc_modules = "hfx_x2apic 16384 0 - Live 0x0000000000000000 (O)\n\
                            zsmalloc 32768 0 - Live 0x0000000000000000\n";
        assert_eq!(unloaded_objects(&expect, proc_modules), ["zram"]);
        let with_zram = format!("{proc_modules}zram 36864 0 - Live 0x0000000000000000\n");
        assert!(unloaded_objects(&expect, &with_zram).is_empty());
        assert!(unloaded_objects(&[], "").is_empty());
    }
}
