//! The core protocol: the `hotfix_core` module (loaded on first use with the
//! kallsyms addresses it asks for) and its control file
//! `/proc/hotfix_core` (`expect ...` and `revert ...` written to it; a
//! `patch`/`func`/`last` listing read from it).
//!
//! Model: the core numbers its operations; the driver reads the sequence
//! number before an operation and takes the `last` line only when it is
//! newer and names the same patch, so a stale verdict is never reported.

use super::kallsyms::Kallsyms;
use super::rewrite::core_ksyms;
use crate::Error;
use crate::kernel::running_release;
use nix::errno::Errno;
use nix::kmod::{ModuleInitFlags, finit_module};
use serde::Serialize;
use std::ffi::CString;
use std::path::{Path, PathBuf};

/// The core's control file.
pub const CORE_PROC: &str = "/proc/hotfix_core";
/// The core module's name.
pub const CORE_NAME: &str = "hotfix_core";
/// Where the core module is looked for when `HOTFIX_CORE_MODULE` is unset
/// (`{release}` is the running kernel's).
pub const CORE_PATHS: &[&str] = &[
    "/lib/modules/hotfix/hotfix_core.ko",
    "/lib/modules/{release}/extra/hotfix_core.ko",
    "/lib/modules/{release}/updates/hotfix_core.ko",
];

/// Stages the expected bytes of `name`'s next apply in the core.
pub(super) fn stage_expect(name: &str, lines: &[String]) -> Result<(), Error> {
    let io = |source| Error::Io {
        path: CORE_PROC.into(),
        source,
    };
    std::fs::write(CORE_PROC, format!("expect {name}\n")).map_err(io)?;
    for l in lines {
        std::fs::write(CORE_PROC, format!("expect {name} {l}\n")).map_err(io)?;
    }
    Ok(())
}

/// The core's view, parsed from `/proc/hotfix_core`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CoreState {
    /// Applied patches, oldest first.
    pub patches: Vec<CorePatch>,
    /// Outcome of the latest operation.
    pub last: Option<CoreLast>,
}

/// One patch the core has applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CorePatch {
    /// Patch (module) name.
    pub name: String,
    /// Stop window of its apply (interrupts off on every CPU), ns.
    pub window_ns: u64,
    /// Whole `stop_machine` call of its apply, ns.
    pub stop_ns: u64,
    /// Seconds since the epoch.
    pub applied_at: u64,
    /// Its functions.
    pub funcs: Vec<CoreFunc>,
}

/// One function a jump patch replaces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CoreFunc {
    /// `vmlinux` or a module name.
    pub object: String,
    /// Function name.
    pub name: String,
    /// Position among same-named symbols (0: unique).
    pub sympos: u64,
    /// The old function.
    pub old_addr: u64,
    /// Where the jump is written.
    pub site: u64,
    /// The new function.
    pub new_addr: u64,
    /// Whether the site was checked against the build's expected bytes.
    pub expected: bool,
}

/// The core's `last` line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CoreLast {
    /// Operations the core has run so far (this one included).
    pub seq: u64,
    /// Patch name.
    pub name: String,
    /// `apply` or `revert`.
    pub op: String,
    /// 0 or a negative errno.
    pub rc: i32,
    /// Stop window, ns (0 when the switch did not run).
    pub window_ns: u64,
    /// Whole `stop_machine` call, ns.
    pub stop_ns: u64,
    /// Blocking task's pid (0: none).
    pub pid: i32,
    /// Its comm (`-`: none).
    pub comm: String,
    /// The blocking function, or the reason of a refusal.
    pub what: String,
}

fn hex(s: &str) -> Option<u64> {
    u64::from_str_radix(s.trim_start_matches("0x"), 16).ok()
}

impl CoreState {
    /// Parses the text of `/proc/hotfix_core`.
    pub fn parse(text: &str) -> CoreState {
        let mut st = CoreState::default();
        for line in text.lines() {
            let w: Vec<&str> = line.split(' ').collect();
            match w.first().copied() {
                Some("patch") if w.len() >= 6 => st.patches.push(CorePatch {
                    name: w[1].into(),
                    window_ns: w[3].parse().unwrap_or(0),
                    stop_ns: w[4].parse().unwrap_or(0),
                    applied_at: w[5].parse().unwrap_or(0),
                    funcs: Vec::new(),
                }),
                Some("func") if w.len() >= 8 => {
                    if let Some(p) = st.patches.iter_mut().find(|p| p.name == w[1]) {
                        p.funcs.push(CoreFunc {
                            object: w[2].into(),
                            name: w[3].into(),
                            sympos: w[4].parse().unwrap_or(0),
                            old_addr: hex(w[5]).unwrap_or(0),
                            site: hex(w[6]).unwrap_or(0),
                            new_addr: hex(w[7]).unwrap_or(0),
                            expected: w.get(8) == Some(&"expected"),
                        });
                    }
                }
                Some("last") if w.len() >= 10 => {
                    st.last = Some(CoreLast {
                        seq: w[1].parse().unwrap_or(0),
                        name: w[2].into(),
                        op: w[3].into(),
                        rc: w[4].parse().unwrap_or(0),
                        window_ns: w[5].parse().unwrap_or(0),
                        stop_ns: w[6].parse().unwrap_or(0),
                        pid: w[7].parse().unwrap_or(0),
                        comm: w[8].into(),
                        what: w[9..].join(" "),
                    })
                }
                _ => {}
            }
        }
        st
    }

    /// Reads the core's state; empty when the core is not loaded.
    pub fn read() -> Result<CoreState, Error> {
        match std::fs::read_to_string(CORE_PROC) {
            Ok(t) => Ok(CoreState::parse(&t)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(CoreState::default()),
            Err(source) => Err(Error::Io {
                path: CORE_PROC.into(),
                source,
            }),
        }
    }

    /// The `last` line if it is about `name` and newer than operation
    /// `after` (the sequence number seen before the operation started).
    pub(super) fn last_for(&self, name: &str, after: u64) -> Option<&CoreLast> {
        self.last
            .as_ref()
            .filter(|l| l.name == name && l.seq > after)
    }

    /// The sequence number of the latest operation (0: none).
    pub(super) fn seq(&self) -> u64 {
        self.last.as_ref().map(|l| l.seq).unwrap_or(0)
    }
}

/// Finds the core module file: `HOTFIX_CORE_MODULE`, else [`CORE_PATHS`].
pub fn core_module_path() -> Result<PathBuf, Error> {
    if let Some(p) = std::env::var_os("HOTFIX_CORE_MODULE") {
        return Ok(PathBuf::from(p));
    }
    let release = running_release()?;
    CORE_PATHS
        .iter()
        .map(|p| PathBuf::from(p.replace("{release}", &release)))
        .find(|p| p.is_file())
        .ok_or_else(|| Error::KernelOp {
            name: CORE_NAME.into(),
            op: "load core",
            reason: format!(
                "no core module found (set HOTFIX_CORE_MODULE; looked in {})",
                CORE_PATHS.join(", ")
            ),
        })
}

/// Loads the core if `/proc/hotfix_core` does not exist yet, passing the
/// kallsyms address of every `ksym_<symbol>` parameter it declares.
pub fn ensure_core(path: &Path, image: &[u8], ksyms: &Kallsyms) -> Result<(), Error> {
    if Path::new(CORE_PROC).exists() {
        return Ok(());
    }
    let path = path.to_path_buf();
    let info = crate::kernel::read::modinfo(image).map_err(|reason| Error::KernelModule {
        path: path.clone(),
        reason,
    })?;
    if let Some((_, vm)) = info.iter().find(|(k, _)| k == "vermagic") {
        let running = running_release()?;
        if vm.split_whitespace().next() != Some(running.as_str()) {
            return Err(Error::KernelMismatch {
                path,
                vermagic: vm.clone(),
                running,
            });
        }
    }
    let mut params = Vec::new();
    for sym in core_ksyms(&path, image)? {
        let addr = ksyms.lookup("vmlinux", &sym, 1)?;
        params.push(format!("ksym_{sym}={addr:#x}"));
    }
    let file = std::fs::File::open(&path).map_err(|source| Error::Io {
        path: path.clone(),
        source,
    })?;
    let cparams = CString::new(params.join(" ")).map_err(|_| Error::KernelOp {
        name: CORE_NAME.into(),
        op: "load core",
        reason: "parameter with NUL".into(),
    })?;
    match finit_module(&file, &cparams, ModuleInitFlags::empty()) {
        Ok(()) | Err(Errno::EEXIST) => Ok(()),
        Err(e) => Err(Error::KernelOp {
            name: CORE_NAME.into(),
            op: "load core",
            reason: format!(
                "finit_module({}): {e} (the kernel log, dmesg, says why)",
                path.display()
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_core_state() {
        let st = CoreState::parse(
            "patch lp_x 1 12000 90000 1700000000\n\
             func lp_x hfx_x2apic x2apic_msr_read 0 0xffffffffc0001000 0xffffffffc0001005 0xffffffffc0100000 expected\n\
             last 7 lp_k apply -16 0 0 77 hfx_worker hfx_worker_wait+0x1b/0x40 [hfx_kthread]\n",
        );
        assert_eq!(st.patches.len(), 1);
        assert_eq!(st.patches[0].window_ns, 12000);
        assert_eq!(st.patches[0].funcs[0].site, 0xffffffffc0001005);
        assert!(st.patches[0].funcs[0].expected);
        let l = st
            .last
            .as_ref()
            .map(|l| (l.rc, l.pid, l.comm.as_str(), l.what.as_str()));
        assert_eq!(
            l,
            Some((
                -16,
                77,
                "hfx_worker",
                "hfx_worker_wait+0x1b/0x40 [hfx_kthread]"
            ))
        );
        assert!(st.last_for("lp_x", 0).is_none());
        assert!(st.last_for("lp_k", 6).is_some());
        assert!(
            st.last_for("lp_k", 7).is_none(),
            "stale: not newer than seq 7"
        );
    }
}
