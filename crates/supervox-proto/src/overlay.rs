//! Supernode ↔ supernode datagrams: the overlay.
//!
//! Supernodes do not keep links to each other. They talk in single UDP
//! datagrams on their STUN/TURN port, sealed with the network key (see
//! `supervox_core::overlay::wire`): SWIM membership (ping, ack, indirect
//! ping, piggybacked member updates), the rendezvous-hashed index (claim,
//! publish, lookup, hand-off) and call signals on their way to the callee's
//! supernode. One datagram is one [`OverlayPacket`]; the encoding is postcard
//! and decoding never panics.

use crate::message::{LookupAnswer, SignalEnvelope};
use crate::record::{NameClaim, Presence, UserId};
use crate::refusal::{Claimed, Refusal};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// First byte of every overlay datagram. STUN messages start with 0x00 or
/// 0x01 and TURN ChannelData with 0x40..=0x7f, so one byte tells them apart
/// on the shared UDP port.
pub const OVERLAY_MAGIC: u8 = 0xc5;
/// Largest overlay datagram sent or accepted. Index and membership messages
/// stay under 1200 bytes; an invite with many candidates may be larger and is
/// then fragmented by IP, which is rare and acceptable for signalling.
pub const MAX_OVERLAY_DATAGRAM: usize = 8192;
/// Most member updates one packet carries.
pub const MAX_UPDATES_PER_PACKET: usize = 16;
/// Most records in one [`OverlayMsg::Store`] or members in one
/// [`OverlayMsg::Members`].
pub const MAX_ITEMS_PER_PACKET: usize = 16;

/// What a supernode's membership entry says about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberState {
    /// Answering probes.
    Alive,
    /// Missed a probe; declared down unless it refutes in time.
    Suspect,
    /// Declared down at this incarnation.
    Dead,
}

/// One supernode as the membership knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Its identity (Ed25519 public key; also its Noise static key's owner).
    pub id: UserId,
    /// Its advertised address: TCP for clients, UDP for the overlay.
    pub addr: SocketAddr,
    /// Bumped by the member itself to refute a suspicion or rejoin.
    pub incarnation: u32,
    /// Alive, suspect or dead.
    pub state: MemberState,
    /// Clients served as a percentage of its capacity (saturating at 255).
    pub load: u8,
    /// Its proof of work: the nonce that makes its rendezvous seed valid
    /// (`supervox_core::overlay::admission`). Fixed for the identity.
    pub nonce: u32,
}

/// The body of an overlay datagram.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OverlayMsg {
    /// A new supernode asks a seed for the member list.
    Join,
    /// Part of a member list (answer to [`OverlayMsg::Join`]).
    Members {
        /// Members, alive or suspect.
        members: Vec<Member>,
    },
    /// SWIM probe.
    Ping {
        /// Echoed in the ack.
        seq: u32,
        /// Piggybacked member updates.
        updates: Vec<Member>,
    },
    /// Answer to a ping (direct or relayed for an indirect probe).
    Ack {
        /// From the ping (or ping request).
        seq: u32,
        /// Piggybacked member updates.
        updates: Vec<Member>,
    },
    /// Probe `target` for me and relay its ack (SWIM indirect probe).
    PingReq {
        /// The prober's sequence number, echoed in the relayed ack.
        seq: u32,
        /// Whom to probe.
        target: Member,
        /// Piggybacked member updates.
        updates: Vec<Member>,
    },
    /// Anti-entropy: a fingerprint of the sender's live set (all 256 bucket
    /// digests folded). A receiver whose own differs answers `SyncBuckets`.
    SyncDigest {
        /// The folded digest.
        total: u64,
    },
    /// Anti-entropy: the digest of each of the 256 buckets of the live set
    /// (members bucketed by the first byte of their id).
    SyncBuckets {
        /// 256 bucket digests.
        digests: Vec<u32>,
    },
    /// Anti-entropy: send me your live members of these buckets (the sender
    /// sends its own in `Members` at the same time).
    SyncPull {
        /// Bucket numbers.
        buckets: Vec<u8>,
    },
    /// Store a name claim as one of its holders (the asking supernode asks
    /// them all; a majority decides); answered by `ClaimAns`.
    Claim {
        /// Matches the answer (random, bound to the holder asked).
        req: u64,
        /// The signed claim.
        claim: NameClaim,
        /// Accept only a renewal (this key holds the name here already): the
        /// client's source address is over its budget of new names.
        renew_only: bool,
    },
    /// Outcome of a [`OverlayMsg::Claim`].
    ClaimAns {
        /// From the claim.
        req: u64,
        /// What the holder did, or why it refused.
        result: Result<Claimed, Refusal>,
    },
    /// Store a presence record (with the claim it rests on, so a holder that
    /// missed a hand-off learns it); answered by `PublishAns`.
    Publish {
        /// Matches the answer.
        req: u64,
        /// The name's claim, when the client's supernode has it.
        claim: Option<NameClaim>,
        /// The signed presence.
        presence: Presence,
    },
    /// Outcome of a [`OverlayMsg::Publish`].
    PublishAns {
        /// From the publish.
        req: u64,
        /// Why the holder refused, if it did.
        result: Result<(), Refusal>,
    },
    /// The sender's client `user` signed off: drop its presence if the
    /// record names the sender as its supernode. Not answered.
    Unpublish {
        /// The user.
        user: UserId,
    },
    /// Who is this name? Answered by `LookupAns`.
    Lookup {
        /// Matches the answer.
        req: u64,
        /// The name.
        name: String,
    },
    /// Answer to a [`OverlayMsg::Lookup`].
    LookupAns {
        /// From the lookup.
        req: u64,
        /// What this holder knows.
        answer: LookupAnswer,
    },
    /// Records for a holder (replication from the primary, hand-off when
    /// membership changes); acknowledged by `StoreAck`.
    Store {
        /// Matches the ack.
        req: u64,
        /// Claims, each verified by the receiver.
        claims: Vec<NameClaim>,
        /// Presence records, each verified by the receiver.
        presence: Vec<Presence>,
    },
    /// The receiver has the records of `Store { req, .. }`.
    StoreAck {
        /// From the store.
        req: u64,
    },
    /// A call signal for a client of the receiver; answered by `SignalAck`.
    Signal {
        /// Matches the ack (and deduplicates retransmissions).
        req: u64,
        /// The signal.
        env: SignalEnvelope,
    },
    /// The signal of `Signal { req, .. }` was handed to the callee or could
    /// not be.
    SignalAck {
        /// From the signal.
        req: u64,
        /// Why the signal was not handed over, if it was not.
        result: Result<(), Refusal>,
    },
    /// Answer a client's STUN Binding request from your own UDP address (the
    /// "change IP" half of NAT filtering discovery).
    StunDialBack {
        /// The client's STUN transaction id.
        transaction_id: [u8; 12],
        /// The client's address as the asking supernode saw it.
        mapped: SocketAddr,
        /// Where to send the answer.
        to: SocketAddr,
        /// PADDING size to echo.
        padding: u16,
    },
    /// Store a mail item as one of its mailbox's holders; answered by
    /// `MailPutAns`.
    MailPut {
        /// Matches the answer.
        req: u64,
        /// The item (verified by the receiver).
        item: crate::mail::MailItem,
    },
    /// Outcome of a [`OverlayMsg::MailPut`].
    MailPutAns {
        /// From the put.
        req: u64,
        /// `Err(reason)` when refused.
        result: Result<(), String>,
    },
    /// The recipient's fetch, forwarded by its supernode; answered by
    /// `MailItems` with the oldest page.
    MailFetch {
        /// Matches the answer.
        req: u64,
        /// Signed by the recipient.
        fetch: crate::mail::MailFetch,
    },
    /// A holder's page of a mailbox.
    MailItems {
        /// From the fetch.
        req: u64,
        /// Oldest first, one datagram's worth.
        items: Vec<crate::mail::MailItem>,
        /// More remain.
        more: bool,
    },
    /// The recipient's signed ack, forwarded: delete these items. Not answered.
    MailAck {
        /// Signed by the recipient.
        ack: crate::mail::MailAck,
    },
    /// A holder hands a mailbox's items to another (membership changed). Not
    /// answered: it is offered again at the next change, and the receiver
    /// deduplicates.
    MailCopy {
        /// Items, each verified by the receiver.
        items: Vec<crate::mail::MailItem>,
    },
}

/// One overlay datagram's plaintext: who sends it and what it says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverlayPacket {
    /// The sender's own membership entry (always alive: it is talking).
    pub from: Member,
    /// The body.
    pub msg: OverlayMsg,
}

/// Why overlay bytes did not decode.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum OverlayError {
    /// Not an overlay datagram, or a version we do not speak.
    #[error("not an overlay datagram")]
    NotOverlay,
    /// Too large to send or accept.
    #[error("overlay datagram of {0} bytes is too large")]
    TooLarge(usize),
    /// Authentication failed: not sealed by its sender for us in our network.
    #[error("overlay datagram failed authentication")]
    Unauthenticated,
    /// Seen before, or stamped too far from our clock.
    #[error("overlay datagram replayed or stale")]
    Replayed,
    /// Not sent: an answer larger than what came from an address that has
    /// not proved it receives our datagrams.
    #[error("answer would amplify toward an unvalidated address")]
    Amplification,
    /// From a stranger beyond the rate at which we derive new keys.
    #[error("too many new senders")]
    RateLimited,
    /// The plaintext is not a valid packet.
    #[error("malformed overlay packet: {0}")]
    Malformed(String),
}

/// Encode a packet's plaintext.
pub fn encode_packet(p: &OverlayPacket) -> Result<Vec<u8>, OverlayError> {
    postcard::to_allocvec(p).map_err(|e| OverlayError::Malformed(e.to_string()))
}

/// Decode a packet's plaintext; trailing bytes are an error.
pub fn decode_packet(bytes: &[u8]) -> Result<OverlayPacket, OverlayError> {
    let (p, rest) =
        postcard::take_from_bytes::<OverlayPacket>(bytes).map_err(|e| OverlayError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(OverlayError::Malformed(format!("{} trailing bytes", rest.len())));
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn packets_roundtrip_and_garbage_never_panics() {
        let m = Member {
            id: UserId([4; 32]),
            addr: "10.0.0.1:7000".parse().unwrap(),
            incarnation: 3,
            state: MemberState::Suspect,
            load: 40,
            nonce: 0x1234_5678,
        };
        let p = OverlayPacket { from: m, msg: OverlayMsg::Ping { seq: 9, updates: vec![m; 3] } };
        let b = encode_packet(&p).unwrap();
        assert_eq!(decode_packet(&b).unwrap(), p);
        let mut longer = b.clone();
        longer.push(0);
        assert!(matches!(decode_packet(&longer), Err(OverlayError::Malformed(_))));
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        for _ in 0..100_000 {
            let len = rng.gen_range(0..300);
            let b: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            let _ = decode_packet(&b);
        }
    }
}
