//! The per-packet decisions of one direction of an impaired link, free of I/O.
//!
//! [`Shaper`] decides, for each packet as it arrives, whether it is dropped and otherwise when
//! it must be released. The impaired link's forwarder uses it; simulations can use it too.

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::impairment::{Impairment, JitterDistribution};

/// Why a packet was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Independent random loss.
    Loss,
    /// Gilbert–Elliott bursty loss.
    Burst,
    /// The rate limiter's queue was full.
    Queue,
}

/// What happens to one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Drop the packet.
    Drop(DropReason),
    /// Release the packet at this instant.
    Release(Instant),
}

/// Per-packet decisions for one direction: loss, bursty loss, rate limit, delay and jitter,
/// order preservation. Deterministic for a given seed and arrival sequence.
#[derive(Debug, Clone)]
pub struct Shaper {
    imp: Impairment,
    rng: StdRng,
    /// Gilbert–Elliott state: `true` when in the bad state.
    bad: bool,
    /// When the rate limiter's "wire" is free again.
    wire_free: Option<Instant>,
    /// Release time of the previous packet, for order preservation.
    last_release: Option<Instant>,
}

impl Shaper {
    /// A shaper applying `imp`, with its random numbers drawn from `seed`.
    pub fn new(imp: Impairment, seed: u64) -> Self {
        Shaper { imp, rng: StdRng::seed_from_u64(seed), bad: false, wire_free: None, last_release: None }
    }

    /// The impairment in force.
    pub fn impairment(&self) -> &Impairment {
        &self.imp
    }

    /// Replaces the impairment for packets arriving from now on. Packets already scheduled
    /// keep their release times; with order preservation, later packets still never overtake
    /// them.
    pub fn set_impairment(&mut self, imp: Impairment) {
        if imp.burst.is_none() {
            self.bad = false;
        }
        if imp.rate_bps.is_none() {
            self.wire_free = None;
        }
        self.imp = imp;
    }

    /// Whether the bursty-loss model is in its bad state.
    pub fn in_bad_state(&self) -> bool {
        self.bad
    }

    /// Decides the fate of a packet of `len` bytes arriving at `now`.
    pub fn admit(&mut self, now: Instant, len: usize) -> Verdict {
        // Draw every random number for every packet, so that a run's randomness does not
        // depend on which stage dropped a packet.
        let loss_draw: f64 = self.rng.gen();
        let burst_draws: (f64, f64) = (self.rng.gen(), self.rng.gen());
        let jitter_draws: (f64, f64) = (self.rng.gen(), self.rng.gen());

        let random_loss = loss_draw < self.imp.loss;
        let burst_loss = match &self.imp.burst {
            Some(ge) => {
                let flip = if self.bad { burst_draws.0 < ge.r } else { burst_draws.0 < ge.p };
                if flip {
                    self.bad = !self.bad;
                }
                burst_draws.1 < if self.bad { ge.loss_bad } else { ge.loss_good }
            }
            None => false,
        };
        if random_loss {
            return Verdict::Drop(DropReason::Loss);
        }
        if burst_loss {
            return Verdict::Drop(DropReason::Burst);
        }

        let mut release = now;
        if let Some(rate) = self.imp.rate_bps {
            let start = self.wire_free.map_or(now, |free| free.max(now));
            let backlog = start.saturating_duration_since(now);
            let backlog_bytes = backlog.as_secs_f64() * rate as f64 / 8.0;
            // A packet is always accepted onto an idle wire; the tolerance absorbs float rounding.
            if backlog > Duration::ZERO && backlog_bytes + len as f64 > self.imp.queue_bytes as f64 + 1e-6 {
                return Verdict::Drop(DropReason::Queue);
            }
            let tx = Duration::from_secs_f64(len as f64 * 8.0 / rate as f64);
            let done = start + tx;
            self.wire_free = Some(done);
            release = done;
        }

        release += self.delay_sample(jitter_draws);
        if !self.imp.reorder {
            if let Some(last) = self.last_release {
                release = release.max(last);
            }
        }
        self.last_release = Some(self.last_release.map_or(release, |last| last.max(release)));
        Verdict::Release(release)
    }

    /// Fixed delay plus jitter, never negative.
    fn delay_sample(&self, (u1, u2): (f64, f64)) -> Duration {
        let base = self.imp.delay.as_secs_f64();
        let j = self.imp.jitter.as_secs_f64();
        let offset = if j == 0.0 {
            0.0
        } else {
            match self.imp.jitter_distribution {
                JitterDistribution::Uniform => (2.0 * u1 - 1.0) * j,
                JitterDistribution::Normal => {
                    // Box–Muller; `1 - u1` is in (0, 1], so the logarithm is finite.
                    let z = (-2.0 * (1.0 - u1).ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
                    z * j
                }
            }
        };
        // `validate` bounds delay and jitter to an hour; clamp the normal tail likewise.
        Duration::from_secs_f64((base + offset).clamp(0.0, 7200.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::impairment::GilbertElliott;

    fn releases(shaper: &mut Shaper, n: usize, spacing: Duration) -> (Instant, Vec<Option<Duration>>) {
        let t0 = Instant::now();
        let out = (0..n)
            .map(|i| {
                let now = t0 + spacing * i as u32;
                match shaper.admit(now, 100) {
                    Verdict::Release(at) => Some(at - now),
                    Verdict::Drop(_) => None,
                }
            })
            .collect();
        (t0, out)
    }

    #[test]
    fn perfect_link_releases_immediately() {
        let mut s = Shaper::new(Impairment::none(), 1);
        let (_, out) = releases(&mut s, 100, Duration::from_millis(1));
        assert!(out.iter().all(|d| *d == Some(Duration::ZERO)));
    }

    #[test]
    fn uniform_jitter_stays_in_bounds_and_reorders_only_when_allowed() {
        let imp = Impairment::none()
            .with_delay(Duration::from_millis(25))
            .with_jitter(Duration::from_millis(20), JitterDistribution::Uniform)
            .with_reorder(true);
        let mut s = Shaper::new(imp.clone(), 7);
        let (t0, out) = releases(&mut s, 2000, Duration::from_millis(1));
        let delays: Vec<f64> = out.iter().map(|d| d.map(|d| d.as_secs_f64() * 1e3).unwrap_or(f64::NAN)).collect();
        assert!(delays.iter().all(|d| (5.0..=45.0).contains(d)));
        let mean = delays.iter().sum::<f64>() / delays.len() as f64;
        assert!((mean - 25.0).abs() < 1.5, "mean {mean}");
        let abs: Vec<Instant> =
            out.iter().enumerate().map(|(i, d)| t0 + Duration::from_millis(i as u64) + d.unwrap_or_default()).collect();
        assert!(abs.windows(2).any(|w| w[1] < w[0]), "reordering expected");

        let mut s = Shaper::new(imp.with_reorder(false), 7);
        let (t0, out) = releases(&mut s, 2000, Duration::from_millis(1));
        let abs: Vec<Instant> =
            out.iter().enumerate().map(|(i, d)| t0 + Duration::from_millis(i as u64) + d.unwrap_or_default()).collect();
        assert!(abs.windows(2).all(|w| w[1] >= w[0]), "order must be kept");
    }

    #[test]
    fn gilbert_elliott_is_bursty() {
        let imp = Impairment::none().with_burst(GilbertElliott::new(0.05, 0.3));
        let mut s = Shaper::new(imp, 3);
        let (_, out) = releases(&mut s, 20_000, Duration::from_micros(100));
        let lost: Vec<bool> = out.iter().map(Option::is_none).collect();
        let rate = lost.iter().filter(|l| **l).count() as f64 / lost.len() as f64;
        assert!((rate - 0.05 / 0.35).abs() < 0.02, "loss {rate}");
        let bursts = lost.split(|l| !*l).filter(|run| !run.is_empty()).map(<[bool]>::len).collect::<Vec<_>>();
        let mean = bursts.iter().sum::<usize>() as f64 / bursts.len() as f64;
        assert!((mean - 1.0 / 0.3).abs() < 0.4, "mean burst {mean}");
    }

    #[test]
    fn same_seed_same_decisions() {
        let imp = Impairment::none().with_loss(0.3).with_jitter(Duration::from_millis(5), JitterDistribution::Normal);
        let (mut a, mut b) = (Shaper::new(imp.clone(), 42), Shaper::new(imp, 42));
        let t0 = Instant::now();
        for i in 0..500u32 {
            let now = t0 + Duration::from_millis(u64::from(i));
            assert_eq!(a.admit(now, 200), b.admit(now, 200));
        }
    }

    #[test]
    fn rate_limit_serialises_and_tail_drops() {
        // 1 Mbit/s: a 1000-byte packet takes 8 ms on the wire.
        let imp = Impairment::none().with_rate(1_000_000).with_queue_bytes(5000);
        let mut s = Shaper::new(imp, 1);
        let now = Instant::now();
        let verdicts: Vec<Verdict> = (0..10).map(|_| s.admit(now, 1000)).collect();
        assert_eq!(verdicts[0], Verdict::Release(now + Duration::from_millis(8)));
        assert_eq!(verdicts[1], Verdict::Release(now + Duration::from_millis(16)));
        let dropped = verdicts.iter().filter(|v| **v == Verdict::Drop(DropReason::Queue)).count();
        assert_eq!(dropped, 5, "{verdicts:?}");
    }
}
