//! Detects whether an Opus packet carries in-band FEC (SILK LBRR) data.
//!
//! Equivalent to libopus 1.5's `opus_packet_has_lbrr` for mono packets: it reads the TOC
//! byte and the first range-coded SILK header bits (per-frame VAD flags, then the LBRR
//! flag) without decoding audio.

/// Returns `true` if `packet` (a whole Opus packet) carries LBRR data that
/// [`crate::codec::Decoder::decode_fec`] can use to recover the previous frame.
///
/// CELT-only packets never do. For multi-frame (code 1-3) and stereo packets the flag is
/// not parsed and any SILK or hybrid packet is assumed to carry it.
pub fn packet_has_fec(packet: &[u8]) -> bool {
    let Some((&toc, data)) = packet.split_first() else {
        return false;
    };
    let config = toc >> 3;
    if config >= 16 {
        return false; // CELT-only
    }
    let stereo = toc & 0x04 != 0;
    let code = toc & 0x03;
    if stereo || code != 0 {
        return true;
    }
    // SILK configs 0..=11 cycle through 10/20/40/60 ms; hybrid 12..=15 through 10/20 ms.
    let frame_ms =
        if config < 12 { [10, 20, 40, 60][usize::from(config % 4)] } else { [10, 20][usize::from(config % 2)] };
    let silk_frames = (frame_ms / 20).max(1);
    let mut dec = RangeDecoder::new(data);
    for _ in 0..silk_frames {
        dec.bit_logp1(); // VAD flag
    }
    dec.bit_logp1()
}

/// The minimal subset of the Opus range decoder (RFC 6716 section 4.1) needed to read
/// equiprobable header bits.
struct RangeDecoder<'a> {
    buf: &'a [u8],
    pos: usize,
    rng: u32,
    val: u32,
    rem: u32,
}

const SYM_BITS: u32 = 8;
const CODE_EXTRA: u32 = 7;
const CODE_TOP: u32 = 1 << 31;
const CODE_BOT: u32 = CODE_TOP >> SYM_BITS;
const SYM_MAX: u32 = (1 << SYM_BITS) - 1;

impl<'a> RangeDecoder<'a> {
    fn new(buf: &'a [u8]) -> Self {
        let mut d = RangeDecoder { buf, pos: 0, rng: 1 << CODE_EXTRA, val: 0, rem: 0 };
        d.rem = d.read_byte();
        d.val = d.rng - 1 - (d.rem >> (SYM_BITS - CODE_EXTRA));
        d.normalize();
        d
    }

    /// Bytes past the end read as zero, as in libopus.
    fn read_byte(&mut self) -> u32 {
        let b = self.buf.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        u32::from(b)
    }

    fn normalize(&mut self) {
        while self.rng <= CODE_BOT {
            self.rng <<= SYM_BITS;
            let sym = self.rem;
            self.rem = self.read_byte();
            let sym = ((sym << SYM_BITS) | self.rem) >> (SYM_BITS - CODE_EXTRA);
            self.val = ((self.val << SYM_BITS) + (SYM_MAX & !sym)) & (CODE_TOP - 1);
        }
    }

    /// Decodes one bit whose probability of being 1 is 1/2 (`ec_dec_bit_logp(.., 1)`).
    fn bit_logp1(&mut self) -> bool {
        let s = self.rng >> 1;
        let one = self.val < s;
        if !one {
            self.val -= s;
        }
        self.rng = if one { s } else { self.rng - s };
        self.normalize();
        one
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::codec::{Decoder, Encoder};
    use crate::FRAME_SAMPLES;

    /// A voiced, speech-like signal: harmonics of a wobbling pitch, in ~150 ms
    /// "syllables" separated by pauses (so the SILK VAD keeps flagging speech).
    pub(crate) fn speechy(frames: usize) -> Vec<Vec<i16>> {
        let mut phase = 0.0f64;
        let mut out = Vec::new();
        for f in 0..frames {
            let mut frame = Vec::with_capacity(FRAME_SAMPLES);
            for i in 0..FRAME_SAMPLES {
                let t = (f * FRAME_SAMPLES + i) as f64 / 48_000.0;
                let pitch = 140.0 + 30.0 * (t * 3.0).sin();
                phase += pitch / 48_000.0;
                let env = (t * 2.5 * std::f64::consts::TAU).sin().max(0.0);
                let v: f64 = (1..8).map(|h| (phase * std::f64::consts::TAU * h as f64).sin() / h as f64).sum();
                frame.push((v * env * 6000.0) as i16);
            }
            out.push(frame);
        }
        out
    }

    fn encode_all(frames: &[Vec<i16>], loss: u8) -> Vec<Vec<u8>> {
        let mut enc = Encoder::new().unwrap();
        enc.set_expected_loss(loss).unwrap();
        frames.iter().map(|f| enc.encode(f).unwrap()).collect()
    }

    #[test]
    fn detects_lbrr_flag() {
        let frames = speechy(100);
        let count = |loss| encode_all(&frames, loss).iter().filter(|p| packet_has_fec(p)).count();
        assert_eq!(count(0), 0, "no LBRR without expected loss");
        let with = count(20);
        assert!(with > 20, "LBRR expected in speech packets, got {with}");
    }

    #[test]
    fn fec_recovery_beats_concealment() {
        let frames = speechy(100);
        let packets = encode_all(&frames, 20);
        let err = |a: &[i16], b: &[i16]| -> f64 {
            a.iter().zip(b).map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2)).sum()
        };
        let (mut fec_err, mut plc_err, mut tried) = (0.0, 0.0, 0);
        for lost in 10..98 {
            if !packet_has_fec(&packets[lost + 1]) {
                continue;
            }
            tried += 1;
            let (mut reference, mut with_fec, mut with_plc) =
                (Decoder::new().unwrap(), Decoder::new().unwrap(), Decoder::new().unwrap());
            for p in &packets[..lost] {
                reference.decode(Some(p)).unwrap();
                with_fec.decode(Some(p)).unwrap();
                with_plc.decode(Some(p)).unwrap();
            }
            let truth = reference.decode(Some(&packets[lost])).unwrap();
            fec_err += err(&truth, &with_fec.decode_fec(&packets[lost + 1]).unwrap());
            plc_err += err(&truth, &with_plc.decode(None).unwrap());
        }
        assert!(tried > 10, "only {tried} packets with FEC");
        assert!(fec_err < plc_err * 0.5, "fec {fec_err:e} vs plc {plc_err:e}");
    }
    #[test]
    fn odd_inputs() {
        assert!(!packet_has_fec(&[]));
        assert!(!packet_has_fec(&[31 << 3, 1, 2, 3])); // CELT
        assert!(packet_has_fec(&[(1 << 3) | 0x04])); // stereo SILK: assumed
        assert!(packet_has_fec(&[(1 << 3) | 0x01])); // two frames: assumed
        for toc in 0..=255u8 {
            let _ = packet_has_fec(&[toc]);
            let _ = packet_has_fec(&[toc, 0xff, 0xff]);
            let _ = packet_has_fec(&[toc, 0x00]);
        }
    }
}
