//! RFC 3550-style loss and interarrival-jitter accounting.

use crate::packet::{extend_seq, MediaHeader};

/// Media clock ticks per millisecond (48 kHz).
const TICKS_PER_MS: f64 = crate::SAMPLE_RATE as f64 / 1000.0;

/// Tracks received packets to estimate loss and interarrival jitter.
#[derive(Debug, Default, Clone)]
pub(crate) struct StatsTracker {
    received: u64,
    base_seq: Option<i64>,
    max_seq: i64,
    /// Previous packet's (arrival ms, RTP timestamp).
    prev: Option<(u64, u32)>,
    /// Interarrival jitter estimate in media clock ticks.
    jitter_ticks: f64,
    /// Expected and received counts at the previous report (RFC 3550 A.3).
    expected_prior: i64,
    received_prior: u64,
}

impl StatsTracker {
    /// Records one received packet at `now_ms`.
    pub(crate) fn on_packet(&mut self, h: &MediaHeader, now_ms: u64) {
        self.received += 1;
        match self.base_seq {
            None => {
                let s = i64::from(h.seq);
                self.base_seq = Some(s);
                self.max_seq = s;
            }
            Some(_) => {
                let ext = extend_seq(self.max_seq, h.seq);
                self.max_seq = self.max_seq.max(ext);
            }
        }
        if let Some((prev_ms, prev_ts)) = self.prev {
            // D(i-1, i) = (R_i - R_{i-1}) - (S_i - S_{i-1}), in media clock ticks.
            let arrival = (now_ms as f64 - prev_ms as f64) * TICKS_PER_MS;
            let sent = f64::from(h.timestamp.wrapping_sub(prev_ts) as i32);
            let d = (arrival - sent).abs();
            self.jitter_ticks += (d - self.jitter_ticks) / 16.0;
        }
        self.prev = Some((now_ms, h.timestamp));
    }

    /// Packets received (including duplicates, as in RFC 3550).
    pub(crate) fn received(&self) -> u64 {
        self.received
    }

    /// Cumulative loss in percent: (expected - received) / expected, never negative.
    pub(crate) fn loss_pct(&self) -> f64 {
        let Some(base) = self.base_seq else {
            return 0.0;
        };
        let expected = (self.max_seq - base + 1).max(1) as f64;
        let lost = (expected - self.received as f64).max(0.0);
        lost / expected * 100.0
    }

    /// Interarrival jitter in milliseconds.
    pub(crate) fn jitter_ms(&self) -> f64 {
        self.jitter_ticks / TICKS_PER_MS
    }

    /// Interarrival jitter in media clock ticks.
    pub(crate) fn jitter_ticks(&self) -> u32 {
        self.jitter_ticks.clamp(0.0, f64::from(u32::MAX)) as u32
    }

    fn expected(&self) -> i64 {
        self.base_seq.map_or(0, |base| (self.max_seq - base + 1).max(0))
    }

    /// Extended highest sequence number (wrap count in the high 16 bits).
    pub(crate) fn highest_ext_seq(&self) -> u32 {
        self.max_seq as u32
    }

    /// Packets lost since the start (expected minus received, never negative).
    pub(crate) fn cumulative_lost(&self) -> u32 {
        let lost = self.expected() - self.received as i64;
        lost.clamp(0, i64::from(u32::MAX)) as u32
    }

    /// Fraction lost since the previous call, in 1/256 (RFC 3550 A.3); starts a new
    /// interval.
    pub(crate) fn take_fraction_lost_q8(&mut self) -> u8 {
        let expected = self.expected();
        let expected_interval = expected - self.expected_prior;
        let received_interval = self.received.saturating_sub(self.received_prior) as i64;
        self.expected_prior = expected;
        self.received_prior = self.received;
        let lost = expected_interval - received_interval;
        if expected_interval <= 0 || lost <= 0 {
            0
        } else {
            ((lost << 8) / expected_interval).min(255) as u8
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(seq: u16, timestamp: u32) -> MediaHeader {
        MediaHeader { seq, timestamp, marker: false }
    }

    #[test]
    fn loss_from_seq_gaps_across_wrap() {
        let mut s = StatsTracker::default();
        assert_eq!(s.loss_pct(), 0.0);
        let mut seq = 65500u16;
        for i in 0..100u16 {
            if i % 10 != 3 {
                s.on_packet(&h(seq, 0), 0);
            }
            seq = seq.wrapping_add(1);
        }
        assert_eq!(s.received(), 90);
        assert!((s.loss_pct() - 10.0).abs() < 1e-9, "{}", s.loss_pct());
        assert_eq!(s.cumulative_lost(), 10);
        assert_eq!(s.highest_ext_seq(), 65500 + 99);
        assert_eq!(s.take_fraction_lost_q8(), 25); // 10 % of 256, rounded down
        assert_eq!(s.take_fraction_lost_q8(), 0);
        for i in 100..120u16 {
            if i % 2 == 1 {
                s.on_packet(&h(65500u16.wrapping_add(i), 0), 0);
            }
        }
        assert_eq!(s.take_fraction_lost_q8(), 128);
    }

    #[test]
    fn jitter_zero_when_regular_and_positive_when_not() {
        let mut s = StatsTracker::default();
        let ts = |i: u32| (u32::MAX - 5000).wrapping_add(i * 960);
        for i in 0..50u32 {
            s.on_packet(&h(i as u16, ts(i)), 1000 + u64::from(i) * 20);
        }
        assert!(s.jitter_ms() < 1e-9);
        for i in 50..200u32 {
            let wobble = if i % 2 == 0 { 10 } else { 0 };
            s.on_packet(&h(i as u16, ts(i)), 1000 + u64::from(i) * 20 + wobble);
        }
        // Alternating +-10 ms transit differences converge towards 10 ms.
        assert!((s.jitter_ms() - 10.0).abs() < 1.0, "{}", s.jitter_ms());
    }
}
