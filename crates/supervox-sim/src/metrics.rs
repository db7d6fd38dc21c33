//! What a run measures, and the summary it prints.

use crate::engine::Sim;
use crate::scenario::NamesCheck;
use serde::Serialize;
use std::fmt::Write as _;
use std::time::Duration;

/// How a lookup ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The callee, online: success.
    Online,
    /// Online, but another key (never expected).
    WrongUser,
    /// The name is known but no presence was found.
    Offline,
    /// The name was not found at all.
    Unknown,
    /// The caller lost its supernode (or stopped) before the answer (not
    /// counted).
    Dropped,
    /// Still unanswered at the end of the run.
    NoAnswer,
}

/// One measured lookup.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LookupRecord {
    pub outcome: Outcome,
    pub ms: u64,
    pub hops: u8,
    pub overlay_msgs: u32,
    /// At the client's supernode: time from its first `Lookup` datagram to
    /// the first answer, and the RTT to the holder it asked first (ms).
    pub overlay: Option<(u64, u64)>,
}

/// Counters and accumulators filled while the simulation runs.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    /// Overlay-traffic window `[start, end)`, virtual ms.
    pub window: (u64, u64),
    pub overlay_bytes: u64,
    pub overlay_msgs: u64,
    /// Overlay bytes by message kind (inside the window).
    pub overlay_by_kind: std::collections::BTreeMap<&'static str, u64>,
    /// Supernode-milliseconds inside the window.
    sn_ms: f64,
    /// Overlay bytes by kind from the end of the warm-up to the end of the
    /// run (the event included).
    pub after_warmup_by_kind: std::collections::BTreeMap<&'static str, u64>,
    /// Supernode-milliseconds from the end of the warm-up on.
    pub sn_ms_after_warmup: f64,
    last_sn_change: u64,
    pub max_load: f64,
    pub redirects: u64,
    pub violations: u64,
    pub names_refused: u64,
    pub sn_joins: u64,
    pub restarts_left: usize,
    pub event_at: Option<u64>,
    pub recovery_from: Option<u64>,
    pub recovered_from: u64,
    pub recovered_at: Option<u64>,
    min_callable_after_event: Option<usize>,
    pub lookups: Vec<LookupRecord>,
    pub lookups_callee_left: u64,
    pub lookups_cut_off: u64,
    pub lookup_seq: u64,
    /// Virtual time the run reached.
    pub reached: u64,
}

impl Metrics {
    pub fn start(&mut self, window_start: u64, window_end: u64, now: u64) {
        self.window = (window_start, window_end);
        self.last_sn_change = now;
    }

    pub fn in_window(&self, now: u64) -> bool {
        (self.window.0..self.window.1).contains(&now)
    }

    /// The number of live supernodes is about to change from `before`.
    pub fn sn_count_changed(&mut self, now: u64, before: usize) {
        let (ws, we) = self.window;
        let (a, b) = (self.last_sn_change.max(ws), now.min(we));
        if b > a {
            self.sn_ms += before as f64 * (b - a) as f64;
        }
        let a = self.last_sn_change.max(ws);
        if now > a {
            self.sn_ms_after_warmup += before as f64 * (now - a) as f64;
        }
        self.last_sn_change = now;
    }

    /// The number of callable clients dropped to `n`.
    pub fn callable_low(&mut self, n: usize) {
        if self.event_at.is_some() {
            self.min_callable_after_event = Some(self.min_callable_after_event.map_or(n, |m| m.min(n)));
        }
    }
}

/// The contract of the simulator: these keys, in this order, are what
/// `--json` prints. Lookup figures are `null` when no lookup was measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// Measured lookups that found the callee online.
    pub lookup_success: Option<f64>,
    /// Median overlay hops of successful lookups (client to its supernode
    /// is 0; each supernode-to-supernode forward is 1).
    pub lookup_hops_median: Option<f64>,
    /// Median latency of successful lookups, ms.
    pub lookup_p50_ms: Option<f64>,
    /// 99th percentile latency of successful lookups, ms.
    pub lookup_p99_ms: Option<f64>,
    /// Most clients one supernode ever held, over its `max_clients`.
    pub max_load_ratio: f64,
    /// Supernode-to-supernode bytes per supernode per second in the window
    /// between warm-up and the event (or the end).
    pub overlay_bytes_per_sn_s: f64,
    /// Seconds from the event until 99% of the clients were callable;
    /// `null` for steady or if it never happened.
    pub recovered_99_s: Option<f64>,
    /// Accepted names that no live supernode holds for their owner, or that
    /// one holds under another key, at the end.
    pub names_lost: u64,
}

/// Figures that explain the summary (printed in the table, not in JSON).
#[derive(Debug, Clone)]
pub struct Details {
    /// `scenario: N supernodes, M clients, seed S, D s` line.
    pub header: String,
    /// Label and value rows.
    pub rows: Vec<(String, String)>,
}

/// The outcome of a run.
#[derive(Debug, Clone)]
pub struct Report {
    /// The contract figures.
    pub summary: Summary,
    /// Everything else worth printing.
    pub details: Details,
    /// Wall-clock time the run took (not part of the summary: it is not
    /// reproducible).
    pub wall: Duration,
    /// Events handled.
    pub events: u64,
    /// Clients signed in to a live supernode at the end.
    pub callable_end: usize,
    /// Most overlay hops any measured lookup took.
    pub max_hops: u8,
    /// Client processes running at the end.
    pub running_end: usize,
    /// Virtual seconds run (less than the duration if a budget ran out).
    pub virtual_s: f64,
    /// Why the run stopped early (wall-time or memory budget), if it did.
    pub stopped: Option<&'static str>,
    /// Offline mail and peer-message figures (runs with `--mail`).
    pub mail: Option<crate::mail::MailSummary>,
    /// Byzantine supernodes' figures (runs with `--byzantine`).
    pub byzantine: Option<crate::byzantine::ByzantineSummary>,
}

pub(crate) fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

/// Nearest-rank percentile of sorted values.
pub(crate) fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

fn median_hops(mut v: Vec<u8>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    let n = v.len();
    Some(if n % 2 == 1 { f64::from(v[n / 2]) } else { (f64::from(v[n / 2 - 1]) + f64::from(v[n / 2])) / 2.0 })
}

impl Report {
    pub(crate) fn build(sim: &Sim, names: NamesCheck, wall: Duration) -> Self {
        let m = &sim.metrics;
        let cfg = &sim.cfg;
        let ok: Vec<&LookupRecord> = m.lookups.iter().filter(|l| l.outcome == Outcome::Online).collect();
        let count = |o: Outcome| m.lookups.iter().filter(|l| l.outcome == o).count();
        let mut ms: Vec<u64> = ok.iter().map(|l| l.ms).collect();
        ms.sort_unstable();
        let n = m.lookups.len();
        let success = (n > 0).then(|| round(ok.len() as f64 / n as f64, 6));
        let sn_s = m.sn_ms / 1000.0;
        let summary = Summary {
            lookup_success: success,
            lookup_hops_median: median_hops(ok.iter().map(|l| l.hops).collect()),
            lookup_p50_ms: percentile(&ms, 0.50).map(|x| x as f64),
            lookup_p99_ms: percentile(&ms, 0.99).map(|x| x as f64),
            max_load_ratio: round(m.max_load, 4),
            overlay_bytes_per_sn_s: if sn_s > 0.0 { round(m.overlay_bytes as f64 / sn_s, 1) } else { 0.0 },
            recovered_99_s: m.recovered_at.map(|t| round((t - m.recovered_from) as f64 / 1000.0, 3)),
            names_lost: names.lost,
        };
        let live = sim.live_sns.len();
        let running = sim.clients.iter().filter(|c| c.client.is_some()).count();
        let loads: usize = sim.sns.iter().filter_map(|s| s.sn.as_ref()).map(|s| s.client_count()).sum();
        let msgs_per_lookup = if n > 0 {
            m.lookups.iter().map(|l| u64::from(l.overlay_msgs)).sum::<u64>() as f64 / n as f64
        } else {
            0.0
        };
        let window_s = (m.window.1 - m.window.0) as f64 / 1000.0;
        let mut rows = vec![
            ("lookups measured: ok / failed".into(), format!("{} / {}", ok.len(), n - ok.len())),
            (
                "failed: offline / unknown / wrong user / no answer".into(),
                format!(
                    "{} / {} / {} / {}",
                    count(Outcome::Offline),
                    count(Outcome::Unknown),
                    count(Outcome::WrongUser),
                    count(Outcome::NoAnswer)
                ),
            ),
            (
                "not counted: callee left / caller cut off".into(),
                format!("{} / {}", m.lookups_callee_left, m.lookups_cut_off),
            ),
            ("overlay messages per lookup".into(), format!("{msgs_per_lookup:.1}")),
            ("holder answer: p99 of time - 2·RTT to the holder".into(), holder_bound(&ok)),
            ("overlay window".into(), format!("{window_s:.0} s, {} messages", m.overlay_msgs)),
            ("overlay bytes by kind (share)".into(), {
                let total = m.overlay_by_kind.values().sum::<u64>().max(1) as f64;
                let mut kinds: Vec<(&&str, &u64)> = m.overlay_by_kind.iter().collect();
                kinds.sort_by(|a, b| b.1.cmp(a.1));
                kinds
                    .iter()
                    .take(6)
                    .map(|(k, v)| format!("{k} {:.0}%", **v as f64 * 100.0 / total))
                    .collect::<Vec<_>>()
                    .join(", ")
            }),
            ("supernodes live at end / started".into(), format!("{live} / {}", sim.sns.len())),
            (
                "clients callable / running at end".into(),
                format!("{} / {running} ({:.2}%)", sim.callable.len(), pct(sim.callable.len(), running)),
            ),
            (
                "mean load at end (clients per SN / max_clients)".into(),
                format!(
                    "{:.3} (max_clients {})",
                    loads as f64 / live.max(1) as f64 / cfg.max_clients as f64,
                    cfg.max_clients
                ),
            ),
            ("redirects (full SN)".into(), m.redirects.to_string()),
            (
                "names claimed / missing / changed owner / refused".into(),
                format!("{} / {} / {} / {}", names.claimed, names.missing, names.changed_owner, m.names_refused),
            ),
            ("protocol violations".into(), m.violations.to_string()),
        ];
        if let Some(min) = m.min_callable_after_event {
            rows.push((
                "least callable after the event".into(),
                format!("{min} ({:.2}%)", pct(min, sim.clients.len())),
            ));
        }
        if cfg.scenario == crate::config::Scenario::Steady {
            rows.push(("supernode replacements (churn)".into(), m.sn_joins.to_string()));
        }
        rows.push(("events / connections".into(), format!("{} / {}", sim.events, sim.links.len())));
        let header = format!(
            "supervox-sim {}: {} supernodes, {} clients, seed {}, {} s virtual (warm-up {} s, {} start)",
            cfg.scenario,
            cfg.supernodes,
            cfg.clients,
            cfg.seed,
            cfg.duration_ms / 1000,
            cfg.warmup_ms / 1000,
            if cfg.warm_start { "warm" } else { "cold" }
        );
        let mail = sim.mail_summary(&mut rows);
        let byzantine = sim.byzantine_summary(&mut rows, count(Outcome::WrongUser) as u64);
        let virtual_s = (m.reached - crate::config::EPOCH_MS) as f64 / 1000.0;
        if let Some(why) = sim.stopped {
            rows.push((format!("STOPPED EARLY ({why}) at virtual"), format!("{virtual_s:.1} s")));
        }
        Report {
            summary,
            details: Details { header, rows },
            wall,
            events: sim.events,
            callable_end: sim.callable.len(),
            max_hops: m.lookups.iter().map(|l| l.hops).max().unwrap_or(0),
            running_end: running,
            virtual_s,
            stopped: sim.stopped,
            mail,
            byzantine,
        }
    }

    /// The summary as one JSON object (the `--json` contract); with
    /// `--mail`, plus a `mail` object ([`crate::MailSummary`]).
    pub fn to_json(&self) -> String {
        let mut v = serde_json::to_value(&self.summary).expect("the summary always serialises");
        if let (Some(mail), serde_json::Value::Object(o)) = (&self.mail, &mut v) {
            o.insert("mail".into(), serde_json::to_value(mail).expect("the mail summary always serialises"));
        }
        if let (Some(b), serde_json::Value::Object(o)) = (&self.byzantine, &mut v) {
            o.insert("byzantine".into(), serde_json::to_value(b).expect("the byzantine summary always serialises"));
        }
        v.to_string()
    }

    /// The human-readable table: the summary, then the details.
    pub fn table(&self) -> String {
        let s = &self.summary;
        let opt = |v: Option<f64>| v.map_or("-".to_string(), |x| x.to_string());
        let rows: [(&str, String); 8] = [
            ("lookup_success", opt(s.lookup_success)),
            ("lookup_hops_median", opt(s.lookup_hops_median)),
            ("lookup_p50_ms", opt(s.lookup_p50_ms)),
            ("lookup_p99_ms", opt(s.lookup_p99_ms)),
            ("max_load_ratio", s.max_load_ratio.to_string()),
            ("overlay_bytes_per_sn_s", s.overlay_bytes_per_sn_s.to_string()),
            ("recovered_99_s", opt(s.recovered_99_s)),
            ("names_lost", s.names_lost.to_string()),
        ];
        let mut out = format!("{}\n\n", self.details.header);
        let _ = writeln!(out, "{:<50} value", "metric");
        for (k, v) in rows {
            let _ = writeln!(out, "{k:<50} {v}");
        }
        if let Some(m) = &self.mail {
            let opt = |v: Option<f64>| v.map_or("-".to_string(), |x| x.to_string());
            let rows: [(&str, String); 14] = [
                ("mail.left", m.left.to_string()),
                ("mail.stored", m.stored.to_string()),
                ("mail.judged", m.judged.to_string()),
                ("mail.delivered_60s_share", opt(m.delivered_60s_share)),
                ("mail.delivered", m.delivered.to_string()),
                ("mail.lost", m.lost.to_string()),
                ("mail.duplicates", m.duplicates.to_string()),
                ("mail.delivery_p50_ms", opt(m.delivery_p50_ms)),
                ("mail.delivery_p99_ms", opt(m.delivery_p99_ms)),
                ("mail.peer_success", opt(m.peer_success)),
                ("mail.peer_p50_ms", opt(m.peer_p50_ms)),
                ("mail.peer_p99_ms", opt(m.peer_p99_ms)),
                ("mail.mail_overlay_bytes_per_sn_s", m.mail_overlay_bytes_per_sn_s.to_string()),
                ("mail.peer_overlay_bytes_per_sn_s", m.peer_overlay_bytes_per_sn_s.to_string()),
            ];
            for (k, v) in rows {
                let _ = writeln!(out, "{k:<50} {v}");
            }
        }
        out.push('\n');
        for (k, v) in &self.details.rows {
            let _ = writeln!(out, "{k:<50} {v}");
        }
        let _ = writeln!(out, "{:<50} {:.1} s", "wall time", self.wall.as_secs_f64());
        out
    }
}

fn pct(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        100.0 * a as f64 / b as f64
    }
}

/// The latency bound, per lookup that went over the overlay: the
/// client's supernode has its answer within `2 × RTT to the holder + 50 ms`
/// (one RTT when the holder answers; two when a hedge was needed). Shows the
/// p99 of `time − 2·RTT` (≤ 50 ms meets the bound) and the share within it.
fn holder_bound(ok: &[&LookupRecord]) -> String {
    let mut excess: Vec<i64> = ok.iter().filter_map(|l| l.overlay).map(|(t, rtt)| t as i64 - 2 * rtt as i64).collect();
    if excess.is_empty() {
        return "-".into();
    }
    excess.sort_unstable();
    let p99 = excess[((excess.len() - 1) as f64 * 0.99).round() as usize];
    let within = excess.iter().filter(|e| **e <= 50).count();
    format!("{p99} ms ({:.2}% of {} within 50 ms)", 100.0 * within as f64 / excess.len() as f64, excess.len())
}
