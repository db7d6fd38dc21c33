//! A secure signalling link: Noise XX over a byte stream, framed messages,
//! identity binding and keepalive. Sans-IO: feed received bytes and the time,
//! take out bytes to write and events.
//!
//! After the three-message XX handshake each side sends [`Message::Hello`];
//! its Ed25519 `identity` must convert to the X25519 static key the handshake
//! authenticated, which binds the signalling identity to the Noise session.

use crate::identity::{noise_public_key, Identity};
use std::collections::VecDeque;
use std::net::SocketAddr;
use supervox_proto::frame::encode_frame;
use supervox_proto::{decode_message, encode_message, FrameDecoder, Message, Role, UserId};
use thiserror::Error;

/// Noise pattern for signalling links.
pub const LINK_NOISE_PARAMS: &str = "Noise_XX_25519_ChaChaPoly_BLAKE2s";
/// Send a ping when nothing was sent for this long.
pub const KEEPALIVE_MS: u64 = 25_000;
/// Drop the peer after this long without hearing anything (3 intervals).
pub const DEAD_AFTER_MS: u64 = 3 * KEEPALIVE_MS;
/// The handshake and hello must finish within this time.
pub const HANDSHAKE_TIMEOUT_MS: u64 = 10_000;
/// Our own keepalive on a link whose transport keeps itself alive (TCP
/// keepalive in the kernel, see [`Link::set_transport_keepalive`]): the
/// kernel's probes find a dead peer in the same time as [`DEAD_AFTER_MS`]
/// without waking the process; this slower ping still finds a peer whose
/// kernel answers but whose process hangs.
pub const TRANSPORT_KEEPALIVE_PING_MS: u64 = 300_000;
/// Most bytes queued for writing before the peer counts as too slow.
pub const MAX_OUTBOX_BYTES: usize = 4 * 1024 * 1024;

/// Why a link was closed. Every variant names a reason for the log.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum LinkError {
    /// Framing violation (oversized or empty frame).
    #[error("framing: {0}")]
    Frame(#[from] supervox_proto::FrameError),
    /// The Noise handshake failed or a transport message did not decrypt.
    #[error("noise: {0}")]
    Noise(String),
    /// A message did not decode.
    #[error("bad message: {0}")]
    Decode(#[from] supervox_proto::DecodeError),
    /// The peer broke the link protocol (e.g. no Hello first, wrong identity).
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The peer was silent for too long.
    #[error("peer silent for {0} ms")]
    Timeout(u64),
    /// The peer does not read fast enough.
    #[error("peer too slow: {0} bytes queued")]
    SlowPeer(usize),
}

/// What the link reports to its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
// Short-lived queue items: boxing the message would cost an allocation
// per message for no memory saved.
#[allow(clippy::large_enum_variant)]
pub enum LinkEvent {
    /// Handshake done and Hello verified.
    Established {
        /// Peer's role.
        role: Role,
        /// Peer's authenticated identity.
        identity: UserId,
        /// Peer's advertised address (supernodes).
        advertise: Option<SocketAddr>,
        /// Peer's software.
        agent: String,
    },
    /// A message from an established peer (keepalives are handled inside).
    Message(Message),
}

enum State {
    Handshake(Box<snow::HandshakeState>),
    AwaitHello(Box<snow::TransportState>),
    Open(Box<snow::TransportState>),
    Closed,
}

/// One secure signalling link.
pub struct Link {
    state: State,
    decoder: FrameDecoder,
    outbox: VecDeque<Vec<u8>>,
    outbox_bytes: usize,
    /// Sent once the handshake completes, then dropped (an idle link holds
    /// no copy).
    hello: Option<Box<Message>>,
    peer: Option<UserId>,
    started_ms: u64,
    last_rx_ms: u64,
    last_tx_ms: u64,
    ping_nonce: u64,
    /// Ping after this long without sending; the peer is dead after three times it.
    keepalive_ms: u32,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Link(peer={:?})", self.peer)
    }
}

impl Link {
    /// Start a link as the dialling side; the first handshake message is queued.
    pub fn initiator(identity: &Identity, hello: Message, now_ms: u64) -> Result<Self, LinkError> {
        let hs = handshake(identity, true)?;
        let mut link = Self::new(hs, hello, now_ms);
        link.write_handshake()?;
        Ok(link)
    }

    /// Start a link as the accepting side.
    pub fn responder(identity: &Identity, hello: Message, now_ms: u64) -> Result<Self, LinkError> {
        let hs = handshake(identity, false)?;
        Ok(Self::new(hs, hello, now_ms))
    }

    fn new(hs: snow::HandshakeState, hello: Message, now_ms: u64) -> Self {
        Self {
            state: State::Handshake(Box::new(hs)),
            // Until the peer is authenticated, frames are handshake-sized.
            decoder: FrameDecoder::with_max_len(supervox_proto::MAX_PREAUTH_FRAME_LEN),
            outbox: VecDeque::new(),
            outbox_bytes: 0,
            hello: Some(Box::new(hello)),
            peer: None,
            started_ms: now_ms,
            last_rx_ms: now_ms,
            last_tx_ms: now_ms,
            ping_nonce: 0,
            keepalive_ms: KEEPALIVE_MS as u32,
        }
    }

    /// The transport keeps the connection alive and reports a dead peer
    /// itself (the driver enabled TCP keepalive with the same detection
    /// time): ping only every [`TRANSPORT_KEEPALIVE_PING_MS`], so an idle
    /// link costs no wakeups. Without this, [`KEEPALIVE_MS`] and
    /// [`DEAD_AFTER_MS`] apply.
    pub fn set_transport_keepalive(&mut self) {
        self.keepalive_ms = TRANSPORT_KEEPALIVE_PING_MS as u32;
    }

    fn keepalive(&self) -> u64 {
        u64::from(self.keepalive_ms)
    }

    /// The peer's identity once established.
    pub fn peer(&self) -> Option<UserId> {
        self.peer
    }

    /// True once the handshake and Hello exchange are done.
    pub fn is_open(&self) -> bool {
        matches!(self.state, State::Open(_))
    }

    /// Feed bytes read from the stream. Returns the events they produced; an
    /// error means the link must be closed (the reason is in the error).
    pub fn handle_bytes(&mut self, bytes: &[u8], now_ms: u64) -> Result<Vec<LinkEvent>, LinkError> {
        self.last_rx_ms = now_ms;
        self.decoder.push(bytes);
        let mut events = Vec::new();
        while let Some(frame) = self.decoder.next_frame().inspect_err(|_| self.state = State::Closed)? {
            if let Err(e) = self.handle_frame(&frame, &mut events) {
                self.state = State::Closed;
                return Err(e);
            }
        }
        // Between messages an idle link keeps no receive buffer.
        self.decoder.release();
        Ok(events)
    }

    fn handle_frame(&mut self, frame: &[u8], events: &mut Vec<LinkEvent>) -> Result<(), LinkError> {
        // The plaintext is never longer than the frame (Noise adds a tag).
        let mut buf = vec![0u8; frame.len()];
        match std::mem::replace(&mut self.state, State::Closed) {
            State::Handshake(mut hs) => {
                hs.read_message(frame, &mut buf).map_err(noise)?;
                self.state = State::Handshake(hs);
                self.advance_handshake()
            }
            State::AwaitHello(mut ts) => {
                let n = ts.read_message(frame, &mut buf).map_err(noise)?;
                let msg = decode_message(&buf[..n])?;
                let Message::Hello { role, identity, advertise, agent } = msg else {
                    return Err(LinkError::Protocol("first message was not Hello".into()));
                };
                let expected = noise_public_key(&identity)
                    .map_err(|_| LinkError::Protocol("hello identity is not a valid key".into()))?;
                if ts.get_remote_static() != Some(&expected[..]) {
                    return Err(LinkError::Protocol("hello identity does not match the Noise key".into()));
                }
                self.peer = Some(identity);
                self.state = State::Open(ts);
                self.decoder.set_max_len(supervox_proto::MAX_FRAME_LEN);
                events.push(LinkEvent::Established { role, identity, advertise, agent });
                Ok(())
            }
            State::Open(mut ts) => {
                let n = ts.read_message(frame, &mut buf).map_err(noise)?;
                let msg = decode_message(&buf[..n]);
                self.state = State::Open(ts);
                match msg? {
                    Message::Ping { nonce } => self.send(&Message::Pong { nonce }),
                    Message::Pong { .. } => Ok(()),
                    Message::Hello { .. } => Err(LinkError::Protocol("second Hello".into())),
                    other => {
                        events.push(LinkEvent::Message(other));
                        Ok(())
                    }
                }
            }
            State::Closed => Err(LinkError::Protocol("link closed".into())),
        }
    }

    /// Write our next handshake message if it is our turn; switch to
    /// transport mode (and send Hello) when the handshake completes.
    fn advance_handshake(&mut self) -> Result<(), LinkError> {
        let State::Handshake(hs) = &self.state else {
            return Ok(());
        };
        if hs.is_my_turn() && !hs.is_handshake_finished() {
            self.write_handshake()?;
        }
        let State::Handshake(hs) = &self.state else {
            return Ok(());
        };
        if hs.is_handshake_finished() {
            let State::Handshake(hs) = std::mem::replace(&mut self.state, State::Closed) else {
                unreachable!("checked above")
            };
            let ts = hs.into_transport_mode().map_err(noise)?;
            self.state = State::AwaitHello(Box::new(ts));
            if let Some(hello) = self.hello.take() {
                self.send_raw(&hello)?;
            }
        }
        Ok(())
    }

    fn write_handshake(&mut self) -> Result<(), LinkError> {
        let State::Handshake(hs) = &mut self.state else {
            return Ok(());
        };
        let mut buf = vec![0u8; 1024];
        let n = hs.write_message(&[], &mut buf).map_err(noise)?;
        let finished = hs.is_handshake_finished();
        self.queue(&buf[..n]);
        // XX: the initiator's third message finishes the handshake.
        if finished {
            self.advance_handshake()?;
        }
        Ok(())
    }

    /// Send a message to an established peer.
    pub fn send(&mut self, msg: &Message) -> Result<(), LinkError> {
        if !self.is_open() {
            return Err(LinkError::Protocol("link not open".into()));
        }
        self.send_raw(msg)
    }

    fn send_raw(&mut self, msg: &Message) -> Result<(), LinkError> {
        let plain = encode_message(msg)?;
        let ts = match &mut self.state {
            State::AwaitHello(ts) | State::Open(ts) => ts,
            _ => return Err(LinkError::Protocol("no transport keys yet".into())),
        };
        let mut buf = vec![0u8; plain.len() + 16];
        let n = ts.write_message(&plain, &mut buf).map_err(noise)?;
        self.queue(&buf[..n]);
        if self.outbox_bytes > MAX_OUTBOX_BYTES {
            self.state = State::Closed;
            return Err(LinkError::SlowPeer(self.outbox_bytes));
        }
        Ok(())
    }

    fn queue(&mut self, body: &[u8]) {
        let mut framed = Vec::with_capacity(body.len() + 4);
        encode_frame(body, &mut framed);
        self.outbox_bytes += framed.len();
        self.outbox.push_back(framed);
    }

    /// Next bytes to write to the stream.
    pub fn poll_transmit(&mut self, now_ms: u64) -> Option<Vec<u8>> {
        let b = self.outbox.pop_front()?;
        self.outbox_bytes -= b.len();
        if self.outbox.is_empty() {
            // Give back the queue's slots: most links are idle most of the time.
            self.outbox = VecDeque::new();
        }
        self.last_tx_ms = now_ms;
        Some(b)
    }

    /// When [`Link::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> u64 {
        if self.is_open() {
            (self.last_tx_ms + self.keepalive()).min(self.last_rx_ms + 3 * self.keepalive())
        } else {
            self.started_ms + HANDSHAKE_TIMEOUT_MS
        }
    }

    /// Drive keepalive and liveness: sends a ping when idle, fails when the
    /// peer has been silent for [`DEAD_AFTER_MS`] or never finished the
    /// handshake.
    pub fn handle_timeout(&mut self, now_ms: u64) -> Result<(), LinkError> {
        if !self.is_open() {
            if now_ms >= self.started_ms + HANDSHAKE_TIMEOUT_MS {
                self.state = State::Closed;
                return Err(LinkError::Timeout(now_ms - self.started_ms));
            }
            return Ok(());
        }
        if now_ms >= self.last_rx_ms + 3 * self.keepalive() {
            self.state = State::Closed;
            return Err(LinkError::Timeout(now_ms - self.last_rx_ms));
        }
        if now_ms >= self.last_tx_ms + self.keepalive() {
            self.ping_nonce += 1;
            self.send(&Message::Ping { nonce: self.ping_nonce })?;
            self.last_tx_ms = now_ms;
        }
        Ok(())
    }
}

fn handshake(identity: &Identity, initiator: bool) -> Result<snow::HandshakeState, LinkError> {
    let params = LINK_NOISE_PARAMS.parse().map_err(noise)?;
    let key = identity.noise_private_key();
    let b = crate::noise::builder(params).local_private_key(&key);
    if initiator { b.build_initiator() } else { b.build_responder() }.map_err(noise)
}

fn noise(e: snow::Error) -> LinkError {
    LinkError::Noise(e.to_string())
}

#[cfg(test)]
mod tests;
