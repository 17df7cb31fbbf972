//! The object-pair entry point: read both objects, analyze, plan, emit.
//!
//! Model: [`diff_objects`] is the whole pipeline for one pair; it either
//! returns a [`DiffReport`] holding the patch bytes, or an [`Error`] whose
//! status distinguishes bad input and refusals (1) from "no functional
//! change" (5).
//!
//! Invariants: refusals are checked before anything is emitted; the emitted
//! metadata always passes [`crate::format::Meta::validate_self`].

use crate::read::ObjectFile;
use crate::{Error, compare, emit, format, include};
use serde::Serialize;
use sha2::Digest;

/// Options of [`diff_objects`].
#[derive(Debug, Clone)]
pub struct DiffOptions {
    /// Patch id (`[A-Za-z0-9._-]+`).
    pub id: String,
    /// Human description.
    pub description: String,
    /// The target object stamped into the metadata; `None`: build-id empty
    /// and the original object's name.
    pub target: Option<format::Target>,
    /// Hex SHA-256 of the source fix; `None`: that of the patched object.
    pub source_hash: Option<String>,
}

impl Default for DiffOptions {
    fn default() -> Self {
        DiffOptions {
            id: "patch".into(),
            description: String::new(),
            target: None,
            source_hash: None,
        }
    }
}

/// One function of the original replaced (or accompanied) by patch code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FuncChange {
    /// Symbol of the new code in the patch (the patched object's name).
    pub name: String,
    /// Name of the function in the original object.
    pub old_name: String,
    /// Why it counts as changed.
    pub reason: String,
    /// Whether the original gets a jump (false for `.cold` children).
    pub replaced: bool,
}

/// The result of [`diff_objects`].
#[derive(Debug, Clone, Serialize)]
pub struct DiffReport {
    /// Name of the original object.
    pub orig: String,
    /// Name of the patched object.
    pub patched: String,
    /// Changed functions, in the patched object's symbol order.
    pub changed: Vec<FuncChange>,
    /// Functions new in the patch.
    pub new_funcs: Vec<String>,
    /// Data objects carried by the patch (new, or changed read-only locals).
    pub new_data: Vec<String>,
    /// Functions that differ only in `__LINE__` immediates (not patched).
    pub line_only: Vec<String>,
    /// The patch object (ELF bytes).
    #[serde(skip)]
    pub patch: Vec<u8>,
    /// Its metadata.
    pub meta: format::Meta,
}

/// Diffs two objects built from the same source and builds the patch.
///
/// Errors: bad input ([`Error::Parse`], [`Error::WrongMachine`], ...),
/// [`Error::Refused`] for changes that cannot be patched safely, and
/// [`Error::NoChange`] (exit status 5) when nothing functional changed.
pub fn diff_objects(
    orig: &[u8],
    orig_name: &str,
    patched: &[u8],
    patched_name: &str,
    opts: &DiffOptions,
) -> Result<DiffReport, Error> {
    let o = ObjectFile::parse(orig, orig_name)?;
    let p = ObjectFile::parse(patched, patched_name)?;
    let an = compare::analyze(&o, &p)?;
    let name = |obj: &ObjectFile, i: usize| obj.sym(i).map_or(String::new(), |s| s.name.clone());
    if !an.refusals.is_empty() {
        return Err(Error::Refused {
            file: patched_name.to_owned(),
            refusals: an.refusals,
        });
    }
    if an.is_empty() {
        return Err(Error::NoChange {
            orig: orig_name.to_owned(),
            patched: patched_name.to_owned(),
            line_only: an.line_only.len(),
        });
    }
    let plan = include::plan(&p, &an)?;
    let target = opts.target.clone().unwrap_or_else(|| format::Target {
        build_id: String::new(),
        name: orig_name.to_owned(),
    });
    let input = emit::EmitInput {
        id: &opts.id,
        description: &opts.description,
        source_hash: opts
            .source_hash
            .clone()
            .unwrap_or_else(|| hex::encode(sha2::Sha256::digest(patched))),
        target,
    };
    let (bytes, meta) = emit::emit(&o, &p, &an, &plan, &input, &opts.id)?;
    Ok(DiffReport {
        orig: orig_name.to_owned(),
        patched: patched_name.to_owned(),
        changed: an
            .changed
            .iter()
            .map(|c| FuncChange {
                name: name(&p, c.patched),
                old_name: name(&o, c.orig),
                reason: c.reason.clone(),
                replaced: c.replace,
            })
            .collect(),
        new_funcs: plan
            .funcs
            .iter()
            .filter(|&&f| an.corr.orig_of(f).is_none())
            .map(|&f| name(&p, f))
            .collect(),
        new_data: plan.data.iter().map(|&d| name(&p, d)).collect(),
        line_only: an.line_only.iter().map(|&f| name(&p, f)).collect(),
        patch: bytes,
        meta,
    })
}

impl DiffReport {
    /// The human summary printed by `hotfix diff` (stable; snapshot-tested).
    pub fn render(&self) -> String {
        let mut out = format!(
            "patch {}: {} -> {}: {} changed, {} new function(s), {} new data\n",
            self.meta.id,
            self.orig,
            self.patched,
            self.changed.len(),
            self.new_funcs.len(),
            self.new_data.len()
        );
        for c in &self.changed {
            let what = if c.replaced { "changed" } else { "child" };
            if c.name == c.old_name {
                out.push_str(&format!("  {what:<9} {}: {}\n", c.name, c.reason));
            } else {
                out.push_str(&format!(
                    "  {what:<9} {} (was {}): {}\n",
                    c.name, c.old_name, c.reason
                ));
            }
        }
        for f in &self.new_funcs {
            out.push_str(&format!("  {:<9} {f}\n", "new"));
        }
        for d in &self.new_data {
            out.push_str(&format!("  {:<9} {d}\n", "data"));
        }
        for l in &self.line_only {
            out.push_str(&format!(
                "  {:<9} {l}: only __LINE__ immediates differ (not patched)\n",
                "same"
            ));
        }
        for r in &self.meta.refs {
            let pos = match (&r.file, r.sympos) {
                (Some(f), 0) => format!(" ({f})"),
                (Some(f), n) => format!(" ({f}, #{n})"),
                (None, _) => String::new(),
            };
            out.push_str(&format!("  {:<9} {}{pos}\n", "ref", r.name));
        }
        out
    }
}
