//! Microphone and loudspeaker access for supervox (the `mic` and `speaker` specs).
//!
//! [`Devices`] implements `supervox-media`'s [`AudioDevices`] seam, so
//! [`open_source`](supervox_media::source::open_source) and
//! [`open_sink`](supervox_media::sink::open_sink) open real devices through it. This is the
//! one supervox crate below the driver that spawns threads: the media pipeline stays
//! sans-IO.
//!
//! With the `audio-devices` cargo feature (on by default) devices are opened through
//! [cpal](https://docs.rs/cpal) (ALSA on Linux): the default device or a named one, in the
//! configuration closest to 48 kHz mono i16/f32 the device offers, converted to and from
//! the pipeline's 48 kHz mono ([`convert`]) and bridged to the 20 ms media clock through a
//! bounded [`ring::SampleRing`] of about [`RING_MS`] ms, one thread per open device.
//!
//! Failures never panic or hang: a machine without sound hardware gets
//! [`MediaError::NoAudioDevice`] saying so (`no audio input device found (ALSA reports
//! none); use tone:HZ, wav:PATH or silence`), and a build without the feature says it has
//! no audio device support (as [`NoDevices`] does).
//!
//! The conversion and ring modules are plain sample processing and are always built.

#![forbid(unsafe_code)]

pub mod convert;
pub mod ring;

#[cfg(feature = "audio-devices")]
mod backend;

use supervox_media::device::AudioDevices;
#[cfg(feature = "audio-devices")]
use supervox_media::device::Direction;
#[cfg(not(feature = "audio-devices"))]
use supervox_media::device::{Direction, NoDevices};
use supervox_media::sink::FrameSink;
use supervox_media::source::FrameSource;
use supervox_media::MediaError;

/// Capacity of the ring between a device callback and the media clock, in milliseconds.
pub const RING_MS: u32 = 200;

/// Whether this build can open audio devices (the `audio-devices` feature).
pub const SUPPORTED: bool = cfg!(feature = "audio-devices");

/// The system's audio devices, as `supervox-media` opens them for `mic` and `speaker`
/// specs: [`open_input`] and [`open_output`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Devices;

impl AudioDevices for Devices {
    fn open_input(&self, name: Option<&str>) -> Result<Box<dyn FrameSource>, MediaError> {
        open_input(name)
    }

    fn open_output(&self, name: Option<&str>) -> Result<Box<dyn FrameSink>, MediaError> {
        open_output(name)
    }
}

/// Opens the default microphone, or the input device called `name` (its identifier, e.g.
/// the ALSA PCM name `hw:CARD=0,DEV=0`, its description, or a unique part of either).
pub fn open_input(name: Option<&str>) -> Result<Box<dyn FrameSource>, MediaError> {
    #[cfg(feature = "audio-devices")]
    {
        Ok(Box::new(backend::DeviceSource::open(name)?))
    }
    #[cfg(not(feature = "audio-devices"))]
    {
        let _ = name;
        Err(NoDevices::error(Direction::Input))
    }
}

/// Opens the default loudspeaker, or the output device called `name` (matched as in
/// [`open_input`]).
pub fn open_output(name: Option<&str>) -> Result<Box<dyn FrameSink>, MediaError> {
    #[cfg(feature = "audio-devices")]
    {
        Ok(Box::new(backend::DeviceSink::open(name)?))
    }
    #[cfg(not(feature = "audio-devices"))]
    {
        let _ = name;
        Err(NoDevices::error(Direction::Output))
    }
}

/// Identifiers of the input devices the audio host lists (ALSA's `null` device
/// excluded); empty on a machine without sound hardware or a build without device support.
pub fn input_devices() -> Vec<String> {
    #[cfg(feature = "audio-devices")]
    {
        backend::device_ids(Direction::Input)
    }
    #[cfg(not(feature = "audio-devices"))]
    {
        Vec::new()
    }
}

/// Identifiers of the output devices the audio host lists (ALSA's `null` device
/// excluded); empty on a machine without sound hardware or a build without device support.
pub fn output_devices() -> Vec<String> {
    #[cfg(feature = "audio-devices")]
    {
        backend::device_ids(Direction::Output)
    }
    #[cfg(not(feature = "audio-devices"))]
    {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use supervox_media::sink::{open_sink, SinkSpec};
    use supervox_media::source::{open_source, SourceSpec};
    use supervox_media::FRAME_SAMPLES;

    const NO_INPUT: &str = "no audio input device found (ALSA reports none); use tone:HZ, wav:PATH or silence";
    const NO_OUTPUT: &str = "no audio output device found (ALSA reports none); use wav:PATH or null";

    /// On a machine without sound hardware (like CI) the default devices fail with the
    /// clear message; where devices exist they open and run.
    #[test]
    fn default_devices_open_or_fail_clearly() {
        if !SUPPORTED {
            let err = open_input(None).err().map(|e| e.to_string());
            assert_eq!(
                err.as_deref(),
                Some("no audio input device: this build has no audio device support; use tone:HZ, wav:PATH or silence")
            );
            let err = open_output(None).err().map(|e| e.to_string());
            assert_eq!(
                err.as_deref(),
                Some("no audio output device: this build has no audio device support; use wav:PATH or null")
            );
            return;
        }
        let headless = std::fs::read_to_string("/proc/asound/cards").map_or(true, |c| c.contains("no soundcards"))
            && input_devices().is_empty()
            && output_devices().is_empty();
        match open_input(None) {
            Err(err) if headless => {
                assert!(matches!(err, MediaError::NoAudioDevice(_)));
                assert_eq!(err.to_string(), NO_INPUT);
            }
            Err(err) => assert!(matches!(err, MediaError::NoAudioDevice(_)), "{err}"),
            Ok(mut mic) => {
                assert!(!headless, "a headless machine opened a microphone");
                assert_eq!(mic.next_frame().len(), FRAME_SAMPLES);
            }
        }
        match open_output(None) {
            Err(err) if headless => assert_eq!(err.to_string(), NO_OUTPUT),
            Err(err) => assert!(matches!(err, MediaError::NoAudioDevice(_)), "{err}"),
            Ok(mut speaker) => {
                assert!(!headless, "a headless machine opened a speaker");
                speaker.write_frame(&[0; FRAME_SAMPLES]).unwrap();
                speaker.finish().unwrap();
            }
        }
    }

    #[cfg(feature = "audio-devices")]
    #[test]
    fn unknown_device_names_are_clear_errors() {
        let err = open_input(Some("no-such-card-xyz")).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.starts_with("no audio input device named \"no-such-card-xyz\" (available: "), "{err}");
        assert!(err.ends_with("; use tone:HZ, wav:PATH or silence"), "{err}");
        let err = open_output(Some("no-such-card-xyz")).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.starts_with("no audio output device named \"no-such-card-xyz\""), "{err}");
        assert!(err.ends_with("; use wav:PATH or null"), "{err}");
    }

    /// On this project's headless build and CI machines (no sound card) `mic` fails with the
    /// clear message; see `default_devices_open_or_fail_clearly` for machines with sound
    /// hardware. (Moved from supervox-media's source tests with the devices.)
    #[test]
    fn mic_spec_without_a_device_is_a_clear_error() {
        if input_devices().is_empty() {
            let err = open_source(&SourceSpec::Mic(None), &Devices).err().unwrap();
            assert!(matches!(err, MediaError::NoAudioDevice(_)));
            let expected = if SUPPORTED {
                NO_INPUT
            } else {
                "no audio input device: this build has no audio device support; use tone:HZ, wav:PATH or silence"
            };
            assert_eq!(err.to_string(), expected);
        }
        let err = open_source(&SourceSpec::Mic(Some("no-such-device-xyz".into())), &Devices).err().unwrap();
        assert!(matches!(err, MediaError::NoAudioDevice(_)), "{err}");
        assert!(err.to_string().ends_with("use tone:HZ, wav:PATH or silence"), "{err}");
    }

    /// The same for `speaker`. (Moved from supervox-media's sink tests.)
    #[test]
    fn speaker_spec_without_a_device_is_a_clear_error() {
        if output_devices().is_empty() {
            let err = open_sink(&SinkSpec::Speaker(None), &Devices).err().unwrap();
            assert!(matches!(err, MediaError::NoAudioDevice(_)));
            let expected = if SUPPORTED {
                NO_OUTPUT
            } else {
                "no audio output device: this build has no audio device support; use wav:PATH or null"
            };
            assert_eq!(err.to_string(), expected);
        }
        let err = open_sink(&SinkSpec::Speaker(Some("no-such-device-xyz".into())), &Devices).err().unwrap();
        assert!(matches!(err, MediaError::NoAudioDevice(_)), "{err}");
        assert!(err.to_string().starts_with("no audio output device"), "{err}");
    }
}
