//! Fuzz target: `format::read_meta` (ELF container + metadata section) and
//! `Meta::decode` (the section body) on arbitrary bytes. Any result is fine;
//! a panic, abort or hang is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;
use patchgen::format::{Meta, read_meta};

fuzz_target!(|data: &[u8]| {
    let _ = read_meta(data);
    if let Ok(meta) = Meta::decode(data) {
        // Whatever decodes must re-encode to something that decodes equal.
        assert_eq!(Meta::decode(&meta.encode()).ok(), Some(meta));
    }
});
