//! Reaching a supernode, happy-eyeballs style (RFC 8305's idea applied to
//! host cache entries): at the start, or when the supernode is lost, the
//! client takes the host cache in its order ([`HostCache::ordered`]) and
//! dials the first entry (entries backing off after a failure are left out
//! unless all are); while no attempt has been admitted, the next one
//! starts [`ATTEMPT_STAGGER_MS`] later (at once when an attempt fails), with
//! at most [`MAX_ATTEMPTS_IN_FLIGHT`] open. The first supernode to finish the
//! Noise handshake and admit us (`Welcome`) wins; the other attempts are
//! closed, and the claim and presence go to the winner only, so the name is
//! published on one supernode. Each attempt's time from dial to `Welcome` is
//! the entry's measured RTT; failures back the entry off.
//!
//! Supernode keys are pinned in the host cache: the identity a supernode
//! proves in the link handshake must be the one pinned for its address (from
//! a `KEY@IP:PORT` seed, or learnt at the first `Welcome` there, trust on
//! first use). A different key closes the attempt at once — before any
//! `Welcome` on it can count — backs the entry off, is logged as a possible
//! attack, and the next entry is tried.
//!
//! Seeds given by host name are resolved by the driver at the start of
//! every round ([`ClientOutput::Resolve`]); their addresses join the host
//! cache as seeds when the answer comes ([`Client::handle_resolved`]), and
//! the round in progress tries them first.

use super::{Client, ClientEvent, ClientOutput, SnLink};
use crate::host_cache::{HostCache, NamedSeed, Seed};
use crate::ConnId;
use std::net::SocketAddr;
use supervox_proto::{Message, Role, UserId};
use tracing::{debug, info, warn};

/// Seeds given by name, at most.
pub const MAX_NAMED_SEEDS: usize = 16;
/// Addresses taken from one name's resolution, at most.
pub const MAX_ADDRS_PER_NAME: usize = 8;

/// Connection attempts open at once, at most.
pub const MAX_ATTEMPTS_IN_FLIGHT: usize = 3;
/// The next attempt starts this long after the previous one while none has
/// been admitted (RFC 8305's recommended connection attempt delay).
pub const ATTEMPT_STAGGER_MS: u64 = 250;
/// An attempt not admitted within this long is abandoned (a blackholed
/// address must not hold a slot for the TCP or Noise timeouts).
pub const ATTEMPT_TIMEOUT_MS: u64 = 5_000;

/// One dial in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Attempt {
    pub(super) addr: SocketAddr,
    /// Set once the TCP connection is up.
    pub(super) conn: Option<ConnId>,
    pub(super) started_ms: u64,
    /// The identity the supernode proved in the link handshake, once done.
    pub(super) key: Option<UserId>,
}

/// The state of a round of attempts over the host cache.
#[derive(Debug, Clone, Default)]
pub(super) struct Round {
    /// Addresses still to try, best first.
    pub(super) todo: Vec<SocketAddr>,
    pub(super) attempts: Vec<Attempt>,
    /// When the next attempt may start.
    pub(super) next_start_ms: u64,
}

/// Each listed supernode with its load, if the list carried one.
fn loads_of<'a>(supernodes: &'a [SocketAddr], loads: &'a [u8]) -> impl Iterator<Item = (SocketAddr, Option<u8>)> + 'a {
    supernodes.iter().enumerate().map(move |(i, a)| (*a, loads.get(i).copied()))
}

fn remember(hc: &mut HostCache, supernodes: &[SocketAddr], loads: &[u8], now_ms: u64) {
    for (a, load) in loads_of(supernodes, loads) {
        hc.heard_of(a, load, now_ms);
    }
}

impl Client {
    /// The attempts in flight (address and start time), for tests and status.
    pub fn connect_attempts(&self) -> Vec<SocketAddr> {
        match &self.link {
            SnLink::Connecting(r) => r.attempts.iter().map(|a| a.addr).collect(),
            _ => Vec::new(),
        }
    }

    /// When [`Client::handle_timeout`] next has connection work to do (start
    /// a staggered attempt, abandon a slow one, end an exhausted round, retry
    /// after a backoff); `None` while a link is open. Part of
    /// [`Client::poll_timeout`].
    pub(super) fn connect_timeout(&self) -> Option<u64> {
        match &self.link {
            SnLink::Idle { next_try_ms } => Some(*next_try_ms),
            SnLink::Connecting(r) => {
                let timeout = r.attempts.iter().map(|a| a.started_ms + ATTEMPT_TIMEOUT_MS).min();
                // Nothing in flight and nothing left: the round ends (backoff) when due.
                let exhausted = r.todo.is_empty() && r.attempts.is_empty();
                let start = ((!r.todo.is_empty() && r.attempts.len() < MAX_ATTEMPTS_IN_FLIGHT) || exhausted)
                    .then_some(r.next_start_ms);
                match (timeout, start) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
            SnLink::Open { .. } => None,
        }
    }

    /// Seeds given by host name (`--seed HOST:PORT`), at most
    /// [`MAX_NAMED_SEEDS`]: resolved at the start of every round from now on.
    pub fn set_named_seeds(&mut self, mut seeds: Vec<NamedSeed>) {
        seeds.truncate(MAX_NAMED_SEEDS);
        self.named_seeds = seeds;
    }

    /// A [`ClientOutput::Resolve`] finished: its addresses (at most
    /// [`MAX_ADDRS_PER_NAME`]) become seeds, tried at once if no link is up.
    /// An answer nobody asked for is ignored.
    pub fn handle_resolved(&mut self, host: &str, port: u16, result: Result<Vec<SocketAddr>, String>, now_ms: u64) {
        let Some(i) = self.resolving.iter().position(|(h, p)| h == host && *p == port) else {
            return;
        };
        self.resolving.swap_remove(i);
        let addrs = match result {
            Ok(a) => a,
            Err(e) => {
                info!("cannot resolve seed {host}:{port}: {e}");
                return;
            }
        };
        let key = self.named_seeds.iter().find(|n| n.host == host && n.port == port).and_then(|n| n.key);
        let addrs: Vec<SocketAddr> = addrs.into_iter().filter(|a| a.port() == port).take(MAX_ADDRS_PER_NAME).collect();
        if addrs.is_empty() {
            info!("seed {host}:{port} resolved to no address");
            return;
        }
        debug!("seed {host}:{port} is {addrs:?}");
        for a in &addrs {
            self.host_cache.add_seed(&Seed { addr: *a, key });
        }
        self.out.push_back(ClientOutput::HostCacheChanged);
        match &mut self.link {
            // Waiting (an empty cache, or a backoff): try them now.
            SnLink::Idle { .. } => self.begin_round(now_ms),
            SnLink::Connecting(r) => {
                for a in addrs.iter().rev() {
                    if !r.todo.contains(a) && r.attempts.iter().all(|x| x.addr != *a) {
                        r.todo.insert(0, *a);
                    }
                }
                self.tick_connecting(now_ms);
            }
            SnLink::Open { .. } => {}
        }
    }

    /// Ask the driver for the current addresses of the named seeds.
    fn resolve_named_seeds(&mut self) {
        for n in &self.named_seeds {
            let job = (n.host.clone(), n.port);
            if !self.resolving.contains(&job) {
                self.out.push_back(ClientOutput::Resolve { host: job.0.clone(), port: job.1 });
                self.resolving.push(job);
            }
        }
    }

    /// Start a round: the named seeds asked for again, then every host
    /// cache entry, in order.
    pub(super) fn start_round(&mut self, now_ms: u64) {
        self.resolve_named_seeds();
        self.begin_round(now_ms);
    }

    /// Dial the host cache's entries, in order (without asking names again).
    fn begin_round(&mut self, now_ms: u64) {
        if self.host_cache.is_empty() {
            self.link = SnLink::Idle { next_try_ms: now_ms + 1_000 };
            return;
        }
        // Entries waiting out a failure backoff are left out of the round,
        // unless all are: then all are tried (the round's backoff paces it).
        let mut todo = self.host_cache.ordered(now_ms, self.spread_salt);
        let usable = todo.iter().take_while(|a| self.host_cache.get(a).is_some_and(|e| !e.backing_off(now_ms))).count();
        if usable > 0 {
            todo.truncate(usable);
        }
        self.link = SnLink::Connecting(Round { todo, attempts: Vec::new(), next_start_ms: now_ms });
        self.tick_connecting(now_ms);
    }

    /// Abandon slow attempts, start the next one when due, end a round that
    /// has nothing left to try (backing off before the next).
    pub(super) fn tick_connecting(&mut self, now_ms: u64) {
        let SnLink::Connecting(r) = &mut self.link else {
            return;
        };
        let mut failed = Vec::new();
        r.attempts.retain(|a| {
            let keep = now_ms < a.started_ms + ATTEMPT_TIMEOUT_MS;
            if !keep {
                failed.push(*a);
            }
            keep
        });
        if !failed.is_empty() {
            r.next_start_ms = now_ms;
        }
        let mut start = None;
        if now_ms >= r.next_start_ms && r.attempts.len() < MAX_ATTEMPTS_IN_FLIGHT {
            while !r.todo.is_empty() {
                let addr = r.todo.remove(0);
                if r.attempts.iter().all(|a| a.addr != addr) {
                    r.attempts.push(Attempt { addr, conn: None, started_ms: now_ms, key: None });
                    r.next_start_ms = now_ms + ATTEMPT_STAGGER_MS;
                    start = Some(addr);
                    break;
                }
            }
        }
        let exhausted = r.attempts.is_empty() && r.todo.is_empty();
        for a in failed {
            info!("supernode {} did not admit us within {ATTEMPT_TIMEOUT_MS} ms", a.addr);
            self.host_cache.failed(a.addr, now_ms);
            if let Some(c) = a.conn {
                self.out.push_back(ClientOutput::Close(c, "connection attempt timed out".into()));
            }
            self.out.push_back(ClientOutput::HostCacheChanged);
        }
        if let Some(addr) = start {
            debug!("dialling supernode {addr}");
            self.out.push_back(ClientOutput::Connect(addr));
        }
        if exhausted {
            let delay = self.backoff.next_delay(&mut self.rng);
            info!("no supernode answered; next round in {delay} ms");
            self.link = SnLink::Idle { next_try_ms: now_ms + delay };
        }
    }

    /// An attempt failed: back its entry off and move on at once.
    fn attempt_failed(&mut self, addr: SocketAddr, now_ms: u64) {
        let SnLink::Connecting(r) = &mut self.link else {
            return;
        };
        r.attempts.retain(|a| a.addr != addr);
        r.next_start_ms = now_ms;
        self.host_cache.failed(addr, now_ms);
        self.out.push_back(ClientOutput::HostCacheChanged);
        self.tick_connecting(now_ms);
    }

    /// The TCP connection for a [`ClientOutput::Connect`] is up.
    pub fn on_connected(&mut self, conn: ConnId, addr: SocketAddr) {
        if self.check_connected(conn, addr) {
            return;
        }
        if let SnLink::Connecting(r) = &mut self.link {
            if let Some(a) = r.attempts.iter_mut().find(|a| a.addr == addr && a.conn.is_none()) {
                a.conn = Some(conn);
                return;
            }
        }
        self.out.push_back(ClientOutput::Close(conn, "not wanted any more".into()));
    }

    /// A [`ClientOutput::Connect`] failed.
    pub fn on_connect_failed(&mut self, addr: SocketAddr, reason: &str, now_ms: u64) {
        if self.check_connect_failed(addr, now_ms) {
            return;
        }
        let SnLink::Connecting(r) = &self.link else {
            return;
        };
        if r.attempts.iter().any(|a| a.addr == addr && a.conn.is_none()) {
            info!("supernode {addr} unreachable: {reason}");
            self.attempt_failed(addr, now_ms);
        }
    }

    /// The link on `conn` finished its handshake; `identity` is the key the
    /// peer proved in it. A key other than the one pinned for the attempt's
    /// address fails the attempt here (module docs).
    pub fn on_established(&mut self, conn: ConnId, role: Role, identity: UserId, now_ms: u64) {
        if self.check_established(conn, role, identity, now_ms) {
            return;
        }
        let SnLink::Connecting(r) = &mut self.link else {
            return;
        };
        let Some(a) = r.attempts.iter_mut().find(|a| a.conn == Some(conn)) else {
            return;
        };
        if role != Role::Supernode {
            // The driver reports the close back through on_closed: the attempt fails there.
            self.out.push_back(ClientOutput::Close(conn, "peer is not a supernode".into()));
            return;
        }
        a.key = Some(identity);
        let addr = a.addr;
        if let Some(pinned) = self.host_cache.key(&addr) {
            if pinned != identity {
                warn!(
                    "supernode {addr} proved key {identity}, not the key {pinned} pinned for it: \
                     possible attack (or a supernode that changed its key), not signing in there"
                );
                self.out.push_back(ClientOutput::Close(conn, "supernode key mismatch".into()));
                // Failed now, so a Welcome already on its way does not count.
                self.attempt_failed(addr, now_ms);
            }
        }
    }

    /// An attempt's connection closed before it was admitted.
    pub(super) fn attempt_closed(&mut self, conn: ConnId, reason: &str, now_ms: u64) -> bool {
        let SnLink::Connecting(r) = &self.link else {
            return false;
        };
        let Some(a) = r.attempts.iter().find(|a| a.conn == Some(conn)) else {
            return false;
        };
        let addr = a.addr;
        info!("supernode {addr} closed during sign-in: {reason}");
        self.attempt_failed(addr, now_ms);
        true
    }

    /// A message on an attempt's connection: `Welcome` wins the race,
    /// `Redirect` fails the attempt and puts the supernodes it names next.
    /// Returns false if `conn` is not an attempt.
    pub(super) fn attempt_message(&mut self, conn: ConnId, msg: &Message, now_ms: u64) -> bool {
        let SnLink::Connecting(r) = &mut self.link else {
            return false;
        };
        let Some(a) = r.attempts.iter().find(|a| a.conn == Some(conn)).copied() else {
            return false;
        };
        match msg {
            Message::Welcome { supernode, supernodes, loads, observed } => {
                let others: Vec<Attempt> = r.attempts.iter().filter(|o| o.conn != Some(conn)).copied().collect();
                remember(&mut self.host_cache, supernodes, loads, now_ms);
                let own = loads_of(supernodes, loads).find(|(s, _)| s == supernode).and_then(|(_, l)| l);
                let rtt = u32::try_from(now_ms.saturating_sub(a.started_ms)).unwrap_or(u32::MAX);
                self.host_cache.succeeded(a.addr, rtt, own, now_ms);
                if let Some(key) = a.key {
                    if self.host_cache.learn_key(a.addr, key) {
                        info!("supernode {} key {key} pinned (first sign-in there)", a.addr);
                    }
                }
                self.out.push_back(ClientOutput::HostCacheChanged);
                for o in others {
                    // A dial still in progress is closed when it reports (on_connected).
                    if let Some(c) = o.conn {
                        self.out.push_back(ClientOutput::Close(c, "another supernode answered first".into()));
                    }
                }
                info!("supernode {} admitted us in {rtt} ms", a.addr);
                self.link = SnLink::Open { conn, addr: a.addr, sn: Some(*supernode), ready: false };
                if self.observed_ip != Some(observed.ip()) {
                    self.observed_ip = Some(observed.ip());
                    self.refresh_candidates();
                }
                self.signed_on(*supernode, now_ms);
            }
            Message::Redirect { supernodes, reason, loads } => {
                info!("supernode {} redirects us: {reason}", a.addr);
                remember(&mut self.host_cache, supernodes, loads, now_ms);
                self.host_cache.full(a.addr, now_ms);
                self.out.push_back(ClientOutput::HostCacheChanged);
                // Its suggestions (least loaded first) are tried next.
                let mut next: Vec<SocketAddr> = supernodes.iter().copied().take(20).collect();
                next.retain(|s| *s != a.addr);
                r.todo.retain(|t| !next.contains(t));
                r.todo.splice(0..0, next);
                r.attempts.retain(|o| o.conn != Some(conn));
                r.next_start_ms = now_ms;
                self.out.push_back(ClientOutput::Close(conn, format!("redirected: {reason}")));
                self.tick_connecting(now_ms);
            }
            _ => {}
        }
        true
    }

    /// Our supernode went away (or never came): a new round at once.
    pub(super) fn lost_link(
        &mut self,
        addr: SocketAddr,
        sn: Option<SocketAddr>,
        reason: crate::reason::LinkClose,
        now_ms: u64,
    ) {
        self.host_cache.failed(addr, now_ms);
        self.out.push_back(ClientOutput::HostCacheChanged);
        self.event(ClientEvent::LostSupernode { supernode: sn.unwrap_or(addr), reason });
        self.presence = None;
        self.next_publish_ms = u64::MAX;
        // The next supernode is sent a fresh claim when it admits us.
        self.claim_retry_ms = None;
        self.start_round(now_ms);
    }
}
