//! Bounded sample FIFO bridging an audio device's callback thread and the 20 ms media
//! clock.
//!
//! Both sides move samples at their own pace and in their own chunk sizes. The ring
//! absorbs the difference within fixed bounds:
//!
//! * **Capacity** (e.g. 200 ms): a push that would exceed it drops the oldest samples.
//! * **Priming**: the consumer gets silence until the ring holds a cushion of about two of
//!   the largest chunks seen on either side (at least the configured minimum), so that the
//!   two sides' chunk boundaries and scheduling jitter do not cause gaps.
//! * **Underflow**: a pop that finds too few samples returns what there is padded with
//!   silence, counts an underflow and re-primes.
//! * **Drift**: when the producer's clock runs faster than the consumer's, the fill level
//!   creeps up; once it passes a high-water mark (the cushion plus two chunks) the oldest
//!   samples are dropped back down to the cushion, so the added latency stays bounded.
//!
//! Every operation holds a mutex for a copy of at most one chunk, short enough for an
//! audio callback.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Counters of a [`SampleRing`]'s corrections since it was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RingStats {
    /// Samples pushed by the producer.
    pub pushed: u64,
    /// Samples handed to the consumer that came from the producer.
    pub delivered: u64,
    /// Pops that ran short after priming (each one an audible gap).
    pub underflows: u64,
    /// Samples of silence handed out instead of audio (priming and underflows).
    pub silence_samples: u64,
    /// Samples discarded because the ring was full or above its high-water mark.
    pub dropped_samples: u64,
}

#[derive(Debug)]
struct Inner {
    samples: VecDeque<i16>,
    primed: bool,
    /// Largest single push or pop seen so far.
    max_chunk: usize,
    stats: RingStats,
}

/// A bounded, mutex-guarded FIFO of mono samples shared by one producer and one consumer.
#[derive(Debug)]
pub struct SampleRing {
    capacity: usize,
    min_prime: usize,
    inner: Mutex<Inner>,
}

impl SampleRing {
    /// Creates a ring holding at most `capacity` samples (at least 1) that primes to at
    /// least `min_prime` samples (capped at half the capacity).
    pub fn new(capacity: usize, min_prime: usize) -> Self {
        let capacity = capacity.max(1);
        SampleRing {
            capacity,
            min_prime: min_prime.min(capacity / 2),
            inner: Mutex::new(Inner {
                samples: VecDeque::with_capacity(capacity),
                primed: false,
                max_chunk: 0,
                stats: RingStats::default(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the queue inconsistent: keep going.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Maximum number of samples held.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Fill level the consumer waits for before (re)starting, in samples.
    fn prime_level(&self, max_chunk: usize) -> usize {
        (2 * max_chunk).max(self.min_prime).min(self.capacity / 2)
    }

    /// Fill level above which the oldest samples are dropped, in samples.
    fn high_water(&self, max_chunk: usize) -> usize {
        (self.prime_level(max_chunk) + 2 * max_chunk).min(self.capacity)
    }

    /// Current fill-level bounds `(prime, high_water)` in samples, given the chunk sizes seen
    /// so far.
    pub fn levels(&self) -> (usize, usize) {
        let max_chunk = self.lock().max_chunk;
        (self.prime_level(max_chunk), self.high_water(max_chunk))
    }

    /// Appends `samples`, dropping the oldest ones if the ring would exceed its capacity.
    pub fn push(&self, samples: &[i16]) {
        let mut inner = self.lock();
        inner.max_chunk = inner.max_chunk.max(samples.len().min(self.capacity));
        inner.stats.pushed += samples.len() as u64;
        // Only the newest `capacity` samples of an oversized push can be kept.
        let samples = &samples[samples.len().saturating_sub(self.capacity)..];
        let excess = (inner.samples.len() + samples.len()).saturating_sub(self.capacity);
        if excess > 0 {
            inner.samples.drain(..excess);
            inner.stats.dropped_samples += excess as u64;
        }
        inner.samples.extend(samples.iter().copied());
    }

    /// Fills `out` with the oldest samples, or silence where there are none (see the module
    /// documentation). Returns how many samples of `out` are real audio.
    pub fn pop(&self, out: &mut [i16]) -> usize {
        let mut inner = self.lock();
        inner.max_chunk = inner.max_chunk.max(out.len().min(self.capacity));
        let max_chunk = inner.max_chunk;
        if !inner.primed {
            if inner.samples.len() >= self.prime_level(max_chunk).max(out.len().min(self.capacity)) {
                inner.primed = true;
            } else {
                out.fill(0);
                inner.stats.silence_samples += out.len() as u64;
                return 0;
            }
        }
        let high = self.high_water(max_chunk);
        if inner.samples.len() > high {
            let excess = inner.samples.len() - self.prime_level(max_chunk);
            inner.samples.drain(..excess);
            inner.stats.dropped_samples += excess as u64;
        }
        let n = inner.samples.len().min(out.len());
        for (slot, s) in out.iter_mut().zip(inner.samples.drain(..n)) {
            *slot = s;
        }
        out[n..].fill(0);
        inner.stats.delivered += n as u64;
        if n < out.len() {
            inner.stats.underflows += 1;
            inner.stats.silence_samples += (out.len() - n) as u64;
            inner.primed = false;
        }
        n
    }

    /// Number of samples currently held.
    pub fn len(&self) -> usize {
        self.lock().samples.len()
    }

    /// Whether the ring holds no samples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Counters since creation.
    pub fn stats(&self) -> RingStats {
        self.lock().stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use supervox_media::FRAME_SAMPLES;

    /// 200 ms at 48 kHz.
    const CAP: usize = 9_600;

    #[test]
    fn primes_then_delivers_in_order() {
        let ring = SampleRing::new(CAP, 2 * FRAME_SAMPLES);
        let mut out = vec![7i16; FRAME_SAMPLES];
        assert_eq!(ring.pop(&mut out), 0, "empty ring gives silence");
        assert!(out.iter().all(|&s| s == 0));
        let data: Vec<i16> = (0..3 * FRAME_SAMPLES as i16).collect();
        ring.push(&data[..FRAME_SAMPLES]);
        assert_eq!(ring.pop(&mut out), 0, "still priming");
        // The cushion is two of the largest chunks seen (here 960-sample frames).
        ring.push(&data[FRAME_SAMPLES..2 * FRAME_SAMPLES]);
        ring.push(&data[2 * FRAME_SAMPLES..]);
        assert_eq!(ring.pop(&mut out), FRAME_SAMPLES);
        assert_eq!(out, data[..FRAME_SAMPLES]);
        assert_eq!(ring.pop(&mut out), FRAME_SAMPLES);
        assert_eq!(out, data[FRAME_SAMPLES..2 * FRAME_SAMPLES]);
        let stats = ring.stats();
        assert_eq!(stats.underflows, 0);
        assert_eq!(stats.silence_samples, 2 * FRAME_SAMPLES as u64);
        assert_eq!(stats.delivered, 2 * FRAME_SAMPLES as u64);
        assert_eq!(ring.len(), FRAME_SAMPLES);
    }

    #[test]
    fn underflow_pads_with_silence_counts_and_reprimes() {
        let ring = SampleRing::new(CAP, 2 * FRAME_SAMPLES);
        ring.push(&[5; FRAME_SAMPLES]);
        ring.push(&[5; FRAME_SAMPLES]);
        let mut out = vec![0i16; FRAME_SAMPLES];
        assert_eq!(ring.pop(&mut out), FRAME_SAMPLES);
        ring.push(&[9; 100]);
        assert_eq!(ring.pop(&mut out), FRAME_SAMPLES);
        assert_eq!(ring.pop(&mut out), 100, "short pop");
        assert!(out[..100].iter().all(|&s| s == 9));
        assert!(out[100..].iter().all(|&s| s == 0));
        assert_eq!(ring.stats().underflows, 1);
        // Re-priming: a single frame is not enough to restart.
        ring.push(&[1; FRAME_SAMPLES]);
        assert_eq!(ring.pop(&mut out), 0);
        assert_eq!(ring.stats().underflows, 1, "priming silence is not an underflow");
        assert_eq!(ring.stats().silence_samples, (FRAME_SAMPLES - 100 + FRAME_SAMPLES) as u64);
        // A large chunk raises the cushion: two 2000-sample chunks are needed now.
        ring.push(&[2; 2000]);
        assert_eq!(ring.levels(), (4000, 8000));
        assert_eq!(ring.pop(&mut out), 0);
        ring.push(&[2; 2000]);
        assert_eq!(ring.pop(&mut out), FRAME_SAMPLES);
    }

    #[test]
    fn overflow_drops_oldest() {
        let ring = SampleRing::new(1000, 100);
        let data: Vec<i16> = (0..1500).collect();
        ring.push(&data[..800]);
        ring.push(&data[800..]);
        assert_eq!(ring.len(), 1000);
        assert_eq!(ring.stats().dropped_samples, 500);
        // An oversized single push keeps its newest samples.
        let ring = SampleRing::new(10, 2);
        ring.push(&data[..25]);
        let mut out = [0i16; 10];
        assert_eq!(ring.pop(&mut out), 10);
        assert_eq!(out, [15, 16, 17, 18, 19, 20, 21, 22, 23, 24]);
    }

    /// Simulates a device producing `chunk` samples at `rate_ratio` times the nominal rate
    /// against a consumer taking 960 samples every 20 ms, for `secs` of virtual time.
    fn run(chunk: usize, rate_ratio: f64, secs: u64) -> (RingStats, usize, usize) {
        let ring = SampleRing::new(CAP, 2 * FRAME_SAMPLES);
        let produce_period_us = chunk as f64 * 1e6 / (48_000.0 * rate_ratio);
        let mut next_produce = 0.0f64;
        let mut max_len = 0;
        let mut out = vec![0i16; FRAME_SAMPLES];
        let mut counter = 0i16;
        for tick in 0..secs * 50 {
            let now_us = (tick * 20_000) as f64;
            while next_produce <= now_us {
                let data: Vec<i16> = (0..chunk)
                    .map(|_| {
                        counter = counter.wrapping_add(1).max(1);
                        counter
                    })
                    .collect();
                ring.push(&data);
                max_len = max_len.max(ring.len());
                next_produce += produce_period_us;
            }
            ring.pop(&mut out);
        }
        (ring.stats(), max_len, ring.levels().1)
    }

    #[test]
    fn faster_producer_stays_bounded() {
        // Device clock 1% fast with 441-sample chunks: the level never runs away.
        let (stats, max_len, high) = run(441, 1.01, 60);
        assert!(max_len <= high + 441, "max level {max_len} > high water {high} + chunk");
        assert!(max_len <= CAP);
        assert!(stats.dropped_samples > 0, "{stats:?}");
        assert!(stats.dropped_samples < stats.pushed / 50, "{stats:?}");
        assert_eq!(stats.underflows, 0, "{stats:?}");
    }

    #[test]
    fn slower_producer_underflows_are_counted() {
        // Device clock 1% slow: occasional short frames padded with silence, counted.
        let (stats, max_len, high) = run(441, 0.99, 60);
        assert!(max_len <= high + 441);
        assert!(stats.underflows > 0, "{stats:?}");
        assert!(stats.underflows < 60, "{stats:?}");
        assert!(stats.silence_samples >= stats.underflows);
        assert_eq!(stats.dropped_samples, 0, "{stats:?}");
        // Everything pushed was delivered, except what is still buffered.
        assert!(stats.delivered <= stats.pushed);
        assert!(stats.pushed - stats.delivered <= high as u64 + 441);
    }

    #[test]
    fn matched_rates_run_clean() {
        for chunk in [256, 441, 480, 1024] {
            let (stats, max_len, high) = run(chunk, 1.0, 30);
            assert_eq!(stats.underflows, 0, "{chunk}: {stats:?}");
            assert_eq!(stats.dropped_samples, 0, "{chunk}: {stats:?}");
            assert!(max_len <= high + chunk, "{chunk}");
        }
    }
}
