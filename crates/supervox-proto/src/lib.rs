//! supervox wire formats.
//!
//! Everything that crosses a socket is defined here and nowhere else: the
//! length-prefixed frame, the versioned [`Message`] enum carried inside Noise
//! transport messages, the signed directory records and the call signalling
//! bodies. Decoding never panics and never trusts a length it has not checked.

pub mod call;
pub mod frame;
pub mod mail;
pub mod message;
pub mod overlay;
pub mod record;
pub mod refusal;

pub use frame::{FrameDecoder, FrameError, MAX_FRAME_LEN, MAX_PREAUTH_FRAME_LEN};
pub use message::{
    decode_message, encode_message, CallId, CallSignal, Candidate, CandidateKind, DecodeError, LookupAnswer, Message,
    NatBehaviour, NatReport, RelayTls, Role, SignalEnvelope, Transport, MAX_MESSAGE_LEN, MAX_TLS_RELAYS,
    PROTOCOL_VERSION,
};
pub use overlay::{Member, MemberState, OverlayMsg, OverlayPacket};
pub use record::{NameClaim, Presence, RecordError, UserId};
pub use refusal::{Claimed, Refusal};
