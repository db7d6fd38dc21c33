//! Port prediction (docs/PROTOCOL.md §4.6): a direct UDP path between a NAT
//! that maps every destination to a fresh port (the "hard" side: symmetric,
//! cloud and corporate NATs) and one that keeps one mapping for every
//! destination but filters what comes in (the "easy" side: a home router).
//!
//! Plain checks cannot meet there. The easy NAT admits only sources it has
//! sent to, and the hard side's port towards the easy side is a new one, not
//! the one the supernodes saw, so the easy side does not know where to send.
//!
//! The birthday paradox gets round it. The hard side opens [`SPARE_SOCKETS`]
//! extra sockets and sends a check from each to the easy side's mapped
//! address: the easy NAT drops them, but the hard NAT now holds that many
//! mappings towards the easy side, each on a port nobody knows. The easy side
//! then sprays up to [`SPRAY_BUDGET`] checks from its media socket at the hard
//! side's public IP, one guessed port each. A guess that lands on one of the
//! mappings reaches that spare socket, whose answer now passes the easy NAT
//! (it has seen our packet to that port): the pair works and, being direct,
//! takes over from a relay. With n mappings among N ports and k guesses,
//! P(miss) ≈ (1 − n/N)^k: 256 mappings and 2048 guesses over the 64 512
//! ports Linux allocates from give about 3·10⁻⁴.
//!
//! Sequential NATs: when the two supernodes saw the hard side's ports a small
//! step apart, the next mappings are likely further along that step, so
//! those ports are guessed first (Tox does the same in `hole_punching.rs`).
//!
//! Every probe is an ordinary connectivity check sealed with the call's key:
//! a guess that lands on someone else's mapping delivers bytes nobody can
//! open, and only the peer can answer one.

use super::{MediaPath, Via, KIND_CHECK};
use rand::Rng;
use std::net::{IpAddr, SocketAddr};
use supervox_proto::{NatBehaviour, NatReport};

/// Spare sockets the hard side opens: each holds one unknown mapping.
pub const SPARE_SOCKETS: u16 = 256;
/// Guesses the easy side sprays at most (each one check datagram).
pub const SPRAY_BUDGET: usize = 2048;
/// Spray rate, guesses per second: the whole budget in about 1.4 s, ~0.8
/// Mbit/s of 70-byte datagrams, short enough to upgrade early in a call.
pub const SPRAY_PER_S: u64 = 1_500;
/// Guesses sent in one go at most, so a late timer does not become a flood.
const SPRAY_BURST: usize = 64;
/// The spare sockets repeat their checks this often: a guess whose own
/// datagram was lost after opening the easy NAT still gets its pair.
pub const SPARE_RESEND_MS: u64 = 1_000;
/// Spare sockets that carried no direct pair by this long after they opened
/// are closed: the easy side's spray is over by then.
pub const PREDICTION_WINDOW_MS: u64 = 6_000;
/// The largest step between the two observed ports taken as a sequential NAT.
pub const MAX_STEP: u16 = 64;
/// Sequential guesses along the step: ahead of the second observed port
/// (where new mappings go, past the spares' and other traffic's) and a few
/// behind (the answers' order, reused ports).
const STEPS_AHEAD: i32 = 384;
const STEPS_BACK: i32 = 16;
/// NATs (Linux masquerade among them) allocate from 1024 up.
const PORT_MIN: u16 = 1024;

/// This side's part in port prediction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Our NAT maps per destination and the peer's does not: open spare
    /// sockets and send checks from each to the peer's mapped address.
    Hard,
    /// Our NAT maps one address for every destination but filters, and the
    /// peer's maps per destination: spray guesses at the peer's public IP.
    Easy,
}

fn dependent(b: NatBehaviour) -> bool {
    matches!(b, NatBehaviour::AddressDependent | NatBehaviour::AddressAndPortDependent)
}

/// Our role given both NAT reports, if prediction applies. Two endpoint-
/// dependent NATs are left to the relay (the two random sets rarely meet);
/// an easy side that filters nothing needs no prediction (the hard side's
/// ordinary checks get in and are answered).
pub fn role(mine: &NatReport, peer: &NatReport) -> Option<Role> {
    let independent = |r: &NatReport| r.mapping == NatBehaviour::EndpointIndependent;
    let filters = |r: &NatReport| r.filtering != NatBehaviour::EndpointIndependent;
    if peer.mapped.is_empty() || mine.mapped.is_empty() {
        return None;
    }
    if dependent(mine.mapping) && independent(peer) && filters(peer) {
        Some(Role::Hard)
    } else if independent(mine) && filters(mine) && dependent(peer.mapping) {
        Some(Role::Easy)
    } else {
        None
    }
}

/// A set of ports (8 KiB bitmap).
struct PortSet(Vec<u64>);

impl PortSet {
    fn new() -> Self {
        PortSet(vec![0; 1024])
    }

    /// True if `p` was not in the set.
    fn insert(&mut self, p: u16) -> bool {
        let (w, b) = (usize::from(p / 64), p % 64);
        let fresh = self.0[w] & (1 << b) == 0;
        self.0[w] |= 1 << b;
        fresh
    }
}

/// The ports of the hard side's public IP to guess, best first, at most
/// `budget` (capped at 16 384) and never one twice. `mapped` are the hard
/// side's addresses as its supernodes saw them (first two used): ports a
/// step apart give sequential guesses first; the rest are uniform random
/// ports from 1024 up. The supernodes' own mappings are left out: they
/// filter for the supernodes, not for us.
pub fn spray_plan<R: Rng>(mapped: &[SocketAddr], budget: usize, rng: &mut R) -> Vec<u16> {
    let budget = budget.min(16_384);
    let mut plan = Vec::with_capacity(budget);
    let mut seen = PortSet::new();
    for m in mapped.iter().take(2) {
        seen.insert(m.port());
    }
    if let [a, b, ..] = mapped {
        let step = i32::from(b.port()) - i32::from(a.port());
        if a.ip() == b.ip() && step != 0 && step.unsigned_abs() <= u32::from(MAX_STEP) {
            for k in (1..=STEPS_AHEAD).chain((1..=STEPS_BACK).map(|k| -k)) {
                let p = i32::from(b.port()) + k * step;
                if let Ok(p) = u16::try_from(p) {
                    if p >= PORT_MIN && plan.len() < budget && seen.insert(p) {
                        plan.push(p);
                    }
                }
            }
        }
    }
    // At most a quarter of the range is taken, so this ends quickly.
    while plan.len() < budget {
        let p = rng.gen_range(PORT_MIN..=u16::MAX);
        if seen.insert(p) {
            plan.push(p);
        }
    }
    plan
}

/// The easy side's spray in progress.
#[derive(Debug)]
struct Spray {
    ip: IpAddr,
    plan: Vec<u16>,
    next: usize,
    started_ms: u64,
}

impl Spray {
    /// Guesses sent by `now_ms` at [`SPRAY_PER_S`] (the first at once).
    fn allowed(&self, now_ms: u64) -> usize {
        let n = now_ms.saturating_sub(self.started_ms).saturating_mul(SPRAY_PER_S) / 1000 + 1;
        usize::try_from(n).unwrap_or(usize::MAX).min(self.plan.len())
    }

    fn next_due_ms(&self) -> u64 {
        self.started_ms + (self.next as u64 * 1000).div_ceil(SPRAY_PER_S)
    }
}

/// The hard side's spare sockets.
#[derive(Debug)]
struct Spares {
    count: u16,
    /// The easy side's mapped address.
    target: SocketAddr,
    next_round_ms: u64,
    until_ms: u64,
    /// Once released: the spares still open (the peer has reached them).
    released: Option<Vec<u16>>,
}

/// Port prediction state of one media path.
#[derive(Debug, Default)]
pub(super) struct Predictor {
    spray: Option<Spray>,
    spares: Option<Spares>,
    /// A release for the driver, not yet taken.
    release: Option<Vec<u16>>,
    /// When prediction started (for the log).
    started_ms: u64,
}

impl MediaPath {
    /// Hard side: `count` spare sockets are open (`Via::Spare(0..count)`).
    /// Each sends a check to the easy side's mapped address `target` now and
    /// every [`SPARE_RESEND_MS`] until a direct pair carries the call or
    /// [`PREDICTION_WINDOW_MS`] passes; then [`MediaPath::take_spare_release`]
    /// says which to close.
    pub fn start_spares(&mut self, count: u16, target: SocketAddr, now_ms: u64) {
        if self.predict.spares.is_some() || self.no_udp || self.force_relay {
            return;
        }
        self.predict.started_ms = now_ms;
        self.predict.spares = Some(Spares {
            count,
            target,
            next_round_ms: now_ms,
            until_ms: now_ms + PREDICTION_WINDOW_MS,
            released: None,
        });
        if count == 0 {
            self.release_spares(Vec::new());
        }
        self.tick_prediction(now_ms);
    }

    /// Easy side: spray checks from the media socket at `ip`, one per port of
    /// `plan` (see [`spray_plan`]), at [`SPRAY_PER_S`], until a direct pair
    /// answers or the plan is used up.
    pub fn start_spray(&mut self, ip: IpAddr, plan: Vec<u16>, now_ms: u64) {
        if self.predict.spray.is_some() || self.no_udp || self.force_relay || self.direct_in_use() {
            return;
        }
        self.predict.started_ms = now_ms;
        self.predict.spray = Some(Spray { ip, plan, next: 0, started_ms: now_ms });
        self.tick_prediction(now_ms);
    }

    /// Spare sockets the driver should close now, once: `Some(keep)`, all
    /// but the spares in `keep` (the one that carries the call, and any other
    /// the peer has reached; empty when no spare carries the call).
    pub fn take_spare_release(&mut self) -> Option<Vec<u16>> {
        self.predict.release.take()
    }

    /// True while the easy side's spray is running.
    pub fn is_spraying(&self) -> bool {
        self.predict.spray.is_some()
    }

    /// Whether spare socket `i` is open (started and not released).
    pub(super) fn spare_open(&self, i: u16) -> bool {
        self.predict.spares.as_ref().is_some_and(|s| {
            i < s.count
                && match &s.released {
                    None => true,
                    Some(keep) => keep.contains(&i),
                }
        })
    }

    fn direct_in_use(&self) -> bool {
        self.selected.is_some_and(|i| self.rank(i) == 0)
    }

    fn release_spares(&mut self, keep: Vec<u16>) {
        if let Some(s) = self.predict.spares.as_mut().filter(|s| s.released.is_none()) {
            s.released = Some(keep.clone());
            self.predict.release = Some(keep);
        }
    }

    /// A direct pair carries the call: the spray stops, and the spares close
    /// but those the peer has reached. Guesses in flight can land on two
    /// spares at once, and the peer may pick the other one: closing it would
    /// cut the peer's path until its failover. A spare the peer reaches after
    /// this is closed already and stays silent, so the peer never learns it.
    pub(super) fn settle_prediction(&mut self, now_ms: u64) {
        let Some(i) = self.selected.filter(|_| self.direct_in_use()) else {
            return;
        };
        if let Some(s) = self.predict.spray.take() {
            tracing::info!(
                "port prediction: direct pair {} after {} guesses in {} ms",
                self.pairs[i].remote,
                s.next,
                now_ms.saturating_sub(s.started_ms)
            );
        }
        if self.predict.spares.as_ref().is_some_and(|s| s.released.is_none()) {
            let mut keep: Vec<u16> = self
                .pairs
                .iter()
                .filter_map(|p| match p.via {
                    Via::Spare(k) => Some(k),
                    _ => None,
                })
                .collect();
            keep.sort_unstable();
            keep.dedup();
            tracing::info!(
                "port prediction: direct pair {} via {:?} after {} ms; spares kept: {keep:?}",
                self.pairs[i].remote,
                self.pairs[i].via,
                now_ms.saturating_sub(self.predict.started_ms)
            );
            self.release_spares(keep);
        }
    }

    /// A check that is not tied to a pair (its answer makes one).
    fn send_probe(&mut self, via: Via, to: SocketAddr) {
        self.check_nonce += 1;
        let nonce = self.check_nonce.to_be_bytes();
        self.seal_to(via, to, KIND_CHECK, &nonce);
    }

    /// Send the guesses and spare checks that are due.
    pub(super) fn tick_prediction(&mut self, now_ms: u64) {
        self.settle_prediction(now_ms);
        if let Some(mut s) = self.predict.spray.take() {
            let upto = s.allowed(now_ms).min(s.next + SPRAY_BURST);
            while s.next < upto {
                let to = SocketAddr::new(s.ip, s.plan[s.next]);
                s.next += 1;
                self.send_probe(Via::Direct, to);
            }
            if s.next < s.plan.len() {
                self.predict.spray = Some(s);
            } else {
                tracing::info!("port prediction: {} guesses at {} sent, no answer yet", s.next, s.ip);
            }
        }
        let round = match self.predict.spares.as_mut() {
            Some(s) if s.released.is_none() && now_ms >= s.until_ms => {
                tracing::info!("port prediction: no direct pair on {} spare sockets; closing them", s.count);
                self.release_spares(Vec::new());
                None
            }
            Some(s) if s.released.is_none() && now_ms >= s.next_round_ms => {
                s.next_round_ms = now_ms + SPARE_RESEND_MS;
                Some((s.count, s.target))
            }
            _ => None,
        };
        if let Some((count, target)) = round {
            for i in 0..count {
                self.send_probe(Via::Spare(i), target);
            }
        }
    }

    /// When prediction wants [`MediaPath::handle_timeout`] next, if at all.
    pub(super) fn prediction_timeout(&self) -> Option<u64> {
        let spray = self.predict.spray.as_ref().map(Spray::next_due_ms);
        let spares =
            self.predict.spares.as_ref().filter(|s| s.released.is_none()).map(|s| s.next_round_ms.min(s.until_ms));
        spray.into_iter().chain(spares).min()
    }
}

#[cfg(test)]
mod tests;
