//! The crate-wide error type.

use std::path::PathBuf;

/// Errors produced by the media pipeline.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// A source or sink specification string could not be parsed.
    #[error("invalid {what} {input:?}: {reason}")]
    InvalidSpec {
        /// What was being parsed ("audio source" or "audio sink").
        what: &'static str,
        /// The offending input.
        input: String,
        /// Why it was rejected, including the accepted forms.
        reason: String,
    },
    /// The requested audio device does not exist in this build.
    #[error("{0}")]
    NoAudioDevice(String),
    /// Reading or writing a WAV file failed.
    #[error("WAV file {}: {source}", path.display())]
    Wav {
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: hound::Error,
    },
    /// A WAV file uses a sample format this crate cannot read.
    #[error("WAV file {}: unsupported format: {reason}", path.display())]
    UnsupportedWav {
        /// The file concerned.
        path: PathBuf,
        /// What is unsupported.
        reason: String,
    },
    /// A sink was written to after [`crate::sink::FrameSink::finish`].
    #[error("audio sink already finished")]
    SinkFinished,
    /// A PCM frame did not have the expected number of samples.
    #[error("PCM frame has {got} samples, expected {expected}")]
    BadFrameLength {
        /// Required number of samples.
        expected: usize,
        /// Number of samples given.
        got: usize,
    },
    /// The Opus library reported an error.
    #[error("opus {op} failed: {source}")]
    Codec {
        /// The operation that failed ("encode", "decode", ...).
        op: &'static str,
        /// The underlying libopus error.
        #[source]
        source: opus::Error,
    },
    /// A media packet is shorter than its fixed header.
    #[error("media packet too short: {len} bytes, header needs {min}")]
    PacketTooShort {
        /// Length received.
        len: usize,
        /// Minimum length.
        min: usize,
    },
    /// A media packet carries an unknown version number.
    #[error("media packet has unsupported version {0} (expected {expected})", expected = crate::packet::VERSION)]
    BadVersion(u8),
    /// A receiver report was given where an audio packet was expected.
    #[error("packet is a receiver report, not audio")]
    NotAudio,
    /// A packet of another kind was given where a receiver report was expected.
    #[error("packet is not a receiver report")]
    NotReport,
    /// A media packet carries no Opus payload.
    #[error("media packet has an empty payload")]
    EmptyPayload,
    /// A media packet's payload exceeds the Opus maximum.
    #[error("media packet payload is {len} bytes, Opus maximum is {max}", max = crate::packet::MAX_PAYLOAD)]
    PayloadTooLarge {
        /// Payload length received.
        len: usize,
    },
    /// A media packet's redundancy block is malformed (bad count or lengths).
    #[error("media packet has a malformed redundancy block")]
    BadRedundancy,
}

impl MediaError {
    pub(crate) fn codec(op: &'static str) -> impl FnOnce(opus::Error) -> MediaError {
        move |source| MediaError::Codec { op, source }
    }
}
