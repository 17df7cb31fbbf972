//! `hotfix inspect FILE`: a stable dump of an x86-64 ELF relocatable object
//! or hotfix patch (sections, symbols, relocations, patch metadata).
//!
//! Thin wrapper over [`patchgen::inspect`]: human text by default, one JSON
//! document with `--json`. The dump is stable (no file offsets or indexes)
//! so that it can be diffed and snapshot-tested.

use std::path::PathBuf;

/// Arguments of `hotfix inspect`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The object (`.o`) or patch file to dump.
    pub file: PathBuf,
}

/// Runs `hotfix inspect`.
pub fn run(args: Args, global: super::Global) -> anyhow::Result<u8> {
    let dump = patchgen::inspect::inspect_file(&args.file)?;
    if global.json {
        super::print_json(&dump)?;
    } else {
        print!("{dump}");
    }
    Ok(0)
}
