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
//! piggybacked update (10^12 operations to converge); this table
//! ([`table`]) is a compact slab with an O(1) index, timers are queues rather
//! than scans, and it records the supernode's load. See docs/DEPENDENCIES.md.

mod table;

use crate::overlay::rendezvous::{member_seed, premix, top_premixed};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;
use std::collections::VecDeque;
use std::net::SocketAddr;
use supervox_proto::overlay::{Member, MemberState, OverlayMsg, MAX_ITEMS_PER_PACKET, MAX_UPDATES_PER_PACKET};
use supervox_proto::UserId;
use table::MemberTable;

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
/// Anti-entropy rounds are spaced out beyond this many members (see `tick`).
const SYNC_SPACING_FROM: u64 = 2_000;
/// Stands for us in the gossip queue (our own refutations).
const ME: u32 = u32::MAX;
/// An incarnation more than this far (seconds) ahead of the clock is forged:
/// incarnations start at the start time in unix seconds and grow by one per
/// refutation, so nobody can push a member to `u32::MAX` and evict it for good.
pub const MAX_INCARNATION_AHEAD_S: u64 = 3_600;
/// Confirmation pings (hearsay of a member's new incarnation or address,
/// checked with the member itself) sent per second, at most.
const CONFIRMS_PER_SEC: u32 = 50;
/// A member is asked to confirm hearsay about it at most this often.
const CONFIRM_EVERY_MS: u64 = 5_000;
/// Members with a confirmation remembered, at most.
const MAX_CONFIRMS: usize = 1_024;

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
    table: MemberTable,
    live: usize,
    /// The live members for rendezvous hashing: `(premix(seed), slot)`.
    ring: Vec<(u64, u32)>,
    /// Probe order: slot numbers (stale ones are skipped and dropped at the
    /// next reshuffle).
    order: Vec<u32>,
    order_pos: usize,
    probe: Option<Probe>,
    relays: VecDeque<Relay>,
    /// Updates still to piggyback, least sent first: `(slot or ME, stamp)`;
    /// a place whose stamp is not the slot's current one is stale. The
    /// transmissions left live in the slot.
    gossip_order: VecDeque<(u32, u8)>,
    /// Slots (and us) with transmissions left.
    gossip_len: usize,
    /// Our own transmissions left and stamp.
    me_gossip: (u8, u8),
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
    /// Pings sealed for a given member at a given address, to check hearsay.
    confirms: VecDeque<(UserId, SocketAddr, OverlayMsg)>,
    /// When each member was last asked to confirm (bounded).
    confirmed_at: crate::Map<UserId, u64>,
    confirms_window: (u64, u32),
    events: VecDeque<MemberEvent>,
}

/// A queue that once held a burst (a member list served, a warm start)
/// gives its memory back once empty: 10 000 supernodes in one simulator
/// process would otherwise each keep the capacity of their largest burst.
pub(crate) fn shrink_when_drained<T>(q: &mut VecDeque<T>) {
    if q.is_empty() && q.capacity() > 64 {
        q.shrink_to(16);
    }
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
            table: MemberTable::default(),
            live: 0,
            ring: Vec::new(),
            order: Vec::new(),
            order_pos: 0,
            probe: None,
            relays: VecDeque::new(),
            gossip_order: VecDeque::new(),
            gossip_len: 0,
            me_gossip: (0, 0),
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
            confirms: VecDeque::new(),
            confirmed_at: crate::Map::default(),
            confirms_window: (0, 0),
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
    pub fn live(&self) -> impl Iterator<Item = Member> + '_ {
        self.table.iter().filter(|(_, s)| s.is_live()).map(|(_, s)| s.member())
    }

    /// The `r` heaviest of the live members and us for `key_hash`
    /// (rendezvous hashing), heaviest first, with their weights. O(N) over a
    /// compact array of premixed seeds.
    pub fn heaviest(&self, key_hash: u64, r: usize) -> Vec<(u64, Member)> {
        let me = (premix(member_seed(&self.me.id)), ME);
        let members = std::iter::once(me).chain(self.ring.iter().copied());
        top_premixed(key_hash, members, r, |s| member_seed(&self.member_at(*s).id))
            .into_iter()
            .map(|(w, s)| (w, self.member_at(s)))
            .collect()
    }

    /// Us or the member in a slot.
    fn member_at(&self, slot: u32) -> Member {
        match self.table.slot(slot) {
            Some(s) if slot != ME => s.member(),
            _ => self.me,
        }
    }

    /// A member by identity.
    pub fn get(&self, id: &UserId) -> Option<Member> {
        self.table.get(id).map(|s| s.member())
    }

    /// True if a live member advertises `addr`.
    pub fn is_live_addr(&self, addr: &SocketAddr) -> bool {
        self.table.find_addr(addr).and_then(|i| self.table.slot(i)).is_some_and(|s| s.is_live())
    }

    /// The member (in any state) that last advertised `addr`: whom a datagram
    /// to that address is sealed for.
    pub fn id_at(&self, addr: &SocketAddr) -> Option<UserId> {
        self.table.find_addr(addr).and_then(|i| self.table.slot(i)).map(|s| s.id)
    }

    /// True if `id` is a member we know, alive or suspect.
    pub fn is_live(&self, id: &UserId) -> bool {
        self.table.get(id).is_some_and(|s| s.is_live())
    }

    /// Smoothed RTT to a member, if measured.
    pub fn srtt_ms(&self, id: &UserId) -> Option<u32> {
        self.table.get(id).map(|s| u32::from(s.srtt_ms)).filter(|r| *r > 0)
    }

    /// Learn members as from a member list (state, not news: not gossiped).
    pub fn learn(&mut self, members: &[Member], now_ms: u64) {
        let n = members.len().min(MAX_MEMBERS.saturating_sub(self.table.len()));
        self.table.reserve(n);
        self.order.reserve_exact(n);
        self.ring.reserve_exact(n);
        for m in members {
            self.apply_quietly(*m, now_ms, false);
        }
    }

    /// Next confirmation ping: `(member, address, ping)`, sealed for that
    /// member whoever else answers at the address.
    pub fn poll_confirm(&mut self) -> Option<(UserId, SocketAddr, OverlayMsg)> {
        let next = self.confirms.pop_front();
        shrink_when_drained(&mut self.confirms);
        next
    }

    /// Next datagram body to send.
    pub fn poll_send(&mut self) -> Option<(SocketAddr, OverlayMsg)> {
        let next = self.out.pop_front();
        shrink_when_drained(&mut self.out);
        next
    }

    /// Next change of the live set.
    pub fn poll_event(&mut self) -> Option<MemberEvent> {
        let next = self.events.pop_front();
        shrink_when_drained(&mut self.events);
        next
    }

    /// Every packet's header: the sender is alive and talking. Learns
    /// newcomers and their current load and address.
    pub fn observe(&mut self, from: Member, now_ms: u64) {
        if from.id == self.me.id {
            return;
        }
        let from = Member { state: MemberState::Alive, ..from };
        if let Some(s) = self.table.get_mut(&from.id) {
            if s.incarnation == from.incarnation && s.state != Some(MemberState::Dead) {
                // Load changes without an incarnation bump: direct news only.
                s.load = from.load;
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
                    self.apply_quietly(*m, now_ms, true);
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
                self.apply_all(from, updates, now_ms);
                let updates = self.take_updates();
                self.out.push_back((from_addr, OverlayMsg::Ack { seq: *seq, updates }));
            }
            OverlayMsg::Ack { seq, updates } => {
                self.apply_all(from, updates, now_ms);
                self.on_ack(*seq, now_ms);
            }
            OverlayMsg::PingReq { seq, target, updates } => {
                self.apply_all(from, updates, now_ms);
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
        if let Some(m) = self.get(&from.id) {
            if m.state != MemberState::Alive || m.incarnation > from.incarnation {
                list.push(m);
            }
        }
        list.extend(self.live().filter(|m| m.id != from.id));
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
            std::iter::once(self.me).chain(self.live()).filter(|m| want[m.id.0[0] as usize]).collect();
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
                if let Some(s) = self.table.get_mut(&p.target) {
                    let old = u32::from(s.srtt_ms);
                    let srtt = if old == 0 { sample } else { (7 * old + sample) / 8 };
                    s.srtt_ms = srtt.min(u32::from(u16::MAX)) as u16;
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

    /// Piggybacked news from member `sender` (authenticated by the wire):
    /// hearsay, except what it says about itself (its leave), which is as
    /// good as its header.
    fn apply_all(&mut self, sender: &Member, updates: &[Member], now_ms: u64) {
        for m in updates.iter().take(MAX_UPDATES_PER_PACKET) {
            let hearsay = m.id != sender.id;
            if let Some(slot) = self.apply_quietly(*m, now_ms, hearsay) {
                self.enqueue(slot);
            }
        }
    }

    /// What we saw ourselves: a sender's own header, our probe's verdict.
    fn apply(&mut self, m: Member, now_ms: u64) {
        if let Some(slot) = self.apply_quietly(m, now_ms, false) {
            self.enqueue(slot);
        }
    }

    /// Ask member `id` at `addr` itself ([`CONFIRMS_PER_SEC`] in all; a
    /// claimed move once per [`CONFIRM_EVERY_MS`]): its authenticated ack
    /// carries its own entry. `updates` go with the ping: an accusation we
    /// heard, so that the accused refutes it in the ack it sends us.
    fn confirm(&mut self, id: UserId, addr: SocketAddr, updates: Vec<Member>, now_ms: u64) {
        // An accusation is news once per incarnation (the same one again is
        // not newer), so it is asked about every time; claimed moves at most
        // once per CONFIRM_EVERY_MS.
        if updates.is_empty() && self.confirmed_at.get(&id).is_some_and(|t| now_ms < t + CONFIRM_EVERY_MS) {
            return;
        }
        if now_ms >= self.confirms_window.0 + 1_000 {
            self.confirms_window = (now_ms, 0);
        }
        if self.confirms_window.1 >= CONFIRMS_PER_SEC {
            return;
        }
        if self.confirmed_at.len() >= MAX_CONFIRMS {
            self.confirmed_at.retain(|_, t| now_ms < *t + CONFIRM_EVERY_MS);
            if self.confirmed_at.len() >= MAX_CONFIRMS {
                return;
            }
        }
        self.confirms_window.1 += 1;
        self.confirmed_at.insert(id, now_ms);
        self.seq = self.seq.wrapping_add(1);
        self.confirms.push_back((id, addr, OverlayMsg::Ping { seq: self.seq, updates }));
    }

    /// Apply one piece of news about a member: newer incarnations win, and
    /// at one incarnation dead beats suspect beats alive. Returns the slot
    /// (or [`ME`]) whose state is news to gossip, if it changed our view.
    ///
    /// `hearsay`: the news comes from someone else than the member. Then it
    /// may add a member we did not know, or accuse one at the incarnation we
    /// know (which the member refutes), but not move a known member to a new
    /// incarnation or address: only the member can, so we ask it
    /// ([`Membership::confirm`]) and its authenticated answer decides.
    fn apply_quietly(&mut self, m: Member, now_ms: u64, hearsay: bool) -> Option<u32> {
        if u64::from(m.incarnation) > now_ms / 1000 + MAX_INCARNATION_AHEAD_S {
            return None;
        }
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
                return Some(ME);
            }
            return None;
        }
        let Some(i) = self.table.find(&m.id) else {
            if m.state == MemberState::Dead || self.table.len() >= MAX_MEMBERS {
                return None;
            }
            let i = self.table.insert(&m);
            self.toggle_digest(&m);
            self.live += 1;
            self.ring.push((premix(member_seed(&m.id)), i));
            self.order.push(i);
            if m.state == MemberState::Suspect {
                self.suspects.push_back((m.id, m.incarnation, now_ms + self.cfg.suspect_ms));
            }
            self.events.push_back(MemberEvent::Up(m));
            return Some(i);
        };
        let old = self.table.slot(i)?.member();
        let newer =
            m.incarnation > old.incarnation || (m.incarnation == old.incarnation && rank(m.state) > rank(old.state));
        if !newer {
            return None;
        }
        // A refutation of an accusation we believe, at the address we know,
        // spreads as gossip: had each member to ask the accused itself, a
        // flood of false accusations would outrun the confirmations.
        let refutes = m.state == MemberState::Alive
            && m.addr == old.addr
            && old.state == MemberState::Suspect
            && m.incarnation > old.incarnation;
        let m = if hearsay && !refutes {
            if m.incarnation > old.incarnation || (m.state == MemberState::Alive && m.addr != old.addr) {
                let at = if m.state == MemberState::Alive { m.addr } else { old.addr };
                self.confirm(m.id, at, Vec::new(), now_ms);
                return None;
            }
            // An accusation at the incarnation we know: the address stays
            // ours, and hearsay makes a member suspect, never dead — only our
            // own suspicion timer does (the leaver's own word is not hearsay).
            // A lying member thus cannot evict anyone: we ask the accused,
            // with the accusation, and its ack refutes it.
            let state = if m.state == MemberState::Dead { MemberState::Suspect } else { m.state };
            let m = Member { addr: old.addr, state, ..m };
            if rank(m.state) <= rank(old.state) {
                return None;
            }
            self.confirm(m.id, old.addr, vec![m], now_ms);
            m
        } else {
            m
        };
        self.table.set(i, &m);
        let was_live = old.state != MemberState::Dead;
        let now_live = m.state != MemberState::Dead;
        if was_live {
            self.toggle_digest(&old);
        }
        if now_live {
            self.toggle_digest(&m);
        }
        match m.state {
            MemberState::Suspect => self.suspects.push_back((m.id, m.incarnation, now_ms + self.cfg.suspect_ms)),
            MemberState::Dead => self.dead.push_back((m.id, m.incarnation, now_ms + self.cfg.dead_keep_ms)),
            MemberState::Alive => {}
        }
        if was_live && !now_live {
            self.live -= 1;
            if let Some(at) = self.ring.iter().position(|r| r.1 == i) {
                self.ring.swap_remove(at);
            }
            self.events.push_back(MemberEvent::Down(m));
        } else if !was_live && now_live {
            self.live += 1;
            self.ring.push((premix(member_seed(&m.id)), i));
            self.order.push(i);
            self.events.push_back(MemberEvent::Up(m));
        }
        Some(i)
    }

    /// Transmissions left and stamp of a gossip place's slot.
    fn gossip_of(&mut self, slot: u32) -> Option<(&mut u8, &mut u8)> {
        if slot == ME {
            let (left, stamp) = &mut self.me_gossip;
            return Some((left, stamp));
        }
        self.table.slot_mut(slot).map(|s| (&mut s.gossip_left, &mut s.gossip_stamp))
    }

    /// Queue a slot's current state for piggybacking `4·⌈log10(N+1)⌉` times,
    /// as memberlist does (an epidemic reaches everyone with high
    /// probability; 20 at 10 000 members), but at least 8 so small networks
    /// converge in seconds. Fresh news goes first.
    fn enqueue(&mut self, slot: u32) {
        let mut n = self.live + 1;
        let mut digits = 0u8;
        while n > 0 {
            n /= 10;
            digits += 1;
        }
        let times = (4 * digits).max(8);
        let Some((left, stamp)) = self.gossip_of(slot) else { return };
        let was_queued = *left > 0;
        *left = times;
        *stamp = stamp.wrapping_add(1);
        let stamp = *stamp;
        if !was_queued {
            self.gossip_len += 1;
        }
        self.gossip_order.push_front((slot, stamp));
        // Bounded: the most sent updates (at the back) go first.
        while self.gossip_len > MAX_GOSSIP_QUEUE || self.gossip_order.len() > 2 * MAX_GOSSIP_QUEUE {
            let Some((s, st)) = self.gossip_order.pop_back() else { break };
            if let Some((left, stamp)) = self.gossip_of(s) {
                if *left > 0 && *stamp == st {
                    *left = 0;
                    self.gossip_len -= 1;
                }
            }
        }
    }

    /// Updates for the next packet: the least-sent first (at the front),
    /// each counted as one transmission and moved to the back.
    fn take_updates(&mut self) -> Vec<Member> {
        let mut out: Vec<Member> = Vec::new();
        let mut scanned = 0;
        while out.len() < MAX_UPDATES_PER_PACKET && scanned < self.gossip_order.len() {
            let Some((slot, st)) = self.gossip_order.pop_front() else { break };
            scanned += 1;
            let m = if slot == ME { self.me } else { self.table.slot(slot).map(|s| s.member()).unwrap_or(self.me) };
            let Some((left, stamp)) = self.gossip_of(slot) else { continue };
            if *left == 0 || *stamp != st {
                continue; // stale: queued again since, or sent out already
            }
            *left -= 1;
            let done = *left == 0;
            out.push(m);
            if done {
                self.gossip_len -= 1;
            } else {
                self.gossip_order.push_back((slot, st));
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
        self.enqueue(ME);
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
                if let Some(t) = self.get(&target) {
                    let helpers = self.random_live(rng, self.cfg.indirect, &target);
                    for h in helpers {
                        let updates = self.take_updates();
                        self.out.push_back((h, OverlayMsg::PingReq { seq, target: t, updates }));
                    }
                }
            }
        }
        if now_ms >= self.next_sync_ms {
            // A round with a peer whose view differs in a bucket sends that
            // bucket whole (~N/256 members), and under churn some bucket
            // always differs while news spreads: past 2 000 members rounds
            // are spaced out in proportion, which keeps anti-entropy near
            // ~0.3 KB/s per supernode at 10 000 (measured in the simulator).
            let scale = (self.live as u64 + 1).div_ceil(SYNC_SPACING_FROM).max(1);
            self.next_sync_ms = now_ms + self.cfg.sync_ms * scale;
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

    /// When [`Membership::tick`] next has work: the probe cycle and
    /// anti-entropy while there are members, a pending probe's indirect
    /// stage, suspicion, tombstone and relay expiry, join retries while
    /// alone. `None`: nothing until an input arrives. Calling `tick`
    /// earlier or more often is harmless.
    pub fn poll_timeout(&self) -> Option<u64> {
        let mut at = None::<u64>;
        let mut at_least = |t: u64| at = Some(at.map_or(t, |a| a.min(t)));
        if self.live > 0 || self.probe.is_some() {
            at_least(self.next_probe_ms);
        }
        if self.live > 0 {
            at_least(self.next_sync_ms);
        }
        if let Some(p) = self.probe.as_ref().filter(|p| !p.acked && !p.indirect_sent) {
            at_least(p.sent_ms + self.cfg.ack_timeout_ms);
        }
        if self.live == 0 && !self.seeds.is_empty() {
            at_least(self.next_join_ms);
        }
        // The expiry queues are in time order: their fronts are the next due.
        for t in [self.suspects.front().map(|s| s.2), self.dead.front().map(|s| s.2)].into_iter().flatten() {
            at_least(t);
        }
        if let Some(r) = self.relays.front() {
            at_least(r.until_ms);
        }
        at
    }

    fn suspect(&mut self, id: UserId, now_ms: u64) {
        if let Some(m) = self.get(&id) {
            if m.state == MemberState::Alive {
                self.apply(Member { state: MemberState::Suspect, ..m }, now_ms);
            }
        }
    }

    fn expire(&mut self, now_ms: u64) {
        while self.suspects.front().is_some_and(|s| s.2 <= now_ms) {
            let Some((id, inc, _)) = self.suspects.pop_front() else { break };
            if let Some(m) = self.get(&id) {
                if m.state == MemberState::Suspect && m.incarnation == inc {
                    self.apply(Member { state: MemberState::Dead, ..m }, now_ms);
                }
            }
        }
        while self.dead.front().is_some_and(|s| s.2 <= now_ms) {
            let Some((id, inc, _)) = self.dead.pop_front() else { break };
            let Some(i) = self.table.find(&id) else { continue };
            let Some(s) = self.table.slot(i) else { continue };
            if s.state == Some(MemberState::Dead) && s.incarnation == inc {
                if s.gossip_left > 0 {
                    self.gossip_len -= 1;
                }
                self.table.remove(i);
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
                let i = self.order[self.order_pos];
                self.order_pos += 1;
                if let Some(s) = self.table.slot(i).filter(|s| s.is_live()) {
                    return Some(s.member());
                }
            }
            let table = &self.table;
            self.order.retain(|i| table.slot(*i).is_some_and(|s| s.is_live()));
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
            let i = self.order[rng.gen_range(0..self.order.len())];
            let Some(s) = self.table.slot(i).filter(|s| s.is_live() && s.id != *except) else {
                continue;
            };
            let addr = s.addr();
            if !out.contains(&addr) {
                out.push(addr);
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

    /// Member 1's view of members 2 and 3, and a way for member 3 to tell
    /// it `news` (hearsay, piggybacked on a ping) at 10 s.
    fn view_with_a_gossip() -> (Membership, impl Fn(&mut Membership, Member)) {
        let mut a = Membership::new(member(1), vec![], MembershipConfig::default(), 0);
        a.learn(&[member(2), member(3)], 0);
        let gossip = member(3);
        let say = move |a: &mut Membership, news: Member| {
            a.on_msg(gossip.addr, &gossip, &OverlayMsg::Ping { seq: 1, updates: vec![news] }, 10_000);
        };
        (a, say)
    }

    #[test]
    fn hearsay_can_neither_move_a_member_nor_evict_it() {
        let now = 10_000;
        let (mut a, say) = view_with_a_gossip();
        let victim = member(2);
        let evil: SocketAddr = "10.6.6.6:7000".parse().unwrap();
        // Take over its address at a higher incarnation: not applied; the
        // member itself is asked, at the claimed address, sealed for it.
        say(&mut a, Member { addr: evil, incarnation: 7, ..victim });
        assert_eq!(a.get(&victim.id), Some(victim));
        let Some((id, at, OverlayMsg::Ping { .. })) = a.poll_confirm() else { panic!("no confirmation asked") };
        assert_eq!((id, at), (victim.id, evil));
        // Evict it for good at u32::MAX, or at an incarnation it never had: ignored.
        say(&mut a, Member { state: MemberState::Dead, incarnation: u32::MAX, ..victim });
        say(&mut a, Member { state: MemberState::Dead, incarnation: 9, ..victim });
        assert_eq!(a.get(&victim.id), Some(victim));
        // Accused dead at the incarnation we know: only suspected (never
        // dead on hearsay), and the accused is asked with the accusation.
        let mut v = Membership::new(victim, vec![], MembershipConfig::default(), 0);
        v.learn(&[member(1)], 0);
        say(&mut a, Member { state: MemberState::Dead, addr: evil, ..victim });
        assert_eq!(a.get(&victim.id).map(|m| (m.state, m.addr)), Some((MemberState::Suspect, victim.addr)));
        assert!(std::iter::from_fn(|| a.poll_event()).all(|e| !matches!(e, MemberEvent::Down(m) if m.id == victim.id)));
        let confirm = std::iter::from_fn(|| a.poll_confirm()).last();
        let Some((id, at, ping @ OverlayMsg::Ping { .. })) = confirm else { panic!("the accused is not asked") };
        assert_eq!((id, at), (victim.id, victim.addr));
        // The accused refutes in its ack; we believe its own word.
        v.on_msg(a.me().addr, &a.me(), &ping, now);
        let Some((to, ack @ OverlayMsg::Ack { .. })) = v.poll_send() else { panic!("no ack") };
        assert_eq!(to, a.me().addr);
        assert_eq!(v.me().incarnation, victim.incarnation + 1);
        a.observe(v.me(), now);
        a.on_msg(victim.addr, &v.me(), &ack, now);
        let seen = a.get(&victim.id).map(|m| (m.state, m.incarnation));
        assert_eq!(seen, Some((MemberState::Alive, victim.incarnation + 1)));
        // What a member says about itself is its own word: its leave counts at once.
        let c = member(3);
        let leave = OverlayMsg::Ping { seq: 2, updates: vec![Member { state: MemberState::Dead, ..c }] };
        a.on_msg(c.addr, &c, &leave, now);
        assert_eq!(a.get(&c.id).map(|m| m.state), Some(MemberState::Dead));
        // About us: an accusation far ahead of the clock does not make us
        // jump there; one at our incarnation is refuted by one.
        let me = a.me();
        say(&mut a, Member { state: MemberState::Dead, incarnation: u32::MAX, ..me });
        assert_eq!(a.me().incarnation, me.incarnation);
        say(&mut a, Member { state: MemberState::Suspect, ..me });
        assert_eq!(a.me().incarnation, me.incarnation + 1);
    }

    /// A refutation of a believed accusation spreads by gossip (no member
    /// has to ask the accused itself), a move to a new address never does.
    #[test]
    fn a_refutation_spreads_as_gossip_but_a_move_does_not() {
        let (mut a, say) = view_with_a_gossip();
        let victim = member(2);
        say(&mut a, Member { state: MemberState::Suspect, ..victim });
        assert_eq!(a.get(&victim.id).map(|m| m.state), Some(MemberState::Suspect));
        let refuted = Member { incarnation: victim.incarnation + 1, ..victim };
        say(&mut a, refuted);
        assert_eq!(a.get(&victim.id), Some(refuted));
        // Alive already: a higher incarnation elsewhere waits for the member's own word.
        let evil: SocketAddr = "10.6.6.6:7000".parse().unwrap();
        say(&mut a, Member { incarnation: victim.incarnation + 2, addr: evil, ..victim });
        say(&mut a, Member { incarnation: victim.incarnation + 3, ..victim });
        assert_eq!(a.get(&victim.id), Some(refuted));
    }

    #[test]
    fn anti_entropy_pulls_in_what_gossip_missed_and_equal_views_stay_quiet() {
        let mut rng = StdRng::seed_from_u64(3);
        let cfg = MembershipConfig::default();
        let mut a = Membership::new(member(1), vec![], cfg, 0);
        // A knows 40 members that B never heard of (no gossip reached B).
        for i in 10..50 {
            a.apply_quietly(member(i), 0, false);
        }
        let b = Membership::new(member(2), vec![], cfg, 0);
        let mut ms = vec![a, b];
        ms[0].apply_quietly(member(2), 0, false);
        ms[1].apply_quietly(member(1), 0, false);
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

    fn member_n(n: u32) -> Member {
        let mut id = [0u8; 32];
        id[..4].copy_from_slice(&n.to_le_bytes());
        id[4] = 0xab;
        Member {
            id: UserId(id),
            addr: SocketAddr::from(([10, 1, (n >> 8) as u8, n as u8], 7000)),
            incarnation: 1,
            state: MemberState::Alive,
            load: 0,
        }
    }

    #[test]
    fn the_rendezvous_ring_follows_the_live_set() {
        use crate::overlay::rendezvous::{key_hash, top};
        let mut m = Membership::new(member(1), vec![], MembershipConfig::default(), 0);
        for n in 0..300 {
            m.apply(member_n(n), 0);
        }
        // Some die, some of those come back, some are only suspect (still holders).
        for n in (0..300).step_by(3) {
            m.apply(Member { state: MemberState::Dead, ..member_n(n) }, 10);
        }
        for n in (0..300).step_by(9) {
            m.apply(Member { incarnation: 2, ..member_n(n) }, 20);
        }
        for n in (1..300).step_by(7) {
            m.apply(Member { state: MemberState::Suspect, ..member_n(n) }, 30);
        }
        let live: Vec<Member> = std::iter::once(m.me()).chain(m.live()).collect();
        assert_eq!(live.len(), 300 - 100 + 34 + 1);
        for k in 0..500 {
            let kh = key_hash(&format!("user{k}"));
            let want: Vec<UserId> =
                top(kh, live.iter().map(|x| (member_seed(&x.id), x.id)), 10).into_iter().map(|(_, id)| id).collect();
            let got: Vec<UserId> = m.heaviest(kh, 10).into_iter().map(|(_, x)| x.id).collect();
            assert_eq!(got, want);
        }
    }

    #[test]
    fn the_gossip_queue_is_bounded_and_sends_fresh_news_first() {
        let mut m = Membership::new(member(1), vec![], MembershipConfig::default(), 0);
        for n in 0..(MAX_GOSSIP_QUEUE as u32 + 500) {
            m.apply(member_n(n), 0);
        }
        assert_eq!(m.gossip_len, MAX_GOSSIP_QUEUE);
        assert!(m.gossip_order.len() <= 2 * MAX_GOSSIP_QUEUE);
        // The newest news goes out first, each member once per packet.
        let first = m.take_updates();
        assert_eq!(first.len(), MAX_UPDATES_PER_PACKET);
        assert_eq!(first[0].id, member_n(MAX_GOSSIP_QUEUE as u32 + 499).id);
        let mut ids: Vec<UserId> = first.iter().map(|x| x.id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), MAX_UPDATES_PER_PACKET);
        // Re-queued news (a member now suspect) is sent in its new state,
        // not twice.
        let x = member_n(7_000_000);
        m.apply(x, 0);
        m.apply(Member { state: MemberState::Suspect, ..x }, 1);
        let next = m.take_updates();
        assert_eq!(next[0], Member { state: MemberState::Suspect, ..x });
        assert_eq!(next.iter().filter(|u| u.id == x.id).count(), 1);
        // Every update is sent a bounded number of times, then the queue empties.
        let mut sent = 0;
        while !m.take_updates().is_empty() {
            sent += 1;
            assert!(sent < 100_000);
        }
        assert_eq!(m.gossip_len, 0);
    }
}
