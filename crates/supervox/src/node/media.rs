//! The audio side of one connected call: source → encoder → packets out,
//! packets in → jitter buffer → decoder → sink, paced by the 20 ms clock.

use anyhow::{Context, Result};
use supervox_media::receiver::MediaReceiver;
use supervox_media::sender::MediaSender;
use supervox_media::sink::{open_sink, FrameSink, SinkSpec};
use supervox_media::source::{open_source, FrameSource, SourceSpec};

/// Jitter buffer target on a clean link (the adaptive buffer replaces this).
pub const TARGET_DELAY_MS: u64 = 60;

/// Media state of one call.
pub struct CallMedia {
    source: Box<dyn FrameSource>,
    sink: Box<dyn FrameSink>,
    sender: MediaSender,
    receiver: MediaReceiver,
    sink_error: Option<String>,
}

/// Figures for the `call_ended` event.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallFigures {
    /// Frames we sent.
    pub frames_sent: u64,
    /// Media packets that arrived.
    pub frames_received: u64,
    /// Loss seen by our receiver, percent.
    pub loss_pct: f64,
    /// RFC 3550 interarrival jitter, ms.
    pub jitter_ms: f64,
}

impl CallMedia {
    /// Open the source and sink of a call.
    pub fn open(input: &SourceSpec, output: &SinkSpec) -> Result<Self> {
        Ok(Self {
            source: open_source(input).with_context(|| format!("input {input}"))?,
            sink: open_sink(output).with_context(|| format!("output {output}"))?,
            sender: MediaSender::new()?,
            receiver: MediaReceiver::new(TARGET_DELAY_MS)?,
            sink_error: None,
        })
    }

    /// Capture and encode the next 20 ms frame; returns the media plaintext.
    pub fn next_packet(&mut self) -> Option<Vec<u8>> {
        let pcm = self.source.next_frame();
        match self.sender.next_packet(&pcm) {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::warn!("encode failed: {e}");
                None
            }
        }
    }

    /// A media packet arrived.
    pub fn on_packet(&mut self, plaintext: &[u8], now_ms: u64) {
        if let Err(e) = self.receiver.on_packet(plaintext, now_ms) {
            tracing::debug!("media packet dropped: {e}");
        }
    }

    /// Play out one 20 ms frame (if the jitter buffer has started).
    pub fn play(&mut self, now_ms: u64) {
        if let Some(pcm) = self.receiver.play(now_ms) {
            if self.sink_error.is_none() {
                if let Err(e) = self.sink.write_frame(&pcm) {
                    tracing::warn!("audio output failed: {e}");
                    self.sink_error = Some(e.to_string());
                }
            }
        }
    }

    /// Close the sink and report the figures.
    pub fn finish(&mut self) -> CallFigures {
        if let Err(e) = self.sink.finish() {
            tracing::warn!("closing audio output failed: {e}");
        }
        self.figures()
    }

    /// The figures so far.
    pub fn figures(&self) -> CallFigures {
        let s = self.receiver.stats();
        CallFigures {
            frames_sent: self.sender.frames_sent(),
            frames_received: s.packets_received,
            loss_pct: s.loss_pct,
            jitter_ms: s.jitter_ms,
        }
    }
}

/// Mouth-to-ear delay our pipeline adds besides the network: one frame of
/// capture, the jitter buffer target and Opus look-ahead.
const PIPELINE_DELAY_MS: f64 = supervox_media::FRAME_MS as f64 + TARGET_DELAY_MS as f64 + 6.5;

/// E-model MOS estimate of a call from its measured figures.
pub fn mos(rtt_ms: f64, f: &CallFigures) -> f64 {
    supervox_media::quality::mos_estimate(rtt_ms, PIPELINE_DELAY_MS, f.loss_pct)
}
