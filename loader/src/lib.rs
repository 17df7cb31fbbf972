//! `loader`: applies hotfix patch modules to running targets.
//!
//! Not implemented yet: this crate holds only its documentation until the
//! process-loader issue lands. Nothing here pretends to work.
