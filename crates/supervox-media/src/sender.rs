//! Sending side: encodes frames and wraps them in media packets.

use crate::codec::Encoder;
use crate::packet::{encode_media, MediaHeader};
use crate::{MediaError, FRAME_SAMPLES};

/// Encoder plus sequence/timestamp state for one outgoing stream.
#[derive(Debug)]
pub struct MediaSender {
    encoder: Encoder,
    seq: u16,
    timestamp: u32,
    frames_sent: u64,
}

impl MediaSender {
    /// Creates a sender whose sequence number and timestamp start at random values
    /// (as RTP recommends).
    pub fn new() -> Result<Self, MediaError> {
        Self::with_initial(rand::random(), rand::random())
    }

    /// Creates a sender starting at the given sequence number and timestamp.
    pub fn with_initial(seq: u16, timestamp: u32) -> Result<Self, MediaError> {
        Ok(MediaSender { encoder: Encoder::new()?, seq, timestamp, frames_sent: 0 })
    }

    /// Encodes one frame of exactly [`FRAME_SAMPLES`] samples and returns the plaintext
    /// media packet. The first packet carries the marker bit; each packet advances the
    /// sequence number by 1 and the timestamp by [`FRAME_SAMPLES`].
    pub fn next_packet(&mut self, pcm: &[i16]) -> Result<Vec<u8>, MediaError> {
        let opus = self.encoder.encode(pcm)?;
        let header = MediaHeader { seq: self.seq, timestamp: self.timestamp, marker: self.frames_sent == 0 };
        self.seq = self.seq.wrapping_add(1);
        self.timestamp = self.timestamp.wrapping_add(FRAME_SAMPLES as u32);
        self.frames_sent += 1;
        Ok(encode_media(&header, &opus))
    }

    /// Number of packets produced so far.
    pub fn frames_sent(&self) -> u64 {
        self.frames_sent
    }

    /// Forwards the receiver-reported loss rate to the encoder's FEC tuning.
    pub fn set_expected_loss(&mut self, pct: u8) -> Result<(), MediaError> {
        self.encoder.set_expected_loss(pct)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::decode_media;

    #[test]
    fn headers_advance_and_wrap() {
        let mut s = MediaSender::with_initial(65535, u32::MAX - 100).unwrap();
        let pcm = vec![0i16; FRAME_SAMPLES];
        let a = s.next_packet(&pcm).unwrap();
        let b = s.next_packet(&pcm).unwrap();
        let (ha, _) = decode_media(&a).unwrap();
        let (hb, _) = decode_media(&b).unwrap();
        assert_eq!((ha.seq, ha.timestamp, ha.marker), (65535, u32::MAX - 100, true));
        assert_eq!((hb.seq, hb.timestamp, hb.marker), (0, 859, false));
        assert_eq!(s.frames_sent(), 2);
        assert!(s.next_packet(&pcm[..10]).is_err());
        assert_eq!(s.frames_sent(), 2);
    }
}
