//! Why things end: typed reasons for call ends and failures, path changes,
//! lost supernode links and refused sign-ins.
//!
//! The core hands these enums out in its events; they are turned into text
//! only at the edge (logs, the control API's `reason`), next to a stable
//! machine-readable [`Reason::code`] (kebab-case, never reworded: scripts and
//! `ctl call` match on it). Text that came from the network (a peer's `Bye`
//! or `Reject`, a supernode's `SignalFailed`, `Redirect` or refused claim) is
//! untrusted: it travels in a [`ReasonText`], sanitised and truncated, and
//! never decides anything. The wire format is unchanged: signals still carry
//! reasons as strings.

use crate::call::CallCryptoError;
use std::fmt;

/// Untrusted text in a reason is cut to this many characters.
pub const MAX_REASON_CHARS: usize = 200;

/// The codes of the call ends that count as normal ([`CallEnd::is_normal`]):
/// `ctl call` exits 0 only after a `call_ended` with one of these.
pub const NORMAL_END_CODES: [&str; 3] = ["local-hangup", "remote-hangup", "duration-reached"];

/// A reason: human text through `Display`, a stable code, and whether it is
/// a normal outcome.
pub trait Reason: fmt::Display {
    /// The stable machine-readable code (kebab-case).
    fn code(&self) -> &'static str;
    /// True for an outcome nobody needs to be told about as a problem (a call
    /// that ended normally). Failures are never normal.
    fn is_normal(&self) -> bool {
        false
    }
}

/// Text from outside (a peer or a supernode), made safe to show: control and
/// bidirectional-override characters become spaces, and it is cut to
/// [`MAX_REASON_CHARS`] characters (an ellipsis marks the cut).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReasonText(String);

impl ReasonText {
    /// Sanitise `raw`.
    pub fn new(raw: &str) -> Self {
        let mut out = String::with_capacity(raw.len().min(MAX_REASON_CHARS * 4));
        for (i, c) in raw.chars().enumerate() {
            if i == MAX_REASON_CHARS {
                out.push('…');
                break;
            }
            // Bidi overrides and isolates can make a log line read backwards.
            let unsafe_char = c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
            out.push(if unsafe_char { ' ' } else { c });
        }
        Self(out)
    }

    /// The sanitised text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ReasonText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a call that had connected (or was connecting) ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallEnd {
    /// The user hung up here (`ctl hangup`, the API).
    LocalHangup,
    /// The peer sent `Bye`, with its (untrusted) reason. Normal whatever it says.
    RemoteHangup(ReasonText),
    /// The `--duration` of `ctl call` ran out.
    DurationReached,
    /// A connected call heard no authenticated datagram for 10 s.
    MediaTimeout,
    /// The `ctl call` that placed the call went away (Ctrl-C).
    ControlClientLeft,
    /// The node daemon is stopping.
    ShuttingDown,
    /// The call's audio source or sink could not be opened.
    AudioDevice(String),
}

impl CallEnd {
    /// A peer's `Bye` reason.
    pub fn remote_hangup(reason: &str) -> Self {
        Self::RemoteHangup(ReasonText::new(reason))
    }
}

impl Reason for CallEnd {
    fn code(&self) -> &'static str {
        match self {
            Self::LocalHangup => "local-hangup",
            Self::RemoteHangup(_) => "remote-hangup",
            Self::DurationReached => "duration-reached",
            Self::MediaTimeout => "media-timeout",
            Self::ControlClientLeft => "control-client-left",
            Self::ShuttingDown => "shutting-down",
            Self::AudioDevice(_) => "audio-device-error",
        }
    }

    fn is_normal(&self) -> bool {
        matches!(self, Self::LocalHangup | Self::RemoteHangup(_) | Self::DurationReached)
    }
}

impl fmt::Display for CallEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::LocalHangup => f.write_str("local hangup"),
            Self::RemoteHangup(r) => write!(f, "remote hangup ({r})"),
            Self::DurationReached => f.write_str("call duration reached"),
            Self::MediaTimeout => f.write_str("media timeout: no packets from the peer"),
            Self::ControlClientLeft => f.write_str("local hangup (control client left)"),
            Self::ShuttingDown => f.write_str("node shutting down"),
            Self::AudioDevice(detail) => write!(f, "audio device error: {detail}"),
        }
    }
}

/// Why the callee turned a call down: the `reason` of a `Reject` signal.
/// We send [`Rejection::wire`] texts; what arrives is matched against them
/// and anything else kept as untrusted text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// The callee is in another call.
    Busy,
    /// The callee declined.
    Declined,
    /// It rang at the callee for 30 s.
    NoAnswer,
    /// The callee could not complete the end-to-end handshake.
    HandshakeFailed,
    /// The callee's directory lookup says our name belongs to another key.
    CallerNotVerified,
    /// Some other reason (untrusted text).
    Other(ReasonText),
}

impl Rejection {
    /// Read a `Reject` reason that arrived.
    pub fn from_wire(reason: &str) -> Self {
        match reason {
            "busy" => Self::Busy,
            "declined" => Self::Declined,
            "no answer" => Self::NoAnswer,
            "handshake failed" => Self::HandshakeFailed,
            "caller not verified" => Self::CallerNotVerified,
            other => Self::Other(ReasonText::new(other)),
        }
    }

    /// The text sent in `CallSignal::Reject` (unchanged wire strings).
    pub fn wire(&self) -> &str {
        match self {
            Self::Busy => "busy",
            Self::Declined => "declined",
            Self::NoAnswer => "no answer",
            Self::HandshakeFailed => "handshake failed",
            Self::CallerNotVerified => "caller not verified",
            Self::Other(t) => t.as_str(),
        }
    }
}

/// Why a call never connected (or ended before it did).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallFailure {
    /// The callee's name is not a valid name.
    InvalidName(ReasonText),
    /// The user called their own name.
    CallingSelf,
    /// No supernode has signed us in (yet).
    NotSignedIn,
    /// A call is already in progress.
    AlreadyInCall,
    /// A bad `ctl call` request (input, output, duration), refused by the node.
    BadRequest(String),
    /// The directory did not answer the lookup in 4 s.
    LookupTimedOut,
    /// No such name in the directory.
    NoSuchUser(String),
    /// The name is claimed but its owner is not online.
    Offline(String),
    /// The supernode's lookup answer did not verify here.
    LookupUnverified,
    /// The end-to-end handshake failed here.
    Handshake(CallCryptoError),
    /// The callee's side did not answer the invite (no `Ringing` in 5 s).
    CalleeDidNotRespond,
    /// It rang for 30 s and nobody answered.
    NoAnswer,
    /// An incoming call rang out here.
    Missed,
    /// The callee rejected the call.
    Rejected(Rejection),
    /// The caller cancelled before we answered.
    CallerCancelled,
    /// An incoming call refused before it rang: the directory says the
    /// caller's name belongs to another key (a spoofed caller id). The
    /// caller hears [`Rejection::CallerNotVerified`].
    CallerNameMismatch(String),
    /// The peer's name is pinned to another key than the one this call came
    /// with (the directory's answer for a callee, the caller's own key for an
    /// incoming call): possibly an attack, or the peer has a new identity.
    /// The new key waits for the user's `ctl trust NAME`.
    KeyChanged(String),
    /// Two supernodes answered the lookup of this name differently (another
    /// key, or one knows no owner): one of them lies. Possibly an attack.
    LookupMismatch(String),
    /// No second supernode confirmed the lookup of this name in time, so the
    /// key could not be cross-checked (outgoing calls only).
    LookupUnconfirmed(String),
    /// Connectivity checks found no working pair within 10 s of the answer.
    NoMediaPath,
    /// Our supernode link went away while the call was being set up.
    LostSupernode,
    /// Our supernode redirected us while the call was being set up.
    Redirected,
    /// A supernode could not deliver our signal (its untrusted reason).
    SignalFailed(ReasonText),
    /// Ended by either side (hangup, shutdown …) before it connected: the code
    /// is the end's own.
    Ended(CallEnd),
}

impl CallFailure {
    /// A supernode's `SignalFailed` reason.
    pub fn signal_failed(reason: &str) -> Self {
        Self::SignalFailed(ReasonText::new(reason))
    }
}

impl Reason for CallFailure {
    fn code(&self) -> &'static str {
        match self {
            Self::InvalidName(_) => "invalid-name",
            Self::CallingSelf => "calling-self",
            Self::NotSignedIn => "not-signed-in",
            Self::AlreadyInCall => "already-in-call",
            Self::BadRequest(_) => "bad-request",
            Self::LookupTimedOut => "lookup-timeout",
            Self::NoSuchUser(_) => "no-such-user",
            Self::Offline(_) => "offline",
            Self::LookupUnverified => "lookup-unverified",
            Self::Handshake(_) => "handshake-failed",
            Self::CalleeDidNotRespond => "callee-not-responding",
            Self::NoAnswer => "no-answer",
            Self::Missed => "missed",
            Self::Rejected(Rejection::Busy) => "busy",
            Self::Rejected(Rejection::Declined) => "declined",
            Self::Rejected(Rejection::NoAnswer) => "callee-no-answer",
            Self::Rejected(Rejection::HandshakeFailed) => "callee-handshake-failed",
            Self::Rejected(Rejection::CallerNotVerified) => "caller-not-verified",
            Self::Rejected(Rejection::Other(_)) => "rejected",
            Self::CallerCancelled => "caller-cancelled",
            Self::CallerNameMismatch(_) => "caller-name-mismatch",
            Self::KeyChanged(_) => "key-changed",
            Self::LookupMismatch(_) => "lookup-mismatch",
            Self::LookupUnconfirmed(_) => "lookup-unconfirmed",
            Self::NoMediaPath => "no-media-path",
            Self::LostSupernode => "lost-supernode",
            Self::Redirected => "redirected",
            Self::SignalFailed(_) => "signal-failed",
            Self::Ended(e) => e.code(),
        }
    }
}

impl fmt::Display for CallFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidName(e) => write!(f, "{e}"),
            Self::CallingSelf => f.write_str("cannot call yourself"),
            Self::NotSignedIn => f.write_str("not signed in to a supernode yet"),
            Self::AlreadyInCall => f.write_str("already in a call"),
            Self::BadRequest(e) => f.write_str(e),
            Self::LookupTimedOut => f.write_str("lookup timed out"),
            Self::NoSuchUser(name) => write!(f, "no user named {name:?}"),
            Self::Offline(name) => write!(f, "{name} is offline"),
            Self::LookupUnverified => f.write_str("lookup answer did not verify"),
            Self::Handshake(e) => write!(f, "{e}"),
            Self::CalleeDidNotRespond => f.write_str("callee did not respond"),
            Self::NoAnswer => f.write_str("no answer"),
            Self::Missed => f.write_str("missed call"),
            Self::Rejected(r) => write!(f, "rejected: {}", r.wire()),
            Self::CallerCancelled => f.write_str("caller cancelled"),
            Self::CallerNameMismatch(name) => {
                write!(f, "refused a caller claiming {name:?}: the directory says that name belongs to another key")
            }
            Self::KeyChanged(name) => write!(
                f,
                "the key of {name:?} is not the one pinned for it: possible attack (accept a new key with `ctl trust {name}`)"
            ),
            Self::LookupMismatch(name) => {
                write!(f, "two supernodes disagree about who owns {name:?}: possible attack")
            }
            Self::LookupUnconfirmed(name) => {
                write!(f, "no second supernode confirmed the lookup of {name:?} in time")
            }
            Self::NoMediaPath => f.write_str("no media path to the peer"),
            Self::LostSupernode => f.write_str("lost the supernode link"),
            Self::Redirected => f.write_str("our supernode redirected us"),
            Self::SignalFailed(r) => write!(f, "{r}"),
            Self::Ended(e) => write!(f, "{e}"),
        }
    }
}

/// Why a call's media moved to another pair (`path_changed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathChange {
    /// The pair in use stopped answering; another live one took over.
    Failover,
    /// A better kind of pair answers (e.g. direct after a relayed start).
    Upgrade,
}

impl Reason for PathChange {
    fn code(&self) -> &'static str {
        match self {
            Self::Failover => "failover",
            Self::Upgrade => "upgrade",
        }
    }

    fn is_normal(&self) -> bool {
        // An upgrade is the plan working; a failover means something broke.
        matches!(self, Self::Upgrade)
    }
}

impl fmt::Display for PathChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Failover => "failover: the path in use stopped answering",
            Self::Upgrade => "upgrade: a better path answers",
        })
    }
}

/// Why our supernode link went away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkClose {
    /// The connection closed or failed (the driver's or the link's words).
    Closed(String),
    /// The supernode sent us elsewhere (`Redirect`, its untrusted reason).
    Redirected(ReasonText),
}

impl Reason for LinkClose {
    fn code(&self) -> &'static str {
        match self {
            Self::Closed(_) => "link-closed",
            Self::Redirected(_) => "redirected",
        }
    }
}

impl fmt::Display for LinkClose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Closed(why) => f.write_str(why),
            Self::Redirected(r) => write!(f, "redirected: {r}"),
        }
    }
}

/// Why our name claim was refused (fatal for a daemon).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignInRefusal {
    /// The supernode refused the claim, finally (taken, invalid, over the
    /// new-name budget): what it says, which a malicious supernode may lie
    /// about (lookups of the name are cross-checked at its holders anyway).
    Supernode(supervox_proto::Refusal),
    /// We could not even sign a claim for the name (e.g. an invalid name).
    InvalidClaim(String),
}

impl Reason for SignInRefusal {
    fn code(&self) -> &'static str {
        match self {
            Self::Supernode(_) => "claim-refused",
            Self::InvalidClaim(_) => "invalid-claim",
        }
    }
}

impl fmt::Display for SignInRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Supernode(r) => write!(f, "{r}"),
            Self::InvalidClaim(e) => f.write_str(e),
        }
    }
}

#[cfg(test)]
mod tests;
