//! What a sealed peer unit says (docs/PROTOCOL.md §9.1): one [`Envelope`]
//! (postcard) inside the HPKE seal of [`super::seal`] — the sender's name as
//! it claims it, and one [`PeerPayload`]. The seal authenticates the sender's
//! key; the name is only a claim, checked against the directory (or the
//! contact list) before anything is filed under it.

use super::chat::ChatPayload;
use super::seal::{open, seal, SealError};
use crate::Identity;
use rand::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use supervox_proto::record::MAX_NAME_LEN;
use supervox_proto::UserId;

/// Longest note a contact request may carry, in bytes.
pub const MAX_REQUEST_TEXT: usize = 512;
/// Longest presence status text, in bytes.
pub const MAX_STATUS_TEXT: usize = 256;

/// A unit's plaintext.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The sender's name, as it claims it.
    pub from_name: String,
    /// What it says.
    pub body: PeerPayload,
}

/// The kinds of peer unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerPayload {
    /// Chat text or a receipt ([`super::chat`]).
    Chat(ChatPayload),
    /// The contact handshake ([`super::contacts`]).
    Contact(ContactMsg),
    /// A contact's presence ([`super::presence`]).
    Presence(PresenceNote),
    /// We called and they were offline.
    MissedCall(MissedCallNote),
}

/// The contact handshake between two users.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContactMsg {
    /// Please add me, with an optional note.
    Request {
        /// The note ("hi, it's Alice from work").
        message: String,
    },
    /// Your request is accepted (or: I accept the one I had sent).
    Accept,
    /// I removed you: stop showing me, stop sending me presence.
    Remove,
}

/// A presence state as contacts see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Shown {
    /// Online and available.
    Online,
    /// Online, away from the keyboard.
    Away,
    /// Online, do not disturb.
    Busy,
    /// Signed out (or invisible: it looks the same).
    Offline,
}

impl Shown {
    /// The name the CLI/JSON contract uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Shown::Online => "online",
            Shown::Away => "away",
            Shown::Busy => "busy",
            Shown::Offline => "offline",
        }
    }
}

/// One presence update, pushed to each accepted contact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceNote {
    /// The state shown.
    pub shown: Shown,
    /// Optional status text.
    pub text: String,
    /// Sender's counter: an older note than the last one seen is ignored.
    pub seq: u64,
    /// Where the sender is attached (to write back without a lookup).
    pub supernode: Option<SocketAddr>,
    /// Taken as offline this long after it arrives unless refreshed: how a
    /// crash shows (relative, so the two clocks need not agree).
    pub lifetime_ms: u32,
    /// Send me yours (sent at sign-in).
    pub reply: bool,
}

/// A call that found its callee offline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MissedCallNote {
    /// The call's id.
    pub call_id: [u8; 16],
    /// When the caller called (caller's clock, unix ms).
    pub at_ms: u64,
}

/// Why a unit was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// It does not open (not sealed by that sender to us under that id).
    #[error(transparent)]
    Seal(#[from] SealError),
    /// It opens but does not decode, or breaks a bound.
    #[error("malformed peer unit")]
    Malformed,
}

impl Envelope {
    fn valid(&self) -> bool {
        let name_ok = !self.from_name.is_empty() && self.from_name.len() <= MAX_NAME_LEN;
        let body_ok = match &self.body {
            PeerPayload::Contact(ContactMsg::Request { message }) => message.len() <= MAX_REQUEST_TEXT,
            PeerPayload::Presence(p) => p.text.len() <= MAX_STATUS_TEXT,
            _ => true,
        };
        name_ok && body_ok
    }
}

/// Seal `env` from `me` to `to` under `wire_id`.
pub fn seal_envelope<R: RngCore + CryptoRng>(
    me: &Identity,
    to: &UserId,
    wire_id: &[u8; 16],
    env: &Envelope,
    rng: &mut R,
) -> Result<Vec<u8>, PayloadError> {
    let plain = postcard::to_allocvec(env).map_err(|_| PayloadError::Malformed)?;
    Ok(seal(me, to, wire_id, &plain, rng)?)
}

/// Open a unit sealed by `from` to `me` under `wire_id`, and check its bounds.
pub fn open_envelope(
    me: &Identity,
    from: &UserId,
    wire_id: &[u8; 16],
    sealed: &[u8],
) -> Result<Envelope, PayloadError> {
    let plain = open(me, from, wire_id, sealed)?;
    let env: Envelope = postcard::from_bytes(&plain).map_err(|_| PayloadError::Malformed)?;
    if !env.valid() {
        return Err(PayloadError::Malformed);
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn envelopes_round_trip_and_bounds_hold() {
        let (a, b) = (Identity::from_seed([1; 32]), Identity::from_seed([2; 32]));
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let env = Envelope {
            from_name: "alice".into(),
            body: PeerPayload::Contact(ContactMsg::Request { message: "hi".into() }),
        };
        let sealed = seal_envelope(&a, &b.user_id(), &[4; 16], &env, &mut rng).unwrap();
        assert_eq!(open_envelope(&b, &a.user_id(), &[4; 16], &sealed).unwrap(), env);
        // Over-long note or name: sealed fine by a hostile sender, refused on opening.
        for bad in [
            Envelope {
                from_name: "alice".into(),
                body: PeerPayload::Contact(ContactMsg::Request { message: "x".repeat(MAX_REQUEST_TEXT + 1) }),
            },
            Envelope { from_name: "a".repeat(MAX_NAME_LEN + 1), body: env.body.clone() },
            Envelope { from_name: String::new(), body: env.body.clone() },
        ] {
            let sealed = seal_envelope(&a, &b.user_id(), &[5; 16], &bad, &mut rng).unwrap();
            assert_eq!(open_envelope(&b, &a.user_id(), &[5; 16], &sealed), Err(PayloadError::Malformed));
        }
        // Garbage that opens: refused, no panic.
        let junk = seal(&a, &b.user_id(), &[6; 16], &[0xff; 40], &mut rng).unwrap();
        assert_eq!(open_envelope(&b, &a.user_id(), &[6; 16], &junk), Err(PayloadError::Malformed));
    }
}
