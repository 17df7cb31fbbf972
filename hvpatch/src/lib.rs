//! `hvpatch`: host- and hypervisor-level live patching (Xen payloads, whole
//! host plans, draining a host by live migration).
//!
//! Not implemented yet: this crate holds only its documentation until its
//! issues land. Nothing here pretends to work.
