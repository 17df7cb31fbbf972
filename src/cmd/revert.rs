//! `hotfix revert PATCH_ID --pid PID [--timeout 10s]`: undo a patch applied
//! to a running process (last-in-first-out per function).
//!
//! Thin wrapper over [`loader::revert`]; the outcome is one line of the
//! audit log. Exit status 0 when reverted; 3 when
//! the patch's code stayed on a stack until the timeout; 1 otherwise (not
//! applied, or a later patch is stacked on it).

use std::time::Duration;

/// Arguments of `hotfix revert`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The patch id (see `hotfix list --pid PID`).
    pub id: String,
    /// The process.
    #[arg(long, required_unless_present_any = ["kernel", "xen"], conflicts_with_all = ["kernel", "xen"])]
    pub pid: Option<i32>,
    /// Revert a Xen hypervisor payload instead (PATCH_ID: its name; only the
    /// top of the applied stack), then unload it (run in Dom0).
    #[arg(long, conflicts_with = "kernel")]
    pub xen: bool,
    /// Revert a livepatch of the running kernel instead (PATCH_ID: its
    /// name or its `.ko` file).
    #[arg(long)]
    pub kernel: bool,
    /// How long to retry while the patch's code is on a stack.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    #[command(flatten)]
    pub audit: super::trust::AuditArgs,
}

/// Runs `hotfix revert`, recording its outcome in the audit log.
pub fn run(args: Args, global: super::Global) -> anyhow::Result<u8> {
    let target = match (args.xen, args.pid) {
        (true, _) => "xen".to_string(),
        (_, Some(pid)) => format!("pid {pid}"),
        _ => "kernel".to_string(),
    };
    let mut audit = super::trust::Audit::open(&args.audit)?;
    let what = format!("revert {} from {target}", args.id);
    let result = revert(args, global);
    audit.outcome("revert", what, &target, None, &result)?;
    result
}

fn revert(args: Args, global: super::Global) -> anyhow::Result<u8> {
    let opts = loader::Options {
        timeout: args.timeout,
        ..loader::Options::default()
    };
    if args.xen {
        return super::xen::revert(&args.id, args.timeout, global);
    }
    let Some(pid) = args.pid else {
        return super::kernel::revert(&args.id, Some(args.timeout), global);
    };
    let r = loader::revert(pid, &args.id, &opts)?;
    if global.json {
        super::print_json(&r)?;
    } else {
        print!("{}", super::apply::describe("reverted", &r));
    }
    Ok(0)
}
