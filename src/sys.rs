//! sys: the binary's only `unsafe`: process-wide signal set-up.
//!
//! Model: `hotfix` is a Unix filter like any other: when its reader goes away
//! (`hotfix list | head -1`), it ends quietly from SIGPIPE instead of failing
//! a `println!` and panicking. Rust ignores SIGPIPE at start-up; this restores
//! the default disposition before any output is written.

/// Restores the default SIGPIPE disposition (terminate quietly).
pub fn default_sigpipe() {
    // SAFETY: called once at the start of main, before any thread exists;
    // SIG_DFL is a valid disposition and no handler code is installed.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
