//! `hotfix apply PATCH --pid PID | --all [--timeout 10s] [--debug-dir DIR]`:
//! apply a userspace patch to a running process, or to every process that
//! maps the object the patch targets.
//!
//! Thin wrapper over [`loader::apply`] / [`loader::apply_all`]. Before any
//! target is read, the patch's signature is verified against the trust
//! directory ([`super::trust::gate`]); the outcome (or the refusal) is one
//! line of the audit log. Exit status 0 when applied; 3 when a function
//! stayed busy until the timeout; 4 on a build-id or expected-bytes mismatch
//! (nothing changed); 6 when the patch is not trusted (nothing changed); 1
//! otherwise. With `--all`, the worst status of all processes; each one is
//! reported.

use super::UsageError;
use serde::Serialize;
use std::path::PathBuf;
use std::time::Duration;

/// Arguments of `hotfix apply`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The patch file (ELF relocatable with `.hotfix.meta`).
    pub patch: PathBuf,
    /// The process to patch.
    #[arg(long, conflicts_with = "all")]
    pub pid: Option<i32>,
    /// Apply a livepatch module (`NAME.ko`) to the running kernel instead.
    #[arg(long, conflicts_with_all = ["pid", "all"])]
    pub kernel: bool,
    /// Apply a Xen live-patch payload (`NAME.livepatch`) to the running
    /// hypervisor instead (run in Dom0; see docs/xen.md).
    #[arg(long, conflicts_with_all = ["pid", "all", "kernel"])]
    pub xen: bool,
    /// With `--kernel`: `klp` (the kernel's livepatch; the default where the
    /// kernel has it) or `jump` (hotfix's stop-all-CPUs core; docs/kernel-jump.md).
    #[arg(long, requires = "kernel", value_parser = ["klp", "jump"])]
    pub method: Option<String>,
    /// With `--xen`: atomically replace every applied payload (Xen's REPLACE).
    #[arg(long, requires = "xen")]
    pub replace: bool,
    /// Patch every process mapping an object with the patch's build-id.
    #[arg(long)]
    pub all: bool,
    /// How long to retry while a function to replace is on a stack.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Root of separate debuginfo (`DIR/.build-id/xx/rest.debug`).
    #[arg(long, env = "HOTFIX_DEBUG_DIR", default_value = "/usr/lib/debug")]
    pub debug_dir: PathBuf,
    #[command(flatten)]
    pub trust: super::trust::TrustArgs,
    #[command(flatten)]
    pub audit: super::trust::AuditArgs,
}

#[derive(Serialize)]
struct AllItem {
    pid: i32,
    comm: String,
    status: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    report: Option<loader::Report>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Human text of one report.
pub fn describe(verb: &str, r: &loader::Report) -> String {
    let mut s = format!(
        "{verb} patch {} in process {}: {} function(s), {} thread(s) paused for {:.3} ms ({} attempt(s))\n",
        r.id,
        r.pid,
        r.funcs.len(),
        r.threads,
        r.pause_us as f64 / 1000.0,
        r.attempts
    );
    for f in &r.funcs {
        s.push_str(&format!(
            "  {} {:#x} -> {:#x}\n",
            f.name, f.old_addr, f.new_addr
        ));
    }
    s
}

/// The target of an apply, in words, for the audit log.
fn target_of(args: &Args) -> String {
    match (args.xen, args.kernel, args.pid) {
        (true, _, _) => "xen".into(),
        (_, true, _) => "kernel".into(),
        (_, _, Some(pid)) => format!("pid {pid}"),
        _ => "every process mapping the target".into(),
    }
}

/// Runs `hotfix apply`: usage checks, the trust gate, the apply, its record.
pub fn run(args: Args, global: super::Global) -> anyhow::Result<u8> {
    if args.replace && !args.xen {
        return Err(UsageError("--replace applies to Xen payloads only: add --xen".into()).into());
    }
    if !args.xen && !args.kernel && args.pid.is_some() == args.all {
        return Err(UsageError("give exactly one of --pid PID or --all".into()).into());
    }
    let target = target_of(&args);
    let mut audit = super::trust::Audit::open(&args.audit)?;
    let admitted = super::trust::gate(&args.patch, &target, &args.trust, &mut audit)?;
    let what = format!("apply {} to {target}", args.patch.display());
    let result = apply(args, global);
    audit.outcome("apply", what, &target, Some(&admitted), &result)?;
    result
}

fn apply(args: Args, global: super::Global) -> anyhow::Result<u8> {
    if args.xen {
        return super::xen::apply(&args.patch, args.replace, args.timeout, global);
    }
    if args.kernel {
        return super::kernel::apply_method(
            &args.patch,
            args.method.as_deref(),
            Some(args.timeout),
            global,
        );
    }
    let opts = loader::Options {
        timeout: args.timeout,
        debug_dir: args.debug_dir.clone(),
    };
    if args.pid.is_some() == args.all {
        return Err(UsageError("give exactly one of --pid PID or --all".into()).into());
    }
    let patch = loader::Patch::read(&args.patch)?;
    match (args.pid, args.all) {
        (Some(pid), false) => {
            let r = loader::apply(pid, &patch, &opts)?;
            if global.json {
                super::print_json(&r)?;
            } else {
                print!("{}", describe("applied", &r));
            }
            Ok(0)
        }
        (None, true) => {
            let outcomes = loader::apply_all(&patch, &opts)?;
            let mut worst = 0u8;
            let mut items = Vec::new();
            for o in outcomes {
                let (status, report, error) = match o.result {
                    Ok(r) => (0, Some(r), None),
                    Err(e) => (e.status() as u8, None, Some(e.to_string())),
                };
                worst = worst.max(status);
                items.push(AllItem {
                    pid: o.pid,
                    comm: o.comm,
                    status,
                    report,
                    error,
                });
            }
            if items.is_empty() {
                worst = patchgen::Status::Mismatch as u8;
            }
            if global.json {
                super::print_json(&items)?;
            } else {
                if items.is_empty() {
                    println!(
                        "no process maps an object with build-id {}",
                        patch.meta.targets[0].build_id
                    );
                }
                for i in &items {
                    match (&i.report, &i.error) {
                        (Some(r), _) => {
                            print!("{} ({}): {}", i.pid, i.comm, describe("applied", r))
                        }
                        (_, Some(e)) => {
                            println!("{} ({}): failed (status {}): {e}", i.pid, i.comm, i.status)
                        }
                        _ => {}
                    }
                }
            }
            Ok(worst)
        }
        _ => Err(UsageError("give exactly one of --pid PID or --all".into()).into()),
    }
}
