//! The host plan: patch one host — its kernel and every VMM process — live,
//! and when a live patch is refused, drain the host's VMs to a peer, update
//! the idle host, and optionally bring the VMs back.
//!
//! Model: [`plan`] reads every patch and every process first and builds a
//! [`Plan`] — the live steps (one per patch × process whose mapped objects
//! carry a build-id the patch targets; one per kernel module patch) and the
//! fallback steps (drain each VM to its peer, run the update command, bring
//! the VMs back) — without changing anything; `--plan` prints it. [`run`]
//! then executes it:
//!
//! - each live step calls the loader library ([`loader::apply`], or
//!   [`loader::kernel::apply`] for a `.ko`), which retries while a function
//!   is busy until its timeout;
//! - status 3 (unsafe now) or any other refusal of the loader (which leaves
//!   the target unchanged) marks the host for the fallback; status 4 (target
//!   mismatch) stops everything: the patch was built for other binaries and
//!   a human must look;
//! - the fallback runs only when every VM has a peer (else the refusal is
//!   returned with its status): drain ([`crate::drain`]), then the update
//!   command (`sh -c`, e.g. install the fixed VMM binary or stage a kernel),
//!   then bring-back migrations to fresh destinations on this host.
//!
//! Invariants: every step is written to the [`audit`](crate::audit) log
//! before the next one starts (result included); a failed drain leaves that
//! VM running on this host and stops the plan before the update.

use crate::audit::Log;
use crate::drain::{self, Observer, Pair};
use crate::error::{Error, Result};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::fmt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What to do on this host.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Patch files: hotfix process patches, or kernel livepatch modules (`.ko`).
    pub patches: Vec<PathBuf>,
    /// QMP sockets of this host's VMs (their QEMU processes are VMM processes).
    pub vms: Vec<PathBuf>,
    /// Other VMM processes of this host to patch (no VM of their own to drain).
    pub pids: Vec<i32>,
    /// Peer destination (QMP socket, `-incoming defer`) for each VM, in order.
    pub peers: Vec<PathBuf>,
    /// Command updating the idle host after the drain (run by `sh -c`).
    pub update: Option<String>,
    /// Destinations on this host to bring each VM back to after the update.
    pub back: Vec<PathBuf>,
    /// How long each live patch retries while a function is busy.
    pub live_timeout: Duration,
    /// Migration options of the drain.
    pub drain: drain::Options,
}

/// Kind of a patch file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PatchKind {
    /// A hotfix userspace patch (ELF relocatable with `.hotfix.meta`).
    Process,
    /// A kernel livepatch module (`.ko`).
    Kernel,
}

/// A patch file, as read for the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PatchInfo {
    /// The file.
    pub path: PathBuf,
    /// Hex SHA-256 of its bytes.
    pub hash: String,
    /// Its kind.
    pub kind: PatchKind,
    /// Patch id (process patches) or file name.
    pub id: String,
    /// Build-ids it targets (process patches).
    pub targets: Vec<String>,
}

/// A VMM process of this host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Vmm {
    /// Its pid.
    pub pid: i32,
    /// Its command name (`/proc/PID/comm`).
    pub comm: String,
    /// Its executable.
    pub exe: PathBuf,
    /// The QMP socket it serves, if it is a VM given by socket.
    pub qmp: Option<PathBuf>,
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "step", rename_all = "kebab-case")]
pub enum Step {
    /// Apply a patch live to a process, or to the kernel (`pid` is `None`).
    ApplyLive {
        /// The patch file.
        patch: PathBuf,
        /// The process, or `None` for the kernel.
        pid: Option<i32>,
        /// The target in words (`pid 42 (qemu-system-x86)` or `kernel`).
        target: String,
    },
    /// Migrate a VM off this host.
    Drain {
        /// Source QMP socket.
        vm: PathBuf,
        /// Peer destination QMP socket.
        dest: PathBuf,
    },
    /// Update the idle host.
    Update {
        /// The command (`sh -c`).
        command: String,
    },
    /// Migrate a VM back to this host.
    BringBack {
        /// The VM's QMP socket on the peer.
        vm: PathBuf,
        /// Destination QMP socket on this host.
        dest: PathBuf,
    },
}

impl Step {
    /// The step kind as written in the audit log.
    pub fn kind(&self) -> &'static str {
        match self {
            Step::ApplyLive { .. } => "apply-live",
            Step::Drain { .. } => "drain",
            Step::Update { .. } => "update",
            Step::BringBack { .. } => "bring-back",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::ApplyLive { patch, target, .. } => {
                write!(f, "apply {} live to {target}", patch.display())
            }
            Step::Drain { vm, dest } => {
                write!(f, "drain VM {} to peer {}", vm.display(), dest.display())
            }
            Step::Update { command } => write!(f, "update the idle host: sh -c {command:?}"),
            Step::BringBack { vm, dest } => {
                write!(f, "bring VM {} back to {}", vm.display(), dest.display())
            }
        }
    }
}

/// A host plan: what will be tried, and what happens if a live step is refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// Host name.
    pub host: String,
    /// The patches.
    pub patches: Vec<PatchInfo>,
    /// The VMM processes found.
    pub vmms: Vec<Vmm>,
    /// Live steps, in order.
    pub live: Vec<Step>,
    /// Fallback steps, run when a live step is refused; empty when no peer
    /// was given.
    pub fallback: Vec<Step>,
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "host plan for {}: {} patch(es), {} VMM process(es)",
            self.host,
            self.patches.len(),
            self.vmms.len()
        )?;
        writeln!(f, "patches:")?;
        for p in &self.patches {
            writeln!(
                f,
                "  {} ({:?}, id {}, sha256 {})",
                p.path.display(),
                p.kind,
                p.id,
                p.hash
            )?;
        }
        writeln!(f, "VMM processes:")?;
        for v in &self.vmms {
            let qmp = v
                .qmp
                .as_ref()
                .map(|q| format!(", VM at {}", q.display()))
                .unwrap_or_default();
            writeln!(f, "  pid {} {} ({}{qmp})", v.pid, v.comm, v.exe.display())?;
        }
        writeln!(f, "live steps:")?;
        let mut n = 0;
        for s in &self.live {
            n += 1;
            writeln!(f, "  {n}. {s}")?;
        }
        if self.fallback.is_empty() {
            writeln!(
                f,
                "if a live step is refused: stop with its status (no peer given to drain to)"
            )?;
        } else {
            writeln!(f, "if a live step is refused (unsafe now, or unpatchable):")?;
            for s in &self.fallback {
                n += 1;
                writeln!(f, "  {n}. {s}")?;
            }
        }
        Ok(())
    }
}

/// The pid of the process serving the Unix socket `socket` (`SO_PEERCRED`).
pub fn socket_pid(socket: &Path) -> Result<i32> {
    let s = UnixStream::connect(socket).map_err(|source| Error::Connect {
        socket: socket.to_path_buf(),
        source,
    })?;
    let cred = nix::sys::socket::getsockopt(&s, nix::sys::socket::sockopt::PeerCredentials)
        .map_err(|e| Error::Process {
            socket: socket.to_path_buf(),
            detail: format!("SO_PEERCRED: {e}"),
        })?;
    Ok(cred.pid())
}

fn vmm(pid: i32, qmp: Option<PathBuf>) -> Result<Vmm> {
    let err = |detail: String| match &qmp {
        Some(q) => Error::Process {
            socket: q.clone(),
            detail,
        },
        None => Error::Usage(format!("process {pid}: {detail}")),
    };
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .map_err(|e| err(format!("/proc/{pid}/exe: {e}")))?;
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map_err(|e| err(format!("/proc/{pid}/comm: {e}")))?
        .trim_end()
        .to_string();
    Ok(Vmm {
        pid,
        comm,
        exe,
        qmp,
    })
}

/// Reads a patch file for the plan.
pub fn read_patch(path: &Path) -> Result<PatchInfo> {
    let bytes = std::fs::read(path).map_err(|e| Error::Patch {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    let hash = hex::encode(Sha256::digest(&bytes));
    if let Ok(meta) = patchgen::format::read_meta(&bytes) {
        return Ok(PatchInfo {
            path: path.to_path_buf(),
            hash,
            kind: PatchKind::Process,
            id: meta.id,
            targets: meta.targets.into_iter().map(|t| t.build_id).collect(),
        });
    }
    use object::Object;
    let is_module = object::File::parse(bytes.as_slice())
        .map(|f| f.section_by_name(".gnu.linkonce.this_module").is_some())
        .unwrap_or(false);
    if !is_module {
        return Err(Error::Patch {
            path: path.to_path_buf(),
            detail: "neither a hotfix patch (no .hotfix.meta) nor a kernel module".into(),
        });
    }
    let id = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(PatchInfo {
        path: path.to_path_buf(),
        hash,
        kind: PatchKind::Kernel,
        id,
        targets: Vec::new(),
    })
}

/// Builds the plan for `spec`: reads every patch and process, changes nothing.
pub fn plan(spec: &Spec) -> Result<Plan> {
    if spec.patches.is_empty() {
        return Err(Error::Usage("no patch given".into()));
    }
    if !spec.peers.is_empty() && spec.peers.len() != spec.vms.len() {
        return Err(Error::Usage(format!(
            "{} VM(s) but {} peer destination(s): give one peer per VM, in the same order",
            spec.vms.len(),
            spec.peers.len()
        )));
    }
    if !spec.back.is_empty() && (spec.back.len() != spec.vms.len() || spec.peers.is_empty()) {
        return Err(Error::Usage(
            "bring-back destinations need one per VM, and peers to drain to".into(),
        ));
    }
    let patches = spec
        .patches
        .iter()
        .map(|p| read_patch(p))
        .collect::<Result<Vec<_>>>()?;
    let mut vmms = Vec::new();
    for q in &spec.vms {
        let pid = socket_pid(q)?;
        vmms.push(vmm(pid, Some(q.clone()))?);
    }
    for &pid in &spec.pids {
        if !vmms.iter().any(|v| v.pid == pid) {
            vmms.push(vmm(pid, None)?);
        }
    }
    let mut live = Vec::new();
    for p in &patches {
        match p.kind {
            PatchKind::Kernel => live.push(Step::ApplyLive {
                patch: p.path.clone(),
                pid: None,
                target: "kernel".into(),
            }),
            PatchKind::Process => {
                let mut matched = false;
                for v in &vmms {
                    let proc_ = loader::target::Process::open(v.pid).map_err(|e| {
                        Error::Usage(format!("process {} ({}): {e}", v.pid, v.comm))
                    })?;
                    if p.targets.iter().any(|b| proc_.by_build_id(b).is_some()) {
                        matched = true;
                        live.push(Step::ApplyLive {
                            patch: p.path.clone(),
                            pid: Some(v.pid),
                            target: format!("pid {} ({})", v.pid, v.comm),
                        });
                    }
                }
                if !matched {
                    return Err(Error::NoTarget {
                        patch: p.path.clone(),
                        build_ids: p.targets.join(", "),
                    });
                }
            }
        }
    }
    let mut fallback = Vec::new();
    if !spec.peers.is_empty() || spec.vms.is_empty() {
        for (vm, dest) in spec.vms.iter().zip(&spec.peers) {
            fallback.push(Step::Drain {
                vm: vm.clone(),
                dest: dest.clone(),
            });
        }
        if let Some(c) = &spec.update {
            fallback.push(Step::Update { command: c.clone() });
        }
        for (vm, dest) in spec.peers.iter().zip(&spec.back) {
            fallback.push(Step::BringBack {
                vm: vm.clone(),
                dest: dest.clone(),
            });
        }
    }
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown".into());
    Ok(Plan {
        host,
        patches,
        vmms,
        live,
        fallback,
    })
}

/// How one step ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepResult {
    /// The step.
    #[serde(flatten)]
    pub step: Step,
    /// `ok`, `unsafe`, `refused`, `mismatch`, `failed`.
    pub result: String,
    /// The error or the figures.
    pub detail: String,
}

/// What [`run`] did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    /// `live` (every live step applied) or `drained` (fallback done).
    pub mode: String,
    /// Every step run, in order.
    pub steps: Vec<StepResult>,
    /// Drain reports (fallback and bring-back).
    pub migrations: Vec<drain::Report>,
}

fn patch_of<'a>(plan: &'a Plan, path: &Path) -> Option<&'a PatchInfo> {
    plan.patches.iter().find(|p| p.path == path)
}

/// Runs the live step `step`: `Ok(detail)` or the loader's error.
fn apply_live(
    patch: &Path,
    pid: Option<i32>,
    spec: &Spec,
) -> std::result::Result<String, loader::Error> {
    match pid {
        Some(pid) => {
            let p = loader::Patch::read(patch)?;
            let opts = loader::Options {
                timeout: spec.live_timeout,
                ..loader::Options::default()
            };
            let r = loader::apply(pid, &p, &opts)?;
            Ok(format!(
                "{} function(s), {} thread(s) paused {:.3} ms, {} attempt(s)",
                r.funcs.len(),
                r.threads,
                r.pause_us as f64 / 1000.0,
                r.attempts
            ))
        }
        None => {
            let opts = loader::kernel::Options {
                timeout: spec.live_timeout.max(Duration::from_secs(1)),
                ..loader::kernel::Options::default()
            };
            let a = loader::kernel::apply(patch, &opts)?;
            Ok(format!("kernel patch {} applied", a.record.name))
        }
    }
}

/// Runs `plan`, logging every step to `log`; drains report to `obs`.
pub fn run(plan: &Plan, spec: &Spec, log: &mut Log, obs: &dyn Observer) -> Result<Outcome> {
    let mut out = Outcome {
        mode: "live".into(),
        steps: Vec::new(),
        migrations: Vec::new(),
    };
    log.record(
        "plan",
        &format!(
            "host apply: {} patch(es), {} live step(s), {} fallback step(s)",
            plan.patches.len(),
            plan.live.len(),
            plan.fallback.len()
        ),
        None,
        "started",
        &serde_json::to_string(plan).unwrap_or_default(),
    )?;
    let mut refused: Option<(PathBuf, String, loader::Error)> = None;
    for step in &plan.live {
        let Step::ApplyLive { patch, pid, target } = step else {
            continue;
        };
        let info = patch_of(plan, patch);
        let ph = info.map(|i| (i.path.as_path(), i.hash.as_str()));
        let (result, detail, err) = match apply_live(patch, *pid, spec) {
            Ok(d) => ("ok", d, None),
            Err(e) => {
                let r = match e.status() {
                    patchgen::Status::Unsafe => "unsafe",
                    patchgen::Status::Mismatch => "mismatch",
                    _ => "refused",
                };
                (r, e.to_string(), Some(e))
            }
        };
        log.record("apply-live", &step.to_string(), ph, result, &detail)?;
        out.steps.push(StepResult {
            step: step.clone(),
            result: result.into(),
            detail,
        });
        if let Some(e) = err {
            if result == "mismatch" {
                return Err(Error::Live {
                    patch: patch.clone(),
                    target: target.clone(),
                    source: Box::new(e),
                });
            }
            if refused.is_none() {
                refused = Some((patch.clone(), target.clone(), e));
            }
        }
    }
    let Some((patch, target, cause)) = refused else {
        log.record("done", "every live step applied", None, "ok", "")?;
        return Ok(out);
    };
    if plan.fallback.is_empty() && !spec.vms.is_empty() {
        log.record(
            "done",
            "a live step was refused and no peer was given",
            None,
            "failed",
            "",
        )?;
        return Err(Error::Live {
            patch,
            target,
            source: Box::new(cause),
        });
    }
    out.mode = "drained".into();
    let pairs_of = |kind: &str| -> Vec<Pair> {
        plan.fallback
            .iter()
            .filter(|s| s.kind() == kind)
            .filter_map(|s| match s {
                Step::Drain { vm, dest } | Step::BringBack { vm, dest } => Some(Pair {
                    vm: vm.clone(),
                    dest: dest.clone(),
                }),
                _ => None,
            })
            .collect()
    };
    migrate_all(plan, spec, log, obs, &mut out, "drain", &pairs_of("drain"))?;
    for step in &plan.fallback {
        if let Step::Update { command } = step {
            let st = std::process::Command::new("sh")
                .arg("-c")
                .arg(command)
                .status();
            let (result, detail) = match &st {
                Ok(s) if s.success() => ("ok", String::new()),
                Ok(s) => ("failed", s.to_string()),
                Err(e) => ("failed", e.to_string()),
            };
            log.record("update", &step.to_string(), None, result, &detail)?;
            out.steps.push(StepResult {
                step: step.clone(),
                result: result.into(),
                detail: detail.clone(),
            });
            if result != "ok" {
                return Err(Error::Update {
                    command: command.clone(),
                    detail,
                });
            }
        }
    }
    let back = pairs_of("bring-back");
    for p in &back {
        wait_socket(&p.dest, Duration::from_secs(60))?;
    }
    migrate_all(plan, spec, log, obs, &mut out, "bring-back", &back)?;
    log.record(
        "done",
        &format!(
            "fallback done after {} was refused on {target}",
            patch.display()
        ),
        None,
        "ok",
        &cause.to_string(),
    )?;
    Ok(out)
}

/// Waits until a destination QMP socket accepts connections (it may be
/// started by the update command).
fn wait_socket(socket: &Path, within: Duration) -> Result<()> {
    let until = std::time::Instant::now() + within;
    loop {
        match UnixStream::connect(socket) {
            Ok(_) => return Ok(()),
            Err(_) if std::time::Instant::now() < until => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(source) => {
                return Err(Error::Connect {
                    socket: socket.to_path_buf(),
                    source,
                });
            }
        }
    }
}

fn migrate_all(
    plan: &Plan,
    spec: &Spec,
    log: &mut Log,
    obs: &dyn Observer,
    out: &mut Outcome,
    kind: &str,
    pairs: &[Pair],
) -> Result<()> {
    let _ = plan;
    let results = drain::drain(pairs, &spec.drain, obs);
    let mut first_err = None;
    for (pair, r) in pairs.iter().zip(results) {
        let step = if kind == "drain" {
            Step::Drain {
                vm: pair.vm.clone(),
                dest: pair.dest.clone(),
            }
        } else {
            Step::BringBack {
                vm: pair.vm.clone(),
                dest: pair.dest.clone(),
            }
        };
        let (result, detail) = match &r {
            Ok(rep) => (
                "ok",
                format!(
                    "downtime {} ms, total {} ms, setup {} ms, {} bytes",
                    rep.downtime_ms, rep.total_ms, rep.setup_ms, rep.transferred_bytes
                ),
            ),
            Err(e) => ("failed", e.to_string()),
        };
        log.record(kind, &step.to_string(), None, result, &detail)?;
        out.steps.push(StepResult {
            step,
            result: result.into(),
            detail,
        });
        match r {
            Ok(rep) => out.migrations.push(rep),
            Err(e) => {
                if first_err.is_none() {
                    first_err = Some(e);
                }
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
