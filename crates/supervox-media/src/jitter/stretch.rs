//! Click-free time compression and expansion of decoded PCM (pitch-synchronous
//! overlap-add, as in NetEq's accelerate / preemptive-expand).
//!
//! Both operations work on the not-yet-played audio `x` at the front of the playout
//! buffer and pick a lag `L` (2.5..=15 ms) maximising the normalised correlation of
//! `x[0..L]` with `x[L..2L]` — one pitch period for voiced speech:
//!
//! * compress: `x[0..L]` fading out over `x[L..2L]` fading in, then `x[2L..]`
//!   (removes `L` samples);
//! * expand: `x[0..L]`, then `x[L..2L]` fading out over `x[0..L]` fading in, then
//!   `x[L..]` (inserts `L` samples).
//!
//! Every seam joins consecutive original samples, and the crossfade mixes two segments
//! that are (nearly) the same waveform one period apart, so no discontinuity — click —
//! appears. Segments that are neither periodic nor quiet are only touched when the
//! caller insists ([`Urgency::Forced`]).

use crate::SAMPLE_RATE;

/// Shortest lag searched: 2.5 ms (400 Hz pitch).
pub const MIN_LAG: usize = SAMPLE_RATE as usize / 400;
/// Longest lag searched: 15 ms (67 Hz pitch).
pub const MAX_LAG: usize = SAMPLE_RATE as usize * 15 / 1000;
/// RMS below which audio counts as quiet and may be stretched whatever its periodicity.
pub const QUIET_RMS: f64 = 400.0;

/// How readily to stretch a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Urgency {
    /// Only quiet audio (pauses between words): PESQ and listeners hear no warping there.
    Quiet,
    /// Only quiet or strongly periodic (correlation ≥ 0.9) audio.
    Gentle,
    /// Quiet or periodic (correlation ≥ 0.6) audio.
    Normal,
    /// Any audio, at the best lag found.
    Forced,
}

/// The lag chosen for a stretch and why it was accepted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lag {
    /// Lag in samples.
    pub lag: usize,
    /// Normalised correlation at that lag (−1..=1).
    pub corr: f64,
    /// RMS of the two periods compared.
    pub rms: f64,
}

fn corr_at(x: &[f64], lag: usize) -> (f64, f64) {
    let (a, b) = (&x[..lag], &x[lag..2 * lag]);
    let (mut xy, mut xx, mut yy) = (0.0, 0.0, 0.0);
    for (p, q) in a.iter().zip(b) {
        xy += p * q;
        xx += p * p;
        yy += q * q;
    }
    let rms = ((xx + yy) / (2 * lag) as f64).sqrt();
    let c = if xx > 0.0 && yy > 0.0 { xy / (xx * yy).sqrt() } else { 0.0 };
    (c, rms)
}

/// Finds the best lag in `MIN_LAG..=max_lag` (decimated search, then refined at the full
/// rate). Returns `None` when `x` is too short for [`MIN_LAG`].
pub fn best_lag(x: &[i16], max_lag: usize) -> Option<Lag> {
    let max_lag = max_lag.min(MAX_LAG).min(x.len() / 2);
    if max_lag < MIN_LAG {
        return None;
    }
    let full: Vec<f64> = x[..2 * max_lag].iter().map(|&s| f64::from(s)).collect();
    const DEC: usize = 4;
    let dec: Vec<f64> = full.chunks_exact(DEC).map(|c| c.iter().sum::<f64>() / DEC as f64).collect();
    let mut coarse = MIN_LAG / DEC;
    let mut coarse_best = f64::MIN;
    for l in MIN_LAG / DEC..=max_lag / DEC {
        if 2 * l > dec.len() {
            break;
        }
        let (c, _) = corr_at(&dec, l);
        if c > coarse_best {
            coarse_best = c;
            coarse = l;
        }
    }
    let centre = coarse * DEC;
    let lo = centre.saturating_sub(DEC).max(MIN_LAG);
    let hi = (centre + DEC).min(max_lag);
    let mut best = Lag { lag: lo, corr: f64::MIN, rms: 0.0 };
    for l in lo..=hi {
        let (c, rms) = corr_at(&full, l);
        if c > best.corr {
            best = Lag { lag: l, corr: c, rms };
        }
    }
    Some(best)
}

fn acceptable(lag: &Lag, urgency: Urgency) -> bool {
    match urgency {
        Urgency::Quiet => lag.rms < QUIET_RMS,
        Urgency::Gentle => lag.rms < QUIET_RMS || lag.corr >= 0.9,
        Urgency::Normal => lag.rms < QUIET_RMS || lag.corr >= 0.6,
        Urgency::Forced => true,
    }
}

/// Raised-cosine fade-in weight for position `k` of `n`.
fn fade_in(k: usize, n: usize) -> f64 {
    let t = (k as f64 + 0.5) / n as f64;
    0.5 - 0.5 * (std::f64::consts::PI * t).cos()
}

fn mix(out_seg: &[i16], in_seg: &[i16]) -> Vec<i16> {
    let n = out_seg.len();
    out_seg
        .iter()
        .zip(in_seg)
        .enumerate()
        .map(|(k, (&a, &b))| {
            let w = fade_in(k, n);
            (f64::from(a) * (1.0 - w) + f64::from(b) * w).round().clamp(-32768.0, 32767.0) as i16
        })
        .collect()
}

/// Removes one period (at most `max_remove` samples) from the front of `buf`; returns
/// the number of samples removed (0 when no acceptable segment was found).
pub fn compress(buf: &mut Vec<i16>, max_remove: usize, urgency: Urgency) -> usize {
    let Some(lag) = best_lag(buf, max_remove) else {
        return 0;
    };
    if !acceptable(&lag, urgency) {
        return 0;
    }
    let l = lag.lag;
    let mixed = mix(&buf[..l], &buf[l..2 * l]);
    buf.splice(..2 * l, mixed);
    l
}

/// Inserts one period (at most `max_insert` samples) near the front of `buf`; returns
/// the number of samples inserted (0 when no acceptable segment was found).
pub fn expand(buf: &mut Vec<i16>, max_insert: usize, urgency: Urgency) -> usize {
    let Some(lag) = best_lag(buf, max_insert) else {
        return 0;
    };
    if !acceptable(&lag, urgency) {
        return 0;
    }
    let l = lag.lag;
    let mixed = mix(&buf[l..2 * l], &buf[..l]);
    buf.splice(l..l, mixed);
    l
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(n: usize, hz: f64, amp: f64) -> Vec<i16> {
        (0..n).map(|i| (amp * (i as f64 * hz * std::f64::consts::TAU / 48_000.0).sin()) as i16).collect()
    }

    /// Largest sample-to-sample step.
    fn max_step(x: &[i16]) -> i32 {
        x.windows(2).map(|w| (i32::from(w[1]) - i32::from(w[0])).abs()).max().unwrap_or(0)
    }

    #[test]
    fn finds_pitch_period() {
        let x = sine(1920, 200.0, 8000.0);
        let lag = best_lag(&x, MAX_LAG).unwrap();
        assert_eq!(lag.lag % 240, 0, "{lag:?}");
        assert!(lag.corr > 0.99);
        assert!(best_lag(&x[..100], MAX_LAG).is_none());
    }

    #[test]
    fn compress_and_expand_are_click_free() {
        let x = sine(1920, 200.0, 8000.0);
        let natural = max_step(&x);
        let mut c = x.clone();
        let removed = compress(&mut c, 960, Urgency::Normal);
        assert!((MIN_LAG..=960).contains(&removed), "{removed}");
        assert_eq!(c.len(), x.len() - removed);
        assert!(max_step(&c) <= natural + 50, "{} vs {natural}", max_step(&c));
        let mut e = x.clone();
        let added = expand(&mut e, 960, Urgency::Normal);
        assert!(added >= MIN_LAG, "{added}");
        assert_eq!(e.len(), x.len() + added);
        assert!(max_step(&e) <= natural + 50);
    }

    #[test]
    fn loud_noise_is_left_alone_unless_forced() {
        let mut state = 0x1234_5678u32;
        let mut noise: Vec<i16> = (0..1920)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                (state >> 16) as i16
            })
            .collect();
        assert_eq!(compress(&mut noise, 960, Urgency::Normal), 0);
        assert_eq!(compress(&mut noise, 960, Urgency::Quiet), 0);
        assert_eq!(expand(&mut noise, 960, Urgency::Gentle), 0);
        assert!(compress(&mut noise, 960, Urgency::Forced) > 0);
        let mut quiet = vec![10i16; 1920];
        assert!(compress(&mut quiet, 960, Urgency::Gentle) > 0);
        assert!(compress(&mut quiet, 960, Urgency::Quiet) > 0);
        // Loud periodic audio (voiced speech) is left alone when only pauses may go.
        let mut voiced = sine(1920, 200.0, 8000.0);
        assert_eq!(compress(&mut voiced, 960, Urgency::Quiet), 0);
        let mut short = vec![0i16; 100];
        assert_eq!(compress(&mut short, 960, Urgency::Forced), 0);
        assert_eq!(expand(&mut short, 960, Urgency::Forced), 0);
    }
}
