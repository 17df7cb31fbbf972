//! Fuzz target: the other files hotfix's trust reads from disk: a public
//! key file (`trust::dir::parse_key`), a revocation list
//! (`trust::dir::parse_revoked`) and an audit log's chain
//! (`trust::chain::verify_text`). Any result is fine; a panic is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(pk) = trust::dir::parse_key(Path::new("fuzz.pub"), text) {
        let _ = trust::key_id(pk.keynum());
    }
    let _ = trust::dir::parse_revoked(Path::new("revoked"), text);
    let _ = trust::chain::verify_text(
        Path::new("audit.jsonl"),
        text,
        trust::chain::GENESIS.to_string(),
    );
});
