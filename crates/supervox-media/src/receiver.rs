//! Receiving side: jitter buffer + playout engine + decoder + call-quality statistics and
//! receiver reports.

use crate::codec::{Decoder, LOOKAHEAD_MS};
use crate::jitter::{FixedDelay, JitterBuffer};
use crate::packet::{decode_packet, Incoming};
use crate::playout::{Adjust, PlayoutEngine};
use crate::report::{Echo, ReceiverReport};
use crate::stats::StatsTracker;
use crate::{MediaError, FRAME_MS};

/// Depth of the Tox-like baseline buffer: three 20 ms packets.
pub const BASELINE_DELAY_MS: u64 = 3 * FRAME_MS;

/// Call-quality statistics of one incoming stream.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ReceiveStats {
    /// Well-formed media packets received (duplicates included).
    pub packets_received: u64,
    /// Frames handed to playout (decoded, FEC-recovered and concealed).
    pub frames_played: u64,
    /// Frames synthesised by packet loss concealment (lost frames, and frames inserted
    /// while waiting for a late packet or growing the delay).
    pub frames_concealed: u64,
    /// Lost frames recovered from the next packet's in-band FEC.
    pub frames_recovered_fec: u64,
    /// Lost frames restored whole from a copy in a later packet (audio redundancy).
    pub frames_recovered_redundancy: u64,
    /// Cumulative network packet loss in percent, from sequence gaps (RFC 3550).
    pub loss_pct: f64,
    /// Frames whose packet was missing at their playout time (lost or late) in percent of
    /// frames due, before recovery from redundancy copies or FEC.
    pub loss_before_fec_pct: f64,
    /// Frames missing at their playout time and recovered neither from a redundancy copy
    /// nor by FEC, in percent of frames due: what the listener hears concealed.
    pub loss_after_fec_pct: f64,
    /// RFC 3550 interarrival jitter in milliseconds.
    pub jitter_ms: f64,
    /// Time the frame now playing spent in the receiver, from its arrival to its first
    /// sample being played, in ms (jitter buffer and decoded-audio buffer).
    pub playout_delay_ms: f64,
    /// Mean of `playout_delay_ms` over all decoded frames.
    pub mean_playout_delay_ms: f64,
    /// Current target delay of the jitter buffer (slack behind the fastest path), in ms.
    pub target_delay_ms: f64,
    /// Packets dropped because they arrived after their playout time.
    pub packets_late: u64,
}

/// Jitter buffer, playout engine, Opus decoder and statistics for one incoming stream.
#[derive(Debug)]
pub struct MediaReceiver {
    engine: PlayoutEngine,
    decoder: Decoder,
    tracker: StatsTracker,
    /// Last report received from the peer (its `report_ts`) and when, for the echo.
    peer_report: Option<(u32, u64)>,
}

impl MediaReceiver {
    /// Creates a receiver with the adaptive jitter buffer (target from the 95th
    /// percentile of arrival delay, 10..=500 ms), time stretching and FEC recovery;
    /// `initial_delay_ms` is the target until measurements replace it.
    pub fn new(initial_delay_ms: u64) -> Result<Self, MediaError> {
        Self::with_engine(PlayoutEngine::new(JitterBuffer::adaptive(initial_delay_ms), Adjust::Stretch, true))
    }

    /// Creates the Tox-like baseline receiver: a fixed 3-packet (60 ms) buffer moved by
    /// whole frames, FEC recovery off (lost frames are concealed).
    pub fn baseline() -> Result<Self, MediaError> {
        let jitter = JitterBuffer::with_policy(Box::new(FixedDelay(BASELINE_DELAY_MS)));
        Self::with_engine(PlayoutEngine::new(jitter, Adjust::WholeFrames, false))
    }

    /// Creates a receiver around a custom jitter buffer (e.g. another delay policy), with
    /// time stretching and FEC recovery.
    pub fn with_jitter_buffer(jitter: JitterBuffer) -> Result<Self, MediaError> {
        Self::with_engine(PlayoutEngine::new(jitter, Adjust::Stretch, true))
    }

    /// Creates a receiver around a configured playout engine.
    pub fn with_engine(engine: PlayoutEngine) -> Result<Self, MediaError> {
        Ok(MediaReceiver { engine, decoder: Decoder::new()?, tracker: StatsTracker::default(), peer_report: None })
    }

    /// Accepts one decrypted packet received at `now_ms`: audio goes to the jitter
    /// buffer (`Ok(None)`); a receiver report from the peer is remembered for the RTT
    /// echo in [`Self::make_report`] and returned, to be handed to
    /// [`crate::sender::MediaSender::on_report`]. Malformed packets are rejected with an
    /// error and leave the state untouched.
    pub fn on_packet(&mut self, plaintext: &[u8], now_ms: u64) -> Result<Option<ReceiverReport>, MediaError> {
        match decode_packet(plaintext)? {
            Incoming::Audio(a) => {
                self.tracker.on_packet(&a.header, now_ms);
                let jitter = self.engine.jitter_mut();
                jitter.push(a.header, a.payload.to_vec(), now_ms);
                for (i, copy) in a.redundant.iter().enumerate().filter(|(_, c)| !c.is_empty()) {
                    jitter.push_redundant(a.header, i + 1, copy.to_vec(), now_ms);
                }
                Ok(None)
            }
            Incoming::Report(report) => {
                self.peer_report = Some((report.report_ts, now_ms));
                Ok(Some(report))
            }
        }
    }

    /// Produces the next 20 ms frame ([`crate::FRAME_SAMPLES`] samples) for playout:
    /// decoded, FEC-recovered, concealed or time-stretched; `None` while the jitter
    /// buffer is (re-)buffering. Call once per 20 ms.
    pub fn play(&mut self, now_ms: u64) -> Option<Vec<i16>> {
        self.engine.tick(&mut self.decoder, now_ms)
    }

    /// Builds a receiver report (plaintext, to send on the media path about once a
    /// second). Starts a new fraction-lost interval.
    pub fn make_report(&mut self, now_ms: u64) -> Vec<u8> {
        let echo = self
            .peer_report
            .map(|(ts, at)| Echo { ts, delay_ms: now_ms.saturating_sub(at).min(u64::from(u32::MAX)) as u32 });
        ReceiverReport {
            fraction_lost_q8: self.tracker.take_fraction_lost_q8(),
            cumulative_lost: self.tracker.cumulative_lost(),
            highest_seq: self.tracker.highest_ext_seq(),
            jitter_ts: self.tracker.jitter_ticks(),
            report_ts: now_ms as u32,
            echo,
        }
        .encode()
    }

    /// Current statistics.
    pub fn stats(&self) -> ReceiveStats {
        let c = self.engine.counters();
        let due = (c.frames_decoded + c.frames_missing) as f64;
        let pct = |n: u64| if due > 0.0 { n as f64 * 100.0 / due } else { 0.0 };
        ReceiveStats {
            packets_received: self.tracker.received(),
            frames_played: c.frames_played,
            frames_concealed: c.frames_concealed,
            frames_recovered_fec: c.frames_recovered_fec,
            frames_recovered_redundancy: c.frames_recovered_redundancy,
            loss_pct: self.tracker.loss_pct(),
            loss_before_fec_pct: pct(c.frames_missing + c.frames_recovered_redundancy),
            loss_after_fec_pct: pct(c.frames_missing - c.frames_recovered_fec),
            jitter_ms: self.tracker.jitter_ms(),
            playout_delay_ms: self.engine.playout_delay_ms(),
            mean_playout_delay_ms: self.engine.mean_playout_delay_ms(),
            target_delay_ms: self.engine.jitter().target_delay_ms() as f64,
            packets_late: self.engine.jitter().late(),
        }
    }

    /// Mouth-to-ear delay added by the media pipeline on top of the network, in ms:
    /// framing (one frame), codec look-ahead and the mean playout delay.
    pub fn pipeline_delay_ms(&self) -> f64 {
        FRAME_MS as f64 + LOOKAHEAD_MS + self.engine.mean_playout_delay_ms()
    }

    /// E-model (G.107) MOS estimate for this stream given the media path's round-trip
    /// time: one-way delay `rtt_ms / 2` plus [`Self::pipeline_delay_ms`], loss after FEC.
    pub fn mos(&self, rtt_ms: f64) -> f64 {
        crate::quality::mos_estimate(rtt_ms, self.pipeline_delay_ms(), self.stats().loss_after_fec_pct)
    }

    /// The jitter buffer, for inspection.
    pub fn jitter_buffer(&self) -> &JitterBuffer {
        self.engine.jitter()
    }

    /// The playout engine, for inspection.
    pub fn engine(&self) -> &PlayoutEngine {
        &self.engine
    }
}
