//! `hotfix drain --vm QMP_SOCKET... --to DEST...`: move VMs off this host by
//! live migration, and report what each move cost.
//!
//! Thin wrapper over [`hvpatch::drain`]: the i-th `--vm` goes to the i-th
//! `--to` (the QMP socket of a QEMU started with the same machine and devices
//! plus `-incoming defer`, e.g. by `scripts/vm -I`). Arguments are validated
//! into a list of pairs before any socket is touched. Progress bars on stderr
//! while it runs; human text or one JSON document at the end. Exit status 0
//! when every VM moved; otherwise each failure is printed (the VM named, the
//! migration cancelled, the VM still running on the source) and the status is
//! that of the failures (1, or 2 for inconsistent arguments).

use anyhow::Result;
use hvpatch::drain::{self, Options, Pair, Report};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Duration;

/// Arguments of `hotfix drain`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// QMP socket of a VM to move (repeatable; several values allowed).
    #[arg(long = "vm", value_name = "QMP_SOCKET", required = true, num_args = 1..)]
    pub vm: Vec<PathBuf>,
    /// QMP socket of the destination QEMU of the VM at the same position
    /// (started with `-incoming defer` and the same machine and devices).
    #[arg(long = "to", value_name = "DEST", required = true, num_args = 1..)]
    pub to: Vec<PathBuf>,
    /// Migrations in flight at once.
    #[arg(long, value_name = "N", default_value_t = 4,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub parallel: u16,
    /// Largest downtime QEMU may plan for, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 50)]
    pub downtime_limit: u64,
    /// Bandwidth limit of each migration, in MiB/s.
    #[arg(long, value_name = "MIB_S", default_value_t = 10240,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub bandwidth: u64,
    /// Give up (cancel, VM stays on the source) after this many seconds per VM.
    #[arg(long, value_name = "S", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: u64,
    /// Address the destinations listen on for the migration stream.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1")]
    pub listen: String,
    /// Do not throttle guests that dirty memory faster than it is sent.
    #[arg(long)]
    pub no_auto_converge: bool,
    /// Leave each source QEMU paused after its VM moved instead of quitting it.
    #[arg(long)]
    pub keep_source: bool,
}

impl Args {
    /// Validates the arguments into pairs and options (touches nothing).
    pub fn plan(&self) -> Result<(Vec<Pair>, Options), super::UsageError> {
        if self.vm.len() != self.to.len() {
            return Err(super::UsageError(format!(
                "{} --vm socket(s) but {} --to destination(s): give one destination per VM, in the same order",
                self.vm.len(),
                self.to.len()
            )));
        }
        let mut seen = std::collections::HashSet::new();
        for p in self.vm.iter().chain(&self.to) {
            if !seen.insert(p) {
                return Err(super::UsageError(format!(
                    "QMP socket {} is given twice",
                    p.display()
                )));
            }
        }
        let pairs = self
            .vm
            .iter()
            .zip(&self.to)
            .map(|(vm, dest)| Pair {
                vm: vm.clone(),
                dest: dest.clone(),
            })
            .collect();
        let opts = Options {
            downtime_limit: Duration::from_millis(self.downtime_limit),
            bandwidth_mib: self.bandwidth,
            timeout: Duration::from_secs(self.timeout),
            parallel: usize::from(self.parallel),
            listen: self.listen.clone(),
            auto_converge: !self.no_auto_converge,
            keep_source: self.keep_source,
        };
        Ok((pairs, opts))
    }
}

/// One VM's line of the JSON document.
#[derive(Debug, Serialize)]
struct Entry<'a> {
    ok: bool,
    vm: &'a PathBuf,
    dest: &'a PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    report: Option<&'a Report>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Runs `hotfix drain`.
pub fn run(args: Args, global: super::Global) -> Result<u8> {
    let (pairs, opts) = args.plan()?;
    let bars = hvpatch::progress::Bars::new(&pairs);
    let results = drain::drain(&pairs, &opts, &bars);
    drop(bars);
    let mut status = 0u8;
    for r in &results {
        if let Err(e) = r {
            eprintln!("hotfix: error: {e}");
            status = status.max(e.status() as u8);
        }
    }
    if global.json {
        let entries: Vec<Entry<'_>> = pairs
            .iter()
            .zip(&results)
            .map(|(p, r)| Entry {
                ok: r.is_ok(),
                vm: &p.vm,
                dest: &p.dest,
                report: r.as_ref().ok(),
                error: r.as_ref().err().map(ToString::to_string),
            })
            .collect();
        super::print_json(&serde_json::json!({ "vms": entries }))?;
    } else {
        for r in results.iter().flatten() {
            println!("{}", human(r));
        }
    }
    Ok(status)
}

/// One line per moved VM.
pub fn human(r: &Report) -> String {
    let blackout = r
        .blackout_ms
        .map(|b| format!(", guest blackout {b:.1} ms"))
        .unwrap_or_default();
    format!(
        "{} -> {}: moved in {} ms (setup {} ms), downtime {} ms{blackout}; {:.1} MiB sent of {} MiB RAM, {} passes, dirty rate {} pages/s ({:.1} MiB/s); source {}",
        r.vm.display(),
        r.dest.display(),
        r.total_ms,
        r.setup_ms,
        r.downtime_ms,
        r.transferred_bytes as f64 / f64::from(1 << 20),
        r.ram_bytes >> 20,
        r.passes,
        r.dirty_pages_rate,
        r.dirty_bytes_rate as f64 / f64::from(1 << 20),
        r.source,
    )
}
