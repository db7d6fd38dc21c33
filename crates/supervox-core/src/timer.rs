//! The timer contract every top-level machine here follows (modelled on
//! quinn-proto's `poll_timeout`/`handle_timeout`).
//!
//! - `poll_timeout() -> Option<u64>` is the earliest wall-clock ms at which
//!   the machine needs `handle_timeout(now)`; `None` means it has nothing to
//!   do until the next input. It must be asked again after **every** input
//!   (any `handle_*`/`on_*` call, and `handle_timeout` itself): an input may
//!   move the deadline earlier.
//! - `handle_timeout(now)` does what is due at `now` and nothing else, so a
//!   driver may call it early, late or more often than asked (a fixed clock
//!   is a valid, wasteful driver); what is not yet due stays due.
//! - A deadline in the past means "now".
//!
//! Drivers sleep until the earliest deadline of their machines or the next
//! input, instead of ticking on a fixed clock: an idle node wakes only for
//! its keepalive and presence refresh.

/// The earliest of several optional deadlines.
pub fn earliest(deadlines: impl IntoIterator<Item = Option<u64>>) -> Option<u64> {
    deadlines.into_iter().flatten().min()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earliest_ignores_absent_deadlines() {
        assert_eq!(earliest([None, Some(30), None, Some(10)]), Some(10));
        assert_eq!(earliest([None, None]), None);
        assert_eq!(earliest([]), None);
    }
}
