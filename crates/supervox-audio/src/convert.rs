//! Sample-format, channel-count and sample-rate conversion between audio devices and the
//! 48 kHz mono pipeline.
//!
//! [`Resampler`] is a streaming windowed-sinc (Kaiser) resampler with exact rational
//! timing: each output sample advances the input position by exactly `in_rate / out_rate`
//! input samples (kept as an integer plus a fraction with denominator `out_rate / gcd`),
//! so it never drifts however long it runs. The kernel is tabulated finely and linearly
//! interpolated between table points.

use std::f64::consts::PI;

/// Zero crossings of the sinc kernel on each side (at the kernel's own cutoff).
const ZERO_CROSSINGS: f64 = 16.0;
/// Kernel table points per input sample.
const TABLE_RES: usize = 512;
/// Kaiser window shape parameter (about 85 dB stop-band attenuation).
const KAISER_BETA: f64 = 8.5;
/// Pass-band edge as a fraction of the lower of the two Nyquist frequencies.
const CUTOFF: f64 = 0.92;
/// Highest sample rate accepted, in Hz.
pub const MAX_RATE: u32 = 768_000;

/// Converts a sample in [-1, 1] to 16-bit PCM, rounding and clipping.
pub fn f32_to_i16(x: f32) -> i16 {
    // Clamped into i16's range first, so the cast cannot saturate unexpectedly (NaN → 0).
    (x * 32_768.0).round().clamp(-32_768.0, 32_767.0) as i16
}

/// Converts a 16-bit PCM sample to [-1, 1).
pub fn i16_to_f32(x: i16) -> f32 {
    f32::from(x) / 32_768.0
}

/// Mixes interleaved frames of `channels` samples down to mono (the mean of the channels)
/// and appends them to `out`. A trailing partial frame is ignored; `channels == 0` appends
/// nothing.
pub fn downmix(interleaved: &[f32], channels: usize, out: &mut Vec<f32>) {
    match channels {
        0 => {}
        1 => out.extend_from_slice(interleaved),
        n => {
            let scale = 1.0 / n as f32;
            out.extend(interleaved.chunks_exact(n).map(|frame| frame.iter().sum::<f32>() * scale));
        }
    }
}

/// Copies each mono sample into every channel of the interleaved buffer `out`, frame by
/// frame, for as many frames as both hold. Returns the number of frames written.
pub fn upmix(mono: &[f32], channels: usize, out: &mut [f32]) -> usize {
    if channels == 0 {
        return 0;
    }
    let mut frames = 0;
    for (frame, &s) in out.chunks_exact_mut(channels).zip(mono) {
        frame.fill(s);
        frames += 1;
    }
    frames
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Zeroth-order modified Bessel function of the first kind (power series).
fn bessel_i0(x: f64) -> f64 {
    let mut sum = 1.0;
    let mut term = 1.0;
    let half = x / 2.0;
    for k in 1..64 {
        term *= half / k as f64;
        let t2 = term * term;
        sum += t2;
        if t2 < sum * 1e-17 {
            break;
        }
    }
    sum
}

/// Streaming sample-rate converter for one channel of `f32` samples.
///
/// Feed input in chunks of any size with [`Resampler::process`]; output appears after a
/// look-ahead of [`Resampler::latency_input_samples`] input samples. With equal rates it is
/// an exact pass-through.
#[derive(Debug, Clone)]
pub struct Resampler {
    in_rate: u32,
    out_rate: u32,
    /// Input-position step per output sample: `step_int + step_frac / den`.
    step_int: usize,
    step_frac: u64,
    den: u64,
    /// Current position in `buf`: `pos_int + pos_frac / den`.
    pos_int: usize,
    pos_frac: u64,
    /// Taps on each side of the current position.
    half: usize,
    /// Kernel value at distance `i / TABLE_RES` input samples, for `i` in `0..=half * TABLE_RES + 1`.
    table: Vec<f32>,
    /// Buffered input, starting `half - 1` samples before `pos_int` (after trimming).
    buf: Vec<f32>,
}

impl Resampler {
    /// Creates a converter from `in_rate` to `out_rate` Hz, or `None` if either rate is 0
    /// or above [`MAX_RATE`].
    pub fn new(in_rate: u32, out_rate: u32) -> Option<Self> {
        if in_rate == 0 || out_rate == 0 || in_rate > MAX_RATE || out_rate > MAX_RATE {
            return None;
        }
        let g = gcd(u64::from(in_rate), u64::from(out_rate));
        let num = u64::from(in_rate) / g;
        let den = u64::from(out_rate) / g;
        // Cutoff relative to the input Nyquist frequency: below both Nyquist frequencies.
        let fc = CUTOFF * (f64::from(out_rate) / f64::from(in_rate)).min(1.0);
        let half = if in_rate == out_rate { 0 } else { (ZERO_CROSSINGS / fc).ceil() as usize };
        let mut table = Vec::with_capacity(half * TABLE_RES + 2);
        if half > 0 {
            let norm = bessel_i0(KAISER_BETA);
            for i in 0..=half * TABLE_RES {
                let d = i as f64 / TABLE_RES as f64;
                let x = fc * d;
                let sinc = if x == 0.0 { 1.0 } else { (PI * x).sin() / (PI * x) };
                let r = d / half as f64;
                let window = bessel_i0(KAISER_BETA * (1.0 - r * r).max(0.0).sqrt()) / norm;
                table.push((fc * sinc * window) as f32);
            }
            // Guard point so interpolation at the very edge reads a zero.
            table.push(0.0);
        }
        Some(Resampler {
            in_rate,
            out_rate,
            // num / den <= MAX_RATE, so this fits any usize of 32 bits or more.
            step_int: (num / den) as usize,
            step_frac: num % den,
            den,
            pos_int: half,
            pos_frac: 0,
            half,
            table,
            // `half` zeros of history so the first output is centred on the first input.
            buf: vec![0.0; half],
        })
    }

    /// Input sample rate in Hz.
    pub fn in_rate(&self) -> u32 {
        self.in_rate
    }

    /// Output sample rate in Hz.
    pub fn out_rate(&self) -> u32 {
        self.out_rate
    }

    /// How many input samples past the current position must arrive before an output
    /// sample is produced (the converter's look-ahead; 0 for a pass-through).
    pub fn latency_input_samples(&self) -> usize {
        self.half
    }

    fn kernel(&self, distance: f64) -> f32 {
        let x = distance.abs() * TABLE_RES as f64;
        let i = x as usize;
        match (self.table.get(i), self.table.get(i + 1)) {
            (Some(&a), Some(&b)) => {
                let f = (x - i as f64) as f32;
                a + (b - a) * f
            }
            _ => 0.0,
        }
    }

    /// Converts `input` (at the input rate) and appends the resulting samples (at the
    /// output rate) to `out`.
    pub fn process(&mut self, input: &[f32], out: &mut Vec<f32>) {
        if self.half == 0 {
            out.extend_from_slice(input);
            return;
        }
        self.buf.extend_from_slice(input);
        let half = self.half;
        while self.pos_int + half < self.buf.len() {
            let frac = self.pos_frac as f64 / self.den as f64;
            let first = self.pos_int + 1 - half;
            let taps = &self.buf[first..=self.pos_int + half];
            // Distance from the output instant to tap `first + j` is `frac + half - 1 - j`.
            let mut acc = 0.0f32;
            for (j, &x) in taps.iter().enumerate() {
                let d = frac + (half as f64 - 1.0) - j as f64;
                acc += x * self.kernel(d);
            }
            out.push(acc);
            self.pos_int += self.step_int;
            self.pos_frac += self.step_frac;
            if self.pos_frac >= self.den {
                self.pos_frac -= self.den;
                self.pos_int += 1;
            }
        }
        // Keep only the history the next output needs.
        let keep_from = (self.pos_int + 1).saturating_sub(half).min(self.buf.len());
        if keep_from > 0 {
            self.buf.drain(..keep_from);
            self.pos_int -= keep_from;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use supervox_media::analysis::{dominant_frequency, rms};

    fn sine(hz: f64, rate: u32, secs: f64, amp: f32) -> Vec<f32> {
        let n = (f64::from(rate) * secs) as usize;
        (0..n).map(|i| (amp as f64 * (2.0 * PI * hz * i as f64 / f64::from(rate)).sin()) as f32).collect()
    }

    /// Runs `input` through a fresh resampler in uneven chunks.
    fn convert(input: &[f32], from: u32, to: u32) -> Vec<f32> {
        let mut r = Resampler::new(from, to).unwrap();
        let mut out = Vec::new();
        for chunk in input.chunks(441).flat_map(|c| c.chunks(97)) {
            r.process(chunk, &mut out);
        }
        out
    }

    fn to_i16(x: &[f32]) -> Vec<i16> {
        x.iter().map(|&s| f32_to_i16(s)).collect()
    }

    #[test]
    fn sample_conversions_round_and_clip() {
        assert_eq!(f32_to_i16(0.0), 0);
        assert_eq!(f32_to_i16(1.0), i16::MAX);
        assert_eq!(f32_to_i16(-1.0), i16::MIN);
        assert_eq!(f32_to_i16(7.5), i16::MAX);
        assert_eq!(f32_to_i16(f32::NAN), 0);
        assert_eq!(f32_to_i16(i16_to_f32(-12_345)), -12_345);
        for s in [i16::MIN, -1, 0, 1, i16::MAX] {
            assert_eq!(f32_to_i16(i16_to_f32(s)), s);
        }
    }

    #[test]
    fn channel_mixing() {
        let mut mono = Vec::new();
        downmix(&[0.5, -0.5, 1.0, 0.0, 0.25], 2, &mut mono);
        assert_eq!(mono, vec![0.0, 0.5]);
        downmix(&[0.1, 0.2], 1, &mut mono);
        assert_eq!(mono.len(), 4);
        downmix(&[0.1, 0.2], 0, &mut mono);
        assert_eq!(mono.len(), 4);
        let mut out = [9.0f32; 7];
        assert_eq!(upmix(&[0.1, 0.2, 0.3], 3, &mut out), 2);
        assert_eq!(out, [0.1, 0.1, 0.1, 0.2, 0.2, 0.2, 9.0]);
        assert_eq!(upmix(&[0.1], 0, &mut out), 0);
    }

    #[test]
    fn rejects_bad_rates_and_passes_equal_rates_through() {
        assert!(Resampler::new(0, 48_000).is_none());
        assert!(Resampler::new(48_000, 0).is_none());
        assert!(Resampler::new(MAX_RATE + 1, 48_000).is_none());
        let input = sine(440.0, 48_000, 0.1, 0.5);
        assert_eq!(convert(&input, 48_000, 48_000), input);
    }

    #[test]
    fn stereo_44k1_to_48k_mono_keeps_frequency_and_level() {
        // 1 kHz in both channels at 44.1 kHz, stereo interleaved.
        let left = sine(1000.0, 44_100, 2.0, 0.5);
        let mut stereo = Vec::with_capacity(left.len() * 2);
        for &s in &left {
            stereo.extend([s, s * 0.5]);
        }
        let mut mono = Vec::new();
        downmix(&stereo, 2, &mut mono);
        let out = convert(&mono, 44_100, 48_000);
        // Exact length up to the look-ahead.
        let expected = left.len() * 48_000 / 44_100;
        assert!(out.len() <= expected && out.len() + 40 >= expected, "{} vs {expected}", out.len());
        let pcm = to_i16(&out);
        let freq = dominant_frequency(&pcm, 48_000).unwrap();
        assert!((freq - 1000.0).abs() < 1.0, "{freq}");
        // Mean of 0.5 and 0.25 amplitude: 0.375 peak → RMS 0.265 of full scale.
        let level = rms(&pcm[4800..]) / 32_768.0;
        assert!((level - 0.375 / 2f32.sqrt()).abs() < 0.005, "{level}");
    }

    #[test]
    fn downsampling_keeps_frequency_and_rejects_aliases() {
        let tone = sine(440.0, 96_000, 1.5, 0.5);
        let out = convert(&tone, 96_000, 48_000);
        let freq = dominant_frequency(&to_i16(&out), 48_000).unwrap();
        assert!((freq - 440.0).abs() < 1.0, "{freq}");
        // 30 kHz is above the 24 kHz output Nyquist frequency: it must be filtered out, not
        // folded to 18 kHz.
        let ultrasonic = sine(30_000.0, 96_000, 0.5, 0.5);
        let out = convert(&ultrasonic, 96_000, 48_000);
        let level = rms(&to_i16(&out[200..]));
        assert!(level < 5.0, "alias level {level}");
    }

    #[test]
    fn upsampling_from_telephone_rates_and_back() {
        for (from, hz) in [(8_000, 300.0), (16_000, 3_000.0), (22_050, 5_000.0), (32_000, 700.0)] {
            let up = convert(&sine(hz, from, 1.5, 0.4), from, 48_000);
            let freq = dominant_frequency(&to_i16(&up), 48_000).unwrap();
            assert!((freq - hz as f32).abs() < 1.0, "{from}: {freq}");
            let down = convert(&up, 48_000, from);
            let freq = dominant_frequency(&to_i16(&down), from).unwrap();
            assert!((freq - hz as f32).abs() < 1.0, "{from} round trip: {freq}");
            let level = rms(&to_i16(&down[from as usize / 10..])) / 32_768.0;
            assert!((level - 0.4 / 2f32.sqrt()).abs() < 0.01, "{from}: level {level}");
        }
    }

    #[test]
    fn long_runs_do_not_drift() {
        // 10 s at 44.1 kHz in small chunks yields exactly the proportional count, minus the
        // fixed look-ahead.
        let mut r = Resampler::new(44_100, 48_000).unwrap();
        let mut out = Vec::new();
        let chunk = vec![0.0f32; 441];
        for _ in 0..1000 {
            r.process(&chunk, &mut out);
        }
        let expected = 441_000 * 48_000 / 44_100;
        let lag = (r.latency_input_samples() * 48_000).div_ceil(44_100) + 1;
        assert!(out.len() <= expected && out.len() + lag >= expected, "{} vs {expected}", out.len());
        // The buffered history stays small.
        assert!(r.buf.len() <= 2 * r.half + 441, "{}", r.buf.len());
    }
}
