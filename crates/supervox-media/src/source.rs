//! Audio inputs producing 20 ms mono frames at 48 kHz.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::device::AudioDevices;
use crate::wav_reader::WavSource;
use crate::{MediaError, FRAME_SAMPLES, SAMPLE_RATE};

/// Peak amplitude of generated tones as a fraction of full scale.
pub const TONE_AMPLITUDE: f64 = 0.3;

const SOURCE_FORMS: &str = "expected tone:HZ, wav:PATH, silence, mic or mic:NAME";

/// Which audio input to use. Parses from and displays as `tone:440`, `wav:/path/x.wav`,
/// `silence`, `mic` (the default input device) or `mic:NAME` (a named one, e.g.
/// `mic:hw:CARD=1,DEV=0`; see [`AudioDevices::open_input`]).
#[derive(Debug, Clone, PartialEq)]
pub enum SourceSpec {
    /// A continuous sine tone at the given frequency in Hz.
    Tone(f32),
    /// Samples from a WAV file, then silence once it ends.
    Wav(PathBuf),
    /// Digital silence.
    Silence,
    /// A microphone: the default input device (`None`) or the one with this name.
    Mic(Option<String>),
}

fn invalid(input: &str, reason: impl Into<String>) -> MediaError {
    MediaError::InvalidSpec { what: "audio source", input: input.to_owned(), reason: reason.into() }
}

/// Checks a tone frequency: finite, positive and below the Nyquist frequency.
fn check_tone(hz: f32) -> Result<(), String> {
    let nyquist = (SAMPLE_RATE / 2) as f32;
    if hz.is_finite() && hz > 0.0 && hz < nyquist {
        Ok(())
    } else {
        Err(format!("tone frequency must be between 0 and {nyquist} Hz (exclusive), got {hz}"))
    }
}

impl FromStr for SourceSpec {
    type Err = MediaError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            None => match s {
                "silence" => Ok(SourceSpec::Silence),
                "mic" => Ok(SourceSpec::Mic(None)),
                "tone" => Err(invalid(s, "missing frequency, e.g. tone:440")),
                "wav" => Err(invalid(s, "missing file path, e.g. wav:/path/to/file.wav")),
                _ => Err(invalid(s, SOURCE_FORMS)),
            },
            Some(("tone", hz)) => {
                let hz: f32 =
                    hz.trim().parse().map_err(|_| invalid(s, format!("tone frequency {hz:?} is not a number")))?;
                check_tone(hz).map_err(|r| invalid(s, r))?;
                Ok(SourceSpec::Tone(hz))
            }
            Some(("wav", "")) => Err(invalid(s, "missing file path, e.g. wav:/path/to/file.wav")),
            Some(("wav", path)) => Ok(SourceSpec::Wav(PathBuf::from(path))),
            Some(("mic", "")) => Err(invalid(s, "missing device name, e.g. mic:default (or plain mic)")),
            Some(("mic", name)) => Ok(SourceSpec::Mic(Some(name.to_owned()))),
            Some(_) => Err(invalid(s, SOURCE_FORMS)),
        }
    }
}

impl fmt::Display for SourceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceSpec::Tone(hz) => write!(f, "tone:{hz}"),
            SourceSpec::Wav(path) => write!(f, "wav:{}", path.display()),
            SourceSpec::Silence => f.write_str("silence"),
            SourceSpec::Mic(None) => f.write_str("mic"),
            SourceSpec::Mic(Some(name)) => write!(f, "mic:{name}"),
        }
    }
}

/// A producer of audio frames.
pub trait FrameSource: Send {
    /// Returns the next frame: always exactly [`FRAME_SAMPLES`] samples.
    fn next_frame(&mut self) -> Vec<i16>;
}

/// Opens the audio input described by `spec`; a microphone through `devices`.
///
/// Fails for an unreadable or unsupported WAV file, an invalid tone frequency, and for
/// [`SourceSpec::Mic`] when `devices` cannot open it (always so with
/// [`NoDevices`](crate::device::NoDevices)), with [`MediaError::NoAudioDevice`].
pub fn open_source(spec: &SourceSpec, devices: &dyn AudioDevices) -> Result<Box<dyn FrameSource>, MediaError> {
    match spec {
        SourceSpec::Tone(hz) => {
            check_tone(*hz).map_err(|r| invalid(&spec.to_string(), r))?;
            Ok(Box::new(ToneSource::new(*hz)))
        }
        SourceSpec::Wav(path) => Ok(Box::new(WavSource::open(path)?)),
        SourceSpec::Silence => Ok(Box::new(SilenceSource)),
        SourceSpec::Mic(name) => devices.open_input(name.as_deref()),
    }
}

/// Continuous-phase sine tone at [`TONE_AMPLITUDE`] of full scale.
#[derive(Debug, Clone)]
pub struct ToneSource {
    /// Phase in cycles, kept in [0, 1).
    phase: f64,
    /// Phase increment per sample in cycles.
    step: f64,
}

impl ToneSource {
    /// Creates a tone generator at `hz`.
    pub fn new(hz: f32) -> Self {
        ToneSource { phase: 0.0, step: f64::from(hz) / f64::from(SAMPLE_RATE) }
    }
}

impl FrameSource for ToneSource {
    fn next_frame(&mut self) -> Vec<i16> {
        let amp = TONE_AMPLITUDE * f64::from(i16::MAX);
        (0..FRAME_SAMPLES)
            .map(|_| {
                let v = (self.phase * std::f64::consts::TAU).sin() * amp;
                self.phase = (self.phase + self.step).fract();
                v.round() as i16
            })
            .collect()
    }
}

/// Digital silence.
#[derive(Debug, Clone, Copy, Default)]
pub struct SilenceSource;

impl FrameSource for SilenceSource {
    fn next_frame(&mut self) -> Vec<i16> {
        vec![0; FRAME_SAMPLES]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::NoDevices;

    #[test]
    fn parse_and_display_round_trip() {
        for s in ["tone:440", "tone:440.5", "wav:/tmp/x y.wav", "silence", "mic", "mic:hw:CARD=1,DEV=0", "mic:USB Mic"]
        {
            let spec: SourceSpec = s.parse().unwrap();
            assert_eq!(spec.to_string(), s);
            assert_eq!(spec.to_string().parse::<SourceSpec>().unwrap(), spec);
        }
        assert_eq!("tone:440".parse::<SourceSpec>().unwrap(), SourceSpec::Tone(440.0));
        assert_eq!("wav:a:b.wav".parse::<SourceSpec>().unwrap(), SourceSpec::Wav("a:b.wav".into()));
        assert_eq!("mic".parse::<SourceSpec>().unwrap(), SourceSpec::Mic(None));
        assert_eq!("mic:default".parse::<SourceSpec>().unwrap(), SourceSpec::Mic(Some("default".into())));
        assert_eq!(
            "mic:plughw:CARD=0,DEV=0".parse::<SourceSpec>().unwrap(),
            SourceSpec::Mic(Some("plughw:CARD=0,DEV=0".into()))
        );
    }

    #[test]
    fn parse_errors_are_clear() {
        let cases = [
            ("", SOURCE_FORMS),
            ("speaker", SOURCE_FORMS),
            ("speaker:x", SOURCE_FORMS),
            ("Mic", SOURCE_FORMS),
            ("foo:bar", SOURCE_FORMS),
            ("mic:", "missing device name"),
            ("tone", "missing frequency"),
            ("tone:abc", "\"abc\" is not a number"),
            ("tone:-5", "between 0 and 24000"),
            ("tone:30000", "between 0 and 24000"),
            ("tone:NaN", "between 0 and 24000"),
            ("wav:", "missing file path"),
            ("wav", "missing file path"),
        ];
        for (input, needle) in cases {
            let err = input.parse::<SourceSpec>().unwrap_err().to_string();
            assert!(err.contains(needle), "{input:?} -> {err}");
            assert!(err.contains("invalid audio source"), "{input:?} -> {err}");
        }
    }

    /// `mic` specs go to the devices given, with their name; everything else never does.
    #[test]
    fn mic_goes_to_the_devices() {
        let devices = crate::device::tests::Recording::default();
        let mut mic = open_source(&SourceSpec::Mic(None), &devices).unwrap();
        assert_eq!(mic.next_frame(), vec![7; FRAME_SAMPLES], "the devices' source");
        assert!(open_source(&SourceSpec::Mic(Some("hw:CARD=1".into())), &devices).is_ok());
        assert!(open_source(&SourceSpec::Silence, &devices).is_ok());
        assert!(open_source(&SourceSpec::Tone(440.0), &devices).is_ok());
        assert_eq!(devices.opened(), vec!["input default".to_owned(), "input hw:CARD=1".to_owned()]);

        let err = open_source(&SourceSpec::Mic(None), &NoDevices).err().unwrap();
        assert!(matches!(err, MediaError::NoAudioDevice(_)));
        assert_eq!(
            err.to_string(),
            "no audio input device: this build has no audio device support; use tone:HZ, wav:PATH or silence"
        );
        assert!(open_source(&SourceSpec::Tone(f32::INFINITY), &NoDevices).is_err());
        assert!(open_source(&SourceSpec::Wav("/nonexistent/x.wav".into()), &NoDevices).is_err());
    }

    #[test]
    fn tone_is_continuous_and_scaled() {
        let mut src = open_source(&SourceSpec::Tone(440.0), &NoDevices).unwrap();
        let mut all = Vec::new();
        for _ in 0..50 {
            let f = src.next_frame();
            assert_eq!(f.len(), FRAME_SAMPLES);
            all.extend(f);
        }
        let peak = all.iter().map(|s| s.unsigned_abs()).max().unwrap();
        assert!((9800..=9831).contains(&peak), "peak {peak}");
        // No discontinuity: consecutive samples differ by at most 2*pi*f/fs*A (+ rounding).
        let max_step = all.windows(2).map(|w| (w[1] - w[0]).abs()).max().unwrap();
        assert!(max_step <= 567, "max step {max_step}");
        let freq = crate::analysis::dominant_frequency(&all, SAMPLE_RATE).unwrap();
        assert!((freq - 440.0).abs() < 0.5, "{freq}");
        let mut silence = open_source(&SourceSpec::Silence, &NoDevices).unwrap();
        assert_eq!(silence.next_frame(), vec![0; FRAME_SAMPLES]);
    }
}
