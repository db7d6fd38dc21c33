//! Property tests: parsers never panic on arbitrary bytes, and arbitrary packet orders,
//! losses and arrival times keep the jitter buffer and playout bounded.

use proptest::prelude::*;

use crate::jitter::{JitterBuffer, MAX_FRAMES};
use crate::packet::{decode_media, decode_packet, encode_media, MediaHeader};
use crate::playout::{Adjust, FrameDecoder, PlayoutEngine};
use crate::receiver::MediaReceiver;
use crate::report::ReceiverReport;
use crate::{MediaError, FRAME_MS, FRAME_SAMPLES};

struct Zeros;

impl FrameDecoder for Zeros {
    fn decode(&mut self, p: &[u8]) -> Result<Vec<i16>, MediaError> {
        Ok(vec![i16::from(p.first().copied().unwrap_or(0)) * 50; FRAME_SAMPLES])
    }
    fn conceal(&mut self) -> Result<Vec<i16>, MediaError> {
        Ok(vec![0; FRAME_SAMPLES])
    }
    fn recover(&mut self, _next: &[u8]) -> Option<Vec<i16>> {
        None
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1400), first in any::<u8>()) {
        let _ = decode_media(&bytes);
        let _ = decode_packet(&bytes);
        let _ = ReceiverReport::decode(&bytes);
        let mut tweaked = bytes.clone();
        if let Some(b) = tweaked.first_mut() {
            *b = first; // reach both the audio and the report paths
        }
        let _ = decode_packet(&tweaked);
        let _ = ReceiverReport::decode(&tweaked);
    }

    #[test]
    fn receiver_survives_arbitrary_packets(
        packets in proptest::collection::vec((proptest::collection::vec(any::<u8>(), 0..64), 0u64..100), 0..60),
    ) {
        let mut rx = MediaReceiver::new(60).unwrap();
        let mut now = 0;
        for (mut bytes, dt) in packets {
            if bytes.len() > 8 && dt % 2 == 0 {
                bytes[0] = (bytes[0] & 0x3f) | 0x40; // valid version more often
            }
            now += dt;
            let _ = rx.on_packet(&bytes, now);
            if let Some(frame) = rx.play(now) {
                prop_assert_eq!(frame.len(), FRAME_SAMPLES);
            }
        }
        let _ = rx.make_report(now);
        let s = rx.stats();
        prop_assert!(s.loss_after_fec_pct <= s.loss_before_fec_pct + 1e-9);
        prop_assert!((1.0..=4.5).contains(&rx.mos(50.0)));
    }

    #[test]
    fn arbitrary_orders_and_losses_stay_bounded(
        seq0 in any::<u16>(),
        ts0 in any::<u32>(),
        // Per packet: dropped?, network delay, and a restart marker now and then.
        script in proptest::collection::vec((any::<bool>(), 0u64..800, 0u8..100), 1..400),
        tick_phase in 0u64..20,
    ) {
        let mut arrivals: Vec<(u64, MediaHeader)> = script
            .iter()
            .enumerate()
            .filter(|(_, (drop, _, _))| !drop)
            .map(|(i, &(_, delay, m))| {
                let h = MediaHeader {
                    seq: seq0.wrapping_add(i as u16),
                    timestamp: ts0.wrapping_add(i as u32 * 960),
                    marker: m == 0,
                };
                (i as u64 * FRAME_MS + delay, h)
            })
            .collect();
        arrivals.sort_by_key(|a| a.0);
        let mut engine = PlayoutEngine::new(JitterBuffer::adaptive(80), Adjust::Stretch, true);
        let mut next = 0;
        let end = script.len() as u64 * FRAME_MS + 2_000;
        let mut now = tick_phase;
        while now < end {
            while next < arrivals.len() && arrivals[next].0 <= now {
                let (at, h) = arrivals[next];
                engine.jitter_mut().push(h, vec![h.seq as u8], at);
                next += 1;
            }
            if let Some(f) = engine.tick(&mut Zeros, now) {
                prop_assert_eq!(f.len(), FRAME_SAMPLES);
            }
            prop_assert!(engine.jitter().len() <= MAX_FRAMES);
            prop_assert!(engine.sync_len() <= 3 * FRAME_SAMPLES, "sync {}", engine.sync_len());
            prop_assert!(engine.jitter().target_delay_ms() <= 500);
            prop_assert!(engine.playout_delay_ms() <= 540.0, "delay {}", engine.playout_delay_ms());
            now += FRAME_MS;
        }
    }

    #[test]
    fn media_round_trip(seq in any::<u16>(), ts in any::<u32>(), marker in any::<bool>(),
                        payload in proptest::collection::vec(any::<u8>(), 1..1275)) {
        let h = MediaHeader { seq, timestamp: ts, marker };
        let bytes = encode_media(&h, &payload);
        let (h2, p2) = decode_media(&bytes).unwrap();
        prop_assert_eq!(h2, h);
        prop_assert_eq!(p2, &payload[..]);
    }
}
