//! Step-back: a promoted supernode (`--supernode auto`) returns to the client
//! role when the network does not need it, or when the other supernodes stop
//! reaching it.
//!
//! - **Not needed**: its own load and the members' mean load both stay below
//!   [`StepBackConfig::low_water_pct`] (20 %) for [`StepBackConfig::after_ms`]
//!   (`--step-back-after`, 600 s), and at least [`StepBackConfig::min_others`]
//!   (2) other supernodes are alive to take its clients. Promotion happens
//!   at 80 % ([`super::PROMOTE_AT_LOAD_PCT`]): the gap keeps a node from
//!   flapping between the roles.
//! - **Unreachable**: while it knows members, no member's probe (`Ping` or
//!   `PingReq`, sealed with the network key: the SWIM probes are the other
//!   supernodes dialling back to it over UDP) arrived for
//!   [`StepBackConfig::unreachable_ms`] (15 s; each member probes every
//!   other one per sweep, so a reachable supernode hears one about every
//!   second), or it had to refute suspicion of itself
//!   [`MAX_REFUTATIONS`] times within [`REFUTATION_WINDOW_MS`].
//!
//! Stepping back: every client gets a `Redirect` to the least loaded members
//! and its link is closed, the supernode gossips itself `Dead` (a graceful
//! leave: the others hand its records off at once), and
//! [`SnOutput::SteppedBack`] tells the driver to stop it.

use super::{SnOutput, Supernode};
use crate::ConnId;
use supervox_proto::overlay::MemberState;
use supervox_proto::Message;
use tracing::info;

/// Refutations of our own suspicion that mean others cannot reach us…
pub const MAX_REFUTATIONS: usize = 3;
/// …within this window.
pub const REFUTATION_WINDOW_MS: u64 = 60_000;
/// Members told directly of our leave (the rest hear it by gossip).
const LEAVE_FANOUT: usize = 8;

/// When a promoted supernode steps back (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepBackConfig {
    /// Low load this long before stepping back, ms.
    pub after_ms: u64,
    /// Low water: our load and the members' mean load below this, percent.
    pub low_water_pct: u8,
    /// Other live supernodes needed before stepping back for low load.
    pub min_others: usize,
    /// No probe from any member for this long: unreachable, ms.
    pub unreachable_ms: u64,
}

impl Default for StepBackConfig {
    fn default() -> Self {
        Self { after_ms: crate::defaults::STEP_BACK_AFTER_MS, low_water_pct: 20, min_others: 2, unreachable_ms: 15_000 }
    }
}

/// Step-back bookkeeping of a supernode.
#[derive(Debug, Default)]
pub(super) struct StepBackState {
    /// Load low (and enough others) continuously since.
    low_since_ms: Option<u64>,
    /// Last probe from a member, or when we first knew members.
    last_probe_ms: Option<u64>,
    /// When we refuted suspicion of ourselves, recent first out.
    refutations: Vec<u64>,
    /// Stepped back: serve nothing more.
    pub(super) done: bool,
}

impl Supernode {
    /// Whether this supernode has stepped back (its driver should stop it).
    pub fn stepped_back(&self) -> bool {
        self.step.done
    }

    /// A member probed us (the overlay reaches us).
    pub(super) fn probed(&mut self, now_ms: u64) {
        self.step.last_probe_ms = Some(now_ms);
    }

    /// We refuted suspicion of ourselves (others failed to reach us).
    pub(super) fn refuted(&mut self, now_ms: u64) {
        let r = &mut self.step.refutations;
        r.retain(|t| now_ms < t + REFUTATION_WINDOW_MS);
        if r.len() < MAX_REFUTATIONS {
            r.push(now_ms);
        }
    }

    /// Why this supernode should step back now, if it should: the decision
    /// of the module docs, evaluated each tick.
    pub(super) fn step_back_reason(&mut self, now_ms: u64) -> Option<String> {
        let cfg = self.cfg.step_back?;
        if self.step.done {
            return None;
        }
        let mut others = 0u64;
        let mut sum = 0u64;
        for m in self.membership.live() {
            others += 1;
            sum += u64::from(m.load);
        }
        // Reachability: counted only while we know members.
        if others == 0 {
            self.step.last_probe_ms = None;
        } else {
            let since = *self.step.last_probe_ms.get_or_insert(now_ms);
            if now_ms >= since + cfg.unreachable_ms {
                return Some(format!("unreachable: no member probed us for {} s", (now_ms - since) / 1000));
            }
        }
        self.step.refutations.retain(|t| now_ms < t + REFUTATION_WINDOW_MS);
        if self.step.refutations.len() >= MAX_REFUTATIONS {
            return Some(format!(
                "unreachable: suspected by the others {MAX_REFUTATIONS} times in {} s",
                REFUTATION_WINDOW_MS / 1000
            ));
        }
        let alive = self.membership.live().filter(|m| m.state == MemberState::Alive).count();
        let mean = sum.checked_div(others).unwrap_or(0);
        let low = u64::from(self.load()) < u64::from(cfg.low_water_pct)
            && mean < u64::from(cfg.low_water_pct)
            && alive >= cfg.min_others;
        if !low {
            self.step.low_since_ms = None;
            return None;
        }
        let since = *self.step.low_since_ms.get_or_insert(now_ms);
        (now_ms >= since + cfg.after_ms).then(|| {
            format!(
                "not needed: load {}% and members' mean {mean}% below {}% for {} s, {alive} others alive",
                self.load(),
                cfg.low_water_pct,
                (now_ms - since) / 1000
            )
        })
    }

    /// Step back now: redirect every client, leave the overlay, tell the driver.
    pub fn step_back(&mut self, reason: &str, now_ms: u64) {
        self.clock(now_ms);
        if self.step.done {
            return;
        }
        self.step.done = true;
        info!("stepping back to the client role: {reason}");
        let (supernodes, loads) = self.suggest_supernodes(20, false);
        let mut conns: Vec<(ConnId, bool)> = self.conns.iter().map(|(c, s)| (*c, s.user().is_some())).collect();
        conns.sort_unstable();
        for (conn, client) in conns {
            if client {
                let reason = "supernode stepping back".to_string();
                self.send(conn, Message::Redirect { supernodes: supernodes.clone(), reason, loads: loads.clone() });
            }
            self.close(conn, "stepping back");
        }
        self.membership.leave(&mut self.rng, LEAVE_FANOUT);
        self.flush_membership(now_ms);
        self.out.push_back(SnOutput::SteppedBack { reason: reason.to_string() });
    }
}
