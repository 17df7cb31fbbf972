//! build: from a source tree and a fix (a diff) to one patch module.
//!
//! Model: the project's own build system decides what a fix recompiles. A
//! compiler wrapper (`hotfix __cc`, put first in `PATH` as `cc`/`gcc` and
//! given as `CC`) adds `-ffunction-sections -fdata-sections` to every
//! compile and records, as JSON lines, every object it writes and every link
//! with its inputs.
//!
//! Work directory (one per source tree + build command, under the cache):
//! - `tree/`: a copy of the source, built once with the wrapper — the
//!   *original build*, reused by every later fix while the source is
//!   unchanged (`original.json` records its fingerprint and build-id);
//! - for a fix, `tree/` is renamed `pristine/`, copied back to `tree/` (same
//!   path, so paths compiled into objects and DWARF are identical), the diff
//!   is applied and the build run again: the wrapper's log names exactly the
//!   recompiled objects; each is paired with its copy in `pristine/`;
//! - then `tree/` is dropped and `pristine/` renamed back. A run killed in
//!   between leaves `pristine/`, which the next run restores first.
//!
//! Each pair goes through the DWARF layout check ([`crate::layout`]) and
//! [`crate::diff_objects`]; pairs without functional change are dropped (a
//! header change recompiles many objects but yields only real changes); the
//! rest are merged with `ld -r` into one patch object with one merged
//! [`Meta`], stamped with the build-id of the binary the original build
//! produced.
//!
//! Invariants: the user's source tree is never written; a fix never leaves
//! the cached original build modified; the output names its target by the
//! build-id of the original build's binary.

use crate::Error;
use crate::format::{self, Meta, Target};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Environment variable naming the wrapper's log file.
pub const ENV_LOG: &str = "HOTFIX_CC_LOG";
/// Environment variable naming the real compiler behind the wrapper.
pub const ENV_REAL_CC: &str = "HOTFIX_CC_REAL";

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildPlan {
    /// The project's source tree (read only).
    pub src: PathBuf,
    /// The fix, a unified diff applied with `patch -p1` (or `-p0`).
    pub diff: PathBuf,
    /// The project's build command, run by `sh -c` in the tree.
    pub build_cmd: String,
    /// The target binary or library, relative to the tree; `None` picks the
    /// only program the build links.
    pub binary: Option<PathBuf>,
    /// Root of the build cache (work directories live below it).
    pub cache: PathBuf,
    /// The hotfix executable, run as `hotfix __cc` by the wrapper.
    pub hotfix_exe: PathBuf,
    /// Patch id; `None`: derived from the diff's file name.
    pub id: Option<String>,
    /// Human description; `None`: the diff's first line of text.
    pub description: Option<String>,
    /// The running binary (or a copy) the patch must fit: checked against
    /// the original build's build-id before the patched build runs.
    pub against: Option<PathBuf>,
}

/// The cached original build of a tree, ready to deploy.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OriginalBuild {
    /// The target binary (absolute path in the work directory).
    pub binary: PathBuf,
    /// Its GNU build-id (hex).
    pub build_id: String,
    /// Whether it came from the cache.
    pub cached: bool,
    /// Seconds the build took (0 when cached).
    pub secs: f64,
    /// The work directory.
    pub workdir: PathBuf,
}

/// Builds (or reuses) the original, patch-ready build of `plan.src`: the
/// binary to deploy so that later fixes of this tree can be applied to it.
pub fn original_build(
    plan: &BuildPlan,
    events: &mut dyn FnMut(Event<'_>),
) -> Result<OriginalBuild, Error> {
    let (work, _lock) = open_workdir(plan)?;
    let (orig, cached, secs) = original(plan, &work, events)?;
    Ok(OriginalBuild {
        binary: work.join("tree").join(&orig.binary),
        build_id: orig.build_id,
        cached,
        secs,
        workdir: work,
    })
}

/// Creates and locks the work directory, restoring an interrupted run.
fn open_workdir(plan: &BuildPlan) -> Result<(PathBuf, fs::File), Error> {
    if !plan.src.is_dir() {
        return Err(step_err(
            "set up",
            format!("{} is not a directory", plan.src.display()),
            None,
        ));
    }
    let work = workdir_for(plan)?;
    fs::create_dir_all(&work).map_err(io(&work))?;
    let lock_path = work.join("lock");
    let lock = fs::File::create(&lock_path).map_err(io(&lock_path))?;
    lock.lock().map_err(io(&lock_path))?;
    recover(&work)?;
    Ok((work, lock))
}

/// Checks that `against` is the binary the original build produced.
fn check_against(against: &Path, built: &Path, built_id: &str) -> Result<(), Error> {
    let running = fs::read(against).map_err(io(against))?;
    let running_id = build_id_of(&running).unwrap_or_else(|| "none".into());
    if running_id == built_id {
        return Ok(());
    }
    let built_bytes = fs::read(built).map_err(io(built))?;
    Err(Error::BuildIdMismatch {
        running_path: against.display().to_string(),
        running: running_id,
        built: built_id.to_string(),
        explanation: explain_mismatch(&running, &built_bytes),
    })
}

/// Something that happened during a build, for progress displays.
#[derive(Debug, Clone)]
pub enum Event<'a> {
    /// A step starts (`original build`, `patched build`, `diff`...).
    Step(&'a str),
    /// A line of output of the current step.
    Line(&'a str),
    /// The current step is done.
    Done(&'a str, Duration),
}

/// What one recompiled object contributed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ObjectOutcome {
    /// Path relative to the tree.
    pub object: String,
    /// `changed` (contributes to the patch) or `no functional change`.
    pub result: String,
    /// Replaced functions from this object.
    pub changed: Vec<String>,
    /// New functions from this object.
    pub new_funcs: Vec<String>,
}

/// The result of [`build`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct BuildOutcome {
    /// The patch module (ELF bytes).
    #[serde(skip)]
    pub patch: Vec<u8>,
    /// Its metadata.
    pub meta: Meta,
    /// Every recompiled object of the target and what it gave.
    pub objects: Vec<ObjectOutcome>,
    /// Whether the original build was reused from the cache.
    pub original_cached: bool,
    /// Seconds spent in the original build (0 when cached).
    pub original_secs: f64,
    /// Seconds spent in the patched build.
    pub patched_secs: f64,
    /// Seconds spent diffing and linking.
    pub diff_secs: f64,
    /// The original build's binary (absolute path in the work directory).
    pub binary: PathBuf,
    /// The work directory.
    pub workdir: PathBuf,
}

/// Information recorded about the cached original build.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
struct Original {
    fingerprint: String,
    build_cmd: String,
    binary: String,
    build_id: String,
    links: Vec<Link>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
struct Link {
    output: String,
    inputs: Vec<String>,
}

/// One line of the wrapper's log.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum LogLine {
    Compile { output: String },
    Link { output: String, inputs: Vec<String> },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn step_err(step: &str, reason: impl Into<String>, log: Option<&Path>) -> Error {
    Error::Build {
        step: step.to_string(),
        reason: reason.into(),
        log: log.map(Path::to_path_buf),
    }
}

fn hex_sha256(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// The work directory of a source tree and build command.
pub fn workdir_for(plan: &BuildPlan) -> Result<PathBuf, Error> {
    let src = fs::canonicalize(&plan.src).map_err(io(&plan.src))?;
    let key = hex_sha256(format!("{}\0{}", src.display(), plan.build_cmd).as_bytes());
    let name = src
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "src".into());
    Ok(plan.cache.join(format!("{name}-{}", &key[..16])))
}

/// Fingerprint of a source tree: relative path, size and mtime of every file
/// (`.git` excluded), hashed.
fn fingerprint(src: &Path) -> Result<String, Error> {
    let mut entries = Vec::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).map_err(io(&dir))? {
            let e = e.map_err(io(&dir))?;
            let p = e.path();
            if e.file_name() == ".git" {
                continue;
            }
            let md = fs::symlink_metadata(&p).map_err(io(&p))?;
            if md.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(src).unwrap_or(&p).display().to_string();
                let mtime = md
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| d.as_nanos())
                    .unwrap_or(0);
                entries.push(format!("{rel}\0{}\0{mtime}", md.len()));
            }
        }
    }
    entries.sort();
    Ok(hex_sha256(entries.join("\n").as_bytes()))
}

/// Runs the project's build in `tree` with the wrapper, streaming its output
/// to `log` and to `events`; returns the wrapper's records.
fn run_build(
    plan: &BuildPlan,
    work: &Path,
    tree: &Path,
    step: &str,
    events: &mut dyn FnMut(Event<'_>),
) -> Result<Vec<LogLine>, Error> {
    let bin = work.join("bin");
    fs::create_dir_all(&bin).map_err(io(&bin))?;
    let real_cc = find_real_cc(&bin)?;
    for name in ["cc", "gcc", "x86_64-linux-gnu-gcc"] {
        let p = bin.join(name);
        let script = format!(
            "#!/bin/sh\nexec '{}' __cc \"$@\"\n",
            plan.hotfix_exe.display()
        );
        fs::write(&p, script).map_err(io(&p))?;
        set_exec(&p)?;
    }
    let safe = step.replace(' ', "-");
    let cc_log = work.join(format!("{safe}.cc.jsonl"));
    let out_log = work.join(format!("{safe}.log"));
    let _ = fs::remove_file(&cc_log);
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut new_path = OsString::from(bin.as_os_str());
    new_path.push(":");
    new_path.push(path);
    events(Event::Step(step));
    let started = Instant::now();
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("{} 2>&1", plan.build_cmd))
        .current_dir(tree)
        .env("PATH", new_path)
        .env("CC", bin.join("cc"))
        .env(ENV_LOG, &cc_log)
        .env(ENV_REAL_CC, &real_cc)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| step_err(step, format!("cannot run `{}`: {e}", plan.build_cmd), None))?;
    let mut log = fs::File::create(&out_log).map_err(io(&out_log))?;
    if let Some(out) = child.stdout.take() {
        use std::io::BufRead;
        for line in std::io::BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            let _ = writeln!(log, "{line}");
            events(Event::Line(&line));
        }
    }
    let status = child.wait().map_err(io(tree))?;
    if !status.success() {
        return Err(step_err(
            step,
            format!("`{}` exited with {status}", plan.build_cmd),
            Some(&out_log),
        ));
    }
    events(Event::Done(step, started.elapsed()));
    let text = fs::read_to_string(&cc_log).unwrap_or_default();
    let mut lines = Vec::new();
    for l in text.lines() {
        let rec: LogLine = serde_json::from_str(l).map_err(|e| {
            step_err(
                step,
                format!("bad wrapper record {l:?}: {e}"),
                Some(&cc_log),
            )
        })?;
        lines.push(rec);
    }
    Ok(lines)
}

fn find_real_cc(shim_dir: &Path) -> Result<PathBuf, Error> {
    if let Some(cc) = std::env::var_os("CC").filter(|c| !c.is_empty()) {
        let p = PathBuf::from(&cc);
        if p.is_absolute() && !p.starts_with(shim_dir) {
            return Ok(p);
        }
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        if dir == shim_dir {
            continue;
        }
        let p = dir.join("gcc");
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(step_err("set up", "no gcc found in PATH", None))
}

fn set_exec(p: &Path) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(p, fs::Permissions::from_mode(0o755)).map_err(io(p))
}

fn copy_tree(from: &Path, to: &Path, step: &str) -> Result<(), Error> {
    let st = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .map_err(io(from))?;
    if !st.success() {
        return Err(step_err(
            step,
            format!("cp -a {} {} failed", from.display(), to.display()),
            None,
        ));
    }
    Ok(())
}

/// Puts the original build back if a previous run was killed mid-fix.
fn recover(work: &Path) -> Result<(), Error> {
    let pristine = work.join("pristine");
    let tree = work.join("tree");
    if pristine.exists() {
        if tree.exists() {
            fs::remove_dir_all(&tree).map_err(io(&tree))?;
        }
        fs::rename(&pristine, &tree).map_err(io(&pristine))?;
    }
    Ok(())
}

/// Makes sure `work/tree` holds the original build of `plan.src`; returns
/// its record and whether it came from the cache, and the seconds spent.
fn original(
    plan: &BuildPlan,
    work: &Path,
    events: &mut dyn FnMut(Event<'_>),
) -> Result<(Original, bool, f64), Error> {
    let fp = fingerprint(&plan.src)?;
    let record = work.join("original.json");
    let tree = work.join("tree");
    if let Ok(text) = fs::read_to_string(&record)
        && let Ok(orig) = serde_json::from_str::<Original>(&text)
        && orig.fingerprint == fp
        && orig.build_cmd == plan.build_cmd
        && tree.join(&orig.binary).is_file()
        && plan
            .binary
            .as_ref()
            .is_none_or(|b| Path::new(&orig.binary) == b)
    {
        return Ok((orig, true, 0.0));
    }
    let _ = fs::remove_file(&record);
    if tree.exists() {
        fs::remove_dir_all(&tree).map_err(io(&tree))?;
    }
    copy_tree(&plan.src, &tree, "copy source")?;
    let started = Instant::now();
    let lines = run_build(plan, work, &tree, "original build", events)?;
    let secs = started.elapsed().as_secs_f64();
    let links: Vec<Link> = lines
        .iter()
        .filter_map(|l| match l {
            LogLine::Link { output, inputs } => Some(Link {
                output: rel(&tree, output),
                inputs: inputs.iter().map(|i| rel(&tree, i)).collect(),
            }),
            LogLine::Compile { .. } => None,
        })
        .collect();
    if !lines.iter().any(|l| matches!(l, LogLine::Compile { .. })) {
        return Err(step_err(
            "original build",
            format!(
                "the build compiled nothing through the wrapper: give a clean source tree \
                 (no objects from an earlier build) in {}",
                plan.src.display()
            ),
            None,
        ));
    }
    let binary = match &plan.binary {
        Some(b) => b.display().to_string(),
        None => {
            let outs: BTreeSet<&str> = links.iter().map(|l| l.output.as_str()).collect();
            match outs.len() {
                1 => outs
                    .iter()
                    .next()
                    .map(|s| s.to_string())
                    .unwrap_or_default(),
                0 => {
                    return Err(step_err(
                        "original build",
                        "the build linked nothing through the wrapper; name the target with --binary",
                        None,
                    ));
                }
                _ => {
                    return Err(step_err(
                        "original build",
                        format!(
                            "the build linked several programs ({}); name the target with --binary",
                            outs.into_iter().collect::<Vec<_>>().join(", ")
                        ),
                        None,
                    ));
                }
            }
        }
    };
    let bin_path = tree.join(&binary);
    let data = fs::read(&bin_path).map_err(io(&bin_path))?;
    let build_id = build_id_of(&data).ok_or_else(|| {
        step_err(
            "original build",
            format!(
                "{} has no GNU build-id note (link with --build-id)",
                bin_path.display()
            ),
            None,
        )
    })?;
    let orig = Original {
        fingerprint: fp,
        build_cmd: plan.build_cmd.clone(),
        binary,
        build_id,
        links,
    };
    let text = serde_json::to_string_pretty(&orig).unwrap_or_default();
    fs::write(&record, text).map_err(io(&record))?;
    Ok((orig, false, secs))
}

fn rel(tree: &Path, p: &str) -> String {
    let pb = PathBuf::from(p);
    // Paths may go through the `pristine` rename: strip either root.
    let pristine = tree.with_file_name("pristine");
    pb.strip_prefix(tree)
        .or_else(|_| pb.strip_prefix(&pristine))
        .map(|r| r.display().to_string())
        .unwrap_or_else(|_| p.to_string())
}

/// The GNU build-id of an ELF file, as hex.
pub fn build_id_of(data: &[u8]) -> Option<String> {
    use object::Object;
    let file = object::File::parse(data).ok()?;
    file.build_id().ok().flatten().map(hex::encode)
}

fn apply_diff(tree: &Path, diff: &Path) -> Result<(), Error> {
    for level in ["-p1", "-p0"] {
        let dry = Command::new("patch")
            .args([level, "--batch", "--forward", "--dry-run", "--silent", "-i"])
            .arg(diff)
            .current_dir(tree)
            .output()
            .map_err(io(diff))?;
        if dry.status.success() {
            let out = Command::new("patch")
                .args([level, "--batch", "--forward", "--silent", "-i"])
                .arg(diff)
                .current_dir(tree)
                .output()
                .map_err(io(diff))?;
            if out.status.success() {
                return Ok(());
            }
        }
    }
    Err(step_err(
        "apply fix",
        format!(
            "{} does not apply to the source with patch -p1 or -p0",
            diff.display()
        ),
        None,
    ))
}

/// Builds the patch module for `plan`.
pub fn build(plan: &BuildPlan, events: &mut dyn FnMut(Event<'_>)) -> Result<BuildOutcome, Error> {
    let diff_bytes = fs::read(&plan.diff).map_err(io(&plan.diff))?;
    let (work, _lock) = open_workdir(plan)?;
    let (orig, original_cached, original_secs) = original(plan, &work, events)?;
    let tree = work.join("tree");
    let pristine = work.join("pristine");
    if let Some(against) = &plan.against {
        check_against(against, &tree.join(&orig.binary), &orig.build_id)?;
    }

    // The fixed build, in a copy at the same path.
    fs::rename(&tree, &pristine).map_err(io(&tree))?;
    let fixed = (|| {
        copy_tree(&pristine, &tree, "copy original build")?;
        let diff = fs::canonicalize(&plan.diff).map_err(io(&plan.diff))?;
        apply_diff(&tree, &diff)?;
        let started = Instant::now();
        let lines = run_build(plan, &work, &tree, "patched build", events)?;
        let secs = started.elapsed().as_secs_f64();
        let fixdir = work.join("fixes").join(&hex_sha256(&diff_bytes)[..16]);
        let _ = fs::remove_dir_all(&fixdir);
        let mut pairs = Vec::new();
        // The target's own objects: its link's inputs; when it also links
        // archives (whose members the wrapper does not see), also every
        // object no other program's link names (memcached-debug's objects
        // are not memcached's).
        let target_link = orig.links.iter().find(|l| l.output == orig.binary);
        let others: BTreeSet<&str> = orig
            .links
            .iter()
            .filter(|o| o.output != orig.binary)
            .flat_map(|o| o.inputs.iter().map(String::as_str))
            .collect();
        let archives = target_link.is_some_and(|l| l.inputs.iter().any(|i| i.ends_with(".a")));
        let keep = |r: &str| match target_link {
            None => true,
            Some(l) => l.inputs.iter().any(|i| i == r) || (archives && !others.contains(r)),
        };
        let mut seen = BTreeSet::new();
        for l in &lines {
            let LogLine::Compile { output } = l else {
                continue;
            };
            let r = rel(&tree, output);
            if !seen.insert(r.clone()) || !keep(&r) {
                continue;
            }
            let (o, p) = (pristine.join(&r), tree.join(&r));
            let (od, pd) = (
                fixdir.join("orig").join(&r),
                fixdir.join("patched").join(&r),
            );
            for (from, to) in [(&o, &od), (&p, &pd)] {
                if let Some(parent) = to.parent() {
                    fs::create_dir_all(parent).map_err(io(parent))?;
                }
                if from.exists() {
                    fs::copy(from, to).map_err(io(from))?;
                }
            }
            pairs.push((r, od, pd));
        }
        Ok::<_, Error>((pairs, secs))
    })();
    // Whatever happened, put the original build back.
    if tree.exists() {
        fs::remove_dir_all(&tree).map_err(io(&tree))?;
    }
    fs::rename(&pristine, &tree).map_err(io(&pristine))?;
    let (pairs, patched_secs) = fixed?;

    events(Event::Step("diff"));
    let started = Instant::now();
    let target = Target {
        build_id: orig.build_id.clone(),
        name: orig.binary.clone(),
    };
    let id = plan.id.clone().unwrap_or_else(|| default_id(&plan.diff));
    let description = plan
        .description
        .clone()
        .unwrap_or_else(|| default_description(&diff_bytes, &plan.diff));
    let mut objects = Vec::new();
    let mut parts = Vec::new();
    for (r, od, pd) in &pairs {
        if !od.exists() {
            // A new source file: everything in it is new; diff against an
            // empty object is not meaningful, refuse clearly.
            return Err(step_err(
                "diff",
                format!("{r} is a new object; put new code into an existing source file"),
                None,
            ));
        }
        let ob = fs::read(od).map_err(io(od))?;
        let pb = fs::read(pd).map_err(io(pd))?;
        let changes = crate::layout::compare(
            &crate::layout::layouts(&ob, od)?,
            &crate::layout::layouts(&pb, pd)?,
        );
        if !changes.is_empty() {
            return Err(Error::LayoutChanged {
                file: r.clone(),
                changes: changes
                    .iter()
                    .map(|c| format!("{} ({})", c.type_name, c.what))
                    .collect::<Vec<_>>()
                    .join("; "),
            });
        }
        let opts = crate::DiffOptions {
            id: id.clone(),
            description: description.clone(),
            target: Some(target.clone()),
            source_hash: Some(hex_sha256(&diff_bytes)),
        };
        match crate::diff_objects(&ob, r, &pb, r, &opts) {
            Ok(rep) => {
                objects.push(ObjectOutcome {
                    object: r.clone(),
                    result: "changed".into(),
                    changed: rep.meta.funcs.iter().map(|f| f.name.clone()).collect(),
                    new_funcs: rep.meta.new_funcs.clone(),
                });
                parts.push((r.clone(), rep.patch, rep.meta));
            }
            Err(Error::NoChange { .. }) => objects.push(ObjectOutcome {
                object: r.clone(),
                result: "no functional change".into(),
                changed: vec![],
                new_funcs: vec![],
            }),
            Err(e) => return Err(e),
        }
    }
    if parts.is_empty() {
        return Err(Error::NoChange {
            orig: format!("{} (original build)", orig.binary),
            patched: format!("{} + {}", orig.binary, plan.diff.display()),
            line_only: 0,
        });
    }
    let source_hash = hex_sha256(&diff_bytes);
    let (patch, meta) = merge(&work, parts, &id, &description, &source_hash, target)?;
    events(Event::Done("diff", started.elapsed()));
    Ok(BuildOutcome {
        patch,
        meta,
        objects,
        original_cached,
        original_secs,
        patched_secs,
        diff_secs: started.elapsed().as_secs_f64(),
        binary: tree.join(&orig.binary),
        workdir: work,
    })
}

fn default_id(diff: &Path) -> String {
    let stem = diff
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "fix".into());
    let id: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    if id.is_empty() { "fix".into() } else { id }
}

fn default_description(diff: &[u8], path: &Path) -> String {
    let text = String::from_utf8_lossy(diff);
    // A git format-patch or DEP-3 header names the fix on its own line.
    if let Some(subject) = text
        .lines()
        .take_while(|l| !l.starts_with("--- "))
        .find_map(|l| {
            l.strip_prefix("Subject:")
                .or_else(|| l.strip_prefix("Description:"))
        })
    {
        let s = subject.trim();
        let s = s.strip_prefix("[PATCH]").map(str::trim).unwrap_or(s);
        if !s.is_empty() {
            return s.to_string();
        }
    }
    text.lines()
        .find(|l| {
            let t = l.trim();
            !t.is_empty()
                && !t.starts_with("diff ")
                && !t.starts_with("--- ")
                && !t.starts_with("+++ ")
                && !t.starts_with("index ")
        })
        .filter(|l| !l.starts_with("@@"))
        .map(|l| l.trim().to_string())
        .unwrap_or_else(|| format!("fix {}", path.display()))
}

/// Merges per-object patches into one: the ELF parts with `ld -r`, the
/// metadata by concatenation (references must agree where names repeat).
fn merge(
    work: &Path,
    parts: Vec<(String, Vec<u8>, Meta)>,
    id: &str,
    description: &str,
    source_hash: &str,
    target: Target,
) -> Result<(Vec<u8>, Meta), Error> {
    let mut meta = Meta {
        id: id.to_string(),
        description: description.to_string(),
        source_hash: source_hash.to_string(),
        targets: vec![target],
        funcs: vec![],
        new_funcs: vec![],
        new_data: vec![],
        refs: vec![],
    };
    let mut refs: BTreeMap<String, format::Ref> = BTreeMap::new();
    let mut defined = BTreeSet::new();
    for (obj, _, m) in &parts {
        for mut f in m.funcs.iter().cloned() {
            f.target = 0;
            if !defined.insert(f.new_symbol.clone()) {
                return Err(step_err(
                    "link",
                    format!("{obj}: symbol {} is defined by two objects", f.new_symbol),
                    None,
                ));
            }
            meta.funcs.push(f);
        }
        for n in m.new_funcs.iter().chain(&m.new_data) {
            if !defined.insert(n.clone()) {
                return Err(step_err(
                    "link",
                    format!("{obj}: symbol {n} is defined by two objects"),
                    None,
                ));
            }
        }
        meta.new_funcs.extend(m.new_funcs.iter().cloned());
        meta.new_data.extend(m.new_data.iter().cloned());
        for r in &m.refs {
            let mut r = r.clone();
            r.target = 0;
            match refs.get(&r.symbol) {
                Some(prev) if *prev != r => {
                    return Err(step_err(
                        "link",
                        format!(
                            "{obj}: reference {} resolves differently in two objects",
                            r.symbol
                        ),
                        None,
                    ));
                }
                _ => {
                    refs.insert(r.symbol.clone(), r);
                }
            }
        }
    }
    // A symbol one object defines is not a reference for the merged patch.
    meta.refs = refs
        .into_values()
        .filter(|r| !defined.contains(&r.symbol))
        .collect();
    let dir = work.join("link");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).map_err(io(&dir))?;
    let mut inputs = Vec::new();
    for (i, (_, bytes, _)) in parts.iter().enumerate() {
        let p = dir.join(format!("part{i}.o"));
        fs::write(&p, bytes).map_err(io(&p))?;
        run_tool(
            "objcopy",
            &[
                OsString::from("--remove-section=.hotfix.meta"),
                p.clone().into(),
            ],
        )?;
        inputs.push(p);
    }
    let linked = dir.join("linked.o");
    if inputs.len() == 1 {
        fs::copy(&inputs[0], &linked).map_err(io(&linked))?;
    } else {
        let mut args: Vec<OsString> = vec!["-r".into(), "-o".into(), linked.clone().into()];
        args.extend(inputs.iter().map(|p| p.clone().into()));
        run_tool("ld", &args)?;
    }
    let meta_bin = dir.join("meta.bin");
    fs::write(&meta_bin, meta.encode()).map_err(io(&meta_bin))?;
    run_tool(
        "objcopy",
        &[
            OsString::from(format!("--add-section=.hotfix.meta={}", meta_bin.display())),
            OsString::from("--set-section-flags=.hotfix.meta=readonly"),
            linked.clone().into(),
        ],
    )?;
    let bytes = fs::read(&linked).map_err(io(&linked))?;
    // The merged file must read back with the same metadata.
    let back = format::read_meta(&bytes).map_err(|source| Error::Format {
        path: linked.clone(),
        source,
    })?;
    if back != meta {
        return Err(step_err(
            "link",
            "merged metadata does not read back identically",
            None,
        ));
    }
    Ok((bytes, meta))
}

fn run_tool(tool: &str, args: &[OsString]) -> Result<(), Error> {
    let out = Command::new(tool)
        .args(args)
        .output()
        .map_err(|e| step_err("link", format!("cannot run {tool}: {e}"), None))?;
    if !out.status.success() {
        return Err(step_err(
            "link",
            format!(
                "{tool} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            None,
        ));
    }
    Ok(())
}

/// The compiler wrapper (`hotfix __cc ARGS...`): adds function and data
/// sections to compiles, runs the real compiler, records what it wrote.
/// Returns the compiler's exit code.
pub fn wrapper_main(args: &[OsString]) -> Result<i32, Error> {
    let real = std::env::var_os(ENV_REAL_CC).unwrap_or_else(|| "gcc".into());
    let strs: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let has = |f: &str| strs.iter().any(|a| a == f);
    let compile = has("-c") && !has("-E") && !has("-S") && !has("-M") && !has("-MM");
    let mut full: Vec<OsString> = args.to_vec();
    if compile {
        for f in ["-ffunction-sections", "-fdata-sections"] {
            if !has(f) {
                full.push(f.into());
            }
        }
    }
    let status = Command::new(&real).args(&full).status().map_err(|e| {
        step_err(
            "compiler wrapper",
            format!("cannot run {}: {e}", Path::new(&real).display()),
            None,
        )
    })?;
    let code = status.code().unwrap_or(1);
    if code != 0 {
        return Ok(code);
    }
    let Some(log) = std::env::var_os(ENV_LOG) else {
        return Ok(0);
    };
    let cwd = std::env::current_dir().map_err(io(Path::new(".")))?;
    let abs = |p: &str| cwd.join(p).display().to_string();
    let output = strs
        .iter()
        .position(|a| a == "-o")
        .and_then(|i| strs.get(i + 1).cloned())
        .or_else(|| {
            strs.iter().find_map(|a| {
                a.strip_prefix("-o")
                    .filter(|s| !s.is_empty())
                    .map(String::from)
            })
        });
    let mut records = Vec::new();
    if compile {
        match output {
            Some(o) => records.push(LogLine::Compile { output: abs(&o) }),
            None => {
                for src in strs.iter().filter(|a| is_source(a)) {
                    let stem = Path::new(src)
                        .file_stem()
                        .map(|s| s.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    records.push(LogLine::Compile {
                        output: abs(&format!("{stem}.o")),
                    });
                }
            }
        }
    } else if !has("-E")
        && !has("-S")
        && let Some(o) = output
    {
        let inputs = strs
            .iter()
            .filter(|a| !a.starts_with('-') && (a.ends_with(".o") || a.ends_with(".a")))
            .map(|a| abs(a))
            .collect();
        records.push(LogLine::Link {
            output: abs(&o),
            inputs,
        });
    }
    let mut f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .map_err(io(Path::new(&log)))?;
    for r in records {
        // One write per record: O_APPEND keeps parallel compilers' lines whole.
        let line = format!("{}\n", serde_json::to_string(&r).unwrap_or_default());
        f.write_all(line.as_bytes()).map_err(io(Path::new(&log)))?;
    }
    Ok(0)
}

fn is_source(a: &str) -> bool {
    [".c", ".cc", ".cpp", ".cxx", ".s", ".S"]
        .iter()
        .any(|e| a.ends_with(e))
        && !a.starts_with('-')
}

/// Why a running binary's build-id differs from the original build's: the
/// compiler (`.comment`), the flags (`DW_AT_producer`) and the build
/// directory (`DW_AT_comp_dir`) of each, where they differ.
pub fn explain_mismatch(running: &[u8], built: &[u8]) -> String {
    let a = provenance(running);
    let b = provenance(built);
    let mut out = Vec::new();
    for (what, x, y) in [
        ("compiler", &a.compiler, &b.compiler),
        ("flags", &a.producer, &b.producer),
        ("build directory", &a.comp_dir, &b.comp_dir),
    ] {
        if x != y {
            out.push(format!(
                "{what} differs: running `{}`, built `{}`",
                x.as_deref().unwrap_or("unknown"),
                y.as_deref().unwrap_or("unknown")
            ));
        }
    }
    if out.is_empty() {
        if a.producer.is_none() {
            "the running binary carries no DWARF to compare (build it with -g), so the cause is unknown".into()
        } else {
            "compiler, flags and build directory agree: the sources differ (is the running binary built from this tree, \
             through `hotfix build`'s wrapper?)"
                .into()
        }
    } else {
        out.join("; ")
    }
}

#[derive(Debug, Default)]
struct Provenance {
    compiler: Option<String>,
    producer: Option<String>,
    comp_dir: Option<String>,
}

fn provenance(data: &[u8]) -> Provenance {
    use object::{Object, ObjectSection};
    let mut p = Provenance::default();
    let Ok(file) = object::File::parse(data) else {
        return p;
    };
    if let Some(s) = file.section_by_name(".comment")
        && let Ok(d) = s.data()
    {
        let parts: Vec<String> = d
            .split(|b| *b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect();
        if !parts.is_empty() {
            p.compiler = Some(parts.join(" | "));
        }
    }
    let load = |id: gimli::SectionId| -> Result<gimli::EndianSlice<'_, gimli::LittleEndian>, gimli::Error> {
        let d = file
            .section_by_name(id.name())
            .and_then(|s| s.data().ok())
            .unwrap_or(&[]);
        Ok(gimli::EndianSlice::new(d, gimli::LittleEndian))
    };
    let Ok(dwarf) = gimli::Dwarf::load(load) else {
        return p;
    };
    let mut units = dwarf.units();
    if let Ok(Some(h)) = units.next()
        && let Ok(unit) = dwarf.unit(h)
    {
        let mut cursor = unit.entries();
        if let Ok(Some(cu)) = cursor.next_dfs() {
            let s = |at| {
                cu.attr_value(at)
                    .and_then(|v| dwarf.attr_string(&unit, v).ok())
                    .map(|r| String::from_utf8_lossy(r.slice()).into_owned())
            };
            p.producer = s(gimli::DW_AT_producer);
            p.comp_dir = s(gimli::DW_AT_comp_dir);
        }
    }
    p
}
