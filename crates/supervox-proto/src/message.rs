//! The versioned message enum carried inside Noise transport messages.
//!
//! Plaintext layout: one version byte ([`PROTOCOL_VERSION`]) followed by the
//! postcard encoding of a [`Message`]. A peer speaking another version, or
//! sending bytes that do not decode, gets its connection closed with a reason.

use crate::record::{NameClaim, Presence, UserId};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;
use thiserror::Error;

/// Version byte that prefixes every message.
pub const PROTOCOL_VERSION: u8 = 3;

/// Largest plaintext message: one Noise message minus its 16-byte tag.
pub const MAX_MESSAGE_LEN: usize = 65_535 - 16;

/// What a peer is on the signalling network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// An ordinary node attached to one supernode.
    Client,
    /// A supernode: serves clients, peers with other supernodes.
    Supernode,
}

/// Random 128-bit call identifier chosen by the caller.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CallId(pub [u8; 16]);

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CallId({})", hex::encode(&self.0[..4]))
    }
}

/// How a candidate address was learnt (ICE terminology, RFC 8445).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CandidateKind {
    /// An address of a local interface.
    Host,
    /// The address a NAT maps us to, learnt by STUN.
    ServerReflexive,
    /// An address allocated on a relay.
    Relay,
}

/// Transport of a candidate: UDP, or one of RFC 6544's three TCP candidate
/// types (the `tcptype` attribute folded in; variants only ever get appended).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Transport {
    /// Datagrams.
    Udp,
    /// TCP, passive (`tcptype passive`): the owner listens at this address and
    /// the peer connects to it.
    TcpPassive,
    /// TCP, active (`tcptype active`): the owner connects out; the port is the
    /// discard port 9 and is never connected to.
    TcpActive,
    /// TCP, simultaneous open (`tcptype so`): both sides connect to each other
    /// at once. Decoded, not gathered or used yet.
    TcpSo,
}

impl Transport {
    /// A TCP candidate of any type.
    pub fn is_tcp(self) -> bool {
        !matches!(self, Transport::Udp)
    }
}

/// A transport address a peer may be reached at for media.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Candidate {
    /// How it was learnt.
    pub kind: CandidateKind,
    /// UDP or TCP.
    pub transport: Transport,
    /// The address.
    pub addr: SocketAddr,
    /// ICE priority: higher is tried and preferred first.
    pub priority: u32,
}

/// A NAT behaviour as a client's probe found it (RFC 4787 terms): for
/// mapping, whether the public address depends on the destination; for
/// filtering, which sources may send in. The one definition: `supervox-stun`'s
/// probe reports it too. On the wire (postcard) it is the variant index, so
/// variants keep their order; serde's names (JSON) are the kebab-case ones
/// [`NatBehaviour::as_str`] gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NatBehaviour {
    /// Not determined (no probe yet, or UDP blocked).
    Unknown,
    /// Independent of the remote endpoint ("cone" mapping, "full cone" filter).
    EndpointIndependent,
    /// Depends on the remote IP address.
    AddressDependent,
    /// Depends on the remote IP address and port ("symmetric" mapping,
    /// "port-restricted" filter).
    AddressAndPortDependent,
}

impl NatBehaviour {
    /// The JSON name: `endpoint-independent`, `address-dependent`,
    /// `address-and-port-dependent` or `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            NatBehaviour::EndpointIndependent => "endpoint-independent",
            NatBehaviour::AddressDependent => "address-dependent",
            NatBehaviour::AddressAndPortDependent => "address-and-port-dependent",
            NatBehaviour::Unknown => "unknown",
        }
    }
}

impl fmt::Display for NatBehaviour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the sender's NAT does to UDP, for port prediction when one side
/// maps per destination (docs/PROTOCOL.md §4.6). Sent in [`CallSignal::Nat`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NatReport {
    /// Mapping behaviour of the sender's NAT.
    pub mapping: NatBehaviour,
    /// Filtering behaviour of the sender's NAT.
    pub filtering: NatBehaviour,
    /// The sender's media socket as its supernodes saw it: its own supernode's
    /// view first, then a second supernode's. Two different ports here give
    /// the allocation step of a sequential NAT. Receivers use the first two.
    pub mapped: Vec<SocketAddr>,
    /// Spare UDP sockets the sender has opened and sent checks from, towards
    /// the receiver's mapped address (0: none yet). Non-zero tells the
    /// receiver to start spraying checks at the sender's public address.
    pub spare_sockets: u16,
}

/// What a supernode knows of a name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LookupAnswer {
    /// Claimed and online.
    Online {
        /// The owner's claim.
        claim: NameClaim,
        /// The owner's live presence.
        presence: Presence,
    },
    /// Claimed, but no live presence.
    Offline {
        /// The owner's claim.
        claim: NameClaim,
    },
    /// Nobody holds this name.
    Unknown,
}

/// A call signalling message routed by supernodes between two users. The
/// handshake bytes are an end-to-end Noise handshake: supernodes see them but
/// cannot read or alter the media keys they lead to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignalEnvelope {
    /// The call.
    pub call_id: CallId,
    /// Sender.
    pub from: UserId,
    /// Recipient.
    pub to: UserId,
    /// The supernode the recipient is attached to (from its presence record).
    pub to_supernode: SocketAddr,
    /// What is being said.
    pub body: CallSignal,
}

/// Call signalling bodies; see the call state machine in `supervox-core`.
/// Only [`CallSignal::Invite`]'s presence and name are readable by the
/// supernodes; everything else is end-to-end: inside the Noise handshake,
/// sealed under the call keys, or signed by the sender (crate::call).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CallSignal {
    /// Caller → callee: please ring. Carries Noise IK message 1, whose
    /// prologue binds the call id, both user ids and `sent_ms`, and whose
    /// payload is the caller's [`crate::call::CallOffer`].
    Invite {
        /// Caller's name (also inside `caller_presence`).
        from_name: String,
        /// Caller's signed presence, so the callee can route answers back.
        caller_presence: Presence,
        /// The caller's clock when it sent this (unix ms): a message 1 older
        /// than 30 s is refused.
        sent_ms: u64,
        /// Noise IK handshake message 1.
        handshake: Vec<u8>,
    },
    /// Callee → caller: Noise IK message 2 (both sides now hold the call
    /// keys) with the callee's first sealed signal (ringing, or a refusal).
    Respond {
        /// Noise IK handshake message 2.
        handshake: Vec<u8>,
        /// Sealed under the new keys.
        first: crate::call::SealedSignal,
    },
    /// Either side, once it holds the call keys.
    Sealed(crate::call::SealedSignal),
    /// Either side, before it holds the call keys: signed by its identity key.
    Signed {
        /// What is said.
        body: crate::call::SignedSignal,
        /// Ed25519 over [`crate::call::signed_signal_payload`].
        signature: ed25519_dalek::Signature,
    },
    /// Not a call: a peer message (chat, receipts, contact requests),
    /// routed exactly like call signals (the envelope's `call_id` is the
    /// message's random 128-bit wire id, `SignalFailed` answers it when it
    /// cannot be delivered). The bytes are end-to-end sealed to the
    /// recipient (HPKE, see `supervox_core::social`): opaque to supernodes.
    Peer(Vec<u8>),
}

/// Every message on a signalling link (client ↔ SN; supernodes talk to
/// each other in overlay datagrams, see [`crate::overlay`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// First message of either side after the Noise handshake. `identity`
    /// must match the Noise static key the handshake authenticated.
    Hello {
        /// Sender's role.
        role: Role,
        /// Sender's Ed25519 identity.
        identity: UserId,
        /// For supernodes: the address others should dial.
        advertise: Option<SocketAddr>,
        /// Software name and version, for logs.
        agent: String,
    },
    /// SN → client: signed in.
    Welcome {
        /// The SN's advertised address (what presence records name).
        supernode: SocketAddr,
        /// The client's address as the SN saw it.
        observed: SocketAddr,
        /// Other supernodes, for the client's host cache.
        supernodes: Vec<SocketAddr>,
        /// Their advertised loads (percent of capacity), index by index with
        /// `supernodes` (may be shorter). Added within version 2.
        loads: Vec<u8>,
    },
    /// SN → client: full or leaving; try these instead.
    Redirect {
        /// Where to go.
        supernodes: Vec<SocketAddr>,
        /// Why.
        reason: String,
        /// Their advertised loads (percent), index by index with
        /// `supernodes` (may be shorter). Added within version 2.
        loads: Vec<u8>,
    },
    /// Keepalive probe.
    Ping {
        /// Echoed in the pong.
        nonce: u64,
    },
    /// Keepalive answer.
    Pong {
        /// From the ping.
        nonce: u64,
    },
    /// Client → SN: claim a name.
    Claim {
        /// The signed claim.
        claim: NameClaim,
    },
    /// SN → client: outcome of a claim.
    ClaimResult {
        /// The name.
        name: String,
        /// `Err(refusal)` when refused, typed so the client can tell a
        /// final answer (taken) from one worth retrying (no quorum).
        result: Result<(), crate::Refusal>,
    },
    /// Client → SN: I am online here.
    Publish {
        /// The signed record.
        presence: Presence,
    },
    /// SN → client: outcome of a publish.
    PublishResult {
        /// `Err(reason)` when refused.
        result: Result<(), String>,
    },
    /// Client → SN, or SN → SN: who is this name?
    Lookup {
        /// Matches the answer.
        req_id: u64,
        /// The name.
        name: String,
    },
    /// Answer to [`Message::Lookup`].
    LookupResult {
        /// From the lookup.
        req_id: u64,
        /// What is known.
        answer: LookupAnswer,
    },
    /// Call signalling, client↔SN and SN↔SN.
    Signal(SignalEnvelope),
    /// SN → client: a signal could not be delivered.
    SignalFailed {
        /// The call.
        call_id: CallId,
        /// Why.
        reason: String,
    },
    /// Either side: something was refused; the connection may be closed next.
    Error {
        /// Why.
        reason: String,
    },
    /// SN → client: short-lived TURN credentials for this supernode's relay
    /// (TURN REST API style), given only to signed-in clients.
    RelayCredentials {
        /// TURN username (`<expiry-unix-secs>:<user-id-hex>`).
        username: String,
        /// TURN password (base64 HMAC of the username under the relay secret).
        password: String,
        /// When they stop working (unix ms).
        expires_ms: u64,
        /// TURN servers they are good for (UDP; over TCP the address the client dialled).
        relays: Vec<SocketAddr>,
        /// The supernode's TURN-over-TLS listeners and the certificate they show, if it has any.
        tls: Option<RelayTls>,
    },
    /// Client → SN: I can serve as a supernode at `advertise` (listening
    /// there on TCP and UDP, public: the address the SN sees me at).
    Volunteer {
        /// Where I would listen.
        advertise: SocketAddr,
    },
    /// SN → client: the network needs you: become a supernode with this
    /// network key, joining through these seeds.
    Promote {
        /// The overlay's network key.
        network_key: [u8; 32],
        /// Members to join through.
        seeds: Vec<SocketAddr>,
        /// Leading zero bits of the network's member proofs (the promoted
        /// supernode solves its own before it joins).
        difficulty: u8,
    },
    /// Client → SN: leave this item in its recipient's mailbox (§8).
    MailPut {
        /// Signed by the client.
        item: crate::mail::MailItem,
    },
    /// SN → client: the outcome of a [`Message::MailPut`].
    MailPutResult {
        /// The item.
        id: crate::mail::MailId,
        /// `Ok`: a majority of the mailbox's holders stored it.
        result: Result<(), String>,
    },
    /// Client → SN: send me my mail (signed by me).
    MailFetch {
        /// The signed request.
        fetch: crate::mail::MailFetch,
    },
    /// SN → client: items from the mailbox (several messages per fetch; the
    /// last one has `done`).
    Mail {
        /// Verified items, each sent once per fetch.
        items: Vec<crate::mail::MailItem>,
        /// The fetch is over.
        done: bool,
        /// A holder had more than one page: fetch again after acking.
        more: bool,
    },
    /// Client → SN: I have these items; delete them.
    MailAck {
        /// Signed by the client.
        ack: crate::mail::MailAck,
    },
}

/// Where a supernode serves TURN over TLS (`--relay-tls-listen`), and how a client knows it
/// is talking to that supernode: the certificate is self-signed, so clients pin its hash
/// instead of checking a CA chain. It arrives over the authenticated, encrypted link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayTls {
    /// SHA-256 of the DER certificate the TLS listeners present.
    pub fingerprint: [u8; 32],
    /// TLS listen addresses, as reachable by clients (e.g. port 443).
    pub relays: Vec<SocketAddr>,
}

/// TLS relay addresses a client considers at most (a longer list is cut, not refused).
pub const MAX_TLS_RELAYS: usize = 8;

/// Why bytes did not decode into a [`Message`].
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Empty plaintext.
    #[error("empty message")]
    Empty,
    /// A version we do not speak.
    #[error("unsupported protocol version {0} (we speak {PROTOCOL_VERSION})")]
    Version(u8),
    /// The body is not a valid message.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The encoding is larger than one Noise message can carry.
    #[error("message of {0} bytes is too large")]
    TooLarge(usize),
}

/// Encode a message with its version prefix.
pub fn encode_message(msg: &Message) -> Result<Vec<u8>, DecodeError> {
    let mut out = vec![PROTOCOL_VERSION];
    let body = postcard::to_allocvec(msg).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    out.extend_from_slice(&body);
    if out.len() > MAX_MESSAGE_LEN {
        return Err(DecodeError::TooLarge(out.len()));
    }
    Ok(out)
}

/// Decode a versioned message. Trailing bytes are an error: a message is
/// exactly one value.
pub fn decode_message(bytes: &[u8]) -> Result<Message, DecodeError> {
    let (&version, body) = bytes.split_first().ok_or(DecodeError::Empty)?;
    if version != PROTOCOL_VERSION {
        return Err(DecodeError::Version(version));
    }
    let (msg, rest) = postcard::take_from_bytes::<Message>(body).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(DecodeError::Malformed(format!("{} trailing bytes", rest.len())));
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use rand::{Rng, SeedableRng};

    /// The wire form of a NAT behaviour is its variant index, as before the stun probe
    /// shared this enum (its own had another order): a reordering would break `Nat` signals
    /// between versions. The names are the status JSON's.
    #[test]
    fn nat_behaviour_encoding_is_pinned() {
        use NatBehaviour::*;
        for (b, index, name) in [
            (Unknown, 0u8, "unknown"),
            (EndpointIndependent, 1, "endpoint-independent"),
            (AddressDependent, 2, "address-dependent"),
            (AddressAndPortDependent, 3, "address-and-port-dependent"),
        ] {
            assert_eq!(postcard::to_allocvec(&b).unwrap(), vec![index], "{b:?}");
            assert_eq!(postcard::from_bytes::<NatBehaviour>(&[index]).unwrap(), b);
            assert_eq!(b.as_str(), name);
            assert_eq!(b.to_string(), name);
        }
        assert!(postcard::from_bytes::<NatBehaviour>(&[4]).is_err());
    }

    #[test]
    fn roundtrip() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let sn: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let msgs = vec![
            Message::Ping { nonce: 3 },
            Message::Claim { claim: NameClaim::sign(&key, "bob", 1).unwrap() },
            Message::Signal(SignalEnvelope {
                call_id: CallId([1; 16]),
                from: UserId([2; 32]),
                to: UserId([3; 32]),
                to_supernode: sn,
                body: CallSignal::Invite {
                    from_name: "bob".into(),
                    caller_presence: Presence::sign(&key, "bob", sn, 1, 5).unwrap(),
                    sent_ms: 77,
                    handshake: vec![9; 96],
                },
            }),
            Message::ClaimResult { name: "x".into(), result: Err(crate::Refusal::Taken) },
            Message::RelayCredentials {
                username: "1:ab".into(),
                password: "pw".into(),
                expires_ms: 5,
                relays: vec![sn],
                tls: Some(RelayTls { fingerprint: [0xAB; 32], relays: vec![sn, "[::1]:443".parse().unwrap()] }),
            },
            Message::RelayCredentials {
                username: "u".into(),
                password: "p".into(),
                expires_ms: 0,
                relays: vec![],
                tls: None,
            },
            Message::Signal(SignalEnvelope {
                call_id: CallId([1; 16]),
                from: UserId([2; 32]),
                to: UserId([3; 32]),
                to_supernode: sn,
                body: CallSignal::Sealed(crate::call::SealedSignal { seq: 3, ciphertext: vec![1, 2, 3] }),
            }),
        ];
        for m in msgs {
            assert_eq!(decode_message(&encode_message(&m).unwrap()).unwrap(), m);
        }
    }

    #[test]
    fn signal_bodies_have_their_variant_indices_and_bad_bodies_are_refused() {
        let env = |body| {
            Message::Signal(SignalEnvelope {
                call_id: CallId([1; 16]),
                from: UserId([2; 32]),
                to: UserId([3; 32]),
                to_supernode: "127.0.0.1:9".parse().unwrap(),
                body,
            })
        };
        let b =
            encode_message(&env(CallSignal::Sealed(crate::call::SealedSignal { seq: 1, ciphertext: vec![] }))).unwrap();
        // version, Signal = 13, call id, from, to, to_supernode (00 + 4 + varint 9), body.
        let body = &b[1 + 1 + 16 + 32 + 32 + 6..];
        assert_eq!(body, [2, 1, 0], "Sealed = 2, seq 1, no ciphertext");
        // Peer = 4 (appended within version 2): length 1, byte 0.
        let mut m = b[..b.len() - 3].to_vec();
        m.extend_from_slice(&[4, 1, 0]);
        assert!(
            matches!(decode_message(&m), Ok(Message::Signal(SignalEnvelope { body: CallSignal::Peer(p), .. })) if p == [0])
        );
        // An unknown signal index, or a cut body, is malformed (never a panic).
        for bad in [[5, 1, 0], [9, 1, 0]] {
            let mut m = b[..b.len() - 3].to_vec();
            m.extend_from_slice(&bad);
            assert!(matches!(decode_message(&m), Err(DecodeError::Malformed(_))));
        }
        assert!(matches!(decode_message(&b[..b.len() - 1]), Err(DecodeError::Malformed(_))));
    }

    #[test]
    fn tcp_candidates_carry_their_type_in_the_transport_byte_and_unknown_types_are_refused() {
        let addr: SocketAddr = "10.0.0.1:9".parse().unwrap();
        let mut c = Candidate { kind: CandidateKind::Host, transport: Transport::TcpActive, addr, priority: 5 };
        // kind, transport, SocketAddr (IPv4 tag, octets, port), priority.
        let bytes = postcard::to_allocvec(&c).unwrap();
        assert_eq!(bytes, [0, 2, 0, 10, 0, 0, 1, 9, 5]);
        for (t, b) in
            [(Transport::Udp, 0), (Transport::TcpPassive, 1), (Transport::TcpActive, 2), (Transport::TcpSo, 3)]
        {
            c.transport = t;
            assert_eq!(postcard::to_allocvec(&c).unwrap()[1], b);
            assert_eq!(t.is_tcp(), b != 0);
        }
        let mut bad = bytes.clone();
        bad[1] = 4;
        assert!(postcard::from_bytes::<Candidate>(&bad).is_err());
    }

    #[test]
    fn rejects_version_and_trailing() {
        let mut b = encode_message(&Message::Ping { nonce: 1 }).unwrap();
        b[0] = 9;
        assert_eq!(decode_message(&b), Err(DecodeError::Version(9)));
        let mut b = encode_message(&Message::Ping { nonce: 1 }).unwrap();
        b.push(0);
        assert!(matches!(decode_message(&b), Err(DecodeError::Malformed(_))));
        assert_eq!(decode_message(&[]), Err(DecodeError::Empty));
    }

    #[test]
    fn relay_credentials_with_tls_have_a_fixed_layout_and_bad_ones_are_refused() {
        let m = Message::RelayCredentials {
            username: "u".into(),
            password: "p".into(),
            expires_ms: 1,
            relays: vec![],
            tls: Some(RelayTls { fingerprint: [7; 32], relays: vec!["127.0.0.1:443".parse().unwrap()] }),
        };
        let b = encode_message(&m).unwrap();
        // version, variant 14, "u", "p", 1, no UDP relays, Some, 32 raw bytes, one address.
        let mut want = vec![PROTOCOL_VERSION, 14, 1, b'u', 1, b'p', 1, 0, 1];
        want.extend_from_slice(&[7; 32]);
        want.extend_from_slice(&[1, 0, 127, 0, 0, 1, 0xbb, 0x03]);
        assert_eq!(b, want);
        // Every truncation, a short fingerprint, a bad option tag, and a huge claimed list length fail cleanly.
        for n in 0..b.len() {
            assert!(decode_message(&b[..n]).is_err(), "{n} bytes decoded");
        }
        let mut bad_tag = b.clone();
        bad_tag[8] = 2;
        assert!(matches!(decode_message(&bad_tag), Err(DecodeError::Malformed(_))));
        let mut huge = b[..9 + 32].to_vec();
        huge.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert!(matches!(decode_message(&huge), Err(DecodeError::Malformed(_))));
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for _ in 0..200_000 {
            let len = rng.gen_range(0..200);
            let mut b: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            if !b.is_empty() {
                b[0] = PROTOCOL_VERSION;
            }
            let _ = decode_message(&b);
        }
    }
}
