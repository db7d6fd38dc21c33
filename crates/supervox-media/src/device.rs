//! Microphone and loudspeaker access (the `mic` and `speaker` specs).
//!
//! With the `audio-devices` cargo feature (on by default) devices are opened through
//! [cpal](https://docs.rs/cpal) (ALSA on Linux): the default device or a named one, in the
//! configuration closest to 48 kHz mono i16/f32 the device offers, converted to and from
//! the pipeline's 48 kHz mono ([`convert`]) and bridged to the 20 ms media clock through a
//! bounded [`ring::SampleRing`] of about [`RING_MS`] ms.
//!
//! Failures never panic or hang: a machine without sound hardware gets
//! [`MediaError::NoAudioDevice`] saying so (`no audio input device found (ALSA reports
//! none); use tone:HZ, wav:PATH or silence`), and a build without the feature says it has
//! no audio device support.
//!
//! The conversion and ring modules are plain sample processing and are always built.

pub mod convert;
pub mod ring;

#[cfg(feature = "audio-devices")]
mod backend;

use crate::sink::FrameSink;
use crate::source::FrameSource;
use crate::MediaError;

/// Capacity of the ring between a device callback and the media clock, in milliseconds.
pub const RING_MS: u32 = 200;

/// Which way audio flows through a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(feature = "audio-devices"), allow(dead_code))]
enum Direction {
    /// Capture (microphone).
    Input,
    /// Playback (loudspeaker).
    Output,
}

#[cfg_attr(not(feature = "audio-devices"), allow(dead_code))]
impl Direction {
    fn noun(self) -> &'static str {
        match self {
            Direction::Input => "input",
            Direction::Output => "output",
        }
    }

    fn short(self) -> &'static str {
        match self {
            Direction::Input => "mic",
            Direction::Output => "speaker",
        }
    }

    /// What to use instead of a missing device.
    fn alternatives(self) -> &'static str {
        match self {
            Direction::Input => "use tone:HZ, wav:PATH or silence",
            Direction::Output => "use wav:PATH or null",
        }
    }

    /// A [`MediaError::NoAudioDevice`] with `msg` followed by the alternatives.
    fn error(self, msg: String) -> MediaError {
        MediaError::NoAudioDevice(format!("{msg}; {}", self.alternatives()))
    }
}

/// Whether this build can open audio devices (the `audio-devices` feature).
pub const SUPPORTED: bool = cfg!(feature = "audio-devices");

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
        Err(unsupported(Direction::Input))
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
        Err(unsupported(Direction::Output))
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

#[cfg(not(feature = "audio-devices"))]
fn unsupported(dir: Direction) -> MediaError {
    dir.error(format!("no audio {} device: this build has no audio device support", dir.noun()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FRAME_SAMPLES;

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
}
