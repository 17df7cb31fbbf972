//! `hotfix list --pid PID`: the patches loaded in a running process, read
//! from the registry inside the process, with their state checked against
//! the live code (active, stacked, inactive leftover, partial).

/// Arguments of `hotfix list`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The process.
    #[arg(long, required_unless_present_any = ["kernel", "xen"], conflicts_with_all = ["kernel", "xen"])]
    pub pid: Option<i32>,
    /// List the Xen hypervisor's live-patch payloads instead (run in Dom0).
    #[arg(long, conflicts_with = "kernel")]
    pub xen: bool,
    /// List the livepatches of the running kernel instead.
    #[arg(long)]
    pub kernel: bool,
}

/// Runs `hotfix list`.
pub fn run(args: Args, global: super::Global) -> anyhow::Result<u8> {
    if args.xen {
        return super::xen::list(global);
    }
    let Some(pid) = args.pid else {
        return super::kernel::list(global);
    };
    let entries = loader::list(pid)?;
    if global.json {
        super::print_json(&entries)?;
        return Ok(0);
    }
    if entries.is_empty() {
        println!("process {pid}: no patches");
    }
    for e in &entries {
        let r = &e.record;
        let state = serde_json::to_value(&e.state)?;
        println!(
            "{} [{}] applied at {} by pid {}, mapping {:#x}+{:#x}: {}",
            r.id,
            state.as_str().unwrap_or("?"),
            humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(r.applied_at)
            ),
            r.applied_by,
            r.base,
            r.size,
            r.description
        );
        for (b, p) in &r.targets {
            println!("  target {p} build-id {b}");
        }
        for f in &r.funcs {
            println!(
                "  function {} {:#x} -> {:#x}{}",
                f.name,
                f.old_addr,
                f.new_addr,
                if e.overridden.contains(&f.name) {
                    " (overridden by a later patch)"
                } else {
                    ""
                }
            );
        }
        for (n, a, _) in &r.new_funcs {
            println!("  new function {n} {a:#x}");
        }
        for (n, a, _) in &r.new_data {
            println!("  new data {n} {a:#x}");
        }
    }
    Ok(0)
}
