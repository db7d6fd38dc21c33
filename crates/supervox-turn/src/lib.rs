//! Sans-IO TURN server (RFC 8656) for supervox supernodes, and the client side
//! ([`TurnClient`]) a supervox client uses for its relay candidate.
//!
//! The crate owns no sockets and reads no clock: the driver (the SN daemon) feeds it bytes and
//! the current time, and carries out the [`Output`]s it polls.
//!
//! # Driver contract
//!
//! * **Client listeners** (UDP, TCP, TLS): pass every UDP datagram to
//!   [`TurnServer::handle_client`]. For each TCP/TLS connection keep a [`TcpFramer`], push bytes
//!   read from the stream and pass every frame it yields; close the connection on a
//!   [`FramingError`] and call [`TurnServer::handle_client_closed`] when it closes.
//! * **Relay sockets**: on [`Output::AllocateRelay`] bind a UDP socket on the relay IP of the
//!   requested family (an even port if asked) and call [`TurnServer::relay_allocated`] with its
//!   address or a [`RelayError`]. Pass every datagram received on it to
//!   [`TurnServer::handle_peer`]. Close it on [`Output::ReleaseRelay`].
//! * **Outputs**: after every input call, drain [`TurnServer::poll_output`]; send
//!   [`Output::ToClient`] on the listener/connection of that 5-tuple and [`Output::ToPeer`] from
//!   the relay socket bound to `relay_addr`.
//! * **Zero-copy data path** (optional, UDP clients): a driver may pass ChannelData datagrams
//!   to [`TurnServer::route_client_channel_data`] and peer datagrams to
//!   [`TurnServer::route_peer_in_place`], which apply the same checks and counters but return
//!   where to send instead of queuing a copy as an [`Output`].
//! * **Time**: call [`TurnServer::handle_timeout`] at [`TurnServer::poll_timeout`]. `now_ms` is
//!   milliseconds since the Unix epoch (credential expiry is checked against it).
//!
//! # Credentials
//!
//! Only clients signed in to the SN network get allocations: the SN mints short-lived
//! credentials with [`mint_credentials`] ("TURN REST API" style; coturn's `use-auth-secret`
//! accepts the same), and the server checks them against the shared secret.

#![forbid(unsafe_code)]

pub mod allocation;
pub mod auth;
mod builder;
pub mod client;
pub mod codec;
pub mod defaults;
mod handlers;
mod server;
pub mod tcp_framing;

pub use allocation::PeerPolicy;
pub use auth::{mint_credentials, parse_username, RestUsername};
pub use client::{TurnClient, TurnEvent};
pub use server::{AddressFamily, FiveTuple, Output, RelayError, RelayToken, Stats, TurnConfig, TurnServer};
pub use tcp_framing::{FramingError, TcpFramer};

/// How a TURN client and its server are connected, seen from either end (the client's
/// `TurnClient`, the server's sessions, and `supervox-core`'s relay choice, which calls it
/// `RelayTransport`). TCP and TLS are stream transports: the driver frames them with
/// [`TcpFramer`] (and terminates TLS, passing plaintext), ChannelData on them is padded to
/// 4 bytes and requests are not retransmitted. Ordered from the lightest (UDP, TCP, TLS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Transport {
    /// UDP datagrams.
    Udp,
    /// Plain TCP stream.
    Tcp,
    /// TLS over TCP.
    Tls,
}

impl Transport {
    /// Whether this is a byte-stream transport (TCP or TLS).
    pub fn is_stream(self) -> bool {
        !matches!(self, Transport::Udp)
    }

    /// `udp`, `tcp` or `tls`.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }
}

#[cfg(test)]
mod tests;
