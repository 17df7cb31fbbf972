//! Signing a built livepatch module for kernels that enforce module
//! signatures (`CONFIG_MODULE_SIG_FORCE`, or lockdown under Secure Boot):
//! the kernel's own `scripts/sign-file` of the build tree, with a key and an
//! X.509 certificate the target kernel trusts.
//!
//! Model: `sign-file sha256 KEY CERT MODULE` appends a PKCS#7 signature and
//! the trailer [`MAGIC`] to the module in place; [`sign_module`] runs it and
//! checks the trailer is there. The kernel checks it at load time against
//! its built-in and MOK keyrings; hotfix does not (see docs/trust.md).
//! Invariant: the module is signed once, last (a minisign signature of the
//! `.ko`, if any, is made after this, over the signed bytes).

use crate::error::Error;

type Result<T> = std::result::Result<T, Error>;
use std::path::Path;
use std::process::Command;

/// Trailer of a module carrying an appended signature.
pub const MAGIC: &[u8] = b"~Module signature appended~\n";

/// Signs `module` in place with `HEADERS/scripts/sign-file sha256 KEY CERT`.
pub fn sign_module(headers: &Path, key: &Path, cert: &Path, module: &Path) -> Result<()> {
    let tool = headers.join("scripts/sign-file");
    let fail = |reason: String| Error::Build {
        step: "sign module".into(),
        reason,
        log: None,
    };
    if is_signed(module)? {
        return Err(fail(format!(
            "{} already carries a module signature",
            module.display()
        )));
    }
    let out = Command::new(&tool)
        .arg("sha256")
        .arg(key)
        .arg(cert)
        .arg(module)
        .output()
        .map_err(|e| fail(format!("cannot run {}: {e}", tool.display())))?;
    if !out.status.success() {
        return Err(fail(format!(
            "{} {} {} {}: {}: {}",
            tool.display(),
            key.display(),
            cert.display(),
            module.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    if !is_signed(module)? {
        return Err(fail(format!(
            "{} ran but {} has no signature trailer",
            tool.display(),
            module.display()
        )));
    }
    Ok(())
}

/// Whether `module` ends with the appended-signature trailer.
pub fn is_signed(module: &Path) -> Result<bool> {
    let bytes = std::fs::read(module).map_err(|source| Error::Io {
        path: module.to_path_buf(),
        source,
    })?;
    Ok(bytes.ends_with(MAGIC))
}
