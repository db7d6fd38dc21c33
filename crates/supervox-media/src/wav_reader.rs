//! Streaming WAV file source: any channel count mixed to mono, any sample rate linearly
//! resampled to 48 kHz. Reads incrementally, so memory stays bounded for long files.

use std::path::{Path, PathBuf};

use crate::source::FrameSource;
use crate::{MediaError, FRAME_SAMPLES, SAMPLE_RATE};

type Samples = Box<dyn Iterator<Item = Result<f32, hound::Error>> + Send>;

/// Plays a WAV file, then silence forever.
pub(crate) struct WavSource {
    path: PathBuf,
    samples: Samples,
    channels: usize,
    in_rate: u64,
    /// Index of the next output sample (48 kHz).
    out_index: u64,
    /// Input (mono) sample index of `a`.
    base: u64,
    /// Mono input samples at `base` and `base + 1`.
    a: Option<f32>,
    b: Option<f32>,
}

impl WavSource {
    /// Opens `path`; supports integer PCM of 8 to 32 bits and 32-bit float.
    pub(crate) fn open(path: &Path) -> Result<Self, MediaError> {
        let wav_err = |source| MediaError::Wav { path: path.to_owned(), source };
        let reader = hound::WavReader::open(path).map_err(wav_err)?;
        let spec = reader.spec();
        let unsupported = |reason: String| MediaError::UnsupportedWav { path: path.to_owned(), reason };
        if spec.channels == 0 {
            return Err(unsupported("zero channels".into()));
        }
        if spec.sample_rate == 0 {
            return Err(unsupported("sample rate 0".into()));
        }
        let samples: Samples = match (spec.sample_format, spec.bits_per_sample) {
            (hound::SampleFormat::Float, 32) => Box::new(reader.into_samples::<f32>()),
            (hound::SampleFormat::Int, bits @ 1..=32) => {
                let scale = 1.0 / (1u64 << (bits - 1)) as f32;
                let iter = reader.into_samples::<i32>();
                Box::new(iter.map(move |r: Result<i32, hound::Error>| r.map(|v| v as f32 * scale)))
            }
            (format, bits) => {
                return Err(unsupported(format!("{bits}-bit {format:?} samples")));
            }
        };
        let mut src = WavSource {
            path: path.to_owned(),
            samples,
            channels: usize::from(spec.channels),
            in_rate: u64::from(spec.sample_rate),
            out_index: 0,
            base: 0,
            a: None,
            b: None,
        };
        src.a = src.next_mono();
        src.b = src.next_mono();
        Ok(src)
    }

    /// Reads one multi-channel input frame and mixes it to mono; `None` at end of file
    /// (or on a read error, which is logged and treated as the end).
    fn next_mono(&mut self) -> Option<f32> {
        let mut sum = 0.0f32;
        for _ in 0..self.channels {
            match self.samples.next()? {
                Ok(v) if v.is_finite() => sum += v,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(path = %self.path.display(), error = %e, "WAV read error, treating as end of file");
                    self.samples = Box::new(std::iter::empty());
                    return None;
                }
            }
        }
        Some(sum / self.channels as f32)
    }

    /// Next output sample at 48 kHz, `None` after the end of the file.
    fn next_sample(&mut self) -> Option<f32> {
        let sr = u64::from(SAMPLE_RATE);
        let pos = u128::from(self.out_index) * u128::from(self.in_rate);
        let idx = u64::try_from(pos / u128::from(sr)).unwrap_or(u64::MAX);
        let frac = (pos % u128::from(sr)) as f32 / sr as f32;
        while self.base < idx {
            self.a = self.b;
            self.b = match self.a {
                Some(_) => self.next_mono(),
                None => None,
            };
            self.base += 1;
            if self.a.is_none() {
                break;
            }
        }
        let a = self.a?;
        let b = self.b.unwrap_or(a);
        self.out_index += 1;
        Some(a + (b - a) * frac)
    }
}

impl FrameSource for WavSource {
    fn next_frame(&mut self) -> Vec<i16> {
        let mut out = Vec::with_capacity(FRAME_SAMPLES);
        for _ in 0..FRAME_SAMPLES {
            let v = self.next_sample().unwrap_or(0.0);
            out.push((v * 32768.0).round().clamp(-32768.0, 32767.0) as i16);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::{dominant_frequency, rms};

    fn write_wav(path: &Path, spec: hound::WavSpec, frames: usize, hz: f64) {
        let mut w = hound::WavWriter::create(path, spec).unwrap();
        for i in 0..frames {
            let v = (i as f64 / f64::from(spec.sample_rate) * hz * std::f64::consts::TAU).sin() * 0.5;
            for ch in 0..spec.channels {
                // Second channel silent: mixing halves the amplitude.
                let v = if ch == 0 { v } else { 0.0 };
                match spec.sample_format {
                    hound::SampleFormat::Float => w.write_sample(v as f32).unwrap(),
                    hound::SampleFormat::Int => w.write_sample((v * 32767.0) as i16).unwrap(),
                }
            }
        }
        w.finalize().unwrap();
    }

    fn read_all(src: &mut WavSource, frames: usize) -> Vec<i16> {
        (0..frames).flat_map(|_| src.next_frame()).collect()
    }

    #[test]
    fn float_stereo_44k1_is_mixed_and_resampled() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.wav");
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 44_100,
            bits_per_sample: 32,
            sample_format: hound::SampleFormat::Float,
        };
        write_wav(&path, spec, 44_100, 1000.0); // 1 s
        let mut src = WavSource::open(&path).unwrap();
        let pcm = read_all(&mut src, 60); // 1.2 s
        let first = &pcm[..48_000 - 100];
        let f = dominant_frequency(first, SAMPLE_RATE).unwrap();
        assert!((f - 1000.0).abs() < 2.0, "{f}");
        let expected_rms = 0.25 / 2f32.sqrt() * 32768.0;
        assert!((rms(first) - expected_rms).abs() < expected_rms * 0.02, "{}", rms(first));
        assert!(pcm[48_000 + 10..].iter().all(|&s| s == 0), "silence after end");
    }

    #[test]
    fn int16_8k_mono_upsampled() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("i.wav");
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 8_000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        write_wav(&path, spec, 8_000, 300.0);
        let mut src = WavSource::open(&path).unwrap();
        let pcm = read_all(&mut src, 50);
        let f = dominant_frequency(&pcm, SAMPLE_RATE).unwrap();
        assert!((f - 300.0).abs() < 2.0, "{f}");
    }

    #[test]
    fn garbage_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.wav");
        std::fs::write(&path, b"RIFF\x10\0\0\0WAVEjunkjunkjunk").unwrap();
        let err = WavSource::open(&path).err().unwrap().to_string();
        assert!(err.contains("bad.wav"), "{err}");
        std::fs::write(&path, b"").unwrap();
        assert!(WavSource::open(&path).is_err());
    }
}
