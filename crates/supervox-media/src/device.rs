//! The seam to audio devices (the `mic` and `speaker` specs).
//!
//! This crate opens no device: a microphone or loudspeaker needs a thread and an audio
//! host, which the sans-IO pipeline must not own. [`open_source`](crate::source::open_source)
//! and [`open_sink`](crate::sink::open_sink) hand `mic` and `speaker` specs to an
//! [`AudioDevices`] given by the caller: the `supervox-audio` crate implements it with
//! cpal; [`NoDevices`] is for programs and builds without device support and fails with a
//! clear error.

use crate::sink::FrameSink;
use crate::source::FrameSource;
use crate::MediaError;

/// Opens live audio devices as 48 kHz mono frame sources and sinks.
pub trait AudioDevices: Sync {
    /// Opens the default microphone (`None`) or the input device called `name`.
    ///
    /// Fails with [`MediaError::NoAudioDevice`] (ending in [`Direction::alternatives`])
    /// when there is no such device or it cannot be opened.
    fn open_input(&self, name: Option<&str>) -> Result<Box<dyn FrameSource>, MediaError>;

    /// Opens the default loudspeaker (`None`) or the output device called `name`; fails as
    /// [`AudioDevices::open_input`] does.
    fn open_output(&self, name: Option<&str>) -> Result<Box<dyn FrameSink>, MediaError>;
}

/// No audio device support: every open fails with "this build has no audio device support".
#[derive(Debug, Clone, Copy, Default)]
pub struct NoDevices;

impl NoDevices {
    /// The error every open returns for `dir`.
    pub fn error(dir: Direction) -> MediaError {
        dir.error(format!("no audio {} device: this build has no audio device support", dir.noun()))
    }
}

impl AudioDevices for NoDevices {
    fn open_input(&self, _name: Option<&str>) -> Result<Box<dyn FrameSource>, MediaError> {
        Err(Self::error(Direction::Input))
    }

    fn open_output(&self, _name: Option<&str>) -> Result<Box<dyn FrameSink>, MediaError> {
        Err(Self::error(Direction::Output))
    }
}

/// Which way audio flows through a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Capture (microphone).
    Input,
    /// Playback (loudspeaker).
    Output,
}

impl Direction {
    /// `input` or `output`, as error messages say it.
    pub fn noun(self) -> &'static str {
        match self {
            Direction::Input => "input",
            Direction::Output => "output",
        }
    }

    /// The spec's name: `mic` or `speaker`.
    pub fn short(self) -> &'static str {
        match self {
            Direction::Input => "mic",
            Direction::Output => "speaker",
        }
    }

    /// What to use instead of a missing device.
    pub fn alternatives(self) -> &'static str {
        match self {
            Direction::Input => "use tone:HZ, wav:PATH or silence",
            Direction::Output => "use wav:PATH or null",
        }
    }

    /// A [`MediaError::NoAudioDevice`] with `msg` followed by the alternatives.
    pub fn error(self, msg: String) -> MediaError {
        MediaError::NoAudioDevice(format!("{msg}; {}", self.alternatives()))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Devices that open a constant source and a null sink and remember what was asked.
    #[derive(Default)]
    pub(crate) struct Recording(Mutex<Vec<String>>);

    impl Recording {
        /// `"input NAME"` / `"output NAME"` (`default` for no name) per open, in order.
        pub(crate) fn opened(&self) -> Vec<String> {
            self.0.lock().map(|v| v.clone()).unwrap_or_default()
        }

        fn note(&self, dir: Direction, name: Option<&str>) {
            if let Ok(mut v) = self.0.lock() {
                v.push(format!("{} {}", dir.noun(), name.unwrap_or("default")));
            }
        }
    }

    struct Constant;

    impl FrameSource for Constant {
        fn next_frame(&mut self) -> Vec<i16> {
            vec![7; crate::FRAME_SAMPLES]
        }
    }

    impl AudioDevices for Recording {
        fn open_input(&self, name: Option<&str>) -> Result<Box<dyn FrameSource>, MediaError> {
            self.note(Direction::Input, name);
            Ok(Box::new(Constant))
        }

        fn open_output(&self, name: Option<&str>) -> Result<Box<dyn FrameSink>, MediaError> {
            self.note(Direction::Output, name);
            Ok(Box::new(crate::sink::NullSink))
        }
    }

    #[test]
    fn no_devices_fails_clearly() {
        let err = NoDevices.open_input(None).err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("no audio input device: this build has no audio device support; use tone:HZ, wav:PATH or silence")
        );
        let err = NoDevices.open_output(Some("hw:0")).err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("no audio output device: this build has no audio device support; use wav:PATH or null")
        );
    }
}
