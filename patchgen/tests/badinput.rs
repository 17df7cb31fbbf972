//! Bad input never panics: garbage, truncated and mutated objects,
//! non-x86-64 and non-relocatable ELF files, pairs from different sources,
//! objects without function sections. Each gets its own error (exit 1).

#![allow(clippy::unwrap_used, clippy::panic, missing_docs)]

mod common;

use common::{build, cases_dir, gcc};
use patchgen::{Error, Status};
use proptest::prelude::*;

fn diff(orig: &[u8], patched: &[u8]) -> Result<patchgen::DiffReport, Error> {
    patchgen::diff_objects(orig, "orig.o", patched, "patched.o", &Default::default())
}

#[test]
fn garbage_and_empty_files() {
    let good = build("xsa108", &["-O2"]).orig_bytes();
    for bad in [
        &b""[..],
        b"\x7fELF",
        b"hello world, not an object at all",
        &[0u8; 64],
    ] {
        let e = diff(bad, &good).unwrap_err();
        assert!(
            matches!(&e, Error::Parse { file, .. } if file == "orig.o"),
            "{e}"
        );
        assert_eq!(e.status(), Status::Error);
        let e = diff(&good, bad).unwrap_err();
        assert!(
            matches!(&e, Error::Parse { file, .. } if file == "patched.o"),
            "{e}"
        );
    }
}

#[test]
fn every_truncation_is_an_error() {
    let pair = build("new_helper", &["-O2"]);
    let good = pair.patched_bytes();
    for n in 0..good.len() {
        let r = diff(&pair.orig_bytes(), &good[..n]);
        assert!(r.is_err(), "truncated to {n} bytes was accepted");
    }
}

#[test]
fn wrong_machine() {
    let mut o = build("xsa108", &["-O2"]).orig_bytes();
    o[18] = 183; // EM_AARCH64
    o[19] = 0;
    let e = diff(&o, &o).unwrap_err();
    assert!(matches!(e, Error::WrongMachine { machine: 183, .. }), "{e}");
    assert!(e.to_string().contains("orig.o"));
}

#[test]
fn executables_are_not_relocatable() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("prog.c");
    std::fs::write(&src, "int main(void) { return 0; }\n").unwrap();
    let exe = dir.path().join("prog");
    let st = std::process::Command::new("gcc")
        .arg(&src)
        .arg("-o")
        .arg(&exe)
        .status()
        .unwrap();
    assert!(st.success());
    let b = std::fs::read(&exe).unwrap();
    let e = diff(&b, &b).unwrap_err();
    assert!(matches!(e, Error::NotRelocatable { .. }), "{e}");
}

#[test]
fn pair_from_different_sources() {
    let a = build("xsa108", &["-O2"]);
    let b = build("mmio_bounds", &["-O2"]);
    let e = diff(&a.orig_bytes(), &b.patched_bytes()).unwrap_err();
    assert!(matches!(e, Error::DifferentSources { .. }), "{e}");
    // Same file name, different code: nothing in common.
    let dir = tempfile::tempdir().unwrap();
    let other = gcc(
        &cases_dir().join("mmio_bounds/orig.c"),
        &dir.path().join("x"),
        "xsa108",
        &["-O2"],
        true,
    );
    let e = diff(&a.orig_bytes(), &std::fs::read(other).unwrap()).unwrap_err();
    assert!(
        matches!(&e, Error::DifferentSources { reason, .. } if reason.contains("no function in common")),
        "{e}"
    );
}

#[test]
fn objects_without_function_sections() {
    let dir = tempfile::tempdir().unwrap();
    let o = gcc(
        &cases_dir().join("xsa108/orig.c"),
        dir.path(),
        "xsa108",
        &["-O2"],
        false,
    );
    let b = std::fs::read(o).unwrap();
    let e = diff(&b, &b).unwrap_err();
    assert!(
        matches!(&e, Error::NoFunctionSections { section, .. } if section == ".text"),
        "{e}"
    );
    assert!(e.to_string().contains("-ffunction-sections"));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Mutating bytes of a valid patched object never panics the diff (it
    /// may succeed, refuse or fail).
    #[test]
    fn mutated_objects_never_panic(
        muts in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)
    ) {
        thread_local! {
            static PAIR: (Vec<u8>, Vec<u8>) = {
                let p = build("new_helper", &["-O2"]);
                (p.orig_bytes(), p.patched_bytes())
            };
        }
        PAIR.with(|(o, p)| {
            let mut m = p.clone();
            for (i, b) in &muts {
                let at = i.index(m.len());
                m[at] = *b;
            }
            let _ = diff(o, &m);
            let _ = diff(&m, o);
            let _ = patchgen::explain::explain(o, "o", &m, "m", None);
        });
    }
}

#[test]
fn absurd_section_alignment_is_refused() {
    // Found by the fuzzer: one corrupted byte giving a string section an
    // alignment of 2^55 made the emitter try to allocate 2^55 bytes.
    let pair = build("string_changed", &["-O2"]);
    let mut p = pair.patched_bytes();
    let obj = patchgen::ObjectFile::parse(&p, "p").unwrap();
    let idx = obj
        .sections
        .iter()
        .position(|s| s.name.contains("str1"))
        .unwrap();
    let shoff = u64::from_le_bytes(p[0x28..0x30].try_into().unwrap()) as usize;
    let at = shoff + idx * 64 + 48; // Elf64_Shdr.sh_addralign
    p[at..at + 8].copy_from_slice(&(1u64 << 55).to_le_bytes());
    let e = diff(&pair.orig_bytes(), &p).unwrap_err();
    assert!(
        matches!(&e, Error::Parse { file, reason } if file == "patched.o" && reason.contains("alignment")),
        "{e}"
    );
}
