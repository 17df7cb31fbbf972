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

fn options(replace: bool, wait: Duration) -> Options {
    Options {
        replace,
        wait,
        ..Options::default()
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
    let hv = Hypervisor::open()?;
    let o = xen::apply(&hv, patch, options(replace, wait))?;
    if global.json {
        super::print_json(&o)?;
    } else {
        print!("{}", describe(&o));
    }
    Ok(0)
}

/// `hotfix revert NAME --xen`.
pub fn revert(name: &str, wait: Duration, global: super::Global) -> anyhow::Result<u8> {
    let hv = Hypervisor::open()?;
    let o = xen::revert(&hv, name, options(false, wait))?;
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
    let hv = Hypervisor::open()?;
    let doc = ListDoc {
        hypervisor: hv.build_id()?,
        payloads: xen::list(&hv)?,
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
