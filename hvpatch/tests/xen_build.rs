//! `hotfix build --xen`: payloads generated from source fixes
//! (testkernels/xen/fixes) against the test hypervisor's cached build
//! (scripts/xenhost), checked on the build machine (sections, records,
//! stacking notes, refusals) and then applied to that hypervisor running
//! under QEMU/TCG: a real XSA fix (XSA-477) shown through Xen's
//! expected-bytes check and its own payload listing, two observable fixes of
//! hotfix's own (`/sys/hypervisor/version/extra`), stacking, revert order,
//! replace, another build-id refused, an expectation mismatch refused.
//!
//! One test host is booted. Capabilities missing (QEMU, the hypervisor
//! build): the tests skip with a plain message, except under `CI=true`,
//! where they fail.

#![allow(clippy::unwrap_used, clippy::panic, reason = "tests")]

mod xenhost;

use hvpatch::xen::payload::Payload;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;
use xenhost::{forge_other_buildid, root, static_hotfix, xenhost_paths};

fn fix(name: &str) -> PathBuf {
    root().join("testkernels/xen/fixes").join(name)
}

/// `hotfix --json build --xen --src SRC --diff FIX -o OUT [extra...]`.
fn build(hotfix: &Path, src: &Path, diff: &Path, out: &Path, extra: &[&str]) -> Output {
    Command::new(hotfix)
        .args(["--json", "build", "--xen", "--src"])
        .arg(src)
        .arg("--diff")
        .arg(diff)
        .arg("-o")
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

fn build_ok(
    hotfix: &Path,
    src: &Path,
    diff: &Path,
    out: &Path,
    extra: &[&str],
) -> serde_json::Value {
    let t0 = Instant::now();
    let o = build(hotfix, src, diff, out, extra);
    assert!(
        o.status.success(),
        "hotfix build --xen {} failed ({}):\n{}",
        diff.display(),
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    eprintln!(
        "payload {}: built in {:.1} s (patched hypervisor build {} ms, diff+payload {} ms), {} bytes",
        v["name"].as_str().unwrap(),
        t0.elapsed().as_secs_f64(),
        v["build_ms"],
        v["emit_ms"],
        v["size"]
    );
    v
}

/// A stable description of a payload file: sections (name, type, flags,
/// size), records and notes, as Xen's loader sees them.
fn describe(path: &Path) -> String {
    use object::{Object, ObjectSection};
    let bytes = std::fs::read(path).unwrap();
    let file = object::File::parse(&*bytes).unwrap();
    let mut s = String::new();
    for sec in file.sections() {
        let name = sec.name().unwrap();
        if name.is_empty() || name.starts_with(".rela") || name.ends_with("tab") {
            continue;
        }
        let flags = match sec.flags() {
            object::SectionFlags::Elf { sh_flags, sh_type } => {
                format!("{:#x}/{:#x}", sh_type.0, sh_flags.0)
            }
            _ => String::new(),
        };
        s.push_str(&format!(
            "section {name} type/flags {flags} size {:#x} relocs {}\n",
            sec.size(),
            sec.relocations().count()
        ));
    }
    let p = Payload::read(path).unwrap();
    s.push_str(&format!(
        "name {} xen_depends {} depends {}\n",
        p.name,
        p.xen_depends.as_deref().unwrap_or("-"),
        p.depends.as_deref().unwrap_or("-")
    ));
    // The expected bytes hold RIP-relative displacements, which depend on
    // the hypervisor's layout: a build with another binutils or toolchain
    // environment (a pristine root, `scripts/fresh-check`) has other ones.
    // The snapshot keeps their length; their values are checked by Xen
    // itself in `xen_payloads_built_from_fixes_apply_live`.
    for f in &p.funcs {
        s.push_str(&format!(
            "func {} old_size {} new_size {} expect <{} bytes>\n",
            f.name,
            f.old_size,
            f.new_size,
            f.expect.as_deref().map_or(0, <[u8]>::len)
        ));
    }
    s
}

/// code (1), a fix without functional change (5), missing arguments (2).
#[test]
fn xen_build_refusals() {
    let Some(paths) = xenhost_paths() else { return };
    let src = PathBuf::from(&paths["XEN_DIR"]).join("src");
    let hotfix = static_hotfix();
    let dir = tempfile::tempdir().unwrap();

    let o = build(
        &hotfix,
        &src,
        &fix("data-change.patch"),
        &dir.path().join("dc.livepatch"),
        &[],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("refused")
            && err.contains("opt_transitive_grants")
            && err.contains("running copy would keep its old value"),
        "{err}"
    );
    assert!(!dir.path().join("dc.livepatch").exists());

    // A change to __init code (it ran at boot and was freed): refused.
    let init = dir.path().join("init.patch");
    std::fs::write(
        &init,
        "--- a/xen/common/kernel.c\n+++ b/xen/common/kernel.c\n@@ -417,7 +417,7 @@ static int __init cf_check buildinfo_init(void)\n     hypfs_string_set_reference(&changeset, xen_changeset());\n     hypfs_add_leaf(&buildinfo, &changeset, true);\n \n-    hypfs_add_dir(&buildinfo, &compileinfo, true);\n+    hypfs_add_dir(&buildinfo, &compileinfo, false);\n     hypfs_string_set_reference(&compiler, xen_compiler());\n     hypfs_string_set_reference(&compile_by, xen_compile_system_maintainer_local());\n     hypfs_string_set_reference(&compile_date, xen_compile_date());\n",
    )
    .unwrap();
    let o = build(&hotfix, &src, &init, &dir.path().join("i.livepatch"), &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("refused") && err.contains("buildinfo_init") && err.contains(".init.text"),
        "{err}"
    );

    // A comment is no functional change.
    let comment = dir.path().join("comment.patch");
    std::fs::write(
        &comment,
        "--- a/xen/common/version.c\n+++ b/xen/common/version.c\n@@ -57,6 +57,7 @@ unsigned int xen_minor_version(void)\n \n const char *xen_extra_version(void)\n {\n+    /* hotfix: a comment only */\n     return XEN_EXTRAVERSION;\n }\n \n",
    )
    .unwrap();
    let o = build(
        &hotfix,
        &src,
        &comment,
        &dir.path().join("c.livepatch"),
        &[],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(5), "{err}");
    assert!(err.contains("no functional change"), "{err}");

    let o = Command::new(&hotfix)
        .args(["build", "--xen", "--src"])
        .arg(&src)
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// XSA-477 and two fixes of our own, generated and applied live.
#[test]
fn xen_payloads_built_from_fixes_apply_live() {
    let Some(paths) = xenhost_paths() else { return };
    let src = PathBuf::from(&paths["XEN_DIR"]).join("src");
    let xen_id = paths["XEN_BUILDID"].clone();
    let hotfix = static_hotfix();
    let dir = tempfile::tempdir().unwrap();
    let pl = dir.path().join("payloads");
    std::fs::create_dir(&pl).unwrap();
    let p = |n: &str| pl.join(format!("{n}.livepatch"));

    // Build.
    let xsa = build_ok(&hotfix, &src, &fix("xsa-477.patch"), &p("xsa-477"), &[]);
    let xsa_path = p("xsa-477");
    let dep = xsa_path.to_str().unwrap();
    let extra = build_ok(
        &hotfix,
        &src,
        &fix("extra-version.patch"),
        &p("extra-version"),
        &["--depends", dep],
    );
    let extra_path = p("extra-version");
    let again = build_ok(
        &hotfix,
        &src,
        &fix("extra-version.patch"),
        &p("extra-again"),
        &["--depends", extra_path.to_str().unwrap()],
    );
    let op = build_ok(
        &hotfix,
        &src,
        &fix("version-op.patch"),
        &p("version-op"),
        &[],
    );
    forge_other_buildid(&p("xsa-477"), &p("xsa-477-other"), dir.path());

    // On the build machine: what each payload holds.
    let funcs = |v: &serde_json::Value| -> Vec<(String, String)> {
        v["funcs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (
                    f["name"].as_str().unwrap().to_string(),
                    f["object"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    assert_eq!(
        funcs(&xsa),
        [
            ("trace_emulate_write_val", "arch/x86/mm/shadow/guest_2.o"),
            ("trace_emulate_write_val", "arch/x86/mm/shadow/guest_3.o"),
            ("trace_emulate_write_val", "arch/x86/mm/shadow/guest_4.o"),
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    assert_eq!(xsa["xen_build_id"], xen_id.as_str());
    assert_eq!(xsa["depends"], xen_id.as_str());
    assert_eq!(extra["depends"], xsa["build_id"]);
    assert_eq!(again["depends"], extra["build_id"]);
    assert_ne!(again["build_id"], extra["build_id"]);
    assert_eq!(
        funcs(&op),
        [
            ("compat_xen_version", "common/compat/kernel.o"),
            ("do_xen_version", "common/kernel.o"),
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    // do_xen_version's STAC/CLAC alternatives, its copy-to-guest fixups and
    // its bug frame go with it; the unchanged functions' entries do not.
    assert_eq!(op["special"][".altinstructions"], 62);
    assert_eq!(op["special"][".ex_table"], 2);
    // The added BUG_ON's frame (type 2: BUGFRAME_bug), one per function.
    assert_eq!(op["special"][".bug_frames.2"], 2);
    let xsa_p = Payload::read(&p("xsa-477")).unwrap();
    assert_eq!(xsa_p.xen_depends.as_deref(), Some(xen_id.as_str()));
    assert_eq!(xsa_p.build_id.as_deref(), xsa["build_id"].as_str());
    for f in &xsa_p.funcs {
        // Expected bytes: the old function's first bytes in xen-syms
        // (cf_check functions start with endbr64).
        assert!(
            f.expect
                .as_ref()
                .unwrap()
                .starts_with(&[0xf3, 0x0f, 0x1e, 0xfa])
        );
    }
    insta::assert_snapshot!(
        "payloads",
        ["xsa-477", "extra-version", "version-op"]
            .iter()
            .map(|n| format!("== {n}\n{}", describe(&p(n))))
            .collect::<String>()
            .replace(&xen_id, "<xen>")
            .replace(xsa["build_id"].as_str().unwrap(), "<xsa-477>")
    );

    // Boot the test host with the payloads.
    let (t, cycle) = xenhost::boot(
        dir.path(),
        "rc-build",
        &hotfix,
        &pl,
        "xen-build-console.log",
    );
    eprintln!(
        "test host cycle (boot, 16 steps, poweroff): {:.1} s",
        cycle.as_secs_f64()
    );
    assert!(
        t.log.contains(&format!("@@BUILDID {xen_id}")),
        "build-id differs"
    );
    let original = t.extra("start");

    // Another hypervisor's payload: refused (4), nothing loaded.
    let out = t.expect("other-buildid", 4);
    assert!(out.contains("targets hypervisor build-id"), "{out}");
    assert_eq!(
        t.json("list-after-other")["payloads"],
        serde_json::json!([])
    );

    // XSA-477: Xen checks each function's expected bytes, then patches.
    let applied = t.json("xsa");
    assert_eq!(applied["state"], "APPLIED");
    assert_eq!(
        applied["functions"],
        serde_json::json!([
            "trace_emulate_write_val",
            "trace_emulate_write_val",
            "trace_emulate_write_val"
        ])
    );
    assert!(
        t.log
            .contains("livepatch: xsa-477: Verifying enabled expectations for all functions")
    );
    assert!(t.log.contains("livepatch: xsa-477: Applying 3 functions"));
    assert_eq!(t.extra("after-xsa"), original);
    assert_eq!(t.names("list-xsa"), [("xsa-477".into(), "APPLIED".into())]);

    // Stacked: the observable fix on top of the XSA fix.
    assert_eq!(t.json("extra")["state"], "APPLIED");
    assert_eq!(t.extra("after-extra"), format!("{original}+hotfix"));
    // The same function again, built against the unpatched code: Xen's
    // expected-bytes check refuses it (4); nothing changes.
    let out = t.expect("extra-again", 4);
    assert!(
        out.contains("expected bytes") || out.contains("expectation"),
        "{out}"
    );
    assert!(t.log.contains("xen_extra_version: expectation failed"));
    assert_eq!(t.extra("after-extra-again"), format!("{original}+hotfix"));
    assert_eq!(
        t.names("list-stacked"),
        [
            ("xsa-477".into(), "APPLIED".into()),
            ("extra-version".into(), "APPLIED".into())
        ]
    );

    // Revert order: only the top.
    let out = t.expect("revert-xsa-first", 1);
    assert!(out.contains("not the top of the applied stack"), "{out}");
    assert_eq!(t.extra("after-bad-revert"), format!("{original}+hotfix"));
    assert_eq!(t.json("revert-extra")["state"], "UNLOADED");
    assert_eq!(t.extra("after-revert-extra"), original);
    assert_eq!(t.json("revert-xsa")["state"], "UNLOADED");

    // Replace: version-op replaces the XSA payload in one stop.
    assert_eq!(t.json("xsa-again")["state"], "APPLIED");
    let rep = t.json("replace");
    assert_eq!(rep["action"], "replace");
    assert_eq!(rep["replaced"], serde_json::json!(["xsa-477"]));
    assert_eq!(t.extra("after-replace"), format!("{original}+op"));
    assert_eq!(
        t.names("list-replaced"),
        [("version-op".into(), "APPLIED".into())]
    );
    assert_eq!(t.json("revert-op")["state"], "UNLOADED");
    assert_eq!(t.extra("end"), original);
    assert_eq!(t.json("list-end")["payloads"], serde_json::json!([]));

    for (name, action, start) in [
        ("xsa-477", "APPLY", "xsa-477: Applying"),
        ("extra-version", "APPLY", "extra-version: Applying"),
        ("version-op", "REPLACE", "xsa-477: Reverting"),
    ] {
        let done = t.xen_time_last(&format!("livepatch: {name} finished {action} with rc=0"));
        let ms = (done - t.xen_time_last(start)) * 1000.0;
        eprintln!("Xen console: {name} {action} took {ms:.3} ms");
    }
}
