//! Bad patch files never panic the loader: every truncation and many byte
//! flips of a real patch are read and linked, and must give a result or a
//! clear error.

mod support;

use loader::link::{Resolved, link};
use support::{Build, Spec, TargetKind};

#[test]
fn truncated_and_corrupted_patches_give_errors_not_panics() {
    let b = Build::new();
    let bin = b.target(TargetKind {
        pie: true,
        lib: false,
    });
    let spec = Spec::new("static", &bin, &["compute"])
        .local_ref("scale", patchgen::format::Kind::Func)
        .local_ref("factor", patchgen::format::Kind::Object);
    let path = b.patch("compute_static.c", &spec);
    let good = std::fs::read(&path).expect("read");
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
