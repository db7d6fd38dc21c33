//! Test harness shared by the server unit tests.

use std::net::SocketAddr;

use crate::auth::{long_term_key, mint_credentials};
use crate::codec::{attr, method, Class, IntegrityKind, Message, MessageBuilder};
use crate::{FiveTuple, Output, RelayError, Transport, TurnConfig, TurnServer};

mod abuse;
mod client;
mod methods;

pub(crate) const SECRET: &[u8] = b"test-secret";
pub(crate) const REALM: &str = "supervox.test";
/// A fixed wall-clock "now" (ms since the epoch).
pub(crate) const T0: u64 = 1_700_000_000_000;
pub(crate) const PEER: &str = "192.0.2.50:4000";

pub(crate) fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

/// A server plus a fake driver that hands out relay addresses and records outputs.
pub(crate) struct Harness {
    pub s: TurnServer,
    next_port: u16,
    /// When set, AllocateRelay is answered with this error.
    pub relay_error: Option<RelayError>,
    /// When false, AllocateRelay is left unanswered.
    pub answer_relays: bool,
    pub released: Vec<SocketAddr>,
    pub to_peer: Vec<(SocketAddr, SocketAddr, Vec<u8>)>,
    pub to_client: Vec<(FiveTuple, Vec<u8>)>,
    pub pending_tokens: Vec<crate::RelayToken>,
}

impl Harness {
    pub fn new() -> Self {
        Self::with(|_| {})
    }

    pub fn with(f: impl FnOnce(&mut TurnConfig)) -> Self {
        let mut cfg = TurnConfig::new(REALM, SECRET);
        f(&mut cfg);
        Harness {
            s: TurnServer::new(cfg, T0),
            next_port: 50_000,
            relay_error: None,
            answer_relays: true,
            released: Vec::new(),
            to_peer: Vec::new(),
            to_client: Vec::new(),
            pending_tokens: Vec::new(),
        }
    }

    /// Carry out every queued output.
    pub fn pump(&mut self, now: u64) {
        while let Some(out) = self.s.poll_output() {
            match out {
                Output::ToClient { transport, client, server, bytes } => {
                    self.to_client.push((FiveTuple { transport, client, server }, bytes))
                }
                Output::ToPeer { relay_addr, peer, bytes } => self.to_peer.push((relay_addr, peer, bytes)),
                Output::ReleaseRelay { relay_addr } => self.released.push(relay_addr),
                Output::AllocateRelay { token, family, .. } => {
                    if !self.answer_relays {
                        self.pending_tokens.push(token);
                        continue;
                    }
                    let res = match self.relay_error {
                        Some(e) => Err(e),
                        None => {
                            self.next_port += 2;
                            Ok(match family {
                                crate::AddressFamily::V4 => {
                                    SocketAddr::new(addr("198.51.100.1:0").ip(), self.next_port)
                                }
                                crate::AddressFamily::V6 => {
                                    SocketAddr::new(addr("[2001:db8::1]:0").ip(), self.next_port)
                                }
                            })
                        }
                    };
                    self.s.relay_allocated(token, res, now);
                }
            }
        }
    }

    /// Feed a client packet and return the responses sent to that client.
    pub fn client_send(&mut self, c: &FiveTuple, bytes: &[u8], now: u64) -> Vec<Vec<u8>> {
        self.to_client.clear();
        self.s.handle_client(c.transport, c.client, c.server, bytes, now);
        self.pump(now);
        self.to_client.drain(..).filter(|(t, _)| t == c).map(|(_, b)| b).collect()
    }

    pub fn peer_send(&mut self, relay: SocketAddr, peer: SocketAddr, bytes: &[u8], now: u64) -> Vec<Vec<u8>> {
        self.to_client.clear();
        self.s.handle_peer(relay, peer, bytes, now);
        self.pump(now);
        self.to_client.drain(..).map(|(_, b)| b).collect()
    }
}

/// A TURN client with credentials and a cached nonce.
pub(crate) struct TestClient {
    pub t: FiveTuple,
    pub username: String,
    pub key: [u8; 16],
    pub nonce: Option<Vec<u8>>,
    pub kind: IntegrityKind,
    tid: u64,
}

impl TestClient {
    pub fn new(client: &str, user_id: &[u8]) -> Self {
        Self::on(Transport::Udp, client, user_id)
    }

    pub fn on(transport: Transport, client: &str, user_id: &[u8]) -> Self {
        let (username, password) = mint_credentials(SECRET, user_id, T0 / 1000, 86_400);
        let key = long_term_key(&username, REALM, &password);
        let t = FiveTuple { transport, client: addr(client), server: addr("203.0.113.1:3478") };
        TestClient { t, username, key, nonce: None, kind: IntegrityKind::Sha1, tid: 0 }
    }

    pub fn next_tid(&mut self) -> [u8; 12] {
        self.tid += 1;
        let mut tid = [0xA5u8; 12];
        tid[4..].copy_from_slice(&self.tid.to_be_bytes());
        tid
    }

    /// Build a signed request with the given extra attributes.
    pub fn build(&mut self, m: u16, tid: [u8; 12], f: impl FnOnce(&mut MessageBuilder)) -> Vec<u8> {
        let mut b = MessageBuilder::new(m, Class::Request, tid);
        f(&mut b);
        // Like real clients, the first request goes out without credentials to learn the nonce.
        if let Some(n) = &self.nonce {
            b.attr(attr::USERNAME, self.username.as_bytes()).attr(attr::REALM, REALM.as_bytes()).attr(attr::NONCE, n);
            b.integrity(self.kind, &self.key);
        }
        b.into_bytes()
    }

    /// Send a signed request, refreshing the nonce on 401/438 once, and return the response.
    pub fn request(&mut self, h: &mut Harness, m: u16, now: u64, f: impl Fn(&mut MessageBuilder)) -> Vec<u8> {
        for _ in 0..2 {
            let tid = self.next_tid();
            let req = self.build(m, tid, &f);
            let resp = h.client_send(&self.t, &req, now).pop().expect("a response");
            let code = error_code(&resp);
            if matches!(code, Some(401 | 438)) {
                let msg = Message::parse(&resp).expect("parse");
                let fresh = msg.get(attr::NONCE).map(<[u8]>::to_vec);
                if fresh.is_some() && fresh != self.nonce {
                    self.nonce = fresh;
                    continue;
                }
            }
            return resp;
        }
        panic!("no stable response");
    }

    pub fn allocate(&mut self, h: &mut Harness, now: u64) -> Vec<u8> {
        self.request(h, method::ALLOCATE, now, |b| {
            b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
        })
    }

    pub fn permit(&mut self, h: &mut Harness, peer: SocketAddr, now: u64) -> Vec<u8> {
        self.request(h, method::CREATE_PERMISSION, now, |b| {
            b.xor_addr(attr::XOR_PEER_ADDRESS, peer);
        })
    }

    pub fn bind(&mut self, h: &mut Harness, ch: u16, peer: SocketAddr, now: u64) -> Vec<u8> {
        self.request(h, method::CHANNEL_BIND, now, |b| {
            b.attr(attr::CHANNEL_NUMBER, &[(ch >> 8) as u8, ch as u8, 0, 0]).xor_addr(attr::XOR_PEER_ADDRESS, peer);
        })
    }

    pub fn send_indication(&mut self, peer: SocketAddr, data: &[u8]) -> Vec<u8> {
        let mut b = MessageBuilder::new(method::SEND, Class::Indication, self.next_tid());
        b.xor_addr(attr::XOR_PEER_ADDRESS, peer).attr(attr::DATA, data);
        b.into_bytes()
    }
}

/// The ERROR-CODE of a response, if it is an error response.
pub(crate) fn error_code(bytes: &[u8]) -> Option<u16> {
    let m = Message::parse(bytes).ok()?;
    if m.class != Class::Error {
        return None;
    }
    let v = m.get(attr::ERROR_CODE)?;
    Some(u16::from(v[2] & 7) * 100 + u16::from(v[3]))
}

/// Asserts a success response and returns its relayed address (for Allocate).
pub(crate) fn relayed(bytes: &[u8]) -> SocketAddr {
    assert_eq!(error_code(bytes), None, "expected success");
    let m = Message::parse(bytes).expect("parse");
    assert_eq!(m.class, Class::Success);
    crate::codec::decode_address(m.get(attr::XOR_RELAYED_ADDRESS).expect("relayed"), true, &m.transaction_id)
        .expect("decode")
}
