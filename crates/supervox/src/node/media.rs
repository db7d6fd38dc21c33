//! The audio side of one connected call: source → encoder → packets out,
//! packets in → jitter buffer → decoder → sink, paced by the 20 ms clock;
//! RTCP-like receiver reports once a second drive the sender's FEC.

use anyhow::{Context, Result};
use supervox_audio::Devices;
use supervox_media::receiver::MediaReceiver;
use supervox_media::sender::MediaSender;
use supervox_media::sink::{open_sink, FrameSink, SinkSpec};
use supervox_media::source::{open_source, FrameSource, SourceSpec};

/// Initial jitter buffer target; the adaptive buffer moves it.
pub const INITIAL_DELAY_MS: u64 = 60;
/// Receiver reports are sent this often.
pub const REPORT_INTERVAL_MS: u64 = 1_000;

/// Jitter buffer choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum JitterBufferMode {
    /// NetEq-like adaptive target with time-stretching (the default).
    Adaptive,
    /// A fixed 3-packet (60 ms) buffer, as Tox ships: the comparison baseline.
    Tox,
}

/// How a node runs its media pipeline.
#[derive(Debug, Clone, Copy)]
pub struct MediaConfig {
    /// Jitter buffer.
    pub jitter_buffer: JitterBufferMode,
    /// Opus in-band FEC driven by reported loss (off: never sent, never used).
    pub fec: bool,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self { jitter_buffer: JitterBufferMode::Adaptive, fec: true }
    }
}

/// Media state of one call.
pub struct CallMedia {
    source: Box<dyn FrameSource>,
    sink: Box<dyn FrameSink>,
    sender: MediaSender,
    receiver: MediaReceiver,
    cfg: MediaConfig,
    next_report_ms: u64,
    sink_error: Option<String>,
    muted: bool,
}

// Sources and sinks are trait objects without Debug.
impl std::fmt::Debug for CallMedia {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallMedia")
            .field("cfg", &self.cfg)
            .field("next_report_ms", &self.next_report_ms)
            .field("sink_error", &self.sink_error)
            .finish_non_exhaustive()
    }
}

/// Figures for `call_ended` and the live status.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallFigures {
    /// Frames we sent.
    pub frames_sent: u64,
    /// Media packets that arrived.
    pub frames_received: u64,
    /// Network loss seen by our receiver (RFC 3550), percent.
    pub loss_pct: f64,
    /// Frames lost before FEC recovery, percent.
    pub loss_before_fec_pct: f64,
    /// Frames lost after FEC recovery (concealed), percent.
    pub loss_after_fec_pct: f64,
    /// RFC 3550 interarrival jitter, ms.
    pub jitter_ms: f64,
    /// Frames concealed.
    pub frames_concealed: u64,
    /// Frames recovered from FEC.
    pub frames_recovered_fec: u64,
    /// Frames restored from redundancy copies in later packets.
    pub frames_recovered_redundancy: u64,
    /// Earlier frames our packets repeat (driven by the loss the peer reports).
    pub redundancy: usize,
    /// Current jitter buffer playout delay, ms.
    pub playout_delay_ms: f64,
    /// Mean playout delay over the call, ms.
    pub mean_playout_delay_ms: f64,
    /// Current jitter buffer target, ms.
    pub target_delay_ms: f64,
    /// Round trip from receiver reports, ms.
    pub rtt_ms: Option<f64>,
    /// The Opus expected-loss setting the reports drove us to.
    pub fec_expected_loss_pct: u8,
}

impl CallMedia {
    /// Open the source and sink of a call (`mic` and `speaker` through `supervox-audio`).
    pub fn open(input: &SourceSpec, output: &SinkSpec, cfg: MediaConfig, now_ms: u64) -> Result<Self> {
        let receiver = match cfg.jitter_buffer {
            JitterBufferMode::Adaptive => MediaReceiver::new(INITIAL_DELAY_MS)?,
            JitterBufferMode::Tox => MediaReceiver::baseline()?,
        };
        let mut sender = MediaSender::new()?;
        if !cfg.fec {
            sender.set_expected_loss(0)?;
        }
        Ok(Self {
            source: open_source(input, &Devices).with_context(|| format!("input {input}"))?,
            sink: open_sink(output, &Devices).with_context(|| format!("output {output}"))?,
            sender,
            receiver,
            cfg,
            next_report_ms: now_ms + REPORT_INTERVAL_MS,
            sink_error: None,
            muted: false,
        })
    }

    /// Send silence instead of the input (or the input again).
    pub fn set_muted(&mut self, muted: bool) {
        self.muted = muted;
    }

    /// Whether the input is muted.
    pub fn muted(&self) -> bool {
        self.muted
    }

    /// Capture and encode the next 20 ms frame; returns the media plaintext.
    pub fn next_packet(&mut self) -> Option<Vec<u8>> {
        let mut pcm = self.source.next_frame();
        if self.muted {
            // The source still runs (a file or device keeps its pace); the peer hears silence.
            pcm.iter_mut().for_each(|x| *x = 0);
        }
        match self.sender.next_packet(&pcm) {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::warn!("encode failed: {e}");
                None
            }
        }
    }

    /// A receiver report to send, when one is due.
    pub fn next_report(&mut self, now_ms: u64) -> Option<Vec<u8>> {
        if now_ms < self.next_report_ms {
            return None;
        }
        self.next_report_ms = now_ms + REPORT_INTERVAL_MS;
        Some(self.receiver.make_report(now_ms))
    }

    /// A media packet (audio or report) arrived.
    pub fn on_packet(&mut self, plaintext: &[u8], now_ms: u64) {
        match self.receiver.on_packet(plaintext, now_ms) {
            // With FEC off the sender must not raise its expected loss.
            Ok(Some(report)) if self.cfg.fec => {
                if let Err(e) = self.sender.on_report(&report, now_ms) {
                    tracing::debug!("report not applied: {e}");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::debug!("media packet dropped: {e}"),
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
            loss_before_fec_pct: s.loss_before_fec_pct,
            loss_after_fec_pct: s.loss_after_fec_pct,
            jitter_ms: s.jitter_ms,
            frames_concealed: s.frames_concealed,
            frames_recovered_fec: s.frames_recovered_fec,
            frames_recovered_redundancy: s.frames_recovered_redundancy,
            redundancy: self.sender.redundancy(),
            playout_delay_ms: s.playout_delay_ms,
            mean_playout_delay_ms: s.mean_playout_delay_ms,
            target_delay_ms: s.target_delay_ms,
            rtt_ms: self.sender.rtt_ms(),
            fec_expected_loss_pct: self.sender.expected_loss_pct(),
        }
    }

    /// E-model MOS estimate from what this side receives.
    pub fn mos(&self, rtt_ms: f64) -> f64 {
        self.receiver.mos(rtt_ms)
    }
}
