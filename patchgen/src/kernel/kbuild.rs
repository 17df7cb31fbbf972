//! Building an out-of-tree module twice through kbuild and finding the
//! objects the fix recompiled.
//!
//! Model: the original tree is copied to `WORK/orig` and built with
//! `make -C HEADERS M=WORK/orig modules KCFLAGS="-ffunction-sections
//! -fdata-sections"`; that build (objects and kbuild's `.cmd` files) is
//! copied to `WORK/patched`, the fix is applied there with `patch -p1`, and
//! kbuild runs again: it recompiles exactly the objects whose sources or
//! headers changed. Those are found by modification time and paired with
//! their originals. Each module's `<name>.mod` file (written by kbuild)
//! lists its objects, which gives the module an object belongs to.
//!
//! Invariant: the caller's source tree is never written; logs of every step
//! are kept in `WORK/*.log` and named in errors.

use crate::Error;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

/// Flags every kbuild run of `hotfix build --kernel` adds.
pub const KCFLAGS: &str = "-ffunction-sections -fdata-sections";

/// One object the fix recompiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectPair {
    /// Path relative to the module tree (`hfx_x2apic.o`).
    pub rel: PathBuf,
    /// The original build's object.
    pub orig: PathBuf,
    /// The patched build's object.
    pub patched: PathBuf,
    /// The module it is linked into (kbuild's `<module>.mod`).
    pub module: String,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Runs `cmd`, logging to `log`; an error names `step` and the log.
pub fn run_logged(step: &str, cmd: &mut Command, log: &Path) -> Result<(), Error> {
    let file = std::fs::File::create(log).map_err(io(log))?;
    let err = file.try_clone().map_err(io(log))?;
    let status = cmd
        .stdout(file)
        .stderr(err)
        .status()
        .map_err(|e| Error::Build {
            step: step.to_owned(),
            reason: format!("cannot run {:?}: {e}", cmd.get_program()),
            log: None,
        })?;
    if status.success() {
        return Ok(());
    }
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(12).collect();
    Err(Error::Build {
        step: step.to_owned(),
        reason: format!(
            "{status}; last lines:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        ),
        log: Some(log.to_path_buf()),
    })
}

/// `cp -a SRC/. DST` (DST created).
pub fn copy_tree(src: &Path, dst: &Path, log: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(dst).map_err(io(dst))?;
    run_logged(
        "copy the module tree",
        Command::new("cp").arg("-a").arg(src.join(".")).arg(dst),
        log,
    )
}

/// Runs kbuild on an out-of-tree module directory.
pub fn kbuild(headers: &Path, dir: &Path, step: &str, log: &Path) -> Result<(), Error> {
    run_logged(
        step,
        Command::new("make")
            .arg("-C")
            .arg(headers)
            .arg(format!("M={}", dir.display()))
            .arg(format!("KCFLAGS={KCFLAGS}"))
            .arg("modules"),
        log,
    )
}

/// Compiled objects of a build tree (`*.o` with a `.c` or `.S` source next
/// to it; not kbuild's `*.mod.o`), with their modification times.
pub fn objects(dir: &Path) -> Result<BTreeMap<PathBuf, SystemTime>, Error> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).map_err(io(&d))? {
            let e = e.map_err(io(&d))?;
            let p = e.path();
            let ft = e.file_type().map_err(io(&p))?;
            if ft.is_dir() {
                stack.push(p);
                continue;
            }
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(stem) = name.strip_suffix(".o") else {
                continue;
            };
            if stem.ends_with(".mod")
                || !(d.join(format!("{stem}.c")).exists() || d.join(format!("{stem}.S")).exists())
            {
                continue;
            }
            let m = e.metadata().and_then(|m| m.modified()).map_err(io(&p))?;
            if let Ok(rel) = p.strip_prefix(dir) {
                out.insert(rel.to_path_buf(), m);
            }
        }
    }
    Ok(out)
}

/// Module of each object: from kbuild's `<module>.mod` files (one object
/// path per line, relative to the tree).
pub fn modules_of(dir: &Path) -> Result<BTreeMap<PathBuf, String>, Error> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).map_err(io(&d))? {
            let e = e.map_err(io(&d))?;
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(module) = name.strip_suffix(".mod") else {
                continue;
            };
            let text = std::fs::read_to_string(&p).map_err(io(&p))?;
            for obj in text.split_whitespace() {
                let obj = Path::new(obj);
                let rel = obj.strip_prefix(dir).unwrap_or(obj);
                let rel = if let Ok(sub) = d.strip_prefix(dir)
                    && !rel.starts_with(sub)
                {
                    sub.join(rel)
                } else {
                    rel.to_path_buf()
                };
                out.insert(rel, module.replace('-', "_"));
            }
        }
    }
    Ok(out)
}

/// Builds original and patched trees under `work` and returns the objects
/// the fix recompiled.
pub fn build_pair(
    headers: &Path,
    src: &Path,
    fix: &Path,
    work: &Path,
) -> Result<Vec<ObjectPair>, Error> {
    let orig = work.join("orig");
    let patched = work.join("patched");
    copy_tree(src, &orig, &work.join("copy.log"))?;
    kbuild(
        headers,
        &orig,
        "kbuild of the original module",
        &work.join("orig.log"),
    )?;
    copy_tree(&orig, &patched, &work.join("copy.log"))?;
    let before = objects(&patched)?;
    let fix_file = std::fs::File::open(fix).map_err(io(fix))?;
    run_logged(
        "apply the fix (patch -p1)",
        Command::new("patch")
            .args(["-p1", "--forward", "--batch", "-d"])
            .arg(&patched)
            .stdin(fix_file),
        &work.join("patch.log"),
    )?;
    kbuild(
        headers,
        &patched,
        "kbuild of the patched module",
        &work.join("patched.log"),
    )?;
    let after = objects(&patched)?;
    let modules = modules_of(&patched)?;
    let mut pairs = Vec::new();
    for (rel, t) in after {
        if before.get(&rel) == Some(&t) {
            continue;
        }
        let module = modules.get(&rel).cloned().ok_or_else(|| Error::Build {
            step: "find the module of a recompiled object".into(),
            reason: format!("{} is in no kbuild .mod file", rel.display()),
            log: None,
        })?;
        pairs.push(ObjectPair {
            orig: orig.join(&rel),
            patched: patched.join(&rel),
            rel,
            module,
        });
    }
    Ok(pairs)
}

/// A linked module's symbols in symbol-table order, as kallsyms lists them
/// once the module is loaded (`is_core_symbol`: named, defined in an
/// allocated section that is not `.init.*`), each with the source file of
/// the object it came from (the preceding `STT_FILE`).
///
/// livepatch's `old_sympos` and the `,N` of `.klp.sym.<module>.<name>,N`
/// count same-named symbols over the *whole module*, in this order: in a
/// module of several objects, a static `scale` of the second object is
/// position 2 even though it is unique in its own object.
#[derive(Debug, Clone, Default)]
pub struct ModuleSymbols {
    syms: Vec<(String, Option<String>)>,
}

impl ModuleSymbols {
    /// Reads the symbol table of the module file `ko`.
    pub fn read(ko: &Path) -> Result<ModuleSymbols, Error> {
        use object::{Object, ObjectSection, ObjectSymbol, SectionFlags, SymbolKind};
        let data = std::fs::read(ko).map_err(io(ko))?;
        let file = object::File::parse(data.as_slice()).map_err(|e| Error::Parse {
            file: ko.display().to_string(),
            reason: e.to_string(),
        })?;
        let mut syms = Vec::new();
        let mut current: Option<String> = None;
        for s in file.symbols() {
            let name = s.name().unwrap_or("");
            if s.kind() == SymbolKind::File {
                current = Some(name.to_owned());
                continue;
            }
            if name.is_empty() || s.kind() == SymbolKind::Section {
                continue;
            }
            let Some(idx) = s.section_index() else {
                continue;
            };
            let Ok(sec) = file.section_by_index(idx) else {
                continue;
            };
            let alloc =
                matches!(sec.flags(), SectionFlags::Elf { sh_flags, .. } if sh_flags.0 & 2 != 0);
            if !alloc || sec.name().is_ok_and(|n| n.starts_with(".init")) {
                continue;
            }
            syms.push((name.to_owned(), current.clone()));
        }
        Ok(ModuleSymbols { syms })
    }

    /// Whether the module defines a symbol `name`.
    pub fn defines(&self, name: &str) -> bool {
        self.syms.iter().any(|(n, _)| n == name)
    }

    /// Position of `name` from the object built from `file` among the
    /// module's symbols of that name (1-based), 0 when the name is unique
    /// in the module, `None` when the module has no such symbol.
    /// `in_object` is the symbol's position within its own object (0 when
    /// unique there).
    pub fn sympos(&self, file: Option<&str>, name: &str, in_object: u32) -> Option<u32> {
        let same: Vec<&Option<String>> = self
            .syms
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, f)| f)
            .collect();
        match same.len() {
            0 => None,
            1 => Some(0),
            _ => same
                .iter()
                .enumerate()
                .filter(|(_, f)| f.as_deref() == file)
                .nth(in_object.saturating_sub(1) as usize)
                .and_then(|(p, _)| u32::try_from(p + 1).ok()),
        }
    }
}

/// The linked `<module>.ko` of a kbuild tree (module names use `_` where
/// file names may use `-`).
pub fn find_module(dir: &Path, module: &str) -> Option<PathBuf> {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).ok()?.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "ko")
                && p.file_stem()
                    .is_some_and(|s| s.to_string_lossy().replace('-', "_") == module)
            {
                return Some(p);
            }
        }
    }
    None
}
