//! The pinned kernel's prepared source (`scripts/kernel-src`: Debian's
//! source package of the image's version, configured for the cloud flavour,
//! `make prepare`d, with the image's vmlinux and System.map) for tests that
//! patch vmlinux functions. Prepared once (a download of about 420 MB and a
//! few minutes the first time; a fraction of a second after), shared by
//! every test binary through the script's lock.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The prepared directory, or `None` (with a SKIP message) when it cannot
/// be prepared outside CI. Under `CI=true` a failure fails the test.
pub fn dir() -> Option<PathBuf> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    DIR.get_or_init(|| {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/kernel-src");
        let out = Command::new(&script).stderr(Stdio::inherit()).output();
        let dir = match out {
            Ok(o) if o.status.success() => {
                Some(PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
            }
            Ok(o) => {
                let msg = format!("scripts/kernel-src failed ({})", o.status);
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "{msg} (CI=true: not skipping)"
                );
                eprintln!("SKIP: {msg}");
                None
            }
            Err(e) => {
                let msg = format!("cannot run {}: {e}", script.display());
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "{msg} (CI=true: not skipping)"
                );
                eprintln!("SKIP: {msg}");
                None
            }
        };
        dir.filter(|d| d.join("make.args").is_file())
    })
    .clone()
}
