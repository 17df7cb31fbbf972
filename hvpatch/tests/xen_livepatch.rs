//! Xen test host: a reproducibly built Xen 4.17 (scripts/xenhost) booting a
//! PV Dom0 under QEMU/TCG, whose initramfs carries a static `hotfix` and the
//! hypervisor's own test payloads (xen/test/livepatch, built by Xen's build
//! system against this hypervisor's build-id). The Dom0 agent
//! (testkernels/xen/rc-livepatch) drives `hotfix apply/list/revert --xen`
//! through the whole life cycle; the test judges the transcript: exit
//! statuses, JSON documents, and `/sys/hypervisor/version/extra` (which calls
//! the patched `xen_extra_version()`) after every step.
//!
//! One test host is booted per test binary (about a minute under TCG with
//! the hypervisor build cached). Capabilities (QEMU, network for the first
//! source download) missing: the test skips with a plain message, except
//! under `CI=true`, where it fails.

#![allow(clippy::unwrap_used, clippy::panic, reason = "test harness")]

mod xenhost;

use hvpatch::xen::abi;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use xenhost::{forge_other_buildid, run, static_hotfix, xenhost_paths};

#[test]
fn xen_payload_life_cycle_through_hotfix() {
    let Some(paths) = xenhost_paths() else { return };
    let tests = PathBuf::from(&paths["XEN_TESTS"]);
    let hotfix = static_hotfix();
    let dir = tempfile::tempdir().unwrap();
    let payloads = dir.path().join("payloads");
    std::fs::create_dir(&payloads).unwrap();
    for p in [
        "xen_hello_world",
        "xen_bye_world",
        "xen_replace_world",
        "xen_expectations",
        "xen_expectations_fail",
        "xen_no_xen_buildid",
    ] {
        let f = format!("{p}.livepatch");
        std::fs::copy(tests.join(&f), payloads.join(&f)).unwrap();
    }
    forge_other_buildid(
        &tests.join("xen_hello_world.livepatch"),
        &payloads.join("xen_other_buildid.livepatch"),
        dir.path(),
    );
    let (t, cycle) = xenhost::boot(
        dir.path(),
        "rc-livepatch",
        &hotfix,
        &payloads,
        "xen-livepatch-console.log",
    );
    eprintln!(
        "test host cycle (boot, 25 steps, poweroff): {:.1} s",
        cycle.as_secs_f64()
    );

    // The running hypervisor is the one the payloads were built against.
    assert!(
        t.log
            .contains(&format!("@@BUILDID {}", paths["XEN_BUILDID"])),
        "build-id differs"
    );
    let original = t.extra("start");
    assert!(
        original.starts_with('.'),
        "unexpected extra version {original:?}"
    );

    let empty = t.json("list-empty");
    assert_eq!(empty["payloads"], serde_json::json!([]));
    assert_eq!(empty["hypervisor"], paths["XEN_BUILDID"].as_str());

    // Refusals: nothing is changed by any of them.
    let out = t.expect("other-buildid", 4);
    assert!(
        out.contains("targets hypervisor build-id") && out.contains(&paths["XEN_BUILDID"]),
        "{out}"
    );
    let out = t.expect("no-buildid", 4);
    assert!(out.contains("build-id none"), "{out}");
    let out = t.expect("expect-fail", 4);
    assert!(
        out.contains("expected bytes") && out.contains("xen_extra_version"),
        "{out}"
    );
    let out = t.expect("bye-without-hello", 4);
    assert!(out.contains(".livepatch.depends"), "{out}");
    // Xen given 1 ns to stop the CPUs fails the apply with EBUSY; with no
    // retry budget left hotfix says "unsafe now" (3) and unloads the payload.
    let out = t.expect("quiesce-unsafe", 3);
    assert!(
        out.contains("unsafe now") && out.contains("nothing changed"),
        "{out}"
    );
    assert!(t.log.contains("xen_hello_world: Timed out on semaphore"));
    assert_eq!(t.extra("after-refusals"), original);
    assert_eq!(
        t.json("list-after-refusals")["payloads"],
        serde_json::json!([])
    );

    // Apply, then stack a second payload on it.
    let hello = t.json("hello");
    assert_eq!(hello["state"], "APPLIED");
    assert_eq!(hello["functions"], serde_json::json!(["xen_extra_version"]));
    let apply_us = hello["elapsed"].as_u64().unwrap();
    eprintln!("xen_hello_world applied in {apply_us} us (Dom0-observed)");
    assert_eq!(t.extra("after-hello"), "Hello World");
    assert!(t.expect("hello-twice", 1).contains("already loaded"));
    assert_eq!(t.json("bye")["state"], "APPLIED");
    assert_eq!(t.extra("after-bye"), "Bye World!");
    let stacked = t.json("list-stacked");
    let names: Vec<(&str, &str)> = stacked["payloads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap(), p["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        names,
        [("xen_hello_world", "APPLIED"), ("xen_bye_world", "APPLIED")]
    );

    // Out-of-order revert is refused and changes nothing; in order works.
    let out = t.expect("revert-hello-first", 1);
    assert!(
        out.contains("not the top of the applied stack") && out.contains("xen_bye_world"),
        "{out}"
    );
    assert_eq!(t.extra("after-bad-revert"), "Bye World!");
    assert_eq!(t.json("revert-bye")["state"], "UNLOADED");
    assert_eq!(t.extra("after-revert-bye"), "Hello World");

    // Replace: hello is reverted and unloaded, replace_world applied.
    let rep = t.json("replace");
    assert_eq!(rep["action"], "replace");
    assert_eq!(rep["replaced"], serde_json::json!(["xen_hello_world"]));
    // Linux reads the extra version into 16 bytes (XEN_EXTRAVERSION_LEN).
    assert_eq!(t.extra("after-replace"), "Hello Again Wor");
    let listed = t.json("list-replaced");
    assert_eq!(listed["payloads"].as_array().unwrap().len(), 1);
    assert_eq!(listed["payloads"][0]["name"], "xen_replace_world");
    t.expect("revert-replace", 0);
    assert_eq!(t.extra("after-revert-replace"), original);

    // A payload whose expected bytes match is applied.
    assert_eq!(t.json("expect-ok")["state"], "APPLIED");
    assert_eq!(t.extra("after-expect-ok"), "Hello World");
    t.expect("revert-expect-ok", 0);
    assert!(
        t.expect("revert-missing", 1)
            .contains("no payload named xen_hello_world")
    );
    assert_eq!(t.json("list-end")["payloads"], serde_json::json!([]));
    assert_eq!(t.extra("end"), original);

    // The hypervisor's own log agrees, and gives its own timing.
    for (name, action, start) in [
        ("xen_hello_world", "APPLY", "xen_hello_world: Applying"),
        ("xen_bye_world", "APPLY", "xen_bye_world: Applying"),
        ("xen_bye_world", "REVERT", "xen_bye_world: Reverting"),
        ("xen_replace_world", "REPLACE", "xen_hello_world: Reverting"),
        ("xen_expectations", "APPLY", "xen_expectations: Applying"),
    ] {
        let done = t.xen_time(&format!("livepatch: {name} finished {action} with rc=0"));
        let ms = (done - t.xen_time(start)) * 1000.0;
        assert!(ms >= 0.0, "{name} {action}: finished before it started?");
        eprintln!("Xen console: {name} {action} took {ms:.3} ms (stop-the-world part)");
    }
    assert!(
        t.log
            .contains("xen_hello_world: can't unload. Top is xen_bye_world")
    );
}

/// The byte offsets of `hvpatch::xen::abi` against the test hypervisor's own
/// public headers, compiled with gcc.
#[test]
fn xen_abi_matches_public_headers() {
    let Some(paths) = xenhost_paths() else { return };
    // The parent of public/: public/ has a features.h that must not shadow libc's.
    let include = Path::new(&paths["XEN_DIR"]).join("src/xen/include");
    let dir = tempfile::tempdir().unwrap();
    let c = dir.path().join("abi.c");
    std::fs::write(
        &c,
        r#"#define __XEN_TOOLS__ 1
#include <stdio.h>
#include <stddef.h>
#include <stdint.h>
#include <public/xen.h>
#include <public/sysctl.h>
#define O(f) printf(#f " %zu\n", offsetof(struct xen_sysctl, f))
int main(void) {
    printf("size %zu\n", sizeof(struct xen_sysctl));
    printf("version %u\n", XEN_SYSCTL_INTERFACE_VERSION);
    printf("hypercall %u\n", __HYPERVISOR_sysctl);
    printf("livepatch_op %u\n", XEN_SYSCTL_livepatch_op);
    O(cmd); O(interface_version); O(u.livepatch.cmd); O(u.livepatch.pad);
    O(u.livepatch.u.upload.name.name); O(u.livepatch.u.upload.name.size);
    O(u.livepatch.u.upload.name.pad); O(u.livepatch.u.upload.size); O(u.livepatch.u.upload.payload);
    O(u.livepatch.u.get.status.state); O(u.livepatch.u.get.status.rc);
    O(u.livepatch.u.action.cmd); O(u.livepatch.u.action.timeout);
    O(u.livepatch.u.action.flags); O(u.livepatch.u.action.pad);
    O(u.livepatch.u.list.version); O(u.livepatch.u.list.idx); O(u.livepatch.u.list.nr);
    O(u.livepatch.u.list.pad); O(u.livepatch.u.list.name_total_size);
    O(u.livepatch.u.list.metadata_total_size); O(u.livepatch.u.list.status);
    O(u.livepatch.u.list.name); O(u.livepatch.u.list.len);
    O(u.livepatch.u.list.metadata); O(u.livepatch.u.list.metadata_len);
    return 0;
}
"#,
    )
    .unwrap();
    let exe = dir.path().join("abi");
    run(Command::new("gcc")
        .arg("-I")
        .arg(&include)
        .arg(&c)
        .arg("-o")
        .arg(&exe));
    let out = Command::new(&exe).output().unwrap();
    let got: HashMap<String, usize> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.rsplit_once(' '))
        .map(|(k, v)| (k.to_string(), v.parse().unwrap()))
        .collect();
    use abi::off;
    let want: &[(&str, usize)] = &[
        ("size", abi::SYSCTL_SIZE),
        ("version", abi::SYSCTL_INTERFACE_VERSION as usize),
        ("hypercall", abi::HYPERVISOR_SYSCTL as usize),
        ("livepatch_op", abi::SYSCTL_LIVEPATCH_OP as usize),
        ("cmd", off::CMD),
        ("interface_version", off::INTERFACE_VERSION),
        ("u.livepatch.cmd", off::LP_CMD),
        ("u.livepatch.pad", off::LP_PAD),
        ("u.livepatch.u.upload.name.name", off::NAME_PTR),
        ("u.livepatch.u.upload.name.size", off::NAME_SIZE),
        ("u.livepatch.u.upload.name.pad", off::NAME_PAD),
        ("u.livepatch.u.upload.size", off::UPLOAD_SIZE),
        ("u.livepatch.u.upload.payload", off::UPLOAD_PAYLOAD),
        ("u.livepatch.u.get.status.state", off::GET_STATE),
        ("u.livepatch.u.get.status.rc", off::GET_RC),
        ("u.livepatch.u.action.cmd", off::ACTION_CMD),
        ("u.livepatch.u.action.timeout", off::ACTION_TIMEOUT),
        ("u.livepatch.u.action.flags", off::ACTION_FLAGS),
        ("u.livepatch.u.action.pad", off::ACTION_PAD),
        ("u.livepatch.u.list.version", off::LIST_VERSION),
        ("u.livepatch.u.list.idx", off::LIST_IDX),
        ("u.livepatch.u.list.nr", off::LIST_NR),
        ("u.livepatch.u.list.pad", off::LIST_PAD),
        ("u.livepatch.u.list.name_total_size", off::LIST_NAME_TOTAL),
        (
            "u.livepatch.u.list.metadata_total_size",
            off::LIST_METADATA_TOTAL,
        ),
        ("u.livepatch.u.list.status", off::LIST_STATUS),
        ("u.livepatch.u.list.name", off::LIST_NAME),
        ("u.livepatch.u.list.len", off::LIST_LEN),
        ("u.livepatch.u.list.metadata", off::LIST_METADATA),
        ("u.livepatch.u.list.metadata_len", off::LIST_METADATA_LEN),
    ];
    for (k, v) in want {
        assert_eq!(
            got.get(*k),
            Some(v),
            "{k}: headers say {:?}, abi.rs says {v}",
            got.get(*k)
        );
    }
}

/// Xen's own test payloads are read as hotfix expects: names, build-ids,
/// functions, expectations.
#[test]
fn xen_test_payloads_are_read() {
    let Some(paths) = xenhost_paths() else { return };
    let tests = PathBuf::from(&paths["XEN_TESTS"]);
    let hello = hvpatch::xen::Payload::read(&tests.join("xen_hello_world.livepatch")).unwrap();
    assert_eq!(hello.name, "xen_hello_world");
    assert_eq!(
        hello.xen_depends.as_deref(),
        Some(paths["XEN_BUILDID"].as_str())
    );
    assert_eq!(
        hello.depends.as_deref(),
        Some(paths["XEN_BUILDID"].as_str())
    );
    assert_eq!(hello.funcs.len(), 1);
    assert_eq!(hello.funcs[0].name, "xen_extra_version");
    assert!(hello.funcs[0].expect.is_none());
    let bye = hvpatch::xen::Payload::read(&tests.join("xen_bye_world.livepatch")).unwrap();
    assert_eq!(bye.depends, hello.build_id, "bye stacks on hello");
    let fail = hvpatch::xen::Payload::read(&tests.join("xen_expectations_fail.livepatch")).unwrap();
    assert_eq!(
        fail.funcs[0].expect.as_deref(),
        Some(&[0xde, 0xad, 0xc0, 0xde, 0xba, 0xbe][..])
    );
    let none = hvpatch::xen::Payload::read(&tests.join("xen_no_xen_buildid.livepatch")).unwrap();
    assert_eq!(none.xen_depends, None);
}

/// Outside a Xen Dom0 (this build machine, CI): clear errors and statuses,
/// with the payload checked before the hypervisor interface is opened.
#[test]
fn xen_cli_outside_dom0() {
    let hotfix = static_hotfix();
    let hotfix_run = |args: &[&str]| {
        // Unsigned test payloads: opt out of the trust gate (docs/trust.md).
        let out = Command::new(&hotfix)
            .args(args)
            .env("HOTFIX_ALLOW_UNSIGNED", "1")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = hotfix_run(&["apply", "/nonexistent/fix.livepatch", "--xen"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("/nonexistent/fix.livepatch"), "{err}");
    let (code, err) = hotfix_run(&["apply", "fix.livepatch", "--replace", "--pid", "1"]);
    assert_eq!(
        code,
        Some(2),
        "--replace without --xen is a usage error: {err}"
    );
    let (code, err) = hotfix_run(&["list", "--xen", "--kernel"]);
    assert_eq!(code, Some(2), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.livepatch");
    std::fs::write(&junk, b"not an ELF file").unwrap();
    let (code, err) = hotfix_run(&["apply", junk.to_str().unwrap(), "--xen"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("junk.livepatch") && err.contains("not an ELF"),
        "{err}"
    );
    if Path::new("/dev/xen/privcmd").exists() {
        eprintln!("SKIP (part): this machine is a Xen Dom0; not checking the no-Xen error");
        return;
    }
    let (code, err) = hotfix_run(&["list", "--xen"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("/dev/xen/privcmd") && err.contains("not a Xen Dom0"),
        "{err}"
    );
}
