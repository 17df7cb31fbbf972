//! Steps 3 to 5 of apply and revert: stop every thread, check every stack,
//! commit, resume — retried with backoff while a function is busy
//! ([`when_idle`], through the one loop of [`crate::retry`]). The commit
//! writes the sites (entry jumps, or restored entries) and, for a patch
//! switched through slots, the ONE write of the slot page.
//!
//! Model: a `/proc/PID/mem` write within one page is done by the kernel
//! after it has pinned that page, so a kill of hotfix cannot split it. Sites
//! on one page are therefore written in one write ([`write_sites`]); with a
//! switch the sites are written first, while every slot still leads to the
//! old code through its detour, and [`flip`] then moves every slot at once:
//! the commit point. Revert runs the same steps backwards.
//!
//! Invariants: nothing is written unless every thread is stopped and no
//! stack is inside a busy range; the live bytes of every site are re-read
//! under the stop before the first write; a busy attempt changes nothing and
//! resumes every thread before backing off.

use crate::check::{Busy, BusyRange, Unwinder};
use crate::error::{Error, Result};
use crate::fault::fault;
use crate::freeze::{self, Frozen};
use crate::inject::{self, Gadget};
use crate::mem::{self, PAGE};
use crate::plan::Plan;
use crate::registry::{Entry, FuncRecord, Record};
use crate::retry::{self, Attempt, Backoff, Outcome};
use crate::target::read_maps;
use std::time::Duration;

/// What a committed attempt did.
#[derive(Debug)]
pub struct Switched<T> {
    /// What the commit returned.
    pub value: T,
    /// Threads stopped.
    pub threads: usize,
    /// Pause window: first thread stopped to last resumed.
    pub pause: Duration,
}

/// `stop -> check -> commit -> resume`, retried with backoff until no
/// thread's stack is in `ranges` or `timeout` passes. `commit` runs with
/// every thread stopped and checked; its error resumes the target and ends
/// the loop. Failure-injection points `[frozen]` and `[checked]`.
pub fn when_idle<T>(
    pid: i32,
    unwinder: &mut Unwinder,
    ranges: &[BusyRange],
    timeout: Duration,
    mut commit: impl FnMut(&mut Frozen) -> Result<T>,
) -> Result<Outcome<Switched<T>, Busy>> {
    retry::until_done(timeout, Backoff::PROCESS, |attempt| {
        let mut frozen = freeze::freeze(pid)?;
        fault("frozen");
        let maps = read_maps(pid)?;
        if let Some(b) = unwinder.check(&frozen.threads, &maps, ranges) {
            drop(frozen);
            tracing::debug!("attempt {attempt}: thread {} busy in {}", b.tid, b.label);
            return Ok(Attempt::Busy(b));
        }
        fault("checked");
        let value = commit(&mut frozen)?;
        let threads = frozen.threads.len();
        let pause = frozen.resume();
        Ok(Attempt::Done(Switched {
            value,
            threads,
            pause,
        }))
    })
}

/// What apply must find idle: each replaced function, the new code of the
/// patch it stacks on, and any earlier patch's detour of it (a thread there
/// runs the old function).
pub fn apply_ranges(plan: &Plan, entries: &[Entry]) -> Vec<BusyRange> {
    let mut ranges = Vec::new();
    for p in &plan.funcs {
        ranges.push(BusyRange {
            start: p.old_addr,
            end: p.end,
            label: p.name.clone(),
        });
        if let Some((a, s)) = p.prev {
            ranges.push(BusyRange {
                start: a,
                end: a.saturating_add(s),
                label: format!("{} (previous patch)", p.name),
            });
        }
        for e in entries {
            for f in e.record.funcs.iter().filter(|f| f.site == p.site) {
                if let Some((a, s)) = f.detour {
                    ranges.push(BusyRange {
                        start: a,
                        end: a.saturating_add(s),
                        label: format!("{} (detour of patch {})", p.name, e.record.id),
                    });
                }
            }
        }
    }
    ranges
}

/// Apply's commit: re-verify every site's live bytes, write the entry jumps
/// (`[jump-N]`), and with a switch flip every slot to the new code
/// (`[switched]`).
pub fn switch_in(pid: i32, writer: &mem::Writer, plan: &Plan, rec: &Record) -> Result<()> {
    for (p, f) in plan.funcs.iter().zip(&rec.funcs) {
        let live = mem::read_vec(pid, p.site, p.saved.len())?;
        if live != p.saved {
            return Err(Error::ExpectedBytes {
                pid,
                func: f.name.clone(),
                addr: p.old_addr,
                object: f.object.clone(),
                reason: "live bytes changed while applying (another patcher?)".into(),
            });
        }
    }
    let sites: Vec<(u64, Vec<u8>)> = rec.funcs.iter().map(|f| (f.site, f.jump_bytes())).collect();
    write_sites(pid, writer, &sites, "jump")?;
    if plan.switch {
        // The commit point: one write of the slot page.
        flip(pid, writer, rec, |f| f.new_addr)?;
        fault("switched");
    }
    Ok(())
}

/// Revert's commit: with a switch flip every slot back to its detour
/// (`[unswitched]`), restore every entry that holds this patch's jump
/// (`[restore-N]`), unmap the patch through a stopped thread.
pub fn switch_out(
    pid: i32,
    writer: &mem::Writer,
    gadget: &Gadget,
    rec: &Record,
    frozen: &mut Frozen,
) -> Result<()> {
    if rec.funcs.iter().any(|f| f.slot.is_some()) {
        // The commit point: every function back to its detour at once.
        flip(pid, writer, rec, |f| {
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
    write_sites(pid, writer, &sites, "restore")?;
    if let Some(t) = frozen.threads.first_mut() {
        inject::munmap(pid, t, gadget, rec.base, rec.size)?;
    }
    Ok(())
}

/// Writes the bytes of every site (jumps, or restored entries) while all
/// threads are stopped, then fires the fault points `STEP-1..N`.
///
/// When all sites lie within one page they are written by ONE write of the
/// page range they span (the unchanged bytes between them rewritten as read
/// under the stop), so the target gets either every site or none. Sites
/// spread over several pages are written one by one (each site in one
/// write); that only happens with a switch, where every such state runs the
/// old code (see docs/loader.md).
pub fn write_sites(
    pid: i32,
    writer: &mem::Writer,
    sites: &[(u64, Vec<u8>)],
    step: &str,
) -> Result<()> {
    let lo = sites.iter().map(|(a, _)| *a).min();
    let hi = sites
        .iter()
        .map(|(a, b)| a.saturating_add(b.len() as u64))
        .max();
    if let (Some(lo), Some(hi)) = (lo, hi)
        && sites.len() > 1
        && lo / PAGE == (hi - 1) / PAGE
    {
        let mut span = mem::read_vec(pid, lo, (hi - lo) as usize)?;
        for (a, b) in sites {
            patchgen::bytes::write_at(&mut span, a - lo, b).map_err(|e| Error::Process {
                pid,
                reason: format!("site {a:#x}: {e}"),
            })?;
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
pub fn flip(
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
        slots.iter().map(|s| s.0.saturating_add(8)).max(),
    ) else {
        return Ok(());
    };
    let reg_err = |reason: String| Error::Registry {
        pid,
        id: rec.id.clone(),
        reason,
    };
    if lo / PAGE != (hi - 1) / PAGE {
        return Err(reg_err(format!(
            "slots {lo:#x}..{hi:#x} are not in one page"
        )));
    }
    let mut buf = mem::read_vec(pid, lo, (hi - lo) as usize)?;
    for (a, v) in slots {
        patchgen::bytes::write_at(&mut buf, a - lo, &v.to_le_bytes())
            .map_err(|e| reg_err(format!("slot {a:#x}: {e}")))?;
    }
    writer.write(lo, &buf)
}
