//! `hotfix diff ORIG.o PATCHED.o -o OUT.o`: one object pair → one patch
//! object, with a summary of changed and new functions.
//!
//! Thin wrapper over [`patchgen::diff_objects`] (with `--kernel`,
//! [`patchgen::kernel::normalize::diff_kernel_objects`]). Each refusal is
//! printed with the rule that stopped it (`[data-changed]`, ...). Exit status 0 when a patch
//! was written, 5 (no functional change) when there is nothing to patch,
//! 1 on bad input or a refusal (every refusal is printed).

use anyhow::Context;
use std::path::PathBuf;

/// Arguments of `hotfix diff`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The object built from the original source.
    pub orig: PathBuf,
    /// The object built from the fixed source.
    pub patched: PathBuf,
    /// Where to write the patch object.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Patch id (default: the output file's stem).
    #[arg(long)]
    pub id: Option<String>,
    /// Human description stored in the patch.
    #[arg(long, default_value = "")]
    pub description: String,
    /// The target binary: stamps its GNU build-id and name into the patch.
    #[arg(long)]
    pub target: Option<PathBuf>,
    /// Kernel objects: apply `hotfix build --kernel`'s normalization
    /// (`__init`/`__exit` code compared and refused when changed,
    /// otherwise opaque).
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

/// The default patch id: the output's stem with other characters than
/// `[A-Za-z0-9._-]` replaced by `_`.
fn default_id(out: &std::path::Path) -> String {
    let stem = out
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let id: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if id.is_empty() { "patch".into() } else { id }
}

/// Runs `hotfix diff`.
pub fn run(args: Args, global: super::Global) -> anyhow::Result<u8> {
    let orig = read(&args.orig)?;
    let patched = read(&args.patched)?;
    let target = match &args.target {
        None => None,
        Some(t) => {
            let bytes = read(t)?;
            let name = t.display().to_string();
            let id = patchgen::read::build_id(&bytes, &name)?
                .with_context(|| format!("{name}: no GNU build-id note; link with --build-id"))?;
            Some(patchgen::format::Target { build_id: id, name })
        }
    };
    let opts = patchgen::DiffOptions {
        id: args.id.clone().unwrap_or_else(|| default_id(&args.output)),
        description: args.description.clone(),
        target,
        source_hash: None,
    };
    let (on, pn) = (
        args.orig.display().to_string(),
        args.patched.display().to_string(),
    );
    let result = if args.kernel {
        patchgen::kernel::normalize::diff_kernel_objects(&orig, &on, &patched, &pn, &opts)
    } else {
        patchgen::diff_objects(&orig, &on, &patched, &pn, &opts)
    };
    match result {
        Ok(report) => {
            std::fs::write(&args.output, &report.patch).map_err(|source| patchgen::Error::Io {
                path: args.output.clone(),
                source,
            })?;
            if global.json {
                super::print_json(&serde_json::json!({
                    "result": "patch",
                    "output": args.output,
                    "report": report,
                }))?;
            } else {
                print!("{}", report.render());
                println!("wrote {}", args.output.display());
            }
            Ok(0)
        }
        Err(e @ patchgen::Error::NoChange { .. }) => {
            let line_only = match &e {
                patchgen::Error::NoChange { line_only, .. } => *line_only,
                _ => 0,
            };
            if global.json {
                super::print_json(&serde_json::json!({
                    "result": "no-change",
                    "orig": on,
                    "patched": pn,
                    "line_only": line_only,
                }))?;
            } else {
                println!("{e}");
            }
            Ok(patchgen::Status::NoChange as u8)
        }
        Err(e @ patchgen::Error::Refused { .. }) => {
            if let patchgen::Error::Refused { refusals, .. } = &e {
                if global.json {
                    super::print_json(&serde_json::json!({
                        "result": "refused",
                        "orig": on,
                        "patched": pn,
                        "refusals": refusals,
                    }))?;
                } else {
                    for r in refusals {
                        println!("refused  {r}");
                    }
                }
            }
            Err(e.into())
        }
        Err(e) => Err(e.into()),
    }
}
