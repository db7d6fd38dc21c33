//! The supernode state machine.
//!
//! A supernode accepts clients, keeps who is online (presence), stores name
//! claims, answers lookups and routes call signalling. Supernodes given as
//! seeds connect to each other, exchange the addresses they know (so a full
//! mesh forms), replicate name claims to every peer and forward lookups and
//! call signals to the supernode a user is attached to. The scalable overlay
//! (gossip membership, rendezvous-hashed index) replaces the full mesh later;
//! this module's inputs and outputs stay the same.

use crate::backoff::Backoff;
use crate::directory::{ClaimOutcome, Directory};
use crate::{ConnId, Map};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use supervox_proto::{CallSignal, LookupAnswer, Message, NameClaim, RelayTls, Role, SignalEnvelope, UserId};
use tracing::{debug, info, warn};

mod lookup;
#[cfg(test)]
mod tests;

use lookup::PendingLookup;

/// Most supernode addresses remembered.
pub const MAX_KNOWN_SUPERNODES: usize = 1_000;
/// Most lookups one client may have in flight.
pub const MAX_LOOKUPS_PER_CONN: usize = 16;
/// How long a forwarded lookup waits for other supernodes.
pub const LOOKUP_TIMEOUT_MS: u64 = 1_500;
/// STUN dial-backs a supernode performs for its peers per second, at most.
pub const DIAL_BACKS_PER_SEC: u32 = 200;
/// Claims per replication message (keeps each under one Noise message).
const CLAIMS_PER_MESSAGE: usize = 200;

/// Supernode settings.
#[derive(Debug, Clone)]
pub struct SupernodeConfig {
    /// The address other nodes dial and presence records name.
    pub advertise: SocketAddr,
    /// Supernodes to join at start.
    pub seeds: Vec<SocketAddr>,
    /// Clients served before new ones are redirected.
    pub max_clients: usize,
    /// Agent string for Hello.
    pub agent: String,
}

/// What the supernode asks its driver to do.
#[derive(Debug, Clone, PartialEq, Eq)]
// Short-lived queue items: boxing the message would cost an allocation
// per message for no memory saved.
#[allow(clippy::large_enum_variant)]
pub enum SnOutput {
    /// Send a message on an established link.
    Send(ConnId, Message),
    /// Close a connection, with the reason for the log.
    Close(ConnId, String),
    /// Open a connection to another supernode; report back with
    /// [`Supernode::on_connected`] or [`Supernode::on_dial_failed`].
    Dial(SocketAddr),
    /// The set of name claims changed: persist [`Supernode::claims`].
    ClaimsChanged,
    /// A peer asks us to answer a client's STUN request from our UDP address.
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
}

/// Counters a supernode keeps for its operators (see `--metrics`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SnStats {
    /// Claims accepted from clients.
    pub claims_accepted: u64,
    /// Claims refused (taken, invalid).
    pub claims_refused: u64,
    /// Presence records refused (forged, stale, not owner).
    pub presence_refused: u64,
    /// Lookups asked by clients.
    pub lookups: u64,
    /// Lookups forwarded to peer supernodes.
    pub lookups_forwarded: u64,
    /// Call signals routed (locally or to a peer).
    pub signals_routed: u64,
    /// Call signals that could not be delivered.
    pub signals_failed: u64,
    /// Clients redirected because this supernode was full.
    pub redirects: u64,
    /// Connections closed for protocol violations.
    pub violations: u64,
    /// Client requests refused by the per-client rate limit.
    pub rate_limited: u64,
}

#[derive(Debug)]
enum PeerKind {
    Pending,
    Client(UserId),
    Supernode { advertise: SocketAddr },
}

#[derive(Debug)]
struct Conn {
    remote: SocketAddr,
    /// Set when we dialled this connection.
    dialed: Option<SocketAddr>,
    kind: PeerKind,
    lookups: usize,
    /// A client's requests (lookups, claims, presence, signals) per second.
    requests: RateLimit,
}

#[derive(Debug)]
struct KnownSn {
    next_dial_ms: u64,
    dialing: bool,
    backoff: Backoff,
}

/// A supernode: see the module docs.
#[derive(Debug)]
pub struct Supernode {
    me: UserId,
    cfg: SupernodeConfig,
    conns: Map<ConnId, Conn>,
    clients: Map<UserId, ConnId>,
    peers: Map<SocketAddr, ConnId>,
    known: BTreeMap<SocketAddr, KnownSn>,
    directory: Directory,
    lookups: Map<u64, PendingLookup>,
    next_req: u64,
    out: VecDeque<SnOutput>,
    rng: StdRng,
    stats: SnStats,
    /// Dial-backs make us send a datagram to an address a peer names: bounded.
    dial_backs: RateLimit,
    /// TURN secret and credential lifetime (s), when this supernode relays.
    relay: Option<(Vec<u8>, u64)>,
    /// Our TURN-over-TLS listeners and certificate hash, handed out with the credentials.
    relay_tls: Option<RelayTls>,
}

impl Supernode {
    /// A supernode with identity `me`, the claims it persisted, and a seed for
    /// its jitter. Dials the seeds on the first tick.
    pub fn new(me: UserId, cfg: SupernodeConfig, claims: Vec<NameClaim>, rng_seed: u64, now_ms: u64) -> Self {
        let mut directory = Directory::new();
        for c in claims {
            if let Err(e) = directory.restore(c) {
                warn!("dropping stored claim: {e}");
            }
        }
        let mut sn = Self {
            me,
            cfg,
            conns: Map::default(),
            clients: Map::default(),
            peers: Map::default(),
            known: BTreeMap::new(),
            directory,
            lookups: Map::default(),
            next_req: 1,
            out: VecDeque::new(),
            rng: StdRng::seed_from_u64(rng_seed),
            stats: SnStats::default(),
            dial_backs: RateLimit::new(DIAL_BACKS_PER_SEC),
            relay: None,
            relay_tls: None,
        };
        for s in sn.cfg.seeds.clone() {
            sn.learn(s, now_ms);
        }
        sn
    }

    /// The Hello this supernode sends on every link.
    pub fn hello(&self) -> Message {
        Message::Hello {
            role: Role::Supernode,
            identity: self.me,
            advertise: Some(self.cfg.advertise),
            agent: self.cfg.agent.clone(),
        }
    }

    /// Ask the peer supernode at `peer` to answer a client's STUN request
    /// from its address (NAT filtering discovery). False if not linked to it.
    pub fn request_dial_back(
        &mut self,
        peer: SocketAddr,
        transaction_id: [u8; 12],
        mapped: SocketAddr,
        to: SocketAddr,
        padding: u16,
    ) -> bool {
        match self.peers.get(&peer) {
            Some(&conn) => {
                self.send(conn, Message::StunDialBack { transaction_id, mapped, to, padding });
                true
            }
            None => false,
        }
    }

    /// Hand every signed-in client TURN credentials for our relay, minted
    /// with `secret` and valid for `ttl_secs` (renewed with each presence).
    pub fn enable_relay_credentials(&mut self, secret: Vec<u8>, ttl_secs: u64) {
        self.relay = Some((secret, ttl_secs));
    }

    /// Tell clients, with their credentials, where our relay also takes TURN over TLS and
    /// which certificate (SHA-256 of its DER) it shows there.
    pub fn enable_relay_tls(&mut self, tls: RelayTls) {
        self.relay_tls = Some(tls);
    }

    /// Our advertised address.
    pub fn advertise(&self) -> SocketAddr {
        self.cfg.advertise
    }

    /// Operator counters.
    pub fn stats(&self) -> SnStats {
        self.stats
    }

    /// Name claims held.
    pub fn claim_count(&self) -> usize {
        self.directory.claim_count()
    }

    /// Clients currently signed in.
    pub fn client_count(&self) -> usize {
        self.clients.len()
    }

    /// Supernodes we have a link to.
    pub fn peer_addrs(&self) -> Vec<SocketAddr> {
        self.peers.keys().copied().collect()
    }

    /// All name claims held (for persistence).
    pub fn claims(&self) -> Vec<NameClaim> {
        self.directory.claims().cloned().collect()
    }

    /// Next thing for the driver to do.
    pub fn poll_output(&mut self) -> Option<SnOutput> {
        self.out.pop_front()
    }

    /// A TCP connection is up (accepted, or dialled to `dialed`).
    pub fn on_connected(&mut self, conn: ConnId, remote: SocketAddr, dialed: Option<SocketAddr>) {
        if let Some(addr) = dialed {
            if let Some(k) = self.known.get_mut(&addr) {
                k.dialing = false;
            }
        }
        self.conns.insert(
            conn,
            Conn {
                remote,
                dialed,
                kind: PeerKind::Pending,
                lookups: 0,
                requests: RateLimit::new(CLIENT_REQUESTS_PER_SEC),
            },
        );
    }

    /// A dial failed; try again later with backoff.
    pub fn on_dial_failed(&mut self, addr: SocketAddr, now_ms: u64) {
        if let Some(k) = self.known.get_mut(&addr) {
            k.dialing = false;
            k.next_dial_ms = now_ms + k.backoff.next_delay(&mut self.rng);
        }
    }

    /// The link on `conn` finished its handshake and Hello.
    pub fn on_established(
        &mut self,
        conn: ConnId,
        role: Role,
        identity: UserId,
        advertise: Option<SocketAddr>,
        now_ms: u64,
    ) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let (remote, dialed) = (c.remote, c.dialed);
        match (role, advertise) {
            (Role::Client, _) => self.client_joined(conn, identity, remote),
            (Role::Supernode, Some(adv)) if adv != self.cfg.advertise => {
                self.supernode_joined(conn, identity, adv, dialed, now_ms)
            }
            (Role::Supernode, _) => self.close(conn, "supernode hello without a usable advertised address"),
        }
    }

    fn client_joined(&mut self, conn: ConnId, user: UserId, remote: SocketAddr) {
        if self.clients.len() >= self.cfg.max_clients && !self.clients.contains_key(&user) {
            self.stats.redirects += 1;
            let supernodes = self.peers.keys().copied().collect();
            self.send(conn, Message::Redirect { supernodes, reason: "supernode full".into() });
            self.close(conn, "full: redirected client");
            return;
        }
        if let Some(old) = self.clients.insert(user, conn) {
            if old != conn {
                self.close(old, "replaced by a newer connection of the same user");
            }
        }
        if let Some(c) = self.conns.get_mut(&conn) {
            c.kind = PeerKind::Client(user);
        }
        let mut supernodes: Vec<SocketAddr> = vec![self.cfg.advertise];
        supernodes.extend(self.known.keys().copied().take(49));
        self.send(conn, Message::Welcome { supernode: self.cfg.advertise, observed: remote, supernodes });
        debug!(conn, "client {user:?} signed in");
    }

    fn supernode_joined(
        &mut self,
        conn: ConnId,
        identity: UserId,
        adv: SocketAddr,
        dialed: Option<SocketAddr>,
        now_ms: u64,
    ) {
        self.learn(adv, now_ms);
        if let Some(k) = self.known.get_mut(&adv) {
            k.backoff.reset();
        }
        if let Some(&other) = self.peers.get(&adv) {
            if other != conn && self.conns.contains_key(&other) {
                // Both sides dialled: keep the link dialled by the smaller id,
                // a rule both ends evaluate the same way.
                let keep_ours = self.me < identity;
                let this_is_ours = dialed.is_some();
                if keep_ours != this_is_ours {
                    self.close(conn, "duplicate supernode link");
                    return;
                }
                self.close(other, "duplicate supernode link");
            }
        }
        self.peers.insert(adv, conn);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.kind = PeerKind::Supernode { advertise: adv };
        }
        info!("supernode link up: {adv}");
        let mut supernodes: Vec<SocketAddr> = self.known.keys().copied().collect();
        supernodes.push(self.cfg.advertise);
        self.send(conn, Message::Peers { supernodes });
        let claims: Vec<NameClaim> = self.directory.claims().cloned().collect();
        for chunk in claims.chunks(CLAIMS_PER_MESSAGE) {
            self.send(conn, Message::Replicate { claims: chunk.to_vec() });
        }
    }

    /// A message arrived on an established link.
    pub fn on_message(&mut self, conn: ConnId, msg: Message, now_ms: u64) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        match &c.kind {
            PeerKind::Client(user) => {
                let user = *user;
                self.client_message(conn, user, msg, now_ms)
            }
            PeerKind::Supernode { advertise, .. } => {
                let adv = *advertise;
                self.peer_message(conn, adv, msg, now_ms)
            }
            PeerKind::Pending => self.violation(conn, "message before hello"),
        }
    }

    fn client_message(&mut self, conn: ConnId, user: UserId, msg: Message, now_ms: u64) {
        // A flood from one client costs it its answers, not everyone else their supernode.
        if !matches!(msg, Message::Ping { .. } | Message::Pong { .. })
            && !self.conns.get_mut(&conn).is_some_and(|c| c.requests.take(now_ms))
        {
            self.stats.rate_limited += 1;
            if self.stats.rate_limited.is_power_of_two() {
                warn!(conn, "client {user:?} over {CLIENT_REQUESTS_PER_SEC} requests/s: refusing");
            }
            self.send(conn, Message::Error { reason: "rate limited".into() });
            return;
        }
        match msg {
            Message::Claim { claim } => {
                let name = claim.name.clone();
                let result = if claim.user_id != user {
                    Err("claim is not signed by this connection's key".to_string())
                } else {
                    match self.directory.claim(claim.clone()) {
                        Ok(ClaimOutcome::Stored) => {
                            self.broadcast_peers(Message::Replicate { claims: vec![claim] });
                            self.out.push_back(SnOutput::ClaimsChanged);
                            Ok(())
                        }
                        Ok(_) => Ok(()),
                        Err(e) => Err(e.to_string()),
                    }
                };
                if let Err(e) = &result {
                    self.stats.claims_refused += 1;
                    info!("claim of {name:?} refused: {e}");
                } else {
                    self.stats.claims_accepted += 1;
                }
                self.send(conn, Message::ClaimResult { name, result });
            }
            Message::Publish { presence } => {
                let result = if presence.user_id != user {
                    Err("presence is not signed by this connection's key".to_string())
                } else {
                    let home = self.cfg.advertise;
                    self.directory.publish(presence, home, now_ms).map_err(|e| e.to_string())
                };
                let ok = result.is_ok();
                if let Err(e) = &result {
                    self.stats.presence_refused += 1;
                    warn!(conn, "presence refused: {e}");
                }
                self.send(conn, Message::PublishResult { result });
                if let (true, Some((secret, ttl))) = (ok, &self.relay) {
                    let (username, password) = supervox_turn::mint_credentials(secret, &user.0, now_ms / 1000, *ttl);
                    let expires_ms = (now_ms / 1000 + ttl) * 1000;
                    let relays = vec![self.cfg.advertise];
                    let tls = self.relay_tls.clone();
                    self.send(conn, Message::RelayCredentials { username, password, expires_ms, relays, tls });
                }
            }
            Message::Lookup { req_id, name } => self.client_lookup(conn, req_id, name, now_ms),
            Message::Signal(env) => {
                if env.from != user {
                    self.violation(conn, "signal sent on behalf of another user");
                    return;
                }
                self.route_from_client(conn, env);
            }
            other => self.violation(conn, &format!("unexpected message from client: {}", kind(&other))),
        }
    }

    fn peer_message(&mut self, conn: ConnId, from_sn: SocketAddr, msg: Message, now_ms: u64) {
        match msg {
            Message::Peers { supernodes } => {
                for s in supernodes {
                    self.learn(s, now_ms);
                }
            }
            Message::Replicate { claims } => {
                let mut changed = false;
                for c in claims {
                    match self.directory.replicate(c, now_ms) {
                        Ok(ClaimOutcome::Stored) => changed = true,
                        Ok(ClaimOutcome::Replaced(loser)) => {
                            changed = true;
                            warn!("claim of {:?} by {:?} lost a conflict", loser.name, loser.user_id);
                        }
                        Ok(ClaimOutcome::Unchanged) => {}
                        Err(e) => debug!("replicated claim not stored: {e}"),
                    }
                }
                if changed {
                    self.out.push_back(SnOutput::ClaimsChanged);
                }
            }
            Message::Lookup { req_id, name } => {
                let answer = self.directory.lookup(&name, now_ms);
                self.send(conn, Message::LookupResult { req_id, answer });
            }
            Message::LookupResult { req_id, answer } => self.peer_answer(req_id, answer, now_ms),
            Message::Signal(env) => self.route_from_peer(from_sn, env),
            Message::Error { reason } => warn!("supernode {from_sn} reports: {reason}"),
            Message::StunDialBack { transaction_id, mapped, to, padding } => {
                if self.dial_backs.take(now_ms) {
                    self.out.push_back(SnOutput::StunDialBack { transaction_id, mapped, to, padding });
                }
            }
            other => self.violation(conn, &format!("unexpected message from supernode: {}", kind(&other))),
        }
    }

    fn route_from_client(&mut self, conn: ConnId, env: SignalEnvelope) {
        let call_id = env.call_id;
        let failure = if env.to_supernode == self.cfg.advertise {
            match self.clients.get(&env.to) {
                Some(&to) => {
                    self.send(to, Message::Signal(env));
                    None
                }
                None => Some("callee is not connected to its supernode".to_string()),
            }
        } else {
            match self.peers.get(&env.to_supernode) {
                Some(&peer) => {
                    self.send(peer, Message::Signal(env));
                    None
                }
                None => Some(format!("callee's supernode {} is unreachable", env.to_supernode)),
            }
        };
        if let Some(reason) = failure {
            self.stats.signals_failed += 1;
            self.send(conn, Message::SignalFailed { call_id, reason });
        } else {
            self.stats.signals_routed += 1;
        }
    }

    fn route_from_peer(&mut self, from_sn: SocketAddr, env: SignalEnvelope) {
        if env.to_supernode == self.cfg.advertise {
            if let Some(&to) = self.clients.get(&env.to) {
                self.send(to, Message::Signal(env));
                return;
            }
        }
        // Undeliverable: turn an invite into a rejection so the caller learns fast.
        if matches!(env.body, CallSignal::Invite { .. }) {
            if let Some(&back) = self.peers.get(&from_sn) {
                let reply = SignalEnvelope {
                    call_id: env.call_id,
                    from: env.to,
                    to: env.from,
                    to_supernode: from_sn,
                    body: CallSignal::Reject { reason: "callee is no longer connected to its supernode".into() },
                };
                self.send(back, Message::Signal(reply));
            }
        }
    }

    /// A connection closed (either side, any reason).
    pub fn on_closed(&mut self, conn: ConnId, now_ms: u64) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        match c.kind {
            PeerKind::Client(user) => {
                if self.clients.get(&user) == Some(&conn) {
                    self.clients.remove(&user);
                    self.directory.remove_presence(&user);
                }
            }
            PeerKind::Supernode { advertise, .. } => {
                if self.peers.get(&advertise) == Some(&conn) {
                    self.peers.remove(&advertise);
                    info!("supernode link down: {advertise}");
                    if let Some(k) = self.known.get_mut(&advertise) {
                        k.next_dial_ms = now_ms + k.backoff.next_delay(&mut self.rng);
                    }
                }
            }
            PeerKind::Pending => {}
        }
        if let Some(addr) = c.dialed {
            if !self.peers.contains_key(&addr) {
                self.on_dial_failed(addr, now_ms);
            }
        }
    }

    /// Timers: presence expiry, lookup deadlines, re-dialling supernodes.
    pub fn on_tick(&mut self, now_ms: u64) {
        self.directory.expire(now_ms);
        self.expire_lookups(now_ms);
        let due: Vec<SocketAddr> = self
            .known
            .iter()
            .filter(|(a, k)| !k.dialing && k.next_dial_ms <= now_ms && !self.peers.contains_key(a))
            .map(|(a, _)| *a)
            .collect();
        for addr in due {
            if let Some(k) = self.known.get_mut(&addr) {
                k.dialing = true;
                // Until the dial reports back, do not dial again.
                k.next_dial_ms = u64::MAX;
            }
            self.out.push_back(SnOutput::Dial(addr));
        }
    }

    fn learn(&mut self, addr: SocketAddr, now_ms: u64) {
        if addr == self.cfg.advertise || self.known.contains_key(&addr) || self.known.len() >= MAX_KNOWN_SUPERNODES {
            return;
        }
        self.known.insert(addr, KnownSn { next_dial_ms: now_ms, dialing: false, backoff: Backoff::new(500, 30_000) });
    }

    fn broadcast_peers(&mut self, msg: Message) {
        let conns: Vec<ConnId> = self.peers.values().copied().collect();
        for c in conns {
            self.send(c, msg.clone());
        }
    }

    fn send(&mut self, conn: ConnId, msg: Message) {
        self.out.push_back(SnOutput::Send(conn, msg));
    }

    fn violation(&mut self, conn: ConnId, reason: &str) {
        self.stats.violations += 1;
        self.close(conn, reason);
    }

    fn close(&mut self, conn: ConnId, reason: &str) {
        warn!(conn, "closing: {reason}");
        self.out.push_back(SnOutput::Close(conn, reason.to_string()));
    }
}

/// A message's variant name, for logs (never its contents).
pub fn kind(msg: &Message) -> &'static str {
    match msg {
        Message::Hello { .. } => "Hello",
        Message::Welcome { .. } => "Welcome",
        Message::Redirect { .. } => "Redirect",
        Message::Ping { .. } => "Ping",
        Message::Pong { .. } => "Pong",
        Message::Claim { .. } => "Claim",
        Message::ClaimResult { .. } => "ClaimResult",
        Message::Publish { .. } => "Publish",
        Message::PublishResult { .. } => "PublishResult",
        Message::Lookup { .. } => "Lookup",
        Message::LookupResult { .. } => "LookupResult",
        Message::Signal(_) => "Signal",
        Message::SignalFailed { .. } => "SignalFailed",
        Message::Peers { .. } => "Peers",
        Message::Replicate { .. } => "Replicate",
        Message::Error { .. } => "Error",
        Message::StunDialBack { .. } => "StunDialBack",
        Message::RelayCredentials { .. } => "RelayCredentials",
    }
}

/// Merge two answers to the same lookup: online beats offline beats unknown;
/// of two presences the newer wins.
pub fn better_answer(a: LookupAnswer, b: LookupAnswer) -> LookupAnswer {
    use LookupAnswer::*;
    match (a, b) {
        (Online { claim, presence: p1 }, Online { presence: p2, .. }) => {
            let presence = if p2.seq > p1.seq { p2 } else { p1 };
            Online { claim, presence }
        }
        (a @ Online { .. }, _) | (_, a @ Online { .. }) => a,
        (a @ Offline { .. }, _) | (_, a @ Offline { .. }) => a,
        (Unknown, Unknown) => Unknown,
    }
}

/// Requests one client may make per second (lookups, claims, presence, call
/// signals): far above what a person dialling needs, far below what would
/// hurt a supernode.
pub const CLIENT_REQUESTS_PER_SEC: u32 = 50;

/// A per-second budget (fixed window): cheap, and enough to bound work a
/// peer can make us do.
#[derive(Debug)]
struct RateLimit {
    per_sec: u32,
    window_start_ms: u64,
    used: u32,
}

impl RateLimit {
    fn new(per_sec: u32) -> Self {
        Self { per_sec, window_start_ms: 0, used: 0 }
    }

    /// Spend one unit if the budget allows.
    fn take(&mut self, now_ms: u64) -> bool {
        if now_ms >= self.window_start_ms + 1_000 {
            self.window_start_ms = now_ms;
            self.used = 0;
        }
        if self.used < self.per_sec {
            self.used += 1;
            true
        } else {
            false
        }
    }
}
