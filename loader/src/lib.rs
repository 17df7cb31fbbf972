//! `loader`: applies hotfix patch modules to running processes and kernels.
//!
//! Model (see `docs/loader.md`): a patch is an
//! ELF relocatable object with a `.hotfix.meta` section
//! ([`patchgen::format`]). Applying it to a process ([`ops`]) follows the
//! data flow of the modules:
//! - [`plan`]: decide everything before the target is touched — match the
//!   patch's targets by build-id in [`target`] (maps, objects, symbols),
//!   check sizes and expected bytes ([`trampoline`]), choose the mode (5-byte
//!   jumps, or a switch through slots and detours: [`detour`]), resolve every
//!   reference;
//! - [`image`]: the patch laid out for this target at a chosen base
//!   ([`link`]: sections, GOT, stubs, relocations) with its detours, slots
//!   and [`registry`] record;
//! - [`load`]: inject `mmap`/`mprotect` into one stopped thread
//!   ([`inject`]) and write the image ([`mem`]);
//! - [`switch`]: stop every thread ([`freeze`]), check every stack
//!   ([`check`]), commit (entry jumps; the one write of the slot page),
//!   resume — retried with backoff by the one loop of [`retry`]; revert runs
//!   the same steps backwards;
//! - [`fault`]: the named failure-injection points of every step.
//!
//! The kernel part, [`kernel`]: livepatch modules applied through the
//! kernel's `klp` (sysfs transition, [`kernel::sysfs`]) or through the
//! `jump` core ([`kernel::jump`]: kallsyms, the module rewrite, the core's
//! protocol, apply/revert retried by the same [`retry`] loop).
//!
//! Invariants: the target always runs either the old code or the new; an
//! error leaves it as it was; all `unsafe` lives in [`sys`] (every other
//! module is `forbid(unsafe_code)`).

#![deny(unsafe_code)]
#![warn(clippy::too_many_lines)]

#[forbid(unsafe_code)]
pub mod check;
#[forbid(unsafe_code)]
pub mod detour;
#[forbid(unsafe_code)]
pub mod error;
#[forbid(unsafe_code)]
pub mod fault;
#[forbid(unsafe_code)]
pub mod freeze;
#[forbid(unsafe_code)]
pub mod image;
#[forbid(unsafe_code)]
pub mod inject;
#[forbid(unsafe_code)]
pub mod kernel;
#[forbid(unsafe_code)]
pub mod link;
#[forbid(unsafe_code)]
pub mod load;
#[forbid(unsafe_code)]
pub mod mem;
#[forbid(unsafe_code)]
pub mod ops;
#[forbid(unsafe_code)]
pub mod plan;
#[forbid(unsafe_code)]
pub mod registry;
#[forbid(unsafe_code)]
pub mod retry;
#[forbid(unsafe_code)]
pub mod switch;
#[allow(
    unsafe_code,
    reason = "the one module with unsafe: raw ptrace/waitpid, file mappings"
)]
pub mod sys;
#[forbid(unsafe_code)]
pub mod target;
#[forbid(unsafe_code)]
pub mod trampoline;

pub use error::{Error, Result};
pub use ops::{AllOutcome, FuncReport, Options, Patch, Report, apply, apply_all, list, revert};
pub use registry::{Entry, Record, State};
