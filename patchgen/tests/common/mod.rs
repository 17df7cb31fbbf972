//! Shared helpers of the diff tests: compile a `testkernels/diffcases/<case>`
//! source pair with gcc into a temporary directory and check emitted patches.

#![allow(dead_code, clippy::unwrap_used, clippy::panic)]

use object::{Object, ObjectSection, ObjectSymbol};
use patchgen::format;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The directory holding the C source pairs.
pub fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testkernels/diffcases")
}

/// Optimisation/code-model variants every portable case runs under.
pub const VARIANTS: &[&[&str]] = &[
    &["-O1"],
    &["-O2"],
    &["-O3"],
    &["-Os"],
    &["-O2", "-fPIC"],
    &["-O2", "-fPIE"],
    &["-O3", "-fPIC"],
    &["-Os", "-fPIE"],
    &["-O2", "-g"],
    &["-O2", "-fcf-protection=full"],
];

/// An object pair compiled from one case.
pub struct Pair {
    /// Keeps the objects alive.
    pub dir: tempfile::TempDir,
    /// Path of the original object.
    pub orig: PathBuf,
    /// Path of the patched object.
    pub patched: PathBuf,
}

impl Pair {
    /// Bytes of the original object.
    pub fn orig_bytes(&self) -> Vec<u8> {
        std::fs::read(&self.orig).unwrap()
    }
    /// Bytes of the patched object.
    pub fn patched_bytes(&self) -> Vec<u8> {
        std::fs::read(&self.patched).unwrap()
    }
}

/// Compiles `src` (a C file) as `<dir>/<name>.c` → `<dir>/<name>.o`.
pub fn gcc(src: &Path, dir: &Path, name: &str, flags: &[&str], sections: bool) -> PathBuf {
    compile("gcc", src, dir, name, flags, sections)
}

/// Compiles `src` with compiler `cc` (`gcc`, `clang`) as `<dir>/<name>.c`.
pub fn compile(
    cc: &str,
    src: &Path,
    dir: &Path,
    name: &str,
    flags: &[&str],
    sections: bool,
) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let c = dir.join(format!("{name}.c"));
    std::fs::copy(src, &c).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
    let o = dir.join(format!("{name}.o"));
    let mut cmd = Command::new(cc);
    cmd.current_dir(dir).arg("-c").args(flags);
    if sections {
        cmd.args(["-ffunction-sections", "-fdata-sections"]);
    }
    let out = cmd
        .arg(format!("{name}.c"))
        .arg("-o")
        .arg(&o)
        .output()
        .unwrap_or_else(|e| panic!("{cc}: {e}; scripts/setup installs gcc and clang"));
    assert!(
        out.status.success(),
        "{cc} {flags:?} {}: {}",
        src.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    o
}

/// Compiles both sides of `case` with `flags` (plus the case's `flags` file).
/// Both are compiled as `<case>.c` in different directories, like the
/// original and the fixed tree of one project.
pub fn build(case: &str, flags: &[&str]) -> Pair {
    build_cc("gcc", case, flags)
}

/// [`build`] with compiler `cc`.
pub fn build_cc(cc: &str, case: &str, flags: &[&str]) -> Pair {
    let dir = tempfile::tempdir().unwrap();
    let src = cases_dir().join(case);
    let extra = std::fs::read_to_string(src.join("flags")).unwrap_or_default();
    // Kernel-style cases include the shared `kstyle.h`.
    let include = format!("-I{}", cases_dir().display());
    let mut all: Vec<&str> = flags.to_vec();
    all.extend(extra.split_whitespace());
    all.push(&include);
    let orig = compile(
        cc,
        &src.join("orig.c"),
        &dir.path().join("orig"),
        case,
        &all,
        true,
    );
    let patched = compile(
        cc,
        &src.join("patched.c"),
        &dir.path().join("patched"),
        case,
        &all,
        true,
    );
    Pair { dir, orig, patched }
}

/// Diffs a pair with default options.
pub fn diff(p: &Pair) -> Result<patchgen::DiffReport, patchgen::Error> {
    patchgen::diff_objects(
        &p.orig_bytes(),
        "orig.o",
        &p.patched_bytes(),
        "patched.o",
        &patchgen::DiffOptions {
            id: "test-patch".into(),
            ..Default::default()
        },
    )
}

/// Checks the emitted patch: an x86-64 relocatable ELF whose undefined
/// symbols each have exactly one `Ref`, whose metadata round-trips, whose
/// replaced functions name defined functions with sane expected bytes.
pub fn verify(r: &patchgen::DiffReport) {
    let file = object::File::parse(r.patch.as_slice()).unwrap();
    assert_eq!(file.architecture(), object::Architecture::X86_64);
    assert_eq!(file.kind(), object::ObjectKind::Relocatable);
    let meta = format::read_meta(&r.patch).unwrap();
    assert_eq!(meta, r.meta, "metadata round trip");
    let mut undefined = Vec::new();
    for s in file.symbols() {
        if s.is_undefined() && !s.name().unwrap().is_empty() {
            undefined.push(s.name().unwrap().to_owned());
        }
    }
    let mut sorted = undefined.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), undefined.len(), "undefined names unique");
    for u in &undefined {
        let n = meta.refs.iter().filter(|r| &r.symbol == u).count();
        assert_eq!(n, 1, "undefined symbol {u} has {n} refs");
    }
    assert_eq!(meta.refs.len(), undefined.len(), "every ref is used");
    for f in &meta.funcs {
        let sym = file
            .symbols()
            .find(|s| s.name() == Ok(f.new_symbol.as_str()) && !s.is_undefined())
            .unwrap_or_else(|| panic!("{} not defined", f.new_symbol));
        assert_eq!(sym.kind(), object::SymbolKind::Text);
        let e = hex::decode(&f.expected).unwrap();
        let need = if e.starts_with(&[0xf3, 0x0f, 0x1e, 0xfa]) {
            9
        } else {
            5
        };
        assert!(e.len() >= need, "{}: {} expected bytes", f.name, e.len());
    }
    // Every relocation targets a symbol of the file; none is left dangling.
    for sec in file.sections() {
        for (_, rel) in sec.relocations() {
            assert!(
                matches!(rel.target(), object::RelocationTarget::Symbol(_)),
                "relocation in {}",
                sec.name().unwrap()
            );
        }
    }
    // Our own reader accepts the patch (x86-64, ET_REL, function sections).
    patchgen::ObjectFile::parse(&r.patch, "patch.o").unwrap();
}

/// Sorted names of changed functions of a report.
pub fn changed(r: &patchgen::DiffReport) -> Vec<String> {
    let mut v: Vec<String> = r.changed.iter().map(|c| c.name.clone()).collect();
    v.sort();
    v
}

/// Sorted strings.
pub fn sorted(v: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = v.iter().map(|s| (*s).to_owned()).collect();
    v.sort();
    v
}
