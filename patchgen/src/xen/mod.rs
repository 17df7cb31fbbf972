//! Xen hypervisor live patches: `hotfix build --xen`, from the built tree of
//! the running hypervisor and a source fix to a Xen live-patch payload.
//!
//! Model — the data flow, one module per step:
//! [`build`] (copy the built tree, apply the fix, rerun Xen's own build; the
//! objects it recompiled are the fix's objects; ABI sizes from the tree's
//! headers) → [`crate::diff_objects`] per object pair (the shared object
//! diff: changed and new functions, references, refusals) → Xen-specific
//! refusals (see below) → [`target`] (the target `xen-syms`: build-id,
//! symbols by name and source file, bytes) → [`emit`] (the payload:
//! `.livepatch.funcs`, build-id notes, code, special-section entries,
//! references as absolute addresses).
//!
//! Refused, with the patchgen refusal kinds and exit status 1: changes to
//! existing data (the diff engine's `data-changed`), functions shorter than
//! the 5-byte jump (9 with an `endbr64`: `too-short`), changed `__init`
//! code or data (`init-code`: freed after boot), new per-CPU variables
//! (`data-changed`: per-CPU areas are laid out at boot), new object files.
//! A fix without functional change exits 5.
//!
//! Invariants: nothing here touches a running hypervisor; the `--src` tree
//! is never written; the payload names its target by the build-id of the
//! `xen-syms` it was resolved against.

pub mod build;
pub mod emit;
pub mod target;

use crate::kernel::normalize;
use crate::read::ObjectFile;
use crate::{DiffOptions, Error, Refusal, RefusalKind};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub use emit::{Emitted, PayloadFunc};
pub use target::XenSyms;

/// A `hotfix build --xen` request.
#[derive(Debug, Clone)]
pub struct XenPlan {
    /// The built source tree of the running hypervisor (the directory
    /// holding `xen/`; `scripts/xenhost build` prints its parent).
    pub src: PathBuf,
    /// The fix, a unified diff applied with `patch -p1` at the tree's top.
    pub diff: PathBuf,
    /// The payload to write (`NAME.livepatch`).
    pub output: PathBuf,
    /// Payload name; default: the output's file name up to the first dot.
    pub name: Option<String>,
    /// Make arguments of the original build; default: the lines of
    /// `SRC/../make-args` (written by `scripts/xenhost build`).
    pub make_args: Option<Vec<String>>,
    /// The target hypervisor's `xen-syms`; default: `SRC/xen/xen-syms`.
    pub xen_syms: Option<PathBuf>,
    /// A payload this one stacks on (its build-id goes into
    /// `.livepatch.depends`); default: the hypervisor's build-id.
    pub depends: Option<PathBuf>,
    /// Work directory, kept; default: a fresh temporary one, removed on
    /// success (on failure only its logs are kept).
    pub workdir: Option<PathBuf>,
}

/// What one recompiled object gave.
#[derive(Debug, Clone, Serialize)]
pub struct ObjectResult {
    /// Path relative to `xen/`.
    pub object: String,
    /// `changed` or `no functional change`.
    pub result: String,
    /// Replaced functions.
    pub changed: Vec<String>,
    /// Functions whose only difference is `__LINE__` immediates.
    pub line_only: Vec<String>,
}

/// What `hotfix build --xen` produced.
#[derive(Debug, Clone, Serialize)]
pub struct XenOutcome {
    /// Payload name.
    pub name: String,
    /// The payload written.
    pub output: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// Its own build-id (hex).
    pub build_id: String,
    /// The target hypervisor's build-id (`.livepatch.xen_depends`).
    pub xen_build_id: String,
    /// `.livepatch.depends` (hex).
    pub depends: String,
    /// Every recompiled object.
    pub objects: Vec<ObjectResult>,
    /// The `.livepatch.funcs` records.
    pub funcs: Vec<PayloadFunc>,
    /// New functions carried.
    pub new_funcs: Vec<String>,
    /// Hypervisor symbols resolved to absolute addresses.
    pub resolved: usize,
    /// Special-section entries carried.
    pub special: std::collections::BTreeMap<String, usize>,
    /// ABI sizes read from the tree's headers.
    pub sizes: build::Sizes,
    /// Time of the patched hypervisor build, in milliseconds.
    pub build_ms: u64,
    /// Time of diffing and writing the payload, in milliseconds.
    pub emit_ms: u64,
    /// The work directory, when kept.
    pub workdir: Option<PathBuf>,
}

fn default_name(output: &Path) -> String {
    output
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .and_then(|s| s.split('.').next().map(str::to_owned))
        .unwrap_or_default()
}

fn read(p: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(p).map_err(|source| Error::Io {
        path: p.to_path_buf(),
        source,
    })
}

/// Make arguments recorded next to a cached tree (`SRC/../make-args`).
pub fn recorded_make_args(src: &Path) -> Result<Vec<String>, Error> {
    let p = src
        .parent()
        .map(|d| d.join("make-args"))
        .unwrap_or_else(|| PathBuf::from("make-args"));
    let text = std::fs::read_to_string(&p).map_err(|source| Error::Io {
        path: p.clone(),
        source,
    })?;
    Ok(text
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

/// Builds a Xen live-patch payload from a built tree and a fix.
pub fn build_payload(plan: &XenPlan) -> Result<XenOutcome, Error> {
    let name = plan
        .name
        .clone()
        .unwrap_or_else(|| default_name(&plan.output));
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(Error::Build {
            step: "check the payload name".into(),
            reason: format!("{name:?} is not a payload name ([A-Za-z0-9_-]{{1,64}})"),
            log: None,
        });
    }
    if !plan.src.join("xen").is_dir() {
        return Err(Error::Io {
            path: plan.src.join("xen"),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "not a Xen source tree (no xen/ directory)",
            ),
        });
    }
    let diff_text = read(&plan.diff)?;
    let make_args = match &plan.make_args {
        Some(a) => a.clone(),
        None => recorded_make_args(&plan.src)?,
    };
    let syms_path = plan
        .xen_syms
        .clone()
        .unwrap_or_else(|| plan.src.join("xen/xen-syms"));
    let xen = XenSyms::read(&syms_path)?;
    let depends = match &plan.depends {
        None => xen.build_id.clone(),
        Some(p) => {
            let bytes = read(p)?;
            let id = crate::read::build_id(&bytes, &p.display().to_string())?.ok_or_else(|| {
                Error::Parse {
                    file: p.display().to_string(),
                    reason: "no .note.gnu.build-id: not a payload to stack on".into(),
                }
            })?;
            hex::decode(&id).map_err(|e| Error::Parse {
                file: p.display().to_string(),
                reason: e.to_string(),
            })?
        }
    };
    let keep = plan.workdir.is_some();
    let work = plan.workdir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!(
            "hotfix-xen-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ))
    });
    if work.join("tree").exists() {
        return Err(Error::Build {
            step: "set up the work directory".into(),
            reason: format!("{} already holds a tree", work.display()),
            log: None,
        });
    }
    let diff_abs = std::fs::canonicalize(&plan.diff).unwrap_or_else(|_| plan.diff.clone());
    let result = build_in(
        plan, &name, &work, &diff_abs, &diff_text, &make_args, &xen, depends,
    );
    if !keep {
        if result.is_ok() {
            let _ = std::fs::remove_dir_all(&work);
        } else {
            // Keep the logs an error names; drop the 80 MB tree copy.
            let _ = std::fs::remove_dir_all(work.join("tree"));
        }
    }
    result.map(|mut o| {
        o.workdir = keep.then_some(work);
        o
    })
}

#[allow(clippy::too_many_arguments)]
fn build_in(
    plan: &XenPlan,
    name: &str,
    work: &Path,
    diff: &Path,
    diff_text: &[u8],
    make_args: &[String],
    xen: &XenSyms,
    depends: Vec<u8>,
) -> Result<XenOutcome, Error> {
    let t0 = Instant::now();
    std::fs::create_dir_all(work).map_err(|source| Error::Io {
        path: work.to_path_buf(),
        source,
    })?;
    let pairs = build::build_pair(&plan.src, diff, make_args, work)?;
    let build_ms = t0.elapsed().as_millis() as u64;
    let t1 = Instant::now();
    let sizes = build::probe_sizes(&work.join("tree/xen"), &work.join("probe"))?;
    let source_hash = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(diff_text))
    };
    let mut refusals: Vec<Refusal> = Vec::new();
    let mut objects = Vec::new();
    // (rel, patched object, patch object, meta)
    let mut kept = Vec::new();
    for pair in &pairs {
        let rel = pair.rel.display().to_string();
        if !pair.orig.exists() {
            return Err(Error::Build {
                step: "pair the recompiled objects".into(),
                reason: format!(
                    "{rel} is a new object file; a fix adding source files cannot be built into a payload"
                ),
                log: None,
            });
        }
        let o_name = pair.orig.display().to_string();
        let p_name = pair.patched.display().to_string();
        // `__init` code shares `.init.text` even with function sections:
        // the kernel branch's normalisation (changed once-only code is
        // refused; the rest hidden from the diff) applies as it is.
        let o_raw = normalize::normalize(&read(&pair.orig)?, &o_name)?;
        let p_raw = normalize::normalize(&read(&pair.patched)?, &p_name)?;
        let init = normalize::init_changes(
            &ObjectFile::parse(&o_raw, &o_name)?,
            &ObjectFile::parse(&p_raw, &p_name)?,
        );
        if !init.is_empty() {
            // The kernel's wording speaks of modules; say it for Xen.
            refusals.extend(init.into_iter().map(|r| Refusal {
                reason: "the fix changes __init code (.init.text), which ran at boot and was freed; a live patch cannot change it".into(),
                ..r
            }));
            continue;
        }
        let opts = DiffOptions {
            id: name.to_owned(),
            description: String::new(),
            target: None,
            source_hash: Some(source_hash.clone()),
        };
        let report = match crate::diff_objects(&o_raw, &o_name, &p_raw, &p_name, &opts) {
            Ok(r) => r,
            Err(Error::NoChange { .. }) => {
                objects.push(ObjectResult {
                    object: rel,
                    result: "no functional change".into(),
                    changed: Vec::new(),
                    line_only: Vec::new(),
                });
                continue;
            }
            Err(Error::Refused { refusals: r, .. }) => {
                refusals.extend(r);
                continue;
            }
            Err(e) => return Err(e),
        };
        let patched = ObjectFile::parse(&p_raw, &p_name)?;
        let patch = ObjectFile::parse(&report.patch, &format!("{rel} (patch)"))?;
        // Xen-specific refusals.
        for f in &report.meta.funcs {
            let sec = patched
                .symbols
                .iter()
                .find(|s| s.name == f.new_symbol && s.is_func() && !s.undefined)
                .and_then(|s| s.section)
                .and_then(|i| patched.sec(i));
            if sec.is_some_and(|s| s.name.starts_with(".init")) {
                refusals.push(Refusal {
                    kind: RefusalKind::InitCode,
                    symbol: f.name.clone(),
                    reason: "is __init code: it ran at boot and was freed".into(),
                });
            }
        }
        for s in &patch.sections {
            let percpu = s.name.contains(".percpu");
            if s.flags & crate::read::shf::ALLOC != 0 && (percpu || s.name.starts_with(".init")) {
                let what = patch
                    .entities_in(s.index)
                    .next()
                    .map_or_else(|| s.name.clone(), |e| e.name.clone());
                refusals.push(Refusal {
                    kind: if percpu {
                        RefusalKind::DataChanged
                    } else {
                        RefusalKind::InitCode
                    },
                    symbol: what,
                    reason: if percpu {
                        format!(
                            "new per-CPU data ({}): per-CPU areas are laid out at boot",
                            s.name
                        )
                    } else {
                        format!(
                            "new __init code or data ({}): init sections are freed after boot",
                            s.name
                        )
                    },
                });
            }
        }
        objects.push(ObjectResult {
            object: rel.clone(),
            result: "changed".into(),
            changed: report.changed.iter().map(|c| c.name.clone()).collect(),
            line_only: report.line_only.clone(),
        });
        kept.push((rel, patched, patch, report.meta));
    }
    if !refusals.is_empty() {
        return Err(Error::Refused {
            file: plan.diff.display().to_string(),
            refusals,
        });
    }
    if kept.is_empty() {
        return Err(Error::NoChange {
            orig: plan.src.display().to_string(),
            patched: plan.diff.display().to_string(),
            line_only: objects.iter().map(|o| o.line_only.len()).sum(),
        });
    }
    let input = emit::PayloadInput {
        name,
        xen,
        sizes: &sizes,
        depends: depends.clone(),
        parts: kept
            .iter()
            .map(|(rel, patched, patch, meta)| emit::Part {
                rel: rel.clone(),
                patched,
                patch,
                meta,
            })
            .collect(),
    };
    let out_name = plan.output.display().to_string();
    let emitted = emit::emit(&input, &out_name)?;
    std::fs::write(&plan.output, &emitted.bytes).map_err(|source| Error::Io {
        path: plan.output.clone(),
        source,
    })?;
    Ok(XenOutcome {
        name: name.to_owned(),
        output: plan.output.clone(),
        size: emitted.bytes.len() as u64,
        build_id: emitted.build_id.clone(),
        xen_build_id: xen.build_id_hex(),
        depends: hex::encode(&depends),
        objects,
        funcs: emitted.funcs,
        new_funcs: emitted.new_funcs,
        resolved: emitted.resolved.len(),
        special: emitted.special,
        sizes,
        build_ms,
        emit_ms: t1.elapsed().as_millis() as u64,
        workdir: None,
    })
}
