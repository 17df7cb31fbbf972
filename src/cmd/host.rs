//! `hotfix host apply PATCH... [--plan]`: patch this host — its kernel and
//! every VMM process — live, falling back to draining its VMs to a peer when
//! a live patch is refused.
//!
//! Thin wrapper over [`hvpatch::host`]: every patch's signature is verified
//! first (exit 6 when one is not trusted, nothing read or changed); the arguments become a
//! [`hvpatch::host::Spec`], the plan is built (every patch and process read,
//! nothing changed) and printed; with `--plan` that is all. Otherwise the
//! plan runs and every step is appended to the audit log (`--audit-log`).
//! Exit status: 0 when the patches are applied live or the fallback
//! completed; 3 when a live patch was unsafe and there was no peer to drain
//! to; 4 when a patch does not match its target (nothing else is tried); 1
//! on other failures (a failed drain leaves that VM running here).

use anyhow::Result;
use hvpatch::host::{self, Spec};
use std::path::PathBuf;
use std::time::Duration;

/// Arguments of `hotfix host`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: HostCommand,
}

#[derive(Debug, clap::Subcommand)]
enum HostCommand {
    /// Apply patches to this host live; drain its VMs when one is refused.
    Apply(ApplyArgs),
}

/// Arguments of `hotfix host apply`.
#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    /// Patch files: hotfix process patches, or kernel livepatch modules (.ko).
    #[arg(required = true)]
    pub patches: Vec<PathBuf>,
    /// Print the plan (every step, live and fallback) and do nothing.
    #[arg(long)]
    pub plan: bool,
    /// QMP socket of a VM of this host (its QEMU is a VMM process to patch).
    #[arg(long = "vm", value_name = "QMP_SOCKET", num_args = 1..)]
    pub vms: Vec<PathBuf>,
    /// Another VMM process of this host to patch.
    #[arg(long = "pid", value_name = "PID", num_args = 1..)]
    pub pids: Vec<i32>,
    /// Peer destination (QMP socket, -incoming defer) of the VM at the same
    /// position, used when a live patch is refused.
    #[arg(long = "peer", value_name = "DEST", num_args = 1..)]
    pub peers: Vec<PathBuf>,
    /// Command updating the idle host after the drain (run by `sh -c`).
    #[arg(long, value_name = "COMMAND")]
    pub update: Option<String>,
    /// Destination on this host to bring the VM at the same position back to
    /// after the update (may be started by the update command).
    #[arg(long = "back", value_name = "DEST", num_args = 1..)]
    pub back: Vec<PathBuf>,
    /// How long each live patch retries while a function is busy.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Append-only audit log (JSON lines, hash-chained).
    #[arg(long, env = "HOTFIX_AUDIT_LOG", default_value = hvpatch::audit::DEFAULT_PATH)]
    pub audit_log: PathBuf,
    #[command(flatten)]
    pub trust: super::trust::TrustArgs,
    /// Largest downtime QEMU may plan for when draining, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 50)]
    pub downtime_limit: u64,
    /// Bandwidth limit of each migration, in MiB/s.
    #[arg(long, value_name = "MIB_S", default_value_t = 10240)]
    pub bandwidth: u64,
    /// Give up a migration (cancel, VM stays here) after this many seconds.
    #[arg(long, value_name = "S", default_value_t = 300)]
    pub drain_timeout: u64,
}

/// Runs `hotfix host`.
pub fn run(args: Args, global: super::Global) -> Result<u8> {
    let HostCommand::Apply(a) = args.command;
    // Every patch is verified before the plan reads any target.
    let mut audit = super::trust::Audit::open(&super::trust::AuditArgs {
        audit_log: a.audit_log.clone(),
    })?;
    for p in &a.patches {
        super::trust::gate(p, "host", &a.trust, &mut audit)?;
    }
    let spec = Spec {
        patches: a.patches,
        vms: a.vms,
        pids: a.pids,
        peers: a.peers,
        update: a.update,
        back: a.back,
        live_timeout: a.timeout,
        drain: hvpatch::drain::Options {
            downtime_limit: Duration::from_millis(a.downtime_limit),
            bandwidth_mib: a.bandwidth.max(1),
            timeout: Duration::from_secs(a.drain_timeout.max(1)),
            ..hvpatch::drain::Options::default()
        },
    };
    let plan = host::plan(&spec)?;
    if a.plan {
        if global.json {
            super::print_json(&serde_json::json!({ "plan": plan }))?;
        } else {
            print!("{plan}");
        }
        return Ok(0);
    }
    if !global.json {
        print!("{plan}");
    }
    let mut log = hvpatch::audit::Log::open(&a.audit_log)?;
    let pairs: Vec<hvpatch::drain::Pair> = spec
        .vms
        .iter()
        .zip(&spec.peers)
        .map(|(vm, dest)| hvpatch::drain::Pair {
            vm: vm.clone(),
            dest: dest.clone(),
        })
        .collect();
    let bars = hvpatch::progress::Bars::new(&pairs);
    let outcome = host::run(&plan, &spec, &mut log, &bars)?;
    drop(bars);
    if global.json {
        super::print_json(&serde_json::json!({ "plan": plan, "outcome": outcome }))?;
    } else {
        for s in &outcome.steps {
            println!("{}: {} {}", s.step, s.result, s.detail);
        }
        println!(
            "host {}: {} (audit log {})",
            plan.host,
            if outcome.mode == "live" {
                "every patch applied live"
            } else {
                "VMs drained and host updated"
            },
            a.audit_log.display()
        );
    }
    Ok(0)
}
