//! Kernel live patches: `hotfix build --kernel`, from a module source tree
//! (or the running kernel's own source, for vmlinux functions) and a fix to
//! a livepatch (`klp`) module.
//!
//! Model — the data flow, one module per step:
//! [`kbuild`] (build the module tree twice with `-ffunction-sections
//! -fdata-sections`; the objects kbuild recompiled are the fix's objects) or
//! [`vmlinux`] (compile the fix's objects of a prepared kernel source twice,
//! and check the originals against the running kernel's image: vmlinux, or
//! the shipped `.ko` of an in-tree module the object belongs to, which is
//! then the patch's object) →
//! [`normalize`] (refuse changes to `__init`/`__exit` code, hide it from the
//! diff) → [`crate::diff_objects`] (the shared object diff: changed and new
//! functions, references to everything else) → [`special`] (carry the
//! kernel special-section entries of the included functions) → [`link`]
//! (registration stub, kbuild, klp relocations).
//!
//! References of new code to symbols the kernel exports stay ordinary
//! undefined symbols (modpost and the module loader resolve them); every
//! other reference (local functions and data, static locals, unexported
//! globals of the patched module or of vmlinux) becomes a livepatch symbol
//! `.klp.sym.<object>.<name>,<sympos>` resolved by livepatch through
//! kallsyms. Special-section entries follow the same rule, except that
//! entries the module loader processes at load (jump labels, alternatives,
//! paravirt sites) cannot use late (module) livepatch relocations: see
//! [`special`].
//!
//! Invariant: nothing here touches the running kernel; the caller's module
//! tree is never written (a kernel source directory is patched in place
//! under a lock and restored, see [`vmlinux`]).

pub mod jump;
pub mod kbuild;
pub mod link;
pub mod modsign;
pub mod normalize;
pub mod special;
pub mod vmlinux;

use crate::format::Binding;
use crate::read::ObjectFile;
use crate::{DiffOptions, Error, Refusal};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

pub use link::{KlpFunc, KlpSym};

/// Special sections whose entries must accompany the code they describe.
pub const REQUIRED_SPECIAL: &[&str] = &[
    "__bug_table",
    "__ex_table",
    "__jump_table",
    ".altinstructions",
];

/// A `hotfix build --kernel` request.
#[derive(Debug, Clone)]
pub struct KlpPlan {
    /// The out-of-tree module's source tree (with its `Kbuild`/`Makefile`).
    pub module_src: PathBuf,
    /// The fix, a unified diff applied with `patch -p1` in the tree.
    pub diff: PathBuf,
    /// The livepatch module to write (`NAME.ko`).
    pub output: PathBuf,
    /// Kernel build tree (headers) the running module was built against.
    pub headers: PathBuf,
    /// Livepatch name; default: the output's file stem (`-` → `_`).
    pub name: Option<String>,
    /// Atomic replace: the patch replaces every earlier livepatch.
    pub replace: bool,
    /// `MODULE_DESCRIPTION`; default: names the fix.
    pub description: Option<String>,
    /// Work directory (kept); default: a fresh one under the temp dir,
    /// removed on success.
    pub workdir: Option<PathBuf>,
}

/// What `hotfix build --kernel` produced.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KlpOutcome {
    /// Livepatch (module) name.
    pub name: String,
    /// The module written.
    pub output: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// Objects the fix recompiled (relative to the tree).
    pub objects: Vec<String>,
    /// Replaced functions.
    pub funcs: Vec<KlpFunc>,
    /// Functions new in the patch.
    pub new_funcs: Vec<String>,
    /// References resolved by livepatch.
    pub klp_syms: Vec<KlpSym>,
    /// `.klp.rela` sections and their entry counts.
    pub klp_sections: Vec<(String, usize)>,
    /// Special-section entries dropped as safe to drop (section, function):
    /// static-call sites whose key needs a late livepatch relocation.
    pub dropped_special: Vec<(String, String)>,
    /// Special-section entries carried: (section, entries).
    pub carried_special: Vec<(String, usize)>,
    /// Time of the two module builds, in milliseconds.
    pub build_ms: u64,
    /// Time of diffing and linking the livepatch module, in milliseconds.
    pub link_ms: u64,
}

/// Symbols exported by the kernel build tree (`Module.symvers`).
pub fn exported(headers: &Path) -> Result<BTreeSet<String>, Error> {
    let path = headers.join("Module.symvers");
    let text = std::fs::read_to_string(&path).map_err(|source| Error::Io {
        path: path.clone(),
        source,
    })?;
    Ok(text
        .lines()
        .filter_map(|l| l.split('\t').nth(1))
        .map(str::to_owned)
        .collect())
}

/// Special-section entries that describe code of `funcs` in `obj`:
/// `(section, function)` pairs.
pub fn special_entries(obj: &ObjectFile, funcs: &BTreeSet<String>) -> Vec<(String, String)> {
    let mut out = BTreeSet::new();
    for sec in &obj.sections {
        let base = sec.name.as_str();
        if base.starts_with(".rela") || base.starts_with(".debug") || base.starts_with(".text") {
            continue;
        }
        for r in &sec.relocs {
            let Some(t) = obj.sym(r.symbol) else {
                continue;
            };
            // The function a relocation points into: a named function, or
            // the function owning the section of a section symbol.
            let func = if t.is_func() {
                Some(t.name.clone())
            } else {
                t.section.and_then(|s| {
                    obj.entities_in(s)
                        .find(|e| e.is_func())
                        .map(|e| e.name.clone())
                })
            };
            if let Some(f) = func.filter(|f| funcs.contains(f)) {
                out.insert((base.to_owned(), f));
            }
        }
    }
    out.into_iter().collect()
}

/// The patched module's symbols: for an in-tree module (`ksrc` given,
/// `module` not `vmlinux`) the image's shipped `.ko`, also returned as an
/// image to check the compiled functions against; for an out-of-tree
/// module the original build's `.ko`; for vmlinux nothing.
fn module_symbols(
    ksrc: Option<&vmlinux::KernelSrc>,
    work: &Path,
    module: &str,
) -> Result<(Option<vmlinux::Vmlinux>, Option<kbuild::ModuleSymbols>), Error> {
    match ksrc {
        Some(_) if module == "vmlinux" => Ok((None, None)),
        Some(ks) => {
            let ko = vmlinux::shipped_module(ks, module)?;
            Ok((
                Some(vmlinux::Vmlinux::load_path(&ko)?),
                Some(kbuild::ModuleSymbols::read(&ko)?),
            ))
        }
        None => Ok((
            None,
            kbuild::find_module(&work.join("orig"), module)
                .map(|ko| kbuild::ModuleSymbols::read(&ko))
                .transpose()?,
        )),
    }
}

fn default_name(output: &Path) -> String {
    output
        .file_stem()
        .map(|s| s.to_string_lossy().replace('-', "_"))
        .unwrap_or_else(|| "hotfix_klp".into())
}

/// Builds a livepatch module from a module source tree and a fix.
pub fn build_klp(plan: &KlpPlan) -> Result<KlpOutcome, Error> {
    let name = plan
        .name
        .clone()
        .unwrap_or_else(|| default_name(&plan.output));
    if name.is_empty()
        || name.len() > 55
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(Error::Build {
            step: "check the livepatch name".into(),
            reason: format!("{name:?} is not a module name ([A-Za-z0-9_]{{1,55}})"),
            log: None,
        });
    }
    for (what, p) in [
        ("module source", &plan.module_src),
        ("headers", &plan.headers),
    ] {
        if !p.is_dir() {
            return Err(Error::Io {
                path: p.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("{what} directory not found"),
                ),
            });
        }
    }
    let diff_text = std::fs::read(&plan.diff).map_err(|source| Error::Io {
        path: plan.diff.clone(),
        source,
    })?;
    let keep = plan.workdir.is_some();
    let work = plan.workdir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!(
            "hotfix-klp-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ))
    });
    let diff_abs = std::fs::canonicalize(&plan.diff).unwrap_or_else(|_| plan.diff.clone());
    let result = build_in(plan, &name, &work, &diff_abs, &diff_text);
    if !keep && result.is_ok() {
        let _ = std::fs::remove_dir_all(&work);
    }
    result
}

fn build_in(
    plan: &KlpPlan,
    name: &str,
    work: &Path,
    diff: &Path,
    diff_text: &[u8],
) -> Result<KlpOutcome, Error> {
    let t0 = Instant::now();
    std::fs::create_dir_all(work).map_err(|source| Error::Io {
        path: work.to_path_buf(),
        source,
    })?;
    let ksrc = vmlinux::KernelSrc::detect(&plan.module_src);
    let pairs = match &ksrc {
        Some(ks) => {
            let release = ks.release()?;
            let uts = plan.headers.join("include/generated/utsrelease.h");
            let headers_release = std::fs::read_to_string(&uts).unwrap_or_default();
            if !headers_release.contains(&format!("\"{release}\"")) {
                return Err(Error::KernelMismatch {
                    file: uts.display().to_string(),
                    symbol: "UTS_RELEASE".into(),
                    address: 0,
                    reason: format!(
                        "the kernel source {} is prepared for {release}, the headers are not",
                        ks.dir.display()
                    ),
                });
            }
            vmlinux::build_pair(ks, diff, work)?
        }
        None => kbuild::build_pair(&plan.headers, &plan.module_src, diff, work)?,
    };
    let build_ms = t0.elapsed().as_millis() as u64;
    let t1 = Instant::now();
    if pairs.is_empty() {
        return Err(Error::NoChange {
            orig: plan.module_src.display().to_string(),
            patched: plan.diff.display().to_string(),
            line_only: 0,
        });
    }
    let exports = exported(&plan.headers)?;
    // Special-section entries may also use symbols the patched module
    // itself exports (an ordinary relocation the module loader resolves).
    let mut special_exports = exports.clone();
    if let Ok(text) = std::fs::read_to_string(work.join("orig/Module.symvers")) {
        special_exports.extend(
            text.lines()
                .filter_map(|l| l.split('\t').nth(1))
                .map(str::to_owned),
        );
    }
    let layout = special::probe_layout(&plan.headers, &work.join("sizes"))?;
    let running = match &ksrc {
        Some(ks) => Some(vmlinux::Vmlinux::load(ks)?),
        None => None,
    };
    let mut carried_special: BTreeMap<String, usize> = BTreeMap::new();
    let source_hash = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(diff_text))
    };
    let mut funcs = Vec::new();
    let mut new_funcs = Vec::new();
    let mut klp_syms: Vec<KlpSym> = Vec::new();
    let mut parts = Vec::new();
    let mut dropped_special = Vec::new();
    let mut objects = Vec::new();
    let mut refusals: Vec<Refusal> = Vec::new();
    let mut expect: Vec<(String, String, u32, Option<String>)> = Vec::new();
    let mut no_change = 0usize;
    for pair in &pairs {
        let rel = pair.rel.display().to_string();
        let read = |p: &Path| {
            std::fs::read(p).map_err(|source| Error::Io {
                path: p.to_path_buf(),
                source,
            })
        };
        let (o_raw, p_raw) = (read(&pair.orig)?, read(&pair.patched)?);
        let o_name = pair.orig.display().to_string();
        let p_name = pair.patched.display().to_string();
        let o_obj = ObjectFile::parse(&normalize::normalize(&o_raw, &o_name)?, &o_name)?;
        let p_obj = ObjectFile::parse(&normalize::normalize(&p_raw, &p_name)?, &p_name)?;
        let init = normalize::init_changes(&o_obj, &p_obj);
        if !init.is_empty() {
            refusals.extend(init);
            continue;
        }
        let opts = DiffOptions {
            id: name.to_owned(),
            description: plan.description.clone().unwrap_or_default(),
            target: None,
            source_hash: Some(source_hash.clone()),
        };
        let report = match crate::diff_objects(
            &normalize::normalize(&o_raw, &o_name)?,
            &o_name,
            &normalize::normalize(&p_raw, &p_name)?,
            &p_name,
            &opts,
        ) {
            Ok(r) => r,
            Err(Error::NoChange { .. }) => {
                no_change += 1;
                continue;
            }
            Err(e) => return Err(e),
        };
        objects.push(rel.clone());
        // Special sections of the included functions: carried (see
        // [`special`]); refusals name the function and the entry.
        let klp_start = klp_syms.len();
        // The original linked module: symbol positions as kallsyms counts
        // (for an in-tree module, the image's shipped .ko, whose bytes the
        // compiled functions are also checked against).
        let (shipped, modsyms) = module_symbols(ksrc.as_ref(), work, &pair.module)?;
        let ctx = special::RefContext {
            object: &pair.module,
            exports: &special_exports,
            orig: &o_obj,
        };
        let (patch_obj, carried) =
            match special::carry(&p_obj, &report.patch, &layout, &ctx, &mut klp_syms) {
                Ok(c) => c,
                Err(Error::Refused { refusals: r, .. }) => {
                    refusals.extend(r);
                    continue;
                }
                Err(e) => return Err(e),
            };
        for (sec, n) in carried.kept {
            *carried_special.entry(sec).or_insert(0) += n;
        }
        dropped_special.extend(carried.dropped.into_iter().map(|(s, f, _)| (s, f)));
        // livepatch attaches to each replaced function's ftrace site.
        let replaced: Vec<&str> = report.meta.funcs.iter().map(|f| f.name.as_str()).collect();
        let untraced = special::untraceable(&o_obj, &replaced);
        if !untraced.is_empty() {
            refusals.extend(untraced);
            continue;
        }
        let mut renames = BTreeMap::new();
        for f in &report.meta.funcs {
            let new_symbol = format!("__hotfix_new_{}", funcs.len());
            renames.insert(f.new_symbol.clone(), new_symbol.clone());
            // vmlinux: the compiled function must be the running one; its
            // position comes from the running kernel's symbols.
            let sympos = match (&running, &shipped) {
                (Some(v), None) => v.check_function(&o_obj, &f.name)?,
                (_, Some(ko)) => {
                    ko.check_function(&o_obj, &f.name)?;
                    modsyms
                        .as_ref()
                        .and_then(|m| m.sympos(o_obj.source_file.as_deref(), &f.name, f.sympos))
                        .unwrap_or(f.sympos)
                }
                (None, None) => modsyms
                    .as_ref()
                    .and_then(|m| m.sympos(o_obj.source_file.as_deref(), &f.name, f.sympos))
                    .unwrap_or(f.sympos),
            };
            expect.push((
                pair.module.clone(),
                f.name.clone(),
                sympos,
                jump::expected_site(&o_raw, &f.name),
            ));
            funcs.push(KlpFunc {
                object: pair.module.clone(),
                old_name: f.name.clone(),
                sympos,
                new_symbol,
            });
        }
        for r in &report.meta.refs {
            // A symbol of the patched module itself is always resolved by
            // livepatch: an ordinary reference would make the patch depend
            // on (and load) that module.
            let own = shipped.is_some() && modsyms.as_ref().is_some_and(|m| m.defines(&r.name));
            let global_exported = r.binding != Binding::Local && exports.contains(&r.name) && !own;
            if global_exported {
                continue;
            }
            let placeholder = format!("__hotfix_klp_{}", klp_syms.len());
            renames.insert(r.symbol.clone(), placeholder.clone());
            klp_syms.push(KlpSym {
                placeholder,
                object: pair.module.clone(),
                name: r.name.clone(),
                sympos: r.sympos,
            });
        }
        if let (Some(v), Some(_), Some(m)) = (&running, &shipped, &modsyms) {
            // In-tree module: the module's own symbols, else vmlinux's.
            for k in klp_syms.iter_mut().skip(klp_start) {
                match m.sympos(o_obj.source_file.as_deref(), &k.name, k.sympos) {
                    Some(pos) => k.sympos = pos,
                    None => {
                        k.object = "vmlinux".into();
                        k.sympos = v.ref_pos(&o_obj, &k.name)?;
                    }
                }
            }
        } else if let Some(v) = &running {
            for k in klp_syms.iter_mut().skip(klp_start) {
                k.sympos = v.ref_pos(&o_obj, &k.name)?;
            }
        } else if let Some(m) = &modsyms {
            // Positions over the whole module, as kallsyms counts them.
            for k in klp_syms.iter_mut().skip(klp_start) {
                if k.object == pair.module
                    && let Some(pos) = m.sympos(o_obj.source_file.as_deref(), &k.name, k.sympos)
                {
                    k.sympos = pos;
                }
            }
        }
        new_funcs.extend(report.new_funcs.iter().cloned());
        parts.push(link::prepare_patch_object(&patch_obj, &rel, &renames)?);
    }
    if !refusals.is_empty() {
        return Err(Error::Refused {
            file: plan.diff.display().to_string(),
            refusals,
        });
    }
    if parts.is_empty() {
        return Err(Error::NoChange {
            orig: plan.module_src.display().to_string(),
            patched: plan.diff.display().to_string(),
            line_only: no_change,
        });
    }
    let description = plan.description.clone().unwrap_or_else(|| {
        format!(
            "hotfix: {}",
            plan.diff
                .file_name()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default()
        )
    });
    let stub = link::stub_c(&description, plan.replace, &funcs);
    // The patched module's own exports (keys of carried jump labels).
    let symvers = work.join("orig/Module.symvers");
    let extra: Vec<PathBuf> = std::fs::metadata(&symvers)
        .is_ok_and(|m| m.len() > 0)
        .then(|| symvers.clone())
        .into_iter()
        .collect();
    let ko = link::kbuild_module_with(
        &plan.headers,
        &work.join("klp"),
        name,
        &stub,
        &parts,
        &extra,
    )?;
    let ko_bytes = std::fs::read(&ko).map_err(|source| Error::Io {
        path: ko.clone(),
        source,
    })?;
    let (out, converted) = link::klp_convert(&ko_bytes, &ko.display().to_string(), &klp_syms)?;
    // Expected bytes of each jump site, for the jump method (kernel-jump.md).
    let out = jump::add_section(
        &out,
        jump::SECTION,
        jump::expect_text(&expect).as_bytes(),
        &ko.display().to_string(),
    )?;
    std::fs::write(&plan.output, &out).map_err(|source| Error::Io {
        path: plan.output.clone(),
        source,
    })?;
    Ok(KlpOutcome {
        name: name.to_owned(),
        output: plan.output.clone(),
        size: out.len() as u64,
        objects,
        funcs,
        new_funcs,
        klp_syms,
        klp_sections: converted.sections,
        dropped_special,
        carried_special: carried_special.into_iter().collect(),
        build_ms,
        link_ms: t1.elapsed().as_millis() as u64,
    })
}
