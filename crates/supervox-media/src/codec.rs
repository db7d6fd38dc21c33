//! Opus encoder and decoder wrappers: 48 kHz mono, 20 ms frames, VOIP application.

use crate::{MediaError, FRAME_SAMPLES, SAMPLE_RATE};

/// Target encoder bitrate in bits per second (VBR).
pub const BITRATE_BPS: i32 = 32_000;
/// Expected packet loss percentage the encoder is configured with by default.
pub const DEFAULT_EXPECTED_LOSS_PCT: u8 = 5;
/// Encoder look-ahead of Opus at 48 kHz in the VOIP application (312 samples): decoded
/// audio lags the input by this much, in ms.
pub const LOOKAHEAD_MS: f64 = 6.5;
/// Largest Opus packet for one frame.
const MAX_PACKET: usize = crate::packet::MAX_PAYLOAD;
/// Largest number of samples one Opus packet can decode to (120 ms at 48 kHz).
const MAX_DECODE_SAMPLES: usize = 5760;

/// Opus encoder for 20 ms mono frames with in-band FEC enabled.
#[derive(Debug)]
pub struct Encoder {
    inner: opus::Encoder,
}

impl Encoder {
    /// Creates an encoder: VOIP application, voice signal, ~32 kb/s VBR, in-band FEC on,
    /// expected loss [`DEFAULT_EXPECTED_LOSS_PCT`] %.
    pub fn new() -> Result<Self, MediaError> {
        let mut inner = opus::Encoder::new(SAMPLE_RATE, opus::Channels::Mono, opus::Application::Voip)
            .map_err(MediaError::codec("encoder create"))?;
        inner.set_bitrate(opus::Bitrate::Bits(BITRATE_BPS)).map_err(MediaError::codec("set bitrate"))?;
        inner.set_vbr(true).map_err(MediaError::codec("set vbr"))?;
        // Speech: keeps the encoder in SILK/hybrid mode, the modes that carry in-band FEC.
        inner.set_signal(opus::Signal::Voice).map_err(MediaError::codec("set signal"))?;
        inner.set_inband_fec(true).map_err(MediaError::codec("set inband fec"))?;
        let mut enc = Encoder { inner };
        enc.set_expected_loss(DEFAULT_EXPECTED_LOSS_PCT)?;
        Ok(enc)
    }

    /// Encodes exactly [`FRAME_SAMPLES`] samples into one Opus packet (at most 1275 bytes).
    pub fn encode(&mut self, pcm: &[i16]) -> Result<Vec<u8>, MediaError> {
        if pcm.len() != FRAME_SAMPLES {
            return Err(MediaError::BadFrameLength { expected: FRAME_SAMPLES, got: pcm.len() });
        }
        self.inner.encode_vec(pcm, MAX_PACKET).map_err(MediaError::codec("encode"))
    }

    /// Tells the encoder how much packet loss to expect (0..=100 %, larger values are
    /// clamped); this controls how much in-band FEC it adds.
    pub fn set_expected_loss(&mut self, pct: u8) -> Result<(), MediaError> {
        self.inner.set_packet_loss_perc(i32::from(pct.min(100))).map_err(MediaError::codec("set packet loss"))
    }
}

/// Opus decoder producing 20 ms mono frames, with loss concealment and FEC recovery.
#[derive(Debug)]
pub struct Decoder {
    inner: opus::Decoder,
    scratch: Vec<i16>,
}

impl Decoder {
    /// Creates a 48 kHz mono decoder.
    pub fn new() -> Result<Self, MediaError> {
        let inner =
            opus::Decoder::new(SAMPLE_RATE, opus::Channels::Mono).map_err(MediaError::codec("decoder create"))?;
        Ok(Decoder { inner, scratch: vec![0; MAX_DECODE_SAMPLES] })
    }

    /// Decodes one packet, or conceals a lost one when `packet` is `None`.
    ///
    /// Always returns exactly [`FRAME_SAMPLES`] samples: a packet of another duration is
    /// truncated or zero-padded. Malformed packets return an error.
    pub fn decode(&mut self, packet: Option<&[u8]>) -> Result<Vec<i16>, MediaError> {
        match packet {
            Some(p) if !p.is_empty() => {
                let n = self.inner.decode(p, &mut self.scratch, false).map_err(MediaError::codec("decode"))?;
                let mut out = self.scratch[..n.min(MAX_DECODE_SAMPLES)].to_vec();
                out.resize(FRAME_SAMPLES, 0);
                Ok(out)
            }
            _ => self.decode_exact(&[], false, "conceal"),
        }
    }

    /// Recovers the lost frame *preceding* `next_packet` from that packet's in-band FEC
    /// data. If the packet carries no FEC, libopus falls back to concealment. Returns
    /// [`FRAME_SAMPLES`] samples; `next_packet` must still be decoded normally afterwards.
    pub fn decode_fec(&mut self, next_packet: &[u8]) -> Result<Vec<i16>, MediaError> {
        if next_packet.is_empty() {
            return self.decode_exact(&[], false, "conceal");
        }
        self.decode_exact(next_packet, true, "decode fec")
    }

    fn decode_exact(&mut self, input: &[u8], fec: bool, op: &'static str) -> Result<Vec<i16>, MediaError> {
        // PLC and FEC decode exactly as many samples as the output buffer holds.
        let mut out = vec![0i16; FRAME_SAMPLES];
        let n = self.inner.decode(input, &mut out, fec).map_err(MediaError::codec(op))?;
        out.truncate(n);
        out.resize(FRAME_SAMPLES, 0);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(n: usize, hz: f32) -> Vec<i16> {
        (0..n)
            .map(|i| {
                let t = i as f32 / SAMPLE_RATE as f32;
                ((t * hz * std::f32::consts::TAU).sin() * 9000.0) as i16
            })
            .collect()
    }

    #[test]
    fn encode_decode_frame_lengths() {
        let mut enc = Encoder::new().unwrap();
        let mut dec = Decoder::new().unwrap();
        let pcm = tone(FRAME_SAMPLES * 10, 300.0);
        let mut packets = Vec::new();
        for f in pcm.chunks(FRAME_SAMPLES) {
            let p = enc.encode(f).unwrap();
            assert!(!p.is_empty() && p.len() <= MAX_PACKET);
            packets.push(p);
        }
        for p in &packets {
            assert_eq!(dec.decode(Some(p)).unwrap().len(), FRAME_SAMPLES);
        }
        assert_eq!(dec.decode(None).unwrap().len(), FRAME_SAMPLES);
        assert_eq!(dec.decode_fec(&packets[3]).unwrap().len(), FRAME_SAMPLES);
        assert!(enc.set_expected_loss(250).is_ok());
    }

    #[test]
    fn rejects_wrong_frame_length() {
        let mut enc = Encoder::new().unwrap();
        let err = enc.encode(&[0; 100]).unwrap_err();
        assert!(err.to_string().contains("100 samples, expected 960"), "{err}");
    }

    #[test]
    fn garbage_packets_do_not_panic() {
        let mut dec = Decoder::new().unwrap();
        let mut x = 7u32;
        for len in 1..400usize {
            let p: Vec<u8> = (0..len)
                .map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (x >> 16) as u8
                })
                .collect();
            if let Ok(out) = dec.decode(Some(&p)) {
                assert_eq!(out.len(), FRAME_SAMPLES);
            }
            if let Ok(out) = dec.decode_fec(&p) {
                assert_eq!(out.len(), FRAME_SAMPLES);
            }
        }
        // A 60 ms SILK packet (config 3, code 0) is longer than a frame: truncated, no error.
        let out = dec.decode(Some(&[3 << 3, 0, 0])).unwrap();
        assert_eq!(out.len(), FRAME_SAMPLES);
    }
}
