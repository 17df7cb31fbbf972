//! Named failure-injection points: with `HOTFIX_FAULT=<step>` in its
//! environment hotfix kills itself with `SIGKILL` when it reaches `step`.
//!
//! Model: every step of apply and revert that changes the target, and every
//! stop inside an injected system call, names its point (`planned`,
//! `loaded`, `frozen`, `checked`, `jump-N`, `switched`, `resumed`,
//! `inject-mmap`, ...; the list is in `docs/loader.md`). The process tests
//! kill hotfix at each one and check the target runs wholly old or wholly
//! new code. Invariant: without the variable a point does nothing.

/// Fires failure-injection point `step`.
pub fn fault(step: &str) {
    if std::env::var("HOTFIX_FAULT").is_ok_and(|v| v == step) {
        tracing::warn!("HOTFIX_FAULT={step}: killing hotfix");
        crate::sys::kill_self();
    }
}
