//! The global index: each name's owner's presence lives on the R (default 3)
//! supernodes that rendezvous hashing picks from the live set, and its claim
//! on the first R_c (default 10) of the same ranking — claims are small and
//! must survive a crash of a third of the network, so they get more copies;
//! the presence holders are a prefix of the claim holders, so when all R
//! presence holders die the next ones already hold the claim.
//!
//! A client's supernode sends a claim or a presence to the primary holder
//! (the heaviest), which stores it and replicates it to the other holders;
//! if the primary does not answer in time the next holder is asked. A lookup
//! goes to one holder and, if that one is slow, to the next (hedging): one
//! overlay hop. When the live set changes, the records whose holder set
//! changed are handed to their new holders by the heaviest surviving one.

use super::{better_answer, SnOutput, Supernode, LOOKUP_TIMEOUT_MS, MAX_LOOKUPS_PER_CONN};
use crate::directory::ClaimOutcome;
use crate::overlay::membership::MemberEvent;
use crate::overlay::rendezvous::{key_hash, member_seed, weight};
use crate::{ConnId, Map};
use std::net::SocketAddr;
use supervox_proto::overlay::{Member, OverlayMsg, MAX_ITEMS_PER_PACKET};
use supervox_proto::{LookupAnswer, Message, NameClaim, Presence, SignalEnvelope, UserId};
use tracing::debug;

/// How long a holder has to answer a claim or publish before the next is asked.
const REQUEST_TIMEOUT_MS: u64 = 700;
/// Store and signal retransmissions.
pub(super) const RETRY_MS: u64 = 300;
pub(super) const MAX_TRIES: u8 = 4;
/// Most requests of all kinds in flight (a bound on memory).
pub(super) const MAX_PENDING: usize = 50_000;

/// A holder of a record, as computed from our view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Holder {
    pub weight: u64,
    pub id: UserId,
    pub addr: SocketAddr,
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
            Pending::Claim { deadline, .. } | Pending::Publish { deadline, .. } => *deadline,
            Pending::Lookup { deadline, hedge_at, .. } => (*deadline).min(*hedge_at),
            Pending::Signal { next, .. } | Pending::Store { next, .. } => *next,
        }
    }
}

/// A request we wait on, by our request id.
#[derive(Debug)]
pub(super) enum Pending {
    Claim {
        conn: ConnId,
        claim: NameClaim,
        left: Vec<Holder>,
        deadline: u64,
    },
    Publish {
        conn: ConnId,
        user: UserId,
        claim: Option<NameClaim>,
        presence: Presence,
        left: Vec<Holder>,
        deadline: u64,
    },
    Lookup {
        conn: ConnId,
        client_req: u64,
        name: String,
        left: Vec<Holder>,
        /// Holders asked in the first round: asked once more, at the hedge
        /// times, if an answer is still missing (a lost datagram).
        asked: Vec<Holder>,
        /// The second round has begun.
        retried: bool,
        outstanding: usize,
        best: LookupAnswer,
        hedge_at: u64,
        deadline: u64,
    },
    Signal {
        conn: ConnId,
        env: SignalEnvelope,
        tries: u8,
        next: u64,
    },
    Store {
        to: SocketAddr,
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

    fn req_id(&mut self) -> u64 {
        self.next_req += 1;
        self.next_req
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

    pub(super) fn client_claim(&mut self, conn: ConnId, claim: NameClaim, now_ms: u64) {
        let holders = self.holders_of(&claim.name);
        self.try_claim(conn, claim, holders, now_ms);
    }

    fn try_claim(&mut self, conn: ConnId, claim: NameClaim, mut left: Vec<Holder>, now_ms: u64) {
        if left.is_empty() || !self.can_wait() {
            return self.claim_answered(conn, claim.name, Err("the directory did not answer; try again".into()));
        }
        let h = left.remove(0);
        if h.id == self.me {
            let result = self.store_claim_as_primary(claim.clone(), now_ms);
            return self.claim_answered(conn, claim.name, result);
        }
        let req = self.req_id();
        self.send_overlay(h.addr, OverlayMsg::Claim { req, claim: claim.clone() });
        self.pending.insert(req, Pending::Claim { conn, claim, left, deadline: now_ms + REQUEST_TIMEOUT_MS });
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
            return self.publish_answered(conn, user, Err("the directory did not answer; try again".into()), now_ms);
        }
        let h = left.remove(0);
        if h.id == self.me {
            let result = self.store_presence_as_primary(claim, presence, now_ms);
            return self.publish_answered(conn, user, result, now_ms);
        }
        let req = self.req_id();
        self.send_overlay(h.addr, OverlayMsg::Publish { req, claim: claim.clone(), presence: presence.clone() });
        self.pending
            .insert(req, Pending::Publish { conn, user, claim, presence, left, deadline: now_ms + REQUEST_TIMEOUT_MS });
    }

    pub(super) fn client_lookup(&mut self, conn: ConnId, req_id: u64, name: String, now_ms: u64) {
        self.stats.lookups += 1;
        let holders = self.presence_holders_of(&name);
        let local = if holders.iter().any(|h| h.id == self.me) {
            self.directory.lookup(&name, now_ms)
        } else {
            LookupAnswer::Unknown
        };
        let left: Vec<Holder> = holders.into_iter().filter(|h| h.id != self.me).collect();
        if matches!(local, LookupAnswer::Online { .. }) || left.is_empty() {
            self.send(conn, Message::LookupResult { req_id, answer: local });
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
        let req = self.req_id();
        let mut p = Pending::Lookup {
            conn,
            client_req: req_id,
            name,
            left,
            asked: Vec::new(),
            retried: false,
            outstanding: 0,
            best: local,
            hedge_at: 0,
            deadline: now_ms + LOOKUP_TIMEOUT_MS,
        };
        self.lookup_next(req, &mut p, now_ms);
        self.pending.insert(req, p);
    }

    /// Ask the next holder of a pending lookup.
    fn lookup_next(&mut self, req: u64, p: &mut Pending, now_ms: u64) {
        let Pending::Lookup { left, asked, retried, outstanding, hedge_at, name, .. } = p else {
            return;
        };
        if left.is_empty() && !*retried {
            // Every holder was asked and one is still silent (a datagram
            // lost either way): ask them all once more.
            *retried = true;
            std::mem::swap(left, asked);
        }
        if left.is_empty() {
            *hedge_at = u64::MAX;
            return;
        }
        let h = left.remove(0);
        if !*retried {
            asked.push(h);
        }
        *outstanding += 1;
        *hedge_at = now_ms + self.hedge_delay(&h);
        self.stats.lookups_forwarded += 1;
        let name = name.clone();
        self.send_overlay(h.addr, OverlayMsg::Lookup { req, name });
    }

    fn finish_lookup(&mut self, req: u64) {
        if let Some(Pending::Lookup { conn, client_req, best, .. }) = self.pending.remove(&req) {
            if let Some(c) = self.conns.get_mut(&conn) {
                c.lookups = c.lookups.saturating_sub(1);
                self.send(conn, Message::LookupResult { req_id: client_req, answer: best });
            }
        }
    }

    // ---- holder side ----

    /// We are the first holder asked: first come, first served.
    fn store_claim_as_primary(&mut self, claim: NameClaim, now_ms: u64) -> Result<(), String> {
        match self.directory.claim(claim.clone()) {
            Ok(ClaimOutcome::Stored) => {
                self.out.push_back(SnOutput::ClaimStored(claim.clone()));
                self.replicate(&claim.name, vec![claim.clone()], vec![], true, now_ms);
                Ok(())
            }
            Ok(_) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }

    fn store_presence_as_primary(
        &mut self,
        claim: Option<NameClaim>,
        presence: Presence,
        now_ms: u64,
    ) -> Result<(), String> {
        let mut claims = Vec::new();
        let mut new_claim = false;
        if let Some(c) = claim {
            new_claim = self.store_claim_copy(c.clone(), now_ms);
            claims.push(c);
        }
        let home = presence.supernode;
        self.directory.publish(presence.clone(), home, now_ms).map_err(|e| e.to_string())?;
        let name = presence.name.clone();
        self.replicate(&name, claims, vec![presence], new_claim, now_ms);
        Ok(())
    }

    /// A claim from another holder (replication, hand-off) or riding along
    /// with a presence: races settle the same way on every holder.
    /// True if the claim was new here.
    fn store_claim_copy(&mut self, claim: NameClaim, now_ms: u64) -> bool {
        match self.directory.replicate(claim.clone(), now_ms) {
            Ok(ClaimOutcome::Stored) | Ok(ClaimOutcome::Replaced(_)) => {
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
        // holders have it (it came with the first publish, or by hand-off).
        let claims_with_presence = if claim_is_new { claims.clone() } else { vec![] };
        for (rank, h) in holders.iter().enumerate().filter(|(_, h)| h.id != me) {
            if rank < r && !presence.is_empty() {
                self.store_to(h.addr, claims_with_presence.clone(), presence.clone(), now_ms);
            } else if claim_is_new && !claims.is_empty() {
                self.store_to(h.addr, claims.clone(), vec![], now_ms);
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

    /// Send records, acknowledged and retried.
    pub(super) fn store_to(&mut self, to: SocketAddr, claims: Vec<NameClaim>, presence: Vec<Presence>, now_ms: u64) {
        if !self.can_wait() {
            return;
        }
        let req = self.req_id();
        self.send_overlay(to, OverlayMsg::Store { req, claims: claims.clone(), presence: presence.clone() });
        self.pending.insert(req, Pending::Store { to, claims, presence, tries: 1, next: now_ms + RETRY_MS });
    }

    /// An index message from another supernode; other messages are handed back.
    pub(super) fn on_index_msg(&mut self, from: SocketAddr, msg: OverlayMsg, now_ms: u64) -> Option<OverlayMsg> {
        match msg {
            OverlayMsg::Claim { req, claim } => {
                let result = match claim.verify() {
                    Ok(()) => self.store_claim_as_primary(claim, now_ms),
                    Err(e) => Err(e.to_string()),
                };
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
            OverlayMsg::ClaimAns { req, result } => {
                if let Some(Pending::Claim { conn, claim, left, .. }) = self.pending.remove(&req) {
                    match result {
                        Ok(()) => self.claim_answered(conn, claim.name, Ok(())),
                        // A holder that refuses for a reason other than a
                        // taken name (e.g. full) does not speak for the rest.
                        Err(e) if e.contains("taken") || left.is_empty() => {
                            self.claim_answered(conn, claim.name, Err(e))
                        }
                        Err(_) => self.try_claim(conn, claim, left, now_ms),
                    }
                }
            }
            OverlayMsg::PublishAns { req, result } => {
                if let Some(Pending::Publish { conn, user, claim, presence, left, .. }) = self.pending.remove(&req) {
                    match result {
                        Err(e) if !left.is_empty() && !e.contains("stale") => {
                            debug!("holder refused presence ({e}); asking the next");
                            self.try_publish(conn, user, claim, presence, left, now_ms)
                        }
                        r => self.publish_answered(conn, user, r, now_ms),
                    }
                }
            }
            OverlayMsg::LookupAns { req, answer } => self.lookup_answered(req, answer, now_ms),
            OverlayMsg::StoreAck { req } => {
                if matches!(self.pending.get(&req), Some(Pending::Store { to, .. }) if *to == from) {
                    self.pending.remove(&req);
                }
            }
            other => return Some(other),
        }
        None
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

    /// An answer from a holder. Holders are not trusted: records are
    /// verified again and must match the name asked for.
    fn lookup_answered(&mut self, req: u64, answer: LookupAnswer, now_ms: u64) {
        let Some(Pending::Lookup { name, .. }) = self.pending.get(&req) else {
            return;
        };
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
        let done = if let Pending::Lookup { best, outstanding, left, .. } = &mut p {
            if valid {
                let b = std::mem::replace(best, LookupAnswer::Unknown);
                *best = better_answer(b, answer);
            } else {
                debug!("discarding invalid lookup answer from a holder");
            }
            *outstanding = outstanding.saturating_sub(1);
            let online = matches!(best, LookupAnswer::Online { .. });
            online || (*outstanding == 0 && left.is_empty())
        } else {
            true
        };
        if done {
            self.pending.insert(req, p);
            return self.finish_lookup(req);
        }
        // Not found there: ask the next holder now rather than at the hedge.
        if matches!(&p, Pending::Lookup { outstanding: 0, .. }) {
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
                Pending::Claim { conn, claim, left, .. } => self.try_claim(conn, claim, left, now_ms),
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
                Pending::Signal { conn, env, tries, .. } => self.retry_signal(req, conn, env, tries, now_ms),
                Pending::Store { to, claims, presence, tries, .. } => {
                    if tries < MAX_TRIES {
                        self.send_overlay(
                            to,
                            OverlayMsg::Store { req, claims: claims.clone(), presence: presence.clone() },
                        );
                        let next = now_ms + RETRY_MS * (1 << tries);
                        self.pending.insert(req, Pending::Store { to, claims, presence, tries: tries + 1, next });
                    } else {
                        debug!("store to {to} unacknowledged; giving up");
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
            self.hand_off(&name, &[(j.addr, with_presence)], now_ms);
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
            let to: Vec<(SocketAddr, bool)> = new
                .iter()
                .enumerate()
                .filter(|(rank, h)| !was(&h.id, old.len()) || (*rank < r && !was(&h.id, r)))
                .map(|(rank, h)| (h.addr, rank < r))
                .collect();
            if survivor == Some(self.me) && !to.is_empty() {
                self.hand_off(&name, &to, now_ms);
            }
            self.remember_holders(&name, new);
        }
    }

    fn hand_off(&mut self, name: &str, to: &[(SocketAddr, bool)], now_ms: u64) {
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
        let mut batches: Map<SocketAddr, Vec<NameClaim>> = Map::default();
        for name in names {
            let holders = self.holders_of(&name);
            if let LookupAnswer::Offline { claim } | LookupAnswer::Online { claim, .. } =
                self.directory.lookup(&name, now_ms)
            {
                for h in holders.iter().filter(|h| h.id != self.me) {
                    batches.entry(h.addr).or_default().push(claim.clone());
                }
            }
            self.remember_holders(&name, holders);
        }
        for (to, claims) in batches {
            for chunk in claims.chunks(MAX_ITEMS_PER_PACKET) {
                self.store_to(to, chunk.to_vec(), vec![], now_ms);
            }
        }
    }
}
