//! Bad input never panics the loader: every truncation and many byte flips
//! of a real patch are read and linked, and must give a result or a clear
//! error; and each place where a value from a file (a patch, a kernel
//! module, the target's symbol table) once went into unchecked arithmetic is
//! fed a hostile value and must return an error naming it.

mod support;

use goblin::elf::Elf;
use loader::kernel::jump::{Kallsyms, retarget_versions, rewrite_for_jump};
use loader::link::{Resolved, link};
use loader::plan::{check_entry, span};
use std::path::Path;
use support::{Build, Spec, TargetKind};

/// A real patch (built from C at test time) and its path.
fn real_patch(b: &Build) -> (std::path::PathBuf, Vec<u8>) {
    let bin = b.target(TargetKind {
        pie: true,
        lib: false,
    });
    let spec = Spec::new("static", &bin, &["compute"])
        .local_ref("scale", patchgen::format::Kind::Func)
        .local_ref("factor", patchgen::format::Kind::Object);
    let path = b.patch("compute_static.c", &spec);
    let bytes = std::fs::read(&path).expect("read");
    (path, bytes)
}

#[test]
fn truncated_and_corrupted_patches_give_errors_not_panics() {
    let b = Build::new();
    let (path, good) = real_patch(&b);
    let resolve = |_: &str| Ok(Resolved::Addr(0x5555_0000_1000));
    assert!(link(&path, &good, 0x5555_1000_0000, 0, &resolve).is_ok());
    let mut errors = 0;
    let mut cases: Vec<Vec<u8>> = (0..good.len())
        .step_by(7)
        .map(|n| good[..n].to_vec())
        .collect();
    for i in (0..good.len()).step_by(13) {
        for x in [0x00u8, 0xff, 0x80] {
            let mut c = good.clone();
            c[i] ^= x | 1;
            cases.push(c);
        }
    }
    let p = b.path("bad.hfx");
    for c in &cases {
        std::fs::write(&p, c).expect("write");
        // Both the metadata reader and the linker see every case.
        if loader::Patch::read(&p).is_err() {
            errors += 1;
        }
        if link(&p, c, 0x5555_1000_0000, 0, &resolve).is_err() {
            errors += 1;
        }
    }
    assert!(errors > 0);
}

/// link.rs: a relocation's `r_offset` near `u64::MAX` once gave a wrapped
/// image offset before its bounds check.
#[test]
fn relocation_offset_near_u64_max_is_an_error() {
    let b = Build::new();
    let (path, good) = real_patch(&b);
    let resolve = |_: &str| Ok(Resolved::Addr(0x5555_0000_1000));
    let elf = Elf::parse(&good).expect("parse");
    // The first RELA entry of the first relocation section with one.
    let rela = elf
        .section_headers
        .iter()
        .find(|s| s.sh_type == goblin::elf::section_header::SHT_RELA && s.sh_size >= 24)
        .expect("a relocation section");
    let at = rela.sh_offset as usize; // r_offset is the first field
    let mut bad = good.clone();
    for v in [u64::MAX, u64::MAX - 3, 1 << 63] {
        bad[at..at + 8].copy_from_slice(&v.to_le_bytes());
        let err = link(&path, &bad, 0x5555_1000_0000, 0, &resolve)
            .expect_err("hostile r_offset accepted");
        assert!(
            err.to_string()
                .contains("relocation lies outside its section"),
            "{err}"
        );
    }
}

/// link.rs: a section whose offset + size wraps past `u64::MAX`.
#[test]
fn section_extent_wrapping_is_an_error() {
    let b = Build::new();
    let (path, good) = real_patch(&b);
    let resolve = |_: &str| Ok(Resolved::Addr(0x5555_0000_1000));
    let elf = Elf::parse(&good).expect("parse");
    let shoff = elf.header.e_shoff as usize;
    let (i, _) = elf
        .section_headers
        .iter()
        .enumerate()
        .find(|(_, s)| s.sh_type == goblin::elf::section_header::SHT_PROGBITS && s.sh_size > 0)
        .expect("a PROGBITS section");
    let hdr = shoff + i * 64;
    let mut bad = good.clone();
    // sh_offset (at 0x18) near the top, sh_size (0x20) small: the sum wraps.
    bad[hdr + 0x18..hdr + 0x20].copy_from_slice(&(u64::MAX - 8).to_le_bytes());
    let err = link(&path, &bad, 0x5555_1000_0000, 0, &resolve).expect_err("wrapping section");
    assert!(err.to_string().contains("outside the file"), "{err}");
}

/// kernel/jump.rs: `__versions` offset and size come from the module; the
/// walk over its 64-byte entries once added them unchecked.
#[test]
fn hostile_versions_table_is_an_error() {
    let mut image = vec![0u8; 256];
    // A well-formed table of two entries at 64, the second klp_enable_patch.
    image[128 + 8..128 + 8 + 17].copy_from_slice(b"klp_enable_patch\0");
    assert!(retarget_versions(&mut image.clone(), 64, 128, 7).is_ok());
    for (off, size) in [
        (u64::MAX - 63, 128),
        (64, u64::MAX),
        (u64::MAX, u64::MAX),
        (200, 128),
        (64, 100), // not a whole number of entries
    ] {
        let err = retarget_versions(&mut image, off, size, 7).expect_err("hostile __versions");
        assert!(err.contains("__versions"), "{off:#x}+{size:#x}: {err}");
    }
}

/// kernel/jump.rs: the rewrite of truncated or garbage modules is an error.
#[test]
fn truncated_kernel_modules_are_errors() {
    let k = Kallsyms::default();
    let p = Path::new("bad.ko");
    let mut elf = [0u8; 64];
    elf[..4].copy_from_slice(b"\x7fELF");
    elf[4] = 2; // ELFCLASS64
    elf[5] = 1; // little-endian
    elf[6] = 1;
    // e_shoff far past the end, e_shentsize 64, e_shnum 3.
    elf[0x28..0x30].copy_from_slice(&(u64::MAX - 16).to_le_bytes());
    elf[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
    elf[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
    for img in [&b""[..], &b"\x7fELF"[..], &elf[..]] {
        assert!(rewrite_for_jump(p, img, &k, Some(1)).is_err());
    }
}

/// load.rs (now plan.rs): a function whose address and size come from the
/// target's symbol table; the end of its range and of its entry site were
/// added unchecked.
#[test]
fn function_ranges_past_the_address_space_are_errors() {
    assert_eq!(span(0x1000, 0x10), Ok(0x1010));
    assert!(span(u64::MAX - 4, 16).is_err());
    assert!(check_entry(0x1000, 0x20, 0x1004, 5).is_ok());
    assert!(check_entry(u64::MAX - 4, 16, u64::MAX - 4, 5).is_err());
    assert!(check_entry(0x1000, 0x20, u64::MAX - 2, 5).is_err());
    assert!(check_entry(0x1000, 4, 0x1000, 5).is_err(), "too small");
    assert!(
        check_entry(0x1ffe, 0x20, 0x1ffe, 5).is_err(),
        "straddles a page"
    );
    assert!(
        check_entry(0x1000, 0x20, 0x0fff, 5).is_err(),
        "site before the function"
    );
}
