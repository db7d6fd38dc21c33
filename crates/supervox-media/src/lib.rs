//! Sans-IO media pipeline for supervox.
//!
//! Audio is Opus, 48 kHz mono, 20 ms frames ([`FRAME_SAMPLES`] samples), with in-band FEC.
//! Nothing in this crate opens sockets, spawns threads or reads clocks: callers pass the
//! current time as `now_ms` and move bytes themselves.
//!
//! * [`source`] / [`sink`] — audio inputs (tone, WAV, silence) and outputs (WAV, null);
//!   microphones and loudspeakers come from an [`device::AudioDevices`] the caller passes
//!   (the `supervox-audio` crate's cpal devices).
//! * [`codec`] — Opus encoder/decoder wrappers (PLC and FEC recovery); [`fec`] detects
//!   packets carrying in-band FEC.
//! * [`packet`] — the RTP-like plaintext media payload format.
//! * [`jitter`] — jitter buffer ordering packets for playout, with adaptive target delay
//!   ([`jitter::policy`]) and click-free time stretching ([`jitter::stretch`]).
//! * [`playout`] — playout engine steering the delay to the target, with concealment and
//!   FEC recovery.
//! * [`report`] — RTCP-like receiver reports (loss, jitter, RTT echo).
//! * [`sender`] / [`receiver`] — convenience pipelines with statistics.
//! * [`analysis`] — RMS and dominant-frequency measurement for tests and benches.

#![forbid(unsafe_code)]

pub mod analysis;
pub mod codec;
pub mod device;
mod error;
pub mod fec;
pub mod jitter;
pub mod packet;
pub mod playout;
pub mod quality;
pub mod receiver;
pub mod report;
pub mod sender;
pub mod sink;
pub mod source;
mod stats;
mod wav_reader;

pub use error::MediaError;

/// Audio sample rate used everywhere in supervox, in Hz.
pub const SAMPLE_RATE: u32 = 48_000;
/// Samples in one 20 ms mono frame at [`SAMPLE_RATE`].
pub const FRAME_SAMPLES: usize = 960;
/// Duration of one frame in milliseconds.
pub const FRAME_MS: u64 = 20;

#[cfg(test)]
mod pipeline_tests;
#[cfg(test)]
mod proptests;
