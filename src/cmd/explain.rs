//! `hotfix explain ORIG.o PATCHED.o [FUNC]`: per changed function, why it
//! counts as changed and a symbolized disassembly diff.
//!
//! Thin wrapper over [`patchgen::explain::explain`]; human text (unified
//! diffs) by default, one JSON document with `--json`.

use std::path::PathBuf;

/// Arguments of `hotfix explain`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The object built from the original source.
    pub orig: PathBuf,
    /// The object built from the fixed source.
    pub patched: PathBuf,
    /// Only this function (patched or original name).
    pub func: Option<String>,
    /// Kernel objects: `__init`/`__exit` code normalized as by
    /// `hotfix diff --kernel`.
    #[arg(long)]
    pub kernel: bool,
}

fn read(path: &PathBuf) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| {
        patchgen::Error::Io {
            path: path.clone(),
            source,
        }
        .into()
    })
}

/// Runs `hotfix explain`.
pub fn run(args: Args, global: super::Global) -> anyhow::Result<u8> {
    let orig = read(&args.orig)?;
    let patched = read(&args.patched)?;
    let (on, pn) = (
        args.orig.display().to_string(),
        args.patched.display().to_string(),
    );
    let (orig, patched) = if args.kernel {
        patchgen::kernel::normalize::normalize_pair(&orig, &on, &patched, &pn)?
    } else {
        (orig, patched)
    };
    let ex = patchgen::explain::explain(&orig, &on, &patched, &pn, args.func.as_deref())?;
    if global.json {
        super::print_json(&ex)?;
    } else {
        print!("{}", ex.render());
    }
    if ex.funcs.is_empty() {
        return Ok(patchgen::Status::NoChange as u8);
    }
    Ok(0)
}
