//! Why a supernode refused an index or signal request: typed on the overlay
//! wire, so the asking supernode decides on the variant (a taken name is
//! final, a full holder is not) and renders text only for its client.

use crate::record::RecordError;
use serde::{Deserialize, Serialize};

/// A holder's (or the asking supernode's) refusal of a claim, a presence
/// record or a signal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Refusal {
    /// Signature, key, name or expiry invalid.
    #[error("{0}")]
    Invalid(RecordError),
    /// The name belongs to another key.
    #[error("name is taken by another key")]
    Taken,
    /// The key holds as many names as one key may.
    #[error("this key holds {0} names already (the most one key may)")]
    TooManyNames(usize),
    /// A claim signed too far in the future, or so long ago it has expired.
    #[error("claim time outside the accepted range (future, or older than the claim lifetime)")]
    BadTime,
    /// A presence record for a name this key does not own.
    #[error("name is not claimed by this key")]
    NotOwner,
    /// The presence names another supernode than the one it was sent to.
    #[error("presence names another supernode")]
    WrongSupernode,
    /// An older presence record than the one stored.
    #[error("stale presence record")]
    Stale,
    /// The holder is full.
    #[error("directory full")]
    Full,
    /// A renewal-only claim (the source is over its new-name budget) for a
    /// name this key does not hold.
    #[error("too many new names claimed from this address; try again later")]
    RateLimited,
    /// The holders did not agree: no majority either way.
    #[error("the directory's holders did not agree; try again")]
    NoQuorum,
    /// Nobody answered in time, or the supernode is out of room for requests.
    #[error("the directory did not answer; try again")]
    Unavailable,
    /// A signal for a client of another supernode.
    #[error("not this supernode's client")]
    NotHere,
    /// A signal's callee is not connected to this supernode (any more).
    #[error("callee is no longer connected to its supernode")]
    CalleeGone,
    /// A claim or record signed by another key than the connection's.
    #[error("not signed by this connection's key")]
    NotYourKey,
    /// A claim from this connection is being decided already.
    #[error("a claim is in flight already")]
    InFlight,
}

impl Refusal {
    /// True when asking again later may succeed (holders silent or split
    /// during churn, a full holder, a claim still in flight); false when the
    /// answer is final (a taken name, an invalid claim, a rate limit).
    pub fn is_transient(&self) -> bool {
        matches!(self, Refusal::NoQuorum | Refusal::Unavailable | Refusal::Full | Refusal::InFlight)
    }
}

/// What a holder did with an accepted claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Claimed {
    /// The name was free here and is now this key's.
    New,
    /// This key held the name already (renewed if the claim was newer).
    Held,
}

impl From<RecordError> for Refusal {
    fn from(e: RecordError) -> Self {
        Refusal::Invalid(e)
    }
}
