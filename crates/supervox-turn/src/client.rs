//! Sans-IO TURN client (RFC 8656): one allocation on one server, used by a supervox client
//! for its relay candidate.
//!
//! The client owns no socket and reads no clock. The driver sends every [`TurnClient::poll_transmit`]
//! message to the server (as a datagram over UDP; written to the stream over TCP, where
//! ChannelData is padded), feeds everything the server sends to [`TurnClient::handle_message`]
//! (over TCP: each frame a [`crate::TcpFramer`] yields) and calls [`TurnClient::handle_timeout`]
//! at [`TurnClient::poll_timeout`].
//!
//! Flow: an unauthenticated Allocate draws the 401 with REALM and NONCE, the retry carries the
//! long-term credential (the short-lived TURN REST username and password our supernode minted).
//! Then the allocation is refreshed at half its lifetime, permissions (5 min) and channels
//! (10 min) a minute before they lapse. Data to a peer goes as ChannelData once the channel is
//! bound, as a Send indication before. A 438 (stale nonce) is retried with the new nonce.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use supervox_stun::codec::{self as stun, long_term_key, Class, Message, TransactionId};

use crate::codec::{attr, encode_channel_data, method, ChannelData, PacketKind};
use crate::Transport;

/// First retransmission timeout of a request over UDP (RFC 8489 §6.2.1 uses 500 ms; calls
/// want a relay candidate fast, and the server is our own supernode a few ms away).
const RTO_MS: u64 = 250;
/// How long a request over TCP waits for its answer (includes the connection setup).
const TCP_TIMEOUT_MS: u64 = 10_000;
/// Transmissions of a request before it is given up.
const MAX_TRANSMISSIONS: u32 = 6;
/// Lifetime we ask for (s).
const REQUESTED_LIFETIME_S: u32 = 600;
/// Permissions last 300 s on the server; refreshed this early.
const PERMISSION_REFRESH_MS: u64 = 240_000;
/// Channel bindings last 600 s; refreshed this early.
const CHANNEL_REFRESH_MS: u64 = 480_000;
/// Peers (permissions and channels) one allocation keeps at most.
pub const MAX_PEERS: usize = 64;
/// Transactions in flight at most.
const MAX_IN_FLIGHT: usize = 32;

/// What the client reports to its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TurnEvent {
    /// The allocation exists: peers reach us at `relayed`; the server saw us at `mapped`.
    Allocated {
        /// XOR-RELAYED-ADDRESS.
        relayed: SocketAddr,
        /// XOR-MAPPED-ADDRESS (our server-reflexive address as the server sees it).
        mapped: Option<SocketAddr>,
    },
    /// The allocation failed or was lost (refused, timed out, expired).
    Failed {
        /// STUN error code, or 408 for a timeout.
        code: u16,
        /// Why.
        reason: String,
    },
    /// The server refused a permission towards `peer` (it does not relay
    /// there, e.g. 403 for an address it forbids): no datagram will pass.
    PermissionRefused {
        /// The peer's address.
        peer: IpAddr,
        /// STUN error code.
        code: u16,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Allocate,
    Refresh { lifetime: u32 },
    Permission(IpAddr),
    Channel(SocketAddr, u16),
}

struct Transaction {
    purpose: Purpose,
    bytes: Vec<u8>,
    next_ms: u64,
    sent: u32,
    /// Already retried once after a 401/438.
    reauthed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Allocating,
    Allocated { relayed: SocketAddr, refresh_at: u64 },
    Failed,
    Closed,
}

struct Peer {
    permission_until: Option<u64>,
    permission_pending: bool,
    channel: Option<u16>,
    channel_bound_until: Option<u64>,
    channel_pending: bool,
}

/// One TURN allocation, client side.
pub struct TurnClient {
    server: SocketAddr,
    transport: Transport,
    username: String,
    password: String,
    realm: Option<String>,
    nonce: Option<Vec<u8>>,
    key: Option<Vec<u8>>,
    state: State,
    tx: HashMap<TransactionId, Transaction>,
    peers: HashMap<IpAddr, Peer>,
    channels: HashMap<u16, SocketAddr>,
    channel_of: HashMap<SocketAddr, u16>,
    next_channel: u16,
    rng: StdRng,
    out: VecDeque<Vec<u8>>,
    events: VecDeque<TurnEvent>,
}

impl std::fmt::Debug for TurnClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TurnClient({} {:?})", self.server, self.state)
    }
}

impl TurnClient {
    /// Start allocating on `server` with the given long-term credential.
    pub fn new(
        server: SocketAddr,
        transport: Transport,
        username: &str,
        password: &str,
        rng_seed: u64,
        now_ms: u64,
    ) -> Self {
        let mut c = TurnClient {
            server,
            transport,
            username: username.to_owned(),
            password: password.to_owned(),
            realm: None,
            nonce: None,
            key: None,
            state: State::Allocating,
            tx: HashMap::new(),
            peers: HashMap::new(),
            channels: HashMap::new(),
            channel_of: HashMap::new(),
            next_channel: 0x4000,
            rng: StdRng::seed_from_u64(rng_seed),
            out: VecDeque::new(),
            events: VecDeque::new(),
        };
        c.request(Purpose::Allocate, now_ms, false);
        c
    }

    /// The server this allocation lives on.
    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// How the server is reached.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// The relayed address, once allocated.
    pub fn relayed(&self) -> Option<SocketAddr> {
        match self.state {
            State::Allocated { relayed, .. } => Some(relayed),
            _ => None,
        }
    }

    /// True once the allocation failed, expired or was released.
    pub fn is_dead(&self) -> bool {
        matches!(self.state, State::Failed | State::Closed)
    }

    /// Replace the credential (the supernode renews it); used by the next request.
    pub fn set_credentials(&mut self, username: &str, password: &str) {
        if username != self.username || password != self.password {
            self.username = username.to_owned();
            self.password = password.to_owned();
            self.key = self.realm.as_deref().map(|r| long_term_key(&self.username, r, &self.password));
        }
    }

    /// Let `ip` send to us through the relay (and us to it). Idempotent; refreshed for as long
    /// as the allocation lives.
    pub fn permit(&mut self, ip: IpAddr, now_ms: u64) {
        if self.peers.len() >= MAX_PEERS && !self.peers.contains_key(&ip) {
            return;
        }
        let allocated = self.relayed().is_some();
        let p = self.peers.entry(ip).or_insert(Peer {
            permission_until: None,
            permission_pending: false,
            channel: None,
            channel_bound_until: None,
            channel_pending: false,
        });
        if p.permission_until.is_none() && !p.permission_pending && allocated {
            p.permission_pending = true;
            self.request(Purpose::Permission(ip), now_ms, false);
        }
    }

    /// Send `data` to `peer` through the relay: ChannelData when a channel is bound, a Send
    /// indication until then. Binds a channel (and installs the permission) on first use.
    pub fn send_to(&mut self, peer: SocketAddr, data: &[u8], now_ms: u64) {
        if self.relayed().is_none() {
            return;
        }
        self.permit(peer.ip(), now_ms);
        let bound = self.channel_of.get(&peer).copied().filter(|ch| {
            self.peers.get(&peer.ip()).is_some_and(|p| p.channel == Some(*ch) && p.channel_bound_until.is_some())
        });
        if let Some(ch) = bound {
            if let Some(frame) = encode_channel_data(ch, data, self.transport.is_stream()) {
                self.out.push_back(frame);
            }
            return;
        }
        self.bind_channel(peer, now_ms);
        let mut m = Message::new(Class::Indication, method::SEND, self.tid());
        m.add_xor_address(attr::XOR_PEER_ADDRESS, peer);
        m.add(attr::DATA, data.to_vec());
        self.out.push_back(m.encode(None, false));
    }

    fn bind_channel(&mut self, peer: SocketAddr, now_ms: u64) {
        if self.channel_of.contains_key(&peer) || self.channels.len() >= MAX_PEERS {
            return;
        }
        let ch = self.next_channel;
        if ch > 0x4FFF {
            return;
        }
        self.next_channel += 1;
        self.channels.insert(ch, peer);
        self.channel_of.insert(peer, ch);
        if let Some(p) = self.peers.get_mut(&peer.ip()) {
            p.channel = Some(ch);
            p.channel_pending = true;
        }
        self.request(Purpose::Channel(peer, ch), now_ms, false);
    }

    /// Release the allocation (Refresh with lifetime 0).
    pub fn close(&mut self, now_ms: u64) {
        if self.relayed().is_some() {
            self.request(Purpose::Refresh { lifetime: 0 }, now_ms, false);
        }
        self.state = State::Closed;
    }

    /// A message from the server. Returns `(peer, data)` for relayed data; control traffic is
    /// handled inside. Anything malformed or unexpected is dropped.
    pub fn handle_message(&mut self, bytes: &[u8], now_ms: u64) -> Option<(SocketAddr, Vec<u8>)> {
        match crate::codec::packet_kind(bytes) {
            PacketKind::ChannelData => {
                let cd = ChannelData::parse(bytes)?;
                let peer = *self.channels.get(&cd.channel)?;
                Some((peer, cd.data.to_vec()))
            }
            PacketKind::Stun => {
                let msg = Message::parse(bytes).ok()?;
                match msg.class {
                    Class::Indication if msg.method == method::DATA => {
                        let peer = msg.address(attr::XOR_PEER_ADDRESS, true).ok()??;
                        let data = msg.get(attr::DATA)?.to_vec();
                        Some((peer, data))
                    }
                    Class::Success | Class::Error => {
                        self.on_response(bytes, &msg, now_ms);
                        None
                    }
                    _ => None,
                }
            }
            _ => None,
        }
    }

    fn on_response(&mut self, raw: &[u8], msg: &Message, now_ms: u64) {
        if !self.tx.contains_key(&msg.transaction_id) {
            return;
        }
        // Success responses to authenticated requests must carry our integrity. Error
        // responses may not (a 401 challenge only hands out REALM and NONCE).
        if let Some(key) = &self.key {
            if msg.class == Class::Success && stun::verify_integrity(raw, key) != Ok(true) {
                return;
            }
        }
        let Some(t) = self.tx.remove(&msg.transaction_id) else {
            return;
        };
        let (purpose, reauthed) = (t.purpose, t.reauthed);
        if msg.class == Class::Error {
            let (code, reason) = msg.error_code().unwrap_or((500, "error response without ERROR-CODE".into()));
            if (code == 401 || code == 438) && !reauthed {
                if let Some(realm) = msg.get(attr::REALM).and_then(|r| std::str::from_utf8(r).ok()) {
                    self.key = Some(long_term_key(&self.username, realm, &self.password));
                    self.realm = Some(realm.to_owned());
                }
                if let Some(n) = msg.get(attr::NONCE) {
                    self.nonce = Some(n.to_vec());
                }
                if self.key.is_some() && self.nonce.is_some() {
                    self.request(purpose, now_ms, true);
                    return;
                }
            }
            self.on_failure(purpose, code, reason);
            return;
        }
        match purpose {
            Purpose::Allocate => {
                let relayed = msg.address(attr::XOR_RELAYED_ADDRESS, true).ok().flatten();
                let Some(relayed) = relayed else {
                    self.on_failure(purpose, 500, "Allocate success without XOR-RELAYED-ADDRESS".into());
                    return;
                };
                let lifetime = lifetime_of(msg);
                self.state = State::Allocated { relayed, refresh_at: now_ms + u64::from(lifetime) * 500 };
                let mapped = msg.address(attr::XOR_MAPPED_ADDRESS, true).ok().flatten();
                self.events.push_back(TurnEvent::Allocated { relayed, mapped });
                // Peers asked for before the allocation existed.
                let ips: Vec<IpAddr> = self.peers.keys().copied().collect();
                for ip in ips {
                    self.permit(ip, now_ms);
                }
            }
            Purpose::Refresh { .. } => {
                if let State::Allocated { relayed, .. } = self.state {
                    let lifetime = lifetime_of(msg);
                    self.state = State::Allocated { relayed, refresh_at: now_ms + u64::from(lifetime) * 500 };
                }
            }
            Purpose::Permission(ip) => {
                if let Some(p) = self.peers.get_mut(&ip) {
                    p.permission_pending = false;
                    p.permission_until = Some(now_ms + PERMISSION_REFRESH_MS);
                }
            }
            Purpose::Channel(peer, ch) => {
                if let Some(p) = self.peers.get_mut(&peer.ip()) {
                    if p.channel == Some(ch) {
                        p.channel_pending = false;
                        p.channel_bound_until = Some(now_ms + CHANNEL_REFRESH_MS);
                        // A channel binding installs the permission too.
                        p.permission_until = Some(now_ms + PERMISSION_REFRESH_MS);
                    }
                }
            }
        }
    }

    fn on_failure(&mut self, purpose: Purpose, code: u16, reason: String) {
        match purpose {
            Purpose::Allocate | Purpose::Refresh { .. } => {
                if !matches!(purpose, Purpose::Refresh { lifetime: 0 }) && self.state != State::Closed {
                    self.state = State::Failed;
                    self.events.push_back(TurnEvent::Failed { code, reason });
                }
            }
            Purpose::Permission(ip) => {
                if let Some(p) = self.peers.get_mut(&ip) {
                    p.permission_pending = false;
                }
                // 401/438 are retried before this; a timeout may pass next time.
                if code != 408 {
                    self.events.push_back(TurnEvent::PermissionRefused { peer: ip, code });
                }
            }
            Purpose::Channel(peer, ch) => {
                // Fall back to Send indications for this peer.
                self.channels.remove(&ch);
                self.channel_of.remove(&peer);
                if let Some(p) = self.peers.get_mut(&peer.ip()) {
                    p.channel = None;
                    p.channel_pending = false;
                }
            }
        }
    }

    fn tid(&mut self) -> TransactionId {
        let mut t = [0u8; 12];
        self.rng.fill(&mut t);
        t
    }

    fn request(&mut self, purpose: Purpose, now_ms: u64, reauthed: bool) {
        if self.tx.len() >= MAX_IN_FLIGHT {
            return;
        }
        let tid = self.tid();
        let (m, class) = match purpose {
            Purpose::Allocate => (method::ALLOCATE, Class::Request),
            Purpose::Refresh { .. } => (method::REFRESH, Class::Request),
            Purpose::Permission(_) => (method::CREATE_PERMISSION, Class::Request),
            Purpose::Channel(..) => (method::CHANNEL_BIND, Class::Request),
        };
        let mut msg = Message::new(class, m, tid);
        match purpose {
            Purpose::Allocate => {
                // REQUESTED-TRANSPORT: UDP (17) in the first byte, RFFU after.
                msg.add(attr::REQUESTED_TRANSPORT, vec![17, 0, 0, 0]);
                msg.add(attr::LIFETIME, REQUESTED_LIFETIME_S.to_be_bytes().to_vec());
            }
            Purpose::Refresh { lifetime } => {
                msg.add(attr::LIFETIME, lifetime.to_be_bytes().to_vec());
            }
            Purpose::Permission(ip) => {
                msg.add_xor_address(attr::XOR_PEER_ADDRESS, SocketAddr::new(ip, 0));
            }
            Purpose::Channel(peer, ch) => {
                let mut v = ch.to_be_bytes().to_vec();
                v.extend_from_slice(&[0, 0]);
                msg.add(attr::CHANNEL_NUMBER, v);
                msg.add_xor_address(attr::XOR_PEER_ADDRESS, peer);
            }
        }
        let key = match (&self.key, &self.realm, &self.nonce) {
            (Some(key), Some(realm), Some(nonce)) => {
                msg.add(attr::USERNAME, self.username.as_bytes().to_vec());
                msg.add(attr::REALM, realm.as_bytes().to_vec());
                msg.add(attr::NONCE, nonce.clone());
                Some(key.clone())
            }
            _ => None,
        };
        let bytes = msg.encode(key.as_deref(), true);
        self.out.push_back(bytes.clone());
        // Over TCP nothing is retransmitted: the one transmission gets the whole timeout.
        let wait = if self.transport.is_stream() { TCP_TIMEOUT_MS } else { RTO_MS };
        self.tx.insert(tid, Transaction { purpose, bytes, next_ms: now_ms + wait, sent: 1, reauthed });
    }

    /// Retransmit, refresh, and give up on what timed out.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        let mut expired = Vec::new();
        for (tid, t) in self.tx.iter_mut() {
            if now_ms < t.next_ms {
                continue;
            }
            let give_up = self.transport.is_stream() || t.sent >= MAX_TRANSMISSIONS;
            if give_up {
                expired.push(*tid);
            } else {
                t.sent += 1;
                t.next_ms = now_ms + (RTO_MS << (t.sent - 1).min(6));
                self.out.push_back(t.bytes.clone());
            }
        }
        for tid in expired {
            if let Some(t) = self.tx.remove(&tid) {
                self.on_failure(t.purpose, 408, "the TURN server did not answer".into());
            }
        }
        let State::Allocated { refresh_at, .. } = self.state else {
            return;
        };
        let refreshing = self.tx.values().any(|t| matches!(t.purpose, Purpose::Refresh { .. }));
        if now_ms >= refresh_at && !refreshing {
            self.request(Purpose::Refresh { lifetime: REQUESTED_LIFETIME_S }, now_ms, false);
        }
        let mut renew_perm = Vec::new();
        let mut renew_chan = Vec::new();
        for (ip, p) in &self.peers {
            if p.permission_until.is_some_and(|u| now_ms >= u) && !p.permission_pending {
                renew_perm.push(*ip);
            }
            if let (Some(ch), Some(u)) = (p.channel, p.channel_bound_until) {
                if now_ms >= u && !p.channel_pending {
                    if let Some(peer) = self.channels.get(&ch) {
                        renew_chan.push((*peer, ch));
                    }
                }
            }
        }
        for ip in renew_perm {
            if let Some(p) = self.peers.get_mut(&ip) {
                p.permission_pending = true;
            }
            self.request(Purpose::Permission(ip), now_ms, false);
        }
        for (peer, ch) in renew_chan {
            if let Some(p) = self.peers.get_mut(&peer.ip()) {
                p.channel_pending = true;
            }
            self.request(Purpose::Channel(peer, ch), now_ms, false);
        }
    }

    /// When [`TurnClient::handle_timeout`] wants to run next.
    pub fn poll_timeout(&self) -> Option<u64> {
        let tx = self.tx.values().map(|t| t.next_ms).min();
        let refresh = match self.state {
            State::Allocated { refresh_at, .. } => Some(refresh_at),
            _ => None,
        };
        let peers = self.peers.values().flat_map(|p| [p.permission_until, p.channel_bound_until]).flatten().min();
        [tx, refresh, peers].into_iter().flatten().min()
    }

    /// Next message for the server.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.out.pop_front()
    }

    /// Next event.
    pub fn poll_event(&mut self) -> Option<TurnEvent> {
        self.events.pop_front()
    }
}

fn lifetime_of(msg: &Message) -> u32 {
    msg.get(attr::LIFETIME)
        .and_then(|v| <[u8; 4]>::try_from(v).ok())
        .map(u32::from_be_bytes)
        .unwrap_or(REQUESTED_LIFETIME_S)
        .clamp(60, 3_600)
}
