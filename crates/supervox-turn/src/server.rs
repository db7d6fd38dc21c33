//! The sans-IO [`TurnServer`] state machine: inputs, outputs, data path and timers.
//!
//! Request handlers (Allocate, Refresh, CreatePermission, ChannelBind) live in
//! [`crate::handlers`]; this file owns the state, the demultiplexing and the relaying.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};

use crate::allocation::{peer_forbidden, Allocation, PeerPolicy};
use crate::auth::{derive_nonce_key, NonceFactory};
use crate::codec::{
    self, attr, method, packet_kind, ChannelData, Class, Message, MessageBuilder, PacketKind, ParseError,
};

use crate::Transport;

/// The client 5-tuple an allocation is bound to (RFC 8656 §2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FiveTuple {
    /// Client transport.
    pub transport: Transport,
    /// Client's (possibly NATed) address.
    pub client: SocketAddr,
    /// Our listening address the client talks to.
    pub server: SocketAddr,
}

/// Address family of a relay socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressFamily {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl AddressFamily {
    /// Family of an address.
    pub fn of(addr: &SocketAddr) -> Self {
        if addr.is_ipv4() {
            AddressFamily::V4
        } else {
            AddressFamily::V6
        }
    }
}

/// Identifies an outstanding [`Output::AllocateRelay`] request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RelayToken(pub u64);

/// Why the driver could not provide a relay socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayError {
    /// No port/socket available: answered with 508.
    InsufficientCapacity,
    /// The driver has no relay address of that family: answered with 440.
    AddressFamilyNotSupported,
}

/// Something the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send `bytes` to the client over `transport` from our `server` address.
    ToClient {
        /// Client transport.
        transport: Transport,
        /// Destination (client) address.
        client: SocketAddr,
        /// Source (our listening) address.
        server: SocketAddr,
        /// Payload (a STUN message or ChannelData, already padded for streams).
        bytes: Vec<u8>,
    },
    /// Send a UDP datagram from the relay socket bound to `relay_addr` to `peer`.
    ToPeer {
        /// Relay socket address (source).
        relay_addr: SocketAddr,
        /// Peer address (destination).
        peer: SocketAddr,
        /// Datagram payload.
        bytes: Vec<u8>,
    },
    /// Bind a new UDP relay socket and answer with [`TurnServer::relay_allocated`].
    AllocateRelay {
        /// Token to pass back.
        token: RelayToken,
        /// Requested family.
        family: AddressFamily,
        /// Client asked for an even port (EVEN-PORT without reservation).
        even_port: bool,
        /// The client 5-tuple (for logs and per-client policy in the driver).
        five_tuple: FiveTuple,
    },
    /// Close the relay socket bound to `relay_addr`; the allocation is gone.
    ReleaseRelay {
        /// Relay socket address.
        relay_addr: SocketAddr,
    },
}

/// Static configuration; see [`TurnConfig::new`] for defaults.
#[derive(Debug, Clone)]
pub struct TurnConfig {
    /// REALM sent to clients and mixed into the long-term key.
    pub realm: String,
    /// Credential secrets shared with the SN; the first is current, the rest are accepted during
    /// rotation. Must not be empty (an empty list rejects every client).
    pub secrets: Vec<Vec<u8>>,
    /// Lifetime when the client asks for none or less (RFC 8656: 600 s).
    pub default_lifetime_secs: u32,
    /// Upper bound on allocation lifetimes (RFC 8656: 3600 s).
    pub max_lifetime_secs: u32,
    /// Nonce validity; after that the client gets 438 and retries.
    pub nonce_ttl_secs: u64,
    /// Per-allocation bandwidth in kbit/s over both directions; 0 = unlimited.
    pub relay_kbps: u32,
    /// Bucket depth in milliseconds of `relay_kbps` (floored at 64 KiB).
    pub relay_burst_ms: u32,
    /// Global cap on allocations (including ones waiting for a relay socket): 508 beyond it.
    pub max_allocations: usize,
    /// Cap per user id: 486 beyond it.
    pub max_allocations_per_user: usize,
    /// Cap on live permissions per allocation: 508 beyond it.
    pub max_permissions_per_allocation: usize,
    /// Cap on channels per allocation: 508 beyond it.
    pub max_channels_per_allocation: usize,
    /// Accept ChannelBind numbers from the RFC 5766 range 0x4000..=0x7FFF instead of only RFC
    /// 8656's 0x4000..=0x4FFF. On by default: coturn's `turnutils_uclient` and other RFC 5766
    /// clients pick numbers up to 0x7FFF, and on a TURN client port nothing else is multiplexed.
    pub accept_rfc5766_channels: bool,
    /// Which peer addresses a relay may reach (403 for the others; loopback only in tests,
    /// private/CGNAT/ULA only by the operator's choice).
    pub peers: PeerPolicy,
    /// The server's own addresses (its listen and advertised IPs): relaying to them is
    /// refused except to this server's own relay ports (relay-to-relay between two of its
    /// clients), so a client cannot reach the host's other services through a relay.
    /// Loopback addresses here are governed by `peers.allow_loopback` alone.
    pub own_ips: Vec<IpAddr>,
    /// Responses per second to unauthenticated traffic (401/438/400/420/Binding); excess is
    /// dropped silently to limit reflection.
    pub max_unauthenticated_responses_per_sec: u32,
    /// Cap on queued data outputs if the driver stops polling; control outputs are never dropped.
    pub max_queued_outputs: usize,
    /// Time the driver has to answer [`Output::AllocateRelay`] before the request is forgotten.
    pub relay_allocate_timeout_ms: u64,
    /// SOFTWARE attribute value in responses; `None` omits it.
    pub software: Option<String>,
}

impl TurnConfig {
    /// Production defaults for `realm` with one credential `secret`.
    pub fn new(realm: impl Into<String>, secret: impl Into<Vec<u8>>) -> Self {
        TurnConfig {
            realm: realm.into(),
            secrets: vec![secret.into()],
            default_lifetime_secs: 600,
            max_lifetime_secs: 3600,
            nonce_ttl_secs: 600,
            relay_kbps: crate::defaults::RELAY_KBPS,
            relay_burst_ms: 500,
            max_allocations: crate::defaults::MAX_ALLOCATIONS,
            max_allocations_per_user: 8,
            max_permissions_per_allocation: 32,
            max_channels_per_allocation: 32,
            accept_rfc5766_channels: true,
            peers: PeerPolicy::default(),
            own_ips: Vec::new(),
            max_unauthenticated_responses_per_sec: 2000,
            max_queued_outputs: 8192,
            relay_allocate_timeout_ms: 5_000,
            software: Some("supervox-turn".into()),
        }
    }
}

/// Counters for monitoring.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Allocations created.
    pub allocations_created: u64,
    /// Allocations deleted (refresh 0, expiry, connection close).
    pub allocations_deleted: u64,
    /// Packets relayed client -> peer.
    pub packets_to_peer: u64,
    /// Packets relayed peer -> client.
    pub packets_to_client: u64,
    /// Bytes of application data relayed (both directions).
    pub bytes_relayed: u64,
    /// Packets dropped by the bandwidth quota.
    pub dropped_bandwidth: u64,
    /// Packets dropped for lack of allocation/permission/channel.
    pub dropped_no_route: u64,
    /// Undecodable packets dropped.
    pub dropped_malformed: u64,
    /// Responses suppressed by the unauthenticated-response limit.
    pub dropped_rate_limited: u64,
    /// Outputs dropped because the queue was full.
    pub dropped_queue_full: u64,
    /// Error responses sent.
    pub error_responses: u64,
}

/// An Allocate waiting for the driver's relay socket.
#[derive(Debug)]
pub(crate) struct PendingAllocation {
    pub five_tuple: FiveTuple,
    pub transaction_id: [u8; 12],
    pub user_id: String,
    pub username: String,
    pub key: [u8; 16],
    pub integrity: codec::IntegrityKind,
    pub lifetime_secs: u32,
    pub deadline_ms: u64,
}

/// Sweep interval for expired state (the data path checks expiry exactly; sweeping frees memory).
const SWEEP_INTERVAL_MS: u64 = 1_000;
/// Largest peer datagram relayed (so that a Data indication still fits in a STUN message).
const MAX_RELAY_PAYLOAD: usize = 65_000;

/// A sans-IO TURN server. See the crate docs for the driver contract.
#[derive(Debug)]
pub struct TurnServer {
    pub(crate) cfg: TurnConfig,
    pub(crate) nonces: NonceFactory,
    pub(crate) allocations: HashMap<FiveTuple, Allocation>,
    pub(crate) by_relay: HashMap<SocketAddr, FiveTuple>,
    pub(crate) per_user: HashMap<String, usize>,
    pub(crate) pending: HashMap<RelayToken, PendingAllocation>,
    pub(crate) pending_by_tuple: HashMap<FiveTuple, RelayToken>,
    next_token: u64,
    outputs: VecDeque<Output>,
    unauth_tokens: u32,
    unauth_last_ms: u64,
    next_sweep_ms: u64,
    pub(crate) stats: Stats,
}

impl TurnServer {
    /// Create a server. `now_ms` is the driver's clock (milliseconds since the Unix epoch: the
    /// same clock is used to check credential expiry, so it must be wall-clock based).
    pub fn new(cfg: TurnConfig, now_ms: u64) -> Self {
        let key = derive_nonce_key(cfg.secrets.first().map(Vec::as_slice).unwrap_or(&[]));
        let nonces = NonceFactory::new(key, cfg.nonce_ttl_secs.saturating_mul(1000));
        let unauth_tokens = cfg.max_unauthenticated_responses_per_sec;
        TurnServer {
            cfg,
            nonces,
            allocations: HashMap::new(),
            by_relay: HashMap::new(),
            per_user: HashMap::new(),
            pending: HashMap::new(),
            pending_by_tuple: HashMap::new(),
            next_token: 1,
            outputs: VecDeque::new(),
            unauth_tokens,
            unauth_last_ms: now_ms,
            next_sweep_ms: now_ms.saturating_add(SWEEP_INTERVAL_MS),
            stats: Stats::default(),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &TurnConfig {
        &self.cfg
    }

    /// Monitoring counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Number of live allocations (not counting ones waiting for a relay socket).
    pub fn allocation_count(&self) -> usize {
        self.allocations.len()
    }

    /// Relay address of the allocation bound to a 5-tuple, if any.
    pub fn relay_addr_of(&self, five_tuple: &FiveTuple) -> Option<SocketAddr> {
        self.allocations.get(five_tuple).map(|a| a.relay_addr)
    }

    /// Whether `peer` is one of the server's own addresses at a port that is not one of its
    /// relays: a service on the relay's host, which relayed traffic must not reach.
    pub(crate) fn is_own_service(&self, peer: SocketAddr) -> bool {
        let ip = peer.ip().to_canonical();
        !ip.is_loopback()
            && self.cfg.own_ips.iter().any(|own| own.to_canonical() == ip)
            && !self.by_relay.contains_key(&peer)
    }

    /// Next output for the driver, in order.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`TurnServer::handle_timeout`] should next be called: the next
    /// sweep while allocations exist or are being made, else `None` (an idle
    /// relay needs no timer). Ask again after every input: the first
    /// allocation brings the sweep back (due at once if its time has passed).
    pub fn poll_timeout(&self) -> Option<u64> {
        (!self.allocations.is_empty() || !self.pending.is_empty()).then_some(self.next_sweep_ms)
    }

    /// Input: bytes from a client. For UDP, one datagram; for TCP/TLS, one frame from
    /// [`crate::TcpFramer`]. Any bytes are accepted; garbage is dropped or answered with an error.
    pub fn handle_client(
        &mut self,
        transport: Transport,
        client: SocketAddr,
        server: SocketAddr,
        bytes: &[u8],
        now_ms: u64,
    ) {
        let tuple = FiveTuple { transport, client, server };
        match packet_kind(bytes) {
            PacketKind::Stun => self.handle_stun(tuple, bytes, now_ms),
            PacketKind::ChannelData => self.handle_client_channel_data(tuple, bytes, now_ms),
            PacketKind::Other => self.stats.dropped_malformed += 1,
        }
    }

    /// Input: a datagram received on relay socket `relay_addr` from `peer`.
    pub fn handle_peer(&mut self, relay_addr: SocketAddr, peer: SocketAddr, bytes: &[u8], now_ms: u64) {
        if let Some((tuple, channel)) = self.check_from_peer(relay_addr, peer, bytes.len(), now_ms) {
            self.queue_to_client(tuple, channel, peer, bytes);
        }
    }

    /// Input, zero-copy data path for UDP clients: a datagram received on relay socket
    /// `relay_addr` from `peer`, read by the driver into `buf[CHANNEL_HEADER_LEN..][..len]`
    /// (the first [`crate::codec::CHANNEL_HEADER_LEN`] bytes are headroom).
    ///
    /// When the peer has a channel to a UDP client, the ChannelData header is written into the
    /// headroom and `Some((client, server))` is returned: the driver sends
    /// `buf[..CHANNEL_HEADER_LEN + len]` from its listening address `server` to `client`, and
    /// nothing is queued. Otherwise this is exactly [`TurnServer::handle_peer`] (a Data
    /// indication may be queued, or the datagram dropped) and `None` is returned.
    pub fn route_peer_in_place(
        &mut self,
        relay_addr: SocketAddr,
        peer: SocketAddr,
        buf: &mut [u8],
        len: usize,
        now_ms: u64,
    ) -> Option<(SocketAddr, SocketAddr)> {
        let end = codec::CHANNEL_HEADER_LEN.checked_add(len)?;
        if end > buf.len() {
            self.stats.dropped_malformed += 1;
            return None;
        }
        let (tuple, channel) = self.check_from_peer(relay_addr, peer, len, now_ms)?;
        match (channel, u16::try_from(len)) {
            (Some(ch), Ok(len16)) if !tuple.transport.is_stream() => {
                buf[..2].copy_from_slice(&ch.to_be_bytes());
                buf[2..4].copy_from_slice(&len16.to_be_bytes());
                self.stats.packets_to_client += 1;
                self.stats.bytes_relayed += len as u64;
                Some((tuple.client, tuple.server))
            }
            _ => {
                let data = &buf[codec::CHANNEL_HEADER_LEN..end];
                self.queue_to_client(tuple, channel, peer, data);
                None
            }
        }
    }

    /// Checks for a peer datagram of `len` bytes: the allocation it is for and the channel bound
    /// to the peer, if any. Counts drops.
    fn check_from_peer(
        &mut self,
        relay_addr: SocketAddr,
        peer: SocketAddr,
        len: usize,
        now_ms: u64,
    ) -> Option<(FiveTuple, Option<u16>)> {
        let Some(&tuple) = self.by_relay.get(&relay_addr) else {
            self.stats.dropped_no_route += 1;
            return None;
        };
        if len > MAX_RELAY_PAYLOAD {
            self.stats.dropped_malformed += 1;
            return None;
        }
        let alloc = self.allocations.get_mut(&tuple)?;
        if alloc.expires_ms <= now_ms || !alloc.permitted(peer.ip(), now_ms) {
            self.stats.dropped_no_route += 1;
            return None;
        }
        if !alloc.bucket.take(len, now_ms) {
            self.stats.dropped_bandwidth += 1;
            return None;
        }
        Some((tuple, alloc.channel_for_peer(peer, now_ms)))
    }

    fn queue_to_client(&mut self, tuple: FiveTuple, channel: Option<u16>, peer: SocketAddr, bytes: &[u8]) {
        let out = match channel {
            Some(ch) => codec::encode_channel_data(ch, bytes, tuple.transport.is_stream()),
            None => {
                let mut b = MessageBuilder::new(method::DATA, Class::Indication, self.next_indication_id());
                b.xor_addr(attr::XOR_PEER_ADDRESS, peer).attr(attr::DATA, bytes);
                Some(b.into_bytes())
            }
        };
        if let Some(bytes_out) = out {
            self.stats.packets_to_client += 1;
            self.stats.bytes_relayed += bytes.len() as u64;
            self.push_data(Output::ToClient {
                transport: tuple.transport,
                client: tuple.client,
                server: tuple.server,
                bytes: bytes_out,
            });
        }
    }

    /// Input: the driver's answer to [`Output::AllocateRelay`]. On success the relay socket is now
    /// owned by the allocation; if the request was abandoned meanwhile, a
    /// [`Output::ReleaseRelay`] for it follows.
    pub fn relay_allocated(&mut self, token: RelayToken, result: Result<SocketAddr, RelayError>, now_ms: u64) {
        crate::handlers::finish_allocate(self, token, result, now_ms);
    }

    /// Input: a TCP/TLS client connection closed. Its allocation is deleted (RFC 8656 §3.1).
    pub fn handle_client_closed(&mut self, transport: Transport, client: SocketAddr, server: SocketAddr) {
        let tuple = FiveTuple { transport, client, server };
        if let Some(token) = self.pending_by_tuple.remove(&tuple) {
            self.pending.remove(&token);
        }
        self.remove_allocation(&tuple);
    }

    /// Input: time passed. Expires allocations, permissions, channels and stale relay requests.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        // Sweep on schedule, or at once if the clock stepped backwards past the schedule.
        if now_ms < self.next_sweep_ms && self.next_sweep_ms - now_ms <= SWEEP_INTERVAL_MS {
            return;
        }
        self.next_sweep_ms = now_ms.saturating_add(SWEEP_INTERVAL_MS);
        let expired: Vec<FiveTuple> =
            self.allocations.iter().filter(|(_, a)| a.expires_ms <= now_ms).map(|(t, _)| *t).collect();
        for t in expired {
            self.remove_allocation(&t);
        }
        for alloc in self.allocations.values_mut() {
            alloc.sweep(now_ms);
        }
        let stale: Vec<RelayToken> =
            self.pending.iter().filter(|(_, p)| p.deadline_ms <= now_ms).map(|(t, _)| *t).collect();
        for token in stale {
            if let Some(p) = self.pending.remove(&token) {
                self.pending_by_tuple.remove(&p.five_tuple);
                self.release_user(&p.user_id);
            }
        }
    }

    fn handle_stun(&mut self, tuple: FiveTuple, bytes: &[u8], now_ms: u64) {
        let msg = match Message::parse(bytes) {
            Ok(m) => m,
            Err(ParseError::NotStun) => {
                self.stats.dropped_malformed += 1;
                return;
            }
            Err(ParseError::Malformed) => {
                self.stats.dropped_malformed += 1;
                if let Some((m, Class::Request, tid)) = codec::parse_header(bytes) {
                    let mut b = MessageBuilder::new(m, Class::Error, tid);
                    b.error(400);
                    self.send_unauth(tuple, b, now_ms);
                }
                return;
            }
        };
        match (msg.class, msg.method) {
            (Class::Request, method::BINDING) => {
                let mut b = MessageBuilder::new(method::BINDING, Class::Success, msg.transaction_id);
                b.xor_addr(attr::XOR_MAPPED_ADDRESS, tuple.client);
                self.send_unauth(tuple, b, now_ms);
            }
            (Class::Request, method::ALLOCATE | method::REFRESH | method::CREATE_PERMISSION | method::CHANNEL_BIND) => {
                crate::handlers::handle_request(self, tuple, &msg, now_ms);
            }
            (Class::Request, m) => {
                let mut b = MessageBuilder::new(m, Class::Error, msg.transaction_id);
                b.error(400);
                self.send_unauth(tuple, b, now_ms);
            }
            (Class::Indication, method::SEND) => self.handle_send(tuple, &msg, now_ms),
            _ => self.stats.dropped_malformed += 1,
        }
    }

    fn handle_send(&mut self, tuple: FiveTuple, msg: &Message<'_>, now_ms: u64) {
        if !msg.unknown_required().is_empty() {
            self.stats.dropped_malformed += 1;
            return;
        }
        let peer = msg.get(attr::XOR_PEER_ADDRESS).and_then(|v| codec::decode_address(v, true, &msg.transaction_id));
        let (Some(peer), Some(data)) = (peer, msg.get(attr::DATA)) else {
            self.stats.dropped_malformed += 1;
            return;
        };
        self.relay_to_peer(tuple, peer, data, now_ms);
    }

    fn handle_client_channel_data(&mut self, tuple: FiveTuple, bytes: &[u8], now_ms: u64) {
        if let Some((relay_addr, peer, data)) = self.route_channel_data(tuple, bytes, now_ms) {
            self.push_data(Output::ToPeer { relay_addr, peer, bytes: data.to_vec() });
        }
    }

    /// Input, zero-copy data path: a ChannelData datagram from a UDP client (the driver checks
    /// [`crate::codec::packet_kind`] first; anything else goes to [`TurnServer::handle_client`]).
    /// Returns `(relay_addr, peer, data)`: the driver sends `data` from the relay socket bound
    /// to `relay_addr` to `peer`, and nothing is queued. `None`: dropped (counted in the stats).
    pub fn route_client_channel_data<'a>(
        &mut self,
        client: SocketAddr,
        server: SocketAddr,
        bytes: &'a [u8],
        now_ms: u64,
    ) -> Option<(SocketAddr, SocketAddr, &'a [u8])> {
        self.route_channel_data(FiveTuple { transport: Transport::Udp, client, server }, bytes, now_ms)
    }

    fn route_channel_data<'a>(
        &mut self,
        tuple: FiveTuple,
        bytes: &'a [u8],
        now_ms: u64,
    ) -> Option<(SocketAddr, SocketAddr, &'a [u8])> {
        let Some(cd) = ChannelData::parse(bytes) else {
            self.stats.dropped_malformed += 1;
            return None;
        };
        let peer = self.allocations.get(&tuple).and_then(|a| a.peer_for_channel(cd.channel, now_ms));
        match peer {
            Some(peer) => self.check_to_peer(tuple, peer, cd.data.len(), now_ms).map(|relay| (relay, peer, cd.data)),
            None => {
                self.stats.dropped_no_route += 1;
                None
            }
        }
    }

    fn relay_to_peer(&mut self, tuple: FiveTuple, peer: SocketAddr, data: &[u8], now_ms: u64) {
        if let Some(relay_addr) = self.check_to_peer(tuple, peer, data.len(), now_ms) {
            self.push_data(Output::ToPeer { relay_addr, peer, bytes: data.to_vec() });
        }
    }

    /// Checks for relaying `len` bytes from the client of `tuple` to `peer`; counts the packet
    /// (or its drop) and returns the relay address to send from.
    fn check_to_peer(&mut self, tuple: FiveTuple, peer: SocketAddr, len: usize, now_ms: u64) -> Option<SocketAddr> {
        let policy = self.cfg.peers;
        let own_service = self.is_own_service(peer);
        let Some(alloc) = self.allocations.get_mut(&tuple) else {
            self.stats.dropped_no_route += 1;
            return None;
        };
        if alloc.expires_ms <= now_ms
            || !alloc.permitted(peer.ip(), now_ms)
            || peer.port() == 0
            || peer_forbidden(peer.ip(), policy)
            || own_service
        {
            self.stats.dropped_no_route += 1;
            return None;
        }
        if !alloc.bucket.take(len, now_ms) {
            self.stats.dropped_bandwidth += 1;
            return None;
        }
        self.stats.packets_to_peer += 1;
        self.stats.bytes_relayed += len as u64;
        Some(alloc.relay_addr)
    }

    fn next_indication_id(&mut self) -> [u8; 12] {
        // Data indications need unique-ish transaction ids; they carry no security meaning.
        self.next_token = self.next_token.wrapping_add(1);
        let mut tid = [0u8; 12];
        tid[4..].copy_from_slice(&self.next_token.to_be_bytes());
        tid
    }

    pub(crate) fn new_token(&mut self) -> RelayToken {
        self.next_token = self.next_token.wrapping_add(1);
        RelayToken(self.next_token)
    }

    /// Queue a data-path output, dropping it if the queue is full.
    pub(crate) fn push_data(&mut self, out: Output) {
        if self.outputs.len() >= self.cfg.max_queued_outputs {
            self.stats.dropped_queue_full += 1;
        } else {
            self.outputs.push_back(out);
        }
    }

    /// Queue a control output (never dropped; bounded by the allocation caps).
    pub(crate) fn push_control(&mut self, out: Output) {
        self.outputs.push_back(out);
    }

    /// Send a response to an unauthenticated request, subject to the global response limit.
    pub(crate) fn send_unauth(&mut self, tuple: FiveTuple, mut b: MessageBuilder, now_ms: u64) {
        let rate = self.cfg.max_unauthenticated_responses_per_sec;
        let elapsed = now_ms.saturating_sub(self.unauth_last_ms);
        if elapsed >= 1 {
            let refill = u32::try_from(elapsed.saturating_mul(u64::from(rate)) / 1000).unwrap_or(u32::MAX);
            if refill > 0 {
                self.unauth_tokens = self.unauth_tokens.saturating_add(refill).min(rate);
                self.unauth_last_ms = now_ms;
            }
        }
        if self.unauth_tokens == 0 {
            self.stats.dropped_rate_limited += 1;
            return;
        }
        self.unauth_tokens -= 1;
        self.add_software(&mut b);
        self.send_response(tuple, b.into_bytes());
    }

    pub(crate) fn add_software(&self, b: &mut MessageBuilder) {
        if let Some(s) = &self.cfg.software {
            b.attr(attr::SOFTWARE, s.as_bytes());
        }
    }

    pub(crate) fn send_response(&mut self, tuple: FiveTuple, bytes: Vec<u8>) {
        if bytes.len() >= 2 && u16::from_be_bytes([bytes[0], bytes[1]]) & 0x0110 == 0x0110 {
            self.stats.error_responses += 1;
        }
        self.push_data(Output::ToClient {
            transport: tuple.transport,
            client: tuple.client,
            server: tuple.server,
            bytes,
        });
    }

    pub(crate) fn release_user(&mut self, user_id: &str) {
        if let Some(n) = self.per_user.get_mut(user_id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_user.remove(user_id);
            }
        }
    }

    /// Delete an allocation and tell the driver to close its relay socket.
    pub(crate) fn remove_allocation(&mut self, tuple: &FiveTuple) {
        if let Some(alloc) = self.allocations.remove(tuple) {
            self.by_relay.remove(&alloc.relay_addr);
            self.release_user(&alloc.user_id);
            self.stats.allocations_deleted += 1;
            self.push_control(Output::ReleaseRelay { relay_addr: alloc.relay_addr });
        }
    }
}
