//! `patchgen`: turns a source fix into a live patch.
//!
//! Model: a fix is seen as pairs of ELF relocatable objects (before, after)
//! compiled with `-ffunction-sections -fdata-sections`, so that every function
//! and datum sits in its own section. The pipeline follows the data:
//!
//! `read` (parse an object) → `correlate` (pair sections and symbols of the
//! two objects) → `compare` (decide what changed, relocations included) →
//! `include` (close over what the changed code needs) → `emit` (write the
//! patch object with its [`format::Meta`]).
//!
//! Invariants: nothing here touches a running target; every refusal names the
//! file and symbol concerned and carries a [`Status`] that the CLI turns into
//! its exit status.

pub mod build;
pub mod bytes;
pub mod compare;
pub mod correlate;
pub mod diff;
pub mod emit;
pub mod error;
pub mod explain;
pub mod format;
pub mod include;
pub mod inspect;
pub mod kernel;
pub mod layout;
pub mod read;
pub mod shared;
pub mod unwind;
pub mod xen;

pub use diff::{DiffOptions, DiffReport, FuncChange, diff_objects};
pub use error::{Error, Refusal, RefusalKind};
pub use read::ObjectFile;

/// Outcome categories shared by every hotfix crate; the CLI maps them to exit
/// statuses (documented in the README).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// 1: an error (bad input, refused change, I/O...).
    Error = 1,
    /// 2: bad usage.
    Usage = 2,
    /// 3: unsafe now: a function to replace stayed busy until the timeout; nothing changed.
    Unsafe = 3,
    /// 4: target mismatch: build-id or expected bytes differ; nothing changed.
    Mismatch = 4,
    /// 5: no functional change between the two inputs.
    NoChange = 5,
    /// 6: untrusted: the patch's signature is missing, by an unknown or
    /// revoked key, for another file, or does not match; nothing changed.
    Untrusted = 6,
}
