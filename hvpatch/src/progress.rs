//! Progress bars of a drain on stderr (indicatif), one per VM: bytes sent
//! against guest RAM, QEMU's state and throughput. Hidden when stderr is not
//! a terminal (indicatif's default), so logs and JSON stay clean.

use crate::drain::{Observer, Pair, Report};
use crate::error::Result;
use crate::qmp::MigrationInfo;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

/// Progress bars for the pairs of one drain.
#[derive(Debug)]
pub struct Bars {
    bars: Vec<ProgressBar>,
}

impl Bars {
    /// One bar per pair, labelled with the VM's socket.
    pub fn new(pairs: &[Pair]) -> Bars {
        let multi = MultiProgress::new();
        let style = ProgressStyle::with_template(
            "{prefix:>24} {wide_bar} {bytes:>10}/{total_bytes:<10} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        let bars = pairs
            .iter()
            .map(|p| {
                let b = multi.add(ProgressBar::new(0));
                b.set_style(style.clone());
                b.set_prefix(p.vm.display().to_string());
                b.set_message("waiting");
                b
            })
            .collect();
        Bars { bars }
    }
}

impl Observer for Bars {
    fn begin(&self, index: usize, _pair: &Pair) {
        if let Some(b) = self.bars.get(index) {
            b.set_message("starting");
        }
    }

    fn progress(&self, index: usize, info: &MigrationInfo) {
        let Some(b) = self.bars.get(index) else {
            return;
        };
        if let Some(ram) = &info.ram {
            b.set_length(ram.total.max(ram.transferred));
            b.set_position(ram.transferred);
            b.set_message(format!("{} {:.0} Mbit/s", info.state(), ram.mbps));
        } else {
            b.set_message(info.state().to_string());
        }
    }

    fn end(&self, index: usize, result: &Result<Report>) {
        let Some(b) = self.bars.get(index) else {
            return;
        };
        match result {
            Ok(r) => b.finish_with_message(format!("done, downtime {} ms", r.downtime_ms)),
            Err(_) => b.abandon_with_message("failed"),
        }
    }
}
