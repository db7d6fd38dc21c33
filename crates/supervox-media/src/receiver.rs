//! Receiving side: jitter buffer + decoder + call-quality statistics.

use crate::codec::Decoder;
use crate::fec::packet_has_fec;
use crate::jitter::{JitterBuffer, Playout};
use crate::packet::decode_media;
use crate::stats::StatsTracker;
use crate::{MediaError, FRAME_SAMPLES};

/// Call-quality statistics of one incoming stream.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ReceiveStats {
    /// Well-formed media packets received (duplicates included).
    pub packets_received: u64,
    /// Frames handed to playout (decoded, FEC-recovered and concealed).
    pub frames_played: u64,
    /// Frames synthesised by packet loss concealment.
    pub frames_concealed: u64,
    /// Lost frames recovered from the next packet's in-band FEC.
    pub frames_recovered_fec: u64,
    /// Cumulative packet loss in percent, from sequence gaps (RFC 3550 style).
    pub loss_pct: f64,
    /// RFC 3550 interarrival jitter in milliseconds.
    pub jitter_ms: f64,
}

/// Jitter buffer, Opus decoder and statistics for one incoming stream.
#[derive(Debug)]
pub struct MediaReceiver {
    jitter: JitterBuffer,
    decoder: Decoder,
    tracker: StatsTracker,
    frames_played: u64,
    frames_concealed: u64,
    frames_recovered_fec: u64,
}

impl MediaReceiver {
    /// Creates a receiver whose jitter buffer holds packets `target_delay_ms` before
    /// playout starts.
    pub fn new(target_delay_ms: u64) -> Result<Self, MediaError> {
        Self::with_jitter_buffer(JitterBuffer::new(target_delay_ms))
    }

    /// Creates a receiver around a custom jitter buffer (e.g. another delay policy).
    pub fn with_jitter_buffer(jitter: JitterBuffer) -> Result<Self, MediaError> {
        Ok(MediaReceiver {
            jitter,
            decoder: Decoder::new()?,
            tracker: StatsTracker::default(),
            frames_played: 0,
            frames_concealed: 0,
            frames_recovered_fec: 0,
        })
    }

    /// Accepts one decrypted media packet received at `now_ms`. Malformed packets are
    /// rejected with an error and leave the state untouched.
    pub fn on_packet(&mut self, plaintext: &[u8], now_ms: u64) -> Result<(), MediaError> {
        let (header, payload) = decode_media(plaintext)?;
        self.tracker.on_packet(&header, now_ms);
        self.jitter.push(header, payload.to_vec(), now_ms);
        Ok(())
    }

    /// Produces the next 20 ms frame ([`FRAME_SAMPLES`] samples) for playout, decoded,
    /// FEC-recovered or concealed; `None` while the jitter buffer is (re-)buffering.
    pub fn play(&mut self, now_ms: u64) -> Option<Vec<i16>> {
        let frame = match self.jitter.pop(now_ms) {
            Playout::Waiting => return None,
            Playout::Frame(payload) => match self.decoder.decode(Some(&payload)) {
                Ok(pcm) => pcm,
                Err(e) => {
                    tracing::debug!(error = %e, "undecodable opus packet, concealing");
                    self.conceal()
                }
            },
            Playout::Missing { fec_from: Some(next) } if packet_has_fec(&next) => {
                match self.decoder.decode_fec(&next) {
                    Ok(pcm) => {
                        self.frames_recovered_fec += 1;
                        pcm
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "FEC recovery failed, concealing");
                        self.conceal()
                    }
                }
            }
            Playout::Missing { .. } => self.conceal(),
        };
        self.frames_played += 1;
        Some(frame)
    }

    /// Current statistics.
    pub fn stats(&self) -> ReceiveStats {
        ReceiveStats {
            packets_received: self.tracker.received(),
            frames_played: self.frames_played,
            frames_concealed: self.frames_concealed,
            frames_recovered_fec: self.frames_recovered_fec,
            loss_pct: self.tracker.loss_pct(),
            jitter_ms: self.tracker.jitter_ms(),
        }
    }

    /// The jitter buffer, for inspection.
    pub fn jitter_buffer(&self) -> &JitterBuffer {
        &self.jitter
    }

    fn conceal(&mut self) -> Vec<i16> {
        self.frames_concealed += 1;
        self.decoder.decode(None).unwrap_or_else(|e| {
            tracing::debug!(error = %e, "concealment failed, playing silence");
            vec![0; FRAME_SAMPLES]
        })
    }
}
