//! What happens to the network: supernodes starting and leaving, clients
//! arriving, leaving and restarting, the mass crash, and the lookups whose
//! outcome is measured.

use crate::config::{
    Scenario, SimConfig, CLIENT_OFFLINE_MEDIAN_MS, CLIENT_SESSION_MEDIAN_MS, EPOCH_MS, FLASH_WAVE_MS, MASS_CRASH_SHARE,
    SN_SESSION_MEDIAN_MS,
};
use crate::engine::{Ctx, Ev, Sim};
use crate::metrics::{LookupRecord, Outcome, Report};
use crate::net::{self, exp_with_median, Latency, Node};
use crate::nodes::{ClientSlot, SnSlot, KIND_CLIENT_ID, LOOKUP_REQ_BASE};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::net::SocketAddr;
use supervox_core::host_cache::HostCache;
use supervox_core::Identity;
use supervox_proto::overlay::Member;
use supervox_proto::{LookupAnswer, Message};

/// No lookup is started this close to the end of the run, so every one
/// has time to finish.
const LOOKUP_TAIL_MS: u64 = 5_000;
/// Downtime of a client in the restart wave: a reboot.
const RESTART_DOWN_MS: std::ops::Range<u64> = 30_000..120_000;

/// The fate of the names accepted during the run, checked at its end.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct NamesCheck {
    /// Names accepted at least once.
    pub claimed: u64,
    /// ... that no live supernode holds for their owner.
    pub missing: u64,
    /// ... that a live supernode holds under another key.
    pub changed_owner: u64,
    /// ... missing or changed owner.
    pub lost: u64,
}

/// Copies of one user's name claim held by live honest supernodes.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct NameCopies {
    /// Under the user's own key.
    pub owner: u32,
    /// Under another key.
    pub other: u32,
}

/// A lookup in flight.
#[derive(Debug)]
pub(crate) struct PendingLookup {
    from: u32,
    target: u32,
    issued: u64,
    measured: bool,
    /// Most overlay hops any of its messages made.
    pub max_hops: u8,
    /// Overlay messages it caused.
    pub overlay_msgs: u32,
    /// When the client's supernode sent the first `Lookup` datagram, and
    /// the RTT to the holder it went to.
    pub overlay_sent: Option<(u64, u64)>,
    /// When the first `LookupAns` reached the client's supernode.
    pub overlay_answered: Option<u64>,
}

impl Sim {
    /// A network set up for `cfg`, nothing run yet.
    pub fn new(cfg: SimConfig) -> Result<Self, String> {
        cfg.validate()?;
        let mut rng = StdRng::seed_from_u64(cfg.seed);
        let latency = Latency::new(&mut rng);
        let mut sim = Sim::base(cfg, rng, latency);
        let cfg = sim.cfg.clone();
        let window_end = EPOCH_MS + cfg.event_ms().unwrap_or(cfg.duration_ms);
        sim.metrics.start(EPOCH_MS + cfg.warmup_ms, window_end, EPOCH_MS);
        // Supernodes come up over the first two seconds, in slot order; or,
        // warm, all at once with the member list a Join would fetch.
        if cfg.byzantine > 0.0 {
            sim.byzantine_setup();
            sim.at(EPOCH_MS + cfg.warmup_ms, Ev::ByzantineSample);
        }
        let spacing = (2_000 / cfg.supernodes as u64).clamp(1, 5);
        for i in 0..cfg.supernodes {
            let loc = sim.latency.place(&mut sim.rng);
            sim.sns.push(SnSlot::new(loc));
            if !cfg.warm_start {
                sim.at(EPOCH_MS + i as u64 * spacing, Ev::SnStart(i as u32));
            }
        }
        if cfg.warm_start {
            sim.warm_start();
        }
        // Clients arrive over the first half of the warm-up.
        for c in 0..cfg.clients {
            let identity = Identity::from_seed(net::seed32(cfg.seed, KIND_CLIENT_ID, c as u64));
            let loc = sim.latency.place(&mut sim.rng);
            sim.clients.push(ClientSlot {
                client: None,
                user: identity.user_id(),
                identity,
                name: format!("u{c}"),
                host_cache: HostCache::new(),
                gen: 0,
                loc,
                links: Vec::new(),
                sn: None,
                dialing: false,
                tick_at: u64::MAX,
                claimed: false,
            });
            let arrive = 5_000 + sim.rng.gen_range(0..(cfg.warmup_ms / 2).max(1));
            sim.at(EPOCH_MS + arrive, Ev::ClientStart(c as u32));
        }
        sim.at(window_end, Ev::WindowEnd);
        if cfg.lookup_rate > 0.0 {
            sim.at(EPOCH_MS + cfg.warmup_ms, Ev::Lookup);
        }
        if let Some(e) = cfg.event_ms() {
            sim.at(EPOCH_MS + e, Ev::Event);
        }
        if let Some(m) = cfg.mail.clone() {
            sim.mail = Some(crate::mail::MailSim::new(m));
            // Without client churn of its own (mass crash, steady without
            // churn) a share of the clients signs out after the warm-up and
            // comes back after the event (or a minute on), at least 70 s
            // before the end so that each return can be judged; the flash
            // crowd's restart wave signs everyone out anyway.
            let end = EPOCH_MS + cfg.duration_ms;
            let from = EPOCH_MS + cfg.event_ms().map_or(cfg.warmup_ms + 60_000, |e| e + 5_000);
            let wave = match cfg.scenario {
                Scenario::FlashCrowd => None,
                Scenario::Steady if sim.churn() => None,
                _ => Some((from, end.saturating_sub(70_000).max(from))),
            };
            sim.mail_setup(wave);
        }
        Ok(sim)
    }

    /// Run the whole scenario and summarise it.
    pub fn run(mut self) -> Report {
        let wall = std::time::Instant::now();
        let reached = self.run_loop();
        self.metrics.reached = reached;
        // Closes the supernode-time integral if the window was still open.
        self.metrics.sn_count_changed(self.now, self.live_sns.len());
        let pending: Vec<u64> = self.pending.keys().copied().collect();
        for id in pending {
            self.finish_lookup(id, Outcome::NoAnswer, None);
        }
        self.mail_finish();
        self.collect_live_stats();
        let names = self.names_check();
        Report::build(&self, names, wall.elapsed())
    }

    fn churn(&self) -> bool {
        self.cfg.scenario == Scenario::Steady && self.cfg.churn_speedup > 0.0
    }

    /// Up to `k` distinct live supernodes, at random.
    fn pick_sns(&mut self, k: usize) -> Vec<SocketAddr> {
        let mut live: Vec<u32> = self.live_sns.as_slice().to_vec();
        let k = k.min(live.len());
        for j in 0..k {
            let r = self.rng.gen_range(j..live.len());
            live.swap(j, r);
        }
        live[..k].iter().map(|i| net::sn_addr(*i)).collect()
    }

    /// Every supernode starts now, each knowing all the others.
    fn warm_start(&mut self) {
        for i in 0..self.sns.len() as u32 {
            self.sn_start(i);
        }
        let members: Vec<Member> = self.sns.iter().filter_map(|s| s.sn.as_ref().map(|sn| sn.member())).collect();
        let now = self.now;
        for i in 0..self.sns.len() as u32 {
            if let Some(sn) = self.sns[i as usize].sn.as_mut() {
                sn.learn_members(&members, now);
            }
            self.drain_sn(i, None);
        }
    }

    pub(crate) fn sn_start(&mut self, i: u32) {
        let seeds = self.pick_sns(self.cfg.sn_seeds);
        self.start_supernode(i, seeds);
        if self.churn() {
            let life = exp_with_median(&mut self.rng, SN_SESSION_MEDIAN_MS / self.cfg.churn_speedup);
            self.after(life, Ev::SnStop(i));
        }
    }

    /// A supernode's session ends; in steady state a new one takes its
    /// place (a new process elsewhere, with its own identity and address).
    pub(crate) fn sn_stop(&mut self, i: u32, replace: bool) {
        self.kill_supernode(i);
        if replace && self.cfg.scenario == Scenario::Steady {
            let loc = self.latency.place(&mut self.rng);
            let j = self.sns.len() as u32;
            self.sns.push(SnSlot::new(loc));
            self.metrics.sn_joins += 1;
            self.after(0, Ev::SnStart(j));
        }
    }

    pub(crate) fn client_start(&mut self, c: u32) {
        if self.clients[c as usize].gen == 0 {
            // A new install: a few supernodes from its seed list.
            let seeds = self.pick_sns(self.cfg.client_seeds);
            for s in seeds {
                self.clients[c as usize].host_cache.add(s);
            }
        }
        self.start_client(c);
        let restart = self.clients[c as usize].gen >= 2 && self.cfg.scenario == Scenario::FlashCrowd;
        if restart {
            self.metrics.restarts_left = self.metrics.restarts_left.saturating_sub(1);
            if self.metrics.restarts_left == 0 {
                self.start_recovery();
            }
        }
        if self.churn() {
            let life = exp_with_median(&mut self.rng, CLIENT_SESSION_MEDIAN_MS / self.cfg.churn_speedup);
            let away = exp_with_median(&mut self.rng, CLIENT_OFFLINE_MEDIAN_MS / self.cfg.churn_speedup);
            self.after(life, Ev::ClientStop(c, Some(away)));
        }
    }

    pub(crate) fn client_stop(&mut self, c: u32, back_after: Option<u64>) {
        self.kill_client(c);
        if let Some(d) = back_after {
            self.after(d, Ev::ClientStart(c));
        }
    }

    /// The mass crash, or the start of the restart wave.
    pub(crate) fn scenario_event(&mut self) {
        match self.cfg.scenario {
            Scenario::Steady => {}
            Scenario::MassCrash => {
                let k = (self.live_sns.len() as f64 * MASS_CRASH_SHARE).round() as usize;
                let victims: Vec<u32> = self.pick_sns(k).into_iter().filter_map(net::sn_index).collect();
                for i in victims {
                    self.kill_supernode(i);
                }
                self.metrics.event_at = Some(self.now);
                self.start_recovery();
            }
            Scenario::FlashCrowd => {
                self.metrics.event_at = Some(self.now);
                self.metrics.restarts_left = self.clients.len();
                for c in 0..self.clients.len() as u32 {
                    let t = self.rng.gen_range(0..FLASH_WAVE_MS);
                    let down = self.rng.gen_range(RESTART_DOWN_MS);
                    self.after(t, Ev::ClientStop(c, Some(down)));
                }
            }
        }
    }

    fn start_recovery(&mut self) {
        self.metrics.recovery_from = Some(self.now);
        self.metrics.callable_low(self.callable.len());
        self.on_callable_up();
    }

    /// Called whenever a client became callable.
    pub(crate) fn on_callable_up(&mut self) {
        let m = &mut self.metrics;
        if let (Some(from), None) = (m.recovery_from, m.recovered_at) {
            // Clients of the mail's away wave are signed out on purpose.
            let away = self.mail.as_ref().map_or(0, |m| m.away_out);
            if self.callable.len() as f64 >= 0.99 * (self.clients.len() - away) as f64 {
                m.recovered_at = Some(self.now.max(from));
                m.recovered_from = from;
            }
        }
    }

    /// The overlay measurement window closes.
    pub(crate) fn window_end(&mut self) {
        self.metrics.sn_count_changed(self.now, self.live_sns.len());
    }

    /// A client looks up a random callable user through its supernode.
    pub(crate) fn lookup_tick(&mut self) {
        let mean_ms = 1_000.0 / self.cfg.lookup_rate;
        let u: f64 = self.rng.gen_range(f64::EPSILON..1.0);
        self.after((-u.ln() * mean_ms).max(1.0) as u64, Ev::Lookup);
        if self.now + LOOKUP_TAIL_MS > EPOCH_MS + self.cfg.duration_ms || self.callable.len() < 2 {
            return;
        }
        let Some(from) = self.callable.pick(&mut self.rng) else {
            return;
        };
        let target = loop {
            let t = self.callable.pick(&mut self.rng).unwrap_or(from);
            if t != from {
                break t;
            }
        };
        let slot = &self.clients[from as usize];
        let Some(conn) = slot.client.as_ref().and_then(|c| c.supernode_conn()) else {
            return;
        };
        if slot.sn.is_some_and(|s| self.is_byzantine(s)) {
            self.byz.lookups_via_byzantine += 1;
            return;
        }
        let me = Node::Client(from, slot.gen);
        self.metrics.lookup_seq += 1;
        let id = self.metrics.lookup_seq;
        let measured = self.now >= EPOCH_MS + self.cfg.warmup_ms;
        self.pending.insert(
            id,
            PendingLookup {
                from,
                target,
                issued: self.now,
                measured,
                max_hops: 0,
                overlay_msgs: 0,
                overlay_sent: None,
                overlay_answered: None,
            },
        );
        let name = self.clients[target as usize].name.clone();
        let msg = Message::Lookup { req_id: LOOKUP_REQ_BASE + id, name };
        self.send(conn, me, msg, Some(Ctx { lookup: id, hops: 0 }));
    }

    /// The answer to lookup `id` reached its client.
    pub(crate) fn lookup_answered(&mut self, id: u64, answer: &LookupAnswer, ctx: Option<Ctx>) {
        let Some(p) = self.pending.get(&id) else {
            return;
        };
        let user = self.clients[p.target as usize].user;
        let outcome = match answer {
            LookupAnswer::Online { claim, presence } if claim.user_id == user && presence.user_id == user => {
                Outcome::Online
            }
            LookupAnswer::Online { .. } => Outcome::WrongUser,
            LookupAnswer::Offline { .. } => Outcome::Offline,
            LookupAnswer::Unknown => Outcome::Unknown,
        };
        self.finish_lookup(id, outcome, ctx);
    }

    /// Lookups of a client that lost its supernode or stopped will never
    /// be answered.
    pub(crate) fn fail_lookups_from(&mut self, c: u32) {
        let ids: Vec<u64> = self.pending.iter().filter(|(_, p)| p.from == c).map(|(id, _)| *id).collect();
        for id in ids {
            self.finish_lookup(id, Outcome::Dropped, None);
        }
    }

    fn finish_lookup(&mut self, id: u64, outcome: Outcome, ctx: Option<Ctx>) {
        let ok = outcome == Outcome::Online;
        let Some(p) = self.pending.remove(&id) else {
            return;
        };
        if !p.measured {
            return;
        }
        // A callee that went away meanwhile cannot be found, and a caller
        // cut off from its supernode asks again once back: neither is a
        // failure of the directory (the sign-in figures show them).
        if outcome == Outcome::Dropped {
            self.metrics.lookups_cut_off += 1;
            return;
        }
        if !ok && !self.callable.contains(p.target) {
            self.metrics.lookups_callee_left += 1;
            return;
        }
        self.metrics.lookups.push(LookupRecord {
            outcome,
            ms: self.now - p.issued,
            hops: ctx.map_or(p.max_hops, |c| c.hops),
            overlay_msgs: p.overlay_msgs,
            overlay: p.overlay_sent.zip(p.overlay_answered).map(|((sent, rtt), ans)| (ans.saturating_sub(sent), rtt)),
        });
    }

    /// Of the names accepted at least once: how many no live supernode
    /// holds for their owner, how many a live supernode holds under another
    /// key, and how many there are.
    fn names_check(&self) -> NamesCheck {
        let mut out = NamesCheck::default();
        for (c, n) in self.name_copies().iter().enumerate() {
            if self.clients[c].claimed {
                out.claimed += 1;
                out.missing += u64::from(n.owner == 0);
                out.changed_owner += u64::from(n.other > 0);
                out.lost += u64::from(n.owner == 0 || n.other > 0);
            }
        }
        out
    }

    /// Per user (by index): the copies of its name's claim the live honest
    /// supernodes hold under its key and under another. What a Byzantine
    /// supernode holds proves nothing either way.
    pub(crate) fn name_copies(&self) -> Vec<NameCopies> {
        let mut copies = vec![NameCopies::default(); self.clients.len()];
        for (i, slot) in self.sns.iter().enumerate() {
            let Some(sn) = slot.sn.as_ref().filter(|_| !self.is_byzantine(i as u32)) else {
                continue;
            };
            for claim in sn.claims() {
                let Some(c) = claim.name.strip_prefix('u').and_then(|n| n.parse::<usize>().ok()) else {
                    continue;
                };
                if let Some(n) = copies.get_mut(c) {
                    if claim.user_id == self.clients[c].user {
                        n.owner += 1;
                    } else {
                        n.other += 1;
                    }
                }
            }
        }
        copies
    }
}
