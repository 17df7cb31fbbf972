//! Snapshot tests of `inspect`: objects compiled at test time from small C
//! sources (gcc -O2 -ffunction-sections -fdata-sections, no debug info, fixed
//! file names, so the dump depends only on the compiler version), and a patch
//! made from such an object by attaching a [`Meta`], both with
//! [`format::attach_meta`] and with `objcopy --add-section`.

#![allow(clippy::panic, reason = "a test reports failure by panicking")]

use patchgen::format::{self, Binding, Func, Kind, Meta, Ref, Target};
use patchgen::inspect::{self, Dump};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A VMM-shaped C file: statics, a static local, string literals, a jump
/// table, global data, bss, calls to undefined functions.
const VCPU_C: &str = r#"
#include <stdint.h>
extern int printf(const char *, ...);
extern void inject_gp(int vcpu);

int apic_base = 0xfee00;
static uint64_t msr_shadow[16];
const char *const reg_names[] = { "eax", "ebx", "ecx", "edx" };

static __attribute__((noinline)) int trace(int vcpu, const char *what)
{
    static int count;
    count++;
    return printf("vcpu %d: %s (%d)\n", vcpu, what, count);
}

int msr_read(int vcpu, uint32_t msr, uint64_t *val)
{
    if (msr >= 0x800 && msr <= 0xbff) {
        *val = msr_shadow[msr & 15];
        trace(vcpu, "x2apic");
        return 0;
    }
    inject_gp(vcpu);
    return -1;
}

void msr_write(uint32_t msr, uint64_t val)
{
    msr_shadow[msr & 15] = val;
}

int decode(int op)
{
    switch (op) {
    case 0: return trace(0, "nop");
    case 1: return apic_base;
    case 2: return trace(1, reg_names[op & 3]);
    case 3: return 17;
    case 4: return trace(2, "hlt");
    case 5: return op * 5;
    default: return -1;
    }
}
"#;

/// Compiles `src` as `name` (in a fresh temporary directory, so that the
/// `STT_FILE` symbol is exactly `name`) and returns the object's bytes.
fn compile(name: &str, src: &str) -> (tempfile::TempDir, PathBuf, Vec<u8>) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join(name), src).expect("write C source");
    let obj = dir.path().join(Path::new(name).with_extension("o"));
    let out = Command::new("gcc")
        .current_dir(dir.path())
        .args(["-c", "-O2", "-ffunction-sections", "-fdata-sections"])
        .arg(name)
        .arg("-o")
        .arg(&obj)
        .output()
        .expect("run gcc (installed by scripts/setup)");
    assert!(
        out.status.success(),
        "gcc failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&obj).expect("read object");
    (dir, obj, bytes)
}

fn sample_meta() -> Meta {
    Meta {
        id: "xsa108-fix".into(),
        description: "x2APIC MSR range is 0x800-0x8ff\nnot 0x800-0xbff".into(),
        source_hash: "5e".repeat(32),
        targets: vec![Target {
            build_id: "0123456789abcdef0123456789abcdef01234567".into(),
            name: "minivmm".into(),
        }],
        funcs: vec![Func {
            name: "msr_read".into(),
            file: None,
            sympos: 0,
            binding: Binding::Global,
            old_size: 64,
            new_symbol: "msr_read".into(),
            target: 0,
            expected: "8d86".to_owned() + "00f8ffff3d",
            expected_mask: "ff".repeat(7),
        }],
        new_funcs: vec!["trace".into()],
        new_data: vec!["msr_shadow".into()],
        refs: vec![
            Ref {
                symbol: "inject_gp".into(),
                name: "inject_gp".into(),
                binding: Binding::Global,
                kind: Kind::Func,
                file: None,
                sympos: 0,
                target: 0,
            },
            Ref {
                symbol: "count.0".into(),
                name: "count.0".into(),
                binding: Binding::Local,
                kind: Kind::Object,
                file: Some("vcpu.c".into()),
                sympos: 1,
                target: 0,
            },
        ],
    }
}

fn dump(bytes: &[u8]) -> Dump {
    match inspect::inspect(bytes, Path::new("test.o")) {
        Ok(d) => d,
        Err(e) => panic!("inspect failed: {e}"),
    }
}

#[test]
fn object_text() {
    let (_dir, _, bytes) = compile("vcpu.c", VCPU_C);
    insta::assert_snapshot!(dump(&bytes).to_string());
}

#[test]
fn object_json() {
    let (_dir, _, bytes) = compile("vcpu.c", VCPU_C);
    let json = serde_json::to_string_pretty(&dump(&bytes)).expect("serialize");
    insta::assert_snapshot!(json);
}

#[test]
fn patch_text() {
    let (_dir, _, bytes) = compile("vcpu.c", VCPU_C);
    let patch = format::attach_meta(&bytes, &sample_meta()).expect("attach_meta");
    let d = dump(&patch);
    assert_eq!(d.meta.as_ref(), Some(&sample_meta()));
    insta::assert_snapshot!(d.to_string());
}

#[test]
fn patch_json() {
    let (_dir, _, bytes) = compile("vcpu.c", VCPU_C);
    let patch = format::attach_meta(&bytes, &sample_meta()).expect("attach_meta");
    let json = serde_json::to_string_pretty(&dump(&patch)).expect("serialize");
    insta::assert_snapshot!(json);
}

/// The dump does not depend on the file layout: a patch made with objcopy
/// (sections in another order, other offsets and indexes) dumps exactly like
/// one made with `attach_meta`.
#[test]
fn dump_is_layout_independent() {
    let (dir, obj, bytes) = compile("vcpu.c", VCPU_C);
    let meta_file = dir.path().join("meta.bin");
    std::fs::write(&meta_file, sample_meta().encode()).expect("write meta");
    let out_file = dir.path().join("patch-objcopy.o");
    let status = Command::new("objcopy")
        .arg(format!(
            "--add-section={}={}",
            format::META_SECTION,
            meta_file.display()
        ))
        .arg(format!(
            "--set-section-flags={}=readonly",
            format::META_SECTION
        ))
        .arg(&obj)
        .arg(&out_file)
        .status()
        .expect("run objcopy (binutils, installed by scripts/setup)");
    assert!(status.success(), "objcopy failed");
    let via_objcopy = std::fs::read(&out_file).expect("read objcopy output");
    let via_writer = format::attach_meta(&bytes, &sample_meta()).expect("attach_meta");
    assert_ne!(
        via_objcopy, via_writer,
        "the two files should differ in layout"
    );
    assert_eq!(dump(&via_objcopy), dump(&via_writer));
}

/// Changing an unrelated function changes only that function's rows.
#[test]
fn dump_is_stable_under_unrelated_change() {
    let (_d1, _, a) = compile("vcpu.c", VCPU_C);
    let changed = VCPU_C.replace("case 5: return op * 5;", "case 5: return op * 7 + 1;");
    let extra = format!("int first_fn(int x) {{ return x + 1; }}\n{changed}");
    let (_d2, _, b) = compile("vcpu.c", &extra);
    let (da, db) = (dump(&a), dump(&b));
    let only_b: Vec<_> = db
        .sections
        .iter()
        .filter(|s| !da.sections.contains(s))
        .map(|s| s.name.as_str())
        .collect();
    // Added function, its relocations (if any), and the changed function.
    for name in &only_b {
        assert!(
            name.contains("first_fn")
                || name.contains("decode")
                || name.contains("eh_frame")
                || [".symtab", ".strtab", ".shstrtab"].contains(name),
            "unexpected changed section {name}"
        );
    }
    let msr = |d: &Dump| {
        d.relocations
            .iter()
            .find(|g| g.section == ".text.msr_read")
            .cloned()
    };
    assert!(msr(&da).is_some());
    assert_eq!(msr(&da), msr(&db));
}
