//! The control API: JSON lines over a Unix socket between `supervox ctl` and
//! a running `supervox node`. One request per connection; the daemon answers
//! with one line (status, hangup, answer, presence, read, contact actions),
//! a list of lines (contacts, messages, history), or a stream of event lines
//! that ends when the call ends (call), the message is stored or delivered
//! (send), or the client goes away (events).

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
        /// Answer `{"ok":true,"call_id"}` at once and let the call outlive this
        /// request (the web app follows it on the event stream); otherwise the
        /// request streams the call's events and ends it when it goes away.
        #[serde(default)]
        detach: bool,
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
    /// The contact list (one line per entry), or a change to it.
    Contacts {
        /// `None`: list. Else add, accept, decline, remove or block.
        action: Option<ContactAction>,
        /// The contact's name (for an action).
        name: Option<String>,
        /// The request's note (add).
        message: Option<String>,
    },
    /// Set our presence.
    Presence {
        /// online, away, busy or invisible.
        state: String,
        /// Status text.
        text: Option<String>,
    },
    /// Send a chat message; answers once it is stored or delivered.
    Send {
        /// Recipient.
        name: String,
        /// The text.
        text: String,
    },
    /// A conversation's messages, one per line.
    Messages {
        /// The peer.
        name: String,
    },
    /// Mark a conversation read.
    Read {
        /// The peer.
        name: String,
    },
    /// The call history, one call per line, newest first.
    History,
    /// A live stream of events (until the client goes away).
    Events,
    /// Mute or unmute our microphone in the current call.
    Mute {
        /// Send silence instead of the input.
        muted: bool,
    },
    /// The audio devices, and the input and output used by the next call;
    /// with a spec given, set it first.
    Devices {
        /// New default source (`tone:HZ`, `wav:PATH`, `silence`, `mic[:NAME]`).
        input: Option<String>,
        /// New default sink (`wav:PATH`, `null`, `speaker[:NAME]`).
        output: Option<String>,
    },
    /// A one-time login URL for the web app (`supervox ui`).
    UiLogin,
}

/// A change to the contact list.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ContactAction {
    /// Ask NAME to be a contact.
    Add,
    /// Accept NAME's request.
    Accept,
    /// Decline NAME's request.
    Decline,
    /// Remove NAME (or unblock).
    Remove,
    /// Block NAME.
    Block,
}
