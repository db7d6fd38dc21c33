//! STUN for supervox, sans-IO: no sockets, no clocks (time comes in as `now_ms: u64`).
//!
//! - [`codec`]: a strict RFC 8489 message codec (XOR-MAPPED-ADDRESS, FINGERPRINT,
//!   MESSAGE-INTEGRITY, and the RFC 5780 attributes CHANGE-REQUEST, RESPONSE-ORIGIN,
//!   OTHER-ADDRESS).
//! - [`server`]: the Binding server every supernode runs on its UDP port, including the
//!   "dial-back" that lets a *peer* supernode answer a CHANGE-REQUEST.
//! - [`limit`]: [`PrefixLimiter`], the answer rate per destination prefix that caps
//!   reflection toward a spoofed victim.
//! - [`probe`]: [`NatProbe`], NAT mapping and filtering discovery against two supernodes.
//!
//! See the crate README for the dial-back mechanism and why we do not use `stun-proto`.

pub mod codec;
pub mod limit;
pub mod probe;
pub mod server;

pub use codec::{is_stun, Class, Message, TransactionId, MAGIC_COOKIE};
pub use limit::PrefixLimiter;
pub use probe::{NatBehaviour, NatProbe, ProbeConfig, Reachability};
pub use server::{build_binding_success, handle_binding, BindingServer, DialBack, Reply, MAX_PADDING};

/// Why a datagram was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StunError {
    /// Not a STUN message (too short, leading bits set, or no magic cookie).
    #[error("not a STUN message")]
    NotStun,
    /// A STUN header, but the body is malformed.
    #[error("malformed STUN message: {0}")]
    Malformed(&'static str),
    /// FINGERPRINT present and wrong: RFC 8489 §7.3 says to treat it as not STUN.
    #[error("STUN FINGERPRINT mismatch")]
    BadFingerprint,
    /// MESSAGE-INTEGRITY present and wrong.
    #[error("STUN MESSAGE-INTEGRITY mismatch")]
    BadIntegrity,
    /// A well-formed STUN message that the Binding server does not answer (a response,
    /// an indication, or a method other than Binding, e.g. TURN's): route it elsewhere.
    #[error("not a Binding request (class {class:?}, method {method:#05x})")]
    NotBindingRequest {
        /// The message class.
        class: Class,
        /// The method.
        method: u16,
    },
    /// A dial-back order that this supernode must not execute.
    #[error("refused dial-back: {0}")]
    BadDialBack(&'static str),
}
