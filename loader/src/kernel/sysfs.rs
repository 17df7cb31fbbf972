//! The kernel's view of livepatches: `/sys/kernel/livepatch` and the
//! per-task patch state in `/proc`.
//!
//! Model (Documentation/livepatch/livepatch.rst, kernel 6.1):
//! `/sys/kernel/livepatch/<patch>/{enabled,transition}` plus one directory per
//! patched object (`vmlinux` or a module name) holding one directory per
//! function, named `<function>,<sympos>`. During a transition each task has a
//! `patch_state` (`/proc/<pid>/task/<tid>/patch_state`): -1 none, 0
//! unpatched, 1 patched; a task whose state differs from the target state
//! has not switched yet (a function being replaced is on its stack).
//!
//! Invariant: everything here only reads, except [`Sysfs::set_enabled`].

use crate::Error;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Roots of the pseudo filesystems (`/sys`, `/proc`); tests of the parsing
/// may point them elsewhere.
#[derive(Debug, Clone)]
pub struct Sysfs {
    /// Usually `/sys/kernel/livepatch`.
    pub livepatch: PathBuf,
    /// Usually `/proc`.
    pub proc: PathBuf,
}

impl Default for Sysfs {
    fn default() -> Self {
        Sysfs {
            livepatch: PathBuf::from("/sys/kernel/livepatch"),
            proc: PathBuf::from("/proc"),
        }
    }
}

/// One livepatch as the kernel shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PatchState {
    /// Patch (module) name.
    pub name: String,
    /// `enabled`.
    pub enabled: bool,
    /// `transition`: a transition to or from this patch is in progress.
    pub transition: bool,
    /// Patched objects, with their functions.
    pub objects: Vec<ObjectState>,
}

/// One object a livepatch patches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObjectState {
    /// `vmlinux` or a module name.
    pub name: String,
    /// Functions, as `name,sympos`.
    pub functions: Vec<String>,
}

/// A task that has not switched to the transition's target state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StalledTask {
    /// Thread id.
    pub tid: i32,
    /// `comm`.
    pub comm: String,
    /// Kernel stack (`/proc/<pid>/task/<tid>/stack`), one frame per line;
    /// empty when unreadable.
    pub stack: String,
}

fn read_trim(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })
}

fn subdirs(path: &Path) -> Result<Vec<String>, Error> {
    let rd = std::fs::read_dir(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut out: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    out.sort();
    Ok(out)
}

impl Sysfs {
    /// Whether the running kernel has livepatch support.
    pub fn available(&self) -> bool {
        self.livepatch.is_dir()
    }

    /// Directory of one patch.
    pub fn dir(&self, name: &str) -> PathBuf {
        self.livepatch.join(name)
    }

    /// Whether a patch of this name is registered.
    pub fn exists(&self, name: &str) -> bool {
        self.dir(name).is_dir()
    }

    /// Names of all registered patches, sorted.
    pub fn names(&self) -> Result<Vec<String>, Error> {
        if !self.available() {
            return Ok(Vec::new());
        }
        subdirs(&self.livepatch)
    }

    /// Whether a transition of this patch is in progress.
    pub fn in_transition(&self, name: &str) -> Result<bool, Error> {
        Ok(read_trim(&self.dir(name).join("transition"))? == "1")
    }

    /// The state of one patch.
    pub fn state(&self, name: &str) -> Result<PatchState, Error> {
        let dir = self.dir(name);
        let mut objects = Vec::new();
        for obj in subdirs(&dir)? {
            let functions = subdirs(&dir.join(&obj))?;
            objects.push(ObjectState {
                name: obj,
                functions,
            });
        }
        Ok(PatchState {
            name: name.to_string(),
            enabled: read_trim(&dir.join("enabled"))? == "1",
            transition: read_trim(&dir.join("transition"))? == "1",
            objects,
        })
    }

    /// Writes `enabled` (`true`: enable; `false`: disable, or reverse a
    /// pending enable).
    pub fn set_enabled(&self, name: &str, on: bool) -> Result<(), Error> {
        let path = self.dir(name).join("enabled");
        std::fs::write(&path, if on { "1" } else { "0" }).map_err(|e| Error::KernelOp {
            name: name.to_string(),
            op: if on { "enable" } else { "disable" },
            reason: format!("write to {}: {e}", path.display()),
        })
    }

    /// Tasks whose `patch_state` is `from` (the state they must leave),
    /// with their kernel stacks.
    pub fn tasks_in_state(&self, from: i32) -> Vec<StalledTask> {
        let mut out = Vec::new();
        let Ok(procs) = std::fs::read_dir(&self.proc) else {
            return out;
        };
        for p in procs.filter_map(|e| e.ok()) {
            let pname = p.file_name();
            let Some(pid) = pname
                .to_str()
                .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
            else {
                continue;
            };
            let Ok(tasks) = std::fs::read_dir(self.proc.join(pid).join("task")) else {
                continue;
            };
            for t in tasks.filter_map(|e| e.ok()) {
                let tdir = t.path();
                let state = std::fs::read_to_string(tdir.join("patch_state"))
                    .ok()
                    .and_then(|s| s.trim().parse::<i32>().ok());
                if state != Some(from) {
                    continue;
                }
                let Some(tid) = t.file_name().to_str().and_then(|s| s.parse().ok()) else {
                    continue;
                };
                out.push(StalledTask {
                    tid,
                    comm: std::fs::read_to_string(tdir.join("comm"))
                        .map(|s| s.trim().to_string())
                        .unwrap_or_default(),
                    stack: read_stack(&tdir.join("stack")),
                });
            }
        }
        out.sort_by_key(|t| t.tid);
        out
    }
}

/// A task's kernel stack. The kernel gives an empty trace while the task
/// is running on a CPU (a sleeping kthread wakes now and then), so a few
/// reads a millisecond apart are tried before giving up.
fn read_stack(path: &std::path::Path) -> String {
    for _ in 0..20 {
        let s = std::fs::read_to_string(path)
            .map(|s| s.trim_end().to_string())
            .unwrap_or_default();
        if !s.is_empty() {
            return s;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    String::new()
}

/// Formats stalled tasks for an error message: `tid comm` then the stack,
/// indented.
pub fn describe(tasks: &[StalledTask]) -> String {
    if tasks.is_empty() {
        return "  (none found in /proc/*/task/*/patch_state)".into();
    }
    let mut s = String::new();
    for t in tasks {
        s.push_str(&format!("  task {} ({})\n", t.tid, t.comm));
        for line in t.stack.lines() {
            s.push_str(&format!("    {line}\n"));
        }
    }
    s.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_livepatch_tree() -> Result<(), Box<dyn std::error::Error>> {
        let d = tempfile::tempdir()?;
        let lp = d.path().join("livepatch");
        let f = lp.join("lp_x/hfx_x2apic/x2apic_msr_read,1");
        std::fs::create_dir_all(&f)?;
        std::fs::write(lp.join("lp_x/enabled"), "1\n")?;
        std::fs::write(lp.join("lp_x/transition"), "0\n")?;
        let task = d.path().join("proc/42/task/43");
        std::fs::create_dir_all(&task)?;
        std::fs::write(task.join("patch_state"), "0\n")?;
        std::fs::write(task.join("comm"), "hfx_worker\n")?;
        std::fs::write(
            task.join("stack"),
            "[<0>] hfx_worker_wait+0x1c/0x40 [hfx_kthread]\n",
        )?;
        let s = Sysfs {
            livepatch: lp,
            proc: d.path().join("proc"),
        };
        assert_eq!(s.names()?, vec!["lp_x".to_string()]);
        let st = s.state("lp_x")?;
        assert!(st.enabled && !st.transition);
        assert_eq!(st.objects[0].name, "hfx_x2apic");
        assert_eq!(
            st.objects[0].functions,
            vec!["x2apic_msr_read,1".to_string()]
        );
        let stalled = s.tasks_in_state(0);
        assert_eq!(stalled.len(), 1);
        let text = describe(&stalled);
        assert!(text.contains("task 43 (hfx_worker)") && text.contains("hfx_worker_wait"));
        assert!(s.tasks_in_state(1).is_empty());
        Ok(())
    }
}
