//! Benchmark of `hvpatch::drain` on local QEMU "hosts" (TCG, loopback):
//! per-VM downtime, guest blackout, total time and setup time, for idle and
//! busy 256 MB guests, 1 to 4 VMs migrated in parallel. Prints a Markdown
//! table. Run by `scripts/bench-drain` (see docs/bench-drain.md).
//!
//! Usage: bench-drain [ROUNDS] [MAX_VMS]   (defaults 3 and 4)
//! Busy guests run `vmload wss=128 rate=64` (64 MiB/s of a 128 MiB working
//! set rewritten); idle guests only print their counter every 10 ms.

#![allow(clippy::unwrap_used, clippy::panic, reason = "benchmark driver")]

#[path = "../tests/common/mod.rs"]
mod common;

use hvpatch::drain::{self, Options, Pair, Quiet};
use std::time::Duration;

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v.get(i).copied().unwrap_or(f64::NAN)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rounds: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(3);
    let max_vms: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(4);
    let Some(lab) = common::Lab::new() else {
        std::process::exit(1)
    };
    println!(
        "| guest | VMs in parallel | samples | downtime median / p90 / max (ms) | guest blackout median / max (ms) | total median (ms) | setup median (ms) | sent median (MiB) | failed |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (kind, extra) in [("idle", ""), ("busy", "vmload=wss=128,rate=64")] {
        for n in 1..=max_vms {
            let (mut down, mut black, mut total, mut setup, mut sent) =
                (vec![], vec![], vec![], vec![], vec![]);
            let mut failed = 0;
            for r in 0..rounds {
                let srcs: Vec<_> = (0..n)
                    .map(|i| lab.vm(&format!("{kind}{n}-{r}-s{i}"), false, extra))
                    .collect();
                let dsts: Vec<_> = (0..n)
                    .map(|i| lab.vm(&format!("{kind}{n}-{r}-d{i}"), true, extra))
                    .collect();
                for s in &srcs {
                    s.wait_counter(100, common::BOOT);
                }
                let pairs: Vec<Pair> = srcs
                    .iter()
                    .zip(&dsts)
                    .map(|(s, d)| Pair {
                        vm: s.qmp.clone(),
                        dest: d.qmp.clone(),
                    })
                    .collect();
                let opts = Options {
                    parallel: n,
                    timeout: Duration::from_secs(120),
                    ..Options::default()
                };
                for res in drain::drain(&pairs, &opts, &Quiet) {
                    match res {
                        Ok(rep) => {
                            down.push(rep.downtime_ms as f64);
                            black.extend(rep.blackout_ms);
                            total.push(rep.total_ms as f64);
                            setup.push(rep.setup_ms as f64);
                            sent.push(rep.transferred_bytes as f64 / f64::from(1 << 20));
                        }
                        Err(e) => {
                            eprintln!("{e}");
                            failed += 1;
                        }
                    }
                }
            }
            println!(
                "| {kind} | {n} | {} | {:.0} / {:.0} / {:.0} | {:.1} / {:.1} | {:.0} | {:.0} | {:.0} | {failed} |",
                down.len(),
                pct(&mut down, 0.5),
                pct(&mut down, 0.9),
                pct(&mut down, 1.0),
                pct(&mut black, 0.5),
                pct(&mut black, 1.0),
                pct(&mut total, 0.5),
                pct(&mut setup, 0.5),
                pct(&mut sent, 0.5),
            );
        }
    }
}
