//! Building the hypervisor with the fix and finding the objects it
//! recompiled; reading the payload ABI's sizes from the tree's own headers.
//!
//! Model: the original build is the built tree given with `--src` (the
//! test host's cached build: `scripts/xenhost build`), compiled with Xen's
//! `CONFIG_LIVEPATCH` → `CONFIG_CC_SPLIT_SECTIONS` flags
//! (`-ffunction-sections -fdata-sections`). It is copied with `cp -a`
//! (modification times kept) to `WORK/tree`, the fix is applied there with
//! `patch -p1`, and `make -C xen` runs again with the same make arguments:
//! Xen's build compiles with relative paths and records every compile
//! command in `.NAME.o.cmd`, so it recompiles exactly the objects whose
//! sources or headers changed, into byte-identical objects otherwise. A
//! recompiled object is a `*.o` newer than before that has a compile
//! command (`.NAME.o.cmd` with `-c`); it is paired with the original's.
//!
//! Sizes of `struct alt_instr`, `struct exception_table_entry`, `struct
//! bug_frame` and `struct livepatch_func` (and the field offsets used) come
//! from compiling a probe against the tree's headers with the compiler that
//! built it, not from constants.
//!
//! Invariant: the `--src` tree is never written; every step logs to
//! `WORK/*.log`, named in errors.

use crate::Error;
use crate::kernel::kbuild::run_logged;
use object::{Object, ObjectSymbol};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

/// One object the fix recompiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectPair {
    /// Path relative to `xen/` (`common/version.o`).
    pub rel: PathBuf,
    /// The original build's object.
    pub orig: PathBuf,
    /// The patched build's object.
    pub patched: PathBuf,
}

/// Sizes and offsets of the payload ABI, read from the tree's headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Sizes {
    /// `sizeof(struct alt_instr)`.
    pub alt_instr: u64,
    /// `offsetof(struct alt_instr, orig_len)`.
    pub alt_orig_len: u64,
    /// `sizeof(struct exception_table_entry)`.
    pub ex_entry: u64,
    /// `sizeof(struct bug_frame)` (an assertion frame is two of them).
    pub bug_frame: u64,
    /// `sizeof(struct livepatch_func)`.
    pub func: u64,
    /// `offsetof(struct livepatch_func, new_addr)`.
    pub func_new_addr: u64,
    /// `offsetof(struct livepatch_func, old_addr)`.
    pub func_old_addr: u64,
    /// `offsetof(struct livepatch_func, new_size)`.
    pub func_new_size: u64,
    /// `offsetof(struct livepatch_func, old_size)`.
    pub func_old_size: u64,
    /// `offsetof(struct livepatch_func, version)`.
    pub func_version: u64,
    /// `offsetof(struct livepatch_func, expect)`.
    pub func_expect: u64,
    /// `LIVEPATCH_OPAQUE_SIZE`: most expected bytes a record holds.
    pub opaque: u64,
    /// `LIVEPATCH_PAYLOAD_VERSION`.
    pub version: u64,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The probe: each value becomes the size of a symbol (sizes are never 0).
const PROBE: &str = r#"#include <xen/types.h>
#include <xen/lib.h>
#include <asm/alternative.h>
#include <asm/uaccess.h>
#include <asm/bug.h>
#include <public/sysctl.h>
#define HOTFIX_PROBE(n, v) const char hotfix_probe_##n[(v) + 1] __attribute__((used)) = { 1 };
HOTFIX_PROBE(alt_instr, sizeof(struct alt_instr))
HOTFIX_PROBE(alt_orig_len, offsetof(struct alt_instr, orig_len))
HOTFIX_PROBE(ex_entry, sizeof(struct exception_table_entry))
HOTFIX_PROBE(bug_frame, sizeof(struct bug_frame))
HOTFIX_PROBE(func, sizeof(struct livepatch_func))
HOTFIX_PROBE(func_new_addr, offsetof(struct livepatch_func, new_addr))
HOTFIX_PROBE(func_old_addr, offsetof(struct livepatch_func, old_addr))
HOTFIX_PROBE(func_new_size, offsetof(struct livepatch_func, new_size))
HOTFIX_PROBE(func_old_size, offsetof(struct livepatch_func, old_size))
HOTFIX_PROBE(func_version, offsetof(struct livepatch_func, version))
HOTFIX_PROBE(func_expect, offsetof(struct livepatch_func, expect))
HOTFIX_PROBE(opaque, LIVEPATCH_OPAQUE_SIZE)
HOTFIX_PROBE(version, LIVEPATCH_PAYLOAD_VERSION)
"#;

/// Compiles the probe in `xen_dir` (the `xen/` directory of a configured,
/// built tree) and reads the sizes back.
pub fn probe_sizes(xen_dir: &Path, work: &Path) -> Result<Sizes, Error> {
    std::fs::create_dir_all(work).map_err(io(work))?;
    let src = work.join("hotfix-probe.c");
    let obj = work.join("hotfix-probe.o");
    std::fs::write(&src, PROBE).map_err(io(&src))?;
    run_logged(
        "compile the ABI probe against the tree's headers",
        Command::new("gcc")
            .current_dir(xen_dir)
            .args([
                "-m64",
                "-nostdinc",
                "-fno-builtin",
                "-D__XEN__",
                "-include",
                "./include/xen/config.h",
                "-I./include",
                "-I./arch/x86/include",
                "-I./arch/x86/include/asm/mach-generic",
                "-I./arch/x86/include/asm/mach-default",
                "-fno-pie",
                "-mno-red-zone",
                "-msoft-float",
                "-c",
            ])
            .arg(&src)
            .arg("-o")
            .arg(&obj),
        &work.join("probe.log"),
    )?;
    let bytes = std::fs::read(&obj).map_err(io(&obj))?;
    let file = object::File::parse(&*bytes).map_err(|e| Error::Parse {
        file: obj.display().to_string(),
        reason: e.to_string(),
    })?;
    let mut got = BTreeMap::new();
    for s in file.symbols() {
        if let Ok(n) = s.name()
            && let Some(k) = n.strip_prefix("hotfix_probe_")
        {
            got.insert(k.to_owned(), s.size().saturating_sub(1));
        }
    }
    let get = |k: &str| {
        got.get(k).copied().ok_or_else(|| Error::Build {
            step: "read the ABI probe".into(),
            reason: format!("probe symbol hotfix_probe_{k} missing"),
            log: None,
        })
    };
    Ok(Sizes {
        alt_instr: get("alt_instr")?,
        alt_orig_len: get("alt_orig_len")?,
        ex_entry: get("ex_entry")?,
        bug_frame: get("bug_frame")?,
        func: get("func")?,
        func_new_addr: get("func_new_addr")?,
        func_old_addr: get("func_old_addr")?,
        func_new_size: get("func_new_size")?,
        func_old_size: get("func_old_size")?,
        func_version: get("func_version")?,
        func_expect: get("func_expect")?,
        opaque: get("opaque")?,
        version: get("version")?,
    })
}

/// Compiled objects under `xen_dir` (a `*.o` with a compile command in
/// `.NAME.o.cmd`), with their modification times.
pub fn objects(xen_dir: &Path) -> Result<BTreeMap<PathBuf, SystemTime>, Error> {
    let mut out = BTreeMap::new();
    let mut stack = vec![xen_dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).map_err(io(&d))? {
            let e = e.map_err(io(&d))?;
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            let ft = e.file_type().map_err(io(&p))?;
            if ft.is_dir() {
                if !name.starts_with('.') && p.strip_prefix(xen_dir).ok() != Some(Path::new("test"))
                {
                    stack.push(p);
                }
                continue;
            }
            if name.starts_with('.') || !name.ends_with(".o") {
                continue;
            }
            let cmd = d.join(format!(".{name}.cmd"));
            let Ok(text) = std::fs::read_to_string(&cmd) else {
                continue;
            };
            if !text.lines().next().is_some_and(|l| l.contains(" -c ")) {
                continue;
            }
            let m = e.metadata().and_then(|m| m.modified()).map_err(io(&p))?;
            if let Ok(rel) = p.strip_prefix(xen_dir) {
                out.insert(rel.to_path_buf(), m);
            }
        }
    }
    Ok(out)
}

/// Copies the built tree to `WORK/tree`, applies the fix, rebuilds, and
/// returns the recompiled objects paired with the originals.
pub fn build_pair(
    src: &Path,
    fix: &Path,
    make_args: &[String],
    work: &Path,
) -> Result<Vec<ObjectPair>, Error> {
    let tree = work.join("tree");
    let orig_xen = src.join("xen");
    let before = objects(&orig_xen)?;
    if before.is_empty() {
        return Err(Error::Build {
            step: "find the original build".into(),
            reason: format!(
                "{} holds no compiled objects: pass the built tree of the running hypervisor (scripts/xenhost build)",
                orig_xen.display()
            ),
            log: None,
        });
    }
    std::fs::create_dir_all(&tree).map_err(io(&tree))?;
    run_logged(
        "copy the hypervisor tree",
        Command::new("cp").arg("-a").arg(src.join(".")).arg(&tree),
        &work.join("copy.log"),
    )?;
    let fix_file = std::fs::File::open(fix).map_err(io(fix))?;
    run_logged(
        "apply the fix (patch -p1)",
        Command::new("patch")
            .args(["-p1", "--forward", "--batch", "-d"])
            .arg(&tree)
            .stdin(fix_file),
        &work.join("patch.log"),
    )?;
    let mut make = Command::new("make");
    make.arg("-C")
        .arg(tree.join("xen"))
        .arg("-j2")
        .args(make_args)
        .env_remove("CFLAGS")
        .env_remove("LDFLAGS")
        .env_remove("CPPFLAGS")
        .env_remove("MAKEFLAGS");
    run_logged(
        "build of the patched hypervisor",
        &mut make,
        &work.join("patched.log"),
    )?;
    let after = objects(&tree.join("xen"))?;
    let mut pairs = Vec::new();
    for (rel, t) in after {
        match before.get(&rel) {
            Some(b) if *b == t => continue,
            _ => {}
        }
        pairs.push(ObjectPair {
            orig: orig_xen.join(&rel),
            patched: tree.join("xen").join(&rel),
            rel,
        });
    }
    Ok(pairs)
}
