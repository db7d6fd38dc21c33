//! Target-delay policies for the jitter buffer.
//!
//! A policy sees the *relative arrival delay* of every accepted packet — how much later it
//! arrived than the fastest recent packet would have, given its media timestamp — and
//! answers with a target delay: how far behind that fastest path the playout clock
//! should run. A packet whose relative delay exceeds the target arrives too late to play.

use std::fmt::Debug;

/// Decides how far behind the fastest recent packet playout runs.
pub trait DelayPolicy: Send + Debug {
    /// Observes one accepted packet: its relative arrival delay in milliseconds (≥ 0:
    /// arrival time minus media time, minus the same quantity for the fastest recent
    /// packet), received at `now_ms`.
    fn on_arrival(&mut self, _relative_delay_ms: f64, _now_ms: u64) {}
    /// Current target delay in milliseconds.
    fn target_delay_ms(&self) -> u64;
    /// Largest delay ever worth playing at, in ms: frames that would be played later
    /// than this behind the fastest path are skipped.
    fn max_delay_ms(&self) -> u64 {
        self.target_delay_ms().max(DEFAULT_MAX_DELAY_MS)
    }
}

/// Default lower bound of the target delay, in ms: one frame. The slack of a fetch moves
/// on a 20 ms lattice set by the arrival phase against the playout ticks; with a 10 ms
/// floor a sender or receiver tick a few ms late (timer noise of real processes) made a
/// packet late now and then on a clean link, and its concealment plus the target's
/// grow-and-shrink were audible (PESQ). The 20 ms floor costs about 10 ms on average
/// (`benches/pipeline.rs`: 57.7 ms mean added delay, within the 60 ms budget).
pub const DEFAULT_MIN_DELAY_MS: u64 = 20;
/// Default upper bound of the target delay, in ms.
pub const DEFAULT_MAX_DELAY_MS: u64 = 500;

/// A constant target delay (the Tox-like baseline uses 60 ms, three packets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedDelay(pub u64);

impl DelayPolicy for FixedDelay {
    fn target_delay_ms(&self) -> u64 {
        self.0
    }
}

/// Tuning of [`AdaptiveDelay`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdaptiveConfig {
    /// Target before any measurement, in ms (NetEq starts at 80).
    pub initial_ms: u64,
    /// Lower bound of the target, in ms.
    pub min_ms: u64,
    /// Upper bound of the target, in ms; larger relative delays are clamped to it.
    pub max_ms: u64,
    /// Quantile of the relative-delay distribution the target covers (0.95: 5 % late).
    pub quantile: f64,
    /// Relative delays are reduced to their maximum over intervals of this length before
    /// entering the histogram, so bursts count once and shrinking is paced by time.
    pub interval_ms: u64,
    /// Weight kept by the histogram each time an interval enters it (the rest goes to
    /// the new interval). With 0.8 and 100 ms intervals a past jitter level stops
    /// counting after about 1.4 s.
    pub forget: f64,
    /// Added to the quantile, in ms, to absorb timer and scheduling noise.
    pub margin_ms: f64,
    /// The initial target is a prior: it leaves the histogram once arrivals have been
    /// measured for this long, in ms (instead of fading like a measurement, which takes
    /// about 1.4 s and then shrinks the delay while the first words are spoken).
    pub prior_ms: u64,
}

impl Default for AdaptiveConfig {
    fn default() -> Self {
        AdaptiveConfig {
            initial_ms: 80,
            min_ms: DEFAULT_MIN_DELAY_MS,
            max_ms: DEFAULT_MAX_DELAY_MS,
            quantile: 0.95,
            interval_ms: 100,
            forget: 0.8,
            margin_ms: 2.0,
            prior_ms: 500,
        }
    }
}

/// NetEq-like adaptive target: a high quantile of a forgetting histogram of relative
/// arrival delays, bounded to `min_ms..=max_ms`.
///
/// * **Grows fast**: the maximum of the interval still open counts at once, so a single
///   late packet raises the target on arrival.
/// * **Shrinks slowly**: a past delay leaves the target only once its interval's weight,
///   which decays by [`AdaptiveConfig::forget`] per interval, drops below `1 - quantile`
///   (about 1.4 s with the defaults; the 2 s settling requirement bounds it).
///
/// The histogram has 1 ms buckets from 0 to `max_ms`; it starts with all its weight at
/// the initial target, which thus fades out like any old measurement.
#[derive(Debug, Clone)]
pub struct AdaptiveDelay {
    cfg: AdaptiveConfig,
    hist: Vec<f64>,
    interval_start: Option<u64>,
    interval_max: f64,
    target_ms: f64,
    /// Bucket of the initial prior and its remaining weight; first arrival time.
    prior: Option<(usize, f64)>,
    first_arrival: Option<u64>,
}

impl AdaptiveDelay {
    /// Creates a policy with the given configuration (`min_ms <= max_ms` is enforced by
    /// raising `max_ms`; the quantile and forget factor are clamped into `0..1`).
    pub fn new(mut cfg: AdaptiveConfig) -> Self {
        cfg.max_ms = cfg.max_ms.clamp(cfg.min_ms, 10_000);
        cfg.quantile = cfg.quantile.clamp(0.5, 0.999);
        cfg.forget = cfg.forget.clamp(0.0, 0.9999);
        cfg.interval_ms = cfg.interval_ms.max(1);
        let mut hist = vec![0.0; cfg.max_ms as usize + 1];
        let start = (cfg.initial_ms as f64 - cfg.margin_ms).clamp(0.0, cfg.max_ms as f64);
        hist[start.round() as usize] = 1.0;
        let prior = Some((start.round() as usize, 1.0));
        let mut p = AdaptiveDelay {
            cfg,
            hist,
            interval_start: None,
            interval_max: 0.0,
            target_ms: 0.0,
            prior,
            first_arrival: None,
        };
        p.target_ms = p.compute_target();
        p
    }

    /// Creates a policy with default tuning and the given initial target.
    pub fn with_initial(initial_ms: u64) -> Self {
        Self::new(AdaptiveConfig { initial_ms, ..AdaptiveConfig::default() })
    }

    /// The configuration in use.
    pub fn config(&self) -> &AdaptiveConfig {
        &self.cfg
    }

    /// Current target as a fractional number of milliseconds.
    pub fn target_ms_f64(&self) -> f64 {
        self.target_ms
    }

    fn insert(&mut self, value: f64) {
        let f = self.cfg.forget;
        for w in &mut self.hist {
            *w *= f;
        }
        let idx = (value.max(0.0).round() as usize).min(self.hist.len() - 1);
        self.hist[idx] += 1.0 - f;
        if let Some((_, w)) = &mut self.prior {
            *w *= f;
        }
    }

    /// Quantile of the histogram, interpolated inside its 1 ms bucket (bucket `i` holds
    /// values that round to `i`).
    fn quantile(&self) -> f64 {
        let total: f64 = self.hist.iter().sum();
        if total <= 0.0 {
            return self.cfg.initial_ms as f64;
        }
        let want = self.cfg.quantile * total;
        let mut cum = 0.0;
        for (i, &w) in self.hist.iter().enumerate() {
            if w > 0.0 && cum + w >= want {
                return (i as f64 - 0.5 + ((want - cum) / w).clamp(0.0, 1.0)).max(0.0);
            }
            cum += w;
        }
        (self.hist.len() - 1) as f64
    }

    fn compute_target(&self) -> f64 {
        let q = self.quantile().max(self.interval_max) + self.cfg.margin_ms;
        q.clamp(self.cfg.min_ms as f64, self.cfg.max_ms as f64)
    }
}

impl Default for AdaptiveDelay {
    fn default() -> Self {
        Self::new(AdaptiveConfig::default())
    }
}

impl DelayPolicy for AdaptiveDelay {
    fn on_arrival(&mut self, relative_delay_ms: f64, now_ms: u64) {
        let d = if relative_delay_ms.is_finite() { relative_delay_ms.clamp(0.0, self.cfg.max_ms as f64) } else { 0.0 };
        let first = *self.first_arrival.get_or_insert(now_ms);
        if now_ms.saturating_sub(first) >= self.cfg.prior_ms && self.interval_start.is_some() {
            if let Some((idx, w)) = self.prior.take() {
                // Measurements are in by now (an interval closed or is open): drop the prior.
                if let Some(b) = self.hist.get_mut(idx) {
                    *b = (*b - w).max(0.0);
                }
            }
        }
        match self.interval_start {
            Some(start) if now_ms < start.saturating_add(self.cfg.interval_ms) && now_ms >= start => {
                self.interval_max = self.interval_max.max(d);
            }
            Some(_) => {
                self.insert(self.interval_max);
                self.interval_start = Some(now_ms);
                self.interval_max = d;
            }
            None => {
                self.interval_start = Some(now_ms);
                self.interval_max = d;
            }
        }
        self.target_ms = self.compute_target();
    }

    fn target_delay_ms(&self) -> u64 {
        self.target_ms.round() as u64
    }

    fn max_delay_ms(&self) -> u64 {
        self.cfg.max_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_at_initial_and_respects_bounds() {
        let p = AdaptiveDelay::default();
        assert_eq!(p.target_delay_ms(), 80);
        let mut p = AdaptiveDelay::with_initial(60);
        assert_eq!(p.target_delay_ms(), 60);
        for i in 0..100u64 {
            p.on_arrival(1e9, i * 20);
            assert!(p.target_delay_ms() <= 500);
        }
        assert_eq!(p.target_delay_ms(), 500);
        for i in 100..400u64 {
            p.on_arrival(0.0, i * 20);
        }
        assert_eq!(p.target_delay_ms(), DEFAULT_MIN_DELAY_MS);
        p.on_arrival(f64::NAN, 9000);
        p.on_arrival(-5.0, 9020);
        assert_eq!(p.target_delay_ms(), DEFAULT_MIN_DELAY_MS);
    }

    #[test]
    fn grows_at_once_shrinks_over_time() {
        let mut p = AdaptiveDelay::new(AdaptiveConfig { initial_ms: 20, min_ms: 20, ..AdaptiveConfig::default() });
        for i in 0..100u64 {
            p.on_arrival(0.0, i * 20);
        }
        assert_eq!(p.target_delay_ms(), 20);
        p.on_arrival(150.0, 2000);
        assert_eq!(p.target_delay_ms(), 152, "one late packet raises the target at once");
        let mut t = 2020;
        while p.target_delay_ms() > 20 {
            p.on_arrival(0.0, t);
            t += 20;
            assert!(t < 5000, "never shrank");
        }
        let took = t - 2000;
        assert!((300..=2000).contains(&took), "shrank after {took} ms");
    }
}
