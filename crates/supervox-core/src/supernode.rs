//! The supernode state machine.
//!
//! A supernode accepts clients over Noise links and serves them: name claims,
//! presence, lookups and call signalling. Supernodes keep no links to each
//! other: they talk in sealed overlay datagrams ([`crate::overlay`]). SWIM
//! membership gives every supernode the live set; each record (a name's claim
//! and its owner's presence) lives on the R supernodes rendezvous hashing
//! picks from that set ([`index`]), so a lookup is one overlay hop; call
//! signals go straight to the callee's supernode.

use crate::directory::Directory;
use crate::identity::Identity;
use crate::overlay::admission::{self, Admission};
use crate::overlay::membership::{Membership, MembershipConfig};
use crate::overlay::wire::{NetworkKey, Wire, DEFAULT_PEER_KEYS};
use crate::{ConnId, Map};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use supervox_proto::overlay::{Member, MemberState};
use supervox_proto::{Claimed, LookupAnswer, Message, NameClaim, Presence, Refusal, RelayTls, Role, UserId};
use tracing::{debug, info, warn};

mod index;
pub mod mailbox;
mod overlay_io;
mod step_back;
#[cfg(test)]
mod tests;

use index::{HolderCache, PendingTable};
pub use step_back::{StepBackConfig, MAX_REFUTATIONS, REFUTATION_WINDOW_MS};

/// Most lookups one client may have in flight.
pub const MAX_LOOKUPS_PER_CONN: usize = 16;
/// Most call signals one client may have in flight to other supernodes (a call needs
/// one or two at a time; the bound keeps one client from filling the pending table).
pub const MAX_SIGNALS_PER_CONN: usize = 8;
/// How long a lookup waits for the index before answering with what it has.
pub const LOOKUP_TIMEOUT_MS: u64 = 1_500;
/// STUN dial-backs a supernode performs for its peers per second, at most.
pub const DIAL_BACKS_PER_SEC: u32 = 200;
/// Load (percent of capacity) from which the network asks volunteers to
/// become supernodes.
pub const PROMOTE_AT_LOAD_PCT: u8 = 80;
/// Replicas of each presence record, by default.
pub const DEFAULT_REPLICAS: usize = 3;
/// Replicas of each name claim, by default: with a third of all supernodes
/// gone at once, all ten die together for one name in 60 000 (0.3^10).
pub const DEFAULT_CLAIM_REPLICAS: usize = 10;

/// Supernode settings.
#[derive(Debug, Clone)]
pub struct SupernodeConfig {
    /// The address other nodes dial and presence records name (TCP for
    /// clients, UDP for the overlay).
    pub advertise: SocketAddr,
    /// Supernodes to join through at start.
    pub seeds: Vec<SocketAddr>,
    /// Clients served before new ones are redirected.
    pub max_clients: usize,
    /// Agent string for Hello.
    pub agent: String,
    /// The network's identifier, mixed into every pairwise overlay key:
    /// public for the open network (members authenticate with their own keys).
    pub network_key: NetworkKey,
    /// Pairwise overlay keys kept (one per member we talk to), at most.
    pub peer_keys: usize,
    /// Copies of each presence record in the index (R).
    pub replicas: usize,
    /// Copies of each name claim (R_c ≥ R).
    pub claim_replicas: usize,
    /// Membership timing.
    pub membership: MembershipConfig,
    /// Leading zero bits every member's proof of work needs (a network
    /// parameter, the same at every member: [`crate::overlay::admission`]).
    pub member_difficulty: u8,
    /// Our proof's nonce, solved beforehand ([`admission::solve`], off the
    /// driver's event loop) and kept with the identity; `None` or a nonce
    /// that does not verify: solved in [`Supernode::new`] (cheap only at a
    /// low difficulty: tests, the simulator).
    pub member_nonce: Option<u32>,
    /// Live members admitted per IPv4 /24 or IPv6 /48 (loopback is never
    /// limited); `usize::MAX`: no limit.
    pub max_members_per_prefix: usize,
    /// A promoted supernode steps back to the client role on these terms;
    /// `None`: never (a supernode started as one).
    pub step_back: Option<StepBackConfig>,
}

impl SupernodeConfig {
    /// Settings with the defaults for everything but the address and seeds.
    pub fn new(advertise: SocketAddr, seeds: Vec<SocketAddr>) -> Self {
        Self {
            advertise,
            seeds,
            max_clients: crate::defaults::MAX_CLIENTS,
            agent: "supervox".into(),
            network_key: NetworkKey::open_network(),
            peer_keys: DEFAULT_PEER_KEYS,
            replicas: DEFAULT_REPLICAS,
            claim_replicas: DEFAULT_CLAIM_REPLICAS,
            membership: MembershipConfig::default(),
            member_difficulty: admission::DEFAULT_DIFFICULTY,
            member_nonce: None,
            max_members_per_prefix: admission::DEFAULT_MAX_MEMBERS_PER_PREFIX,
            step_back: None,
        }
    }
}

/// What the supernode asks its driver to do.
#[derive(Debug, Clone, PartialEq, Eq)]
// Short-lived queue items: boxing the message would cost an allocation
// per message for no memory saved.
#[allow(clippy::large_enum_variant)]
pub enum SnOutput {
    /// Send a message on an established client link.
    Send(ConnId, Message),
    /// Close a connection, with the reason for the log.
    Close(ConnId, String),
    /// Send a sealed overlay datagram from our UDP address.
    Datagram {
        /// Destination supernode.
        to: SocketAddr,
        /// The sealed bytes.
        bytes: Vec<u8>,
        /// The message's kind, for metrics and the simulator.
        kind: &'static str,
    },
    /// A name claim was stored, new or replacing the one held for its name
    /// (claims are never deleted): persist it before sending the outputs
    /// that follow, which may acknowledge it.
    ClaimStored(NameClaim),
    /// The mailboxes changed: persist this before sending the outputs that
    /// follow (a `stored` answer about a put comes after its change).
    Mail(mailbox::MailChange),
    /// Check that a volunteer accepts TCP connections at `addr`; report with
    /// [`Supernode::on_reachable`].
    CheckReachable {
        /// The volunteer's connection.
        conn: ConnId,
        /// Where it says it listens.
        addr: SocketAddr,
    },
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
    /// The member that answers our clients' change-IP STUN requests
    /// ([`Supernode::dial_back_partner`]) is now this one (`None`: no member
    /// left): the STUN server's OTHER-ADDRESS.
    DialBackPartner(Option<SocketAddr>),
    /// We stepped back ([`StepBackConfig`]): clients were redirected and the
    /// leave gossiped (send the datagrams queued before this), stop serving.
    SteppedBack {
        /// Why, for the log.
        reason: String,
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
    /// Lookups sent to other supernodes (hedges included).
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
    /// Overlay datagrams refused (unauthenticated, replayed, malformed, from
    /// a stranger that has not proved its address, or limited).
    pub overlay_refused: u64,
    /// Overlay answers not sent: larger than what came from an unvalidated address.
    pub overlay_amplification_refused: u64,
    /// Records handed to new holders after membership changes.
    pub handoffs: u64,
    /// Clients promoted to supernode.
    pub promotions: u64,
    /// Overlay answers dropped because they came from a member the request
    /// was not sent to (or one that had answered already).
    pub answers_refused: u64,
    /// Lookups answered `Unknown` because the holders named different keys.
    pub lookups_disputed: u64,
    /// Lookups answered with the one key a single holder named, every other
    /// holder asked being silent (no majority, no contradiction).
    pub lookups_unconfirmed: u64,
    /// Claims sent as renewal-only: their source address was over its budget
    /// of new names ([`NEW_NAMES_PER_SOURCE`]).
    pub claims_rate_limited: u64,
    /// Renewals accepted with the holders that confirmed them and the rest
    /// silent (no majority, no refusal): a sign-in during a crash's churn.
    pub claims_renewed_unconfirmed: u64,
    /// Supernodes not admitted to the member table: their proof of work did
    /// not verify (each counted once a minute however often it is gossiped).
    pub members_refused_proof: u64,
    /// Supernodes not admitted: their IPv4 /24 or IPv6 /48 had
    /// `max_members_per_prefix` live members already (counted as above).
    pub members_refused_prefix: u64,
}

#[derive(Debug)]
enum PeerKind {
    Pending,
    Client(UserId),
}

#[derive(Debug)]
struct Conn {
    remote: SocketAddr,
    kind: PeerKind,
    lookups: usize,
    /// Call signals in flight to other supernodes for this client.
    signals: usize,
    /// Mail fetches in flight for this client.
    mail_fetches: usize,
    /// A client's requests (lookups, claims, presence, signals) per second.
    requests: RateLimit,
    /// A client's mail puts per minute.
    mail_puts: RateLimit,
    /// The client's claim once a majority of its holders accepted it, sent
    /// along with its presence to the index (a refused claim never is).
    claim: Option<NameClaim>,
    /// A claim of this client's is waiting on its holders (one at a time).
    claiming: bool,
    /// A presence that arrived while its claim was undecided: published once
    /// the claim is.
    deferred_publish: Option<Presence>,
    /// The name it published presence under (unpublished when it leaves).
    published: Option<String>,
    /// When it may volunteer again (volunteers ask every 10 s).
    next_volunteer_ms: u64,
}

impl Conn {
    /// The client user on this connection, if signed in.
    fn user(&self) -> Option<UserId> {
        match self.kind {
            PeerKind::Client(u) => Some(u),
            PeerKind::Pending => None,
        }
    }
}

/// A supernode: see the module docs.
#[derive(Debug)]
pub struct Supernode {
    me: UserId,
    cfg: SupernodeConfig,
    conns: Map<ConnId, Conn>,
    clients: Map<UserId, ConnId>,
    directory: Directory,
    membership: Membership,
    /// Pairwise keys, replay windows and address validation of the overlay.
    wire: Wire,
    /// Messages for supernodes known only by address (seeds), sent once
    /// their `HelloAck` names them: `(Hello sent at, messages)`. Bounded.
    parked: Map<SocketAddr, (u64, Vec<supervox_proto::overlay::OverlayMsg>)>,
    /// The latest time an input brought (sealing stamps counters with it).
    clock_ms: u64,
    holders: HolderCache,
    pending: PendingTable,
    /// Signals recently delivered for peers: (sender, req), to drop retransmissions.
    seen_signals: VecDeque<(UserId, u64)>,
    out: VecDeque<SnOutput>,
    rng: StdRng,
    stats: SnStats,
    /// Dial-backs make us send a datagram to an address a peer names: bounded.
    dial_backs: RateLimit,
    /// TURN secret and credential lifetime (s), when this supernode relays.
    relay: Option<(Vec<u8>, u64)>,
    /// Our TURN-over-TLS listeners and certificate hash, handed out with the credentials.
    relay_tls: Option<RelayTls>,
    /// Step-back decision state (promoted supernodes).
    step: step_back::StepBackState,
    /// Presence expiry and the step-back check run this often, not per event.
    next_housekeeping_ms: u64,
    /// The dial-back partner last reported ([`SnOutput::DialBackPartner`]).
    partner: Option<SocketAddr>,
    /// The mailboxes we hold (mailbox.rs).
    mail: mailbox::MailStore,
    /// Clients' puts and fetches waiting on holders, with their deadlines.
    mail_pending: Map<u64, (mailbox::MailPending, u64)>,
    /// The live set changed since mailboxes were last handed off.
    mail_dirty: bool,
    /// Each held mailbox's holders when it was last handed off (or first
    /// stored): a hand-off sends a box only to holders not in its set.
    /// Bounded by the boxes held.
    mail_holder_sets: Map<UserId, Vec<(UserId, SocketAddr)>>,
    /// New names claimed per client source ([`source_key`]) and hour.
    claim_sources: Map<IpAddr, RateLimit>,
    /// Claims' lifetimes are checked this often (a scan of the directory).
    next_claim_sweep_ms: u64,
}

impl Supernode {
    /// A supernode with `identity` (its member id and overlay keys), the
    /// claims it persisted, and a seed for its randomness. Joins through the
    /// seeds on the first tick.
    pub fn new(identity: &Identity, cfg: SupernodeConfig, claims: Vec<NameClaim>, rng_seed: u64, now_ms: u64) -> Self {
        let me = identity.user_id();
        let mut directory = Directory::new();
        for c in claims {
            if let Err(e) = directory.restore(c, now_ms) {
                warn!("dropping stored claim: {e}");
            }
        }
        // A restarted process must out-rank its old incarnation: seconds
        // since the epoch do, without storing anything.
        let incarnation = u32::try_from(now_ms / 1000).unwrap_or(u32::MAX);
        let adm = Admission {
            network: cfg.network_key.bytes(),
            difficulty: cfg.member_difficulty.min(admission::MAX_DIFFICULTY),
            max_per_prefix: cfg.max_members_per_prefix,
        };
        if cfg.member_difficulty > admission::MAX_DIFFICULTY {
            warn!("member difficulty {} lowered to {}", cfg.member_difficulty, admission::MAX_DIFFICULTY);
        }
        let nonce = match cfg.member_nonce.filter(|n| adm.verify(&me, *n).is_some()) {
            Some(n) => n,
            None => {
                if cfg.member_nonce.is_some() {
                    warn!("stored member proof does not verify at difficulty {}: solving again", adm.difficulty);
                }
                admission::solve(&adm.network, &me, adm.difficulty).unwrap_or_else(|e| {
                    warn!("no member proof: {e}; other supernodes will not admit us");
                    0
                })
            }
        };
        let member = Member { id: me, addr: cfg.advertise, incarnation, state: MemberState::Alive, load: 0, nonce };
        let membership = Membership::new(member, cfg.seeds.clone(), cfg.membership, now_ms).with_admission(adm);
        let mut rng = StdRng::seed_from_u64(rng_seed);
        let wire = Wire::new(identity, cfg.network_key.clone(), rand::Rng::gen(&mut rng), cfg.peer_keys);
        let mut sn = Self {
            me,
            cfg,
            conns: Map::default(),
            clients: Map::default(),
            directory,
            membership,
            wire,
            parked: Map::default(),
            clock_ms: now_ms,
            holders: HolderCache::default(),
            pending: PendingTable::default(),
            seen_signals: VecDeque::new(),
            out: VecDeque::new(),
            rng,
            stats: SnStats::default(),
            dial_backs: RateLimit::new(DIAL_BACKS_PER_SEC),
            relay: None,
            relay_tls: None,
            step: step_back::StepBackState::default(),
            next_housekeeping_ms: now_ms,
            partner: None,
            mail: Default::default(),
            mail_pending: Map::default(),
            mail_dirty: false,
            mail_holder_sets: Map::default(),
            claim_sources: Map::default(),
            next_claim_sweep_ms: now_ms,
        };
        // Stored claims go back to their holders once we know the members.
        sn.holders.mark_all_dirty();
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
        let w = self.wire.stats();
        SnStats {
            overlay_refused: self.stats.overlay_refused + w.unauthenticated + w.replayed + w.strangers_limited,
            overlay_amplification_refused: w.amplification_refused,
            members_refused_proof: self.membership.admission_stats().bad_proof,
            members_refused_prefix: self.membership.admission_stats().prefix_full,
            ..self.stats
        }
    }

    /// Refusals of the overlay's datagram layer, by cause.
    pub fn wire_stats(&self) -> crate::overlay::wire::WireStats {
        self.wire.stats()
    }

    /// Time moves forward only.
    fn clock(&mut self, now_ms: u64) {
        self.clock_ms = self.clock_ms.max(now_ms);
    }

    /// Name claims held.
    pub fn claim_count(&self) -> usize {
        self.directory.claim_count()
    }

    /// Clients currently signed in.
    pub fn client_count(&self) -> usize {
        self.clients.len()
    }

    /// Our membership entry: identity, advertised address, incarnation.
    pub fn member(&self) -> Member {
        self.membership.me()
    }

    /// Learn supernodes as a Join's member list teaches them, without the
    /// datagrams: the simulator's warm start hands every supernode the list
    /// its Join would have fetched.
    pub fn learn_members(&mut self, members: &[Member], now_ms: u64) {
        self.clock(now_ms);
        self.membership.learn(members, now_ms);
        self.flush_membership(now_ms);
    }

    /// [`Supernode::learn_members`] with every member's rendezvous seed
    /// verified already ([`admission::verify`]): the simulator's warm start
    /// verifies each of 10 000 proofs once, not once per supernode.
    pub fn learn_verified_members(&mut self, members: &[(Member, u64)], now_ms: u64) {
        self.clock(now_ms);
        self.membership.learn_verified(members, now_ms);
        self.flush_membership(now_ms);
    }

    /// The network's admission rules as this supernode applies them.
    pub fn admission(&self) -> Admission {
        Admission {
            network: self.cfg.network_key.bytes(),
            difficulty: self.cfg.member_difficulty.min(admission::MAX_DIFFICULTY),
            max_per_prefix: self.cfg.max_members_per_prefix,
        }
    }

    /// Live supernodes we know (not us).
    pub fn peer_addrs(&self) -> Vec<SocketAddr> {
        self.membership.live().map(|m| m.addr).collect()
    }

    /// All name claims held.
    pub fn claims(&self) -> Vec<NameClaim> {
        self.directory.claims().cloned().collect()
    }

    /// Next thing for the driver to do.
    pub fn poll_output(&mut self) -> Option<SnOutput> {
        let next = self.out.pop_front();
        crate::overlay::membership::shrink_when_drained(&mut self.out);
        next
    }

    /// A client TCP connection was accepted.
    pub fn on_connected(&mut self, conn: ConnId, remote: SocketAddr) {
        self.conns.insert(
            conn,
            Conn {
                remote,
                kind: PeerKind::Pending,
                lookups: 0,
                signals: 0,
                mail_fetches: 0,
                requests: RateLimit::new(CLIENT_REQUESTS_PER_SEC),
                mail_puts: RateLimit::per_window(mailbox::MAIL_PUTS_PER_MINUTE as u32, 60_000),
                claim: None,
                claiming: false,
                deferred_publish: None,
                published: None,
                next_volunteer_ms: 0,
            },
        );
    }

    /// The link on `conn` finished its handshake and Hello.
    pub fn on_established(&mut self, conn: ConnId, role: Role, identity: UserId, _now_ms: u64) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let remote = c.remote;
        // The link refuses a weak key already (its DH would be zero); this
        // keeps the rule where the identity is used, whatever link fed it.
        if !identity.is_strong() {
            return self.close(conn, "identity is a weak or non-canonical key");
        }
        match role {
            Role::Client => self.client_joined(conn, identity, remote),
            Role::Supernode => self.close(conn, "supernodes talk in overlay datagrams, not on links"),
        }
    }

    /// Our load as a percentage of capacity.
    fn load(&self) -> u8 {
        let pct = self.clients.len().saturating_mul(100) / self.cfg.max_clients.max(1);
        u8::try_from(pct).unwrap_or(u8::MAX)
    }

    /// Supernodes for a client's host cache, the least loaded first, with
    /// their advertised loads (index by index).
    fn suggest_supernodes(&self, n: usize, include_me: bool) -> (Vec<SocketAddr>, Vec<u8>) {
        let want = n.saturating_sub(usize::from(include_me));
        let mut members: Vec<(u8, SocketAddr)> = self
            .membership
            .live()
            .filter(|m| m.state == MemberState::Alive && m.load < 100)
            .map(|m| (m.load, m.addr))
            .collect();
        // Every sign-in asks: pick the `want` least loaded in O(N), sort only those.
        if members.len() > want {
            members.select_nth_unstable(want);
            members.truncate(want);
        }
        members.sort_unstable();
        let mut out: Vec<SocketAddr> = Vec::with_capacity(n);
        let mut loads: Vec<u8> = Vec::with_capacity(n);
        if include_me {
            out.push(self.cfg.advertise);
            loads.push(self.load());
        }
        out.extend(members.iter().map(|m| m.1));
        loads.extend(members.iter().map(|m| m.0));
        (out, loads)
    }

    fn client_joined(&mut self, conn: ConnId, user: UserId, remote: SocketAddr) {
        let full = self.clients.len() >= self.cfg.max_clients && !self.clients.contains_key(&user);
        if full || self.step.done {
            self.stats.redirects += 1;
            let (supernodes, loads) = self.suggest_supernodes(20, false);
            let reason = if full { "supernode full" } else { "supernode stepping back" };
            self.send(conn, Message::Redirect { supernodes, reason: reason.into(), loads });
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
        self.membership.set_load(self.load());
        let (supernodes, loads) = self.suggest_supernodes(50, true);
        self.send(conn, Message::Welcome { supernode: self.cfg.advertise, observed: remote, supernodes, loads });
        debug!(conn, "client {user:?} signed in");
    }

    /// A message arrived on an established client link.
    pub fn on_message(&mut self, conn: ConnId, msg: Message, now_ms: u64) {
        self.clock(now_ms);
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        match &c.kind {
            PeerKind::Client(user) => {
                let user = *user;
                self.client_message(conn, user, msg, now_ms)
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
                if claim.user_id != user {
                    self.claim_answered(conn, claim.name, Err(Refusal::NotYourKey));
                } else if let Err(e) = claim.verify() {
                    self.claim_answered(conn, claim.name, Err(e.into()));
                } else {
                    let Some(c) = self.conns.get_mut(&conn) else { return };
                    if std::mem::replace(&mut c.claiming, true) {
                        // One at a time: each claim costs a datagram per holder.
                        return self.claim_answered(conn, claim.name, Err(Refusal::InFlight));
                    }
                    let source = source_key(c.remote.ip());
                    let renew_only = !self.new_name_budget(source, now_ms);
                    if renew_only {
                        self.stats.claims_rate_limited += 1;
                    }
                    self.client_claim(conn, claim, renew_only, now_ms);
                }
            }
            Message::Publish { presence } => {
                let check = if presence.user_id != user {
                    Err("presence is not signed by this connection's key".to_string())
                } else if let Err(e) = presence.verify(now_ms) {
                    Err(e.to_string())
                } else if presence.supernode != self.cfg.advertise {
                    Err(format!(
                        "presence names supernode {} but was sent to {}",
                        presence.supernode, self.cfg.advertise
                    ))
                } else {
                    Ok(())
                };
                match check {
                    Err(e) => self.publish_answered(conn, user, Err(e), now_ms),
                    Ok(()) => {
                        let Some(c) = self.conns.get_mut(&conn) else { return };
                        c.published = Some(presence.name.clone());
                        if c.claiming {
                            // Published once the claim is decided, with it if accepted.
                            c.deferred_publish = Some(presence);
                            return;
                        }
                        let claim = c.claim.clone().filter(|c| c.name == presence.name);
                        self.client_publish(conn, claim, presence, now_ms);
                    }
                }
            }
            Message::Lookup { req_id, name } => self.client_lookup(conn, req_id, name, now_ms),
            Message::MailPut { item } => self.client_mail_put(conn, user, item, now_ms),
            Message::MailFetch { fetch } => self.client_mail_fetch(conn, user, fetch, now_ms),
            Message::MailAck { ack } => self.client_mail_ack(conn, user, ack, now_ms),
            Message::Volunteer { advertise } => self.volunteer(conn, advertise, now_ms),
            Message::Signal(env) => {
                if env.from != user {
                    self.violation(conn, "signal sent on behalf of another user");
                    return;
                }
                self.route_from_client(conn, env, now_ms);
            }
            other => self.violation(conn, &format!("unexpected message from client: {}", kind(&other))),
        }
    }

    /// A client's claim was decided by its holders (index.rs): the client
    /// hears it, an accepted claim rides along with the client's presence
    /// from now on, and a presence that waited on it is published.
    fn claim_decided(&mut self, conn: ConnId, claim: NameClaim, result: Result<Claimed, Refusal>, now_ms: u64) {
        let Some(c) = self.conns.get_mut(&conn) else { return };
        c.claiming = false;
        let deferred = c.deferred_publish.take();
        let source = source_key(c.remote.ip());
        let accepted = result.is_ok();
        if accepted {
            c.claim = Some(claim.clone());
        }
        if result == Ok(Claimed::New) {
            // Charged only for a new name: renewals at every sign-in are free.
            if let Some(b) = self.claim_sources.get_mut(&source) {
                b.take(now_ms);
            }
        }
        let name = claim.name.clone();
        self.claim_answered(conn, name, result.map(|_| ()));
        if let Some(presence) = deferred {
            // A refused claim does not ride along: the holders decide on their own.
            let claim = accepted.then_some(claim).filter(|c| c.name == presence.name);
            self.client_publish(conn, claim, presence, now_ms);
        }
    }

    /// True if `source` may still claim a new name this hour (renewals are
    /// always allowed). The table is bounded: when full, sources whose hour
    /// is over are forgotten; if none is, a new source gets no new names.
    fn new_name_budget(&mut self, source: IpAddr, now_ms: u64) -> bool {
        if source.is_loopback() {
            // The supernode's own host, as for the per-host connection limit.
            return true;
        }
        if !self.claim_sources.contains_key(&source) {
            if self.claim_sources.len() >= MAX_CLAIM_SOURCES {
                self.claim_sources.retain(|_, b| !b.window_over(now_ms));
                if self.claim_sources.len() >= MAX_CLAIM_SOURCES {
                    return false;
                }
            }
            self.claim_sources.insert(source, RateLimit::per_window(NEW_NAMES_PER_SOURCE, 3_600_000));
        }
        self.claim_sources.get_mut(&source).is_some_and(|b| b.has_room(now_ms))
    }

    fn claim_answered(&mut self, conn: ConnId, name: String, result: Result<(), Refusal>) {
        if let Err(e) = &result {
            self.stats.claims_refused += 1;
            info!("claim of {name:?} refused: {e}");
        } else {
            self.stats.claims_accepted += 1;
        }
        self.send(conn, Message::ClaimResult { name, result });
    }

    fn publish_answered(&mut self, conn: ConnId, user: UserId, result: Result<(), String>, now_ms: u64) {
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

    /// Does the network need another supernode? When we, or the members on
    /// average, are at `PROMOTE_AT_LOAD_PCT` of capacity or more.
    pub fn needs_supernodes(&self) -> bool {
        let (sum, n) =
            self.membership.live().fold((u64::from(self.load()), 1u64), |(s, n), m| (s + u64::from(m.load), n + 1));
        self.load() >= PROMOTE_AT_LOAD_PCT || sum / n >= u64::from(PROMOTE_AT_LOAD_PCT)
    }

    fn volunteer(&mut self, conn: ConnId, advertise: SocketAddr, now_ms: u64) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if now_ms < c.next_volunteer_ms {
            return;
        }
        c.next_volunteer_ms = now_ms + 9_000;
        let remote = c.remote;
        let refusal = if advertise.ip() != remote.ip() || advertise.port() == 0 {
            Some(format!("cannot promote: {advertise} is not the public address we see ({})", remote.ip()))
        } else if !self.needs_supernodes() {
            Some("no promotion: the network has capacity".to_string())
        } else if self.membership.is_live_addr(&advertise) || advertise == self.cfg.advertise {
            Some(format!("{advertise} is a supernode already"))
        } else {
            None
        };
        match refusal {
            Some(reason) => {
                debug!(conn, "{reason}");
                self.send(conn, Message::Error { reason });
            }
            None => self.out.push_back(SnOutput::CheckReachable { conn, addr: advertise }),
        }
    }

    /// The driver's answer to [`SnOutput::CheckReachable`].
    pub fn on_reachable(&mut self, conn: ConnId, addr: SocketAddr, reachable: bool) {
        if self.conns.get(&conn).and_then(|c| c.user()).is_none() {
            return;
        }
        if !reachable {
            self.send(conn, Message::Error { reason: format!("cannot promote: no TCP connection to {addr}") });
            return;
        }
        self.stats.promotions += 1;
        info!(conn, "promoting the client at {addr} to supernode");
        let mut seeds = vec![self.cfg.advertise];
        seeds.extend(self.suggest_supernodes(4, false).0);
        let network_key = self.cfg.network_key.bytes();
        let difficulty = self.admission().difficulty;
        self.send(conn, Message::Promote { network_key, seeds, difficulty });
    }

    /// A connection closed (either side, any reason).
    pub fn on_closed(&mut self, conn: ConnId, _now_ms: u64) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        if let PeerKind::Client(user) = c.kind {
            if self.clients.get(&user) == Some(&conn) {
                self.clients.remove(&user);
                self.membership.set_load(self.load());
                if let Some(name) = c.published {
                    self.unpublish(user, &name);
                }
            }
        }
    }

    /// Timers: membership, presence expiry, request deadlines and retries,
    /// the step-back decision. Call it when [`Supernode::poll_timeout`] is
    /// due; calling it earlier or more often is harmless (it does what is
    /// due and nothing else).
    pub fn handle_timeout(&mut self, now_ms: u64) {
        self.clock(now_ms);
        if self.step.done {
            return;
        }
        if now_ms >= self.next_housekeeping_ms {
            self.next_housekeeping_ms = now_ms + HOUSEKEEPING_MS;
            if let Some(reason) = self.step_back_reason(now_ms) {
                self.step_back(&reason, now_ms);
                return;
            }
            self.directory.expire(now_ms);
            if now_ms >= self.next_claim_sweep_ms {
                self.next_claim_sweep_ms = now_ms + CLAIM_SWEEP_MS;
                for c in self.directory.expire_claims(now_ms) {
                    debug!("claim of {:?} expired", c.name);
                }
            }
            self.expire_mail(now_ms);
            if std::mem::take(&mut self.mail_dirty) {
                self.hand_off_mail(now_ms);
            }
        }
        self.membership.tick(&mut self.rng, now_ms);
        self.flush_membership(now_ms);
        self.expire_pending(now_ms);
    }

    /// The mailboxes this supernode holds (for metrics and tests).
    pub fn mail(&self) -> &mailbox::MailStore {
        &self.mail
    }

    /// When [`Supernode::handle_timeout`] must next run: the earliest of the
    /// membership's timers, the requests in flight and the housekeeping
    /// round. To be asked again after every input (any `handle_*`/`on_*`
    /// call may move it earlier); `None` once the supernode has stepped back.
    pub fn poll_timeout(&self) -> Option<u64> {
        if self.step.done {
            return None;
        }
        crate::timer::earliest([
            self.membership.poll_timeout(),
            self.pending.next_due_ms(),
            Some(self.next_housekeeping_ms),
        ])
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
        Message::Error { .. } => "Error",
        Message::RelayCredentials { .. } => "RelayCredentials",
        Message::Volunteer { .. } => "Volunteer",
        Message::Promote { .. } => "Promote",
        Message::MailPut { .. } => "MailPut",
        Message::MailPutResult { .. } => "MailPutResult",
        Message::MailFetch { .. } => "MailFetch",
        Message::Mail { .. } => "Mail",
        Message::MailAck { .. } => "MailAck",
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

/// Presence garbage collection and the step-back check run once a second
/// (lookups never serve an expired presence, whenever it is collected).
pub const HOUSEKEEPING_MS: u64 = 1_000;

/// Requests one client may make per second (lookups, claims, presence, call
/// signals): far above what a person dialling needs, far below what would
/// hurt a supernode.
pub const CLIENT_REQUESTS_PER_SEC: u32 = 50;

/// New names one client source (an IPv4 address, an IPv6 /64; loopback is
/// not limited) may claim through one supernode per hour.
pub const NEW_NAMES_PER_SOURCE: u32 = 10;
/// Client sources whose new-name budget is remembered (a bound on memory).
pub const MAX_CLAIM_SOURCES: usize = 100_000;
/// How often claims past their lifetime are dropped.
pub const CLAIM_SWEEP_MS: u64 = 60_000;

/// The source a new-name budget is kept for: an IPv4 address, or the /64 of
/// an IPv6 one (one host usually has a whole /64).
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let mut o = v6.octets();
            o[8..].fill(0);
            IpAddr::from(o)
        }
        v4 => v4,
    }
}

/// A per-second budget (fixed window): cheap, and enough to bound work a
/// peer can make us do.
#[derive(Debug)]
struct RateLimit {
    per_window: u32,
    window_ms: u64,
    window_start_ms: u64,
    used: u32,
}

impl RateLimit {
    fn new(per_sec: u32) -> Self {
        Self::per_window(per_sec, 1_000)
    }

    fn per_window(n: u32, window_ms: u64) -> Self {
        Self { per_window: n, window_ms, window_start_ms: 0, used: 0 }
    }

    /// True if the window is over (the budget is whole again).
    fn window_over(&self, now_ms: u64) -> bool {
        now_ms >= self.window_start_ms + self.window_ms
    }

    /// True if a unit could be spent now (nothing is spent).
    fn has_room(&self, now_ms: u64) -> bool {
        self.window_over(now_ms) || self.used < self.per_window
    }

    /// Spend one unit if the budget allows.
    fn take(&mut self, now_ms: u64) -> bool {
        if now_ms >= self.window_start_ms + self.window_ms {
            self.window_start_ms = now_ms;
            self.used = 0;
        }
        if self.used < self.per_window {
            self.used += 1;
            true
        } else {
            false
        }
    }
}
