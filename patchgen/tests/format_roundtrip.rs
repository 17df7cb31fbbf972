//! Round trips of the patch format: [`Meta`] through its section encoding,
//! and through a whole patch ELF file (written with
//! [`format::attach_meta`] or with `objcopy --add-section`, read back with
//! [`format::read_meta`]), for fixed and for generated (proptest) values.

#![allow(clippy::panic, reason = "a test reports failure by panicking")]

use patchgen::format::{
    self, Binding, FORMAT_VERSION, FormatError, Func, Kind, META_MAGIC, META_SECTION, Meta, Ref,
    Target,
};
use proptest::prelude::*;
use std::process::Command;
use std::sync::OnceLock;

/// A small relocatable object compiled once per test binary.
fn object() -> &'static [u8] {
    static OBJ: OnceLock<Vec<u8>> = OnceLock::new();
    OBJ.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("fix.c"),
            "extern int g(int);\nstatic int n;\nint f(int x) { n += x; return g(x) + n; }\n",
        )
        .expect("write C source");
        let out = Command::new("gcc")
            .current_dir(dir.path())
            .args(["-c", "-O2", "-ffunction-sections", "-fdata-sections"])
            .args(["fix.c", "-o", "fix.o"])
            .output()
            .expect("run gcc (installed by scripts/setup)");
        assert!(
            out.status.success(),
            "gcc: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::read(dir.path().join("fix.o")).expect("read object")
    })
}

fn fixed() -> Meta {
    Meta {
        id: "fix-1.0_a".into(),
        description: "two\nlines \u{e9}\"quoted\"".into(),
        source_hash: "ab".repeat(32),
        targets: vec![
            Target {
                build_id: "cd".repeat(20),
                name: "/usr/bin/qemu-system-x86_64".into(),
            },
            Target {
                build_id: String::new(),
                name: "libc.so.6".into(),
            },
        ],
        funcs: vec![Func {
            name: "f".into(),
            file: Some("fix.c".into()),
            sympos: 2,
            binding: Binding::Local,
            old_size: 37,
            new_symbol: "f".into(),
            target: 1,
            expected: "f30f1efa5589e5".into(),
            expected_mask: "ffffffff00ffff".into(),
        }],
        new_funcs: vec!["helper".into()],
        new_data: vec!["table".into(), "n".into()],
        refs: vec![Ref {
            symbol: "g".into(),
            name: "g".into(),
            binding: Binding::Weak,
            kind: Kind::Tls,
            file: None,
            sympos: 0,
            target: 0,
        }],
    }
}

#[test]
fn section_layout_is_magic_version_json() {
    let bytes = fixed().encode();
    assert_eq!(&bytes[..8], META_MAGIC);
    assert_eq!(bytes[8..12], FORMAT_VERSION.to_le_bytes());
    let json: serde_json::Value = serde_json::from_slice(&bytes[12..]).expect("JSON body");
    assert_eq!(json["id"], "fix-1.0_a");
    assert_eq!(json["funcs"][0]["binding"], "local");
    assert_eq!(json["refs"][0]["kind"], "tls");
}

#[test]
fn elf_round_trip_with_writer() {
    let patch = format::attach_meta(object(), &fixed()).expect("attach_meta");
    assert_eq!(format::read_meta(&patch).expect("read_meta"), fixed());
    // The ELF part is untouched: same symbols and relocations.
    let before = patchgen::inspect::inspect(object(), "fix.o".as_ref()).expect("inspect");
    let after = patchgen::inspect::inspect(&patch, "patch.o".as_ref()).expect("inspect");
    assert_eq!(before.symbols, after.symbols);
    assert_eq!(before.relocations, after.relocations);
    let mut sections = after.sections.clone();
    sections.retain(|s| s.name != META_SECTION && s.name != ".shstrtab");
    let mut expect = before.sections.clone();
    expect.retain(|s| s.name != ".shstrtab");
    assert_eq!(sections, expect);
}

#[test]
fn attaching_again_replaces_the_metadata() {
    let once = format::attach_meta(object(), &fixed()).expect("attach_meta");
    let mut other = fixed();
    other.id = "second".into();
    other.funcs.clear();
    let twice = format::attach_meta(&once, &other).expect("attach_meta again");
    assert_eq!(format::read_meta(&twice).expect("read_meta"), other);
    let dump = patchgen::inspect::inspect(&twice, "twice.o".as_ref()).expect("inspect");
    let metas = dump
        .sections
        .iter()
        .filter(|s| s.name == META_SECTION)
        .count();
    assert_eq!(metas, 1);
}

#[test]
fn elf_round_trip_with_objcopy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (obj, meta, out) = (
        dir.path().join("fix.o"),
        dir.path().join("meta"),
        dir.path().join("patch.o"),
    );
    std::fs::write(&obj, object()).expect("write object");
    std::fs::write(&meta, fixed().encode()).expect("write meta");
    let status = Command::new("objcopy")
        .arg(format!("--add-section={META_SECTION}={}", meta.display()))
        .arg(format!("--set-section-flags={META_SECTION}=readonly"))
        .arg(&obj)
        .arg(&out)
        .status()
        .expect("run objcopy");
    assert!(status.success());
    let patch = std::fs::read(&out).expect("read patch");
    assert_eq!(format::read_meta(&patch).expect("read_meta"), fixed());
}

#[test]
fn writer_refuses_invalid_meta_and_non_objects() {
    let mut bad = fixed();
    bad.refs[0].target = 7;
    assert!(matches!(
        format::attach_meta(object(), &bad),
        Err(FormatError::Invalid(_))
    ));
    assert!(matches!(
        format::attach_meta(b"not an ELF file", &fixed()),
        Err(FormatError::NotPatch(_))
    ));
    assert!(matches!(
        format::read_meta(object()),
        Err(FormatError::NotPatch(m)) if m.contains(META_SECTION)
    ));
}

#[test]
fn reader_refuses_future_versions_in_an_elf() {
    let mut body = fixed().encode();
    body[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
    let dir = tempfile::tempdir().expect("tempdir");
    let (obj, meta, out) = (
        dir.path().join("fix.o"),
        dir.path().join("meta"),
        dir.path().join("patch.o"),
    );
    std::fs::write(&obj, object()).expect("write object");
    std::fs::write(&meta, &body).expect("write meta");
    let status = Command::new("objcopy")
        .arg(format!("--add-section={META_SECTION}={}", meta.display()))
        .arg(&obj)
        .arg(&out)
        .status()
        .expect("run objcopy");
    assert!(status.success());
    let patch = std::fs::read(&out).expect("read patch");
    assert!(matches!(
        format::read_meta(&patch),
        Err(FormatError::Version { found }) if found == FORMAT_VERSION + 1
    ));
}

fn binding() -> impl Strategy<Value = Binding> {
    prop_oneof![
        Just(Binding::Local),
        Just(Binding::Global),
        Just(Binding::Weak)
    ]
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        Just(Kind::Func),
        Just(Kind::Object),
        Just(Kind::Tls),
        Just(Kind::Notype)
    ]
}

/// Any valid [`Meta`]: arbitrary Unicode in free-text fields, valid ids,
/// in-range target indexes, hex expected bytes with a mask of equal length.
fn meta() -> impl Strategy<Value = Meta> {
    let targets = prop::collection::vec(
        ("[0-9a-f]{0,40}", any::<String>()).prop_map(|(build_id, name)| Target { build_id, name }),
        1..4,
    );
    targets.prop_flat_map(|targets| {
        let n = targets.len();
        let func = (
            any::<String>(),
            prop::option::of(any::<String>()),
            any::<u32>(),
            binding(),
            any::<u64>(),
            "[a-z_.0-9]{1,20}",
            0..n,
            prop::collection::vec((any::<u8>(), any::<bool>()), 5..16),
        )
            .prop_map(
                |(name, file, sympos, binding, old_size, new_symbol, target, bytes)| Func {
                    name,
                    file,
                    sympos,
                    binding,
                    old_size,
                    new_symbol,
                    target,
                    expected: bytes.iter().map(|(b, _)| format!("{b:02x}")).collect(),
                    expected_mask: bytes
                        .iter()
                        .map(|(_, m)| if *m { "ff" } else { "00" })
                        .collect(),
                },
            );
        let reference = (
            "[a-z_.0-9]{1,20}",
            any::<String>(),
            binding(),
            kind(),
            prop::option::of(any::<String>()),
            any::<u32>(),
            0..n,
        )
            .prop_map(|(symbol, name, binding, kind, file, sympos, target)| Ref {
                symbol,
                name,
                binding,
                kind,
                file,
                sympos,
                target,
            });
        (
            "[A-Za-z0-9._-]{1,30}",
            any::<String>(),
            "[0-9a-f]{64}",
            Just(targets),
            prop::collection::vec(func, 0..5),
            prop::collection::vec("[a-z_.0-9]{1,20}", 0..4),
            prop::collection::vec("[a-z_.0-9]{1,20}", 0..4),
            prop::collection::vec(reference, 0..6),
        )
            .prop_map(
                |(id, description, source_hash, targets, funcs, new_funcs, new_data, refs)| Meta {
                    id,
                    description,
                    source_hash,
                    targets,
                    funcs,
                    new_funcs,
                    new_data,
                    refs,
                },
            )
    })
}

proptest! {
    #[test]
    fn meta_section_round_trip(m in meta()) {
        prop_assert_eq!(Meta::decode(&m.encode()).ok(), Some(m));
    }

    #[test]
    fn meta_elf_round_trip(m in meta()) {
        let patch = format::attach_meta(object(), &m);
        prop_assert!(patch.is_ok(), "attach_meta: {:?}", patch.err());
        let patch = patch.unwrap_or_default();
        prop_assert_eq!(format::read_meta(&patch).ok(), Some(m));
    }

    /// Decoding never panics, whatever the bytes after a valid header.
    #[test]
    fn meta_decode_total(tail in prop::collection::vec(any::<u8>(), 0..256)) {
        let mut bytes = META_MAGIC.to_vec();
        bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        bytes.extend_from_slice(&tail);
        let _ = Meta::decode(&bytes);
    }
}

/// Compiles `src` as `name` and returns the object bytes.
fn compile(dir: &std::path::Path, name: &str, src: &str) -> Vec<u8> {
    std::fs::write(dir.join(name), src).expect("write C source");
    let obj = format!("{name}.o");
    let out = Command::new("gcc")
        .current_dir(dir)
        .args(["-c", "-O2", "-ffunction-sections", "-fdata-sections"])
        .args([name, "-o", &obj])
        .output()
        .expect("run gcc");
    assert!(
        out.status.success(),
        "gcc: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(dir.join(obj)).expect("read object")
}

const MSR_ORIG: &str = r#"
extern void inject_gp(int vcpu);
static unsigned long long x2apic_regs[1024];
static int reads;
int msr_read(int vcpu, unsigned msr, unsigned long long *val)
{
    reads++;
    if (msr >= 0x800 && msr <= 0xbff) {
        *val = x2apic_regs[msr - 0x800];
        return 0;
    }
    inject_gp(vcpu);
    return -1;
}
int msr_count(void) { return reads; }
"#;

/// A patch made by the diff engine is a valid patch: its metadata reads back
/// equal, passes [`Meta::validate`] against its own ELF part, and `inspect`
/// shows it; a metadata that does not match the ELF part is refused.
#[test]
fn diff_output_validates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let orig = compile(d, "vcpu.c", MSR_ORIG);
    let patched = compile(d, "vcpu.c", &MSR_ORIG.replace("0xbff", "0x8ff"));
    let report = patchgen::diff_objects(
        &orig,
        "orig/vcpu.o",
        &patched,
        "patched/vcpu.o",
        &patchgen::DiffOptions::default(),
    )
    .expect("diff");
    let meta = format::read_meta(&report.patch).expect("read_meta");
    assert_eq!(meta, report.meta);
    meta.validate(&report.patch).expect("valid patch");
    assert!(meta.funcs.iter().any(|f| f.name == "msr_read"));
    let dump = patchgen::inspect::inspect(&report.patch, "patch.o".as_ref()).expect("inspect");
    assert_eq!(dump.meta.as_ref(), Some(&meta));

    // Every undefined symbol needs exactly one ref.
    let mut m = meta.clone();
    let dropped = m.refs.pop().expect("the patch references unchanged code");
    let e = m.validate(&report.patch).expect_err("missing ref accepted");
    assert!(e.to_string().contains(&dropped.symbol), "{e}");
    let mut m = meta.clone();
    m.refs.push(dropped.clone());
    m.refs.push(dropped);
    assert!(m.validate(&report.patch).is_err());
    // The new symbol must be a defined function.
    let mut m = meta.clone();
    m.funcs[0].new_symbol = "no_such_function".into();
    let e = m
        .validate(&report.patch)
        .expect_err("bad new_symbol accepted");
    assert!(e.to_string().contains("no_such_function"), "{e}");
    // endbr64 needs 9 expected bytes.
    let mut m = meta.clone();
    m.funcs[0].expected = "f30f1efa90".into();
    m.funcs[0].expected_mask = "ffffffffff".into();
    assert!(m.validate(&report.patch).is_err());
    // New functions and data must be defined in the patch.
    let mut m = meta;
    m.new_data.push("ghost".into());
    assert!(m.validate(&report.patch).is_err());
}
