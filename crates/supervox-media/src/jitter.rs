//! Jitter buffer: orders received packets by sequence number, measures their arrival
//! delay, and hands them to playout one frame at a time.
//!
//! Each accepted packet's *transit* (arrival time minus media time, timestamps unwrapped
//! across the `u32` wrap) is compared with the smallest transit of the last
//! [`FASTEST_WINDOW_MS`] — the fastest recent packet. The difference, the relative
//! arrival delay, feeds a [`DelayPolicy`] ([`AdaptiveDelay`] by default in the receiver,
//! [`FixedDelay`] for the Tox-like baseline), which answers with a target delay.
//!
//! The *slack* of a frame is how far behind the fastest path it is fetched for decoding:
//! `now - media_time - fastest_transit`. A frame whose relative delay exceeds its slack
//! arrives too late. Playout starts once the first buffered frame's slack reaches the
//! target; the playout engine ([`crate::playout`]) then keeps the slack at the target by
//! stretching audio.
//!
//! [`JitterBuffer::pop`] yields the next sequence number ([`Playout::Frame`]), reports a
//! gap when later packets are already here ([`Playout::Missing`], with the following
//! packet for FEC recovery), or [`Playout::Empty`] when nothing is buffered — the next
//! packet may just be late, so the sequence does not advance. After
//! [`DRY_LIMIT_FRAMES`] empty pops playout stops ([`Playout::Waiting`]) and re-buffers.

pub mod policy;
pub mod stretch;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};

pub use policy::{AdaptiveConfig, AdaptiveDelay, DelayPolicy, FixedDelay};

use crate::packet::{extend_seq, MediaHeader};

/// Most frames held at once; on overflow the oldest is dropped.
pub const MAX_FRAMES: usize = 50;
/// Consecutive empty pops after which playout stops and re-buffers.
pub const DRY_LIMIT_FRAMES: u32 = 10;
/// A gap larger than this many frames in front of the playout point is skipped at once
/// instead of being played out frame by frame as [`Playout::Missing`].
pub const MAX_GAP_FRAMES: i64 = MAX_FRAMES as i64;
/// Window over which the fastest recent packet (smallest transit) is tracked, in ms.
pub const FASTEST_WINDOW_MS: u64 = 5_000;
/// A relative delay beyond this many ms means a new time base (sender restarted).
const TIMEBASE_JUMP_MS: f64 = 10_000.0;
/// A redundancy depth seen on arrivals keeps its reserve this long after the last packet
/// that carried it, in ms.
pub const REDUNDANCY_HOLD_MS: u64 = 3_000;
/// Bound on the fastest-path tracker's entries.
const MAX_TRANSITS: usize = 1024;
/// Media clock ticks per millisecond.
const TICKS_PER_MS: f64 = crate::SAMPLE_RATE as f64 / 1000.0;

/// A buffered packet handed to playout.
#[derive(Debug, Clone, PartialEq)]
pub struct Fetched {
    /// Extended (unwrapped) sequence number.
    pub seq: i64,
    /// Media time of the first sample, in ms (unwrapped timestamp / 48).
    pub media_ms: f64,
    /// When the packet arrived.
    pub arrival_ms: u64,
    /// The Opus payload.
    pub payload: Vec<u8>,
    /// Whether it came as a copy in a later packet's redundancy block (its own packet was
    /// lost or is late).
    pub redundant: bool,
}

/// What playout should do for the next frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Playout {
    /// The next frame.
    Frame(Fetched),
    /// The next frame is missing but later ones are here; `fec_from` is the payload of
    /// the packet right after it, if buffered, whose in-band FEC may recover it.
    Missing {
        /// Extended sequence number of the missing frame.
        seq: i64,
        /// Payload of the following packet, for FEC recovery.
        fec_from: Option<Vec<u8>>,
    },
    /// Playing, but nothing is buffered: the next frame is late or lost. The sequence
    /// does not advance.
    Empty,
    /// The next frame is missing, and its playout time was already filled by the
    /// concealment played for an [`Playout::Empty`] pop: later packets arrived, so the
    /// frames waited for were lost rather than late. Play nothing for it; fetch on.
    Concealed {
        /// Extended sequence number of the missing frame.
        seq: i64,
    },
    /// Not started yet, or drained and re-buffering: play nothing.
    Waiting,
}

#[derive(Debug, Clone)]
struct Held {
    media_ms: f64,
    arrival_ms: u64,
    payload: Vec<u8>,
    redundant: bool,
}

/// Sliding-window minimum of packet transit times.
#[derive(Debug, Default, Clone)]
struct FastestPath {
    /// (arrival ms, transit ms), transit strictly increasing front to back.
    window: VecDeque<(u64, f64)>,
}

impl FastestPath {
    fn observe(&mut self, now_ms: u64, transit: f64) {
        while self.window.back().is_some_and(|&(_, t)| t >= transit) {
            self.window.pop_back();
        }
        self.window.push_back((now_ms, transit));
        while self.window.len() > MAX_TRANSITS
            || self.window.front().is_some_and(|&(at, _)| at.saturating_add(FASTEST_WINDOW_MS) < now_ms)
        {
            self.window.pop_front();
        }
    }

    fn min(&self) -> Option<f64> {
        self.window.front().map(|&(_, t)| t)
    }
}

/// Reordering buffer of at most [`MAX_FRAMES`] frames with arrival-delay measurement.
#[derive(Debug)]
pub struct JitterBuffer {
    policy: Box<dyn DelayPolicy>,
    /// Buffered packets keyed by extended sequence number.
    frames: BTreeMap<i64, Held>,
    /// Highest extended sequence number seen, the reference for extending new ones.
    highest: Option<i64>,
    /// Last extended timestamp, the reference for unwrapping new ones.
    ts_ref: Option<i64>,
    fastest: FastestPath,
    /// Next extended sequence number to play; older packets are dropped on arrival.
    next_seq: Option<i64>,
    playing: bool,
    /// Consecutive pops that found the buffer empty.
    dry: u32,
    /// Empty pops since the sequence last advanced: concealment already played in
    /// place of frames that may turn out lost.
    filled: i64,
    dropped: u64,
    late: u64,
    skipped: u64,
    last_relative_delay: f64,
    /// Deepest redundancy (earlier frames repeated per packet) seen lately, and when.
    redundancy: usize,
    redundancy_at: u64,
}

/// Tolerance under the target at which playout may start, in ms.
pub const START_TOLERANCE_MS: f64 = 2.0;

impl JitterBuffer {
    /// Creates a buffer with a fixed target delay.
    pub fn new(target_delay_ms: u64) -> Self {
        Self::with_policy(Box::new(FixedDelay(target_delay_ms)))
    }

    /// Creates a buffer with the default adaptive policy starting at `initial_ms`.
    pub fn adaptive(initial_ms: u64) -> Self {
        Self::with_policy(Box::new(AdaptiveDelay::with_initial(initial_ms)))
    }

    /// Creates a buffer with a custom target-delay policy.
    pub fn with_policy(policy: Box<dyn DelayPolicy>) -> Self {
        JitterBuffer {
            policy,
            frames: BTreeMap::new(),
            highest: None,
            ts_ref: None,
            fastest: FastestPath::default(),
            next_seq: None,
            playing: false,
            dry: 0,
            filled: 0,
            dropped: 0,
            late: 0,
            skipped: 0,
            last_relative_delay: 0.0,
            redundancy: 0,
            redundancy_at: 0,
        }
    }

    /// Adds a received packet. Duplicates and packets whose turn has passed are dropped;
    /// when more than [`MAX_FRAMES`] are held the oldest is dropped.
    ///
    /// A packet with the marker bit whose sequence number lies in the already-played past,
    /// or far ahead, is taken as a restarted stream: the buffer starts over from it.
    pub fn push(&mut self, h: MediaHeader, payload: Vec<u8>, now_ms: u64) {
        let mut ext = match self.highest {
            Some(r) => extend_seq(r, h.seq),
            None => i64::from(h.seq),
        };
        let behind = self.next_seq.is_some_and(|next| ext < next);
        let far_ahead = self.highest.is_some_and(|hi| ext > hi + MAX_GAP_FRAMES);
        if h.marker && (behind || far_ahead) {
            tracing::debug!(seq = h.seq, "media stream restarted, resetting jitter buffer");
            self.reset();
            ext = i64::from(h.seq);
        } else if behind {
            self.dropped += 1;
            self.late += 1;
            return;
        }
        if self.frames.contains_key(&ext) {
            self.dropped += 1;
            return;
        }
        let ts = match self.ts_ref {
            Some(r) => r + i64::from(h.timestamp.wrapping_sub(r as u32) as i32),
            None => i64::from(h.timestamp),
        };
        self.ts_ref = Some(ts);
        let media_ms = ts as f64 / TICKS_PER_MS;
        let transit = now_ms as f64 - media_ms;
        if self.fastest.min().is_some_and(|m| (transit - m).abs() > TIMEBASE_JUMP_MS) {
            self.fastest = FastestPath::default();
        }
        self.fastest.observe(now_ms, transit);
        let relative = transit - self.fastest.min().unwrap_or(transit);
        self.last_relative_delay = relative;
        self.policy.on_arrival(relative, now_ms);
        if self.redundancy > 0 && now_ms.saturating_sub(self.redundancy_at) > REDUNDANCY_HOLD_MS {
            self.redundancy = 0;
        }
        self.frames.insert(ext, Held { media_ms, arrival_ms: now_ms, payload, redundant: false });
        self.highest = Some(self.highest.map_or(ext, |hi| hi.max(ext)));
        while self.frames.len() > MAX_FRAMES {
            self.frames.pop_first();
            self.dropped += 1;
        }
    }

    /// Adds the copy of an earlier frame carried in the redundancy block of the packet
    /// `carrier` (pushed first), `distance` frames before it. Used only if that frame is
    /// still to be played and not here yet; it does not count as an arrival for the delay
    /// measurement. While packets carry copies the target gets a reserve of `distance`
    /// frames (see [`Self::target_delay_ms`]) so that the copy is at hand in time.
    pub fn push_redundant(&mut self, carrier: MediaHeader, distance: usize, payload: Vec<u8>, now_ms: u64) {
        let (Some(hi), Some(ts_ref)) = (self.highest, self.ts_ref) else {
            return;
        };
        if distance == 0 || distance > crate::packet::MAX_REDUNDANCY {
            return;
        }
        if distance >= self.redundancy {
            self.redundancy = distance;
            self.redundancy_at = now_ms;
        }
        let ext = extend_seq(hi, carrier.seq) - distance as i64;
        if self.next_seq.is_some_and(|next| ext < next) || self.frames.contains_key(&ext) || ext > hi {
            return;
        }
        let ts = ts_ref + i64::from(carrier.timestamp.wrapping_sub(ts_ref as u32) as i32)
            - distance as i64 * crate::FRAME_SAMPLES as i64;
        let media_ms = ts as f64 / TICKS_PER_MS;
        self.frames.insert(ext, Held { media_ms, arrival_ms: now_ms, payload, redundant: true });
        while self.frames.len() > MAX_FRAMES {
            self.frames.pop_first();
            self.dropped += 1;
        }
    }

    /// Slack at `now_ms` of a frame with media time `media_ms`: how far behind the fastest
    /// recent path it would be played (see the module docs). `None` before any packet.
    pub fn slack_ms(&self, media_ms: f64, now_ms: u64) -> Option<f64> {
        self.fastest.min().map(|m| now_ms as f64 - media_ms - m)
    }

    /// Returns what to play next.
    pub fn pop(&mut self, now_ms: u64) -> Playout {
        if !self.playing {
            let Some((&first, held)) = self.frames.first_key_value() else {
                return Playout::Waiting;
            };
            let slack = self.slack_ms(held.media_ms, now_ms).unwrap_or(0.0);
            if slack < self.target_delay_ms() as f64 - START_TOLERANCE_MS {
                return Playout::Waiting;
            }
            self.playing = true;
            self.dry = 0;
            self.filled = 0;
            // Resume where we stopped if that packet is here, else at the first one.
            if self.next_seq.is_none_or(|n| !self.frames.contains_key(&n)) {
                self.next_seq = Some(first);
            }
        }
        let Some((&first, _)) = self.frames.first_key_value() else {
            self.dry += 1;
            if self.dry >= DRY_LIMIT_FRAMES {
                self.playing = false;
                self.dry = 0;
                self.filled = 0;
                return Playout::Waiting;
            }
            self.filled += 1;
            return Playout::Empty;
        };
        self.dry = 0;
        let mut next = self.next_seq.unwrap_or(first);
        if first - next > MAX_GAP_FRAMES || first < next {
            next = first;
        }
        // Never play further behind than the policy's maximum: skip such frames while
        // later ones are buffered.
        let limit = self.policy.max_delay_ms() as f64 + crate::FRAME_MS as f64;
        // Missing frames in front of such a frame would only make it later: jump to it.
        while let Some((&seq, held)) = self.frames.first_key_value() {
            if self.slack_ms(held.media_ms, now_ms).is_none_or(|s| s <= limit) {
                break;
            }
            if seq > next {
                self.skipped += (seq - next) as u64;
                next = seq;
            }
            if self.frames.len() == 1 {
                break;
            }
            self.frames.pop_first();
            self.dropped += 1;
            self.skipped += 1;
            next = seq + 1;
        }
        // Frames missing in front of the first buffered one, whose time the concealment
        // played while the buffer was empty already took: skip them (a late packet that
        // was waited for is the first one, and plays).
        if first > next && self.filled > 0 {
            self.filled -= 1;
            self.next_seq = Some(next + 1);
            return Playout::Concealed { seq: next };
        }
        self.filled = 0;
        self.next_seq = Some(next + 1);
        match self.frames.remove(&next) {
            Some(h) => Playout::Frame(Fetched {
                seq: next,
                media_ms: h.media_ms,
                arrival_ms: h.arrival_ms,
                payload: h.payload,
                redundant: h.redundant,
            }),
            None => Playout::Missing { seq: next, fec_from: self.frames.get(&(next + 1)).map(|h| h.payload.clone()) },
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

    /// Current target delay, in milliseconds: the policy's, plus one frame per earlier
    /// frame that arriving packets repeat (so the copy is here when its frame is due).
    pub fn target_delay_ms(&self) -> u64 {
        let reserve = self.redundancy as u64 * crate::FRAME_MS;
        (self.policy.target_delay_ms() + reserve).min(self.policy.max_delay_ms())
    }

    /// Earlier frames that arriving packets lately repeat (0 when they carry none).
    pub fn redundancy(&self) -> usize {
        self.redundancy
    }

    /// Relative arrival delay of the last accepted packet, in ms.
    pub fn last_relative_delay_ms(&self) -> f64 {
        self.last_relative_delay
    }

    /// Packets dropped so far as duplicates, too late or on overflow.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Packets dropped because they arrived after their turn to play.
    pub fn late(&self) -> u64 {
        self.late
    }

    /// Frames skipped because they would have played later than the policy's maximum.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Span of buffered media in ms (first to last buffered frame, inclusive).
    pub fn buffered_ms(&self) -> f64 {
        match (self.frames.first_key_value(), self.frames.last_key_value()) {
            (Some((_, a)), Some((_, b))) => b.media_ms - a.media_ms + crate::FRAME_MS as f64,
            _ => 0.0,
        }
    }

    fn reset(&mut self) {
        self.frames.clear();
        self.highest = None;
        self.ts_ref = None;
        self.fastest = FastestPath::default();
        self.next_seq = None;
        self.playing = false;
        self.dry = 0;
        self.filled = 0;
        self.redundancy = 0;
    }
}
