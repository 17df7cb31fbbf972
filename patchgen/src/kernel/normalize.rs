//! Kernel objects made diffable: what kbuild emits, seen by the object diff
//! engine ([`crate::diff_objects`]).
//!
//! Model: a kernel object compiled with `-ffunction-sections` still groups
//! `__init`/`__exit` code in `.init.text`/`.exit.text` (the section
//! attribute wins), with `init_module`/`cleanup_module` as aliases. That code
//! runs once, at load or unload; a live patch can never change it. So:
//! [`init_changes`] compares those sections of both objects (bytes and
//! relocations by symbol name) and names their functions when they differ
//! (the caller refuses: [`crate::RefusalKind::InitCode`]); [`normalize`]
//! then retypes their function symbols to `STT_NOTYPE`, so that the diff
//! engine treats them as opaque, identical data.
//!
//! Invariant: only symbol types in once-only sections change; no byte of
//! code or data is touched.

use crate::read::ObjectFile;
use crate::{Error, Refusal, RefusalKind};
use object::build::elf::Builder;
use object::elf;

/// Sections whose code runs only at module load or unload.
pub fn is_once_only(section: &str) -> bool {
    section.starts_with(".init.") || section.starts_with(".exit.") || section == ".text.startup"
}

/// Retypes function symbols of once-only sections to `STT_NOTYPE`.
pub fn normalize(data: &[u8], file: &str) -> Result<Vec<u8>, Error> {
    let parse = |e: object::build::Error| Error::Parse {
        file: file.to_owned(),
        reason: e.to_string(),
    };
    let mut b = Builder::read(data).map_err(parse)?;
    let once: Vec<_> = b
        .sections
        .iter()
        .filter(|s| is_once_only(&String::from_utf8_lossy(&s.name)))
        .map(|s| s.id())
        .collect();
    for sym in b.symbols.iter_mut() {
        if sym.st_type() == elf::STT_FUNC && sym.section.is_some_and(|s| once.contains(&s)) {
            sym.st_info = elf::SymbolInfo::new(sym.st_bind(), elf::STT_NOTYPE);
        }
    }
    let mut out = Vec::with_capacity(data.len());
    b.write(&mut out).map_err(|e| Error::Emit {
        file: file.to_owned(),
        reason: e.to_string(),
    })?;
    Ok(out)
}

/// A comparable view of one once-only section: bytes and relocations with
/// symbol names instead of indices.
/// Relocations as `(offset, type, target name, addend)`.
type NamedRelocs = Vec<(u64, u32, String, i64)>;

fn section_view(obj: &ObjectFile, name: &str) -> Option<(Vec<u8>, NamedRelocs)> {
    let s = obj.sections.iter().find(|s| s.name == name)?;
    let relocs = s
        .relocs
        .iter()
        .map(|r| {
            let target = obj.sym(r.symbol).map_or(String::new(), |t| {
                if t.name.is_empty() {
                    t.section
                        .and_then(|i| obj.sec(i))
                        .map_or(String::new(), |sec| sec.name.clone())
                } else {
                    t.name.clone()
                }
            });
            (r.offset, r.r_type, target, r.addend)
        })
        .collect();
    Some((s.data.clone(), relocs))
}

/// One function's bytes and named relocations.
type FuncView = (Vec<u8>, NamedRelocs);

/// The functions of once-only section `name` of `obj` (retyped to
/// `STT_NOTYPE` by [`normalize`], or still `STT_FUNC`) with a comparable
/// view of each: bytes and relocations, offsets relative to the function.
fn once_funcs(obj: &ObjectFile, name: &str) -> Vec<(String, Option<FuncView>)> {
    let Some(sec) = obj.sections.iter().find(|s| s.name == name) else {
        return Vec::new();
    };
    obj.symbols
        .iter()
        .filter(|s| {
            (s.is_func() || s.kind == elf::STT_NOTYPE.0)
                && !s.name.is_empty()
                && !s.name.starts_with(".L")
                && s.section == Some(sec.index)
                && !matches!(s.name.as_str(), "init_module" | "cleanup_module")
        })
        .map(|s| {
            let relocs = sec
                .relocs_in(s.value, s.value.saturating_add(s.size))
                .iter()
                .map(|r| {
                    let t = obj.sym(r.symbol).map_or(String::new(), |t| t.name.clone());
                    (r.offset - s.value, r.r_type, t, r.addend)
                })
                .collect();
            let bytes = sec.bytes(s.value, s.size).map(<[u8]>::to_vec);
            (s.name.clone(), bytes.map(|b| (b, relocs)))
        })
        .collect()
}

/// Refusals for once-only sections that differ between the two objects,
/// naming the functions there that differ (all of the section's functions
/// when none differs on its own, e.g. only the layout moved).
pub fn init_changes(orig: &ObjectFile, patched: &ObjectFile) -> Vec<Refusal> {
    let mut names: Vec<&str> = orig
        .sections
        .iter()
        .chain(patched.sections.iter())
        .map(|s| s.name.as_str())
        .filter(|n| is_once_only(n) && !n.starts_with(".rela"))
        .collect();
    names.sort_unstable();
    names.dedup();
    let mut out = Vec::new();
    for name in names {
        if section_view(orig, name) == section_view(patched, name) {
            continue;
        }
        let before = once_funcs(orig, name);
        let after = once_funcs(patched, name);
        let mut changed: Vec<String> = after
            .iter()
            .filter(|(n, v)| !before.iter().any(|(m, w)| m == n && w == v))
            .map(|(n, _)| n.clone())
            .collect();
        if changed.is_empty() {
            changed = after.iter().map(|(n, _)| n.clone()).collect();
        }
        let symbol = if changed.is_empty() {
            name.to_owned()
        } else {
            changed.join(", ")
        };
        out.push(Refusal {
            kind: RefusalKind::InitCode,
            symbol,
            reason: format!(
                "the fix changes {name}, code that runs only when the module loads or unloads; \
                 a live patch cannot change it (reload the module, or move the fix out of __init/__exit)"
            ),
        });
    }
    out
}

/// Both objects of a kernel pair normalized ([`normalize`]) and parsed, or
/// the [`Error::Refused`] naming the `__init`/`__exit` functions the fix
/// changes ([`init_changes`]).
pub fn normalize_pair(
    orig: &[u8],
    orig_name: &str,
    patched: &[u8],
    patched_name: &str,
) -> Result<(Vec<u8>, Vec<u8>), Error> {
    let o = normalize(orig, orig_name)?;
    let p = normalize(patched, patched_name)?;
    let init = init_changes(
        &ObjectFile::parse(&o, orig_name)?,
        &ObjectFile::parse(&p, patched_name)?,
    );
    if !init.is_empty() {
        return Err(Error::Refused {
            file: patched_name.to_owned(),
            refusals: init,
        });
    }
    Ok((o, p))
}

/// `hotfix diff --kernel`: the object diff of one kernel object pair, with
/// the normalization `hotfix build --kernel` applies (`__init`/`__exit`
/// code compared, refused when changed, otherwise opaque).
pub fn diff_kernel_objects(
    orig: &[u8],
    orig_name: &str,
    patched: &[u8],
    patched_name: &str,
    opts: &crate::DiffOptions,
) -> Result<crate::DiffReport, Error> {
    let (o, p) = normalize_pair(orig, orig_name, patched, patched_name)?;
    crate::diff_objects(&o, orig_name, &p, patched_name, opts)
}
