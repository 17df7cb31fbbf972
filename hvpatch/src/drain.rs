//! Draining VMs off a host by live migration, driven over QMP.
//!
//! Model: a drain is a list of [`Pair`]s (source QMP socket → destination QMP
//! socket of a QEMU started with the same machine and devices plus
//! `-incoming defer`), migrated by at most `parallel` workers. One migration:
//!
//! 1. check: the source is `running` (or `paused`), the destination is
//!    `inmigrate`; nothing is changed before both checks pass;
//! 2. set up: capabilities `events` (+ `auto-converge` unless disabled) on
//!    both sides, parameters `downtime-limit` and `max-bandwidth` on the
//!    source;
//! 3. `migrate-incoming tcp:ADDR:0` on the destination (QEMU picks a free
//!    port, read back from `query-migrate`), `migrate` on the source;
//! 4. follow `query-migrate` on the source every [`POLL`] until `completed`,
//!    reporting progress to an [`Observer`];
//! 5. wait for the destination to be `running` (when the source was), take
//!    QEMU's own statistics, and quit the source QEMU (unless kept).
//!
//! Invariant: any failure after step 3 started (QEMU error, destination gone,
//! `timeout`) cancels the migration with `migrate_cancel`, waits for the
//! source to leave the migration, and checks that the VM runs on the source
//! again (issuing `cont` if it was running before and is not) before
//! returning [`Error::Migration`] with that state. A migration that completed
//! while being cancelled is reported as completed (the VM is then on the
//! destination, running). When the source completed but the destination
//! does not resume (it died loading the stream), the source — which still
//! holds the paused VM — is resumed if and only if the destination process
//! is gone; otherwise it is left paused and the error says so.

use crate::error::{Error, Result};
use crate::qmp::{Event, MigrationInfo, Qmp};
use serde::Serialize;
use serde_json::json;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Interval between two `query-migrate` polls.
pub const POLL: Duration = Duration::from_millis(50);

/// One VM to move: source and destination QMP sockets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pair {
    /// QMP socket of the source QEMU (the VM).
    pub vm: PathBuf,
    /// QMP socket of the destination QEMU (`-incoming defer`).
    pub dest: PathBuf,
}

/// How to migrate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Options {
    /// Maximum downtime QEMU may plan for (`downtime-limit`).
    pub downtime_limit: Duration,
    /// Maximum bandwidth in MiB/s (`max-bandwidth`).
    pub bandwidth_mib: u64,
    /// Deadline of one migration, from `migrate` to `completed`.
    pub timeout: Duration,
    /// Migrations in flight at once (at least 1).
    pub parallel: usize,
    /// Address the destination listens on for the migration stream.
    pub listen: String,
    /// Throttle vCPUs of a guest that dirties memory faster than it is sent.
    pub auto_converge: bool,
    /// Leave the source QEMU (paused, `postmigrate`) instead of quitting it.
    pub keep_source: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            downtime_limit: Duration::from_millis(50),
            bandwidth_mib: 10 * 1024,
            timeout: Duration::from_secs(300),
            parallel: 4,
            listen: "127.0.0.1".to_string(),
            auto_converge: true,
            keep_source: false,
        }
    }
}

/// What one completed migration cost, from QEMU's own `query-migrate`
/// statistics (source side) and events.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Source QMP socket.
    pub vm: PathBuf,
    /// Destination QMP socket.
    pub dest: PathBuf,
    /// Migration URI used.
    pub uri: String,
    /// QEMU's total time (`total-time`), ms.
    pub total_ms: u64,
    /// QEMU's setup time (`setup-time`), ms.
    pub setup_ms: u64,
    /// QEMU's downtime (`downtime`, source side: VM stopped → stream done), ms.
    pub downtime_ms: u64,
    /// Blackout seen by the guest, ms: source `STOP` event → destination
    /// `RESUME` event (both timestamps from this host's clock); `None` when
    /// an event was missing.
    pub blackout_ms: Option<f64>,
    /// Bytes sent (`ram.transferred`).
    pub transferred_bytes: u64,
    /// Guest RAM size (`ram.total`).
    pub ram_bytes: u64,
    /// Last measured dirty rate, pages per second (`ram.dirty-pages-rate`).
    pub dirty_pages_rate: u64,
    /// The same in bytes per second.
    pub dirty_bytes_rate: u64,
    /// Dirty-bitmap syncs (iterations) (`ram.dirty-sync-count`).
    pub passes: u64,
    /// Throughput in Mbit/s (`ram.mbps`).
    pub mbps: f64,
    /// Wall time of the whole drain of this VM by hotfix (checks included), ms.
    pub wall_ms: u64,
    /// Run state of the VM on the destination afterwards.
    pub dest_status: String,
    /// What became of the source QEMU: `quit` or its run state.
    pub source: String,
}

/// Receives progress of a drain (called from worker threads).
pub trait Observer: Sync {
    /// Migration of `pairs[index]` is about to start.
    fn begin(&self, index: usize, pair: &Pair) {
        let _ = (index, pair);
    }
    /// A `query-migrate` sample of `pairs[index]`.
    fn progress(&self, index: usize, info: &MigrationInfo) {
        let _ = (index, info);
    }
    /// `pairs[index]` is done.
    fn end(&self, index: usize, result: &Result<Report>) {
        let _ = (index, result);
    }
}

/// An observer that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct Quiet;
impl Observer for Quiet {}

/// Drains every pair, at most `opts.parallel` at once; one result per pair,
/// in the order of `pairs`.
pub fn drain(pairs: &[Pair], opts: &Options, obs: &dyn Observer) -> Vec<Result<Report>> {
    let next = AtomicUsize::new(0);
    let results: Vec<std::sync::Mutex<Option<Result<Report>>>> =
        pairs.iter().map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..opts.parallel.clamp(1, pairs.len().max(1)) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(pair) = pairs.get(i) else { break };
                    obs.begin(i, pair);
                    let r = migrate(pair, opts, &|info| obs.progress(i, info));
                    obs.end(i, &r);
                    if let Some(Ok(mut slot)) = results.get(i).map(|m| m.lock()) {
                        *slot = Some(r);
                    }
                }
            });
        }
    });
    results
        .into_iter()
        .zip(pairs)
        .map(|(m, p)| {
            m.into_inner().ok().flatten().unwrap_or_else(|| {
                Err(Error::Migration {
                    vm: p.vm.clone(),
                    dest: p.dest.clone(),
                    reason: "worker thread died".into(),
                    source_status: "unknown".into(),
                })
            })
        })
        .collect()
}

/// Migrates one VM (steps 1–5 of the module doc).
pub fn migrate(pair: &Pair, opts: &Options, progress: &dyn Fn(&MigrationInfo)) -> Result<Report> {
    let started = Instant::now();
    let mut src = Qmp::connect(&pair.vm)?;
    let mut dst = Qmp::connect(&pair.dest)?;
    let dest_pid = dst.peer_pid();
    // 1. check
    let st = src.query_status()?;
    let was_running = match st.status.as_str() {
        "running" => true,
        "paused" => false,
        _ => {
            return Err(Error::State {
                socket: pair.vm.clone(),
                status: st.status,
                expected: "running or paused".into(),
            });
        }
    };
    let dt = dst.query_status()?;
    if dt.status != "inmigrate" {
        return Err(Error::State {
            socket: pair.dest.clone(),
            status: dt.status,
            expected: "inmigrate (started with -incoming defer, not yet used)".into(),
        });
    }
    // 2. set up
    let caps = [("events", true), ("auto-converge", opts.auto_converge)];
    src.set_capabilities(&caps)?;
    dst.set_capabilities(&caps)?;
    src.set_parameters(json!({
        "downtime-limit": u64::try_from(opts.downtime_limit.as_millis()).unwrap_or(u64::MAX),
        "max-bandwidth": opts.bandwidth_mib.saturating_mul(1 << 20),
    }))?;
    src.take_events()?;
    // 3. start
    dst.execute_raw(
        "migrate-incoming",
        Some(json!({ "uri": format!("tcp:{}:0", opts.listen) })),
    )?;
    let port = listening_port(&mut dst)?;
    let uri = format!("tcp:{}:{port}", opts.listen);
    tracing::info!(vm = %pair.vm.display(), %uri, "migrating");
    if let Err(e) = src.execute_raw("migrate", Some(json!({ "uri": uri }))) {
        // Nothing started on the source; the destination waits in vain:
        // stop it so it does not linger.
        let _ = dst.execute_raw("quit", None);
        return Err(e);
    }
    // 4. follow
    let deadline = Instant::now() + opts.timeout;
    let mut events: Vec<Event> = Vec::new();
    let failure = loop {
        let info = match src.query_migrate() {
            Ok(i) => i,
            Err(e) => break e.to_string(),
        };
        progress(&info);
        match info.state() {
            "completed" => break String::new(),
            "failed" | "cancelled" | "cancelling" => {
                break info
                    .error_desc
                    .clone()
                    .unwrap_or_else(|| format!("migration {}", info.state()));
            }
            _ => {}
        }
        if Instant::now() >= deadline {
            break format!("not completed after {:?} (timeout)", opts.timeout);
        }
        if let Ok(ev) = src.take_events() {
            events.extend(ev);
        }
        std::thread::sleep(POLL);
    };
    if !failure.is_empty() {
        match cancel(&mut src, was_running) {
            Ok(Cancelled::Completed) => {} // raced to completion: carry on
            Ok(Cancelled::OnSource(status)) => {
                let _ = dst.execute_raw("quit", None);
                return Err(Error::Migration {
                    vm: pair.vm.clone(),
                    dest: pair.dest.clone(),
                    reason: format!("{failure}; migration cancelled"),
                    source_status: status,
                });
            }
            Err(e) => {
                return Err(Error::Migration {
                    vm: pair.vm.clone(),
                    dest: pair.dest.clone(),
                    reason: format!("{failure}; then the cancel failed: {e}"),
                    source_status: "unknown".into(),
                });
            }
        }
    }
    // 5. finish: QEMU sets `completed` a moment before it fills in the times.
    let info = final_stats(&mut src)?;
    progress(&info);
    events.extend(src.take_events()?);
    let dest_status = match wait_dest(&mut dst, was_running, Duration::from_secs(30)) {
        Ok(s) => s,
        Err(e) => return Err(dest_lost(pair, &mut src, dest_pid, was_running, &e)),
    };
    let dest_events = dst.take_events().unwrap_or_default();
    let stop = events.iter().rev().find(|e| e.name == "STOP");
    let resume = dest_events.iter().rev().find(|e| e.name == "RESUME");
    let blackout_ms = match (stop, resume) {
        (Some(s), Some(r)) => r
            .timestamp
            .duration_since(s.timestamp)
            .ok()
            .map(|d| d.as_secs_f64() * 1000.0),
        _ => None,
    };
    let source = if opts.keep_source {
        src.query_status()
            .map(|s| s.status)
            .unwrap_or_else(|e| format!("unknown ({e})"))
    } else {
        match src.execute_raw("quit", None) {
            Ok(_) | Err(Error::Io { .. }) => "quit".to_string(),
            Err(e) => format!("not quit ({e})"),
        }
    };
    let ram = info.ram.clone().unwrap_or_default();
    Ok(Report {
        vm: pair.vm.clone(),
        dest: pair.dest.clone(),
        uri,
        total_ms: info.total_time.unwrap_or(0),
        setup_ms: info.setup_time.unwrap_or(0),
        downtime_ms: info.downtime.unwrap_or(0),
        blackout_ms,
        transferred_bytes: ram.transferred,
        ram_bytes: ram.total,
        dirty_pages_rate: ram.dirty_pages_rate,
        dirty_bytes_rate: ram.dirty_pages_rate.saturating_mul(ram.page_size),
        passes: ram.dirty_sync_count,
        mbps: ram.mbps,
        wall_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        dest_status,
        source,
    })
}

/// The source completed but the destination did not take over (it died
/// loading the stream, or does not answer). The source QEMU still holds the
/// whole VM, paused (`postmigrate`). Resuming it is safe only when the
/// destination process is gone — otherwise two copies could run — so: if
/// the destination's pid no longer exists, `cont` the source; else leave it
/// paused and say so.
fn dest_lost(
    pair: &Pair,
    src: &mut Qmp,
    dest_pid: Option<i32>,
    was_running: bool,
    cause: &Error,
) -> Error {
    let gone = dest_pid.is_some_and(|p| {
        std::fs::read_to_string(format!("/proc/{p}/stat"))
            .map(|s| {
                s.rsplit(')')
                    .next()
                    .is_some_and(|r| r.trim_start().starts_with('Z'))
            })
            .unwrap_or(true)
    });
    let mut reason = format!("the source completed but the destination did not resume: {cause}");
    if gone && was_running {
        match src.execute_raw("cont", None) {
            Ok(_) => reason.push_str("; destination QEMU is gone, VM resumed on the source"),
            Err(e) => reason.push_str(&format!("; resuming the source failed: {e}")),
        }
    } else if !gone {
        reason.push_str(
            "; the destination QEMU still exists, so the source was left paused: resume it (QMP cont) only once the destination is stopped",
        );
    }
    let source_status = src
        .query_status()
        .map(|s| s.status)
        .unwrap_or_else(|e| format!("unknown ({e})"));
    Error::Migration {
        vm: pair.vm.clone(),
        dest: pair.dest.clone(),
        reason,
        source_status,
    }
}

/// The TCP port a destination listens on after `migrate-incoming tcp:ADDR:0`.
fn listening_port(dst: &mut Qmp) -> Result<u64> {
    let info = dst.query_migrate()?;
    info.socket_address
        .iter()
        .flatten()
        .find_map(|a| match &a["port"] {
            serde_json::Value::String(s) => s.parse().ok(),
            v => v.as_u64(),
        })
        .ok_or_else(|| Error::Protocol {
            socket: dst.socket().to_path_buf(),
            detail: format!(
                "query-migrate names no listening port after migrate-incoming: {:?}",
                info.socket_address
            ),
        })
}

/// `query-migrate` after completion, once QEMU has filled in its times.
fn final_stats(src: &mut Qmp) -> Result<MigrationInfo> {
    let until = Instant::now() + Duration::from_secs(2);
    loop {
        let info = src.query_migrate()?;
        if info.total_time.unwrap_or(0) > 0 || Instant::now() >= until {
            return Ok(info);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits for the destination to run the VM (or to be paused, when the source
/// was paused).
fn wait_dest(dst: &mut Qmp, was_running: bool, within: Duration) -> Result<String> {
    let until = Instant::now() + within;
    loop {
        let st = dst.query_status()?;
        let done = if was_running {
            st.status == "running"
        } else {
            st.status == "paused"
        };
        if done {
            return Ok(st.status);
        }
        if Instant::now() >= until {
            return Err(Error::State {
                socket: dst.socket().to_path_buf(),
                status: st.status,
                expected: if was_running { "running" } else { "paused" }.into(),
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Outcome of [`cancel`].
enum Cancelled {
    /// The migration completed before the cancel took effect.
    Completed,
    /// The VM stayed on the source; its run state.
    OnSource(String),
}

/// Cancels the migration and makes sure the VM runs on the source again.
fn cancel(src: &mut Qmp, was_running: bool) -> Result<Cancelled> {
    let _ = src.execute_raw("migrate_cancel", None);
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let info = src.query_migrate()?;
        match info.state() {
            "completed" => return Ok(Cancelled::Completed),
            "cancelled" | "failed" | "none" => break,
            s if Instant::now() >= until => {
                return Err(Error::Timeout {
                    socket: src.socket().to_path_buf(),
                    what: format!("end of the cancelled migration (still {s})"),
                    after: Duration::from_secs(30),
                });
            }
            _ => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    let mut st = src.query_status()?;
    if was_running && !st.running {
        tracing::warn!(socket = %src.socket().display(), status = %st.status, "VM not running after cancel: cont");
        src.execute_raw("cont", None)?;
        st = src.query_status()?;
    }
    Ok(Cancelled::OnSource(st.status))
}
