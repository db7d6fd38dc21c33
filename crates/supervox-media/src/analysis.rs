//! Signal measurements used by tests and quality benches.

use rustfft::{num_complex::Complex, FftPlanner};

/// Samples whose RMS is below this are treated as silence.
const SILENCE_RMS: f32 = 16.0;
/// Largest FFT used beyond the window length itself.
const MAX_FFT: usize = 1 << 20;

/// Root-mean-square level of `samples` (in sample units, 0 for an empty slice).
pub fn rms(samples: &[i16]) -> f32 {
    if samples.is_empty() {
        return 0.0;
    }
    let sum: f64 = samples.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    (sum / samples.len() as f64).sqrt() as f32
}

/// Frequency in Hz of the strongest spectral peak, or `None` if the signal is silent
/// (or `sample_rate` is 0).
///
/// Analyses the loudest window of about one second (hop of 1/10 s), Hann-windowed and
/// zero-padded so bins are at most 1 Hz apart, refined with parabolic interpolation on
/// the log magnitude.
pub fn dominant_frequency(samples: &[i16], sample_rate: u32) -> Option<f32> {
    if sample_rate == 0 || samples.is_empty() {
        return None;
    }
    let win = (sample_rate as usize).min(samples.len());
    let hop = (sample_rate as usize / 10).max(1);
    let mut best = (0usize, -1.0f32);
    let mut start = 0;
    loop {
        let level = rms(&samples[start..start + win]);
        if level > best.1 {
            best = (start, level);
        }
        if start + win >= samples.len() {
            break;
        }
        start = (start + hop).min(samples.len() - win);
    }
    let (start, level) = best;
    if level < SILENCE_RMS {
        return None;
    }
    let window = &samples[start..start + win];

    // At most 1 Hz per bin, but bounded for absurd sample rates.
    let n = (sample_rate as usize).next_power_of_two().min(MAX_FFT).max(win.next_power_of_two());
    let mut buf: Vec<Complex<f32>> = vec![Complex::new(0.0, 0.0); n];
    let denom = (win.max(2) - 1) as f32;
    for (i, (&s, slot)) in window.iter().zip(buf.iter_mut()).enumerate() {
        let hann = 0.5 - 0.5 * (std::f32::consts::TAU * i as f32 / denom).cos();
        *slot = Complex::new(f32::from(s) * hann, 0.0);
    }
    FftPlanner::new().plan_fft_forward(n).process(&mut buf);

    let mags: Vec<f32> = buf[..n / 2].iter().map(|c| c.norm()).collect();
    let (peak, _) = mags.iter().enumerate().skip(1).max_by(|a, b| a.1.total_cmp(b.1))?;
    let mut offset = 0.0;
    if peak + 1 < mags.len() {
        let l = (mags[peak - 1] + 1e-9).ln();
        let c = (mags[peak] + 1e-9).ln();
        let r = (mags[peak + 1] + 1e-9).ln();
        let d = l - 2.0 * c + r;
        if d.abs() > f32::EPSILON {
            offset = (0.5 * (l - r) / d).clamp(-0.5, 0.5);
        }
    }
    Some((peak as f32 + offset) * sample_rate as f32 / n as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(hz: f32, secs: f32, amp: f32) -> Vec<i16> {
        let n = (48_000.0 * secs) as usize;
        (0..n).map(|i| ((i as f32 / 48_000.0 * hz * std::f32::consts::TAU).sin() * amp) as i16).collect()
    }

    #[test]
    fn finds_tones_precisely() {
        for hz in [100.0, 440.0, 1234.5, 7000.0] {
            let f = dominant_frequency(&sine(hz, 1.5, 8000.0), 48_000).unwrap();
            assert!((f - hz).abs() < 0.5, "{hz} -> {f}");
        }
        // Short input (< 1 s) still works.
        let f = dominant_frequency(&sine(440.0, 0.2, 8000.0), 48_000).unwrap();
        assert!((f - 440.0).abs() < 3.0, "{f}");
    }

    #[test]
    fn picks_loudest_window() {
        let mut s = sine(300.0, 2.0, 2000.0);
        s.extend(sine(900.0, 1.2, 12000.0));
        let f = dominant_frequency(&s, 48_000).unwrap();
        assert!((f - 900.0).abs() < 1.0, "{f}");
    }

    #[test]
    fn silence_and_degenerate_inputs() {
        assert_eq!(dominant_frequency(&[], 48_000), None);
        assert_eq!(dominant_frequency(&[0; 48_000], 48_000), None);
        assert_eq!(dominant_frequency(&[3; 10], 48_000), None);
        assert_eq!(dominant_frequency(&[1000; 10], 0), None);
        let _ = dominant_frequency(&[1000], 48_000);
        let _ = dominant_frequency(&[1000, -1000, 5], 1);
        assert_eq!(rms(&[]), 0.0);
        assert!((rms(&[3, -4, 3, -4]) - 3.535_534).abs() < 1e-4);
        assert_eq!(rms(&[i16::MIN; 4]), 32768.0);
    }
}
