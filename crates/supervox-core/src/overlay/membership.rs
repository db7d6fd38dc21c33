//! SWIM membership among supernodes (Das, Gupta, Motivala 2002).
//!
//! Each period a supernode pings one member (round-robin over a shuffled
//! list, so every member is probed within one sweep); a member that does not
//! ack in time is probed indirectly through `k` others; one that still does
//! not answer becomes *suspect*, and *dead* unless it refutes the suspicion
//! by bumping its incarnation before the suspicion times out. Changes travel
//! piggybacked on pings and acks, each retransmitted `~3·log2(N)` times —
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
/// Member lists sent to joiners per second, at most (a snapshot of 10 000
/// members is ~600 datagrams).
const JOINS_SERVED_PER_SEC: u32 = 20;

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

#[derive(Debug)]
struct Gossip {
    m: Member,
    left: u8,
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
    gossip: VecDeque<Gossip>,
    suspects: VecDeque<(UserId, u32, u64)>,
    dead: VecDeque<(UserId, u32, u64)>,
    seq: u32,
    next_probe_ms: u64,
    seeds: Vec<SocketAddr>,
    next_join_ms: u64,
    joins_window: (u64, u32),
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
        Self {
            cfg,
            me,
            members: Map::default(),
            by_addr: Map::default(),
            live: 0,
            order: Vec::new(),
            order_pos: 0,
            probe: None,
            relays: VecDeque::new(),
            gossip: VecDeque::new(),
            suspects: VecDeque::new(),
            dead: VecDeque::new(),
            seq: 0,
            next_probe_ms: now_ms,
            seeds,
            next_join_ms: now_ms,
            joins_window: (0, 0),
            out: VecDeque::new(),
            events: VecDeque::new(),
        }
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
                for m in members.iter().take(MAX_ITEMS_PER_PACKET) {
                    self.apply(*m, now_ms);
                }
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

    /// Apply one piece of news about a member: newer incarnations win, and
    /// at one incarnation dead beats suspect beats alive.
    fn apply(&mut self, m: Member, now_ms: u64) {
        if m.id == self.me.id {
            if m.state != MemberState::Alive && m.incarnation >= self.me.incarnation {
                // Refute: we are alive.
                self.me.incarnation = m.incarnation.saturating_add(1);
                self.enqueue(self.me);
            }
            return;
        }
        match self.members.get_mut(&m.id) {
            None => {
                if m.state == MemberState::Dead || self.members.len() >= MAX_MEMBERS {
                    return;
                }
                self.members.insert(m.id, Entry { m, srtt_ms: 0 });
                self.index_addr(m.id, m.addr, None);
                self.live += 1;
                self.order.push(m.id);
                if m.state == MemberState::Suspect {
                    self.suspects.push_back((m.id, m.incarnation, now_ms + self.cfg.suspect_ms));
                }
                self.events.push_back(MemberEvent::Up(m));
                self.enqueue(m);
            }
            Some(e) => {
                let newer = m.incarnation > e.m.incarnation
                    || (m.incarnation == e.m.incarnation && rank(m.state) > rank(e.m.state));
                if !newer {
                    return;
                }
                let was_live = e.m.state != MemberState::Dead;
                let old_addr = e.m.addr;
                e.m = m;
                let now_live = m.state != MemberState::Dead;
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
                self.enqueue(m);
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

    fn enqueue(&mut self, m: Member) {
        self.gossip.retain(|g| g.m.id != m.id);
        let n = self.live + 2;
        let left = (3 * (usize::BITS - n.leading_zeros())).min(60) as u8;
        self.gossip.push_front(Gossip { m, left });
        self.gossip.truncate(MAX_GOSSIP_QUEUE);
    }

    /// Updates for the next packet: the least-sent first (they are at the
    /// front), each counted as one transmission.
    fn take_updates(&mut self) -> Vec<Member> {
        let mut out = Vec::new();
        for g in self.gossip.iter_mut().take(MAX_UPDATES_PER_PACKET) {
            out.push(g.m);
            g.left = g.left.saturating_sub(1);
        }
        // Move the sent ones behind the unsent, so all get their turns.
        let sent = out.len();
        self.gossip.rotate_left(sent.min(self.gossip.len()));
        self.gossip.retain(|g| g.left > 0);
        out
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
