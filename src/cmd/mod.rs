//! One module per `hotfix` subcommand: each parses its arguments (clap
//! `Args`), builds a plan through the library crates and prints the result as
//! human text or as one JSON document (`--json`).

pub mod apply;
pub mod audit;
pub mod build;
pub mod diff;
pub mod drain;
pub mod explain;
pub mod host;
pub mod inspect;
pub mod kernel;
pub mod list;
pub mod revert;
pub mod sign;
pub mod trust;
pub mod xen;

/// Options shared by every subcommand.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct Global {
    /// Print one JSON document on stdout instead of human text.
    #[arg(long, global = true)]
    pub json: bool,
}

/// Prints `value` as pretty JSON on stdout.
pub fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// A usage error found after argument parsing (exit status 2), for example
/// two options that exclude each other.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);
