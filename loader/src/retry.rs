//! The one busy-retry loop: run an attempt (`stop -> check -> commit ->
//! resume`, for a process in [`crate::switch::when_idle`], inside the kernel
//! for the jump core); while it reports *busy*, back off and try again until
//! the timeout.
//!
//! Model: an attempt either finishes ([`Attempt::Done`]), reports busy with
//! what blocked it ([`Attempt::Busy`]), or fails (`Err`, returned at once).
//! Between busy attempts the loop sleeps [`Backoff::first`], doubling up to
//! [`Backoff::max`], never past the deadline, logging `busy; retrying`
//! (the guest tests wait for that line).
//!
//! Invariants: at least one attempt runs, even with a zero timeout; a busy
//! attempt at or after the deadline ends the loop with [`Outcome::TimedOut`]
//! carrying the last blocker and the attempt count, so the caller can name
//! it; the loop itself changes nothing — undoing is the attempt's job.

use std::time::{Duration, Instant};

/// The sleeps between busy attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first sleep.
    pub first: Duration,
    /// The longest sleep.
    pub max: Duration,
}

impl Backoff {
    /// Process targets: 1 ms doubling to 100 ms (the pause of one attempt
    /// is short; retry often).
    pub const PROCESS: Backoff = Backoff {
        first: Duration::from_millis(1),
        max: Duration::from_millis(100),
    };
    /// The kernel jump core: 40 ms doubling to 500 ms (each attempt loads a
    /// module and stops every CPU).
    pub const KERNEL: Backoff = Backoff {
        first: Duration::from_millis(40),
        max: Duration::from_millis(500),
    };
}

/// What one attempt did.
#[derive(Debug)]
pub enum Attempt<T, B> {
    /// It committed.
    Done(T),
    /// It found the target busy (nothing changed), blocked by `B`.
    Busy(B),
}

/// How the loop ended.
#[derive(Debug)]
pub enum Outcome<T, B> {
    /// An attempt committed; `attempts` counts it.
    Done {
        /// What it returned.
        value: T,
        /// Attempts made (1 + retries).
        attempts: u32,
    },
    /// Still busy at the deadline.
    TimedOut {
        /// What blocked the last attempt.
        busy: B,
        /// Attempts made.
        attempts: u32,
    },
}

/// Runs `attempt(n)` (`n` = 1, 2, ...) until it is done, fails, or is still
/// busy at `timeout` from now.
pub fn until_done<T, B, E>(
    timeout: Duration,
    backoff: Backoff,
    mut attempt: impl FnMut(u32) -> Result<Attempt<T, B>, E>,
) -> Result<Outcome<T, B>, E> {
    let deadline = Instant::now() + timeout;
    let mut sleep = backoff.first;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        match attempt(attempts)? {
            Attempt::Done(value) => return Ok(Outcome::Done { value, attempts }),
            Attempt::Busy(busy) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(Outcome::TimedOut { busy, attempts });
                }
                let sleep_now = sleep.min(left);
                tracing::debug!(attempt = attempts, sleep = ?sleep_now, "busy; retrying");
                std::thread::sleep(sleep_now);
                sleep = (sleep * 2).min(backoff.max);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_while_busy_then_done() {
        let r = until_done(Duration::from_secs(5), Backoff::PROCESS, |n| {
            Ok::<_, ()>(if n < 3 {
                Attempt::Busy(n)
            } else {
                Attempt::Done("ok")
            })
        });
        assert!(matches!(
            r,
            Ok(Outcome::Done {
                value: "ok",
                attempts: 3
            })
        ));
    }

    #[test]
    fn times_out_with_the_last_blocker_and_runs_once_at_zero() {
        let r = until_done(Duration::ZERO, Backoff::KERNEL, |n| {
            Ok::<Attempt<(), u32>, ()>(Attempt::Busy(n))
        });
        assert!(matches!(
            r,
            Ok(Outcome::TimedOut {
                busy: 1,
                attempts: 1
            })
        ));
        let r = until_done(Duration::from_millis(30), Backoff::PROCESS, |n| {
            Ok::<Attempt<(), u32>, ()>(Attempt::Busy(n))
        });
        assert!(
            matches!(r, Ok(Outcome::TimedOut { busy, attempts }) if busy == attempts && attempts > 1)
        );
    }

    #[test]
    fn an_error_ends_the_loop_at_once() {
        let r: Result<Outcome<(), ()>, &str> =
            until_done(Duration::from_secs(5), Backoff::PROCESS, |_| Err("boom"));
        assert_eq!(r.err(), Some("boom"));
    }
}
