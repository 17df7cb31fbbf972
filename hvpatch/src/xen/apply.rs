//! Applying, replacing and reverting payloads, as `xen-livepatch` does but
//! with every refusal checked before the hypervisor changes state.
//!
//! Apply plan: read the payload; compare its `.livepatch.xen_depends` with the
//! running hypervisor's build-id (mismatch: exit 4, nothing sent); refuse a
//! name already loaded; upload (Xen verifies the ELF, CHECKED); schedule
//! APPLY (or REPLACE); poll GET until the action is no longer `-EAGAIN`.
//! Whenever Xen refuses after the upload (depends mismatch, failed
//! expectations, hooks), the payload is unloaded again before the error is
//! returned, so a refusal always leaves the hypervisor as it was.
//!
//! Revert plan: only the top of the applied stack can be reverted (Xen
//! enforces this and refuses with `EBUSY`; hotfix reports it as such); the
//! reverted payload is then unloaded. REPLACE reverts every applied payload
//! and applies the new one in one stop; the replaced payloads are unloaded.
//!
//! Quiesce: Xen stops every CPU for an action and gives up after its
//! timeout (30 ms by default) with `-EBUSY`, having changed nothing; hotfix
//! then retries with twice the timeout (up to 1 s) until its own `--timeout`,
//! and reports "unsafe now" (exit 3) when it never succeeds.
//!
//! Timing: Xen does not report how long an action took; [`Outcome::elapsed`]
//! is measured in Dom0 from the ACTION hypercall to the first GET that sees
//! it finished, polling every [`POLL`] — an upper bound on the hypervisor's
//! own stop-the-world time.

use super::abi;
use super::error::{Error, Result};
use super::payload::Payload;
use super::sysctl::{Hypervisor, Listed, Status, errno_text};
use serde::Serialize;
use std::path::Path;
use std::time::{Duration, Instant};

/// Interval between GETs while an action runs.
pub const POLL: Duration = Duration::from_micros(200);

/// Options of an apply.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// REPLACE instead of APPLY: atomically revert every applied payload.
    pub replace: bool,
    /// Upper bound Xen gets for quiescing the CPUs (ns); 0: its default (30 ms).
    pub xen_timeout_ns: u32,
    /// How long hotfix polls for completion.
    pub wait: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            replace: false,
            xen_timeout_ns: 0,
            wait: Duration::from_secs(30),
        }
    }
}

/// The result of an apply, replace or revert.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// The payload name.
    pub name: String,
    /// `apply`, `replace` or `revert`.
    pub action: &'static str,
    /// State after the action (`APPLIED`, or `UNLOADED` after a revert).
    pub state: String,
    /// Time from the ACTION hypercall until Xen reported completion.
    #[serde(serialize_with = "ser_micros")]
    pub elapsed: Duration,
    /// Functions the payload replaces.
    pub functions: Vec<String>,
    /// Payloads REPLACE reverted and hotfix then unloaded.
    pub replaced: Vec<String>,
    /// The hypervisor build-id.
    pub hypervisor: String,
    /// The payload's own build-id (apply only).
    pub build_id: Option<String>,
}

fn ser_micros<S: serde::Serializer>(d: &Duration, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_micros() as u64)
}

/// Polls until `name`'s action finished; returns the final status and the
/// time since `started`.
fn wait(
    hv: &Hypervisor,
    name: &str,
    action: &'static str,
    started: Instant,
    limit: Duration,
) -> Result<(Status, Duration)> {
    loop {
        let st = hv.get(name)?.ok_or_else(|| Error::NotLoaded {
            name: name.to_string(),
        })?;
        if !st.in_progress() {
            return Ok((st, started.elapsed()));
        }
        if started.elapsed() > limit {
            return Err(Error::Timeout {
                name: name.to_string(),
                action,
                after: started.elapsed(),
                state: abi::state_name(st.state).to_string(),
            });
        }
        std::thread::sleep(POLL);
    }
}

/// The last attempt of an action that [`act`] drove to completion.
struct Attempted {
    status: Status,
    elapsed: Duration,
    attempts: u32,
}

/// Xen's default quiesce timeout (`livepatch_work.timeout` when 0 is passed).
const XEN_DEFAULT_TIMEOUT_NS: u32 = 30_000_000;
/// The largest quiesce timeout hotfix asks for when retrying.
const XEN_MAX_TIMEOUT_NS: u32 = 1_000_000_000;

/// Issues action `cmd` on `name` and polls until Xen finished it. When Xen
/// could not stop every CPU within its quiesce timeout (the action ends with
/// `-EBUSY` and changed nothing), tries again with twice the timeout after a
/// short back-off, until `opts.wait` has passed. A synchronous refusal of the
/// ACTION hypercall is returned as is.
fn act(
    hv: &Hypervisor,
    name: &str,
    cmd: u32,
    action: &'static str,
    opts: Options,
) -> Result<Attempted> {
    let first = Instant::now();
    let mut timeout = opts.xen_timeout_ns;
    let mut attempts = 0;
    loop {
        let started = Instant::now();
        hv.action(name, cmd, timeout, action)?;
        attempts += 1;
        // Polling gets at least 5 s whatever the retry budget: an action in
        // flight is always waited for, so its outcome is known.
        let (status, elapsed) = wait(
            hv,
            name,
            action,
            started,
            opts.wait.max(Duration::from_secs(5)),
        )?;
        if status.rc == -libc::EBUSY && first.elapsed() < opts.wait {
            timeout = timeout
                .max(XEN_DEFAULT_TIMEOUT_NS)
                .saturating_mul(2)
                .min(XEN_MAX_TIMEOUT_NS);
            tracing::info!(%name, action, attempts, timeout_ns = timeout, "Xen could not quiesce the CPUs in time; retrying");
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        return Ok(Attempted {
            status,
            elapsed,
            attempts,
        });
    }
}

/// Unloads `name` (state CHECKED) and waits until it is gone.
fn unload(hv: &Hypervisor, name: &str) -> Result<()> {
    hv.action(name, abi::ACTION_UNLOAD, 0, "unload")
}

/// Unloads a payload that was just uploaded and then refused; returns whether
/// that worked (so the error can say nothing changed).
fn roll_back(hv: &Hypervisor, name: &str) -> bool {
    match unload(hv, name) {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(%name, error = %e, "could not unload refused payload");
            false
        }
    }
}

/// Applies (or with `opts.replace`, replaces with) the payload at `path`.
pub fn apply(hv: &Hypervisor, path: &Path, opts: Options) -> Result<Outcome> {
    let payload = Payload::read(path)?;
    apply_payload(hv, &payload, opts)
}

/// Applies an already read payload.
pub fn apply_payload(hv: &Hypervisor, p: &Payload, opts: Options) -> Result<Outcome> {
    let running = hv.build_id()?;
    if p.xen_depends.as_deref() != Some(running.as_str()) {
        return Err(Error::BuildIdMismatch {
            path: p.path.clone(),
            payload: p.xen_depends.clone().unwrap_or_else(|| "none".into()),
            running,
        });
    }
    if let Some(st) = hv.get(&p.name)? {
        return Err(Error::AlreadyLoaded {
            name: p.name.clone(),
            state: abi::state_name(st.state).into(),
        });
    }
    let before = hv.list()?;
    let before_applied = before.iter().filter(|l| l.state == "APPLIED").count();
    hv.upload(&p.name, &p.bytes)?;
    let (cmd, action) = if opts.replace {
        (abi::ACTION_REPLACE, "replace")
    } else {
        (abi::ACTION_APPLY, "apply")
    };
    let done = match act(hv, &p.name, cmd, action, opts) {
        Ok(d) => d,
        Err(e) => {
            let unloaded = roll_back(hv, &p.name);
            return Err(match e {
                // Xen's synchronous checks refuse with EINVAL: first the build-id
                // dependency (on the top applied payload, or on the hypervisor
                // when none is applied), then the expected bytes.
                Error::Hypercall { source, .. }
                    if source.raw_os_error() == Some(libc::EINVAL) && unloaded =>
                {
                    let depends = p.depends.clone().unwrap_or_else(|| "none".into());
                    let expecting = p.expecting();
                    let none_applied = before_applied == 0;
                    if (none_applied && depends != running) || expecting.is_empty() {
                        Error::DependsMismatch {
                            name: p.name.clone(),
                            depends,
                        }
                    } else if none_applied {
                        Error::Expectation {
                            name: p.name.clone(),
                            functions: expecting,
                        }
                    } else {
                        Error::Refused {
                            name: p.name.clone(),
                            reason: format!(
                                "its .livepatch.depends ({depends}) is not the top applied payload's build-id, or the running code of {expecting} does not match its expected bytes"
                            ),
                        }
                    }
                }
                Error::Hypercall { source, .. } => Error::ActionFailed {
                    name: p.name.clone(),
                    action,
                    reason: source.to_string(),
                    unloaded,
                },
                other => other,
            });
        }
    };
    let (st, elapsed) = (done.status, done.elapsed);
    if st.rc != 0 || st.state != abi::STATE_APPLIED {
        let unloaded = st.state == abi::STATE_CHECKED && roll_back(hv, &p.name);
        if st.rc == -libc::EBUSY && unloaded {
            return Err(Error::Unsafe {
                name: p.name.clone(),
                action,
                attempts: done.attempts,
                after: opts.wait,
            });
        }
        let expecting = p.expecting();
        if st.rc == -libc::EINVAL && !expecting.is_empty() && unloaded {
            return Err(Error::Expectation {
                name: p.name.clone(),
                functions: expecting,
            });
        }
        return Err(Error::ActionFailed {
            name: p.name.clone(),
            action,
            reason: if st.rc != 0 {
                errno_text(st.rc)
            } else {
                format!("state {}", abi::state_name(st.state))
            },
            unloaded,
        });
    }
    let mut replaced = Vec::new();
    for old in before
        .iter()
        .filter(|l| opts.replace && l.state == "APPLIED" && l.name != p.name)
    {
        match hv.get(&old.name)? {
            Some(s) if s.state == abi::STATE_CHECKED => {
                unload(hv, &old.name)?;
                replaced.push(old.name.clone());
            }
            _ => tracing::warn!(name = %old.name, "payload still applied after REPLACE"),
        }
    }
    tracing::info!(name = %p.name, action, ?elapsed, "done");
    Ok(Outcome {
        name: p.name.clone(),
        action,
        state: abi::state_name(st.state).to_string(),
        elapsed,
        functions: p.funcs.iter().map(|f| f.name.clone()).collect(),
        replaced,
        hypervisor: running,
        build_id: p.build_id.clone(),
    })
}

/// Reverts payload `name` (the top of the applied stack), then unloads it.
/// A payload that is loaded but not applied is just unloaded.
pub fn revert(hv: &Hypervisor, name: &str, opts: Options) -> Result<Outcome> {
    super::payload::check_name(name)?;
    let running = hv.build_id()?;
    let st = hv.get(name)?.ok_or_else(|| Error::NotLoaded {
        name: name.to_string(),
    })?;
    if st.in_progress() {
        return Err(Error::Timeout {
            name: name.into(),
            action: "revert",
            after: Duration::ZERO,
            state: "busy".into(),
        });
    }
    let mut elapsed = Duration::ZERO;
    if st.state == abi::STATE_APPLIED {
        let done = act(hv, name, abi::ACTION_REVERT, "revert", opts).map_err(|e| match e {
            Error::Hypercall { source, .. } if source.raw_os_error() == Some(libc::EBUSY) => {
                Error::NotTop {
                    name: name.into(),
                    top: top_guess(hv, name),
                }
            }
            other => other,
        })?;
        let st = done.status;
        elapsed = done.elapsed;
        if st.rc == -libc::EBUSY {
            return Err(Error::Unsafe {
                name: name.into(),
                action: "revert",
                attempts: done.attempts,
                after: opts.wait,
            });
        }
        if st.rc != 0 || st.state != abi::STATE_CHECKED {
            return Err(Error::ActionFailed {
                name: name.into(),
                action: "revert",
                reason: if st.rc != 0 {
                    errno_text(st.rc)
                } else {
                    format!("state {}", abi::state_name(st.state))
                },
                unloaded: false,
            });
        }
    }
    unload(hv, name)?;
    Ok(Outcome {
        name: name.into(),
        action: "revert",
        state: "UNLOADED".into(),
        elapsed,
        functions: Vec::new(),
        replaced: Vec::new(),
        hypervisor: running,
        build_id: None,
    })
}

/// The last applied payload in load order other than `name` (Xen does not
/// expose its applied stack order; with payloads applied in load order, as
/// hotfix does, this is the top).
fn top_guess(hv: &Hypervisor, name: &str) -> String {
    hv.list()
        .ok()
        .and_then(|l| {
            l.into_iter()
                .rev()
                .find(|p| p.state == "APPLIED" && p.name != name)
        })
        .map_or_else(|| "unknown".into(), |p| p.name)
}

/// Every loaded payload.
pub fn list(hv: &Hypervisor) -> Result<Vec<Listed>> {
    hv.list()
}
