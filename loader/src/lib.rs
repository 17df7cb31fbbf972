//! `loader`: applies hotfix patch modules to running processes.
//!
//! Model (see `docs/loader.md`): a patch is an ELF relocatable object with a
//! `.hotfix.meta` section ([`patchgen::format`]). Applying it to a process
//! follows the data flow of the modules:
//! [`target`] (maps, objects, build-ids, symbols) → [`link`] (layout,
//! symbol resolution, relocations) → [`inject`] (allocate memory near the
//! target object by a syscall injected into a stopped thread) → [`freeze`]
//! (stop every thread) → [`check`] (unwind every stack) → [`trampoline`]
//! (expected bytes, 5-byte jumps) or [`detour`] (a switch through slots
//! when the entries span pages) → resume. [`registry`] keeps a record of
//! each patch inside the target; [`load`] sequences it all.
//!
//! Invariants: the target always runs either the old code or the new; an
//! error leaves it as it was; all `unsafe` lives in [`sys`].

pub mod check;
pub mod detour;
pub mod error;
pub mod fault;
pub mod freeze;
pub mod image;
pub mod inject;
pub mod kernel;
pub mod link;
pub mod load;
pub mod mem;
pub mod ops;
pub mod plan;
pub mod registry;
pub mod retry;
pub mod switch;
pub mod sys;
pub mod target;
pub mod trampoline;

pub use error::{Error, Result};
pub use ops::{AllOutcome, FuncReport, Options, Patch, Report, apply, apply_all, list, revert};
pub use registry::{Entry, Record, State};
