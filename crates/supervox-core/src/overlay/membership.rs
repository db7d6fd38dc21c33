//! SWIM membership among supernodes (Das, Gupta, Motivala 2002).
//!
//! Each period a supernode pings one member (round-robin over a shuffled
//! list, so every member is probed within one sweep); a member that does not
//! ack in time is probed indirectly through `k` others; one that still does
//! not answer becomes *suspect*, and *dead* unless it refutes the suspicion
//! by bumping its incarnation before the suspicion times out. Changes travel
//! piggybacked on pings and acks, each retransmitted `~4·log10(N)` times —
//! infection-style, so a change reaches all N members in O(log N) periods
//! with constant traffic per member.
//!
//! Why not `foca`: its member table is a `Vec` searched linearly on every
//! update, which at 10 000 supernodes in one simulator process costs O(N) per
//! piggybacked update (10^12 operations to converge); this table is a hash map
//! with O(1) updates, timers in queues rather than scans, and records the
//! supernode's load. See docs/DEPENDENCIES.md.

use crate::Map;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;
use std::collections::VecDeque;
use std::net::SocketAddr;
use supervox_proto::overlay::{Member, MemberState, OverlayMsg, MAX_ITEMS_PER_PACKET, MAX_UPDATES_PER_PACKET};
use supervox_proto::UserId;

/// Most members remembered (alive, suspect or recently dead).
pub const MAX_MEMBERS: usize = 200_000;
/// Most updates waiting to be piggybacked.
const MAX_GOSSIP_QUEUE: usize = 4_096;
/// Most indirect probes relayed for others at once.
const MAX_RELAYS: usize = 256;
/// Buckets reconciled per sync round, at most (bounds one round's traffic).
const MAX_SYNC_BUCKETS: usize = 64;
/// Member lists sent to joiners per second, at most (a snapshot of 10 000
/// members is ~600 datagrams).
const JOINS_SERVED_PER_SEC: u32 = 50;

/// Timing of the protocol.
#[derive(Debug, Clone, Copy)]
pub struct MembershipConfig {
    /// One probe per period.
    pub probe_ms: u64,
    /// Wait this long for a direct ack before asking others to probe.
    pub ack_timeout_ms: u64,
    /// Members asked to probe indirectly.
    pub indirect: usize,
    /// A suspect not refuting within this long is declared dead.
    pub suspect_ms: u64,
    /// Dead members are remembered this long (so stale gossip cannot
    /// resurrect them), then forgotten.
    pub dead_keep_ms: u64,
    /// Retry joining through the seeds this often while alone.
    pub join_retry_ms: u64,
    /// Compare live sets with one random member this often (anti-entropy:
    /// what gossip missed, e.g. during a wave of joins, is pulled in).
    pub sync_ms: u64,
}

impl Default for MembershipConfig {
    fn default() -> Self {
        Self {
            probe_ms: 1_000,
            ack_timeout_ms: 400,
            indirect: 3,
            suspect_ms: 3_000,
            dead_keep_ms: 60_000,
            join_retry_ms: 1_000,
            sync_ms: 5_000,
        }
    }
}

/// A change in the live set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberEvent {
    /// A member became alive (joined, or came back with a new incarnation).
    Up(Member),
    /// A member was declared dead.
    Down(Member),
}

#[derive(Debug)]
struct Entry {
    m: Member,
    /// Smoothed round-trip time of our probes to it, ms (0 = not measured).
    srtt_ms: u32,
}

#[derive(Debug)]
struct Probe {
    target: UserId,
    seq: u32,
    sent_ms: u64,
    acked: bool,
    indirect_sent: bool,
}

#[derive(Debug)]
struct Relay {
    our_seq: u32,
    requester: SocketAddr,
    their_seq: u32,
    until_ms: u64,
}

/// One supernode's view of the membership: see the module docs.
#[derive(Debug)]
pub struct Membership {
    cfg: MembershipConfig,
    me: Member,
    members: Map<UserId, Entry>,
    by_addr: Map<SocketAddr, UserId>,
    live: usize,
    order: Vec<UserId>,
    order_pos: usize,
    probe: Option<Probe>,
    relays: VecDeque<Relay>,
    /// Updates still to piggyback, with transmissions left; `gossip_order`
    /// holds their ids, least sent first (stale ids are skipped).
    gossip: Map<UserId, (Member, u8)>,
    gossip_order: VecDeque<UserId>,
    suspects: VecDeque<(UserId, u32, u64)>,
    dead: VecDeque<(UserId, u32, u64)>,
    seq: u32,
    next_probe_ms: u64,
    seeds: Vec<SocketAddr>,
    next_join_ms: u64,
    joins_window: (u64, u32),
    /// Per bucket (first id byte), XOR of a hash of each live member's id
    /// and incarnation, us included: equal views have equal digests.
    buckets: Box<[u64; 256]>,
    next_sync_ms: u64,
    out: VecDeque<(SocketAddr, OverlayMsg)>,
    events: VecDeque<MemberEvent>,
}

fn rank(s: MemberState) -> u8 {
    match s {
        MemberState::Alive => 0,
        MemberState::Suspect => 1,
        MemberState::Dead => 2,
    }
}

impl Membership {
    /// A membership that starts with only `me` and joins through `seeds`.
    pub fn new(me: Member, seeds: Vec<SocketAddr>, cfg: MembershipConfig, now_ms: u64) -> Self {
        let seeds = seeds.into_iter().filter(|s| *s != me.addr).collect();
        let mut m = Self {
            cfg,
            me,
            members: Map::default(),
            by_addr: Map::default(),
            live: 0,
            order: Vec::new(),
            order_pos: 0,
            probe: None,
            relays: VecDeque::new(),
            gossip: Map::default(),
            gossip_order: VecDeque::new(),
            suspects: VecDeque::new(),
            dead: VecDeque::new(),
            seq: 0,
            next_probe_ms: now_ms,
            seeds,
            next_join_ms: now_ms,
            joins_window: (0, 0),
            buckets: Box::new([0; 256]),
            next_sync_ms: now_ms + cfg.sync_ms,
            out: VecDeque::new(),
            events: VecDeque::new(),
        };
        m.toggle_digest(&me);
        m
    }

    /// Add or remove a live member's contribution to its bucket digest.
    fn toggle_digest(&mut self, m: &Member) {
        let mut h = crate::overlay::rendezvous::member_seed(&m.id) ^ (u64::from(m.incarnation) << 17);
        h = crate::overlay::rendezvous::weight(h, 0x5eed);
        self.buckets[m.id.0[0] as usize] ^= h;
    }

    fn digest_total(&self) -> u64 {
        self.buckets.iter().fold(0u64, |acc, b| crate::overlay::rendezvous::weight(acc, *b))
    }

    /// Our own entry, as sent in every packet header.
    pub fn me(&self) -> Member {
        self.me
    }

    /// Set the load we advertise (percent of capacity).
    pub fn set_load(&mut self, load: u8) {
        self.me.load = load;
    }

    /// Members alive or suspect, not counting us.
    pub fn live_count(&self) -> usize {
        self.live
    }

    /// Members alive or suspect (suspects still hold their records), not us.
    pub fn live(&self) -> impl Iterator<Item = &Member> {
        self.members.values().map(|e| &e.m).filter(|m| m.state != MemberState::Dead)
    }

    /// A member by identity.
    pub fn get(&self, id: &UserId) -> Option<&Member> {
        self.members.get(id).map(|e| &e.m)
    }

    /// A live member by address.
    pub fn by_addr(&self, addr: &SocketAddr) -> Option<&Member> {
        let id = self.by_addr.get(addr)?;
        self.get(id).filter(|m| m.state != MemberState::Dead)
    }

    /// Smoothed RTT to a member, if measured.
    pub fn srtt_ms(&self, id: &UserId) -> Option<u32> {
        self.members.get(id).map(|e| e.srtt_ms).filter(|r| *r > 0)
    }

    /// Next datagram body to send.
    pub fn poll_send(&mut self) -> Option<(SocketAddr, OverlayMsg)> {
        self.out.pop_front()
    }

    /// Next change of the live set.
    pub fn poll_event(&mut self) -> Option<MemberEvent> {
        self.events.pop_front()
    }

    /// Every packet's header: the sender is alive and talking. Learns
    /// newcomers and their current load and address.
    pub fn observe(&mut self, from: Member, now_ms: u64) {
        if from.id == self.me.id {
            return;
        }
        let from = Member { state: MemberState::Alive, ..from };
        if let Some(e) = self.members.get_mut(&from.id) {
            if e.m.incarnation == from.incarnation && e.m.state != MemberState::Dead {
                // Load changes without an incarnation bump: direct news only.
                e.m.load = from.load;
                return;
            }
        }
        self.apply(from, now_ms);
    }

    /// A membership message from `from_addr` (whose header was observed).
    /// Returns false for messages that are not about membership.
    pub fn on_msg(&mut self, from_addr: SocketAddr, from: &Member, msg: &OverlayMsg, now_ms: u64) -> bool {
        match msg {
            OverlayMsg::Join => self.serve_join(from_addr, from, now_ms),
            OverlayMsg::Members { members } => {
                // A member list is state, not news: learnt, not re-gossiped.
                for m in members.iter().take(MAX_ITEMS_PER_PACKET) {
                    self.apply_quietly(*m, now_ms);
                }
            }
            OverlayMsg::SyncDigest { total } => {
                if *total != self.digest_total() {
                    let digests = self.buckets.iter().map(|b| *b as u32).collect();
                    self.out.push_back((from_addr, OverlayMsg::SyncBuckets { digests }));
                }
            }
            OverlayMsg::SyncBuckets { digests } => {
                let differ: Vec<u8> = digests
                    .iter()
                    .take(256)
                    .enumerate()
                    .filter(|(i, d)| **d != self.buckets[*i] as u32)
                    .map(|(i, _)| i as u8)
                    .take(MAX_SYNC_BUCKETS)
                    .collect();
                if !differ.is_empty() {
                    self.send_buckets(from_addr, &differ);
                    self.out.push_back((from_addr, OverlayMsg::SyncPull { buckets: differ }));
                }
            }
            OverlayMsg::SyncPull { buckets } => {
                let b: Vec<u8> = buckets.iter().copied().take(MAX_SYNC_BUCKETS).collect();
                self.send_buckets(from_addr, &b);
            }
            OverlayMsg::Ping { seq, updates } => {
                self.apply_all(updates, now_ms);
                let updates = self.take_updates();
                self.out.push_back((from_addr, OverlayMsg::Ack { seq: *seq, updates }));
            }
            OverlayMsg::Ack { seq, updates } => {
                self.apply_all(updates, now_ms);
                self.on_ack(*seq, now_ms);
            }
            OverlayMsg::PingReq { seq, target, updates } => {
                self.apply_all(updates, now_ms);
                if self.relays.len() >= MAX_RELAYS || target.id == self.me.id {
                    return true;
                }
                self.seq = self.seq.wrapping_add(1);
                let our_seq = self.seq;
                self.relays.push_back(Relay {
                    our_seq,
                    requester: from_addr,
                    their_seq: *seq,
                    until_ms: now_ms + 2 * self.cfg.ack_timeout_ms,
                });
                let updates = self.take_updates();
                self.out.push_back((target.addr, OverlayMsg::Ping { seq: our_seq, updates }));
            }
            _ => return false,
        }
        true
    }

    fn serve_join(&mut self, from_addr: SocketAddr, from: &Member, now_ms: u64) {
        if now_ms >= self.joins_window.0 + 1_000 {
            self.joins_window = (now_ms, 0);
        }
        if self.joins_window.1 >= JOINS_SERVED_PER_SEC {
            return;
        }
        self.joins_window.1 += 1;
        // If we hold the joiner as suspect or dead, tell it so it refutes
        // (a restarted process with an old incarnation).
        let mut list: Vec<Member> = vec![self.me];
        if let Some(e) = self.members.get(&from.id) {
            if e.m.state != MemberState::Alive || e.m.incarnation > from.incarnation {
                list.push(e.m);
            }
        }
        list.extend(self.live().filter(|m| m.id != from.id).copied());
        for chunk in list.chunks(MAX_ITEMS_PER_PACKET) {
            self.out.push_back((from_addr, OverlayMsg::Members { members: chunk.to_vec() }));
        }
    }

    /// Our live members (us included) of some buckets, as member lists.
    fn send_buckets(&mut self, to: SocketAddr, buckets: &[u8]) {
        let mut want = [false; 256];
        for b in buckets {
            want[*b as usize] = true;
        }
        let list: Vec<Member> =
            std::iter::once(&self.me).chain(self.live()).filter(|m| want[m.id.0[0] as usize]).copied().collect();
        for chunk in list.chunks(MAX_ITEMS_PER_PACKET) {
            self.out.push_back((to, OverlayMsg::Members { members: chunk.to_vec() }));
        }
    }

    fn on_ack(&mut self, seq: u32, now_ms: u64) {
        if let Some(p) = self.probe.as_mut().filter(|p| p.seq == seq && !p.acked) {
            p.acked = true;
            let sample = (now_ms.saturating_sub(p.sent_ms)).clamp(1, 60_000) as u32;
            // Only direct answers measure the path.
            if !p.indirect_sent {
                if let Some(e) = self.members.get_mut(&p.target) {
                    e.srtt_ms = if e.srtt_ms == 0 { sample } else { (7 * e.srtt_ms + sample) / 8 };
                }
            }
            return;
        }
        if let Some(i) = self.relays.iter().position(|r| r.our_seq == seq) {
            if let Some(r) = self.relays.remove(i) {
                let updates = self.take_updates();
                self.out.push_back((r.requester, OverlayMsg::Ack { seq: r.their_seq, updates }));
            }
        }
    }

    fn apply_all(&mut self, updates: &[Member], now_ms: u64) {
        for m in updates.iter().take(MAX_UPDATES_PER_PACKET) {
            self.apply(*m, now_ms);
        }
    }

    fn apply(&mut self, m: Member, now_ms: u64) {
        if let Some(m) = self.apply_quietly(m, now_ms) {
            self.enqueue(m);
        }
    }

    /// Apply one piece of news about a member: newer incarnations win, and
    /// at one incarnation dead beats suspect beats alive. Returns the update
    /// to gossip if it changed our view.
    fn apply_quietly(&mut self, m: Member, now_ms: u64) -> Option<Member> {
        if m.id == self.me.id {
            // After a leave we stay dead: no refutation.
            if m.state != MemberState::Alive
                && m.incarnation >= self.me.incarnation
                && self.me.state == MemberState::Alive
            {
                // Refute: we are alive.
                let me = self.me;
                self.toggle_digest(&me);
                self.me.incarnation = m.incarnation.saturating_add(1);
                let me = self.me;
                self.toggle_digest(&me);
                return Some(self.me);
            }
            return None;
        }
        match self.members.get_mut(&m.id) {
            None => {
                if m.state == MemberState::Dead || self.members.len() >= MAX_MEMBERS {
                    return None;
                }
                self.members.insert(m.id, Entry { m, srtt_ms: 0 });
                self.toggle_digest(&m);
                self.index_addr(m.id, m.addr, None);
                self.live += 1;
                self.order.push(m.id);
                if m.state == MemberState::Suspect {
                    self.suspects.push_back((m.id, m.incarnation, now_ms + self.cfg.suspect_ms));
                }
                self.events.push_back(MemberEvent::Up(m));
                Some(m)
            }
            Some(e) => {
                let newer = m.incarnation > e.m.incarnation
                    || (m.incarnation == e.m.incarnation && rank(m.state) > rank(e.m.state));
                if !newer {
                    return None;
                }
                let was_live = e.m.state != MemberState::Dead;
                let old_addr = e.m.addr;
                let old = e.m;
                e.m = m;
                let now_live = m.state != MemberState::Dead;
                if was_live {
                    self.toggle_digest(&old);
                }
                if now_live {
                    self.toggle_digest(&m);
                }
                self.index_addr(m.id, m.addr, Some(old_addr));
                match m.state {
                    MemberState::Suspect => {
                        self.suspects.push_back((m.id, m.incarnation, now_ms + self.cfg.suspect_ms))
                    }
                    MemberState::Dead => self.dead.push_back((m.id, m.incarnation, now_ms + self.cfg.dead_keep_ms)),
                    MemberState::Alive => {}
                }
                if was_live && !now_live {
                    self.live -= 1;
                    self.events.push_back(MemberEvent::Down(m));
                } else if !was_live && now_live {
                    self.live += 1;
                    self.order.push(m.id);
                    self.events.push_back(MemberEvent::Up(m));
                }
                Some(m)
            }
        }
    }

    fn index_addr(&mut self, id: UserId, addr: SocketAddr, old: Option<SocketAddr>) {
        if let Some(old) = old.filter(|o| *o != addr) {
            if self.by_addr.get(&old) == Some(&id) {
                self.by_addr.remove(&old);
            }
        }
        self.by_addr.insert(addr, id);
    }

    /// Queue an update for piggybacking `4·⌈log10(N+1)⌉` times, as memberlist
    /// does (an epidemic reaches everyone with high probability; 20 at 10 000
    /// members), but at least 8 so small networks converge in seconds.
    fn enqueue(&mut self, m: Member) {
        let mut n = self.live + 1;
        let mut digits = 0u8;
        while n > 0 {
            n /= 10;
            digits += 1;
        }
        let left = (4 * digits).max(8);
        if self.gossip.insert(m.id, (m, left)).is_none() || self.gossip_order.front() != Some(&m.id) {
            self.gossip_order.push_front(m.id);
        }
        // Bounded: the oldest (most sent) updates go first.
        while self.gossip.len() > MAX_GOSSIP_QUEUE || self.gossip_order.len() > 2 * MAX_GOSSIP_QUEUE {
            let Some(id) = self.gossip_order.pop_back() else { break };
            if !self.gossip_order.contains(&id) {
                self.gossip.remove(&id);
            }
        }
    }

    /// Updates for the next packet: the least-sent first (at the front),
    /// each counted as one transmission and moved to the back.
    fn take_updates(&mut self) -> Vec<Member> {
        let mut out: Vec<Member> = Vec::new();
        let mut scanned = 0;
        while out.len() < MAX_UPDATES_PER_PACKET && scanned < self.gossip_order.len() {
            let Some(id) = self.gossip_order.pop_front() else { break };
            scanned += 1;
            let Some((m, left)) = self.gossip.get_mut(&id) else {
                continue; // stale: sent out already
            };
            if out.iter().any(|o| o.id == id) {
                continue; // a duplicate id in the order
            }
            out.push(*m);
            *left = left.saturating_sub(1);
            if *left == 0 {
                self.gossip.remove(&id);
            } else {
                self.gossip_order.push_back(id);
            }
        }
        out
    }

    /// Leave gracefully: declare ourselves `Dead` at our incarnation (which
    /// out-ranks `Alive` there), tell up to `fanout` random members at once
    /// in a `Ping` and piggyback it on whatever else we send, so the others
    /// hand our records off without waiting for the failure detector. We
    /// never refute after this; a new process rejoins with a higher
    /// incarnation. Sealed like every overlay datagram, so only members can
    /// say it, and a member saying it of another is refuted as before.
    pub fn leave(&mut self, rng: &mut StdRng, fanout: usize) {
        if self.me.state == MemberState::Dead {
            return;
        }
        self.me.state = MemberState::Dead;
        let me = self.me;
        self.enqueue(me);
        for to in self.random_live(rng, fanout, &me.id) {
            self.seq = self.seq.wrapping_add(1);
            self.out.push_back((to, OverlayMsg::Ping { seq: self.seq, updates: vec![me] }));
        }
    }

    /// Timers: the probe cycle, suspicion and tombstone expiry, joining.
    pub fn tick(&mut self, rng: &mut StdRng, now_ms: u64) {
        self.expire(now_ms);
        if self.live == 0 && !self.seeds.is_empty() && now_ms >= self.next_join_ms {
            for s in self.seeds.clone() {
                self.out.push_back((s, OverlayMsg::Join));
            }
            self.next_join_ms = now_ms + self.cfg.join_retry_ms;
        }
        if let Some(p) = self.probe.as_mut() {
            if !p.acked && !p.indirect_sent && now_ms >= p.sent_ms + self.cfg.ack_timeout_ms {
                p.indirect_sent = true;
                let (target, seq) = (p.target, p.seq);
                if let Some(t) = self.members.get(&target).map(|e| e.m) {
                    let helpers = self.random_live(rng, self.cfg.indirect, &target);
                    for h in helpers {
                        let updates = self.take_updates();
                        self.out.push_back((h, OverlayMsg::PingReq { seq, target: t, updates }));
                    }
                }
            }
        }
        if now_ms >= self.next_sync_ms {
            self.next_sync_ms = now_ms + self.cfg.sync_ms;
            if let Some(peer) = self.random_live(rng, 1, &self.me.id).first().copied() {
                let total = self.digest_total();
                self.out.push_back((peer, OverlayMsg::SyncDigest { total }));
            }
        }
        if now_ms < self.next_probe_ms {
            return;
        }
        self.next_probe_ms = now_ms + self.cfg.probe_ms;
        if let Some(p) = self.probe.take() {
            if !p.acked {
                self.suspect(p.target, now_ms);
            }
        }
        let Some(target) = self.next_target(rng) else {
            return;
        };
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let updates = self.take_updates();
        self.out.push_back((target.addr, OverlayMsg::Ping { seq, updates }));
        self.probe = Some(Probe { target: target.id, seq, sent_ms: now_ms, acked: false, indirect_sent: false });
    }

    fn suspect(&mut self, id: UserId, now_ms: u64) {
        if let Some(m) = self.members.get(&id).map(|e| e.m) {
            if m.state == MemberState::Alive {
                self.apply(Member { state: MemberState::Suspect, ..m }, now_ms);
            }
        }
    }

    fn expire(&mut self, now_ms: u64) {
        while self.suspects.front().is_some_and(|s| s.2 <= now_ms) {
            let Some((id, inc, _)) = self.suspects.pop_front() else { break };
            if let Some(m) = self.members.get(&id).map(|e| e.m) {
                if m.state == MemberState::Suspect && m.incarnation == inc {
                    self.apply(Member { state: MemberState::Dead, ..m }, now_ms);
                }
            }
        }
        while self.dead.front().is_some_and(|s| s.2 <= now_ms) {
            let Some((id, inc, _)) = self.dead.pop_front() else { break };
            if self.members.get(&id).is_some_and(|e| e.m.state == MemberState::Dead && e.m.incarnation == inc) {
                if let Some(e) = self.members.remove(&id) {
                    if self.by_addr.get(&e.m.addr) == Some(&id) {
                        self.by_addr.remove(&e.m.addr);
                    }
                }
            }
        }
        while self.relays.front().is_some_and(|r| r.until_ms <= now_ms) {
            self.relays.pop_front();
        }
    }

    /// The next member to probe: round-robin over a list reshuffled at each
    /// wrap (dead and forgotten members are dropped then).
    fn next_target(&mut self, rng: &mut StdRng) -> Option<Member> {
        for _ in 0..2 {
            while self.order_pos < self.order.len() {
                let id = self.order[self.order_pos];
                self.order_pos += 1;
                if let Some(e) = self.members.get(&id).filter(|e| e.m.state != MemberState::Dead) {
                    return Some(e.m);
                }
            }
            let members = &self.members;
            self.order.retain(|id| members.get(id).is_some_and(|e| e.m.state != MemberState::Dead));
            self.order.sort_unstable();
            self.order.dedup();
            self.order.shuffle(rng);
            self.order_pos = 0;
        }
        None
    }

    /// Up to `k` random live members other than `except`, by address.
    fn random_live(&self, rng: &mut StdRng, k: usize, except: &UserId) -> Vec<SocketAddr> {
        let mut out = Vec::new();
        if self.order.is_empty() {
            return out;
        }
        for _ in 0..4 * k {
            let id = self.order[rng.gen_range(0..self.order.len())];
            if &id == except {
                continue;
            }
            if let Some(m) = self.members.get(&id).map(|e| e.m).filter(|m| m.state != MemberState::Dead) {
                if !out.contains(&m.addr) {
                    out.push(m.addr);
                }
            }
            if out.len() == k {
                break;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn member(i: u8) -> Member {
        let mut id = [i; 32];
        id[0] = i.wrapping_mul(37);
        Member {
            id: UserId(id),
            addr: SocketAddr::from(([10, 0, 0, i], 7000)),
            incarnation: 1,
            state: MemberState::Alive,
            load: 0,
        }
    }

    /// Deliver messages between memberships (by address) until quiet.
    fn pump(ms: &mut [Membership], now: u64) {
        loop {
            let mut moved = false;
            for i in 0..ms.len() {
                while let Some((to, msg)) = ms[i].poll_send() {
                    moved = true;
                    let from = ms[i].me();
                    if let Some(j) = ms.iter().position(|m| m.me().addr == to) {
                        ms[j].observe(from, now);
                        ms[j].on_msg(from.addr, &from, &msg, now);
                    }
                }
            }
            if !moved {
                return;
            }
        }
    }

    #[test]
    fn anti_entropy_pulls_in_what_gossip_missed_and_equal_views_stay_quiet() {
        let mut rng = StdRng::seed_from_u64(3);
        let cfg = MembershipConfig::default();
        let mut a = Membership::new(member(1), vec![], cfg, 0);
        // A knows 40 members that B never heard of (no gossip reached B).
        for i in 10..50 {
            a.apply_quietly(member(i), 0);
        }
        let b = Membership::new(member(2), vec![], cfg, 0);
        let mut ms = vec![a, b];
        ms[0].apply_quietly(member(2), 0);
        ms[1].apply_quietly(member(1), 0);
        // The members themselves are not running here: sync only.
        // One round reconciles up to 64 buckets; two rounds here.
        for _ in 0..2 {
            let total = ms[1].digest_total();
            ms[1].out.push_back((member(1).addr, OverlayMsg::SyncDigest { total }));
            pump(&mut ms, 0);
        }
        assert_eq!(ms[1].live_count(), 41, "B learnt everyone A knows");
        assert_eq!(ms[0].digest_total(), ms[1].digest_total(), "views agree");
        // Equal views: a sync costs one datagram and no answer.
        let total = ms[1].digest_total();
        ms[1].out.push_back((member(1).addr, OverlayMsg::SyncDigest { total }));
        let _ = &mut rng;
        pump(&mut ms, 0);
        assert!(ms[0].poll_send().is_none() && ms[1].poll_send().is_none());
    }

    #[test]
    fn a_suspect_refutes_and_the_dead_stay_dead_at_their_incarnation() {
        let mut m = Membership::new(member(1), vec![], MembershipConfig::default(), 0);
        let me = m.me();
        // Someone says we are suspect: we bump our incarnation.
        m.apply(Member { state: MemberState::Suspect, ..me }, 10);
        assert_eq!(m.me().incarnation, me.incarnation + 1);
        // X is declared dead; an older alive rumour does not revive it, a
        // newer incarnation does.
        let x = member(5);
        m.apply(x, 10);
        m.apply(Member { state: MemberState::Dead, ..x }, 20);
        assert_eq!(m.live_count(), 0);
        m.apply(x, 30);
        assert_eq!(m.live_count(), 0);
        m.apply(Member { incarnation: 2, ..x }, 40);
        assert_eq!(m.live_count(), 1);
        let ev: Vec<MemberEvent> = std::iter::from_fn(|| m.poll_event()).collect();
        assert_eq!(ev.len(), 3, "{ev:?}");
    }
}
