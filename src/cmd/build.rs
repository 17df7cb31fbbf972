//! `hotfix build`: from a source fix to a live patch for a userspace program.
//!
//! Parses the arguments into a [`patchgen::build::BuildPlan`], shows the two
//! builds' progress on stderr (indicatif; hidden when stderr is not a
//! terminal), writes the patch module and prints what went into it.

use super::{Global, print_json};
use anyhow::Context;
use patchgen::build::{self, BuildPlan, Event};
use std::path::PathBuf;

/// Arguments of `hotfix build`.
#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// The project's source tree (never modified: hotfix builds a copy).
    /// With `--kernel`: the out-of-tree module's tree (`--module-src`), or
    /// a kernel source directory prepared by `scripts/kernel-src`
    /// (`--kernel-src`) to patch vmlinux functions.
    #[arg(long, visible_aliases = ["module-src", "kernel-src"], value_name = "DIR")]
    pub src: PathBuf,
    /// The fix: a unified diff against the tree (`patch -p1` or `-p0`).
    #[arg(long, value_name = "FIX.patch", required_unless_present = "prepare")]
    pub diff: Option<PathBuf>,
    /// The project's build command, run with `sh -c` in the tree.
    #[arg(long = "build", value_name = "CMD", default_value = "make -j2")]
    pub build_cmd: String,
    /// The target binary or library, as a path inside the tree (default: the
    /// only program the build links).
    #[arg(long, value_name = "PATH-IN-TREE")]
    pub binary: Option<PathBuf>,
    /// Where to write the patch module.
    #[arg(
        short,
        long,
        value_name = "NAME.hfx",
        required_unless_present = "prepare"
    )]
    pub output: Option<PathBuf>,
    /// Patch id (default: the diff's file name without extension).
    #[arg(long)]
    pub id: Option<String>,
    /// Human description (default: the first line of the diff's header).
    #[arg(long)]
    pub description: Option<String>,
    /// Check that the running process's binary is the original build.
    #[arg(long, conflicts_with = "against")]
    pub pid: Option<u32>,
    /// Check that BINARY is the original build.
    #[arg(long, value_name = "BINARY")]
    pub against: Option<PathBuf>,
    /// Keep the fix's object pairs and link files in the work directory.
    #[arg(long)]
    pub keep: bool,
    /// Only make (or reuse) the original, patch-ready build and print the
    /// binary to deploy.
    #[arg(long)]
    pub prepare: bool,
    /// Build a kernel livepatch (klp) module from an out-of-tree module
    /// tree instead of a userspace patch (see `docs/kernel.md`).
    #[arg(long, conflicts_with_all = ["prepare", "pid", "against", "binary"])]
    pub kernel: bool,
    /// With `--kernel`: the kernel build tree the running module was built
    /// against (default: /lib/modules/$(uname -r)/build).
    #[arg(long, value_name = "DIR", requires = "kernel")]
    pub headers: Option<PathBuf>,
    /// With `--kernel`: atomic replace (the patch replaces every earlier
    /// livepatch when applied).
    #[arg(long, requires = "kernel")]
    pub replace: bool,
    /// With `--kernel`: sign the module for kernels that enforce module
    /// signatures, with the build tree's `scripts/sign-file` and this
    /// private key (PEM; needs `--sign-cert`). See docs/trust.md.
    #[arg(long, value_name = "KEY.pem", requires_all = ["kernel", "sign_cert"])]
    pub sign_key: Option<PathBuf>,
    /// With `--sign-key`: the X.509 certificate of that key (PEM or DER),
    /// trusted by the target kernel (built in, or enrolled as a MOK).
    #[arg(long, value_name = "CERT", requires = "sign_key")]
    pub sign_cert: Option<PathBuf>,
    /// Build a Xen hypervisor live-patch payload from the built Xen tree
    /// given with `--src` (see `docs/xen.md`).
    #[arg(long, conflicts_with_all = ["prepare", "pid", "against", "binary", "kernel"])]
    pub xen: bool,
    /// With `--xen`: the payload this one stacks on (its build-id becomes
    /// `.livepatch.depends`; default: the hypervisor's build-id).
    #[arg(long, value_name = "PAYLOAD", requires = "xen")]
    pub depends: Option<PathBuf>,
    /// With `--xen`: the target hypervisor's symbol file (default:
    /// SRC/xen/xen-syms).
    #[arg(long, value_name = "XEN-SYMS", requires = "xen")]
    pub xen_syms: Option<PathBuf>,
    /// Build cache root (default: $HOTFIX_CACHE/build or ~/.cache/hotfix/build).
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
}

fn default_cache() -> PathBuf {
    if let Some(c) = std::env::var_os("HOTFIX_CACHE") {
        return PathBuf::from(c).join("build");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/tmp".into());
    home.join(".cache/hotfix/build")
}

/// Runs `hotfix build`.
pub fn run(args: BuildArgs, g: Global) -> anyhow::Result<u8> {
    if args.kernel {
        return super::kernel::build(&args, g);
    }
    if args.xen {
        return build_xen(&args, g);
    }
    let against = match (args.pid, &args.against) {
        (Some(pid), _) => Some(PathBuf::from(format!("/proc/{pid}/exe"))),
        (None, a) => a.clone(),
    };
    let plan = BuildPlan {
        src: args.src.clone(),
        diff: args.diff.clone().unwrap_or_default(),
        build_cmd: args.build_cmd.clone(),
        binary: args.binary.clone(),
        cache: args.cache.clone().unwrap_or_else(default_cache),
        hotfix_exe: std::env::current_exe().context("cannot locate the hotfix executable")?,
        id: args.id.clone(),
        description: args.description.clone(),
        against,
    };
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {prefix:.bold} {elapsed} {wide_msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    let mut events = |e: Event<'_>| match e {
        Event::Step(s) => {
            bar.reset_elapsed();
            bar.set_prefix(s.to_string());
            bar.set_message("");
        }
        Event::Line(l) => bar.set_message(l.to_string()),
        Event::Done(s, d) => {
            bar.println(format!("{s}: done in {:.2} s", d.as_secs_f64()));
        }
    };
    if args.prepare {
        let o = build::original_build(&plan, &mut events);
        bar.finish_and_clear();
        let o = o?;
        if g.json {
            print_json(&o)?;
        } else {
            println!(
                "original build{}: {} (build-id {})",
                if o.cached { " (cached)" } else { "" },
                o.binary.display(),
                o.build_id
            );
        }
        return Ok(0);
    }
    let result = build::build(&plan, &mut events);
    bar.finish_and_clear();
    let out = result?;
    let output = args.output.clone().unwrap_or_default();
    std::fs::write(&output, &out.patch)
        .with_context(|| format!("cannot write {}", output.display()))?;
    if !args.keep {
        let _ = std::fs::remove_dir_all(out.workdir.join("fixes"));
        let _ = std::fs::remove_dir_all(out.workdir.join("link"));
    }
    if g.json {
        let doc = serde_json::json!({
            "output": output,
            "size": out.patch.len(),
            "build": out,
        });
        print_json(&doc)?;
    } else {
        println!(
            "{}: patch {} for {} (build-id {}), {} bytes",
            output.display(),
            out.meta.id,
            out.meta
                .targets
                .first()
                .map(|t| t.name.as_str())
                .unwrap_or("?"),
            out.meta
                .targets
                .first()
                .map(|t| t.build_id.as_str())
                .unwrap_or("?"),
            out.patch.len()
        );
        for o in &out.objects {
            println!("  {}: {}", o.object, o.result);
            for f in &o.changed {
                println!("    changed {f}");
            }
            for f in &o.new_funcs {
                println!("    new     {f}");
            }
        }
        for d in &out.meta.new_data {
            println!("  new data {d}");
        }
        println!(
            "original build {} ({:.2} s), patched build {:.2} s, diff+link {:.3} s",
            if out.original_cached {
                "cached"
            } else {
                "built"
            },
            out.original_secs,
            out.patched_secs,
            out.diff_secs
        );
        if args.keep {
            println!("work directory kept: {}", out.workdir.display());
        }
    }
    Ok(0)
}

/// `hotfix build --xen`: a Xen live-patch payload from a built Xen tree.
fn build_xen(args: &BuildArgs, g: Global) -> anyhow::Result<u8> {
    let (Some(diff), Some(output)) = (&args.diff, &args.output) else {
        return Err(
            super::UsageError("--xen needs --diff FIX.patch and -o NAME.livepatch".into()).into(),
        );
    };
    let plan = patchgen::xen::XenPlan {
        src: args.src.clone(),
        diff: diff.clone(),
        output: output.clone(),
        name: args.id.clone(),
        make_args: None,
        xen_syms: args.xen_syms.clone(),
        depends: args.depends.clone(),
        workdir: args.keep.then(|| {
            let mut p = output.clone().into_os_string();
            p.push(".work");
            PathBuf::from(p)
        }),
    };
    let out = patchgen::xen::build_payload(&plan)?;
    if g.json {
        print_json(&out)?;
        return Ok(0);
    }
    println!(
        "{}: Xen payload {} ({} bytes, build-id {}) for hypervisor {}{}",
        out.output.display(),
        out.name,
        out.size,
        out.build_id,
        out.xen_build_id,
        if out.depends == out.xen_build_id {
            String::new()
        } else {
            format!(", stacked on {}", out.depends)
        }
    );
    for o in &out.objects {
        println!("  {}: {}", o.object, o.result);
        for f in out.funcs.iter().filter(|f| f.object == o.object) {
            println!(
                "    replaces {} at {} ({} -> {} bytes), expects {}",
                f.name, f.old_addr, f.old_size, f.new_size, f.expect
            );
        }
        for l in &o.line_only {
            println!("    same     {l}: only __LINE__ immediates differ (not patched)");
        }
    }
    for f in &out.new_funcs {
        println!("    new      {f}");
    }
    for (s, n) in &out.special {
        println!("  {s}: {n} entr{}", if *n == 1 { "y" } else { "ies" });
    }
    println!(
        "  {} hypervisor symbol(s) resolved; patched build {:.2} s, diff+payload {:.3} s",
        out.resolved,
        out.build_ms as f64 / 1000.0,
        out.emit_ms as f64 / 1000.0
    );
    if let Some(w) = &out.workdir {
        println!("work directory kept: {}", w.display());
    }
    Ok(0)
}
