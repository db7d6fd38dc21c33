//! Sending side: encodes frames and wraps them in media packets; adapts the encoder's
//! in-band FEC to the loss the receiver reports.

use crate::codec::{Encoder, DEFAULT_EXPECTED_LOSS_PCT};
use std::collections::VecDeque;

use crate::packet::{encode_media_redundant, MediaHeader, MAX_REDUNDANCY};
use crate::report::ReceiverReport;
use crate::{MediaError, FRAME_SAMPLES};

/// Weight of a new RTT sample in the smoothed RTT (as TCP's SRTT).
const RTT_GAIN: f64 = 0.125;
/// Weight of a new loss report when the loss is falling (rises are taken at once).
const LOSS_DECAY_GAIN: f64 = 0.3;
/// Largest expected-loss setting given to the encoder, in percent.
const MAX_EXPECTED_LOSS_PCT: u8 = 40;
/// Smoothed reported loss (percent) from which each packet also repeats the previous
/// frame whole, from which it repeats the two previous frames, and from which the three
/// previous ones. Lost packets are then restored exactly instead of from the coarser
/// in-band FEC; the residual loss is about p² (one copy), p³ (two) or p⁴ (three), e.g.
/// 0.1 % at 10 % loss with two, 0.16 % at 20 % with three (0.8 % with two). Costs one to
/// three frames' worth of bitrate and one jitter-buffer frame per copy, only while loss
/// is reported.
pub const REDUNDANCY_LOSS_PCT: [f64; MAX_REDUNDANCY] = [1.0, 4.0, 15.0];
/// Largest media packet built with redundancy, in bytes: copies that would exceed it are
/// left out (the path's datagrams are at most 1500 bytes with its own overhead).
const MAX_REDUNDANT_PACKET: usize = 1200;

/// Encoder plus sequence/timestamp state for one outgoing stream.
#[derive(Debug)]
pub struct MediaSender {
    encoder: Encoder,
    seq: u16,
    timestamp: u32,
    frames_sent: u64,
    remote_loss_pct: Option<f64>,
    expected_loss_pct: u8,
    srtt_ms: Option<f64>,
    last_report: Option<ReceiverReport>,
    /// Opus packets of the last frames sent, newest first.
    history: VecDeque<Vec<u8>>,
    redundancy: usize,
}

impl MediaSender {
    /// Creates a sender whose sequence number and timestamp start at random values
    /// (as RTP recommends).
    pub fn new() -> Result<Self, MediaError> {
        Self::with_initial(rand::random(), rand::random())
    }

    /// Creates a sender starting at the given sequence number and timestamp.
    pub fn with_initial(seq: u16, timestamp: u32) -> Result<Self, MediaError> {
        Ok(MediaSender {
            encoder: Encoder::new()?,
            seq,
            timestamp,
            frames_sent: 0,
            remote_loss_pct: None,
            expected_loss_pct: DEFAULT_EXPECTED_LOSS_PCT,
            srtt_ms: None,
            last_report: None,
            history: VecDeque::with_capacity(MAX_REDUNDANCY + 1),
            redundancy: 0,
        })
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
        let mut copies: Vec<&[u8]> = Vec::with_capacity(self.redundancy);
        let mut size = opus.len() + crate::packet::HEADER_LEN + 1;
        for old in self.history.iter().take(self.redundancy) {
            size += old.len() + 2;
            copies.push(if size <= MAX_REDUNDANT_PACKET { old } else { &[] });
        }
        let packet = encode_media_redundant(&header, &opus, &copies);
        self.history.push_front(opus);
        self.history.truncate(MAX_REDUNDANCY);
        Ok(packet)
    }

    /// Number of packets produced so far.
    pub fn frames_sent(&self) -> u64 {
        self.frames_sent
    }

    /// Sets the encoder's expected-loss percentage (its in-band FEC strength) directly;
    /// the next report overrides it.
    pub fn set_expected_loss(&mut self, pct: u8) -> Result<(), MediaError> {
        self.encoder.set_expected_loss(pct)?;
        self.expected_loss_pct = pct.min(100);
        Ok(())
    }

    /// Takes a receiver report about this stream, received at `now_ms` (the clock the
    /// local receiver's [`crate::receiver::MediaReceiver::make_report`] uses): smooths the
    /// reported loss (rises at once, falls gradually), sets the encoder's expected loss to
    /// it (rounded up, at most 40 %), and updates the RTT from the report's echo.
    pub fn on_report(&mut self, report: &ReceiverReport, now_ms: u64) -> Result<(), MediaError> {
        let loss = report.fraction_lost_pct();
        let smoothed = match self.remote_loss_pct {
            Some(prev) if loss < prev => prev + (loss - prev) * LOSS_DECAY_GAIN,
            _ => loss,
        };
        self.remote_loss_pct = Some(smoothed);
        if let Some(rtt) = report.rtt_ms(now_ms) {
            let rtt = f64::from(rtt);
            self.srtt_ms = Some(self.srtt_ms.map_or(rtt, |s| s + (rtt - s) * RTT_GAIN));
        }
        self.last_report = Some(*report);
        self.redundancy = REDUNDANCY_LOSS_PCT.iter().filter(|&&t| smoothed >= t).count();
        // In-band FEC only has to cover what redundancy leaves: a frame is lost for good
        // when its packet and the packets carrying its copies all are (independent loss
        // assumed), p^(d+1). The encoder's FEC takes its bits from the primary frame.
        let p = (smoothed / 100.0).clamp(0.0, 1.0);
        let residual = 100.0 * p.powi(self.redundancy as i32 + 1);
        let pct = (residual.ceil().clamp(0.0, f64::from(MAX_EXPECTED_LOSS_PCT))) as u8;
        if pct != self.expected_loss_pct {
            self.set_expected_loss(pct)?;
        }
        Ok(())
    }

    /// Parses a plaintext receiver report and applies it as [`Self::on_report`].
    pub fn on_report_bytes(&mut self, plaintext: &[u8], now_ms: u64) -> Result<(), MediaError> {
        let report = ReceiverReport::decode(plaintext)?;
        self.on_report(&report, now_ms)
    }

    /// Smoothed round-trip time of the media path from report echoes, in ms.
    pub fn rtt_ms(&self) -> Option<f64> {
        self.srtt_ms
    }

    /// Smoothed loss of this stream as reported by the receiver, in percent.
    pub fn remote_loss_pct(&self) -> Option<f64> {
        self.remote_loss_pct
    }

    /// Earlier frames each packet repeats (0..=[`MAX_REDUNDANCY`]), set by the reported loss.
    pub fn redundancy(&self) -> usize {
        self.redundancy
    }

    /// Expected-loss percentage the encoder is configured with.
    pub fn expected_loss_pct(&self) -> u8 {
        self.expected_loss_pct
    }

    /// The last receiver report received.
    pub fn last_report(&self) -> Option<&ReceiverReport> {
        self.last_report.as_ref()
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

    #[test]
    fn reports_drive_expected_loss_and_rtt() {
        use crate::receiver::MediaReceiver;
        let mut a_tx = MediaSender::with_initial(1, 1).unwrap();
        let mut a_rx = MediaReceiver::new(60).unwrap();
        let mut b_rx = MediaReceiver::new(60).unwrap();
        let pcm = vec![0i16; FRAME_SAMPLES];
        assert_eq!(a_tx.expected_loss_pct(), DEFAULT_EXPECTED_LOSS_PCT);
        assert_eq!((a_tx.rtt_ms(), a_tx.remote_loss_pct()), (None, None));
        // A sends 100 packets to B, one in five lost.
        for i in 0..100u64 {
            let p = a_tx.next_packet(&pcm).unwrap();
            if i % 5 != 2 {
                assert_eq!(b_rx.on_packet(&p, i * 20).unwrap(), None);
            }
        }
        // A's receiver reports first (at 2000, A's clock); it reaches B after 40 ms.
        let a_report = a_rx.make_report(2000);
        assert!(b_rx.on_packet(&a_report, 2040).unwrap().is_some());
        // B reports 300 ms later; it reaches A after another 40 ms: RTT 80.
        let b_report = b_rx.make_report(2340);
        let parsed = a_rx.on_packet(&b_report, 2380).unwrap().unwrap();
        assert_eq!(parsed.cumulative_lost, 20);
        a_tx.on_report(&parsed, 2380).unwrap();
        assert_eq!(a_tx.rtt_ms(), Some(80.0));
        let loss = a_tx.remote_loss_pct().unwrap();
        assert!((19.0..=20.5).contains(&loss), "{loss}");
        // At 20 % loss each packet also carries the three previous frames whole; in-band
        // FEC is only asked to cover what that leaves (0.2⁴ = 0.16 %, rounded up).
        assert_eq!((a_tx.redundancy(), a_tx.expected_loss_pct()), (3, 1));
        let sent: Vec<Vec<u8>> = (0..4).map(|_| a_tx.next_packet(&pcm).unwrap()).collect();
        let p: Vec<_> = sent.iter().map(|b| crate::packet::decode_audio(b).unwrap()).collect();
        assert_eq!(p[3].redundant, vec![p[2].payload, p[1].payload, p[0].payload]);
        assert_eq!(p[3].header.seq, p[0].header.seq.wrapping_add(3));
        // Loss stops: the setting falls gradually, not at once.
        for i in 100..200u64 {
            let p = a_tx.next_packet(&pcm).unwrap();
            b_rx.on_packet(&p, i * 20).unwrap();
        }
        a_tx.on_report_bytes(&b_rx.make_report(4000), 4100).unwrap();
        let e = a_tx.remote_loss_pct().unwrap();
        assert!((10.0..19.0).contains(&e), "{e}");
        assert_eq!(a_tx.redundancy(), if e >= 15.0 { 3 } else { 2 });
        // Once loss has stayed away the redundancy stops.
        for t in 1..20u64 {
            for i in 0..50u64 {
                let p = a_tx.next_packet(&pcm).unwrap();
                b_rx.on_packet(&p, 4000 + t * 1000 + i * 20).unwrap();
            }
            a_tx.on_report_bytes(&b_rx.make_report(5000 + t * 1000), 5100 + t * 1000).unwrap();
        }
        assert_eq!(a_tx.redundancy(), 0);
        assert!(a_tx.expected_loss_pct() <= 1);
        let (h, _) = decode_media(&a_tx.next_packet(&pcm).unwrap()).unwrap();
        assert_eq!(crate::packet::decode_audio(&encode_media_redundant(&h, &[1], &[])).unwrap().redundant.len(), 0);
        assert!(a_tx.on_report_bytes(&[0x51, 1, 2], 0).is_err());
    }
}
