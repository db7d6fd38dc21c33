//! Call quality estimate: a reduced ITU-T G.107 E-model.
//!
//! We keep the terms that our measurements drive — delay impairment `Idd`
//! from the mouth-to-ear delay and the effective equipment impairment
//! `Ie,eff` from packet loss — and take the G.107 defaults for the rest
//! (echo assumed cancelled), giving R on the narrow-band scale (max 93.2,
//! MOS 4.41). The adaptive jitter buffer work refines the inputs, not this.

/// Equipment impairment of Opus at speech bitrates (near transparent).
const IE_OPUS: f64 = 0.0;
/// Packet-loss robustness of Opus with in-band FEC and concealment (G.113
/// gives 25.1 for G.711 with concealment; we stay below it, conservatively).
const BPL_OPUS: f64 = 20.0;
/// Default Ro − Is of G.107.
const R_DEFAULT: f64 = 93.2;

/// Transmission rating R for a one-way mouth-to-ear delay and a loss rate.
pub fn r_factor(one_way_delay_ms: f64, loss_pct: f64) -> f64 {
    // Beyond 10 s the formula overflows; the score is at its floor anyway.
    let ta = one_way_delay_ms.clamp(0.0, 10_000.0);
    let idd = if ta > 100.0 {
        let x = (ta / 100.0).log2();
        25.0 * ((1.0 + x.powi(6)).powf(1.0 / 6.0) - 3.0 * (1.0 + (x / 3.0).powi(6)).powf(1.0 / 6.0) + 2.0)
    } else {
        0.0
    };
    let ppl = loss_pct.clamp(0.0, 100.0);
    let ie_eff = IE_OPUS + (95.0 - IE_OPUS) * ppl / (ppl + BPL_OPUS);
    R_DEFAULT - idd - ie_eff
}

/// MOS (1.0 to 4.5) from R, per G.107 Annex B.
pub fn mos_from_r(r: f64) -> f64 {
    if r <= 0.0 {
        1.0
    } else if r >= 100.0 {
        4.5
    } else {
        // The cubic dips just below 1 for R under about 6.5; MOS is 1 there.
        (1.0 + 0.035 * r + r * (r - 60.0) * (100.0 - r) * 7e-6).max(1.0)
    }
}

/// MOS estimate for a call: `rtt_ms` of the media path, `playout_ms` of
/// jitter buffer and codec delay, `loss_pct` after concealment input.
pub fn mos_estimate(rtt_ms: f64, playout_ms: f64, loss_pct: f64) -> f64 {
    mos_from_r(r_factor(rtt_ms / 2.0 + playout_ms, loss_pct))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_short_call_is_toll_quality_or_better() {
        let m = mos_estimate(2.0, 80.0, 0.0);
        assert!((4.40..=4.42).contains(&m), "{m}");
    }

    #[test]
    fn loss_and_delay_lower_the_score_monotonically() {
        let mut last = 5.0;
        for loss in [0.0, 1.0, 3.0, 10.0, 20.0, 50.0] {
            let m = mos_estimate(50.0, 80.0, loss);
            assert!(m < last || loss == 0.0, "{loss}% → {m}");
            last = m;
        }
        assert!(mos_estimate(600.0, 80.0, 0.0) < mos_estimate(100.0, 80.0, 0.0));
        // G.107: 400 ms mouth-to-ear is well below toll quality.
        assert!(mos_estimate(640.0, 80.0, 0.0) < 3.9);
    }

    #[test]
    fn bounded_for_any_input() {
        for (rtt, loss) in [(-5.0, -1.0), (1e9, 1e9), (f64::MAX, 0.0), (0.0, 100.0)] {
            let m = mos_estimate(rtt, 60.0, loss);
            assert!((1.0..=4.5).contains(&m), "{rtt} {loss} → {m}");
        }
    }
}
