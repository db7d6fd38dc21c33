//! Lookups cross-checked through a second supernode.
//!
//! Our own supernode may lie (or be on an attacker's path): a forged but
//! self-signed claim for a name verifies as well as the real one. So the
//! owner of a name that is not pinned is asked a second time, by us,
//! through another supernode from the host cache (keys pinned there are
//! preferred, entries backing off after a failure come last, our own
//! supernode and any supernode proving its key are left out), over a short-lived link: dial, link handshake (its key checked
//! against the host cache's pin), `Welcome`, one `Lookup`, close. Both
//! answers must name the same key:
//!
//! * same key: the call goes on ([`Verified::Directory`]);
//! * another key, no owner, or a claim that does not verify: one of the
//!   two lies — the call fails with [`CallFailure::LookupMismatch`] and
//!   the log says "possible attack";
//! * a second supernode came up (its link handshake done) but no answer
//!   arrived in [`CROSS_CHECK_TIMEOUT_MS`] (up to [`MAX_CHECK_TRIES`]
//!   supernodes tried, each for [`CHECK_ATTEMPT_MS`]): an outgoing call fails
//!   ([`CallFailure::LookupUnconfirmed`]: sending our invite to a key only
//!   one supernode vouches for is what the attack needs); an incoming one
//!   rings as [`Verified::Unverified`] (shown as such, never auto-answered);
//! * no other supernode known at all (a one-supernode network), or none
//!   reachable from here (every dial failed or timed out before a link
//!   handshake: a firewall that passes only our own supernode's port): the
//!   one answer stands, as before cross-checks (logged). Exploiting that
//!   takes both our supernode lying and the network blocking every other
//!   supernode; refusing would cut such clients off from every new peer.
//!
//! For outgoing calls the second lookup starts with the first (from
//! [`Client::place_call`]), so it costs only what it takes longer; for an
//! incoming call it starts once our supernode's answer names the caller.

use super::{Client, ClientOutput};
use crate::call::{Phase, Verified};
use crate::reason::{CallFailure, Rejection};
use crate::ConnId;
use std::net::SocketAddr;
use supervox_proto::call::CallMessage;
use supervox_proto::{CallId, Message, NameClaim, Presence, Role, UserId};
use tracing::{debug, info, warn};

/// A cross-check gives up after this long (less than the caller's lookup
/// timeout and the callee's verification timeout).
pub const CROSS_CHECK_TIMEOUT_MS: u64 = 2_500;
/// One second supernode gets this long to answer before the next is tried.
pub const CHECK_ATTEMPT_MS: u64 = 1_200;
/// Second supernodes tried per lookup, at most.
pub const MAX_CHECK_TRIES: usize = 3;

/// What the second supernode said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// This key owns the name (its claim verified here).
    Owner(UserId),
    /// It knows no owner, or its answer did not verify.
    NoOwner,
    /// A supernode came up (link handshake done) but none answered in time.
    NoAnswer,
    /// None could even be reached (every dial failed or timed out before its
    /// link handshake): as if there were no other supernode.
    Unreachable,
    /// There is no other supernode to ask.
    NoSecond,
}

/// The answer of our own supernode, waiting for the second.
#[derive(Debug)]
enum Waiting {
    Nothing,
    // Boxed: the records are large, the other states small.
    Outgoing { claim: Box<NameClaim>, presence: Box<Presence> },
    Incoming { owner: UserId },
}

#[derive(Debug)]
struct CheckLink {
    addr: SocketAddr,
    conn: Option<ConnId>,
    /// The lookup's request id, once asked.
    req_id: Option<u64>,
    deadline_ms: u64,
}

/// One cross-check, per call.
#[derive(Debug)]
pub(super) struct Check {
    name: String,
    tried: Vec<SocketAddr>,
    /// Some second supernode completed the link handshake.
    reached: bool,
    link: Option<CheckLink>,
    deadline_ms: u64,
    outcome: Option<Outcome>,
    waiting: Waiting,
}

/// What the cross-check says about a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Pending,
    Agrees,
    Differs(Option<UserId>),
    NoAnswer,
    NoSecond,
}

impl Check {
    fn verdict(&self, key: &UserId) -> Verdict {
        match self.outcome {
            None => Verdict::Pending,
            Some(Outcome::Owner(k)) if k == *key => Verdict::Agrees,
            Some(Outcome::Owner(k)) => Verdict::Differs(Some(k)),
            Some(Outcome::NoOwner) => Verdict::Differs(None),
            Some(Outcome::NoAnswer) => Verdict::NoAnswer,
            Some(Outcome::NoSecond | Outcome::Unreachable) => Verdict::NoSecond,
        }
    }
}

impl Client {
    /// Start asking a second supernode who owns `name`, for call `id`.
    pub(super) fn cross_check_start(&mut self, id: CallId, name: &str, now_ms: u64) {
        if self.checks.contains_key(&id) {
            return;
        }
        let check = Check {
            name: name.to_string(),
            tried: Vec::new(),
            reached: false,
            link: None,
            deadline_ms: now_ms + CROSS_CHECK_TIMEOUT_MS,
            outcome: None,
            waiting: Waiting::Nothing,
        };
        self.checks.insert(id, check);
        self.check_next(id, now_ms);
    }

    /// Forget call `id`'s cross-check, closing its link.
    pub(super) fn cross_check_drop(&mut self, id: CallId) {
        if let Some(c) = self.checks.remove(&id) {
            self.close_check_link(c.link);
        }
    }

    fn close_check_link(&mut self, link: Option<CheckLink>) {
        if let Some(conn) = link.and_then(|l| l.conn) {
            self.out.push_back(ClientOutput::Close(conn, "cross-check done".into()));
        }
    }

    /// Supernodes that may give a second opinion, best first.
    fn check_candidates(&self, tried: &[SocketAddr], now_ms: u64) -> Vec<SocketAddr> {
        let own = [self.supernode_dialed(), self.supernode()];
        let own_key = self.supernode_dialed().and_then(|a| self.host_cache.key(&a));
        let mut v: Vec<(bool, bool, SocketAddr)> = self
            .host_cache
            .ordered(now_ms, self.spread_salt)
            .into_iter()
            .filter(|a| !own.contains(&Some(*a)) && !tried.contains(a))
            .filter_map(|a| {
                let e = self.host_cache.get(&a)?;
                (e.key.is_none() || e.key != own_key).then_some((e.backing_off(now_ms), e.key.is_none(), a))
            })
            .collect();
        // Pinned keys first (a `KEY@IP:PORT` seed or a supernode signed in to before); entries
        // backing off after a failure last but still tried: if they were left out, an
        // attacker who made the others fail would leave us with our own supernode's word.
        v.sort_by_key(|(off, unpinned, _)| (*off, *unpinned));
        v.into_iter().map(|(.., a)| a).collect()
    }

    /// Dial the next second supernode for `id`, or settle without one.
    fn check_next(&mut self, id: CallId, now_ms: u64) {
        let Some(c) = self.checks.get_mut(&id) else { return };
        let (tried, name) = (c.tried.clone(), c.name.clone());
        let prev = c.link.take();
        self.close_check_link(prev);
        let next = self.check_candidates(&tried, now_ms).into_iter().next();
        let Some(c) = self.checks.get_mut(&id) else { return };
        match next {
            Some(addr) if c.tried.len() < MAX_CHECK_TRIES && now_ms < c.deadline_ms => {
                c.tried.push(addr);
                c.link = Some(CheckLink {
                    addr,
                    conn: None,
                    req_id: None,
                    deadline_ms: (now_ms + CHECK_ATTEMPT_MS).min(c.deadline_ms),
                });
                debug!("asking supernode {addr} too who owns {name:?}");
                self.out.push_back(ClientOutput::Connect(addr));
            }
            _ => {
                let outcome = match (c.tried.is_empty(), c.reached) {
                    (true, _) => Outcome::NoSecond,
                    (false, false) => Outcome::Unreachable,
                    (false, true) => Outcome::NoAnswer,
                };
                match outcome {
                    Outcome::NoSecond => {
                        info!("no second supernode known: the owner of {name:?} rests on our supernode's word alone")
                    }
                    Outcome::Unreachable => warn!(
                        "no second supernode reachable from here (tried {}): the owner of {name:?} rests on our \
                         supernode's word alone",
                        c.tried.len()
                    ),
                    _ => warn!("no second supernode answered who owns {name:?}"),
                }
                self.check_outcome(id, outcome, now_ms);
            }
        }
    }

    fn check_of_conn(&self, conn: ConnId) -> Option<CallId> {
        self.checks.iter().find(|(_, c)| c.link.as_ref().is_some_and(|l| l.conn == Some(conn))).map(|(id, _)| *id)
    }

    /// A dial finished: true if it was a cross-check's.
    pub(super) fn check_connected(&mut self, conn: ConnId, addr: SocketAddr) -> bool {
        for c in self.checks.values_mut() {
            if let Some(l) = c.link.as_mut().filter(|l| l.addr == addr && l.conn.is_none()) {
                l.conn = Some(conn);
                return true;
            }
        }
        false
    }

    /// A dial failed: true if it was a cross-check's (the next one is tried).
    pub(super) fn check_connect_failed(&mut self, addr: SocketAddr, now_ms: u64) -> bool {
        let id = self
            .checks
            .iter()
            .find(|(_, c)| c.link.as_ref().is_some_and(|l| l.addr == addr && l.conn.is_none()))
            .map(|(id, _)| *id);
        let Some(id) = id else { return false };
        if let Some(c) = self.checks.get_mut(&id) {
            c.link = None;
        }
        self.check_next(id, now_ms);
        true
    }

    /// A cross-check's link finished its handshake: the peer must be a
    /// supernode, prove the key pinned for its address, and not be our own
    /// supernode under another address. True if `conn` was a cross-check's.
    pub(super) fn check_established(&mut self, conn: ConnId, role: Role, identity: UserId, now_ms: u64) -> bool {
        let Some(id) = self.check_of_conn(conn) else { return false };
        let Some(addr) = self.checks.get(&id).and_then(|c| c.link.as_ref()).map(|l| l.addr) else { return true };
        let own_key = self.supernode_dialed().and_then(|a| self.host_cache.key(&a));
        let pinned = self.host_cache.key(&addr);
        let bad = if role != Role::Supernode {
            Some("peer is not a supernode")
        } else if pinned.is_some_and(|k| k != identity) {
            warn!("supernode {addr} proved key {identity}, not the one pinned for it: possible attack");
            Some("supernode key mismatch")
        } else if own_key == Some(identity) {
            Some("our own supernode at another address")
        } else {
            None
        };
        if let Some(why) = bad {
            debug!("cross-check at {addr}: {why}");
            self.next_after_failure(id, now_ms);
        } else {
            if let Some(c) = self.checks.get_mut(&id) {
                c.reached = true;
            }
            if self.host_cache.learn_key(addr, identity) {
                self.out.push_back(ClientOutput::HostCacheChanged);
            }
        }
        true
    }

    fn next_after_failure(&mut self, id: CallId, now_ms: u64) {
        self.check_next(id, now_ms);
    }

    /// A message on a cross-check's link; returns it if it was not one.
    pub(super) fn check_message(&mut self, conn: ConnId, msg: Message, now_ms: u64) -> Option<Message> {
        let Some(id) = self.check_of_conn(conn) else { return Some(msg) };
        match msg {
            Message::Welcome { .. } => {
                let req_id = self.next_req;
                self.next_req += 1;
                let c = self.checks.get_mut(&id)?;
                let name = c.name.clone();
                if let Some(l) = c.link.as_mut() {
                    l.req_id = Some(req_id);
                }
                self.out.push_back(ClientOutput::Send(conn, Message::Lookup { req_id, name }));
            }
            Message::LookupResult { req_id, answer } => {
                let c = self.checks.get(&id)?;
                if c.link.as_ref().and_then(|l| l.req_id) != Some(req_id) {
                    return None;
                }
                let name = c.name.clone();
                let owner = super::answer_owner(&answer, &name);
                let link = self.checks.get_mut(&id).and_then(|c| c.link.take());
                self.close_check_link(link);
                self.check_outcome(id, owner.map_or(Outcome::NoOwner, Outcome::Owner), now_ms);
            }
            // Full, stepping back: ask another one.
            Message::Redirect { .. } => self.next_after_failure(id, now_ms),
            _ => {}
        }
        None
    }

    /// A cross-check's link closed: true if `conn` was one (the next is tried).
    pub(super) fn check_closed(&mut self, conn: ConnId, now_ms: u64) -> bool {
        let Some(id) = self.check_of_conn(conn) else { return false };
        if let Some(c) = self.checks.get_mut(&id) {
            c.link = None;
        }
        self.check_next(id, now_ms);
        true
    }

    /// The earliest cross-check deadline.
    pub(super) fn checks_timeout(&self) -> Option<u64> {
        crate::timer::earliest(self.checks.values().filter(|c| c.outcome.is_none()).map(|c| {
            let attempt = c.link.as_ref().map(|l| l.deadline_ms);
            Some(attempt.map_or(c.deadline_ms, |a| a.min(c.deadline_ms)))
        }))
    }

    /// Abandon slow second supernodes and expired checks; forget checks of
    /// calls that are gone.
    pub(super) fn tick_checks(&mut self, now_ms: u64) {
        let gone: Vec<CallId> = self.checks.keys().filter(|id| !self.calls.contains_key(id)).copied().collect();
        for id in gone {
            self.cross_check_drop(id);
        }
        let due: Vec<CallId> = self
            .checks
            .iter()
            .filter(|(_, c)| c.outcome.is_none() && c.link.as_ref().is_some_and(|l| now_ms >= l.deadline_ms))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            if let Some(addr) = self.checks.get(&id).and_then(|c| c.link.as_ref()).map(|l| l.addr) {
                debug!("supernode {addr} did not answer the cross-check in time");
            }
            self.check_next(id, now_ms);
        }
        let expired: Vec<CallId> = self
            .checks
            .iter()
            .filter(|(_, c)| c.outcome.is_none() && c.link.is_none() && now_ms >= c.deadline_ms)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.check_next(id, now_ms);
        }
    }

    fn check_outcome(&mut self, id: CallId, outcome: Outcome, now_ms: u64) {
        let Some(c) = self.checks.get_mut(&id) else { return };
        c.outcome = Some(outcome);
        self.check_settle(id, now_ms);
    }

    /// Our supernode's answer for an outgoing call verified and the name is
    /// not pinned: invite once the second opinion agrees (see module docs).
    pub(super) fn cross_check_outgoing(&mut self, id: CallId, claim: NameClaim, presence: Presence, now_ms: u64) {
        let name = claim.name.clone();
        if !self.checks.contains_key(&id) {
            self.cross_check_start(id, &name, now_ms);
        }
        if let Some(c) = self.checks.get_mut(&id) {
            c.waiting = Waiting::Outgoing { claim: Box::new(claim), presence: Box::new(presence) };
        }
        self.check_settle(id, now_ms);
    }

    /// Our supernode says `owner` (the caller's key) owns the caller's
    /// name, which is not pinned: ring once the second opinion agrees.
    pub(super) fn cross_check_caller(&mut self, id: CallId, name: &str, owner: UserId, now_ms: u64) {
        self.cross_check_start(id, name, now_ms);
        if let Some(c) = self.checks.get_mut(&id) {
            c.waiting = Waiting::Incoming { owner };
        }
        self.check_settle(id, now_ms);
    }

    /// Both answers are in (or the second will not come): act on them.
    fn check_settle(&mut self, id: CallId, now_ms: u64) {
        let Some(c) = self.checks.get(&id) else { return };
        let key = match &c.waiting {
            Waiting::Nothing => return,
            Waiting::Outgoing { claim, .. } => claim.user_id,
            Waiting::Incoming { owner } => *owner,
        };
        let verdict = c.verdict(&key);
        if verdict == Verdict::Pending {
            return;
        }
        let Some(c) = self.checks.remove(&id) else { return };
        self.close_check_link(c.link);
        let name = c.name;
        if let Verdict::Differs(other) = verdict {
            warn!(
                "two supernodes disagree about who owns {name:?}: ours says {key}, another says {}: possible attack",
                other.map_or("no owner".to_string(), |k| k.to_string())
            );
        }
        match c.waiting {
            Waiting::Nothing => {}
            Waiting::Outgoing { claim, presence } => match verdict {
                Verdict::Agrees | Verdict::NoSecond => self.invite(id, *claim, *presence, Verified::Directory, now_ms),
                Verdict::Differs(_) => self.fail_call(id, CallFailure::LookupMismatch(name), now_ms, false),
                Verdict::NoAnswer | Verdict::Pending => {
                    self.fail_call(id, CallFailure::LookupUnconfirmed(name), now_ms, false)
                }
            },
            Waiting::Incoming { .. } => {
                if !matches!(self.calls.get(&id).map(|c| &c.phase), Some(Phase::Verifying { .. })) {
                    return;
                }
                match verdict {
                    Verdict::Agrees | Verdict::NoSecond => self.ring(id, Verified::Directory, now_ms),
                    Verdict::Differs(_) => {
                        self.respond(id, CallMessage::Reject { reason: Rejection::CallerNotVerified.wire().into() });
                        self.fail_call(id, CallFailure::LookupMismatch(name), now_ms, false);
                    }
                    Verdict::NoAnswer | Verdict::Pending => self.ring(id, Verified::Unverified, now_ms),
                }
            }
        }
    }
}
