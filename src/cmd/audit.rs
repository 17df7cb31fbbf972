//! `hotfix audit verify [--log FILE]...`: check the hash chain of the audit
//! log, oldest file first (a rotated `audit.jsonl.1` before `audit.jsonl`).
//!
//! Thin wrapper over [`trust::chain::verify_files`]. Exit status 0 when the
//! chain holds; 1 naming the file and the first broken line otherwise.

use std::path::PathBuf;

/// Arguments of `hotfix audit`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(Debug, clap::Subcommand)]
enum AuditCommand {
    /// Check the audit log's hash chain; name the first broken line.
    Verify(VerifyArgs),
}

/// Arguments of `hotfix audit verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// Log files in order, oldest first (default: the default log, after
    /// its rotated predecessor `.1` when there is one).
    #[arg(long = "log", value_name = "FILE")]
    pub logs: Vec<PathBuf>,
}

/// Runs `hotfix audit`.
pub fn run(args: Args, global: super::Global) -> anyhow::Result<u8> {
    let AuditCommand::Verify(a) = args.command;
    let logs = if a.logs.is_empty() {
        let p = PathBuf::from(
            std::env::var_os("HOTFIX_AUDIT_LOG")
                .unwrap_or_else(|| hvpatch::audit::DEFAULT_PATH.into()),
        );
        let old = hvpatch::audit::rotated(&p);
        if old.exists() { vec![old, p] } else { vec![p] }
    } else {
        a.logs
    };
    let sum = trust::chain::verify_files(&logs)?;
    if global.json {
        super::print_json(&sum)?;
    } else {
        let names: Vec<String> = sum.files.iter().map(|f| f.display().to_string()).collect();
        println!(
            "audit chain intact: {} line(s) in {} (head {})",
            sum.lines,
            names.join(", "),
            sum.head
        );
    }
    Ok(0)
}
