//! RTP-like plaintext media payload.
//!
//! Audio layout (7-byte header, then the Opus packet):
//!
//! ```text
//!  byte 0:    vv m t d rrr  vv = version (1), m = marker, t = type (0 = audio),
//!                          d = redundancy block present, r = reserved (send 0, ignored)
//!  bytes 1-2: sequence number, u16 big-endian
//!  bytes 3-6: timestamp in 48 kHz samples, u32 big-endian
//!  [redundancy block, only with d set:
//!   1 byte k (1..=MAX_REDUNDANCY), then k u16 big-endian lengths, then k Opus
//!   packets: the i-th (i = 1..=k) is a copy of the packet sent i frames earlier
//!   (sequence - i, timestamp - i * 960); length 0 = not available]
//!  then:      Opus packet, 1..=1275 bytes
//! ```
//!
//! The redundancy block carries whole earlier frames, as RFC 2198 audio redundancy does:
//! on a lossy link one lost packet is then fully restored from the next one, not just
//! approximated from Opus's low-bitrate in-band FEC. The sender adds it only while the
//! receiver reports loss ([`crate::sender`]).
//!
//! With the type bit set the packet is a receiver report instead (layout in
//! [`crate::report`]); [`decode_packet`] tells the two apart.
//!
//! Encryption is applied by the caller around these bytes.

use crate::MediaError;

/// Media packet format version carried in the top two bits of the first byte.
pub const VERSION: u8 = 1;
/// Length of the fixed header in bytes.
pub const HEADER_LEN: usize = 7;
/// Largest Opus packet allowed as payload (the Opus maximum for one frame).
pub const MAX_PAYLOAD: usize = 1275;

const VERSION_SHIFT: u8 = 6;
const MARKER_BIT: u8 = 0x20;
/// Bit of the first byte marking a receiver report (clear on audio packets).
pub const REPORT_BIT: u8 = 0x10;
/// Bit of the first byte of an audio packet marking a redundancy block.
pub const REDUNDANCY_BIT: u8 = 0x08;
/// Most earlier frames one packet may repeat.
pub const MAX_REDUNDANCY: usize = 3;

/// Header of one media packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MediaHeader {
    /// Sequence number, incremented by one per packet (wraps at 65535).
    pub seq: u16,
    /// Media timestamp in 48 kHz samples of the first sample in the packet (wraps).
    pub timestamp: u32,
    /// Set on the first packet of a talk spurt / stream.
    pub marker: bool,
}

/// Serialises a header and Opus payload into a plaintext media packet.
///
/// The payload is copied as is; callers are expected to pass a valid Opus packet of
/// 1..=[`MAX_PAYLOAD`] bytes, which [`decode_media`] enforces on the receiving side.
pub fn encode_media(h: &MediaHeader, opus: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + opus.len());
    let mut b0 = VERSION << VERSION_SHIFT;
    if h.marker {
        b0 |= MARKER_BIT;
    }
    out.push(b0);
    out.extend_from_slice(&h.seq.to_be_bytes());
    out.extend_from_slice(&h.timestamp.to_be_bytes());
    out.extend_from_slice(opus);
    out
}

/// Serialises a header, Opus payload and copies of earlier packets' payloads
/// (`redundant[i]` is the payload of the packet `i + 1` frames earlier, empty if not
/// available; at most [`MAX_REDUNDANCY`] are used, longer ones than [`MAX_PAYLOAD`] are
/// sent as empty). Without redundancy this is [`encode_media`].
pub fn encode_media_redundant(h: &MediaHeader, opus: &[u8], redundant: &[&[u8]]) -> Vec<u8> {
    let redundant = &redundant[..redundant.len().min(MAX_REDUNDANCY)];
    if redundant.is_empty() {
        return encode_media(h, opus);
    }
    let usable = |r: &&[u8]| if r.len() <= MAX_PAYLOAD { r.len() } else { 0 };
    let total: usize = redundant.iter().map(usable).sum();
    let mut out = Vec::with_capacity(HEADER_LEN + 1 + 2 * redundant.len() + total + opus.len());
    let mut b0 = VERSION << VERSION_SHIFT | REDUNDANCY_BIT;
    if h.marker {
        b0 |= MARKER_BIT;
    }
    out.push(b0);
    out.extend_from_slice(&h.seq.to_be_bytes());
    out.extend_from_slice(&h.timestamp.to_be_bytes());
    out.push(redundant.len() as u8);
    for r in redundant {
        out.extend_from_slice(&(usable(r) as u16).to_be_bytes());
    }
    for r in redundant {
        if usable(r) > 0 {
            out.extend_from_slice(r);
        }
    }
    out.extend_from_slice(opus);
    out
}

/// A parsed audio packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioPacket<'a> {
    /// The header.
    pub header: MediaHeader,
    /// This frame's Opus packet.
    pub payload: &'a [u8],
    /// Copies of earlier frames' Opus packets: `redundant[i]` is the packet of sequence
    /// `header.seq - (i + 1)`; empty when the sender did not have it.
    pub redundant: Vec<&'a [u8]>,
}

/// Parses a plaintext audio packet, redundancy block included.
///
/// Rejects input shorter than the header, a version other than [`VERSION`], a receiver
/// report, a malformed redundancy block (count 0 or above [`MAX_REDUNDANCY`], lengths
/// beyond the packet or above [`MAX_PAYLOAD`]), an empty payload and a payload longer
/// than [`MAX_PAYLOAD`]. Never panics.
pub fn decode_audio(bytes: &[u8]) -> Result<AudioPacket<'_>, MediaError> {
    let (header, mut rest) = match bytes.split_first_chunk::<HEADER_LEN>() {
        Some(split) => split,
        None => return Err(MediaError::PacketTooShort { len: bytes.len(), min: HEADER_LEN }),
    };
    let version = header[0] >> VERSION_SHIFT;
    if version != VERSION {
        return Err(MediaError::BadVersion(version));
    }
    if header[0] & REPORT_BIT != 0 {
        return Err(MediaError::NotAudio);
    }
    let mut redundant = Vec::new();
    if header[0] & REDUNDANCY_BIT != 0 {
        let (&k, after) = rest.split_first().ok_or(MediaError::BadRedundancy)?;
        let k = usize::from(k);
        if k == 0 || k > MAX_REDUNDANCY || after.len() < 2 * k {
            return Err(MediaError::BadRedundancy);
        }
        let (lens, mut data) = after.split_at(2 * k);
        for len in lens.chunks_exact(2) {
            let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
            if len > MAX_PAYLOAD || len > data.len() {
                return Err(MediaError::BadRedundancy);
            }
            let (r, tail) = data.split_at(len);
            redundant.push(r);
            data = tail;
        }
        rest = data;
    }
    let payload = rest;
    if payload.is_empty() {
        return Err(MediaError::EmptyPayload);
    }
    if payload.len() > MAX_PAYLOAD {
        return Err(MediaError::PayloadTooLarge { len: payload.len() });
    }
    let header = MediaHeader {
        seq: u16::from_be_bytes([header[1], header[2]]),
        timestamp: u32::from_be_bytes([header[3], header[4], header[5], header[6]]),
        marker: header[0] & MARKER_BIT != 0,
    };
    Ok(AudioPacket { header, payload, redundant })
}

/// Parses a plaintext media packet into its header and Opus payload (a redundancy block,
/// if any, is checked and skipped; see [`decode_audio`]). Never panics.
pub fn decode_media(bytes: &[u8]) -> Result<(MediaHeader, &[u8]), MediaError> {
    decode_audio(bytes).map(|a| (a.header, a.payload))
}

/// A decoded plaintext packet of either kind.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming<'a> {
    /// An audio packet.
    Audio(AudioPacket<'a>),
    /// A receiver report about the stream we send.
    Report(crate::report::ReceiverReport),
}

/// Parses a plaintext packet of either kind (audio or receiver report). Never panics.
pub fn decode_packet(bytes: &[u8]) -> Result<Incoming<'_>, MediaError> {
    match bytes.first() {
        Some(&b0) if b0 >> VERSION_SHIFT == VERSION && b0 & REPORT_BIT != 0 => {
            crate::report::ReceiverReport::decode(bytes).map(Incoming::Report)
        }
        _ => decode_audio(bytes).map(Incoming::Audio),
    }
}

/// Extends a 16-bit sequence number to the 64-bit value closest to `reference`
/// (handles wrap-around at 65535 -> 0 in both directions).
pub(crate) fn extend_seq(reference: i64, seq: u16) -> i64 {
    let delta = seq.wrapping_sub(reference as u16) as i16;
    reference + i64::from(delta)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn round_trip() {
        let h = MediaHeader { seq: 0xfffe, timestamp: 0xdead_beef, marker: true };
        let bytes = encode_media(&h, &[1, 2, 3]);
        assert_eq!(bytes.len(), HEADER_LEN + 3);
        let (h2, p) = decode_media(&bytes).unwrap();
        assert_eq!(h2, h);
        assert_eq!(p, &[1, 2, 3]);
        let h3 = MediaHeader { marker: false, ..h };
        assert_eq!(decode_media(&encode_media(&h3, &[9])).unwrap().0, h3);
    }

    #[test]
    fn extend_seq_wraps() {
        assert_eq!(extend_seq(65535, 0), 65536);
        assert_eq!(extend_seq(65536, 65535), 65535);
        assert_eq!(extend_seq(10, 5), 5);
        assert_eq!(extend_seq(-3, 65534), -2);
        assert_eq!(extend_seq(200_000, 3392), 200_000); // 200_000 % 65536 == 3392
        assert_eq!(extend_seq(200_000, 3000), 199_608);
    }

    #[test]
    fn rejects_malformed() {
        let h = MediaHeader { seq: 1, timestamp: 2, marker: false };
        let good = encode_media(&h, &[7; 10]);
        for len in 0..HEADER_LEN {
            assert!(matches!(decode_media(&good[..len]), Err(MediaError::PacketTooShort { .. })));
        }
        assert!(matches!(decode_media(&good[..HEADER_LEN]), Err(MediaError::EmptyPayload)));
        let mut bad = good.clone();
        bad[0] = 2 << 6;
        assert!(matches!(decode_media(&bad), Err(MediaError::BadVersion(2))));
        bad[0] = 0;
        assert!(matches!(decode_media(&bad), Err(MediaError::BadVersion(0))));
        assert!(decode_media(&encode_media(&h, &[0; MAX_PAYLOAD])).is_ok());
        let err = decode_media(&encode_media(&h, &[0; MAX_PAYLOAD + 1])).unwrap_err();
        assert!(matches!(err, MediaError::PayloadTooLarge { len: 1276 }));
        assert!(err.to_string().contains("1275"), "{err}");
    }

    #[test]
    fn redundancy_round_trip_and_malformed_blocks() {
        let h = MediaHeader { seq: 7, timestamp: 960 * 7, marker: false };
        let bytes = encode_media_redundant(&h, &[1, 2, 3], &[&[4, 5], &[]]);
        let a = decode_audio(&bytes).unwrap();
        assert_eq!((a.header, a.payload), (h, &[1u8, 2, 3][..]));
        assert_eq!(a.redundant, vec![&[4u8, 5][..], &[][..]]);
        assert_eq!(decode_media(&bytes).unwrap(), (h, &[1u8, 2, 3][..]));
        assert!(matches!(decode_packet(&bytes), Ok(Incoming::Audio(p)) if p == a));
        // Without copies it is the plain format; extra copies beyond the maximum are cut.
        assert_eq!(encode_media_redundant(&h, &[9], &[]), encode_media(&h, &[9]));
        let four = encode_media_redundant(&h, &[9], &[&[1], &[2], &[3], &[4]]);
        assert_eq!(decode_audio(&four).unwrap().redundant.len(), MAX_REDUNDANCY);
        let three_bytes = encode_media_redundant(&h, &[9], &[&[1], &[], &[3, 3]]);
        let three = decode_audio(&three_bytes).unwrap();
        assert_eq!(three.redundant, vec![&[1u8][..], &[][..], &[3u8, 3][..]]);
        // Count 0 or too large, lengths past the end, no primary payload: rejected.
        let mut bad = bytes.clone();
        bad[HEADER_LEN] = 0;
        assert!(matches!(decode_audio(&bad), Err(MediaError::BadRedundancy)));
        bad[HEADER_LEN] = MAX_REDUNDANCY as u8 + 1;
        assert!(matches!(decode_audio(&bad), Err(MediaError::BadRedundancy)));
        let mut bad = bytes.clone();
        bad[HEADER_LEN + 1] = 0xff;
        assert!(matches!(decode_audio(&bad), Err(MediaError::BadRedundancy)));
        assert!(matches!(decode_audio(&bytes[..HEADER_LEN]), Err(MediaError::BadRedundancy)));
        assert!(matches!(decode_audio(&bytes[..HEADER_LEN + 3]), Err(MediaError::BadRedundancy)));
        assert!(matches!(decode_audio(&bytes[..bytes.len() - 3]), Err(MediaError::EmptyPayload)));
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
        let mut ok = 0u32;
        let mut buf = Vec::with_capacity(2048);
        for i in 0..100_000u32 {
            let len = if i % 2 == 0 { rng.gen_range(0..16) } else { rng.gen_range(0..1400) };
            buf.clear();
            buf.extend((0..len).map(|_| rng.gen::<u8>()));
            if i % 4 == 0 && !buf.is_empty() {
                buf[0] = (buf[0] & 0x27) | (VERSION << 6); // exercise the accept path too
            }
            if let Ok((_, payload)) = decode_media(&buf) {
                assert!(!payload.is_empty() && payload.len() <= MAX_PAYLOAD);
                assert_eq!(payload.len() + HEADER_LEN, buf.len());
                ok += 1;
            }
            // The same bytes as a packet with a redundancy block.
            if let Some(b) = buf.first_mut() {
                *b |= REDUNDANCY_BIT;
            }
            if let Ok(a) = decode_audio(&buf) {
                let copies: usize = a.redundant.iter().map(|r| r.len()).sum();
                assert_eq!(HEADER_LEN + 1 + 2 * a.redundant.len() + copies + a.payload.len(), buf.len());
            }
        }
        assert!(ok > 1000, "accept path barely exercised: {ok}");
    }
}
