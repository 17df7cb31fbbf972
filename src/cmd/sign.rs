//! `hotfix sign PATCH... --key SECRET_KEY`: write each patch's detached
//! minisign signature `PATCH.minisig`.
//!
//! Thin wrapper over [`trust::sign`]: the trusted comment names the file,
//! its SHA-256, the patch id and its target, read from the patch itself (a
//! `.hfx` process patch: its id and target build-ids; a kernel `.ko`: its
//! module name and vermagic; a Xen `.livepatch`: its payload name and the
//! hypervisor build-id). Keys are minisign's (`minisign -G`); an encrypted
//! secret key's password is read from `HOTFIX_SIGN_PASSWORD`.

use anyhow::Context;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Arguments of `hotfix sign`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Patch files (.hfx, .ko, .livepatch).
    #[arg(required = true)]
    pub patches: Vec<PathBuf>,
    /// The minisign secret key (`minisign -G -s FILE`).
    #[arg(long, short = 's', value_name = "SECRET_KEY")]
    pub key: PathBuf,
    /// Password of an encrypted secret key.
    #[arg(
        long,
        env = "HOTFIX_SIGN_PASSWORD",
        hide_env_values = true,
        default_value = ""
    )]
    pub password: String,
}

#[derive(Serialize)]
struct Signed {
    patch: PathBuf,
    signature: PathBuf,
    key_id: String,
    subject: trust::Subject,
}

/// What a patch file is and patches: (kind, id, target).
pub fn identify(path: &Path) -> anyhow::Result<(String, String, String)> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if name.ends_with(".livepatch") {
        let p = hvpatch::xen::Payload::read(path)?;
        let target = p.xen_depends.clone().unwrap_or_default();
        return Ok(("livepatch".into(), p.name.clone(), target));
    }
    if name.ends_with(".ko") {
        let m = loader::kernel::read::read_module(path)?;
        return Ok(("ko".into(), m.name, m.vermagic));
    }
    let p = loader::Patch::read(path)?;
    let target = p
        .meta
        .targets
        .iter()
        .map(|t| t.build_id.as_str())
        .collect::<Vec<_>>()
        .join(",");
    Ok(("hfx".into(), p.meta.id.clone(), target))
}

/// Runs `hotfix sign`.
pub fn run(args: Args, global: super::Global) -> anyhow::Result<u8> {
    let sk = trust::sign::read_secret(&args.key, &args.password)?;
    let mut out = Vec::new();
    for patch in &args.patches {
        let (kind, id, target) = identify(patch)
            .with_context(|| format!("{}: not a patch hotfix can sign", patch.display()))?;
        let subject = trust::Subject {
            hotfix: trust::subject::COMMENT_VERSION,
            kind,
            file: String::new(),
            sha256: String::new(),
            id,
            target,
        };
        let (signature, subject, key_id) = trust::sign::sign(patch, &sk, subject)?;
        if !global.json {
            println!(
                "signed {} ({} {}, target {}) with key {key_id}: {}",
                patch.display(),
                subject.kind,
                subject.id,
                subject.target,
                signature.display()
            );
        }
        out.push(Signed {
            patch: patch.clone(),
            signature,
            key_id,
            subject,
        });
    }
    if global.json {
        super::print_json(&out)?;
    }
    Ok(0)
}
