//! `hotfix`: the command-line front end. A thin layer: parse arguments,
//! dispatch to a subcommand module, map errors to stable exit statuses.
//!
//! Exit statuses: 0 done; 1 error; 2 usage; 3 unsafe now (nothing changed);
//! 4 target mismatch (nothing changed); 5 no functional change; 6 untrusted
//! (the patch's signature is missing or does not verify; nothing changed).

mod cmd;
mod sys;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Live patching for virtualization hosts.
#[derive(Debug, Parser)]
#[command(name = "hotfix", version, about, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    global: cmd::Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Dump an object or patch: sections, symbols, relocations, metadata.
    Inspect(cmd::inspect::Args),
    /// Move VMs to other QEMUs by live migration over QMP; report downtime.
    Drain(cmd::drain::Args),
    /// Patch a whole host (kernel, every VMM) live; drain its VMs when unsafe.
    Host(cmd::host::Args),
    /// Build a patch module from a source tree and a fix.
    Build(cmd::build::BuildArgs),
    /// Diff two objects into a patch object (changed and new functions).
    Diff(cmd::diff::Args),
    /// Explain a diff: why each function changed, with a disassembly diff.
    Explain(cmd::explain::Args),
    /// Apply a patch to a running process (`--pid PID`) or to all (`--all`).
    Apply(cmd::apply::Args),
    /// Revert a patch applied to a running process (last in, first out).
    Revert(cmd::revert::Args),
    /// List the patches applied to a running process.
    List(cmd::list::Args),
    /// Sign patch files (detached minisign signatures, PATCH.minisig).
    Sign(cmd::sign::Args),
    /// The audit log: `hotfix audit verify` checks its hash chain.
    Audit(cmd::audit::Args),
}

fn main() -> ExitCode {
    sys::default_sigpipe();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HOTFIX_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    // `hotfix __cc ARGS...`: the compiler wrapper of `hotfix build`, run by
    // the project's build system; its arguments are the compiler's.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "__cc") {
        return match patchgen::build::wrapper_main(&args[2..]) {
            Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
            Err(e) => {
                eprintln!("hotfix __cc: error: {e}");
                ExitCode::from(1)
            }
        };
    }
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("hotfix: error: {}", message(&e));
            ExitCode::from(status_of(&e) as u8)
        }
    }
}

/// Runs one subcommand; `Ok(n)` is the exit status of a command that did its
/// job but has a status to report (for example 5, no functional change).
fn run(cli: Cli) -> anyhow::Result<u8> {
    let g = cli.global;
    match cli.command {
        Command::Inspect(a) => cmd::inspect::run(a, g),
        Command::Drain(a) => cmd::drain::run(a, g),
        Command::Host(a) => cmd::host::run(a, g),
        Command::Build(a) => cmd::build::run(a, g),
        Command::Diff(a) => cmd::diff::run(a, g),
        Command::Explain(a) => cmd::explain::run(a, g),
        Command::Apply(a) => cmd::apply::run(a, g),
        Command::Revert(a) => cmd::revert::run(a, g),
        Command::List(a) => cmd::list::run(a, g),
        Command::Sign(a) => cmd::sign::run(a, g),
        Command::Audit(a) => cmd::audit::run(a, g),
    }
}

/// The error and its causes on one line; a cause that the message already
/// ends with (library errors quote their source) is not repeated.
fn message(e: &anyhow::Error) -> String {
    let mut msg = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !msg.ends_with(&c) {
            msg.push_str(": ");
            msg.push_str(&c);
        }
    }
    msg
}

/// The exit status of an error: that of the first library error found in the
/// chain (each crate's one error enum knows its [`patchgen::Status`]), else 1.
/// A crate whose `Error` lands is added here.
fn status_of(e: &anyhow::Error) -> patchgen::Status {
    for cause in e.chain() {
        if let Some(err) = cause.downcast_ref::<patchgen::Error>() {
            return err.status();
        }
        if let Some(err) = cause.downcast_ref::<hvpatch::Error>() {
            return err.status();
        }
        if let Some(err) = cause.downcast_ref::<loader::Error>() {
            return err.status();
        }
        if let Some(err) = cause.downcast_ref::<trust::Error>() {
            return err.status();
        }
        if let Some(s) = cause.downcast_ref::<cmd::UsageError>() {
            let _ = s;
            return patchgen::Status::Usage;
        }
    }
    patchgen::Status::Error
}
