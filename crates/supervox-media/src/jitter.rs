//! Jitter buffer: orders received packets by sequence number and releases one frame per
//! 20 ms playout tick.
//!
//! Playout starts once the first buffered packet has waited the target delay given by a
//! [`DelayPolicy`]; from then on each [`JitterBuffer::pop`] yields the next sequence number
//! ([`Playout::Frame`]) or reports a gap ([`Playout::Missing`], with the following packet
//! for FEC recovery if it is already here). When the buffer stays empty for
//! [`DRY_LIMIT_FRAMES`] ticks, playout stops ([`Playout::Waiting`]) and re-buffers.
//!
//! The delay policy is a trait so an adaptive (NetEq-like) policy can replace the
//! [`FixedDelay`] used by [`JitterBuffer::new`].

use std::collections::BTreeMap;
use std::fmt::Debug;

use crate::packet::{extend_seq, MediaHeader};

/// Most frames held at once; on overflow the oldest is dropped.
pub const MAX_FRAMES: usize = 50;
/// Consecutive empty playout ticks after which playout stops and re-buffers.
pub const DRY_LIMIT_FRAMES: u32 = 10;
/// A gap larger than this many frames in front of the playout point is skipped at once
/// instead of being played out frame by frame as [`Playout::Missing`].
pub const MAX_GAP_FRAMES: i64 = MAX_FRAMES as i64;

/// Decides how long packets are held before playout starts.
pub trait DelayPolicy: Send + Debug {
    /// Observes every packet accepted into the buffer (for adaptive policies).
    fn on_packet(&mut self, _header: &MediaHeader, _now_ms: u64) {}
    /// Current target delay in milliseconds.
    fn target_delay_ms(&self) -> u64;
}

/// A constant target delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedDelay(pub u64);

impl DelayPolicy for FixedDelay {
    fn target_delay_ms(&self) -> u64 {
        self.0
    }
}

/// What the playout clock should do for one 20 ms tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Playout {
    /// The next frame's Opus payload.
    Frame(Vec<u8>),
    /// The next frame is missing; `fec_from` is the packet after it, if buffered, whose
    /// in-band FEC may recover it.
    Missing {
        /// Payload of the following packet, for FEC recovery.
        fec_from: Option<Vec<u8>>,
    },
    /// Not started yet, or drained and re-buffering: play nothing.
    Waiting,
}

/// Reordering buffer of at most [`MAX_FRAMES`] frames.
#[derive(Debug)]
pub struct JitterBuffer {
    policy: Box<dyn DelayPolicy>,
    /// Buffered payloads keyed by extended sequence number.
    frames: BTreeMap<i64, Vec<u8>>,
    /// Highest extended sequence number seen, the reference for extending new ones.
    highest: Option<i64>,
    /// Next extended sequence number to play; older packets are dropped on arrival.
    next_seq: Option<i64>,
    playing: bool,
    /// Arrival time of the first packet buffered while waiting.
    wait_since: Option<u64>,
    /// Consecutive pops that found the buffer empty.
    dry: u32,
    dropped: u64,
}

impl JitterBuffer {
    /// Creates a buffer with a fixed target delay.
    pub fn new(target_delay_ms: u64) -> Self {
        Self::with_policy(Box::new(FixedDelay(target_delay_ms)))
    }

    /// Creates a buffer with a custom target-delay policy.
    pub fn with_policy(policy: Box<dyn DelayPolicy>) -> Self {
        JitterBuffer {
            policy,
            frames: BTreeMap::new(),
            highest: None,
            next_seq: None,
            playing: false,
            wait_since: None,
            dry: 0,
            dropped: 0,
        }
    }

    /// Adds a received packet. Duplicates and packets whose turn has passed are dropped;
    /// when more than [`MAX_FRAMES`] are held the oldest is dropped.
    ///
    /// A packet with the marker bit whose sequence number lies in the already-played past
    /// is taken as a restarted stream: the buffer is reset and starts over from it.
    pub fn push(&mut self, h: MediaHeader, payload: Vec<u8>, now_ms: u64) {
        let mut ext = match self.highest {
            Some(r) => extend_seq(r, h.seq),
            None => i64::from(h.seq),
        };
        if let Some(next) = self.next_seq {
            if ext < next {
                if !h.marker {
                    self.dropped += 1;
                    return;
                }
                tracing::debug!(seq = h.seq, "media stream restarted, resetting jitter buffer");
                self.reset();
                ext = i64::from(h.seq);
            }
        }
        if self.frames.contains_key(&ext) {
            self.dropped += 1;
            return;
        }
        self.policy.on_packet(&h, now_ms);
        self.frames.insert(ext, payload);
        self.highest = Some(self.highest.map_or(ext, |hi| hi.max(ext)));
        if !self.playing && self.wait_since.is_none() {
            self.wait_since = Some(now_ms);
        }
        while self.frames.len() > MAX_FRAMES {
            self.frames.pop_first();
            self.dropped += 1;
        }
    }

    /// Returns what to play for the current 20 ms tick.
    pub fn pop(&mut self, now_ms: u64) -> Playout {
        if !self.playing {
            let Some(since) = self.wait_since else {
                return Playout::Waiting;
            };
            let Some((&first, _)) = self.frames.first_key_value() else {
                return Playout::Waiting;
            };
            if now_ms.saturating_sub(since) < self.policy.target_delay_ms() {
                return Playout::Waiting;
            }
            self.playing = true;
            self.wait_since = None;
            self.dry = 0;
            self.next_seq = Some(first);
        }
        let Some((&first, _)) = self.frames.first_key_value() else {
            self.dry += 1;
            if self.dry >= DRY_LIMIT_FRAMES {
                self.playing = false;
                self.dry = 0;
                return Playout::Waiting;
            }
            self.next_seq = self.next_seq.map(|n| n + 1);
            return Playout::Missing { fec_from: None };
        };
        self.dry = 0;
        let mut next = self.next_seq.unwrap_or(first);
        if first - next > MAX_GAP_FRAMES {
            next = first;
        }
        self.next_seq = Some(next + 1);
        match self.frames.remove(&next) {
            Some(payload) => Playout::Frame(payload),
            None => Playout::Missing { fec_from: self.frames.get(&(next + 1)).cloned() },
        }
    }

    /// Number of frames currently buffered.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Whether no frames are buffered.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Whether playout has started (and not gone back to re-buffering).
    pub fn is_playing(&self) -> bool {
        self.playing
    }

    /// Current target delay from the policy, in milliseconds.
    pub fn target_delay_ms(&self) -> u64 {
        self.policy.target_delay_ms()
    }

    /// Packets dropped so far as duplicates, too late or on overflow.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    fn reset(&mut self) {
        self.frames.clear();
        self.highest = None;
        self.next_seq = None;
        self.playing = false;
        self.wait_since = None;
        self.dry = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr(seq: u16) -> MediaHeader {
        MediaHeader { seq, timestamp: u32::from(seq).wrapping_mul(960), marker: false }
    }

    fn payload(seq: u16) -> Vec<u8> {
        seq.to_be_bytes().to_vec()
    }

    /// Pops until `n` non-waiting results, returning the sequence numbers played
    /// (`None` for a missing frame).
    fn drain(jb: &mut JitterBuffer, mut now: u64, n: usize) -> Vec<Option<u16>> {
        let mut out = Vec::new();
        while out.len() < n {
            match jb.pop(now) {
                Playout::Frame(p) => out.push(Some(u16::from_be_bytes([p[0], p[1]]))),
                Playout::Missing { .. } => out.push(None),
                Playout::Waiting => assert!(now < 10_000, "never started"),
            }
            now += 20;
        }
        out
    }

    #[test]
    fn waits_for_target_delay() {
        let mut jb = JitterBuffer::new(60);
        assert_eq!(jb.pop(0), Playout::Waiting);
        jb.push(hdr(5), payload(5), 100);
        assert_eq!(jb.pop(120), Playout::Waiting);
        assert_eq!(jb.pop(140), Playout::Waiting);
        assert_eq!(jb.pop(160), Playout::Frame(payload(5)));
        assert!(jb.is_playing());
    }

    #[test]
    fn reorders_shuffled_packets() {
        let order = [3u16, 0, 4, 1, 7, 2, 6, 5, 9, 8];
        let mut jb = JitterBuffer::new(40);
        for (i, &s) in order.iter().enumerate() {
            jb.push(hdr(s), payload(s), i as u64);
        }
        let played = drain(&mut jb, 40, 10);
        assert_eq!(played, (0..10).map(Some).collect::<Vec<_>>());
    }

    #[test]
    fn handles_seq_wrap() {
        let seqs: Vec<u16> = (65530..=65535).chain(0..6).collect();
        let mut jb = JitterBuffer::new(0);
        // Deliver with some reordering across the wrap point.
        let mut shuffled = seqs.clone();
        shuffled.swap(5, 6); // 0 before 65535
        shuffled.swap(2, 8);
        for &s in &shuffled {
            jb.push(hdr(s), payload(s), 0);
        }
        let played = drain(&mut jb, 0, seqs.len());
        assert_eq!(played, seqs.iter().copied().map(Some).collect::<Vec<_>>());
    }

    #[test]
    fn drops_duplicates_and_played_frames() {
        let mut jb = JitterBuffer::new(0);
        jb.push(hdr(1), payload(1), 0);
        jb.push(hdr(1), vec![0xff], 0);
        jb.push(hdr(2), payload(2), 0);
        assert_eq!(jb.len(), 2);
        assert_eq!(jb.pop(0), Playout::Frame(payload(1)));
        jb.push(hdr(1), payload(1), 20); // already played
        jb.push(hdr(2), payload(2), 20); // duplicate still queued
        assert_eq!(jb.len(), 1);
        assert_eq!(jb.dropped(), 3);
        assert_eq!(jb.pop(20), Playout::Frame(payload(2)));
        assert!(matches!(jb.pop(40), Playout::Missing { fec_from: None }));
    }

    #[test]
    fn gap_reports_missing_with_fec_source() {
        let mut jb = JitterBuffer::new(0);
        for s in [10u16, 12, 13] {
            jb.push(hdr(s), payload(s), 0);
        }
        assert_eq!(jb.pop(0), Playout::Frame(payload(10)));
        assert_eq!(jb.pop(20), Playout::Missing { fec_from: Some(payload(12)) });
        assert_eq!(jb.pop(40), Playout::Frame(payload(12)));
        assert_eq!(jb.pop(60), Playout::Frame(payload(13)));
    }

    #[test]
    fn bounded_size_drops_oldest() {
        let mut jb = JitterBuffer::new(1_000_000);
        for s in 0..200u16 {
            jb.push(hdr(s), payload(s), u64::from(s) * 20);
            assert!(jb.len() <= MAX_FRAMES);
        }
        assert_eq!(jb.len(), MAX_FRAMES);
        assert_eq!(jb.dropped(), 150);
        let played = drain(&mut jb, 1_000_000, 3);
        assert_eq!(played, vec![Some(150), Some(151), Some(152)]);
    }

    #[test]
    fn rebuffers_after_running_dry() {
        let mut jb = JitterBuffer::new(40);
        jb.push(hdr(0), payload(0), 0);
        assert_eq!(jb.pop(40), Playout::Frame(payload(0)));
        let mut now = 60;
        for _ in 1..DRY_LIMIT_FRAMES {
            assert!(matches!(jb.pop(now), Playout::Missing { .. }));
            now += 20;
        }
        assert_eq!(jb.pop(now), Playout::Waiting);
        assert!(!jb.is_playing());
        // Stale packet from before is still refused; a new one re-buffers.
        jb.push(hdr(0), payload(0), now);
        assert!(jb.is_empty());
        jb.push(hdr(20), payload(20), now);
        assert_eq!(jb.pop(now + 20), Playout::Waiting);
        assert_eq!(jb.pop(now + 40), Playout::Frame(payload(20)));
    }

    #[test]
    fn large_jump_is_skipped_and_restart_resets() {
        let mut jb = JitterBuffer::new(0);
        jb.push(hdr(100), payload(100), 0);
        assert_eq!(jb.pop(0), Playout::Frame(payload(100)));
        jb.push(hdr(5000), payload(5000), 20);
        assert_eq!(jb.pop(20), Playout::Frame(payload(5000)));
        // Sender restarted from seq 0 with the marker bit.
        let mut h = hdr(0);
        h.marker = true;
        jb.push(h, payload(0), 40);
        assert_eq!(jb.pop(40), Playout::Frame(payload(0)));
    }
}
