//! vmlinux functions: objects of the running kernel compiled from its own
//! source, and the check that they are the running kernel's.
//!
//! Model: a *kernel source directory* (made by `scripts/kernel-src`) holds
//! `source/` (Debian's source package of the image's exact version, with
//! Debian's patches), `build/` (kbuild's `O=` output tree, configured with
//! the flavour's `.config` and `make prepare`d), `make.args` (the make
//! variables Debian builds with: `ARCH`, `CC`, `KERNELRELEASE`...),
//! `vmlinux` (the image's kernel with its symbol table) and `System.map`.
//! [`build_pair`] compiles only the objects of the C files the fix touches
//! (`make fs/proc/cmdline.o` with `-ffunction-sections -fdata-sections`),
//! once as shipped and once with the fix applied *in place* (the way kbuild
//! expects its source tree), then reverses the fix. The directory holding
//! the real source tree is locked (`.lock`, `flock`) for the whole build;
//! `applied.patch` there marks a tree with a fix applied, and a later build
//! reverses it first if a crash left it there.
//!
//! [`Vmlinux`] then checks every replaced function: the original object's
//! bytes, with relocated fields masked, must equal the running kernel's
//! bytes at one of the kernel's symbols of that name and size — otherwise
//! the source, configuration or compiler differ and the build is refused
//! with [`Error::KernelMismatch`] (exit status 4). The matching symbol also
//! gives the function's `old_sympos` (its position among same-named symbols
//! in address order, as kallsyms counts); references to vmlinux symbols get
//! their position the same way (unique names only, or functions told apart
//! by their bytes).
//!
//! An object the configuration builds into a loadable module (kbuild
//! compiles it with `-DMODULE -DKBUILD_MODNAME=...`, see [`module_of`]) is
//! paired with that module instead of vmlinux; its functions are checked
//! the same way against the image's shipped `.ko` ([`shipped_module`],
//! `DIR/modules`), loaded with [`Vmlinux::load_path`].
//!
//! Invariant: after [`build_pair`] returns (success or error) the source
//! tree is the shipped one again, unless reversing failed, which is
//! reported and repaired by the next build.

use super::kbuild::{KCFLAGS, ObjectPair, run_logged};
use crate::Error;
use crate::read::ObjectFile;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A prepared kernel source directory (see the module documentation).
#[derive(Debug, Clone)]
pub struct KernelSrc {
    /// The directory.
    pub dir: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl KernelSrc {
    /// `dir` if it is a prepared kernel source directory.
    pub fn detect(dir: &Path) -> Option<KernelSrc> {
        (dir.join("source/Makefile").is_file()
            && dir.join("build/.config").is_file()
            && dir.join("make.args").is_file())
        .then(|| KernelSrc {
            dir: dir.to_path_buf(),
        })
    }

    /// The kernel release the objects are built for.
    pub fn release(&self) -> Result<String, Error> {
        let p = self.dir.join("release");
        Ok(std::fs::read_to_string(&p)
            .map_err(io(&p))?
            .trim()
            .to_owned())
    }

    fn make(&self) -> Result<Command, Error> {
        let p = self.dir.join("make.args");
        let args = std::fs::read_to_string(&p).map_err(io(&p))?;
        let mut c = Command::new("make");
        c.arg("-C")
            .arg(self.dir.join("source"))
            .arg(format!("O={}", self.dir.join("build").display()))
            .args(args.lines().map(str::trim).filter(|l| !l.is_empty()))
            .arg(format!("KCFLAGS={KCFLAGS}"));
        Ok(c)
    }
}

/// The objects of the C files a unified diff touches (`-p1` paths).
pub fn objects_of_diff(diff: &str, file: &Path) -> Result<Vec<PathBuf>, Error> {
    let mut out = Vec::new();
    for l in diff.lines() {
        let Some(rest) = l.strip_prefix("+++ ") else {
            continue;
        };
        let path = rest.split('\t').next().unwrap_or("").trim();
        let rel = path.split_once('/').map_or(path, |(_, r)| r);
        if rel.contains("..") || rel.starts_with('/') || rel.is_empty() {
            return Err(Error::Build {
                step: "map the fix to kernel objects".into(),
                reason: format!("{}: bad path {path:?}", file.display()),
                log: None,
            });
        }
        match rel.strip_suffix(".c") {
            Some(stem) => out.push(PathBuf::from(format!("{stem}.o"))),
            None => {
                return Err(Error::Build {
                    step: "map the fix to kernel objects".into(),
                    reason: format!(
                        "{}: {rel} is not a C file; only fixes to .c files of the kernel are \
                         supported (a header change would need every object including it)",
                        file.display()
                    ),
                    log: None,
                });
            }
        }
    }
    out.sort();
    out.dedup();
    if out.is_empty() {
        return Err(Error::Build {
            step: "map the fix to kernel objects".into(),
            reason: format!("{}: no file in the diff", file.display()),
            log: None,
        });
    }
    Ok(out)
}

fn patch_cmd(src: &Path, fix: &Path, reverse: bool) -> Result<Command, Error> {
    let f = std::fs::File::open(fix).map_err(io(fix))?;
    let mut c = Command::new("patch");
    c.args(["-p1", "--forward", "--batch", "-d"])
        .arg(src)
        .stdin(f);
    if reverse {
        c.arg("-R");
    }
    Ok(c)
}

/// Compiles the fix's objects twice (shipped, fixed) into `work/orig` and
/// `work/patched`.
pub fn build_pair(ks: &KernelSrc, fix: &Path, work: &Path) -> Result<Vec<ObjectPair>, Error> {
    let diff = std::fs::read_to_string(fix).map_err(io(fix))?;
    let objects = objects_of_diff(&diff, fix)?;
    // Lock and fix marker live next to the *real* source tree, so that
    // directories sharing it through symlinks exclude each other too.
    let src = ks.dir.join("source");
    let real = std::fs::canonicalize(&src).map_err(io(&src))?;
    let base = real.parent().unwrap_or(&real).to_path_buf();
    let lock_path = base.join(".lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io(&lock_path))?;
    lock.lock().map_err(io(&lock_path))?;
    let src = real;
    let applied = base.join("applied.patch");
    if applied.exists() {
        run_logged(
            "reverse a fix left applied by an interrupted build",
            &mut patch_cmd(&src, &applied, true)?,
            &work.join("recover.log"),
        )?;
        std::fs::remove_file(&applied).map_err(io(&applied))?;
    }
    let compile = |step: &str, log: &str, dest: &str| -> Result<(), Error> {
        run_logged(step, ks.make()?.args(&objects), &work.join(log))?;
        for o in &objects {
            let from = ks.dir.join("build").join(o);
            let to = work.join(dest).join(o);
            if let Some(p) = to.parent() {
                std::fs::create_dir_all(p).map_err(io(p))?;
            }
            std::fs::copy(&from, &to).map_err(io(&from))?;
        }
        Ok(())
    };
    compile("compile the original vmlinux objects", "orig.log", "orig")?;
    std::fs::copy(fix, &applied).map_err(io(&applied))?;
    let applied_ok = run_logged(
        "apply the fix to the kernel source (patch -p1)",
        &mut patch_cmd(&src, &applied, false)?,
        &work.join("patch.log"),
    );
    if let Err(e) = applied_ok {
        let _ = std::fs::remove_file(&applied);
        return Err(e);
    }
    let built = compile(
        "compile the patched vmlinux objects",
        "patched.log",
        "patched",
    );
    run_logged(
        "reverse the fix in the kernel source (patch -R)",
        &mut patch_cmd(&src, &applied, true)?,
        &work.join("unpatch.log"),
    )?;
    std::fs::remove_file(&applied).map_err(io(&applied))?;
    built?;
    drop(lock);
    Ok(objects
        .into_iter()
        .map(|rel| ObjectPair {
            orig: work.join("orig").join(&rel),
            patched: work.join("patched").join(&rel),
            module: module_of(&ks.dir.join("build"), &rel).unwrap_or_else(|| "vmlinux".into()),
            rel,
        })
        .collect())
}

/// The loadable module an object of the kbuild output tree `build` was
/// compiled for (the configuration builds it `=m`): kbuild's command line
/// for it (`.NAME.o.cmd`) has `-DMODULE` and `-DKBUILD_MODNAME='"NAME"'`.
/// `None`: the object is built into vmlinux.
pub fn module_of(build: &Path, rel: &Path) -> Option<String> {
    let file = rel.file_name()?.to_string_lossy().into_owned();
    let cmd = build
        .join(rel.parent().unwrap_or(Path::new("")))
        .join(format!(".{file}.cmd"));
    let text = std::fs::read_to_string(cmd).ok()?;
    let line = text.lines().find(|l| l.starts_with("cmd_"))?;
    if !line.split_whitespace().any(|w| w == "-DMODULE") {
        return None;
    }
    let name = line
        .split_once("-DKBUILD_MODNAME='\"")?
        .1
        .split_once('"')?
        .0;
    Some(name.replace('-', "_"))
}

/// The shipped `.ko` of `module` in the kernel source directory's
/// `modules/` (the running image's modules, linked there by
/// `scripts/kernel-src`).
pub fn shipped_module(ks: &KernelSrc, module: &str) -> Result<PathBuf, Error> {
    let dir = ks.dir.join("modules");
    super::kbuild::find_module(&dir, module).ok_or_else(|| Error::Io {
        path: dir.join(format!("{module}.ko")),
        source: std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!(
                "the image's {module}.ko is not under {} (scripts/kernel-src links the \
                 pinned kernel's modules there)",
                dir.display()
            ),
        ),
    })
}

/// One symbol of the running kernel.
#[derive(Debug, Clone)]
struct KSym {
    addr: u64,
    size: u64,
    func: bool,
}

/// The running kernel's image: symbols (with sizes) and bytes.
pub struct Vmlinux {
    path: PathBuf,
    /// Name → symbols in address order (the order kallsyms counts in).
    syms: BTreeMap<String, Vec<KSym>>,
    /// Allocated sections: (address, bytes).
    sections: Vec<(u64, Vec<u8>)>,
}

impl Vmlinux {
    /// Reads `vmlinux` (an ELF image with its symbol table) of `ks`.
    pub fn load(ks: &KernelSrc) -> Result<Vmlinux, Error> {
        Self::load_path(&ks.dir.join("vmlinux"))
    }

    /// Reads an ELF image with its symbol table: `vmlinux`, or a shipped
    /// module (`.ko`, relocatable: each section is given a
    /// distinct base address, `(index + 1) << 32`, and its symbols are
    /// placed there; symbols then come in section order, not in the
    /// module's kallsyms order — positions in a module come from
    /// [`super::kbuild::ModuleSymbols`]).
    pub fn load_path(path: &Path) -> Result<Vmlinux, Error> {
        use object::{Object, ObjectSection, ObjectSymbol};
        let path = path.to_path_buf();
        let data = std::fs::read(&path).map_err(io(&path))?;
        let file = object::File::parse(data.as_slice()).map_err(|e| Error::Parse {
            file: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let rel = file.kind() == object::ObjectKind::Relocatable;
        let base = |idx: Option<object::SectionIndex>| match (rel, idx) {
            (true, Some(i)) => (i.0 as u64 + 1) << 32,
            _ => 0,
        };
        let mut syms: BTreeMap<String, Vec<KSym>> = BTreeMap::new();
        for s in file.symbols() {
            let Ok(name) = s.name() else { continue };
            if name.is_empty() || s.is_undefined() {
                continue;
            }
            syms.entry(name.to_owned()).or_default().push(KSym {
                addr: base(s.section_index()) + s.address(),
                size: s.size(),
                func: s.kind() == object::SymbolKind::Text,
            });
        }
        for v in syms.values_mut() {
            v.sort_by_key(|k| k.addr);
        }
        let mut sections = Vec::new();
        for s in file.sections() {
            let addr = base(Some(s.index())) + s.address();
            if addr == 0 {
                continue;
            }
            if let Ok(d) = s.data()
                && !d.is_empty()
            {
                sections.push((addr, d.to_vec()));
            }
        }
        Ok(Vmlinux {
            path,
            syms,
            sections,
        })
    }

    fn bytes(&self, addr: u64, len: u64) -> Option<&[u8]> {
        self.sections.iter().find_map(|(a, d)| {
            let off = usize::try_from(addr.checked_sub(*a)?).ok()?;
            d.get(off..off.checked_add(usize::try_from(len).ok()?)?)
        })
    }

    fn pos(n: usize, i: usize) -> u32 {
        if n <= 1 {
            0
        } else {
            u32::try_from(i + 1).unwrap_or(0)
        }
    }

    /// Checks function `name` of the original object `obj` against the
    /// running kernel; returns its kallsyms position.
    pub fn check_function(&self, obj: &ObjectFile, name: &str) -> Result<u32, Error> {
        let mismatch = |address: u64, reason: String| Error::KernelMismatch {
            file: obj.name.clone(),
            symbol: name.to_owned(),
            address,
            reason,
        };
        let Some(s) = obj
            .symbols
            .iter()
            .find(|s| s.name == name && s.is_func() && !s.undefined)
        else {
            return Err(mismatch(0, "not a function of the compiled object".into()));
        };
        let mine = obj.symbol_bytes(s);
        let mut mask = vec![true; mine.len()];
        for r in obj.symbol_relocs(s) {
            let start = usize::try_from(r.offset - s.value).unwrap_or(usize::MAX);
            for i in start..start.saturating_add(r.width() as usize) {
                if let Some(m) = mask.get_mut(i) {
                    *m = false;
                }
            }
        }
        let cands = self.syms.get(name).map(Vec::as_slice).unwrap_or(&[]);
        if cands.is_empty() {
            return Err(mismatch(
                0,
                format!(
                    "no symbol {name} in the running kernel ({})",
                    self.path.display()
                ),
            ));
        }
        let funcs: Vec<(usize, &KSym)> = cands.iter().enumerate().collect();
        let mut why = Vec::new();
        for (i, k) in &funcs {
            if !k.func {
                continue;
            }
            if k.size != s.size {
                why.push(format!(
                    "{name} at {:#x} has {} bytes, the compiled one {}",
                    k.addr, k.size, s.size
                ));
                continue;
            }
            let Some(theirs) = self.bytes(k.addr, k.size) else {
                continue;
            };
            let diff = mine
                .iter()
                .zip(theirs)
                .zip(&mask)
                .position(|((a, b), m)| *m && a != b);
            match diff {
                None => return Ok(Self::pos(cands.len(), *i)),
                Some(off) => why.push(format!("{name} at {:#x} differs at +{off:#x}", k.addr)),
            }
        }
        Err(mismatch(
            funcs.first().map_or(0, |(_, k)| k.addr),
            format!(
                "the object compiled from the kernel source is not the running kernel's \
                 ({}): wrong source version, configuration or compiler",
                why.join("; ")
            ),
        ))
    }

    /// The kallsyms position of a referenced vmlinux symbol `name`;
    /// functions with duplicate names are told apart by their bytes in
    /// `obj` (the original object defining them).
    pub fn ref_pos(&self, obj: &ObjectFile, name: &str) -> Result<u32, Error> {
        let cands = self.syms.get(name).map(Vec::as_slice).unwrap_or(&[]);
        match cands.len() {
            0 => Err(Error::KernelMismatch {
                file: obj.name.clone(),
                symbol: name.to_owned(),
                address: 0,
                reason: format!(
                    "referenced symbol not in the running kernel ({})",
                    self.path.display()
                ),
            }),
            1 => Ok(0),
            _ if obj
                .symbols
                .iter()
                .any(|s| s.name == name && s.is_func() && !s.undefined) =>
            {
                self.check_function(obj, name)
            }
            n => Err(Error::KernelMismatch {
                file: obj.name.clone(),
                symbol: name.to_owned(),
                address: cands.first().map_or(0, |k| k.addr),
                reason: format!(
                    "{n} symbols of that name in the running kernel and it is not a function \
                     of this object: its position cannot be told"
                ),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic, reason = "tests")]
    use super::*;

    #[test]
    fn diff_files_map_to_objects() {
        let d = "--- a/fs/proc/cmdline.c\n+++ b/fs/proc/cmdline.c\n@@ -1 +1 @@\n";
        assert_eq!(
            objects_of_diff(d, Path::new("x.patch")).unwrap(),
            vec![PathBuf::from("fs/proc/cmdline.o")]
        );
        let h = "--- a/include/linux/x.h\n+++ b/include/linux/x.h\n";
        let e = objects_of_diff(h, Path::new("x.patch")).unwrap_err();
        assert!(e.to_string().contains("not a C file"), "{e}");
        assert!(objects_of_diff("", Path::new("x.patch")).is_err());
        assert!(objects_of_diff("+++ b/../etc/passwd.c\n", Path::new("x.patch")).is_err());
    }

    #[test]
    fn module_objects_are_told_by_kbuilds_command_line() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("drivers/block/zram");
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(
            sub.join(".zram_drv.o.cmd"),
            "cmd_drivers/block/zram/zram_drv.o := gcc-12 -DMODULE -DKBUILD_BASENAME='\"zram_drv\"' \
             -DKBUILD_MODNAME='\"zram\"' -D__KBUILD_MODNAME=kmod_zram -c -o x.o x.c\n",
        )
        .unwrap();
        std::fs::write(
            sub.join(".builtin.o.cmd"),
            "cmd_drivers/block/zram/builtin.o := gcc-12 -DKBUILD_MODNAME='\"builtin\"' -c\n",
        )
        .unwrap();
        let build = dir.path();
        let zram = Path::new("drivers/block/zram/zram_drv.o");
        assert_eq!(module_of(build, zram).as_deref(), Some("zram"));
        // No -DMODULE: built into vmlinux.
        assert_eq!(
            module_of(build, Path::new("drivers/block/zram/builtin.o")),
            None
        );
        // Never compiled: no command file.
        assert_eq!(module_of(build, Path::new("fs/proc/cmdline.o")), None);
    }
}
