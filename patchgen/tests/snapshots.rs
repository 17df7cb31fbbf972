//! Snapshot tests of the stable text outputs: the `hotfix diff` summary and
//! the `hotfix explain` disassembly diff of the XSA-108 case (gcc -O2).

#![allow(clippy::unwrap_used, missing_docs)]

mod common;

#[test]
fn xsa108_diff_summary() {
    let pair = common::build("xsa108", &["-O2"]);
    let r = patchgen::diff_objects(
        &pair.orig_bytes(),
        "orig/xsa108.o",
        &pair.patched_bytes(),
        "patched/xsa108.o",
        &patchgen::DiffOptions {
            id: "xsa108".into(),
            ..Default::default()
        },
    )
    .unwrap();
    insta::assert_snapshot!(r.render());
}

#[test]
fn xsa108_explain() {
    let pair = common::build("xsa108", &["-O2"]);
    let ex = patchgen::explain::explain(
        &pair.orig_bytes(),
        "orig/xsa108.o",
        &pair.patched_bytes(),
        "patched/xsa108.o",
        None,
    )
    .unwrap();
    assert_eq!(ex.funcs.len(), 1);
    assert!(ex.funcs[0].diff.contains("-") && ex.funcs[0].diff.contains("+"));
    insta::assert_snapshot!(ex.render());
}

#[test]
fn explain_shows_references_by_name() {
    // new_helper at -O2: calls and data references are symbolized, so the
    // diff shows names, not raw displacements.
    let pair = common::build("new_helper", &["-O2"]);
    let ex = patchgen::explain::explain(
        &pair.orig_bytes(),
        "orig/new_helper.o",
        &pair.patched_bytes(),
        "patched/new_helper.o",
        Some("handle_desc"),
    )
    .unwrap();
    insta::assert_snapshot!(ex.render());
    let e = patchgen::explain::explain(
        &pair.orig_bytes(),
        "o",
        &pair.patched_bytes(),
        "p",
        Some("ring_peek"),
    )
    .unwrap_err();
    assert!(matches!(e, patchgen::Error::NotChanged { .. }), "{e}");
}
