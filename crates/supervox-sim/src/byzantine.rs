//! Byzantine supernodes (`--byzantine SHARE`): a share of the first
//! supernodes runs the core's Byzantine test tool
//! ([`supervox_core::supernode::byzantine`]) with every attack on — forged
//! lookup answers, lying and stolen claims, censored requests, false
//! accusations, hijack claims of the names they hold — colluding, with one
//! accomplice key, so that their forgeries agree. Measured: what honest
//! clients get (lookups from clients of honest supernodes; a client of a
//! Byzantine supernode is at its mercy, and cross-checks through a second
//! supernode are the client's defence, not modelled here), the names held
//! by honest supernodes under another key, and how long honest supernodes
//! miss honest members in their views.

use crate::engine::Sim;
use crate::metrics::round;
use crate::net::{self, IndexSet};
use rand::Rng;
use serde::Serialize;
use std::collections::HashMap;
use supervox_core::supernode::byzantine::{Attacks, Byzantine, ByzantineCounts};
use supervox_core::Identity;

/// Seed-derivation domain of the accomplices' keys.
const KIND_ACCOMPLICE: u64 = 9;
/// Views are sampled this often (a SWIM probe period).
pub(crate) const SAMPLE_MS: u64 = 1_000;
/// Honest observers whose views one sample checks.
const OBSERVERS_PER_SAMPLE: usize = 32;
/// A member counts from this long after its start (its join has spread).
const SETTLED_MS: u64 = 30_000;

/// The Byzantine part of a run.
#[derive(Debug, Default)]
pub(crate) struct ByzSim {
    /// Supernode slots that are Byzantine.
    pub slots: IndexSet,
    /// (observer, member) pairs missing in the last sample, and for how
    /// many samples in a row.
    missing: HashMap<(u32, u32), u32>,
    pairs_checked: u64,
    pairs_missing: u64,
    /// Pairs that stayed missing longer than one sample (a probe period).
    evicted_over_probe: u64,
    longest_missing: u32,
    /// Lookups not measured: their client's supernode is Byzantine.
    pub lookups_via_byzantine: u64,
}

/// What the Byzantine supernodes did and what it cost the honest ones.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ByzantineSummary {
    /// Byzantine supernodes.
    pub members: usize,
    /// Their share of the supernodes at the start.
    pub share: f64,
    /// Lookups they answered with a forgery.
    pub forged_lookups: u64,
    /// Claims they answered with a lie.
    pub lied_claims: u64,
    /// Requests they dropped.
    pub censored: u64,
    /// False accusations they gossiped.
    pub accusations: u64,
    /// Hijack claims they sent.
    pub hijack_claims: u64,
    /// Measured lookups answered with another key than the owner's: forged
    /// answers accepted.
    pub forged_accepted: u64,
    /// Lookups not measured because the client's own supernode is Byzantine.
    pub lookups_via_byzantine: u64,
    /// Accepted names the honest supernodes hold under another key at
    /// least as often as under their owner's (taken over).
    pub names_hijacked: u64,
    /// Accepted names at least one honest supernode holds under another
    /// key (a holder that had missed the name took a hijack claim).
    pub names_with_stray_claims: u64,
    /// (honest observer, honest member) pairs checked, one per sample.
    pub view_pairs_checked: u64,
    /// Share of them in which the observer did not hold the member live.
    pub view_missing_share: f64,
    /// Pairs missing for longer than a probe period (evictions).
    pub evicted_over_probe_period: u64,
    /// Longest an honest member stayed missing from an honest view, s.
    pub longest_missing_s: f64,
}

impl Sim {
    /// Choose the Byzantine slots among the first supernodes.
    pub(crate) fn byzantine_setup(&mut self) {
        let n = (self.cfg.byzantine * self.cfg.supernodes as f64).round() as usize;
        let mut all: Vec<u32> = (0..self.cfg.supernodes as u32).collect();
        for j in 0..n.min(all.len()) {
            let r = self.rng.gen_range(j..all.len());
            all.swap(j, r);
            self.byz.slots.insert(all[j]);
        }
    }

    /// Supernode `i` has just started: make it Byzantine if its slot is.
    pub(crate) fn byzantine_start(&mut self, i: u32) {
        if !self.byz.slots.contains(i) {
            return;
        }
        // They collude: one accomplice, so their forgeries agree.
        let accomplice = Identity::from_seed(net::seed32(self.cfg.seed, KIND_ACCOMPLICE, 0));
        if let Some(sn) = self.sns[i as usize].sn.as_mut() {
            sn.turn_byzantine(Byzantine::new(Attacks::ALL, accomplice));
        }
    }

    /// Whether supernode slot `i` is Byzantine.
    pub(crate) fn is_byzantine(&self, i: u32) -> bool {
        self.byz.slots.contains(i)
    }

    /// Check what some honest supernodes think of the honest members.
    pub(crate) fn byzantine_sample(&mut self) {
        let now = self.now;
        let honest: Vec<u32> = self
            .live_sns
            .as_slice()
            .iter()
            .copied()
            .filter(|i| !self.byz.slots.contains(*i) && now >= self.sns[*i as usize].started_ms + SETTLED_MS)
            .collect();
        if honest.len() < 2 {
            return;
        }
        let mut seen = HashMap::new();
        for _ in 0..OBSERVERS_PER_SAMPLE.min(honest.len()) {
            let o = honest[self.rng.gen_range(0..honest.len())];
            let Some(view) = self.sns[o as usize].sn.as_ref() else { continue };
            for &m in &honest {
                if m == o {
                    continue;
                }
                let Some(member) = self.sns[m as usize].sn.as_ref().map(|s| s.member().id) else { continue };
                self.byz.pairs_checked += 1;
                if !view.knows_live(&member) {
                    self.byz.pairs_missing += 1;
                    let run = self.byz.missing.get(&(o, m)).copied().unwrap_or(0) + 1;
                    if run == 2 {
                        self.byz.evicted_over_probe += 1;
                    }
                    self.byz.longest_missing = self.byz.longest_missing.max(run);
                    seen.insert((o, m), run);
                }
            }
        }
        // Observers are drawn afresh each time: a pair keeps its run only
        // while it is seen missing again (one seen present ends it).
        self.byz.missing.retain(|k, _| seen.contains_key(k));
        self.byz.missing.extend(seen);
    }

    /// The summary, and rows for the details table.
    pub(crate) fn byzantine_summary(
        &self,
        rows: &mut Vec<(String, String)>,
        forged_accepted: u64,
    ) -> Option<ByzantineSummary> {
        if self.byz.slots.is_empty() {
            return None;
        }
        let mut told = ByzantineCounts::default();
        for i in self.byz.slots.as_slice() {
            if let Some(c) = self.sns[*i as usize].sn.as_ref().and_then(|s| s.byzantine_counts()) {
                told.forged_lookups += c.forged_lookups;
                told.lied_claims += c.lied_claims;
                told.censored += c.censored;
                told.accusations += c.accusations;
                told.hijack_claims += c.hijack_claims;
            }
        }
        let b = &self.byz;
        let (names_hijacked, names_with_stray_claims) = self.names_held_by_others_at_honest();
        let s = ByzantineSummary {
            members: b.slots.len(),
            share: round(b.slots.len() as f64 / self.cfg.supernodes as f64, 4),
            forged_lookups: told.forged_lookups,
            lied_claims: told.lied_claims,
            censored: told.censored,
            accusations: told.accusations,
            hijack_claims: told.hijack_claims,
            forged_accepted,
            lookups_via_byzantine: b.lookups_via_byzantine,
            names_hijacked,
            names_with_stray_claims,
            view_pairs_checked: b.pairs_checked,
            view_missing_share: round(b.pairs_missing as f64 / b.pairs_checked.max(1) as f64, 6),
            evicted_over_probe_period: b.evicted_over_probe,
            longest_missing_s: round(f64::from(b.longest_missing) * SAMPLE_MS as f64 / 1000.0, 1),
        };
        rows.push((
            "byzantine: supernodes / lies (lookups, claims, censored, accusations, hijacks)".into(),
            format!(
                "{} / {}, {}, {}, {}, {}",
                s.members, s.forged_lookups, s.lied_claims, s.censored, s.accusations, s.hijack_claims
            ),
        ));
        rows.push((
            "byzantine: forged accepted / names hijacked (stray copies) / lookups via a byzantine SN".into(),
            format!(
                "{} / {} ({}) / {}",
                s.forged_accepted, s.names_hijacked, s.names_with_stray_claims, s.lookups_via_byzantine
            ),
        ));
        rows.push((
            "byzantine: honest views missing honest members (share, evicted > 1 s, longest)".into(),
            format!(
                "{} of {}, {}, {} s",
                s.view_missing_share, s.view_pairs_checked, s.evicted_over_probe_period, s.longest_missing_s
            ),
        ));
        Some(s)
    }

    /// Of the accepted names: how many honest supernodes hold under
    /// another key at least as often as under their owner's (taken over),
    /// and how many at least one honest supernode holds under another key
    /// (a stray copy: a holder that had missed the name took a hijack claim;
    /// lookups need a majority of the holders, so a stray decides nothing).
    fn names_held_by_others_at_honest(&self) -> (u64, u64) {
        let copies = self.name_copies();
        let claimed = copies.iter().enumerate().filter(|(c, _)| self.clients[*c].claimed).map(|(_, n)| n);
        let (mut taken, mut stray) = (0, 0);
        for n in claimed {
            taken += u64::from(n.other > 0 && n.other >= n.owner);
            stray += u64::from(n.other > 0);
        }
        (taken, stray)
    }
}
