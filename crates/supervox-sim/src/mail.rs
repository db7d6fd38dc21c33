//! Offline mail and peer messages (`--mail`): the simulator plays the
//! senders' and recipients' drivers on top of a scenario and checks what the
//! core does with their items.
//!
//! - **Mail.** A Poisson process picks a signed-in sender and a user whose
//!   process is stopped, and the sender's `Client::leave_mail` leaves a
//!   random body for it. The sender keeps the item (as the node's database
//!   would): it puts it again, under the same id, when the put failed or went
//!   unanswered (at its next sign-in, or 5 s after a refusal), and — with
//!   `reput_ms` — every `reput_ms` until the recipient has it (the delivered
//!   receipt is not simulated: the simulator knows when the recipient got
//!   it). The recipient's driver stores every `ClientEvent::Mail` at once and
//!   acknowledges with `Client::mail_saved`.
//! - **Peer messages.** Another Poisson process picks two signed-in clients;
//!   the first does `lookup_peer` and, on `PeerFound` with a supernode,
//!   `send_peer`: the path a presence change takes to an online contact. The
//!   latency runs from the lookup to the recipient's `ClientEvent::Peer`.

use crate::config::{MailConfig, EPOCH_MS};
use crate::engine::{Ev, Sim};
use crate::net::IndexSet;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use supervox_core::client::{PeerAt, PeerLookupError};
use supervox_proto::mail::{MailId, MailItem};
use supervox_proto::CallId;

/// An item counts as delivered on time within this long of the recipient's
/// sign-in (the bound).
pub const ON_TIME_MS: u64 = 60_000;
/// A refused put is tried again after this long.
const RETRY_AFTER_REFUSAL_MS: u64 = 5_000;
/// No mail or peer message is started this close to the end.
const TAIL_MS: u64 = 5_000;
/// Body sizes of mail items (sealed text), bytes.
const MAIL_BODY: std::ops::RangeInclusive<usize> = 64..=1024;
/// Body sizes of peer messages (a sealed presence change), bytes.
const PEER_BODY: std::ops::RangeInclusive<usize> = 120..=240;

/// One item left for a signed-out user.
#[derive(Debug)]
struct Item {
    from: u32,
    to: u32,
    /// The body is regenerated from this seed and length for a put again.
    body_seed: u64,
    body_len: usize,
    stored_at: Option<u64>,
    /// The last time a put of it was answered `stored`.
    last_stored_at: Option<u64>,
    /// The recipient's first sign-in after the item was left.
    signin_at: Option<u64>,
    delivered_at: Option<u64>,
    puts: u32,
}

/// A peer message from the lookup on.
#[derive(Debug, Clone, Copy)]
struct PeerPending {
    target: u32,
    started: u64,
}

/// How a peer message ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum PeerFail {
    /// The lookup said the (signed-in) recipient is offline.
    FoundOffline,
    /// The lookup found nobody or an answer that did not verify.
    LookupFailed,
    /// The supernodes could not deliver it.
    Undeliverable,
    /// No answer by the end of the run.
    NoAnswer,
}

/// The mail and peer-message state of a run.
#[derive(Debug)]
pub(crate) struct MailSim {
    pub cfg: MailConfig,
    items: BTreeMap<MailId, Item>,
    /// Per recipient: items left that wait for its next sign-in.
    waiting: BTreeMap<u32, Vec<MailId>>,
    /// Per sender: items not (yet) stored.
    unstored: BTreeMap<u32, BTreeSet<MailId>>,
    /// Clients whose process is stopped and whose name was accepted once.
    pub offline: IndexSet,
    /// Clients of the away wave.
    away: IndexSet,
    /// ... of which are signed out now (the recovery figure leaves them out).
    pub away_out: usize,
    /// Peer lookups in flight, by sender and request id.
    lookups: BTreeMap<(u32, u64), PeerPending>,
    /// Peer messages in flight, by wire id.
    sent: BTreeMap<[u8; 16], PeerPending>,
    pub no_recipient: u64,
    pub refusals: u64,
    /// Refusals by reason (digits masked), for the table.
    refusal_reasons: BTreeMap<String, u64>,
    pub puts_again: u64,
    pub duplicates: u64,
    pub unknown_items: u64,
    pub peer_ms: Vec<u64>,
    pub peer_fail: BTreeMap<PeerFail, u64>,
    pub peer_callee_left: u64,
    pub peer_cut_off: u64,
}

/// What the mail part of a run measured (the `mail` object of `--json`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MailSummary {
    /// Items left for signed-out users.
    pub left: u64,
    /// ... of which the sender heard `stored` (a majority of holders).
    pub stored: u64,
    /// Items whose recipient signed in at least 60 s before the end.
    pub judged: u64,
    /// Share of `judged` delivered within 60 s of that sign-in.
    pub delivered_60s_share: Option<f64>,
    /// Items delivered by the end (first copy).
    pub delivered: u64,
    /// Items stored once (the sender heard `stored`), not delivered by the
    /// end, that no live supernode holds: only the sender's copy is left.
    pub lost: u64,
    /// Items delivered again after their first delivery.
    pub duplicates: u64,
    /// Median and 99th percentile from the recipient's sign-in to the item, ms.
    pub delivery_p50_ms: Option<f64>,
    /// See `delivery_p50_ms`.
    pub delivery_p99_ms: Option<f64>,
    /// Measured peer messages between signed-in pairs that arrived.
    pub peer_success: Option<f64>,
    /// Median from `lookup_peer` to the recipient's `Peer` event, ms.
    pub peer_p50_ms: Option<f64>,
    /// 99th percentile of the same, ms.
    pub peer_p99_ms: Option<f64>,
    /// Overlay bytes of the mail messages (`MailPut` … `MailCopy`) per
    /// running supernode per second, from the warm-up to the end of the run.
    pub mail_overlay_bytes_per_sn_s: f64,
    /// The same for the peer messages' `Signal` / `SignalAck`.
    pub peer_overlay_bytes_per_sn_s: f64,
}

/// Overlay kinds that carry mail (tags 20-25 of `OverlayMsg`).
pub(crate) fn is_mail_kind(kind: &str) -> bool {
    matches!(kind, "MailPut" | "MailPutAns" | "MailFetch" | "MailItems" | "MailAck" | "MailCopy")
}

/// Overlay kinds that carry peer messages in the simulator (no calls run).
pub(crate) fn is_peer_kind(kind: &str) -> bool {
    matches!(kind, "Signal" | "SignalAck")
}

fn body(seed: u64, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    StdRng::seed_from_u64(seed).fill_bytes(&mut b);
    b
}

impl MailSim {
    pub fn new(cfg: MailConfig) -> Self {
        Self {
            cfg,
            items: BTreeMap::new(),
            waiting: BTreeMap::new(),
            unstored: BTreeMap::new(),
            offline: IndexSet::default(),
            away: IndexSet::default(),
            away_out: 0,
            lookups: BTreeMap::new(),
            sent: BTreeMap::new(),
            no_recipient: 0,
            refusals: 0,
            refusal_reasons: BTreeMap::new(),
            puts_again: 0,
            duplicates: 0,
            unknown_items: 0,
            peer_ms: Vec::new(),
            peer_fail: BTreeMap::new(),
            peer_callee_left: 0,
            peer_cut_off: 0,
        }
    }
}

/// An exponential gap for a Poisson process of `rate` per second, ms.
fn poisson_gap(rng: &mut StdRng, rate: f64) -> u64 {
    let u: f64 = rng.gen_range(f64::EPSILON..1.0);
    (-u.ln() * 1000.0 / rate).max(1.0) as u64
}

impl Sim {
    fn mail_tail(&self) -> bool {
        self.now + TAIL_MS > EPOCH_MS + self.cfg.duration_ms
    }

    /// Someone leaves mail for a signed-out user.
    pub(crate) fn mail_tick(&mut self) {
        let Some(rate) = self.mail.as_ref().map(|m| m.cfg.rate) else { return };
        let gap = poisson_gap(&mut self.rng, rate);
        self.after(gap, Ev::MailTick);
        if self.mail_tail() {
            return;
        }
        let (Some(from), Some(to)) =
            (self.callable.pick(&mut self.rng), self.mail.as_ref().and_then(|m| m.offline.pick(&mut self.rng)))
        else {
            if let Some(m) = self.mail.as_mut() {
                m.no_recipient += 1;
            }
            return;
        };
        let body_seed: u64 = self.rng.gen();
        let body_len = self.rng.gen_range(MAIL_BODY);
        let now = self.now;
        let to_user = self.clients[to as usize].user;
        let Some(id) = self.clients[from as usize]
            .client
            .as_mut()
            .and_then(|cl| cl.leave_mail(to_user, body(body_seed, body_len), now))
        else {
            return;
        };
        let Some(m) = self.mail.as_mut() else { return };
        let item = Item {
            from,
            to,
            body_seed,
            body_len,
            stored_at: None,
            last_stored_at: None,
            signin_at: None,
            delivered_at: None,
            puts: 1,
        };
        m.items.insert(id, item);
        m.waiting.entry(to).or_default().push(id);
        m.unstored.entry(from).or_default().insert(id);
        self.drain_client(from);
    }

    /// The sender puts `id` again if it is signed in (same id: holders
    /// deduplicate). Returns whether it did.
    fn put_again(&mut self, id: MailId) -> bool {
        let Some(it) = self.mail.as_ref().and_then(|m| m.items.get(&id)) else { return false };
        let (from, to, seed, len) = (it.from, it.to, it.body_seed, it.body_len);
        let now = self.now;
        let to_user = self.clients[to as usize].user;
        let done = self.clients[from as usize]
            .client
            .as_mut()
            .and_then(|cl| cl.leave_mail_as(id, to_user, body(seed, len), now));
        if done.is_none() {
            return false;
        }
        if let Some(m) = self.mail.as_mut() {
            m.puts_again += 1;
            if let Some(it) = m.items.get_mut(&id) {
                it.puts += 1;
            }
        }
        self.drain_client(from);
        true
    }

    /// A refused put's retry is due.
    pub(crate) fn mail_retry(&mut self, id: MailId) {
        let unstored = self.mail.as_ref().and_then(|m| m.items.get(&id)).is_some_and(|it| it.stored_at.is_none());
        if unstored {
            // Not signed in: its next sign-in puts it again.
            self.put_again(id);
        }
    }

    /// A stored item's periodic put is due (until the recipient has it).
    pub(crate) fn mail_reput(&mut self, id: MailId) {
        let Some(m) = self.mail.as_ref() else { return };
        let (Some(every), Some(it)) = (m.cfg.reput_ms, m.items.get(&id)) else { return };
        if it.delivered_at.is_some() {
            return;
        }
        self.put_again(id);
        self.after(every, Ev::MailReput(id));
    }

    /// Client `c` signed in: its waiting mail is due within 60 s, and its
    /// unstored items are put again.
    pub(crate) fn mail_signed_in(&mut self, c: u32) {
        let now = self.now;
        let Some(m) = self.mail.as_mut() else { return };
        for id in m.waiting.remove(&c).unwrap_or_default() {
            if let Some(it) = m.items.get_mut(&id) {
                it.signin_at.get_or_insert(now);
            }
        }
        let again: Vec<MailId> = m.unstored.get(&c).map(|s| s.iter().copied().collect()).unwrap_or_default();
        for id in again {
            self.put_again(id);
        }
    }

    /// The outcome of one of `c`'s puts.
    pub(crate) fn mail_stored(&mut self, c: u32, id: MailId, result: Result<(), String>) {
        let now = self.now;
        let Some(m) = self.mail.as_mut() else { return };
        let Some(it) = m.items.get_mut(&id) else { return };
        match result {
            Ok(()) => {
                it.last_stored_at = Some(now);
                if let Some(s) = m.unstored.get_mut(&c) {
                    s.remove(&id);
                }
                if it.stored_at.is_none() {
                    it.stored_at = Some(now);
                    if let Some(every) = m.cfg.reput_ms {
                        self.after(every, Ev::MailReput(id));
                    }
                }
            }
            Err(why) => {
                m.refusals += 1;
                let why: String = why.chars().map(|ch| if ch.is_ascii_digit() { '#' } else { ch }).collect();
                // Bounded: the reasons are the core's few fixed texts.
                if m.refusal_reasons.len() < 16 || m.refusal_reasons.contains_key(&why) {
                    *m.refusal_reasons.entry(why).or_default() += 1;
                }
                if it.stored_at.is_none() {
                    self.after(RETRY_AFTER_REFUSAL_MS, Ev::MailRetry(id));
                }
            }
        }
    }

    /// `c`'s driver stores what came from its mailbox, then acknowledges it.
    pub(crate) fn mail_received(&mut self, c: u32, items: Vec<MailItem>) {
        let now = self.now;
        let ids: Vec<MailId> = items.iter().map(|i| i.id).collect();
        if let Some(m) = self.mail.as_mut() {
            for id in &ids {
                match m.items.get_mut(id) {
                    Some(it) if it.to == c && it.delivered_at.is_none() => it.delivered_at = Some(now),
                    Some(it) if it.to == c => m.duplicates += 1,
                    _ => m.unknown_items += 1,
                }
            }
        }
        if let Some(cl) = self.clients[c as usize].client.as_mut() {
            cl.mail_saved(&ids, now);
        }
    }

    /// Two signed-in clients: the first writes to the second.
    pub(crate) fn peer_tick(&mut self) {
        let Some(rate) = self.mail.as_ref().map(|m| m.cfg.peer_rate) else { return };
        let gap = poisson_gap(&mut self.rng, rate);
        self.after(gap, Ev::PeerTick);
        if self.mail_tail() || self.callable.len() < 2 {
            return;
        }
        let Some(from) = self.callable.pick(&mut self.rng) else { return };
        let target = loop {
            let t = self.callable.pick(&mut self.rng).unwrap_or(from);
            if t != from {
                break t;
            }
        };
        let name = self.clients[target as usize].name.clone();
        let Some(req) = self.clients[from as usize].client.as_mut().and_then(|cl| cl.lookup_peer(&name)) else {
            return;
        };
        let now = self.now;
        if let Some(m) = self.mail.as_mut() {
            m.lookups.insert((from, req), PeerPending { target, started: now });
        }
        self.drain_client(from);
    }

    fn peer_failed(&mut self, p: PeerPending, why: PeerFail) {
        let left = !self.callable.contains(p.target);
        let Some(m) = self.mail.as_mut() else { return };
        if left {
            // Not a failure of the path: the recipient went away meanwhile.
            m.peer_callee_left += 1;
        } else {
            *m.peer_fail.entry(why).or_default() += 1;
        }
    }

    /// The answer to one of `c`'s peer lookups.
    pub(crate) fn peer_found(&mut self, c: u32, req_id: u64, result: Result<PeerAt, PeerLookupError>) {
        let Some(p) = self.mail.as_mut().and_then(|m| m.lookups.remove(&(c, req_id))) else { return };
        match result {
            Ok(PeerAt { user_id, supernode: Some(sn) }) => {
                let mut id = [0u8; 16];
                self.rng.fill_bytes(&mut id);
                let len = self.rng.gen_range(PEER_BODY);
                let seed = self.rng.gen();
                let sent = self.clients[c as usize]
                    .client
                    .as_mut()
                    .is_some_and(|cl| cl.send_peer(id, user_id, sn, body(seed, len)));
                match (sent, self.mail.as_mut()) {
                    (true, Some(m)) => {
                        m.sent.insert(id, p);
                    }
                    (false, Some(m)) => m.peer_cut_off += 1,
                    _ => {}
                }
            }
            Ok(PeerAt { supernode: None, .. }) => self.peer_failed(p, PeerFail::FoundOffline),
            Err(_) => self.peer_failed(p, PeerFail::LookupFailed),
        }
    }

    /// A peer message reached client `c`.
    pub(crate) fn peer_received(&mut self, c: u32, id: CallId) {
        let now = self.now;
        let Some(m) = self.mail.as_mut() else { return };
        if let Some(p) = m.sent.get(&id.0).copied().filter(|p| p.target == c) {
            m.sent.remove(&id.0);
            m.peer_ms.push(now - p.started);
        }
    }

    /// One of `c`'s peer messages could not be delivered.
    pub(crate) fn peer_undeliverable(&mut self, id: CallId) {
        if let Some(p) = self.mail.as_mut().and_then(|m| m.sent.remove(&id.0)) {
            self.peer_failed(p, PeerFail::Undeliverable);
        }
    }

    /// Client `c` lost its supernode or stopped: its peer lookups will not
    /// be answered (a driver would ask again once back).
    pub(crate) fn peer_cut_off(&mut self, c: u32) {
        let Some(m) = self.mail.as_mut() else { return };
        let gone: Vec<(u32, u64)> = m.lookups.range((c, 0)..=(c, u64::MAX)).map(|(k, _)| *k).collect();
        m.peer_cut_off += gone.len() as u64;
        for k in gone {
            m.lookups.remove(&k);
        }
    }

    /// Client `c`'s process stopped: mail may be left for it.
    pub(crate) fn mail_client_stopped(&mut self, c: u32) {
        let claimed = self.clients[c as usize].claimed;
        if let Some(m) = self.mail.as_mut() {
            if claimed {
                m.offline.insert(c);
            }
            if m.away.contains(c) {
                m.away_out += 1;
            }
        }
        self.peer_cut_off(c);
    }

    /// Client `c`'s process started.
    pub(crate) fn mail_client_started(&mut self, c: u32) {
        if let Some(m) = self.mail.as_mut() {
            m.offline.remove(c);
            if m.away.contains(c) && self.clients[c as usize].gen > 1 {
                m.away_out = m.away_out.saturating_sub(1);
            }
        }
    }

    /// Start the mail and peer processes at the end of the warm-up, and the
    /// away wave when the scenario has no client churn of its own.
    pub(crate) fn mail_setup(&mut self, away_wave: Option<(u64, u64)>) {
        let Some(cfg) = self.mail.as_ref().map(|m| m.cfg.clone()) else { return };
        let start = EPOCH_MS + self.cfg.warmup_ms;
        if cfg.rate > 0.0 {
            self.at(start, Ev::MailTick);
        }
        if cfg.peer_rate > 0.0 {
            self.at(start, Ev::PeerTick);
        }
        let Some((back_from, back_to)) = away_wave else { return };
        let n = self.clients.len();
        let k = ((n as f64) * cfg.away_share).round() as usize;
        let mut order: Vec<u32> = (0..n as u32).collect();
        for j in 0..k.min(n) {
            let r = self.rng.gen_range(j..n);
            order.swap(j, r);
        }
        for &c in &order[..k.min(n)] {
            if let Some(m) = self.mail.as_mut() {
                m.away.insert(c);
            }
            let leave = start + self.rng.gen_range(0..20_000);
            let back = self.rng.gen_range(back_from..=back_to.max(back_from));
            self.at(leave, Ev::ClientStop(c, Some(back.saturating_sub(leave).max(1))));
        }
    }

    /// The mail figures at the end of the run.
    pub(crate) fn mail_summary(&self, rows: &mut Vec<(String, String)>) -> Option<MailSummary> {
        let m = self.mail.as_ref()?;
        let end = self.metrics.reached;
        // Every id a live supernode still holds.
        let mut held: HashSet<MailId> = HashSet::new();
        for slot in &self.sns {
            let Some(sn) = &slot.sn else { continue };
            for to in sn.mail().recipients() {
                held.extend(sn.mail().items_of(&to).iter().map(|i| i.id));
            }
        }
        let (mut stored, mut judged, mut on_time, mut delivered, mut lost, mut waiting, mut late) =
            (0, 0, 0, 0, 0, 0, 0);
        let (mut raced, mut lost_pre_signin, mut never_stored, mut late_raced, mut late_reput) = (0, 0, 0, 0, 0);
        let mut delays: Vec<u64> = Vec::new();
        for (id, it) in &m.items {
            stored += u64::from(it.stored_at.is_some());
            never_stored += u64::from(it.stored_at.is_none());
            if let (Some(s), Some(st)) = (it.signin_at, it.stored_at) {
                raced += u64::from(s < st);
            }
            if let Some(d) = it.delivered_at {
                delivered += 1;
                if let Some(s) = it.signin_at {
                    delays.push(d.saturating_sub(s));
                }
            } else if it.stored_at.is_none() {
                // Never stored: only its sender has it (and keeps putting it).
            } else if !held.contains(id) {
                lost += 1;
                lost_pre_signin += u64::from(it.signin_at.is_none());
            } else {
                waiting += 1;
            }
            if let Some(s) = it.signin_at.filter(|s| s + ON_TIME_MS <= end) {
                judged += 1;
                let ok = it.delivered_at.is_some_and(|d| d <= s + ON_TIME_MS);
                on_time += u64::from(ok);
                late += u64::from(!ok);
                late_raced += u64::from(!ok && it.stored_at.is_some_and(|st| s < st));
                late_reput += u64::from(
                    !ok && it.stored_at.is_some_and(|st| st <= s) && it.last_stored_at.is_some_and(|l| l > s),
                );
            }
        }
        delays.sort_unstable();
        let mut pm = m.peer_ms.clone();
        pm.sort_unstable();
        let fails: u64 = m.peer_fail.values().sum();
        let peer_n = pm.len() as u64 + fails;
        let sn_s = self.metrics.sn_ms_after_warmup / 1000.0;
        let per_sn = |pred: fn(&str) -> bool| {
            let b: u64 = self.metrics.after_warmup_by_kind.iter().filter(|(k, _)| pred(k)).map(|(_, v)| *v).sum();
            if sn_s > 0.0 {
                crate::metrics::round(b as f64 / sn_s, 1)
            } else {
                0.0
            }
        };
        let pct = |p: f64, v: &[u64]| crate::metrics::percentile(v, p).map(|x| x as f64);
        let s = MailSummary {
            left: m.items.len() as u64,
            stored,
            judged,
            delivered_60s_share: (judged > 0).then(|| crate::metrics::round(on_time as f64 / judged as f64, 6)),
            delivered,
            lost,
            duplicates: m.duplicates,
            delivery_p50_ms: pct(0.5, &delays),
            delivery_p99_ms: pct(0.99, &delays),
            peer_success: (peer_n > 0).then(|| crate::metrics::round(pm.len() as f64 / peer_n as f64, 6)),
            peer_p50_ms: pct(0.5, &pm),
            peer_p99_ms: pct(0.99, &pm),
            mail_overlay_bytes_per_sn_s: per_sn(is_mail_kind),
            peer_overlay_bytes_per_sn_s: per_sn(is_peer_kind),
        };
        let kinds = {
            let mut v: Vec<(&&str, &u64)> =
                self.metrics.after_warmup_by_kind.iter().filter(|(k, _)| is_mail_kind(k)).collect();
            v.sort_by(|a, b| b.1.cmp(a.1));
            let total = v.iter().map(|(_, b)| **b).sum::<u64>().max(1) as f64;
            v.iter().map(|(k, b)| format!("{k} {:.0}%", **b as f64 * 100.0 / total)).collect::<Vec<_>>().join(", ")
        };
        let fail_row = m.peer_fail.iter().map(|(k, v)| format!("{k:?} {v}")).collect::<Vec<_>>().join(", ");
        rows.extend([
            ("mail: left / stored / delivered / lost".into(), format!("{} / {stored} / {delivered} / {lost}", s.left)),
            (
                "mail: judged (sign-in ≥ 60 s before end): on time / late (raced, put again after)".into(),
                format!("{judged}: {on_time} / {late} ({late_raced}, {late_reput})"),
            ),
            ("mail: waiting (held, recipient not back) / never stored".into(), format!("{waiting} / {never_stored}")),
            ("mail: lost before the recipient came back".into(), lost_pre_signin.to_string()),
            ("mail: sign-in before stored (raced)".into(), raced.to_string()),
            (
                "mail: puts again / refusals / duplicates / unknown".into(),
                format!("{} / {} / {} / {}", m.puts_again, m.refusals, m.duplicates, m.unknown_items),
            ),
            (
                "mail: refusals by reason".into(),
                m.refusal_reasons.iter().map(|(k, v)| format!("{k:?} {v}")).collect::<Vec<_>>().join(", "),
            ),
            ("mail: no offline recipient to write to".into(), m.no_recipient.to_string()),
            ("mail overlay bytes after warm-up by kind".into(), kinds),
            (
                "peer: delivered / failed / callee left / cut off".into(),
                format!("{} / {fails} ({fail_row}) / {} / {}", pm.len(), m.peer_callee_left, m.peer_cut_off),
            ),
        ]);
        Some(s)
    }

    /// Peer messages still in flight at the end: no answer.
    pub(crate) fn mail_finish(&mut self) {
        let Some(m) = self.mail.as_mut() else { return };
        let left: Vec<PeerPending> =
            std::mem::take(&mut m.sent).into_values().chain(std::mem::take(&mut m.lookups).into_values()).collect();
        for p in left {
            self.peer_failed(p, PeerFail::NoAnswer);
        }
    }
}
