//! Fuzz target: a `.minisig` file as hotfix reads it (`trust::dir::
//! parse_signature`), its trusted comment (`Subject::from_comment`), and,
//! when it parses, verification of a fixed message under a public key (the
//! minisign crate's Ed25519 and BLAKE2b paths on arbitrary signatures).
//! Input: a public key file, a line `--`, a signature file (fuzz/seeds.sh
//! makes matching pairs with `minisign -G` and `hotfix sign`). Any result is
//! fine; a panic, abort or hang is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (pk_text, sig_text) = text.split_once("\n--\n").unwrap_or(("", text));
    let Ok(sig) = trust::dir::parse_signature(Path::new("fuzz.minisig"), sig_text) else {
        return;
    };
    if let Ok(c) = sig.trusted_comment() {
        let _ = trust::Subject::from_comment(&c);
    }
    let _ = trust::key_id(sig.keynum());
    if let Ok(pk) = trust::dir::parse_key(Path::new("fuzz.pub"), pk_text) {
        let _ = minisign::verify(&pk, &sig, std::io::Cursor::new(b"patch"), true, false, false);
    }
});
