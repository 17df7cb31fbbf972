//! Bad input to everything that reads objects — `inspect`, `format::read_meta`,
//! `ObjectFile::parse` and `diff_objects`: truncated files (every prefix of a
//! real object), garbage, 32-bit ELF, another machine, big-endian,
//! executables and shared objects, and objects without function sections.
//! Each must give a clean error naming the file (exit status 1), never a
//! panic. Inputs are built at test time with gcc/as.

#![allow(clippy::panic, reason = "a test reports failure by panicking")]

use patchgen::format::{self, FormatError};
use patchgen::inspect::inspect;
use patchgen::{DiffOptions, Error, ObjectFile, Status, diff_objects};
use proptest::prelude::*;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

const SRC: &str = r#"
extern int ext(int);
static int hits;
static const char *const names[] = { "a", "bb", "ccc" };
int f(int x) { hits++; return ext(x) + names[x & 1][0]; }
int g(int x) { switch (x) { case 0: return 3; case 1: return f(x); case 2: return 9;
               case 3: return hits; case 4: return 11; default: return -x; } }
int main(int argc, char **argv) { (void)argv; return g(argc); }
"#;

struct Inputs {
    _dir: tempfile::TempDir,
    obj: Vec<u8>,
    obj_nofs: Vec<u8>,
    obj32: Vec<u8>,
    exe: Vec<u8>,
    pie: Vec<u8>,
    shared: Vec<u8>,
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("run tool (installed by scripts/setup)");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn inputs() -> &'static Inputs {
    static INPUTS: OnceLock<Inputs> = OnceLock::new();
    INPUTS.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        std::fs::write(d.join("t.c"), SRC).expect("write C");
        std::fs::write(d.join("t32.s"), ".text\n.globl f\nf: ret\n").expect("write asm");
        let gcc = || {
            let mut c = Command::new("gcc");
            c.current_dir(d);
            c
        };
        run(gcc()
            .args(["-c", "-O2", "-ffunction-sections", "-fdata-sections"])
            .args(["t.c", "-o", "t.o"]));
        run(gcc().args(["-c", "-O2", "t.c", "-o", "nofs.o"]));
        run(gcc().args([
            "-O2",
            "-no-pie",
            "t.c",
            "-o",
            "t.exe",
            "-Wl,--unresolved-symbols=ignore-all",
        ]));
        run(gcc().args([
            "-O2",
            "-pie",
            "-fPIE",
            "t.c",
            "-o",
            "t.pie",
            "-Wl,--unresolved-symbols=ignore-all",
        ]));
        run(gcc().args(["-O2", "-shared", "-fPIC", "t.c", "-o", "t.so"]));
        run(Command::new("as")
            .current_dir(d)
            .args(["--32", "t32.s", "-o", "t32.o"]));
        let read = |n: &str| std::fs::read(d.join(n)).expect("read built file");
        Inputs {
            obj: read("t.o"),
            obj_nofs: read("nofs.o"),
            obj32: read("t32.o"),
            exe: read("t.exe"),
            pie: read("t.pie"),
            shared: read("t.so"),
            _dir: dir,
        }
    })
}

/// Asserts that every reader refuses `bytes` cleanly, with an error that
/// names the file and maps to exit status 1; returns inspect's message.
fn refused(bytes: &[u8], name: &str) -> String {
    let e = match inspect(bytes, Path::new(name)) {
        Ok(_) => panic!("inspect accepted {name}"),
        Err(e) => e,
    };
    assert_eq!(e.status(), Status::Error, "{e}");
    let msg = e.to_string();
    assert!(msg.contains(name), "message does not name the file: {msg}");

    assert!(
        format::read_meta(bytes).is_err(),
        "read_meta accepted {name}"
    );

    match ObjectFile::parse(bytes, name) {
        Ok(_) => panic!("ObjectFile::parse accepted {name}"),
        Err(e) => {
            assert_eq!(e.status(), Status::Error, "{e}");
            assert!(e.to_string().contains(name), "parse error: {e}");
        }
    }
    for (o, p) in [
        (bytes, inputs().obj.as_slice()),
        (inputs().obj.as_slice(), bytes),
    ] {
        match diff_objects(o, "a.o", p, "b.o", &DiffOptions::default()) {
            Ok(_) => panic!("diff_objects accepted {name}"),
            Err(e) => assert_eq!(e.status(), Status::Error, "{e}"),
        }
    }
    msg
}

#[test]
fn real_object_is_accepted() {
    let d = inspect(&inputs().obj, Path::new("t.o")).expect("inspect t.o");
    assert!(d.symbols.iter().any(|s| s.name == "g" && s.kind == "FUNC"));
    assert!(ObjectFile::parse(&inputs().obj, "t.o").is_ok());
}

#[test]
fn every_truncation_is_refused() {
    let obj = &inputs().obj;
    for len in 0..obj.len() {
        refused(&obj[..len], &format!("t.o[..{len}]"));
    }
}

#[test]
fn garbage_is_refused() {
    let m = refused(b"", "empty.o");
    assert!(m.contains("too short"), "{m}");
    let m = refused(b"int main(void) { return 0; }\n", "source.c");
    assert!(m.contains("not an ELF"), "{m}");
    refused(&[0x7f, b'E', b'L', b'F'], "magic-only.o");
    refused(&[0xff; 4096], "ones.o");
}

#[test]
fn elf32_is_refused() {
    let m = refused(&inputs().obj32, "t32.o");
    assert!(m.contains("ELFCLASS32"), "{m}");
}

#[test]
fn other_machine_is_refused() {
    let mut b = inputs().obj.clone();
    // e_machine (offset 18, little-endian) = EM_AARCH64 (183).
    b[18..20].copy_from_slice(&183u16.to_le_bytes());
    let e = inspect(&b, Path::new("arm.o")).expect_err("arm.o accepted");
    assert!(matches!(e, Error::WrongMachine { machine: 183, .. }), "{e}");
    refused(&b, "arm.o");
}

#[test]
fn big_endian_is_refused() {
    let mut b = inputs().obj.clone();
    b[5] = 2; // EI_DATA = ELFDATA2MSB
    let m = refused(&b, "be.o");
    assert!(m.contains("little-endian"), "{m}");
}

#[test]
fn executables_and_shared_objects_are_refused() {
    for (bytes, name, ty) in [
        (&inputs().exe, "t.exe", 2u16),
        (&inputs().pie, "t.pie", 3),
        (&inputs().shared, "t.so", 3),
    ] {
        let e = inspect(bytes, Path::new(name)).expect_err("executable accepted");
        assert!(
            matches!(e, Error::NotRelocatable { e_type, .. } if e_type == ty),
            "{e}"
        );
        refused(bytes, name);
    }
}

#[test]
fn corrupted_headers_are_refused() {
    let obj = &inputs().obj;
    // e_shoff (offset 40, u64) past the end; e_shnum (60) huge; e_shstrndx (62) out of range.
    let mut b = obj.clone();
    b[40..48].copy_from_slice(&(obj.len() as u64 * 2).to_le_bytes());
    refused(&b, "shoff.o");
    let mut b = obj.clone();
    b[60..62].copy_from_slice(&0xfff0u16.to_le_bytes());
    refused(&b, "shnum.o");
    let mut b = obj.clone();
    b[62..64].copy_from_slice(&0xfe00u16.to_le_bytes());
    refused(&b, "shstrndx.o");
}

#[test]
fn objects_without_function_sections_do_not_diff() {
    let nofs = &inputs().obj_nofs;
    // inspect dumps them (they are valid objects)...
    assert!(inspect(nofs, Path::new("nofs.o")).is_ok());
    // ...but the diff refuses them with a clear error.
    let mut changed = nofs.clone();
    if let Some(pos) = changed.windows(3).position(|w| w == b"ccc") {
        changed[pos] = b'd';
    }
    match diff_objects(nofs, "nofs.o", &changed, "nofs2.o", &DiffOptions::default()) {
        Ok(_) => panic!("diff accepted objects without function sections"),
        Err(e) => assert_eq!(e.status(), Status::Error, "{e}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Random bytes, and a real object with random bytes overwritten: no
    /// reader panics (errors and, for light damage, dumps are both fine).
    #[test]
    fn no_panic_on_random_damage(
        garbage in prop::collection::vec(any::<u8>(), 0..2048),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..16),
    ) {
        let _ = inspect(&garbage, Path::new("garbage.o"));
        let _ = format::read_meta(&garbage);
        let _ = ObjectFile::parse(&garbage, "garbage.o");
        let mut b = inputs().obj.clone();
        for (at, byte) in edits {
            let i = at.index(b.len());
            b[i] = byte;
        }
        if let Ok(d) = inspect(&b, Path::new("damaged.o")) {
            let _ = d.to_string();
        }
        let _ = format::read_meta(&b);
        let _ = ObjectFile::parse(&b, "damaged.o");
        let _ = diff_objects(&inputs().obj, "t.o", &b, "damaged.o", &DiffOptions::default());
    }
}

#[test]
fn read_meta_errors_are_specific() {
    assert!(matches!(
        format::read_meta(&inputs().obj),
        Err(FormatError::NotPatch(_))
    ));
    assert!(matches!(
        format::read_meta(b"junk"),
        Err(FormatError::NotPatch(_))
    ));
}
