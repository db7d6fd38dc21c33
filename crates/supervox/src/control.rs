//! The control API: JSON lines over a Unix socket between `supervox ctl` and
//! a running `supervox node`. One request per connection; the daemon answers
//! with one line (status, hangup, answer) or a stream of event lines that
//! ends when the call ends (call).

use serde::{Deserialize, Serialize};

/// Longest request line accepted.
pub const MAX_REQUEST_LEN: usize = 64 * 1024;

/// A request from `ctl`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// Who and where we are.
    Status,
    /// Place a call and stream its events.
    Call {
        /// Callee name.
        name: String,
        /// Hang up after this many seconds.
        duration: Option<f64>,
        /// Audio source for this call (default: the daemon's `--input`).
        input: Option<String>,
        /// Audio sink for this call (default: the daemon's `--output`).
        output: Option<String>,
    },
    /// End the current call.
    Hangup,
    /// Answer a ringing incoming call.
    Answer,
    /// Accept the changed key of a pinned peer (after a `key_changed`): it
    /// is pinned from now on.
    Trust {
        /// The peer's name.
        name: String,
    },
    /// List the pinned peer keys.
    Pins,
}
