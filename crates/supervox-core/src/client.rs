//! The client state machine: one link to a supernode, sign-in (name claim
//! and presence), the host cache and reconnection, and the calls.
//!
//! The driver opens connections when asked ([`ClientOutput::Connect`]), runs
//! a [`crate::link::Link`] on each, and reports what happens. Calls live in
//! [`calls`]; media datagrams pass through [`Client::handle_datagram`].

use crate::backoff::Backoff;
use crate::call::{Call, Verified};
use crate::host_cache::HostCache;
use crate::identity::Identity;
use crate::media_path::PathKind;
use crate::reason::{CallEnd, CallFailure, LinkClose, PathChange, ReasonText, SignInRefusal};
use crate::{ConnId, Map};
pub use promotion::VolunteerConfig;
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::VecDeque;
use std::net::SocketAddr;
use supervox_proto::{CallId, Candidate, Message, NameClaim, Presence, Role, UserId};
use tracing::{info, warn};

mod calls;
mod connect;
mod crosscheck;
mod mail;
mod peer;
pub use peer::{PeerAt, PeerLookupError};
mod predict;
mod promotion;
mod reach;
mod relay;
mod tcp;
mod trust;

pub use connect::{ATTEMPT_STAGGER_MS, ATTEMPT_TIMEOUT_MS, MAX_ATTEMPTS_IN_FLIGHT};
pub use crosscheck::{CHECK_ATTEMPT_MS, CROSS_CHECK_TIMEOUT_MS, MAX_CHECK_TRIES};
pub use mail::MAIL_FETCH_EVERY_MS;
pub use predict::Prediction;
pub use relay::{ExternalRelay, RelayTransport};
pub use tcp::{
    MAX_PENDING_INBOUND, PENDING_TIMEOUT_MS, REDIAL_ATTEMPTS, REDIAL_FIRST_MS, REDIAL_MAX_MS, SO_REFUSED_WAIT_MS,
};
#[cfg(test)]
mod connect_tests;
#[cfg(test)]
mod tests;

/// Lifetime of a presence record.
pub const PRESENCE_TTL_MS: u64 = 120_000;
/// Presence is refreshed this often.
pub const PRESENCE_REFRESH_MS: u64 = 60_000;
/// A link that lasts this long signs a fresh claim (as every sign-in does):
/// a claim lives a year from its signature, renewed while its owner is on.
pub const CLAIM_RENEW_MS: u64 = 24 * 3600 * 1000;
/// First and longest wait before a claim the holders could not decide is
/// sent again (the wait doubles in between, with jitter).
pub const CLAIM_RETRY_MIN_MS: u64 = 3_000;
/// See [`CLAIM_RETRY_MIN_MS`].
pub const CLAIM_RETRY_MAX_MS: u64 = 300_000;

/// Lookup answers come from a supernode, which is not trusted: a claim
/// counts for `name` only if it is for that name and its signature
/// verifies here.
pub(crate) fn claims_name(claim: &NameClaim, name: &str) -> bool {
    claim.name == name && claim.verify().is_ok()
}

/// The key an (untrusted) lookup answer says owns `name`, if its claim
/// holds up ([`claims_name`]).
pub(crate) fn answer_owner(answer: &supervox_proto::LookupAnswer, name: &str) -> Option<UserId> {
    match answer {
        supervox_proto::LookupAnswer::Online { claim, .. } | supervox_proto::LookupAnswer::Offline { claim } => {
            claims_name(claim, name).then_some(claim.user_id)
        }
        supervox_proto::LookupAnswer::Unknown => None,
    }
}

/// An `Online` answer for `name` holds up: its claim does, and its presence
/// is live and signed by the claim's owner.
pub(crate) fn online_holds(claim: &NameClaim, presence: &Presence, name: &str, now_ms: u64) -> bool {
    claims_name(claim, name) && presence.verify(now_ms).is_ok() && presence.user_id == claim.user_id
}

/// TURN credentials our supernode gave us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayCredentials {
    /// TURN username.
    pub username: String,
    /// TURN password.
    pub password: String,
    /// Expiry, unix ms.
    pub expires_ms: u64,
    /// TURN servers (UDP).
    pub relays: Vec<SocketAddr>,
    /// The supernode's TURN-over-TLS listeners and certificate hash, if it has any.
    pub tls: Option<supervox_proto::RelayTls>,
}

/// Client settings.
#[derive(Debug, Clone, Default)]
pub struct ClientConfig {
    /// The name to claim.
    pub name: String,
    /// Answer incoming calls as soon as the directory has confirmed the
    /// caller's name (an unverified caller only rings).
    pub auto_answer: bool,
    /// Agent string for Hello.
    pub agent: String,
    /// Send media only through relays (ours or the peer's): the peer never
    /// learns our addresses.
    pub force_relay: bool,
    /// A TURN server to use instead of our supernode's relay.
    pub external_relay: Option<ExternalRelay>,
    /// Reach the relay only this way; `None` (auto): UDP and TCP raced at sign-in, the first
    /// allocation up used, TCP dropped once UDP works (TLS instead of TCP once plain TCP to
    /// the relay failed; client/relay.rs).
    pub relay_transport: Option<RelayTransport>,
    /// Offer to serve as a supernode (`--supernode auto`).
    pub volunteer: Option<VolunteerConfig>,
    /// Offer every candidate to every peer at once (`--privacy relaxed`).
    /// By default a stranger (a peer that is not a contact) is offered our
    /// relays only until the call is up, so calling someone, or ringing
    /// them, does not tell where they are.
    pub relaxed_privacy: bool,
    /// Refuse calls from anyone whose key is not pinned (`--strangers refuse`).
    pub refuse_strangers: bool,
}

/// Something the user (or the control API) should hear about.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent {
    /// Signed in and callable through this supernode.
    SignedIn {
        /// The supernode.
        supernode: SocketAddr,
    },
    /// The supernode link went away; reconnecting.
    LostSupernode {
        /// Which one.
        supernode: SocketAddr,
        /// Why.
        reason: LinkClose,
    },
    /// The name belongs to someone else. Fatal for a daemon.
    NameRefused {
        /// Why.
        reason: SignInRefusal,
    },
    /// Someone is calling (it rings now: the directory has been asked who
    /// owns the caller's name first).
    Incoming {
        /// The call.
        call_id: CallId,
        /// Caller's name, as the caller says: show it with
        /// [`Verified::label`], never bare when `verified` is
        /// [`Verified::Unverified`].
        from: String,
        /// Caller's key.
        user_id: UserId,
        /// Whether `from` is `user_id`'s: pinned (a contact), confirmed by the directory, or neither.
        verified: Verified,
    },
    /// The callee's phone rings.
    Ringing {
        /// The call.
        call_id: CallId,
    },
    /// Media path up.
    Connected {
        /// The call.
        call_id: CallId,
        /// Peer's name.
        peer: String,
        /// Peer's key.
        user_id: UserId,
        /// Whether `peer` is `user_id`'s: pinned (a contact), confirmed by the directory, or neither.
        verified: Verified,
        /// The path in use.
        path: PathKind,
        /// Invite sent (or received) until the path worked.
        setup_ms: u64,
    },
    /// The call moved to another path.
    PathChanged {
        /// The call.
        call_id: CallId,
        /// New path.
        path: PathKind,
        /// Why.
        reason: PathChange,
    },
    /// The peer's name is pinned to another key than this call came with
    /// (possible attack): the call is refused (a [`ClientEvent::Failed`]
    /// with [`CallFailure::KeyChanged`] follows).
    KeyChanged {
        /// The call.
        call_id: CallId,
        /// The peer's name.
        name: String,
        /// The key pinned for it.
        old: UserId,
        /// The key this call came with.
        new: UserId,
    },
    /// The call never connected.
    Failed {
        /// The call.
        call_id: CallId,
        /// Why.
        reason: CallFailure,
    },
    /// Our supernode promoted us: start serving as a supernode.
    Promoted {
        /// The overlay's network key.
        network_key: [u8; 32],
        /// Members to join through.
        seeds: Vec<SocketAddr>,
        /// The network's member-proof difficulty.
        difficulty: u8,
    },
    /// Items from our mailbox, verified: store them, then call
    /// [`Client::mail_saved`] so the holders delete them.
    Mail {
        /// Each sent to us and signed by its sender.
        items: Vec<supervox_proto::mail::MailItem>,
    },
    /// A peer message (end-to-end sealed, see [`crate::social`]) arrived
    /// through our supernode; `from` is the identity the sender's link
    /// authenticated.
    Peer {
        /// Its wire id.
        id: supervox_proto::CallId,
        /// The sender.
        from: UserId,
        /// Sealed to us.
        body: Vec<u8>,
    },
    /// The answer to [`Client::lookup_peer`].
    PeerFound {
        /// The request.
        req_id: u64,
        /// The name asked for.
        name: String,
        /// Where it is, verified here.
        result: Result<peer::PeerAt, peer::PeerLookupError>,
    },
    /// A peer message we sent could not be delivered (the recipient is not
    /// at that supernode any more): leave it in the mailbox instead.
    PeerUndeliverable {
        /// Its wire id.
        id: supervox_proto::CallId,
        /// Why, as the supernode said.
        reason: String,
    },
    /// The outcome of [`Client::leave_mail`].
    MailStored {
        /// The item.
        id: supervox_proto::mail::MailId,
        /// `Ok`: a majority of the mailbox's holders has it.
        result: Result<(), String>,
    },
    /// A connected call ended.
    Ended {
        /// The call.
        call_id: CallId,
        /// Why.
        reason: CallEnd,
        /// Connected time.
        duration_ms: u64,
    },
}

/// What the client asks its driver to do.
#[derive(Debug, Clone, PartialEq)]
// Short-lived queue items: boxing the message would cost an allocation
// per message for no memory saved.
#[allow(clippy::large_enum_variant)]
pub enum ClientOutput {
    /// Open a TCP connection and a link to this supernode; report back with
    /// [`Client::on_connected`] or [`Client::on_connect_failed`].
    Connect(SocketAddr),
    /// Send on an established link.
    Send(ConnId, Message),
    /// Close a connection.
    Close(ConnId, String),
    /// Send a media datagram.
    Datagram(SocketAddr, Vec<u8>),
    /// Open up to this many spare UDP sockets (port prediction) on the media
    /// socket's address, any port; report how many opened with
    /// [`Client::on_spares_opened`] and feed what spare `i` (0, 1, …)
    /// receives to [`Client::handle_spare_datagram`]. Replaces any open ones.
    OpenSpares(u16),
    /// Send a media datagram from spare socket `i`.
    SpareDatagram(u16, SocketAddr, Vec<u8>),
    /// Close the spare sockets, all but those in `keep` (a call's media
    /// runs on them now).
    CloseSpares {
        /// The spares to keep open (indices), maybe none.
        keep: Vec<u16>,
    },
    /// Open the TCP stream to this TURN server (TURN over TCP: UDP is blocked here), inside
    /// TLS when `tls` names the SHA-256 of the DER certificate the server must present
    /// (pinned; anything else fails the stream); feed what arrives to
    /// [`Client::on_relay_frame`], report its end with [`Client::on_relay_stream_closed`].
    /// Replaces any previous relay stream.
    RelayConnect {
        /// The TURN server.
        server: SocketAddr,
        /// TLS with this pinned certificate hash, or plain TCP.
        tls: Option<[u8; 32]>,
    },
    /// Write these bytes (one TURN message or padded ChannelData) to the relay stream.
    RelayStream(Vec<u8>),
    /// Close the relay stream.
    RelayDisconnect,
    /// Open TCP media stream `stream` to a peer's passive candidate (RFC 6544);
    /// report with [`Client::on_tcp_connected`] or [`Client::on_tcp_closed`],
    /// feed its frames to [`Client::on_tcp_frame`].
    TcpConnect {
        /// The id to report it under.
        stream: u64,
        /// The peer's passive or simultaneous-open candidate.
        to: SocketAddr,
        /// Simultaneous open (RFC 6544 §4.5 `S-O`): connect from the TCP media
        /// listener's own address, so the peer, dialling our S-O candidate at the
        /// same time, meets this connection (its SYN opens our NAT's and
        /// firewall's way in, ours opens its).
        simultaneous: bool,
    },
    /// Write one media datagram on a TCP media stream, framed with a 2-byte
    /// big-endian length (RFC 4571); dropped if the stream is not up.
    TcpSend(u64, Vec<u8>),
    /// Close a TCP media stream (no report back).
    TcpClose(u64),
    /// Tell the user.
    Event(ClientEvent),
    /// The host cache changed: persist [`Client::host_cache`].
    HostCacheChanged,
    /// Resolve this host name (A and AAAA; a named seed, at the start of a
    /// connection round) and report with [`Client::handle_resolved`].
    Resolve {
        /// The name.
        host: String,
        /// The port its addresses get.
        port: u16,
    },
    /// A pinned peer key changed: persist it (before acting on any later
    /// output: a `Connected` event that follows has pinned its peer).
    Trust(crate::trust::TrustChange),
}

#[derive(Debug)]
enum SnLink {
    Idle {
        next_try_ms: u64,
    },
    /// Attempts in flight to several supernodes (see [`connect`]).
    Connecting(connect::Round),
    Open {
        conn: ConnId,
        addr: SocketAddr,
        sn: Option<SocketAddr>,
        ready: bool,
    },
}

/// A client: see the module docs.
#[derive(Debug)]
pub struct Client {
    identity: Identity,
    cfg: ClientConfig,
    host_cache: HostCache,
    backoff: Backoff,
    link: SnLink,
    presence: Option<Presence>,
    next_publish_ms: u64,
    /// When we last signed a claim of our name (renewed every [`CLAIM_RENEW_MS`]).
    claim_signed_ms: u64,
    /// When to ask again for a claim the holders could not decide (no
    /// quorum during churn); `None` when no claim waits.
    claim_retry_ms: Option<u64>,
    /// The wait before the next such retry: doubles, reset once a claim is
    /// accepted.
    claim_backoff: Backoff,
    /// Spaces the publishes after a refused one (the directory did not
    /// answer: its holders are in churn), instead of the 60 s refresh.
    publish_backoff: Backoff,
    calls: Map<CallId, Call>,
    local_candidates: Vec<Candidate>,
    media_addr: Option<SocketAddr>,
    /// Our IP as the supernode saw our link (`Welcome.observed`): the public
    /// side of our NAT even when UDP is blocked, for the server-reflexive
    /// simultaneous-open TCP candidate.
    observed_ip: Option<std::net::IpAddr>,
    probe: Option<supervox_stun::NatProbe>,
    reach: Option<supervox_stun::Reachability>,
    relay: Option<RelayCredentials>,
    /// The relay's allocations, over UDP and over a stream, raced in auto mode (client/relay.rs).
    relays: relay::Relays,
    next_req: u64,
    promotion: promotion::Promotion,
    rng: StdRng,
    /// Spreads this client's host-cache order from other clients'.
    spread_salt: u64,
    out: VecDeque<ClientOutput>,
    /// The call that holds the spare sockets (port prediction), if any.
    spares_owner: Option<CallId>,
    /// TCP media streams and our TCP media port.
    tcp: tcp::TcpStreams,
    /// Call ids of recent invites: replays are refused.
    recent_invites: crate::call::RecentInvites,
    /// When our mailbox is fetched next (while signed in).
    next_mail_fetch_ms: u64,
    /// A holder had more mail than one page: fetch again after acking.
    mail_more: bool,
    /// Mail items handed to the driver and not yet saved: a fetch's `done`
    /// with `more` that comes after the driver saved them all fetches again
    /// at once (there is no later `mail_saved` to do it).
    mail_unsaved: usize,
    /// Wire ids of peer messages in flight, oldest first (bounded), so a
    /// `SignalFailed` for one is told apart from a call's.
    peer_sent: std::collections::VecDeque<CallId>,
    /// Outstanding [`Client::lookup_peer`] requests: (req id, name), bounded.
    peer_lookups: std::collections::VecDeque<(u64, String)>,
    /// Pinned peer keys.
    trust: crate::trust::TrustStore,
    /// Keys whose calls and peer messages are dropped without a word (client/trust.rs).
    blocked: std::collections::HashSet<UserId>,
    /// Lookups being cross-checked through a second supernode, per call.
    checks: Map<CallId, crosscheck::Check>,
    /// Seeds given by host name, resolved at every connection round (client/connect.rs).
    named_seeds: Vec<crate::host_cache::NamedSeed>,
    /// Named seeds being resolved.
    resolving: Vec<(String, u16)>,
}

impl Client {
    /// A client that will sign in through the supernodes in `host_cache`.
    pub fn new(identity: Identity, cfg: ClientConfig, host_cache: HostCache, rng_seed: u64) -> Self {
        let relays = relay::Relays::new(cfg.relay_transport);
        Self {
            identity,
            cfg,
            host_cache,
            backoff: Backoff::new(250, 10_000),
            link: SnLink::Idle { next_try_ms: 0 },
            named_seeds: Vec::new(),
            resolving: Vec::new(),
            presence: None,
            next_publish_ms: u64::MAX,
            claim_signed_ms: 0,
            claim_retry_ms: None,
            claim_backoff: Backoff::new(CLAIM_RETRY_MIN_MS, CLAIM_RETRY_MAX_MS),
            publish_backoff: Backoff::new(CLAIM_RETRY_MIN_MS, CLAIM_RETRY_MAX_MS),
            calls: Map::default(),
            local_candidates: Vec::new(),
            media_addr: None,
            observed_ip: None,
            probe: None,
            reach: None,
            relay: None,
            relays,
            next_req: 1,
            promotion: promotion::Promotion::default(),
            rng: StdRng::seed_from_u64(rng_seed),
            spread_salt: rng_seed | 1,
            out: VecDeque::new(),
            spares_owner: None,
            tcp: tcp::TcpStreams::default(),
            recent_invites: Default::default(),
            next_mail_fetch_ms: u64::MAX,
            mail_more: false,
            mail_unsaved: 0,
            peer_sent: std::collections::VecDeque::new(),
            peer_lookups: std::collections::VecDeque::new(),
            trust: crate::trust::TrustStore::new(),
            blocked: std::collections::HashSet::new(),
            checks: Map::default(),
        }
    }

    /// The Hello this client sends.
    pub fn hello(&self) -> Message {
        Message::Hello {
            role: Role::Client,
            identity: self.identity.user_id(),
            advertise: None,
            agent: self.cfg.agent.clone(),
        }
    }

    /// Our identity.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Our name.
    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    /// The host cache (for persistence and status).
    pub fn host_cache(&self) -> &HostCache {
        &self.host_cache
    }

    /// Relay credentials from our supernode, if it gave any.
    pub fn relay_credentials(&self) -> Option<&RelayCredentials> {
        self.relay.as_ref()
    }

    /// The supernode we are signed in to, if any.
    pub fn supernode(&self) -> Option<SocketAddr> {
        match &self.link {
            SnLink::Open { sn, ready: true, .. } => *sn,
            _ => None,
        }
    }

    /// The supernode of the open link, signed in or still signing in (its
    /// first presence not yet stored): where publishes and claims go.
    fn link_sn(&self) -> Option<SocketAddr> {
        match &self.link {
            SnLink::Open { sn, .. } => *sn,
            _ => None,
        }
    }

    /// The address we dialed for the current supernode (maybe not the one it
    /// advertises: e.g. its port 443 from behind a firewall that passes only that).
    pub fn supernode_dialed(&self) -> Option<SocketAddr> {
        match &self.link {
            SnLink::Open { addr, ready: true, .. } => Some(*addr),
            _ => None,
        }
    }

    /// The connection to the current supernode, once one admitted us.
    pub fn supernode_conn(&self) -> Option<ConnId> {
        match &self.link {
            SnLink::Open { conn, .. } => Some(*conn),
            SnLink::Connecting(_) | SnLink::Idle { .. } => None,
        }
    }

    /// Our media candidates, offered in every invite and accept.
    pub fn set_local_candidates(&mut self, c: Vec<Candidate>) {
        self.local_candidates = c;
    }

    /// Next thing for the driver to do.
    pub fn poll_output(&mut self) -> Option<ClientOutput> {
        self.out.pop_front()
    }

    fn event(&mut self, e: ClientEvent) {
        self.out.push_back(ClientOutput::Event(e));
    }

    fn send_sn(&mut self, msg: Message) -> bool {
        match &self.link {
            SnLink::Open { conn, .. } => {
                let c = *conn;
                self.out.push_back(ClientOutput::Send(c, msg));
                true
            }
            _ => false,
        }
    }

    /// Timers: connecting, presence refresh, call deadlines, media checks,
    /// the NAT probe, the relay allocation, promotion. Call it when
    /// [`Client::poll_timeout`] is due (the contract is in [`crate::timer`]);
    /// earlier or more often is harmless.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        match self.link {
            SnLink::Idle { next_try_ms } if now_ms >= next_try_ms => self.start_round(now_ms),
            SnLink::Connecting(_) => self.tick_connecting(now_ms),
            _ => {}
        }
        // Also while signing in: a refused first presence is published
        // again (after a backoff), or the link would stay open unsigned.
        if self.link_sn().is_some() && now_ms >= self.next_publish_ms {
            self.publish(now_ms);
        }
        if self.claim_retry_ms.is_some_and(|t| now_ms >= t) {
            self.claim_retry_ms = None;
            if self.link_sn().is_some() {
                self.send_claim(now_ms);
            }
        }
        self.tick_checks(now_ms);
        self.tick_calls(now_ms);
        self.tick_tcp(now_ms);
        self.tick_probe(now_ms);
        self.tick_relay(now_ms);
        self.tick_promotion(now_ms);
        self.tick_mail(now_ms);
    }

    /// When [`Client::handle_timeout`] must next run (see [`crate::timer`]):
    /// the earliest of the connection round, the presence refresh, every
    /// call's deadlines and media path, TCP media streams, the NAT probe,
    /// the relay and promotion. `None` when nothing is pending.
    pub fn poll_timeout(&self) -> Option<u64> {
        crate::timer::earliest([
            self.connect_timeout(),
            self.link_sn().is_some().then_some(self.next_publish_ms),
            self.claim_retry_ms,
            self.calls_timeout(),
            self.checks_timeout(),
            self.tcp_timeout(),
            self.probe.as_ref().and_then(|p| p.poll_timeout()),
            self.relay_timeout(),
            self.promotion_timeout(),
            self.mail_timeout(),
        ])
    }

    fn rng_u64(&mut self) -> u64 {
        use rand::Rng;
        self.rng.gen()
    }

    /// A connection closed.
    pub fn on_closed(&mut self, conn: ConnId, reason: &str, now_ms: u64) {
        if self.check_closed(conn, now_ms) {
            return;
        }
        match &self.link {
            SnLink::Open { conn: c, addr, sn, .. } if *c == conn => {
                let (addr, sn) = (*addr, *sn);
                warn!("lost supernode {addr}: {reason}");
                self.lost_link(addr, sn, LinkClose::Closed(reason.to_string()), now_ms);
                self.fail_signalling_calls(CallFailure::LostSupernode, now_ms);
            }
            SnLink::Connecting(_) => {
                self.attempt_closed(conn, reason, now_ms);
            }
            _ => {}
        }
    }

    /// A message from the supernode.
    pub fn on_message(&mut self, conn: ConnId, msg: Message, now_ms: u64) {
        let Some(msg) = self.check_message(conn, msg, now_ms) else {
            return;
        };
        if self.attempt_message(conn, &msg, now_ms) {
            return;
        }
        let SnLink::Open { conn: c, addr, sn, .. } = self.link else {
            return;
        };
        if c != conn {
            return;
        }
        match msg {
            Message::Welcome { .. } => warn!("a second Welcome from {addr}: ignored"),
            Message::Redirect { supernodes, reason, loads } => {
                // Our supernode is leaving (stepping back) or shedding load.
                let reason = LinkClose::Redirected(ReasonText::new(&reason));
                info!("supernode {addr} sends us elsewhere: {reason}");
                for (i, s) in supernodes.iter().enumerate() {
                    self.host_cache.heard_of(*s, loads.get(i).copied(), now_ms);
                }
                self.out.push_back(ClientOutput::Close(conn, reason.to_string()));
                self.lost_link(addr, sn, reason, now_ms);
                self.fail_signalling_calls(CallFailure::Redirected, now_ms);
            }
            Message::ClaimResult { result: Err(refusal), .. } if refusal.is_transient() => {
                let wait = self.claim_backoff.next_delay(&mut self.rng);
                warn!("claim of {:?} not decided ({refusal}); asking again in {wait} ms", self.cfg.name);
                self.claim_retry_ms = Some(now_ms + wait);
            }
            Message::ClaimResult { result: Err(refusal), .. } => {
                self.event(ClientEvent::NameRefused { reason: SignInRefusal::Supernode(refusal) });
            }
            Message::ClaimResult { result: Ok(()), .. } => {
                self.claim_retry_ms = None;
                self.claim_backoff.reset();
            }
            Message::PublishResult { result } => match result {
                Ok(()) => {
                    self.publish_backoff.reset();
                    if let SnLink::Open { sn: Some(sn), ready, .. } = &mut self.link {
                        if !*ready {
                            *ready = true;
                            let sn = *sn;
                            self.backoff.reset();
                            info!("signed in as {:?} via {sn}", self.cfg.name);
                            self.event(ClientEvent::SignedIn { supernode: sn });
                            self.start_probe(sn, now_ms);
                            self.fetch_mail(now_ms);
                        }
                    }
                }
                Err(reason) => {
                    // Not signed in (or not findable) until one is stored:
                    // again after a backoff, not at the next refresh.
                    let wait = self.publish_backoff.next_delay(&mut self.rng);
                    warn!("presence refused: {reason}; publishing again in {wait} ms");
                    self.next_publish_ms = self.next_publish_ms.min(now_ms + wait);
                }
            },
            Message::LookupResult { req_id, answer } => {
                if !self.on_peer_lookup(req_id, &answer, now_ms) {
                    self.on_lookup_result(req_id, answer, now_ms)
                }
            }
            Message::Signal(env) => match env.body {
                supervox_proto::CallSignal::Peer(body) => self.on_peer(env.call_id, env.from, env.to, body),
                _ => self.on_signal(env, now_ms),
            },
            Message::SignalFailed { call_id, reason } => {
                if !self.on_peer_failed(call_id, &reason) {
                    self.on_signal_failed(call_id, &reason, now_ms)
                }
            }
            Message::Error { reason } => warn!("supernode says: {reason}"),
            Message::RelayCredentials { username, password, expires_ms, relays, tls } => {
                let creds = RelayCredentials { username, password, expires_ms, relays, tls };
                self.on_relay_credentials(creds, now_ms);
            }
            Message::Promote { network_key, seeds, difficulty } => self.on_promote(network_key, seeds, difficulty),
            Message::MailPutResult { id, result } => self.event(ClientEvent::MailStored { id, result }),
            Message::Mail { items, done, more } => self.on_mail(items, done, more, now_ms),
            other => warn!("unexpected {} from supernode", crate::supernode::kind(&other)),
        }
    }

    /// Admitted by `supernode` (its `Welcome`): claim the name, publish presence.
    fn signed_on(&mut self, supernode: SocketAddr, now_ms: u64) {
        self.send_claim(now_ms);
        self.publish_to(supernode, now_ms);
    }

    /// Sign and send a fresh claim of our name: it claims the name, or
    /// renews it for another year at its holders.
    fn send_claim(&mut self, now_ms: u64) {
        self.claim_signed_ms = now_ms;
        match NameClaim::sign(self.identity.signing_key(), &self.cfg.name, now_ms) {
            Ok(claim) => {
                self.send_sn(Message::Claim { claim });
            }
            Err(e) => self.event(ClientEvent::NameRefused { reason: SignInRefusal::InvalidClaim(e.to_string()) }),
        }
    }

    fn publish(&mut self, now_ms: u64) {
        if let Some(sn) = self.link_sn() {
            if now_ms >= self.claim_signed_ms.saturating_add(CLAIM_RENEW_MS) {
                self.send_claim(now_ms);
            }
            self.publish_to(sn, now_ms);
        }
    }

    fn publish_to(&mut self, sn: SocketAddr, now_ms: u64) {
        // Wall-clock ms as the sequence number stays monotonic across restarts.
        let seq = now_ms.max(self.presence.as_ref().map_or(0, |p| p.seq + 1));
        match Presence::sign(self.identity.signing_key(), &self.cfg.name, sn, seq, now_ms + PRESENCE_TTL_MS) {
            Ok(p) => {
                self.presence = Some(p.clone());
                self.send_sn(Message::Publish { presence: p });
                self.next_publish_ms = now_ms + PRESENCE_REFRESH_MS;
            }
            Err(e) => {
                // Try again at the next refresh rather than at every timer.
                self.next_publish_ms = now_ms + PRESENCE_REFRESH_MS;
                warn!("cannot sign presence: {e}")
            }
        }
    }
}
