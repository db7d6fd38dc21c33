//! Audio outputs consuming 48 kHz mono frames.

use std::fmt;
use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;
use std::str::FromStr;

use crate::device::AudioDevices;
use crate::{MediaError, SAMPLE_RATE};

const SINK_FORMS: &str = "expected wav:PATH, null, speaker or speaker:NAME";

/// Which audio output to use. Parses from and displays as `wav:/path/x.wav`, `null`,
/// `speaker` (the default output device) or `speaker:NAME` (a named one; see
/// [`AudioDevices::open_output`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkSpec {
    /// Write a 48 kHz mono 16-bit WAV file.
    Wav(PathBuf),
    /// Discard audio.
    Null,
    /// A loudspeaker: the default output device (`None`) or the one with this name.
    Speaker(Option<String>),
}

fn invalid(input: &str, reason: &str) -> MediaError {
    MediaError::InvalidSpec { what: "audio sink", input: input.to_owned(), reason: reason.to_owned() }
}

impl FromStr for SinkSpec {
    type Err = MediaError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            None => match s {
                "null" => Ok(SinkSpec::Null),
                "speaker" => Ok(SinkSpec::Speaker(None)),
                "wav" => Err(invalid(s, "missing file path, e.g. wav:/path/to/out.wav")),
                _ => Err(invalid(s, SINK_FORMS)),
            },
            Some(("wav", "")) => Err(invalid(s, "missing file path, e.g. wav:/path/to/out.wav")),
            Some(("wav", path)) => Ok(SinkSpec::Wav(PathBuf::from(path))),
            Some(("speaker", "")) => Err(invalid(s, "missing device name, e.g. speaker:default (or plain speaker)")),
            Some(("speaker", name)) => Ok(SinkSpec::Speaker(Some(name.to_owned()))),
            Some(_) => Err(invalid(s, SINK_FORMS)),
        }
    }
}

impl fmt::Display for SinkSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SinkSpec::Wav(path) => write!(f, "wav:{}", path.display()),
            SinkSpec::Null => f.write_str("null"),
            SinkSpec::Speaker(None) => f.write_str("speaker"),
            SinkSpec::Speaker(Some(name)) => write!(f, "speaker:{name}"),
        }
    }
}

/// A consumer of audio frames.
pub trait FrameSink: Send {
    /// Writes one frame of samples (normally [`crate::FRAME_SAMPLES`]).
    fn write_frame(&mut self, pcm: &[i16]) -> Result<(), MediaError>;
    /// Flushes and closes the output (for WAV, finalizes the header). Calling it again is
    /// a no-op; writing afterwards is an error.
    fn finish(&mut self) -> Result<(), MediaError>;
}

/// Opens the audio output described by `spec`; a loudspeaker through `devices`.
///
/// Fails if the WAV file cannot be created, and for [`SinkSpec::Speaker`] when `devices`
/// cannot open it (always so with [`NoDevices`](crate::device::NoDevices)), with
/// [`MediaError::NoAudioDevice`].
pub fn open_sink(spec: &SinkSpec, devices: &dyn AudioDevices) -> Result<Box<dyn FrameSink>, MediaError> {
    match spec {
        SinkSpec::Wav(path) => Ok(Box::new(WavSink::create(path.clone())?)),
        SinkSpec::Null => Ok(Box::new(NullSink)),
        SinkSpec::Speaker(name) => devices.open_output(name.as_deref()),
    }
}

/// Discards all audio.
#[derive(Debug, Clone, Copy, Default)]
pub struct NullSink;

impl FrameSink for NullSink {
    fn write_frame(&mut self, _pcm: &[i16]) -> Result<(), MediaError> {
        Ok(())
    }

    fn finish(&mut self) -> Result<(), MediaError> {
        Ok(())
    }
}

/// Writes a 48 kHz mono 16-bit WAV file.
pub struct WavSink {
    path: PathBuf,
    writer: Option<hound::WavWriter<BufWriter<File>>>,
}

impl fmt::Debug for WavSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WavSink").field("path", &self.path).field("finished", &self.writer.is_none()).finish()
    }
}

impl WavSink {
    /// Creates (or truncates) the file at `path`.
    pub fn create(path: PathBuf) -> Result<Self, MediaError> {
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: SAMPLE_RATE,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        match hound::WavWriter::create(&path, spec) {
            Ok(w) => Ok(WavSink { path, writer: Some(w) }),
            Err(source) => Err(MediaError::Wav { path, source }),
        }
    }

    fn err(&self, source: hound::Error) -> MediaError {
        MediaError::Wav { path: self.path.clone(), source }
    }
}

impl FrameSink for WavSink {
    fn write_frame(&mut self, pcm: &[i16]) -> Result<(), MediaError> {
        let Some(writer) = self.writer.as_mut() else {
            return Err(MediaError::SinkFinished);
        };
        for chunk in pcm.chunks(4096) {
            // chunk.len() <= 4096, so the cast cannot truncate.
            let mut w = writer.get_i16_writer(chunk.len() as u32);
            for &s in chunk {
                w.write_sample(s);
            }
            if let Err(e) = w.flush() {
                return Err(MediaError::Wav { path: self.path.clone(), source: e });
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), MediaError> {
        match self.writer.take() {
            Some(w) => w.finalize().map_err(|e| self.err(e)),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::NoDevices;
    use crate::source::{open_source, SourceSpec};
    use crate::FRAME_SAMPLES;

    #[test]
    fn parse_and_display() {
        for s in ["wav:/tmp/out.wav", "null", "speaker", "speaker:hw:CARD=0,DEV=3", "speaker:HDMI 1"] {
            let spec: SinkSpec = s.parse().unwrap();
            assert_eq!(spec.to_string(), s);
            assert_eq!(spec.to_string().parse::<SinkSpec>().unwrap(), spec);
        }
        assert_eq!("speaker".parse::<SinkSpec>().unwrap(), SinkSpec::Speaker(None));
        assert_eq!("speaker:default".parse::<SinkSpec>().unwrap(), SinkSpec::Speaker(Some("default".into())));
        let cases = [
            ("", SINK_FORMS),
            ("mic", SINK_FORMS),
            ("mic:x", SINK_FORMS),
            ("Speaker", SINK_FORMS),
            ("file:/x", SINK_FORMS),
            ("speaker:", "missing device name"),
            ("wav", "missing file path"),
            ("wav:", "missing file path"),
        ];
        for (input, needle) in cases {
            let err = input.parse::<SinkSpec>().unwrap_err().to_string();
            assert!(err.contains(needle), "{input:?} -> {err}");
            assert!(err.starts_with("invalid audio sink"), "{input:?} -> {err}");
        }
    }

    /// `speaker` specs go to the devices given, with their name; others never do.
    #[test]
    fn speaker_goes_to_the_devices() {
        let devices = crate::device::tests::Recording::default();
        let mut speaker = open_sink(&SinkSpec::Speaker(None), &devices).unwrap();
        speaker.write_frame(&[0; FRAME_SAMPLES]).unwrap();
        assert!(open_sink(&SinkSpec::Speaker(Some("HDMI 1".into())), &devices).is_ok());
        assert!(open_sink(&SinkSpec::Null, &devices).is_ok());
        assert_eq!(devices.opened(), vec!["output default".to_owned(), "output HDMI 1".to_owned()]);

        let err = open_sink(&SinkSpec::Speaker(None), &NoDevices).err().unwrap();
        assert!(matches!(err, MediaError::NoAudioDevice(_)));
        assert_eq!(
            err.to_string(),
            "no audio output device: this build has no audio device support; use wav:PATH or null"
        );
    }

    #[test]
    fn wav_sink_to_wav_source_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rt.wav");
        let spec = SinkSpec::Wav(path.clone());
        let mut sink = open_sink(&spec, &NoDevices).unwrap();
        let mut tone = open_source(&SourceSpec::Tone(523.25), &NoDevices).unwrap();
        let mut written = Vec::new();
        for _ in 0..25 {
            let f = tone.next_frame();
            sink.write_frame(&f).unwrap();
            written.extend(f);
        }
        sink.finish().unwrap();
        sink.finish().unwrap();
        assert!(matches!(sink.write_frame(&[0; 4]), Err(MediaError::SinkFinished)));

        let reader = hound::WavReader::open(&path).unwrap();
        assert_eq!(reader.spec().sample_rate, SAMPLE_RATE);
        assert_eq!(reader.spec().channels, 1);
        assert_eq!(reader.len() as usize, written.len());

        let mut src = open_source(&SourceSpec::Wav(path), &NoDevices).unwrap();
        let mut read = Vec::new();
        for _ in 0..26 {
            read.extend(src.next_frame());
        }
        assert_eq!(&read[..written.len()], &written[..], "bit-exact at 48 kHz");
        assert!(read[written.len()..].iter().all(|&s| s == 0));
        assert_eq!(read.len(), 26 * FRAME_SAMPLES);
    }

    #[test]
    fn unwritable_path_is_an_error() {
        let err = open_sink(&SinkSpec::Wav("/nonexistent-dir/x.wav".into()), &NoDevices).err().unwrap();
        assert!(err.to_string().contains("/nonexistent-dir/x.wav"), "{err}");
    }
}
