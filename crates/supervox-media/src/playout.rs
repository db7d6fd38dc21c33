//! Playout engine: turns the jitter buffer's frames into exactly one 20 ms frame of PCM
//! per tick while steering the playout delay to the policy's target.
//!
//! Decoded audio goes through a small *sync buffer*; each tick takes [`FRAME_SAMPLES`]
//! from it, fetching and decoding the next frame whenever fewer remain. The slack of the
//! next fetch (see [`crate::jitter`]) is predicted each tick and compared with the
//! target:
//!
//! * too little slack (packets would arrive late): **expand** — by one pitch period
//!   ([`stretch::expand`]) when a little is missing, or by a 20 ms Opus concealment
//!   frame appended to the decoded audio when much is missing (grows fast: the decoder
//!   continues the waveform and blends into the next real frame itself);
//! * at least a frame too much: **compress** by one pitch period per tick
//!   ([`stretch::compress`]) in quiet audio (pauses); voiced speech too once the
//!   excess reaches [`NORMAL_MS`] or has lasted [`PATIENCE_MS`], anything from
//!   [`FORCE_MS`];
//! * within the band but with decoded audio waiting beyond the frame being played:
//!   trim it in quiet audio only, which lowers the delay for free.
//!
//! In [`Adjust::WholeFrames`] mode (the Tox-like baseline) the playout point instead
//! moves by dropping or concealing whole frames.

use crate::fec::packet_has_fec;
use crate::jitter::stretch::{self, Urgency};
use crate::jitter::{JitterBuffer, Playout};
use crate::{codec, MediaError, FRAME_MS, FRAME_SAMPLES};

/// Samples per millisecond.
const SPMS: f64 = crate::SAMPLE_RATE as f64 / 1000.0;
/// Slack within this many ms under the target counts as on target.
const TOLERANCE_MS: f64 = 2.0;
/// Shortfall from which a whole concealment frame is inserted instead of a period.
const PLC_EXPAND_MS: f64 = 10.0;
/// Excess over the target from which voiced (periodic) speech may be compressed too;
/// below it only quiet audio is, so a delay that is a frame or two too long waits for
/// the next pause instead of warping speech.
const NORMAL_MS: f64 = 40.0;
/// How long an excess may wait for quiet audio before voiced speech is compressed too
/// (speech pauses come every second or two; a steady tone never has any), in ms.
const PATIENCE_MS: u64 = 2_000;
/// Excess over the band beyond which compression is forced whatever the audio.
const FORCE_MS: f64 = 60.0;
/// Decoded audio beyond the current frame that is worth trimming, in samples (5 ms).
const TRIM_MIN: usize = FRAME_SAMPLES / 4;

/// Decodes frames for the playout engine.
pub trait FrameDecoder {
    /// Decodes one payload into [`FRAME_SAMPLES`] samples.
    fn decode(&mut self, payload: &[u8]) -> Result<Vec<i16>, MediaError>;
    /// Synthesises one frame continuing the previous audio (packet loss concealment).
    fn conceal(&mut self) -> Result<Vec<i16>, MediaError>;
    /// Recovers the frame before `next` from `next`'s in-band FEC; `None` if it has none.
    fn recover(&mut self, next: &[u8]) -> Option<Vec<i16>>;
}

impl FrameDecoder for codec::Decoder {
    fn decode(&mut self, payload: &[u8]) -> Result<Vec<i16>, MediaError> {
        codec::Decoder::decode(self, Some(payload))
    }

    fn conceal(&mut self) -> Result<Vec<i16>, MediaError> {
        codec::Decoder::decode(self, None)
    }

    fn recover(&mut self, next: &[u8]) -> Option<Vec<i16>> {
        if !packet_has_fec(next) {
            return None;
        }
        self.decode_fec(next).map_err(|e| tracing::debug!(error = %e, "FEC recovery failed")).ok()
    }
}

/// How the playout point is moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adjust {
    /// Pitch-synchronous time stretching and concealment frames (default).
    Stretch,
    /// Whole frames dropped or concealed (Tox-like baseline).
    WholeFrames,
}

/// Counters kept by the engine.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PlayoutCounters {
    /// Ticks that produced audio.
    pub frames_played: u64,
    /// Frames decoded from their own packet.
    pub frames_decoded: u64,
    /// Frames due for playout whose packet was missing (lost or late), before FEC.
    pub frames_missing: u64,
    /// Missing frames recovered from the next packet's in-band FEC.
    pub frames_recovered_fec: u64,
    /// Frames whose own packet was missing, played from a copy in a later packet's
    /// redundancy block (counted in `frames_decoded`, not in `frames_missing`).
    pub frames_recovered_redundancy: u64,
    /// Frames synthesised by loss concealment (missing, or inserted while waiting).
    pub frames_concealed: u64,
    /// Concealment frames inserted without a missing frame (late packet, delay growth).
    pub frames_expanded: u64,
    /// Whole frames dropped to reduce the delay ([`Adjust::WholeFrames`]).
    pub frames_dropped: u64,
    /// Samples removed by time compression.
    pub samples_compressed: u64,
    /// Samples inserted by time expansion (pitch periods, not concealment frames).
    pub samples_expanded: u64,
}

/// What one tick did, for tests and diagnostics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TickLog {
    /// Extended sequence numbers of frames decoded this tick.
    pub decoded: Vec<i64>,
    /// Extended sequence numbers declared missing this tick.
    pub missing: Vec<i64>,
    /// Concealment frames inserted without a missing frame.
    pub expanded: u32,
}

/// Sync buffer, delay control and counters between a [`JitterBuffer`] and a decoder.
#[derive(Debug)]
pub struct PlayoutEngine {
    jitter: JitterBuffer,
    adjust: Adjust,
    fec: bool,
    sync: Vec<i16>,
    /// Media time (ms) just after the last frame appended to `sync`.
    end_media_ms: Option<f64>,
    counters: PlayoutCounters,
    last_delay_ms: f64,
    /// Since when the delay has been a frame or more above the target.
    over_since: Option<u64>,
    delay_sum_ms: f64,
    delay_count: u64,
    log: TickLog,
}

impl PlayoutEngine {
    /// Creates an engine around `jitter`; `fec` enables recovery from in-band FEC.
    pub fn new(jitter: JitterBuffer, adjust: Adjust, fec: bool) -> Self {
        PlayoutEngine {
            jitter,
            adjust,
            fec,
            sync: Vec::with_capacity(4 * FRAME_SAMPLES),
            end_media_ms: None,
            counters: PlayoutCounters::default(),
            last_delay_ms: 0.0,
            over_since: None,
            delay_sum_ms: 0.0,
            delay_count: 0,
            log: TickLog::default(),
        }
    }

    /// The jitter buffer.
    pub fn jitter(&self) -> &JitterBuffer {
        &self.jitter
    }

    /// The jitter buffer, mutably (to push packets).
    pub fn jitter_mut(&mut self) -> &mut JitterBuffer {
        &mut self.jitter
    }

    /// Counters so far.
    pub fn counters(&self) -> PlayoutCounters {
        self.counters
    }

    /// What the last tick did.
    pub fn last_tick(&self) -> &TickLog {
        &self.log
    }

    /// Time the most recently decoded frame spends in the receiver, from its arrival to
    /// its first sample being played, in ms.
    pub fn playout_delay_ms(&self) -> f64 {
        self.last_delay_ms
    }

    /// Mean of [`Self::playout_delay_ms`] over all decoded frames.
    pub fn mean_playout_delay_ms(&self) -> f64 {
        if self.delay_count == 0 {
            0.0
        } else {
            self.delay_sum_ms / self.delay_count as f64
        }
    }

    /// Decoded audio waiting beyond the current tick's output, in samples.
    pub fn sync_len(&self) -> usize {
        self.sync.len()
    }

    /// Produces the next [`FRAME_SAMPLES`] samples, or `None` while (re-)buffering.
    pub fn tick(&mut self, dec: &mut dyn FrameDecoder, now_ms: u64) -> Option<Vec<i16>> {
        self.log = TickLog::default();
        if !self.fill(dec, now_ms) && self.sync.is_empty() {
            return None;
        }
        if self.jitter.is_playing() {
            self.steer(dec, now_ms);
            self.fill(dec, now_ms);
        }
        if self.sync.len() < FRAME_SAMPLES {
            self.sync.resize(FRAME_SAMPLES, 0);
        }
        self.counters.frames_played += 1;
        Some(self.sync.drain(..FRAME_SAMPLES).collect())
    }

    /// Fetches frames until a tick's worth is decoded; `false` if the buffer is waiting.
    fn fill(&mut self, dec: &mut dyn FrameDecoder, now_ms: u64) -> bool {
        while self.sync.len() < FRAME_SAMPLES {
            match self.jitter.pop(now_ms) {
                Playout::Waiting => {
                    self.end_media_ms = None;
                    return false;
                }
                Playout::Frame(f) => {
                    let delay = now_ms as f64 + self.sync.len() as f64 / SPMS - f.arrival_ms as f64;
                    self.last_delay_ms = delay;
                    self.delay_sum_ms += delay;
                    self.delay_count += 1;
                    let pcm = match dec.decode(&f.payload) {
                        Ok(pcm) => {
                            self.counters.frames_decoded += 1;
                            pcm
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "undecodable opus packet, concealing");
                            self.conceal(dec)
                        }
                    };
                    if f.redundant {
                        self.counters.frames_recovered_redundancy += 1;
                    }
                    self.log.decoded.push(f.seq);
                    self.end_media_ms = Some(f.media_ms + FRAME_MS as f64);
                    self.append(pcm);
                }
                Playout::Missing { seq, fec_from } => {
                    tracing::trace!(now_ms, seq, "missing");
                    self.counters.frames_missing += 1;
                    self.log.missing.push(seq);
                    let recovered = match fec_from {
                        Some(next) if self.fec => dec.recover(&next),
                        _ => None,
                    };
                    let pcm = match recovered {
                        Some(pcm) => {
                            self.counters.frames_recovered_fec += 1;
                            pcm
                        }
                        None => self.conceal(dec),
                    };
                    self.end_media_ms = self.end_media_ms.map(|e| e + FRAME_MS as f64);
                    self.append(pcm);
                }
                Playout::Concealed { seq } => {
                    // The concealment frame inserted while waiting stood in for this one.
                    self.counters.frames_missing += 1;
                    self.counters.frames_expanded = self.counters.frames_expanded.saturating_sub(1);
                    self.log.missing.push(seq);
                    self.end_media_ms = self.end_media_ms.map(|e| e + FRAME_MS as f64);
                }
                Playout::Empty => {
                    tracing::trace!(now_ms, "empty: concealing");
                    self.insert_concealment(dec)
                }
            }
        }
        true
    }

    fn append(&mut self, mut pcm: Vec<i16>) {
        pcm.resize(FRAME_SAMPLES, 0);
        self.sync.extend_from_slice(&pcm);
    }

    fn conceal(&mut self, dec: &mut dyn FrameDecoder) -> Vec<i16> {
        self.counters.frames_concealed += 1;
        dec.conceal().unwrap_or_else(|e| {
            tracing::debug!(error = %e, "concealment failed, playing silence");
            vec![0; FRAME_SAMPLES]
        })
    }

    /// Appends a concealment frame that does not advance the media time (delay +20 ms).
    fn insert_concealment(&mut self, dec: &mut dyn FrameDecoder) {
        self.counters.frames_expanded += 1;
        self.log.expanded += 1;
        let pcm = self.conceal(dec);
        self.append(pcm);
    }

    /// Compares the next fetch's predicted slack with the target and moves the playout
    /// point by at most one step.
    fn steer(&mut self, dec: &mut dyn FrameDecoder, now_ms: u64) {
        let Some(end) = self.end_media_ms else {
            return;
        };
        let after = self.sync.len().saturating_sub(FRAME_SAMPLES);
        let ticks_ahead = 1 + after / FRAME_SAMPLES;
        let next_fetch = now_ms + FRAME_MS * ticks_ahead as u64;
        let Some(slack) = self.jitter.slack_ms(end, next_fetch) else {
            return;
        };
        let excess = slack - self.jitter.target_delay_ms() as f64;
        if excess < FRAME_MS as f64 - TOLERANCE_MS {
            self.over_since = None;
        }
        tracing::trace!(
            now_ms,
            slack,
            target = self.jitter.target_delay_ms(),
            sync = self.sync.len(),
            buffered = self.jitter.len(),
            "steer"
        );
        if excess < -TOLERANCE_MS {
            let plc = self.adjust == Adjust::WholeFrames || -excess >= PLC_EXPAND_MS;
            if plc || self.stretch_expand() == 0 {
                self.insert_concealment(dec);
            }
        } else if excess >= FRAME_MS as f64 - TOLERANCE_MS {
            match self.adjust {
                Adjust::WholeFrames => {
                    self.counters.frames_dropped += 1;
                    self.sync.drain(..FRAME_SAMPLES.min(self.sync.len()));
                }
                Adjust::Stretch => {
                    let since = *self.over_since.get_or_insert(now_ms);
                    let urgency = if excess >= FORCE_MS {
                        Urgency::Forced
                    } else if excess >= NORMAL_MS || now_ms.saturating_sub(since) >= PATIENCE_MS {
                        Urgency::Normal
                    } else {
                        Urgency::Quiet
                    };
                    self.stretch_compress(self.sync.len(), urgency);
                }
            }
        } else if self.adjust == Adjust::Stretch && after >= TRIM_MIN {
            self.stretch_compress(after, Urgency::Quiet);
        }
    }

    fn stretch_compress(&mut self, max_remove: usize, urgency: Urgency) -> usize {
        let n = stretch::compress(&mut self.sync, max_remove, urgency);
        self.counters.samples_compressed += n as u64;
        n
    }

    fn stretch_expand(&mut self) -> usize {
        let n = stretch::expand(&mut self.sync, stretch::MAX_LAG, Urgency::Normal);
        self.counters.samples_expanded += n as u64;
        n
    }
}
