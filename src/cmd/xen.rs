//! `hotfix apply PATCH.livepatch --xen [--replace]`, `hotfix list --xen`,
//! `hotfix revert NAME --xen`: the Xen hypervisor target, run from Dom0.
//!
//! Thin wrapper over [`hvpatch::xen`]: the payload is checked against the
//! running hypervisor's build-id before anything is sent (exit 4 on a
//! mismatch), refusals after the upload are rolled back (nothing changed),
//! and revert takes only the top of the applied stack, then unloads it.

use hvpatch::xen::{self, Hypervisor, Options};
use serde::Serialize;
use std::path::Path;
use std::time::Duration;

/// Environment variable: the quiesce timeout (ns) Xen gets for the first
/// attempt of an action (default: Xen's own, 30 ms). Tests set it tiny to
/// make Xen fail to stop the CPUs and check the "unsafe now" path.
pub const QUIESCE_ENV: &str = "HOTFIX_XEN_QUIESCE_NS";

fn options(replace: bool, wait: Duration) -> Options {
    Options {
        replace,
        wait,
        xen_timeout_ns: std::env::var(QUIESCE_ENV)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    }
}

fn describe(o: &xen::Outcome) -> String {
    let mut s = format!(
        "{} {} on Xen {}: {} ({:.3} ms until Xen reported completion)\n",
        o.action,
        o.name,
        o.hypervisor,
        o.state,
        o.elapsed.as_secs_f64() * 1000.0
    );
    for f in &o.functions {
        s.push_str(&format!("  replaces {f}\n"));
    }
    for r in &o.replaced {
        s.push_str(&format!("  replaced and unloaded {r}\n"));
    }
    s
}

/// `hotfix apply PATCH --xen [--replace]`.
pub fn apply(
    patch: &Path,
    replace: bool,
    wait: Duration,
    global: super::Global,
) -> anyhow::Result<u8> {
    // The payload is read and checked before the hypervisor is touched.
    let payload = xen::Payload::read(patch).map_err(hvpatch::Error::from)?;
    let hv = Hypervisor::open().map_err(hvpatch::Error::from)?;
    let o = xen::apply::apply_payload(&hv, &payload, options(replace, wait))
        .map_err(hvpatch::Error::from)?;
    if global.json {
        super::print_json(&o)?;
    } else {
        print!("{}", describe(&o));
    }
    Ok(0)
}

/// `hotfix revert NAME --xen`.
pub fn revert(name: &str, wait: Duration, global: super::Global) -> anyhow::Result<u8> {
    let hv = Hypervisor::open().map_err(hvpatch::Error::from)?;
    let o = xen::revert(&hv, name, options(false, wait)).map_err(hvpatch::Error::from)?;
    if global.json {
        super::print_json(&o)?;
    } else {
        print!("{}", describe(&o));
    }
    Ok(0)
}

#[derive(Serialize)]
struct ListDoc {
    hypervisor: String,
    payloads: Vec<xen::Listed>,
}

/// `hotfix list --xen`.
pub fn list(global: super::Global) -> anyhow::Result<u8> {
    let hv = Hypervisor::open().map_err(hvpatch::Error::from)?;
    let doc = ListDoc {
        hypervisor: hv.build_id().map_err(hvpatch::Error::from)?,
        payloads: xen::list(&hv).map_err(hvpatch::Error::from)?,
    };
    if global.json {
        super::print_json(&doc)?;
    } else {
        println!(
            "Xen {}: {} payload(s) loaded",
            doc.hypervisor,
            doc.payloads.len()
        );
        for p in &doc.payloads {
            let rc = if p.rc == 0 {
                String::new()
            } else {
                format!(" (last rc {})", p.rc)
            };
            println!("  {:<40} {}{rc}", p.name, p.state);
        }
    }
    Ok(0)
}
