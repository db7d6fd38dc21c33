//! RTCP-like receiver reports, sent on the media path (about once a second) by the
//! receiving side of a stream to its sender.
//!
//! They carry the receiver's loss and jitter figures (which drive the sender's Opus
//! expected-loss setting, hence its in-band FEC) and an echo of the last report received
//! from the peer, from which the peer computes the round-trip time as RTCP does with
//! LSR/DLSR: `rtt = now - echo_ts - echo_delay`, all in the peer's own clock.
//!
//! Layout (26 bytes; longer input is accepted and the excess ignored, for extensions):
//!
//! ```text
//!  byte 0:     vv 0 1 000e  vv = version (1), type bit set (report),
//!                           e = echo fields valid
//!  byte 1:     fraction lost since the previous report, in 1/256 (RFC 3550)
//!  bytes 2-5:  cumulative packets lost, u32 big-endian (saturating, never negative)
//!  bytes 6-9:  extended highest sequence number received, u32 big-endian
//!  bytes 10-13: interarrival jitter in 48 kHz timestamp units, u32 big-endian
//!  bytes 14-17: report_ts: reporter's clock when sending, ms (low 32 bits)
//!  bytes 18-21: echo_ts: report_ts of the last report the reporter received
//!  bytes 22-25: echo_delay: ms between receiving that report and sending this one
//! ```

use crate::packet::{REPORT_BIT, VERSION};
use crate::MediaError;

/// Length of an encoded report.
pub const REPORT_LEN: usize = 26;
const ECHO_BIT: u8 = 0x01;

/// Echo of the last report received from the peer, for its RTT measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Echo {
    /// The peer's `report_ts`, as received.
    pub ts: u32,
    /// Milliseconds between receiving it and sending this report.
    pub delay_ms: u32,
}

/// A receiver report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiverReport {
    /// Fraction of packets lost since the previous report, in 1/256.
    pub fraction_lost_q8: u8,
    /// Packets lost since the stream started (expected minus received, ≥ 0).
    pub cumulative_lost: u32,
    /// Extended highest sequence number received (wrap count in the high 16 bits).
    pub highest_seq: u32,
    /// RFC 3550 interarrival jitter in 48 kHz timestamp units.
    pub jitter_ts: u32,
    /// Reporter's clock when the report was made, in ms (low 32 bits).
    pub report_ts: u32,
    /// Echo of the peer's last report, if one was received.
    pub echo: Option<Echo>,
}

impl ReceiverReport {
    /// Loss since the previous report in percent.
    pub fn fraction_lost_pct(&self) -> f64 {
        f64::from(self.fraction_lost_q8) * 100.0 / 256.0
    }

    /// Jitter in milliseconds.
    pub fn jitter_ms(&self) -> f64 {
        f64::from(self.jitter_ts) / (crate::SAMPLE_RATE as f64 / 1000.0)
    }

    /// Serialises the report (plaintext; the caller encrypts it like audio).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(REPORT_LEN);
        let mut b0 = (VERSION << 6) | REPORT_BIT;
        if self.echo.is_some() {
            b0 |= ECHO_BIT;
        }
        out.push(b0);
        out.push(self.fraction_lost_q8);
        out.extend_from_slice(&self.cumulative_lost.to_be_bytes());
        out.extend_from_slice(&self.highest_seq.to_be_bytes());
        out.extend_from_slice(&self.jitter_ts.to_be_bytes());
        out.extend_from_slice(&self.report_ts.to_be_bytes());
        let echo = self.echo.unwrap_or(Echo { ts: 0, delay_ms: 0 });
        out.extend_from_slice(&echo.ts.to_be_bytes());
        out.extend_from_slice(&echo.delay_ms.to_be_bytes());
        out
    }

    /// Parses a report. Rejects short input, another version and audio packets. Never
    /// panics.
    pub fn decode(bytes: &[u8]) -> Result<Self, MediaError> {
        let Some((b, _)) = bytes.split_first_chunk::<REPORT_LEN>() else {
            return Err(MediaError::PacketTooShort { len: bytes.len(), min: REPORT_LEN });
        };
        let version = b[0] >> 6;
        if version != VERSION {
            return Err(MediaError::BadVersion(version));
        }
        if b[0] & REPORT_BIT == 0 {
            return Err(MediaError::NotReport);
        }
        let u32_at = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let echo = (b[0] & ECHO_BIT != 0).then(|| Echo { ts: u32_at(18), delay_ms: u32_at(22) });
        Ok(ReceiverReport {
            fraction_lost_q8: b[1],
            cumulative_lost: u32_at(2),
            highest_seq: u32_at(6),
            jitter_ts: u32_at(10),
            report_ts: u32_at(14),
            echo,
        })
    }

    /// Round-trip time this report implies when received at `now_ms` (same clock as the
    /// receiver's reports echoed here), or `None` without an echo. Implausible values
    /// (over 60 s, from a clock mix-up) are rejected.
    pub fn rtt_ms(&self, now_ms: u64) -> Option<u32> {
        let echo = self.echo?;
        let rtt = (now_ms as u32).wrapping_sub(echo.ts).wrapping_sub(echo.delay_ms);
        (rtt <= 60_000).then_some(rtt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{decode_media, decode_packet, encode_media, Incoming, MediaHeader};

    fn sample() -> ReceiverReport {
        ReceiverReport {
            fraction_lost_q8: 26,
            cumulative_lost: 1234,
            highest_seq: 0x0003_fff0,
            jitter_ts: 960,
            report_ts: u32::MAX - 5,
            echo: Some(Echo { ts: 77, delay_ms: 250 }),
        }
    }

    #[test]
    fn round_trip_and_dispatch() {
        let r = sample();
        let bytes = r.encode();
        assert_eq!(bytes.len(), REPORT_LEN);
        assert_eq!(bytes[0], 0x51);
        assert_eq!(ReceiverReport::decode(&bytes).unwrap(), r);
        assert_eq!(decode_packet(&bytes).unwrap(), Incoming::Report(r));
        assert!(matches!(decode_media(&bytes), Err(MediaError::NotAudio)));
        let none = ReceiverReport { echo: None, ..r };
        assert_eq!(ReceiverReport::decode(&none.encode()).unwrap(), none);
        let mut longer = bytes.clone();
        longer.push(9);
        assert_eq!(ReceiverReport::decode(&longer).unwrap(), r);
        assert!((r.fraction_lost_pct() - 10.15625).abs() < 1e-9);
        assert!((r.jitter_ms() - 20.0).abs() < 1e-9);
        let audio = encode_media(&MediaHeader { seq: 1, timestamp: 2, marker: true }, &[1, 2]);
        assert!(matches!(decode_packet(&audio), Ok(Incoming::Audio(a)) if a.payload == [1, 2]));
        assert!(matches!(ReceiverReport::decode(&[audio.clone(), vec![0; 30]].concat()), Err(MediaError::NotReport)));
    }

    #[test]
    fn rejects_malformed() {
        let bytes = sample().encode();
        for len in 0..REPORT_LEN {
            assert!(ReceiverReport::decode(&bytes[..len]).is_err());
        }
        let mut bad = bytes.clone();
        bad[0] = 0x91;
        assert!(matches!(ReceiverReport::decode(&bad), Err(MediaError::BadVersion(2))));
    }

    #[test]
    fn rtt_from_echo_across_clock_wrap() {
        let mut r = sample();
        r.echo = Some(Echo { ts: u32::MAX - 100, delay_ms: 300 });
        // Sent at u32::MAX - 100, peer held it 300 ms, back 450 ms after sending.
        let now = (1u64 << 32) + 349;
        assert_eq!(r.rtt_ms(now), Some(150));
        r.echo = Some(Echo { ts: 1000, delay_ms: 5000 }); // delay longer than elapsed
        assert_eq!(r.rtt_ms(2000), None);
        r.echo = None;
        assert_eq!(r.rtt_ms(2000), None);
    }
}
