//! `hvpatch`: host-level live patching for hotfix — draining a host's VMs by
//! live migration over QMP, and the host plan that patches the kernel and
//! every VMM process live and falls back to draining when a patch is refused.
//!
//! Model (data flow): [`qmp`] speaks QEMU's machine protocol; [`drain`]
//! moves VMs between two QEMUs with it (checks, then migrate, then QEMU's own
//! statistics; on failure cancel and verify the VM runs on the source);
//! [`progress`] shows drains on a terminal; [`host`] builds a plan for a host
//! (live steps, fallback steps) before doing anything, runs it, and records
//! every step in the append-only [`audit`] log.
//!
//! Invariants: nothing is changed before a plan is complete and checked; a
//! failed drain leaves the VM running where it was; every error names the
//! socket, patch, pid or file concerned and maps to an exit status
//! ([`Error::status`]). Xen payloads are not implemented in this crate yet.

pub mod audit;
pub mod drain;
pub mod error;
pub mod host;
pub mod progress;
pub mod qmp;
mod sys;
pub mod xen;

pub use error::Error;
