//! Live patching of the Xen hypervisor from Dom0: Xen's own payload format
//! (ELF relocatable objects with `.livepatch.funcs`, build-id dependencies)
//! driven through `XEN_SYSCTL_livepatch_op`.
//!
//! Data flow: [`payload`] reads a payload file and what it depends on;
//! [`apply`] checks it against the running hypervisor, then uploads,
//! applies/replaces/reverts and polls through [`sysctl`], which lays out the
//! hypercalls described in [`abi`] and issues them via `/dev/xen/privcmd`
//! (the `unsafe` part is in [`crate::sys`]).
//!
//! Why privcmd and not `xen-livepatch`: a Dom0 needs no Xen user space
//! (libxenctrl, xenstore) for it, the refusals can be checked before the
//! hypervisor changes state, and failures come back as typed errors with
//! exit statuses instead of parsed text.
//!
//! Invariants: a payload built for another hypervisor build-id is never sent
//! (exit 4); a payload refused after upload is unloaded again, so every
//! refusal leaves the hypervisor unchanged; only the top of the applied stack
//! is reverted; errors name the payload and the hypercall ([`Error`]).

pub mod abi;
pub mod apply;
pub mod error;
pub mod payload;
pub mod sysctl;

pub use apply::{Options, Outcome, apply, list, revert};
pub use error::Error;
pub use payload::Payload;
pub use sysctl::{Hypervisor, Listed};
