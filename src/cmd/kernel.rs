//! `hotfix apply NAME.ko --kernel [--method klp|jump]`, `hotfix list
//! --kernel`, `hotfix revert NAME --kernel`: livepatch-shaped modules in the
//! running kernel, through the kernel's livepatch (`klp`) or hotfix's
//! stop-all-CPUs core (`jump`, [`loader::kernel::jump`]).
//!
//! Thin wrappers over [`loader::kernel`]: the process subcommands
//! (`src/cmd/{apply,list,revert}.rs`) call these when `--kernel` is given.
//! Human text by default, one JSON document with `--json`.

use super::Global;
use loader::kernel::{self, Options};
use std::path::Path;
use std::time::Duration;

fn options(timeout: Option<Duration>) -> Options {
    let mut o = Options::default();
    if let Some(t) = timeout {
        o.timeout = t;
    }
    o
}

fn ms(us: u64) -> String {
    format!("{}.{:03} ms", us / 1000, us % 1000)
}

/// `hotfix apply PATCH.ko --kernel [--method klp|jump] [--timeout T]`:
/// `klp` unless asked otherwise or the kernel has no livepatch support.
pub fn apply_method(
    patch: &Path,
    method: Option<&str>,
    timeout: Option<Duration>,
    global: Global,
) -> anyhow::Result<u8> {
    let opts = options(timeout);
    let jump = match method {
        Some(m) => m == "jump",
        None => !opts.sysfs.available(),
    };
    if !jump {
        return apply(patch, timeout, global);
    }
    let done = kernel::jump::apply(patch, &opts)?;
    if global.json {
        super::print_json(&done)?;
        return Ok(0);
    }
    let r = &done.record;
    println!(
        "applied kernel patch {} from {} with the jump method (stop window {} ns, {} attempt(s), load {})",
        r.name,
        r.path.display(),
        done.patch.window_ns,
        done.attempts,
        ms(r.load_us)
    );
    for f in &done.patch.funcs {
        println!(
            "  {}: {},{} {:#x} -> {:#x} (jump at {:#x}; {})",
            f.object,
            f.name,
            f.sympos,
            f.old_addr,
            f.new_addr,
            f.site,
            if f.expected {
                "expected bytes of the build verified"
            } else {
                "no expected bytes in the module"
            }
        );
    }
    for s in &done.resolved {
        println!("  resolved {} = {:#x}", s.symbol, s.addr);
    }
    Ok(0)
}

/// `hotfix apply PATCH.ko --kernel [--timeout T]` (klp).
pub fn apply(patch: &Path, timeout: Option<Duration>, global: Global) -> anyhow::Result<u8> {
    let done = kernel::apply(patch, &options(timeout))?;
    if global.json {
        super::print_json(&done)?;
        return Ok(0);
    }
    let r = &done.record;
    println!(
        "applied livepatch {} from {} (load {}, transition {})",
        r.name,
        r.path.display(),
        ms(r.load_us),
        ms(r.transition_us)
    );
    for o in &done.state.objects {
        for f in &o.functions {
            println!("  {}: {}", o.name, f);
        }
    }
    for old in &done.replaced {
        println!("  replaced livepatch {old} (module removed)");
    }
    Ok(0)
}

/// `hotfix list --kernel`.
pub fn list(global: Global) -> anyhow::Result<u8> {
    let all = kernel::list(&Options::default())?;
    if global.json {
        super::print_json(&all)?;
        return Ok(0);
    }
    if all.is_empty() {
        println!("no livepatches applied");
    }
    for l in &all {
        let s = &l.state;
        let state = match (s.enabled, s.transition) {
            (true, false) => "enabled",
            (true, true) => "enabling",
            (false, true) => "disabling",
            (false, false) => "disabled",
        };
        match (&l.record, l.method) {
            (Some(r), "jump") => println!(
                "{} {state} [jump] (applied at {} by hotfix from {}; stop window {} ns) {}",
                s.name,
                r.applied_at,
                r.path.display(),
                r.stop_window_ns.unwrap_or(0),
                r.description
            ),
            (Some(r), _) => println!(
                "{} {state} (applied at {} by hotfix from {}; transition {}) {} [klp]",
                s.name,
                r.applied_at,
                r.path.display(),
                ms(r.transition_us),
                r.description
            ),
            (None, m) => println!("{} {state} [{m}] (not applied by hotfix)", s.name),
        }
        for o in &s.objects {
            for f in &o.functions {
                println!("  {}: {}", o.name, f);
            }
        }
    }
    Ok(0)
}

/// `hotfix revert NAME --kernel [--timeout T]` (NAME: a livepatch name or
/// its `.ko` file).
pub fn revert(name: &str, timeout: Option<Duration>, global: Global) -> anyhow::Result<u8> {
    let name = kernel::patch_name(name)?;
    if kernel::jump::is_applied(&name) {
        let done = kernel::jump::revert(&name, &options(timeout))?;
        if global.json {
            super::print_json(&done)?;
        } else {
            println!(
                "reverted kernel patch {} with the jump method (stop window {} ns, {} attempt(s); module removed)",
                done.name, done.window_ns, done.attempts
            );
        }
        return Ok(0);
    }
    let done = kernel::revert(&name, &options(timeout))?;
    if global.json {
        super::print_json(&done)?;
    } else {
        println!(
            "reverted livepatch {} (transition {}; module removed)",
            done.name,
            ms(done.transition_us)
        );
    }
    Ok(0)
}

/// `hotfix build --kernel --module-src DIR --diff FIX.patch -o NAME.ko
/// [--headers DIR] [--replace] [--id NAME] [--description TEXT] [--keep]`.
pub fn build(args: &super::build::BuildArgs, global: Global) -> anyhow::Result<u8> {
    let (Some(diff), Some(output)) = (&args.diff, &args.output) else {
        return Err(
            super::UsageError("--kernel needs --diff FIX.patch and -o NAME.ko".into()).into(),
        );
    };
    let headers = match &args.headers {
        Some(h) => h.clone(),
        None => {
            let rel = kernel::running_release()?;
            std::path::PathBuf::from(format!("/lib/modules/{rel}/build"))
        }
    };
    let plan = patchgen::kernel::KlpPlan {
        module_src: args.src.clone(),
        diff: diff.clone(),
        output: output.clone(),
        headers: headers.clone(),
        name: args.id.clone(),
        replace: args.replace,
        description: args.description.clone(),
        workdir: args.keep.then(|| {
            let mut p = output.clone().into_os_string();
            p.push(".work");
            std::path::PathBuf::from(p)
        }),
    };
    let out = patchgen::kernel::build_klp(&plan)?;
    if let (Some(key), Some(cert)) = (&args.sign_key, &args.sign_cert) {
        patchgen::kernel::modsign::sign_module(&headers, key, cert, &out.output)?;
        if !global.json {
            println!(
                "{}: module signature appended (sign-file sha256, key {})",
                out.output.display(),
                key.display()
            );
        }
    }
    if global.json {
        super::print_json(&out)?;
        return Ok(0);
    }
    println!(
        "{}: livepatch {} ({} bytes; builds {} ms, diff+link {} ms)",
        out.output.display(),
        out.name,
        out.size,
        out.build_ms,
        out.link_ms
    );
    for f in &out.funcs {
        println!("  replaces {}: {},{}", f.object, f.old_name, f.sympos);
    }
    for f in &out.new_funcs {
        println!("  new function {f}");
    }
    for s in &out.klp_syms {
        println!("  klp symbol {}", s.klp_name());
    }
    for (sec, n) in &out.carried_special {
        println!("  carried {sec}: {n} entries");
    }
    for (sec, f) in &out.dropped_special {
        println!("  dropped {sec} entry of {f} (see docs/kernel.md)");
    }
    Ok(0)
}
