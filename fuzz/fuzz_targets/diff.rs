//! Fuzz target: `ObjectFile::parse` and `diff_objects` on arbitrary pairs.
//! The input is split in two at the position given by its first four bytes (little-endian), so
//! that seeds can be real object pairs (see `fuzz/seeds.sh`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use patchgen::{DiffOptions, ObjectFile, diff_objects};

fuzz_target!(|data: &[u8]| {
    let Some((head, rest)) = data.split_first_chunk::<4>() else {
        return;
    };
    let cut = (u32::from_le_bytes(*head) as usize).min(rest.len());
    let (orig, patched) = rest.split_at(cut);
    let _ = ObjectFile::parse(orig, "orig.o");
    let _ = ObjectFile::parse(patched, "patched.o");
    if let Ok(report) = diff_objects(
        orig,
        "orig.o",
        patched,
        "patched.o",
        &DiffOptions::default(),
    ) {
        // A patch that was emitted must be readable as a patch.
        let _ = patchgen::format::read_meta(&report.patch);
        let _ = patchgen::inspect::inspect(&report.patch, std::path::Path::new("patch.o"));
    }
});
