//! The object-diff test cases: C source pairs from `testkernels/diffcases/`
//! compiled with gcc at test time (-O1/-O2/-O3/-Os, with and without
//! -fPIC/-fPIE), each asserting the exact set of changed/new functions and
//! new data, or the exact refusal. Every emitted patch is verified (parsed
//! back, metadata round trip, one `Ref` per undefined symbol).

#![allow(clippy::unwrap_used, clippy::panic, missing_docs)]

mod common;

use common::{VARIANTS, build, changed, diff, sorted, verify};
use patchgen::format::{Binding, Kind};
use patchgen::{Error, RefusalKind};

fn is_o1(v: &[&str]) -> bool {
    v.contains(&"-O1")
}

/// Asserts the exact changed / new-function / new-data sets of `case`
/// under every variant; `expect` gives them per variant.
fn expect_sets(
    case: &str,
    expect: impl Fn(&[&str], &common::Pair) -> (Vec<String>, Vec<String>, Vec<String>),
) -> Vec<patchgen::DiffReport> {
    let mut out = Vec::new();
    for v in VARIANTS {
        let pair = build(case, v);
        let r = diff(&pair).unwrap_or_else(|e| panic!("{case} {v:?}: {e}"));
        verify(&r);
        let (c, n, d) = expect(v, &pair);
        assert_eq!(changed(&r), c, "{case} {v:?}: changed");
        let mut nf = r.new_funcs.clone();
        nf.sort();
        assert_eq!(nf, n, "{case} {v:?}: new functions");
        let mut nd = r.new_data.clone();
        nd.sort();
        assert_eq!(nd, d, "{case} {v:?}: new data");
        out.push(r);
    }
    out
}

fn only(changed: &[&str]) -> (Vec<String>, Vec<String>, Vec<String>) {
    (sorted(changed), vec![], vec![])
}

/// Names of the defined functions of an object whose name starts with `prefix`.
fn funcs_named(path: &std::path::Path, prefix: &str) -> Vec<String> {
    let bytes = std::fs::read(path).unwrap();
    let o = patchgen::ObjectFile::parse(&bytes, "x").unwrap();
    o.symbols
        .iter()
        .filter(|s| s.is_func() && s.section.is_some() && s.name.starts_with(prefix))
        .map(|s| s.name.clone())
        .collect()
}

fn expect_refusal(case: &str, kind: RefusalKind, symbol: &str) {
    for v in VARIANTS {
        let pair = build(case, v);
        match diff(&pair) {
            Err(e @ Error::Refused { .. }) => {
                assert_eq!(e.status(), patchgen::Status::Error);
                let Error::Refused { refusals, file } = e else {
                    unreachable!()
                };
                assert_eq!(file, "patched.o");
                let got: Vec<_> = refusals
                    .iter()
                    .map(|r| (r.kind, r.symbol.as_str()))
                    .collect();
                assert_eq!(got, vec![(kind, symbol)], "{case} {v:?}: {refusals:?}");
                assert!(!refusals[0].reason.is_empty());
            }
            other => panic!("{case} {v:?}: expected refusal, got {other:?}"),
        }
    }
}

fn expect_no_change(case: &str, line_only: usize) {
    for v in VARIANTS {
        let pair = build(case, v);
        match diff(&pair) {
            Err(e @ Error::NoChange { .. }) => {
                assert_eq!(e.status(), patchgen::Status::NoChange);
                let Error::NoChange { line_only: n, .. } = e else {
                    unreachable!()
                };
                assert_eq!(n, line_only, "{case} {v:?}: line-only functions");
            }
            other => panic!("{case} {v:?}: expected no change, got {other:?}"),
        }
    }
}

#[test]
fn xsa108_x2apic_msr_range() {
    let reports = expect_sets("xsa108", |_, _| only(&["vlapic_msr_read"]));
    // -fcf-protection: the entry is endbr64, expected bytes cover the jump after it.
    let cet = reports.last().unwrap();
    assert!(cet.meta.funcs[0].expected.starts_with("f30f1efa"));
    assert!(cet.meta.funcs[0].expected.len() >= 18);
    for r in reports {
        let f = &r.meta.funcs[0];
        assert_eq!(f.name, "vlapic_msr_read");
        assert_eq!(f.binding, Binding::Global);
        assert_eq!(f.file, None);
        assert!(f.old_size >= 5);
    }
}

#[test]
fn device_register_write_bounds_check() {
    expect_sets("mmio_bounds", |_, _| only(&["vdev_reg_write"]));
}

#[test]
fn fix_adding_helper_and_global() {
    let reports = expect_sets("new_helper", |v, _| {
        let helper = if is_o1(v) {
            "desc_len_ok"
        } else {
            "desc_len_ok.isra.0"
        };
        (
            sorted(&["handle_desc"]),
            sorted(&[helper]),
            sorted(&["rejected_descs"]),
        )
    });
    for r in reports {
        // Unwind records travel with the code: one FDE per carried function.
        use object::{Object, ObjectSection, ObjectSymbol};
        let file = object::File::parse(r.patch.as_slice()).unwrap();
        let eh = file.section_by_name(".eh_frame").unwrap();
        let mut fde_targets: Vec<String> = eh
            .relocations()
            .filter_map(|(_, rel)| match rel.target() {
                object::RelocationTarget::Symbol(i) => file
                    .symbol_by_index(i)
                    .ok()
                    .map(|s| s.name().unwrap().to_owned()),
                _ => None,
            })
            .collect();
        fde_targets.sort();
        let mut carried = r.new_funcs.clone();
        carried.extend(r.changed.iter().map(|c| c.name.clone()));
        carried.sort();
        assert_eq!(fde_targets, carried);
        // The unchanged static buffer is a local reference with its file.
        let rb = r.meta.refs.iter().find(|x| x.name == "ring_buf").unwrap();
        assert_eq!(rb.binding, Binding::Local);
        assert_eq!(rb.kind, Kind::Object);
        assert_eq!(rb.file.as_deref(), Some("new_helper.c"));
        assert_eq!(rb.sympos, 0);
        assert_ne!(
            rb.symbol, "ring_buf",
            "local refs get a unique mangled name"
        );
        let p = r.meta.refs.iter().find(|x| x.name == "processed").unwrap();
        assert_eq!((p.binding, p.file.as_deref()), (Binding::Global, None));
        assert_eq!(p.symbol, "processed");
    }
}

#[test]
fn no_functional_change_is_status_5() {
    expect_no_change("no_change", 0);
}

#[test]
fn line_number_only_changes_are_not_changes() {
    expect_no_change("line_only", 1);
    expect_no_change("line_assert", 1);
}

#[test]
fn line_change_next_to_real_fix() {
    for r in expect_sets("line_plus_fix", |_, _| only(&["clamp_irq"])) {
        assert_eq!(r.line_only, vec!["route_irq".to_owned()]);
    }
}

#[test]
fn moved_and_renumbered_string_literals_are_not_changes() {
    for r in expect_sets("string_moved", |_, _| only(&["report_error"])) {
        // The new strings travel with the patch.
        let file = object::File::parse(r.patch.as_slice()).unwrap();
        use object::{Object, ObjectSection};
        let strs = file.section_by_name(".rodata.str1.1").unwrap();
        let data = strs.data().unwrap();
        let has = |s: &[u8]| data.windows(s.len()).any(|w| w == s);
        assert!(has(b"device error code=%d (fatal)\n\0") || has(b"device error code=%d (fatal)\0"));
        assert!(has(b"resetting device\0"));
        assert!(!has(b"status done\0"), "only needed strings are copied");
    }
}

#[test]
fn changed_string_literal_is_a_change() {
    expect_sets("string_changed", |_, _| only(&["hello"]));
}

#[test]
fn constprop_clone_correlates_ignoring_suffix_number() {
    expect_sets("constprop", |v, _| {
        only(&[if is_o1(v) {
            "scale"
        } else {
            "scale.constprop.0"
        }])
    });
    // gcc numbers clones per translation unit; simulate a renumbering
    // (.constprop.0 -> .constprop.3) in the patched object.
    let pair = build("constprop", &["-O2"]);
    let mut patched = pair.patched_bytes();
    let from = b"scale.constprop.0";
    let at = patched.windows(from.len()).position(|w| w == from).unwrap();
    patched[at + from.len() - 1] = b'3';
    let r = patchgen::diff_objects(
        &pair.orig_bytes(),
        "orig.o",
        &patched,
        "patched.o",
        &Default::default(),
    )
    .unwrap();
    verify(&r);
    assert_eq!(changed(&r), sorted(&["scale.constprop.3"]));
    assert_eq!(r.changed[0].old_name, "scale.constprop.0");
    assert_eq!(r.meta.funcs[0].name, "scale.constprop.0");
    assert_eq!(r.meta.funcs[0].binding, Binding::Local);
    assert_eq!(r.meta.funcs[0].file.as_deref(), Some("constprop.c"));
    assert!(r.new_funcs.is_empty());
}

#[test]
fn cold_child_goes_with_its_parent() {
    let reports = expect_sets("cold", |_, pair| {
        let mut c = vec!["vm_exit"];
        let cold = funcs_named(&pair.patched, "vm_exit.cold");
        if !cold.is_empty() {
            c.push("vm_exit.cold");
        }
        only(&c)
    });
    // At -O2 gcc does split the function: the case exercises the child.
    let r = &reports[1];
    let cold = r.changed.iter().find(|c| c.name == "vm_exit.cold").unwrap();
    assert!(
        !cold.replaced,
        "a .cold child is entered from its parent only"
    );
    assert_eq!(r.meta.funcs.len(), 1);
    assert_eq!(r.meta.funcs[0].name, "vm_exit");
    assert!(r.meta.new_funcs.contains(&"vm_exit.cold".to_owned()));
}

#[test]
fn static_locals_correlate_through_their_functions() {
    for r in expect_sets("static_local", |_, _| {
        (sorted(&["audit", "tick_a"]), vec![], sorted(&["counter.0"]))
    }) {
        // tick_a's counter is counter.1 in the original (counter.2 in the
        // patched object): the reference names the original.
        let c: Vec<_> = r
            .meta
            .refs
            .iter()
            .filter(|x| x.name.starts_with("counter"))
            .collect();
        assert_eq!(c.len(), 1, "{:?}", r.meta.refs);
        assert_eq!(c[0].name, "counter.1");
        assert_eq!(c[0].binding, Binding::Local);
        assert_eq!(c[0].file.as_deref(), Some("static_local.c"));
    }
}

#[test]
fn removed_static_local_reference_is_refused() {
    expect_refusal(
        "static_local_removed",
        RefusalKind::StaticLocalRemoved,
        "next_id",
    );
}

#[test]
fn callers_of_inlined_changed_function_are_included() {
    expect_sets("inline_caller", |_, _| only(&["hdr_sum", "pkt_sum"]));
}

#[test]
fn changed_data_initializer_is_refused() {
    expect_refusal("data_changed", RefusalKind::DataChanged, "max_vcpus");
}

#[test]
fn changed_data_size_is_refused() {
    expect_refusal("data_size", RefusalKind::DataChanged, "slots");
}

#[test]
fn changed_existing_const_object_is_refused() {
    expect_refusal(
        "rodata_changed",
        RefusalKind::SectionNotIncluded,
        "prio_table",
    );
}

#[test]
fn constructor_only_change_is_refused() {
    expect_refusal("ctor_only", RefusalKind::InitCode, "setup");
}

#[test]
fn function_shorter_than_a_jump_is_refused() {
    expect_refusal("too_short", RefusalKind::TooShort, "ident");
}

#[test]
fn new_static_data_is_included() {
    expect_sets("new_static_data", |_, _| {
        (
            sorted(&["cpuid_leaf_ok"]),
            vec![],
            sorted(&["denied", "leaf_allowed"]),
        )
    });
}

#[test]
fn jump_tables_travel_with_their_function() {
    let reports = expect_sets("jump_table", |_, pair| {
        let mut c = vec!["io_port_handler"];
        if !funcs_named(&pair.patched, "io_port_handler.cold").is_empty() {
            c.push("io_port_handler.cold");
        }
        only(&c)
    });
    // -O2: the jump table is an anonymous .rodata section copied whole.
    use object::{Object, ObjectSection};
    let file = object::File::parse(reports[1].patch.as_slice()).unwrap();
    let jt = file.section_by_name(".rodata.io_port_handler").unwrap();
    assert!(jt.relocations().count() >= 8);
}

#[test]
fn function_pointers_to_unchanged_functions_are_references() {
    for r in expect_sets("func_pointer", |_, _| only(&["install"])) {
        let d = r
            .meta
            .refs
            .iter()
            .find(|x| x.name == "default_handler")
            .unwrap();
        assert_eq!((d.binding, d.kind), (Binding::Local, Kind::Func));
        assert_eq!(d.file.as_deref(), Some("func_pointer.c"));
        let s = r
            .meta
            .refs
            .iter()
            .find(|x| x.name == "strict_handler")
            .unwrap();
        assert_eq!((s.binding, s.kind), (Binding::Global, Kind::Func));
        // Neither handler is copied.
        assert_eq!(r.meta.new_funcs, Vec::<String>::new());
        assert_eq!(r.meta.funcs.len(), 1);
    }
}

#[test]
fn changed_switch_table_is_copied_with_its_function() {
    expect_sets("cswtch", |v, pair| {
        let bytes = std::fs::read(&pair.patched).unwrap();
        let o = patchgen::ObjectFile::parse(&bytes, "x").unwrap();
        let tables: Vec<&str> = o
            .symbols
            .iter()
            .filter(|s| s.name.starts_with("CSWTCH"))
            .map(|s| s.name.as_str())
            .collect();
        if !is_o1(v) {
            assert_eq!(tables.len(), 1, "{v:?}: gcc builds a lookup table");
        }
        (sorted(&["irq_for_slot"]), vec![], sorted(&tables))
    });
}

#[test]
fn thread_locals_are_tls_references() {
    for r in expect_sets("tls", |_, _| only(&["record_exit"])) {
        let t = r.meta.refs.iter().find(|x| x.name == "vcpu_id").unwrap();
        assert_eq!((t.kind, t.binding), (Kind::Tls, Binding::Global));
    }
}

#[test]
fn references_to_unchanged_statics_carry_file_and_sympos() {
    for r in expect_sets("local_refs", |_, _| only(&["now_ns"])) {
        let t = r.meta.refs.iter().find(|x| x.name == "ticks").unwrap();
        assert_eq!(
            (t.binding, t.kind, t.file.as_deref(), t.sympos),
            (Binding::Local, Kind::Object, Some("local_refs.c"), 0)
        );
        let f = r
            .meta
            .refs
            .iter()
            .find(|x| x.name == "scale_ticks")
            .unwrap();
        assert_eq!((f.binding, f.kind), (Binding::Local, Kind::Func));
    }
}

#[test]
fn two_fixes_in_one_object() {
    expect_sets("multi_fix", |_, _| only(&["div_safe", "mod_safe"]));
}

#[test]
fn expected_bytes_are_the_original_entry_with_relocations_masked() {
    for case in ["local_refs", "xsa108", "new_helper"] {
        for v in VARIANTS {
            let pair = build(case, v);
            let r = diff(&pair).unwrap();
            let ob = pair.orig_bytes();
            let o = patchgen::ObjectFile::parse(&ob, "orig.o").unwrap();
            for f in &r.meta.funcs {
                let s = o.symbols.iter().find(|s| s.name == f.name).unwrap();
                let orig = o.symbol_bytes(s);
                let e = hex::decode(&f.expected).unwrap();
                let m = hex::decode(&f.expected_mask).unwrap();
                assert_eq!(f.old_size, s.size);
                for (i, (&eb, &mb)) in e.iter().zip(m.iter()).enumerate() {
                    let covered = o.symbol_relocs(s).any(|r| {
                        let off = (r.offset - s.value) as usize;
                        i >= off && i < off + r.width() as usize
                    });
                    assert_eq!(mb, if covered { 0 } else { 0xff }, "{case} {v:?} {i}");
                    if mb == 0xff {
                        assert_eq!(eb, orig[i]);
                    }
                }
            }
        }
    }
}

#[test]
fn target_and_id_are_stamped() {
    let pair = build("xsa108", &["-O2"]);
    let r = patchgen::diff_objects(
        &pair.orig_bytes(),
        "orig.o",
        &pair.patched_bytes(),
        "patched.o",
        &patchgen::DiffOptions {
            id: "xsa108-fix".into(),
            description: "x2APIC MSR range".into(),
            target: Some(patchgen::format::Target {
                build_id: "ab".repeat(20),
                name: "minivmm".into(),
            }),
            source_hash: None,
        },
    )
    .unwrap();
    verify(&r);
    assert_eq!(r.meta.id, "xsa108-fix");
    assert_eq!(r.meta.description, "x2APIC MSR range");
    assert_eq!(r.meta.targets[0].build_id, "ab".repeat(20));
    assert_eq!(r.meta.source_hash.len(), 64);
    // Without a target: empty build-id, the original object's name.
    let r = diff(&pair).unwrap();
    assert_eq!(r.meta.targets[0].build_id, "");
    assert_eq!(r.meta.targets[0].name, "orig.o");
}

#[test]
fn changed_constant_argument_is_a_change() {
    // Same shape as a __LINE__ change (mov esi, imm; call), but the callee
    // is not a logging/assert function.
    expect_sets("const_arg_fix", |_, _| only(&["setup_x2apic"]));
}

#[test]
fn part_child_goes_with_its_parent() {
    let reports = expect_sets("part_child", |v, pair| {
        let mut c = vec!["work"];
        let part = funcs_named(&pair.patched, "work.part.");
        if v == ["-O2"] {
            assert_eq!(part, vec!["work.part.0".to_owned()], "gcc -O2 splits work");
        }
        c.extend(part.iter().map(String::as_str));
        // -O3 inlines the whole of `work` into its callers (not when
        // -fPIC makes `work` interposable): they change too.
        if v.contains(&"-O3") && !v.contains(&"-fPIC") {
            c.extend(["c1", "c2", "c3"]);
        }
        only(&c)
    });
    // -O2: both replaced (work.part.0 is a real function, callable from the
    // callers into which the `if (!flag)` test was inlined).
    assert_eq!(reports[1].meta.funcs.len(), 2);
}

// ---- Kernel code shapes (testkernels/diffcases/kstyle.h) ----

fn is_special(name: &str) -> bool {
    patchgen::correlate::is_special_static(name)
}

/// Diffs a pair in kernel mode (`hotfix diff --kernel`).
fn diff_kernel(p: &common::Pair) -> Result<patchgen::DiffReport, Error> {
    patchgen::kernel::normalize::diff_kernel_objects(
        &p.orig_bytes(),
        "orig.o",
        &p.patched_bytes(),
        "patched.o",
        &patchgen::DiffOptions {
            id: "test-patch".into(),
            ..Default::default()
        },
    )
}

#[test]
fn special_statics_are_carried_fresh_with_their_function_only() {
    for r in expect_sets("special_statics", |_, pair| {
        // The statics handle() uses, whatever gcc numbered them: its
        // pr_debug descriptor, WARN_ONCE's flag and (for the descriptor)
        // its __func__. other()'s descriptor, key and ratelimit state stay.
        let bytes = std::fs::read(&pair.patched).unwrap();
        let o = patchgen::ObjectFile::parse(&bytes, "x").unwrap();
        let handle = o.symbols.iter().find(|s| s.name == "handle").unwrap();
        let mut used: Vec<String> = Vec::new();
        let mut work = vec![handle.index];
        while let Some(i) = work.pop() {
            let s = o.sym(i).unwrap();
            for rel in o.symbol_relocs(s) {
                if let patchgen::read::Target::Entity { sym, .. } = o.resolve(rel) {
                    let n = &o.sym(sym).unwrap().name;
                    if is_special(n) && !used.contains(n) {
                        used.push(n.clone());
                        work.push(sym);
                    }
                }
            }
        }
        (sorted(&["handle"]), vec![], {
            used.sort();
            used
        })
    }) {
        assert!(r.new_data.iter().all(|d| is_special(d)), "{:?}", r.new_data);
        assert!(
            r.new_data
                .iter()
                .any(|d| d.starts_with("__UNIQUE_ID_ddebug")),
            "{:?}",
            r.new_data
        );
        assert!(r.new_data.iter().any(|d| d.starts_with("__warned")));
        assert!(
            !r.new_data
                .iter()
                .any(|d| d.starts_with("_rs") || d.starts_with("__key"))
        );
        // Fresh copies: nothing special is looked up in the target.
        assert!(
            r.meta.refs.iter().all(|x| !is_special(&x.name)),
            "{:?}",
            r.meta.refs
        );
        // The descriptor keeps its section, so the kernel registers it.
        use object::Object;
        let file = object::File::parse(r.patch.as_slice()).unwrap();
        assert!(file.section_by_name("__dyndbg").is_some());
    }
}

#[test]
fn moved_pr_debug_lines_are_no_change() {
    // Was refused as "initializer or size of existing data changed".
    expect_no_change("pr_debug_moved", 0);
}

#[test]
fn functions_sharing_a_section_attribute_with_their_clones() {
    for r in expect_sets("shared_section", |_, _| only(&["c4"])) {
        // The assembler resolved c4's call to the static scale clone
        // (same section) without a relocation: the patch references it.
        let s = r
            .meta
            .refs
            .iter()
            .find(|x| x.name.starts_with("scale"))
            .unwrap_or_else(|| panic!("{:?}", r.meta.refs));
        assert_eq!((s.binding, s.kind), (Binding::Local, Kind::Func));
        assert_eq!(s.file.as_deref(), Some("shared_section.c"));
        assert!(r.new_funcs.is_empty());
    }
    // -O2: the clone is scale.isra.0, in .sched.text with its callers.
    let pair = build("shared_section", &["-O2"]);
    let bytes = pair.orig_bytes();
    let o = patchgen::ObjectFile::parse(&bytes, "orig.o").unwrap();
    let isra = o.symbols.iter().find(|s| s.name == "scale.isra.0").unwrap();
    let c4 = o.symbols.iter().find(|s| s.name == "c4").unwrap();
    assert_eq!(isra.section, c4.section);
    assert_eq!(o.sec(c4.section.unwrap()).unwrap().name, ".sched.text");
    let r = diff(&pair).unwrap();
    assert_eq!(
        r.meta
            .refs
            .iter()
            .filter(|x| x.name == "scale.isra.0")
            .count(),
        1
    );
}

#[test]
fn fixup_code_in_the_function_section_travels_with_it() {
    for v in VARIANTS {
        let pair = build("fixup_code", v);
        let r = diff(&pair).unwrap_or_else(|e| panic!("{v:?}: {e}"));
        verify(&r);
        assert_eq!(changed(&r), sorted(&["read_word"]), "{v:?}");
        let pb = pair.patched_bytes();
        let p = patchgen::ObjectFile::parse(&pb, "patched.o").unwrap();
        let whole = &p
            .sections
            .iter()
            .find(|s| s.name == ".text.read_word")
            .unwrap()
            .data;
        let f = p.symbols.iter().find(|s| s.name == "read_word").unwrap();
        assert!(
            f.size < whole.len() as u64,
            "{v:?}: the fixup lies past the symbol's end"
        );
        use object::{Object, ObjectSection};
        let file = object::File::parse(r.patch.as_slice()).unwrap();
        // The whole section (function + fixup after its end) is carried,
        // and the function's rel32 into the fixup points at that copy.
        let secs: Vec<_> = file
            .sections()
            .filter(|s| s.name() == Ok(".text.read_word"))
            .collect();
        assert_eq!(
            secs.len(),
            2,
            "function copy and its section with the fixup"
        );
        let fixed = secs.iter().find(|s| s.size() > f.size).unwrap();
        assert_eq!(fixed.data().unwrap(), whole.as_slice(), "{v:?}");
        // The function's jump into the fixup is relocated to that copy.
        let copy = secs.iter().find(|s| s.size() == f.size).unwrap();
        assert_eq!(copy.relocations().count(), 1, "{v:?}");
        assert!(r.meta.refs.is_empty(), "{v:?}: {:?}", r.meta.refs);
    }
}

#[test]
fn init_only_change_is_refused_in_object_and_kernel_mode() {
    expect_refusal("init_only", RefusalKind::InitCode, "setup_b");
    for v in VARIANTS {
        let pair = build("init_only", v);
        match diff_kernel(&pair) {
            Err(Error::Refused { refusals, .. }) => {
                let got: Vec<_> = refusals
                    .iter()
                    .map(|r| (r.kind, r.symbol.as_str()))
                    .collect();
                assert_eq!(got, vec![(RefusalKind::InitCode, "setup_b")], "{v:?}");
                assert!(refusals[0].to_string().contains("rule init-code"));
            }
            other => panic!("{v:?}: expected refusal, got {other:?}"),
        }
    }
}

#[test]
fn kernel_mode_diffs_init_exit_and_static_call_objects_alone() {
    for v in VARIANTS {
        let pair = build("kernel_sections", v);
        for r in [diff_kernel(&pair), diff(&pair)] {
            let r = r.unwrap_or_else(|e| panic!("{v:?}: {e}"));
            verify(&r);
            assert_eq!(changed(&r), sorted(&["dispatch"]), "{v:?}");
            assert!(r.new_funcs.is_empty() && r.new_data.is_empty(), "{v:?}");
            let t = r
                .meta
                .refs
                .iter()
                .find(|x| x.name == "__SCT__tp_a")
                .unwrap();
            assert_eq!((t.binding, t.kind), (Binding::Global, Kind::Func));
        }
    }
}

#[test]
fn new_per_cpu_variable_is_refused() {
    expect_refusal("percpu_new", RefusalKind::NewPerCpuData, "pcpu_count");
}

#[test]
fn clang_unnamed_local_data_is_carried() {
    for v in [&["-O2"][..], &["-O1"], &["-Os"], &["-O2", "-fPIC"]] {
        let mut flags = v.to_vec();
        flags.push("-fsanitize=shift");
        let pair = common::build_cc("clang", "clang_unnamed", &flags);
        let bytes = pair.orig_bytes();
        let o = patchgen::ObjectFile::parse(&bytes, "orig.o").unwrap();
        assert!(
            o.sections
                .iter()
                .any(|s| s.name.starts_with(".data..L__unnamed_") && s.is_writable()),
            "{v:?}: clang emits writable unnamed data"
        );
        let r = diff(&pair).unwrap_or_else(|e| panic!("{v:?}: {e}"));
        verify(&r);
        assert_eq!(changed(&r), sorted(&["shl"]), "{v:?}");
        use object::{Object, ObjectSection};
        let file = object::File::parse(r.patch.as_slice()).unwrap();
        let unnamed: Vec<_> = file
            .sections()
            .filter(|s| s.name().is_ok_and(|n| n.starts_with(".data..L__unnamed_")))
            .collect();
        assert!(!unnamed.is_empty(), "{v:?}: the records travel with shl");
        assert!(
            r.meta
                .refs
                .iter()
                .any(|x| x.name.starts_with("__ubsan_handle_shift"))
        );
    }
}
