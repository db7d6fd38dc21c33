//! The global index: each name's owner's presence lives on the R (default 3)
//! supernodes that rendezvous hashing picks from the live set, and its claim
//! on the first R_c (default 10) of the same ranking — claims are small and
//! must survive a crash of a third of the network, so they get more copies;
//! the presence holders are a prefix of the claim holders, so when all R
//! presence holders die the next ones already hold the claim.
//!
//! Holders are not trusted one by one:
//! - **Claims** are first come *by a majority of the claim holders*: the
//!   client's supernode asks every holder at once; the claim is accepted when
//!   a majority accepts it and refused as taken when a majority says taken,
//!   so one malicious holder can neither grant a name nor refuse it.
//! - **Lookups** are cross-checked: the supernode asks holders (a majority of
//!   the presence holders first, more claim holders if they disagree or stay
//!   silent) and believes only a key named by ⌊R/2⌋ + 1 answers; an answer
//!   for another key is not believed, and holders that disagree give `Unknown`.
//! - **Answers** are matched by a random request id *and* the holder asked
//!   (its member id and address): an answer from anyone else is dropped and
//!   counted ([`super::SnStats::answers_refused`]).
//!
//! A presence goes to the primary holder (the heaviest), which stores it and
//! replicates it to the other presence holders; if the primary does not
//! answer in time the next holder is asked. When the live set changes, the
//! records whose holder set changed are handed to their new holders by the
//! heaviest surviving one.

use super::{better_answer, SnOutput, Supernode, LOOKUP_TIMEOUT_MS, MAX_LOOKUPS_PER_CONN};
use crate::directory::ClaimOutcome;
use crate::overlay::membership::MemberEvent;
use crate::overlay::rendezvous::{key_hash, member_seed, weight};
use crate::{ConnId, Map};
use rand::Rng;
use std::net::SocketAddr;
use supervox_proto::overlay::{Member, OverlayMsg, MAX_ITEMS_PER_PACKET};
use supervox_proto::{Claimed, LookupAnswer, Message, NameClaim, Presence, Refusal, SignalEnvelope, UserId};
use tracing::debug;

/// How long a holder has to answer a publish before the next is asked, and
/// a claim before it is asked again.
const REQUEST_TIMEOUT_MS: u64 = 700;
/// How long a claim waits for a majority of its holders, asking the silent
/// ones again every [`REQUEST_TIMEOUT_MS`]: long enough for a member that
/// joined a moment ago to be admitted by the others (they drop what it sends
/// until then), short enough for a sign-in.
const CLAIM_TIMEOUT_MS: u64 = 6_000;
/// After this long, a renewal that no holder refused and at least one holder
/// confirmed is accepted even if the rest stay silent: after a supernode
/// crash its members are still holders in our view until they are declared
/// dead, and a client signing in again must not wait for that. The name
/// stays with the key that held it, so the silence of dead holders cannot
/// hand it to anyone else.
const RENEWAL_SETTLE_MS: u64 = 2_000;
/// Store and signal retransmissions.
pub(super) const RETRY_MS: u64 = 300;
pub(super) const MAX_TRIES: u8 = 4;
/// Most requests of all kinds in flight (a bound on memory).
pub(super) const MAX_PENDING: usize = 50_000;

/// Answers that make a majority of `n` holders.
pub fn majority(n: usize) -> usize {
    n / 2 + 1
}

/// A holder of a record, as computed from our view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Holder {
    pub weight: u64,
    pub id: UserId,
    pub addr: SocketAddr,
}

impl Holder {
    /// True if an answer from `addr` signed as member `id` is this holder's.
    fn is(&self, id: &UserId, addr: &SocketAddr) -> bool {
        self.id == *id && self.addr == *addr
    }
}

/// Take `(id, addr)` out of `asked`: true if it was there (an answer from a
/// holder we asked and that had not answered yet).
fn take_asked(asked: &mut Vec<Holder>, id: &UserId, addr: &SocketAddr) -> bool {
    match asked.iter().position(|h| h.is(id, addr)) {
        Some(i) => {
            asked.swap_remove(i);
            true
        }
        None => false,
    }
}

/// The holder sets of the records we hold, kept so that a membership change
/// costs O(records) comparisons, not O(records × members) hashing.
#[derive(Debug, Default)]
pub(super) struct HolderCache {
    pub(super) by_name: Map<String, (u64, Vec<Holder>)>,
    /// Recompute every stored claim's holders at the next chance (start-up:
    /// stored claims go back to their holders).
    dirty_all: bool,
}

impl HolderCache {
    pub fn mark_all_dirty(&mut self) {
        self.dirty_all = true;
    }
}

/// The requests in flight, with the earliest time one of them needs
/// [`Supernode::handle_timeout`]: kept as a bound (lowered on every insert,
/// recomputed by the sweep in `expire_pending`), so the timer contract costs
/// no scan of the table per event.
#[derive(Debug, Default)]
pub(super) struct PendingTable {
    map: Map<u64, Pending>,
    next_due_ms: Option<u64>,
}

impl PendingTable {
    pub(super) fn insert(&mut self, req: u64, p: Pending) {
        let due = p.due_ms();
        self.next_due_ms = Some(self.next_due_ms.map_or(due, |d| d.min(due)));
        self.map.insert(req, p);
    }

    pub(super) fn remove(&mut self, req: &u64) -> Option<Pending> {
        self.map.remove(req)
    }

    pub(super) fn get(&self, req: &u64) -> Option<&Pending> {
        self.map.get(req)
    }

    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    /// The ids in flight (tests: what a holder would see on the wire).
    #[cfg(test)]
    pub(super) fn ids(&self) -> Vec<u64> {
        self.map.keys().copied().collect()
    }

    /// No request in flight needs a timer before this (maybe earlier than
    /// the true earliest: a removed request still counts until the next sweep).
    pub(super) fn next_due_ms(&self) -> Option<u64> {
        self.next_due_ms
    }
}

impl Pending {
    /// When this request next needs the timer: its deadline, hedge or retry.
    fn due_ms(&self) -> u64 {
        match self {
            Pending::Claim { deadline, resend_at, .. } => (*deadline).min(*resend_at),
            Pending::Publish { deadline, .. } => *deadline,
            Pending::Lookup { deadline, hedge_at, .. } => (*deadline).min(*hedge_at),
            Pending::Signal { next, .. } | Pending::Store { next, .. } => *next,
        }
    }
}

/// A request we wait on, by our (random) request id. Each names the
/// holders it waits on: only they may answer it.
#[derive(Debug)]
pub(super) enum Pending {
    Claim {
        conn: ConnId,
        claim: NameClaim,
        renew_only: bool,
        /// Holders asked that have not answered.
        waiting: Vec<Holder>,
        /// Every member asked (answered or not), so a holder is asked once.
        asked_ids: Vec<UserId>,
        /// Answers that decide: a majority of the holders (of the largest
        /// holder set seen: our view may grow while we wait, never shrinks
        /// the bar).
        needed: usize,
        /// Holders that stored the name new / held it already for this key.
        new: usize,
        held: usize,
        /// Refusals by kind, with their counts.
        refused: Vec<(Refusal, usize)>,
        /// The silent holders are asked again at this time.
        resend_at: u64,
        deadline: u64,
    },
    Publish {
        conn: ConnId,
        user: UserId,
        claim: Option<NameClaim>,
        presence: Presence,
        /// The holder asked.
        asked: Holder,
        left: Vec<Holder>,
        deadline: u64,
    },
    Lookup {
        conn: ConnId,
        client_req: u64,
        name: String,
        /// Holders not asked yet, in the order to ask them.
        left: Vec<Holder>,
        /// Holders asked that have not answered.
        asked: Vec<Holder>,
        /// Every holder taken into this lookup (asked or to ask), so that
        /// holders our view gains meanwhile are added once.
        known: Vec<UserId>,
        /// The presence holders among them: while one of these is still
        /// to answer, only an online answer decides (the others hold the
        /// claim alone and would make an online user look offline).
        presence: Vec<UserId>,
        /// Answers naming the same key (`None`: unknown) that decide.
        needed: usize,
        /// Per key named: votes and the best valid answer for it.
        votes: Vec<(Option<UserId>, usize, LookupAnswer)>,
        hedge_at: u64,
        deadline: u64,
    },
    Signal {
        conn: ConnId,
        env: SignalEnvelope,
        /// The member at `env.to_supernode` when the signal left.
        to_id: UserId,
        tries: u8,
        next: u64,
    },
    Store {
        to: Holder,
        claims: Vec<NameClaim>,
        presence: Vec<Presence>,
        tries: u8,
        next: u64,
    },
}

impl Supernode {
    /// The claim holders of `name` in our view (us included), heaviest
    /// first; the first [`Self::presence_replicas`] also hold presence.
    pub(super) fn holders_of(&self, name: &str) -> Vec<Holder> {
        self.membership
            .heaviest(key_hash(name), self.claim_replicas())
            .into_iter()
            .map(|(weight, m)| Holder { weight, id: m.id, addr: m.addr })
            .collect()
    }

    /// R: copies of a presence record.
    pub(super) fn presence_replicas(&self) -> usize {
        self.cfg.replicas.max(1)
    }

    /// R_c: copies of a claim.
    pub(super) fn claim_replicas(&self) -> usize {
        self.cfg.claim_replicas.max(self.presence_replicas())
    }

    fn presence_holders_of(&self, name: &str) -> Vec<Holder> {
        let mut h = self.holders_of(name);
        h.truncate(self.presence_replicas());
        h
    }

    /// A fresh request id: random (from our seeded CSPRNG), so a member
    /// cannot guess the ids of requests it was not asked, never 0 and not in
    /// use.
    pub(super) fn new_req(&mut self) -> u64 {
        loop {
            let r: u64 = self.rng.gen();
            if r != 0 && self.pending.get(&r).is_none() && !self.mail_pending.contains_key(&r) {
                return r;
            }
        }
    }

    /// An answer came from a member we did not ask: dropped, and counted.
    pub(super) fn refuse_answer(&mut self, kind: &str, from: SocketAddr) {
        self.stats.answers_refused += 1;
        debug!("{kind} from {from}, which was not asked: dropped");
    }

    fn hedge_delay(&self, h: &Holder) -> u64 {
        match self.membership.srtt_ms(&h.id) {
            Some(rtt) => (u64::from(rtt) * 3 / 2 + 20).clamp(50, 500),
            None => 200,
        }
    }

    fn can_wait(&self) -> bool {
        self.pending.len() < MAX_PENDING
    }

    // ---- client side: claims, presence, lookups ----

    /// Ask every claim holder at once; a majority decides (`renew_only`:
    /// accept only a name this key holds already).
    pub(super) fn client_claim(&mut self, conn: ConnId, claim: NameClaim, renew_only: bool, now_ms: u64) {
        let holders = self.holders_of(&claim.name);
        if holders.is_empty() || !self.can_wait() {
            return self.claim_decided(conn, claim, Err(Refusal::Unavailable), now_ms);
        }
        let needed = majority(holders.len());
        let req = self.new_req();
        let mut p = Pending::Claim {
            conn,
            claim: claim.clone(),
            renew_only,
            waiting: Vec::new(),
            asked_ids: Vec::new(),
            needed,
            new: 0,
            held: 0,
            refused: Vec::new(),
            resend_at: now_ms + REQUEST_TIMEOUT_MS,
            deadline: now_ms + CLAIM_TIMEOUT_MS,
        };
        for h in holders {
            if h.id == self.me {
                let r = self.holder_claim(claim.clone(), renew_only, now_ms);
                Self::count_claim_answer(&mut p, r);
            } else {
                self.send_overlay(h.addr, OverlayMsg::Claim { req, claim: claim.clone(), renew_only });
                if let Pending::Claim { waiting, asked_ids, .. } = &mut p {
                    waiting.push(h);
                    asked_ids.push(h.id);
                }
            }
        }
        self.pending.insert(req, p);
        self.claim_progress(req, now_ms, false);
    }

    fn count_claim_answer(p: &mut Pending, r: Result<Claimed, Refusal>) {
        let Pending::Claim { new, held, refused, .. } = p else { return };
        match r {
            Ok(Claimed::New) => *new += 1,
            Ok(Claimed::Held) => *held += 1,
            Err(e) => match refused.iter_mut().find(|(k, _)| *k == e) {
                Some((_, n)) => *n += 1,
                None => refused.push((e, 1)),
            },
        }
    }

    /// Decide a claim once a majority agrees, or with what came once every
    /// holder answered or the deadline passed (`timed_out`).
    fn claim_progress(&mut self, req: u64, now_ms: u64, timed_out: bool) {
        let Some(Pending::Claim { needed, new, held, refused, waiting, deadline, .. }) = self.pending.get(&req) else {
            return;
        };
        let started = deadline.saturating_sub(CLAIM_TIMEOUT_MS);
        let settled = now_ms >= started + RENEWAL_SETTLE_MS;
        let answered = new + held + refused.iter().map(|(_, n)| n).sum::<usize>();
        let result = if new + held >= *needed {
            Some(Ok(if new > held { Claimed::New } else { Claimed::Held }))
        } else if let Some((e, _)) = refused.iter().find(|(_, n)| n >= needed) {
            Some(Err(e.clone()))
        } else if (settled || timed_out) && refused.is_empty() && *held >= 1 {
            self.stats.claims_renewed_unconfirmed += 1;
            Some(Ok(Claimed::Held))
        } else if waiting.is_empty() || timed_out {
            Some(Err(if answered == 0 { Refusal::Unavailable } else { Refusal::NoQuorum }))
        } else {
            None
        };
        let Some(result) = result else { return };
        if let Some(Pending::Claim { conn, claim, .. }) = self.pending.remove(&req) {
            self.claim_decided(conn, claim, result, now_ms);
        }
    }

    pub(super) fn client_publish(&mut self, conn: ConnId, claim: Option<NameClaim>, presence: Presence, now_ms: u64) {
        let holders = self.presence_holders_of(&presence.name);
        let user = presence.user_id;
        self.try_publish(conn, user, claim, presence, holders, now_ms);
    }

    fn try_publish(
        &mut self,
        conn: ConnId,
        user: UserId,
        claim: Option<NameClaim>,
        presence: Presence,
        mut left: Vec<Holder>,
        now_ms: u64,
    ) {
        if left.is_empty() || !self.can_wait() {
            return self.publish_answered(conn, user, Err(Refusal::Unavailable.to_string()), now_ms);
        }
        let h = left.remove(0);
        if h.id == self.me {
            let result = self.store_presence_as_primary(claim, presence, now_ms);
            return self.publish_answered(conn, user, result.map_err(|e| e.to_string()), now_ms);
        }
        let req = self.new_req();
        self.send_overlay(h.addr, OverlayMsg::Publish { req, claim: claim.clone(), presence: presence.clone() });
        let deadline = now_ms + REQUEST_TIMEOUT_MS;
        self.pending.insert(req, Pending::Publish { conn, user, claim, presence, asked: h, left, deadline });
    }

    /// A lookup, cross-checked: the claim holders are asked in rank order
    /// (the presence holders first: they rank highest), as many at once as
    /// make a majority of them, more when answers disagree or do not come,
    /// until [`majority`]`(R_c)` answers name one key. A majority of the
    /// presence holders alone would not do: colluding members that are two
    /// of a name's three presence holders (one name in 36 when a tenth of
    /// the members are theirs) would agree on a forgery.
    pub(super) fn client_lookup(&mut self, conn: ConnId, req_id: u64, name: String, now_ms: u64) {
        self.stats.lookups += 1;
        let holders = self.holders_of(&name);
        let needed = majority(holders.len());
        let presence =
            holders.iter().take(self.presence_replicas()).map(|h| h.id).filter(|id| *id != self.me).collect();
        let mut votes = Vec::new();
        if holders.iter().any(|h| h.id == self.me) {
            let local = self.directory.lookup(&name, now_ms);
            votes.push((claim_key(&local), 1, local));
        }
        let left: Vec<Holder> = holders.into_iter().filter(|h| h.id != self.me).collect();
        let known = left.iter().map(|h| h.id).collect();
        if votes.first().is_some_and(|v| v.1 >= needed) || left.is_empty() {
            let answer = votes.pop().map_or(LookupAnswer::Unknown, |v| v.2);
            self.send(conn, Message::LookupResult { req_id, answer });
            return;
        }
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.lookups >= MAX_LOOKUPS_PER_CONN || self.pending.len() >= MAX_PENDING {
            self.send(conn, Message::Error { reason: "too many lookups in flight".into() });
            return;
        }
        c.lookups += 1;
        let req = self.new_req();
        let first = (needed - votes.len()).min(left.len());
        let mut p = Pending::Lookup {
            conn,
            client_req: req_id,
            name,
            left,
            asked: Vec::new(),
            known,
            presence,
            needed,
            votes,
            hedge_at: 0,
            deadline: now_ms + LOOKUP_TIMEOUT_MS,
        };
        for _ in 0..first {
            self.lookup_next(req, &mut p, now_ms);
        }
        self.pending.insert(req, p);
    }

    /// Ask the next holder of a pending lookup (or, when all were asked, the
    /// silent ones again).
    fn lookup_next(&mut self, req: u64, p: &mut Pending, now_ms: u64) {
        let Pending::Lookup { left, asked, known, hedge_at, name, .. } = p else {
            return;
        };
        if left.is_empty() {
            // Our view may have grown since (a member we had not admitted yet).
            for h in self.holders_of(name) {
                if h.id != self.me && !known.contains(&h.id) {
                    known.push(h.id);
                    left.push(h);
                }
            }
        }
        if left.is_empty() {
            *hedge_at = u64::MAX;
            if !asked.is_empty() {
                // Lost datagrams, or holders that do not admit us yet: the
                // silent ones again, every RETRY_MS until the deadline.
                *hedge_at = now_ms + RETRY_MS;
                let again: Vec<SocketAddr> = asked.iter().map(|h| h.addr).collect();
                let name = name.clone();
                for a in again {
                    self.stats.lookups_forwarded += 1;
                    self.send_overlay(a, OverlayMsg::Lookup { req, name: name.clone() });
                }
            }
            return;
        }
        let h = left.remove(0);
        asked.push(h);
        *hedge_at = now_ms + self.hedge_delay(&h);
        self.stats.lookups_forwarded += 1;
        let name = name.clone();
        self.send_overlay(h.addr, OverlayMsg::Lookup { req, name });
    }

    /// Answer the client: the key enough holders named, else `Unknown` (the
    /// holders disagree or too few answered: nothing is believed).
    fn finish_lookup(&mut self, req: u64) {
        if let Some(Pending::Lookup { conn, client_req, mut votes, needed, name, .. }) = self.pending.remove(&req) {
            let answer = match votes.iter().position(|v| v.0.is_some() && v.1 >= needed) {
                Some(i) => votes.swap_remove(i).2,
                // Every other holder asked stayed silent (down, or not admitting
                // us yet) or does not know the name (a copy lost on the way:
                // it abstains), and nobody names another key: believed,
                // counted. A lone liar gains only when no honest holder
                // knows the name.
                None if votes.iter().filter(|v| v.0.is_some()).count() == 1 => {
                    self.stats.lookups_unconfirmed += 1;
                    let i = votes.iter().position(|v| v.0.is_some()).unwrap_or(0);
                    votes.swap_remove(i).2
                }
                None => {
                    if votes.iter().filter(|v| v.0.is_some()).count() > 1 {
                        self.stats.lookups_disputed += 1;
                        debug!("holders of {name:?} disagree on its key: answering unknown");
                    }
                    LookupAnswer::Unknown
                }
            };
            if let Some(c) = self.conns.get_mut(&conn) {
                c.lookups = c.lookups.saturating_sub(1);
                self.send(conn, Message::LookupResult { req_id: client_req, answer });
            }
        }
    }

    // ---- holder side ----

    /// We are one of a name's claim holders, asked for it: first come, first
    /// served here; the asking supernode counts our answer with the others'.
    fn holder_claim(&mut self, claim: NameClaim, renew_only: bool, now_ms: u64) -> Result<Claimed, Refusal> {
        if renew_only && self.directory.claim_of(&claim.name).is_none_or(|c| c.user_id != claim.user_id) {
            return Err(Refusal::RateLimited);
        }
        let name = claim.name.clone();
        let r = match self.directory.claim(claim.clone(), now_ms) {
            Ok(ClaimOutcome::Stored) => {
                self.out.push_back(SnOutput::ClaimStored(claim));
                Ok(Claimed::New)
            }
            Ok(ClaimOutcome::Renewed) => {
                self.out.push_back(SnOutput::ClaimStored(claim));
                Ok(Claimed::Held)
            }
            Ok(ClaimOutcome::Unchanged) => Ok(Claimed::Held),
            Err(e) => Err(Refusal::from(&e)),
        };
        if r.is_ok() {
            let holders = self.holders_of(&name);
            self.remember_holders(&name, holders);
        }
        r
    }

    fn store_presence_as_primary(
        &mut self,
        claim: Option<NameClaim>,
        presence: Presence,
        now_ms: u64,
    ) -> Result<(), Refusal> {
        let mut claims = Vec::new();
        let mut new_claim = false;
        if let Some(c) = claim {
            new_claim = self.store_claim_copy(c.clone(), now_ms);
            claims.push(c);
        }
        let home = presence.supernode;
        self.directory.publish(presence.clone(), home, now_ms).map_err(|e| Refusal::from(&e))?;
        let name = presence.name.clone();
        self.replicate(&name, claims, vec![presence], new_claim, now_ms);
        Ok(())
    }

    /// A claim from another holder (hand-off) or riding along with a
    /// presence: first come, first served like any claim — it never replaces
    /// another key's. True if it was new (or renewed) here.
    fn store_claim_copy(&mut self, claim: NameClaim, now_ms: u64) -> bool {
        match self.directory.replicate(claim.clone(), now_ms) {
            Ok(ClaimOutcome::Stored) | Ok(ClaimOutcome::Renewed) => {
                self.out.push_back(SnOutput::ClaimStored(claim));
                true
            }
            Ok(ClaimOutcome::Unchanged) => false,
            Err(e) => {
                debug!("claim copy not stored: {e}");
                false
            }
        }
    }

    /// Send records to the other holders of `name` (and remember its
    /// holders): presence (with its claim) to the presence holders, the
    /// claim to all claim holders when `claim_is_new`.
    fn replicate(
        &mut self,
        name: &str,
        claims: Vec<NameClaim>,
        presence: Vec<Presence>,
        claim_is_new: bool,
        now_ms: u64,
    ) {
        let holders = self.holders_of(name);
        let (me, r) = (self.me, self.presence_replicas());
        // A presence refresh (every minute per client) carries no claim: the
        // holders have it (they were asked for it, or got it by hand-off).
        let claims_with_presence = if claim_is_new { claims.clone() } else { vec![] };
        for (rank, h) in holders.iter().enumerate().filter(|(_, h)| h.id != me) {
            if rank < r && !presence.is_empty() {
                self.store_to(*h, claims_with_presence.clone(), presence.clone(), now_ms);
            } else if claim_is_new && !claims.is_empty() {
                self.store_to(*h, claims.clone(), vec![], now_ms);
            }
        }
        self.remember_holders(name, holders);
    }

    fn remember_holders(&mut self, name: &str, mut holders: Vec<Holder>) {
        if holders.iter().any(|h| h.id == self.me) {
            // `holders_of` collects in place into the larger (weight, holder)
            // buffer: kept for every record, that slack was ~0.9 KB per client.
            holders.shrink_to_fit();
            self.holders.by_name.insert(name.to_string(), (key_hash(name), holders));
        }
    }

    /// Send records, acknowledged (by that member only) and retried.
    pub(super) fn store_to(&mut self, to: Holder, claims: Vec<NameClaim>, presence: Vec<Presence>, now_ms: u64) {
        if !self.can_wait() {
            return;
        }
        let req = self.new_req();
        self.send_overlay(to.addr, OverlayMsg::Store { req, claims: claims.clone(), presence: presence.clone() });
        self.pending.insert(req, Pending::Store { to, claims, presence, tries: 1, next: now_ms + RETRY_MS });
    }

    /// An index message from member `from_id` at `from`; other messages are
    /// handed back. Answers count only from the member a request went to.
    pub(super) fn on_index_msg(
        &mut self,
        from: SocketAddr,
        from_id: UserId,
        msg: OverlayMsg,
        now_ms: u64,
    ) -> Option<OverlayMsg> {
        match msg {
            OverlayMsg::Claim { req, claim, renew_only } => {
                let result = self.holder_claim(claim, renew_only, now_ms);
                self.send_overlay(from, OverlayMsg::ClaimAns { req, result });
            }
            OverlayMsg::Publish { req, claim, presence } => {
                let result = self.store_presence_as_primary(claim, presence, now_ms);
                self.send_overlay(from, OverlayMsg::PublishAns { req, result });
            }
            OverlayMsg::Lookup { req, name } => {
                let answer = self.directory.lookup(&name, now_ms);
                self.send_overlay(from, OverlayMsg::LookupAns { req, answer });
            }
            OverlayMsg::Store { req, claims, presence } => {
                for c in claims.into_iter().take(MAX_ITEMS_PER_PACKET) {
                    let name = c.name.clone();
                    self.store_claim_copy(c, now_ms);
                    let holders = self.holders_of(&name);
                    self.remember_holders(&name, holders);
                }
                for p in presence.into_iter().take(MAX_ITEMS_PER_PACKET) {
                    let home = p.supernode;
                    if let Err(e) = self.directory.publish(p, home, now_ms) {
                        debug!("presence copy not stored: {e}");
                    }
                }
                self.send_overlay(from, OverlayMsg::StoreAck { req });
            }
            OverlayMsg::ClaimAns { req, result } => self.claim_answer(req, from, from_id, result, now_ms),
            OverlayMsg::PublishAns { req, result } => {
                let Some(Pending::Publish { asked, .. }) = self.pending.get(&req) else { return None };
                if !asked.is(&from_id, &from) {
                    self.refuse_answer("PublishAns", from);
                    return None;
                }
                if let Some(Pending::Publish { conn, user, claim, presence, left, .. }) = self.pending.remove(&req) {
                    match result {
                        // Another holder may take what this one could not
                        // (it missed the claim); a stale record is final.
                        Err(e) if !left.is_empty() && e != Refusal::Stale => {
                            debug!("holder refused presence ({e}); asking the next");
                            self.try_publish(conn, user, claim, presence, left, now_ms)
                        }
                        r => self.publish_answered(conn, user, r.map_err(|e| e.to_string()), now_ms),
                    }
                }
            }
            OverlayMsg::LookupAns { req, answer } => self.lookup_answered(req, from, from_id, answer, now_ms),
            OverlayMsg::StoreAck { req } => match self.pending.get(&req) {
                Some(Pending::Store { to, .. }) if to.is(&from_id, &from) => {
                    self.pending.remove(&req);
                }
                Some(Pending::Store { .. }) => self.refuse_answer("StoreAck", from),
                _ => {}
            },
            other => return Some(other),
        }
        None
    }

    /// A holder's answer to a claim: counted if it is from a holder asked
    /// that had not answered yet.
    fn claim_answer(
        &mut self,
        req: u64,
        from: SocketAddr,
        from_id: UserId,
        result: Result<Claimed, Refusal>,
        now_ms: u64,
    ) {
        let Some(mut p) = self.pending.remove(&req) else { return };
        let asked = match &mut p {
            Pending::Claim { waiting, .. } => take_asked(waiting, &from_id, &from),
            _ => false,
        };
        if asked {
            Self::count_claim_answer(&mut p, result);
        } else {
            self.refuse_answer("ClaimAns", from);
        }
        let is_claim = matches!(p, Pending::Claim { .. });
        self.pending.insert(req, p);
        if is_claim {
            self.claim_progress(req, now_ms, false);
        }
    }

    /// One of our clients signed off: its presence goes from its holders.
    pub(super) fn unpublish(&mut self, user: UserId, name: &str) {
        let me = self.me;
        for h in self.presence_holders_of(name) {
            if h.id == me {
                self.directory.remove_presence_at(&user, self.cfg.advertise);
            } else {
                self.send_overlay(h.addr, OverlayMsg::Unpublish { user });
            }
        }
    }

    /// An answer from a holder. Holders are not trusted: only the holders
    /// asked count, once each; records are verified again and must match
    /// the name asked for; the answer is a vote for the key it names.
    fn lookup_answered(&mut self, req: u64, from: SocketAddr, from_id: UserId, answer: LookupAnswer, now_ms: u64) {
        let Some(Pending::Lookup { name, asked, .. }) = self.pending.get(&req) else {
            return;
        };
        if !asked.iter().any(|h| h.is(&from_id, &from)) {
            return self.refuse_answer("LookupAns", from);
        }
        let valid = match &answer {
            LookupAnswer::Online { claim, presence } => {
                claim.verify().is_ok()
                    && &claim.name == name
                    && presence.verify(now_ms).is_ok()
                    && presence.user_id == claim.user_id
                    && presence.name == claim.name
            }
            LookupAnswer::Offline { claim } => claim.verify().is_ok() && &claim.name == name,
            LookupAnswer::Unknown => true,
        };
        let Some(mut p) = self.pending.remove(&req) else {
            return;
        };
        let done = if let Pending::Lookup { asked, votes, needed, left, known, presence, .. } = &mut p {
            take_asked(asked, &from_id, &from);
            if valid {
                let key = claim_key(&answer);
                match votes.iter_mut().find(|v| v.0 == key) {
                    Some(v) => {
                        v.1 += 1;
                        let b = std::mem::replace(&mut v.2, LookupAnswer::Unknown);
                        v.2 = better_answer(b, answer);
                    }
                    None => votes.push((key, 1, answer)),
                }
            } else {
                debug!("discarding invalid lookup answer from {from}");
            }
            // A holder that does not know the name abstains rather than
            // contradicts (a claim is stored by a majority, so a minority
            // may lack it): "unknown" decides only with a majority of all
            // the holders, a key with a majority of the claim holders.
            let unknown_needed = majority(known.len() + 1).max(*needed);
            let presence_waiting = asked.iter().any(|h| presence.contains(&h.id));
            votes.iter().any(|v| {
                let enough = v.1 >= if v.0.is_some() { *needed } else { unknown_needed };
                enough && (matches!(v.2, LookupAnswer::Online { .. }) || !presence_waiting)
            }) || (asked.is_empty() && left.is_empty())
        } else {
            true
        };
        if done {
            self.pending.insert(req, p);
            return self.finish_lookup(req);
        }
        // Not decided and nobody else asked is pending: ask the next now
        // rather than at the hedge.
        if matches!(&p, Pending::Lookup { asked, .. } if asked.is_empty()) {
            self.lookup_next(req, &mut p, now_ms);
        }
        self.pending.insert(req, p);
    }

    // ---- deadlines and retries ----

    pub(super) fn expire_pending(&mut self, now_ms: u64) {
        if self.pending.next_due_ms.is_none_or(|d| d > now_ms) {
            return;
        }
        // The sweep: what is due now, and the earliest of the rest (the
        // handlers below insert again what they keep, lowering it as needed).
        let mut due = Vec::new();
        let mut next = None::<u64>;
        for (k, p) in &self.pending.map {
            let at = p.due_ms();
            if at <= now_ms {
                due.push(*k);
            } else {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        self.pending.next_due_ms = next;
        for req in due {
            let Some(mut p) = self.pending.remove(&req) else {
                continue;
            };
            match p {
                Pending::Claim { deadline, .. } if deadline <= now_ms => {
                    self.pending.insert(req, p);
                    self.claim_progress(req, now_ms, true);
                }
                Pending::Claim {
                    ref claim,
                    renew_only,
                    ref mut waiting,
                    ref mut asked_ids,
                    ref mut needed,
                    ref mut resend_at,
                    ..
                } => {
                    // The silent holders may have lost a datagram, or not admit us
                    // yet; and our view may have grown (a member we had not
                    // admitted when the claim began): its new holders are asked too.
                    *resend_at = now_ms + REQUEST_TIMEOUT_MS;
                    let holders = self.holders_of(&claim.name);
                    *needed = (*needed).max(majority(holders.len()));
                    for h in holders {
                        if h.id != self.me && !asked_ids.contains(&h.id) {
                            asked_ids.push(h.id);
                            waiting.push(h);
                        }
                    }
                    for h in waiting.iter() {
                        let msg = OverlayMsg::Claim { req, claim: claim.clone(), renew_only };
                        self.send_overlay(h.addr, msg);
                    }
                    self.pending.insert(req, p);
                    self.claim_progress(req, now_ms, false);
                }
                Pending::Publish { conn, user, claim, presence, left, .. } => {
                    self.try_publish(conn, user, claim, presence, left, now_ms)
                }
                Pending::Lookup { deadline, .. } if deadline <= now_ms => {
                    self.pending.insert(req, p);
                    self.finish_lookup(req);
                }
                Pending::Lookup { .. } => {
                    self.lookup_next(req, &mut p, now_ms);
                    self.pending.insert(req, p);
                }
                Pending::Signal { conn, env, to_id, tries, .. } => {
                    self.retry_signal(req, conn, env, to_id, tries, now_ms)
                }
                Pending::Store { to, claims, presence, tries, .. } => {
                    if tries < MAX_TRIES {
                        self.send_overlay(
                            to.addr,
                            OverlayMsg::Store { req, claims: claims.clone(), presence: presence.clone() },
                        );
                        let next = now_ms + RETRY_MS * (1 << tries);
                        self.pending.insert(req, Pending::Store { to, claims, presence, tries: tries + 1, next });
                    } else {
                        debug!("store to {} unacknowledged; giving up", to.addr);
                    }
                }
            }
        }
    }

    // ---- hand-off ----

    /// The live set changed: hand records to their new holders.
    pub(super) fn on_member_event(&mut self, ev: MemberEvent, now_ms: u64) {
        self.mail_dirty = true;
        if self.holders.dirty_all {
            return;
        }
        match ev {
            MemberEvent::Up(j) => self.member_up(j, now_ms),
            MemberEvent::Down(d) => self.member_down(d, now_ms),
        }
    }

    fn member_up(&mut self, j: Member, now_ms: u64) {
        let (rc, r) = (self.claim_replicas(), self.presence_replicas());
        let js = member_seed(&j.id);
        let me = self.me;
        let mut sends: Vec<(String, bool)> = Vec::new();
        let mut demoted: Vec<(String, bool)> = Vec::new();
        for (name, (kh, hs)) in self.holders.by_name.iter_mut() {
            let w = weight(*kh, js);
            let last = hs.last().map(|h| (h.weight, member_seed(&h.id)));
            if hs.len() >= rc && last.is_some_and(|l| l >= (w, js)) {
                continue;
            }
            let my_rank = hs.iter().position(|h| h.id == me);
            hs.retain(|h| h.id != j.id);
            let at = hs.iter().position(|h| (h.weight, member_seed(&h.id)) < (w, js)).unwrap_or(hs.len());
            hs.insert(at, Holder { weight: w, id: j.id, addr: j.addr });
            hs.truncate(rc);
            // The heaviest holder other than the newcomer sends it the records.
            if hs.iter().find(|h| h.id != j.id).is_some_and(|h| h.id == me) {
                sends.push((name.clone(), at < r));
            }
            let new_rank = hs.iter().position(|h| h.id == me);
            if my_rank.is_some_and(|m| m < r) && new_rank.is_none_or(|m| m >= r) {
                demoted.push((name.clone(), new_rank.is_none()));
            }
        }
        for (name, with_presence) in sends {
            let to = Holder { weight: 0, id: j.id, addr: j.addr };
            self.hand_off(&name, &[(to, with_presence)], now_ms);
        }
        for (name, gone) in demoted {
            // No longer a presence holder: the presence goes (its holders
            // have it); the claim stays stored even when we stop holding it.
            if let LookupAnswer::Online { presence, .. } = self.directory.lookup(&name, now_ms) {
                self.directory.remove_presence(&presence.user_id);
            }
            if gone {
                self.holders.by_name.remove(&name);
            }
        }
    }

    fn member_down(&mut self, d: Member, now_ms: u64) {
        let affected: Vec<String> = self
            .holders
            .by_name
            .iter()
            .filter(|(_, (_, hs))| hs.iter().any(|h| h.id == d.id))
            .map(|(n, _)| n.clone())
            .collect();
        let r = self.presence_replicas();
        for name in affected {
            let old = self.holders.by_name.get(&name).map(|(_, hs)| hs.clone()).unwrap_or_default();
            let new = self.holders_of(&name);
            let was = |id: &UserId, upto: usize| old.iter().take(upto).any(|o| o.id == *id);
            let survivor = new.iter().find(|h| was(&h.id, old.len())).map(|h| h.id);
            // Newcomers to the claim set get the claim; newcomers to the
            // presence prefix get the presence too.
            let to: Vec<(Holder, bool)> = new
                .iter()
                .enumerate()
                .filter(|(rank, h)| !was(&h.id, old.len()) || (*rank < r && !was(&h.id, r)))
                .map(|(rank, h)| (*h, rank < r))
                .collect();
            if survivor == Some(self.me) && !to.is_empty() {
                self.hand_off(&name, &to, now_ms);
            }
            self.remember_holders(&name, new);
        }
    }

    fn hand_off(&mut self, name: &str, to: &[(Holder, bool)], now_ms: u64) {
        let (claims, presence) = match self.directory.lookup(name, now_ms) {
            LookupAnswer::Online { claim, presence } => (vec![claim], vec![presence]),
            LookupAnswer::Offline { claim } => (vec![claim], vec![]),
            LookupAnswer::Unknown => return,
        };
        self.stats.handoffs += 1;
        for (a, with_presence) in to {
            let presence = if *with_presence { presence.clone() } else { vec![] };
            self.store_to(*a, claims.clone(), presence, now_ms);
        }
    }

    /// Once we know other members: place every claim we hold (stored ones
    /// from an earlier run) on its holders.
    pub(super) fn place_all(&mut self, now_ms: u64) {
        if !self.holders.dirty_all || self.membership.live_count() == 0 {
            return;
        }
        self.holders.dirty_all = false;
        let names: Vec<String> = self.directory.claims().map(|c| c.name.clone()).collect();
        // Batch per holder so a large store costs few datagrams.
        let mut batches: Map<(UserId, SocketAddr), (Holder, Vec<NameClaim>)> = Map::default();
        for name in names {
            let holders = self.holders_of(&name);
            if let LookupAnswer::Offline { claim } | LookupAnswer::Online { claim, .. } =
                self.directory.lookup(&name, now_ms)
            {
                for h in holders.iter().filter(|h| h.id != self.me) {
                    batches.entry((h.id, h.addr)).or_insert_with(|| (*h, Vec::new())).1.push(claim.clone());
                }
            }
            self.remember_holders(&name, holders);
        }
        for (to, claims) in batches.into_values() {
            for chunk in claims.chunks(MAX_ITEMS_PER_PACKET) {
                self.store_to(to, chunk.to_vec(), vec![], now_ms);
            }
        }
    }
}

/// The key a lookup answer names (`None`: it knows no claim).
fn claim_key(a: &LookupAnswer) -> Option<UserId> {
    match a {
        LookupAnswer::Online { claim, .. } | LookupAnswer::Offline { claim } => Some(claim.user_id),
        LookupAnswer::Unknown => None,
    }
}
