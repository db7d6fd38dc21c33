//! End-to-end tests: source -> sender -> (lossy, jittery) network -> receiver -> analysis.

use rand::{Rng, SeedableRng};

use crate::analysis::{dominant_frequency, rms};
use crate::device::NoDevices;
use crate::receiver::{MediaReceiver, ReceiveStats};
use crate::sender::MediaSender;
use crate::source::{open_source, SourceSpec};
use crate::{FRAME_MS, FRAME_SAMPLES, SAMPLE_RATE};

/// Sends `frames` frames of a 440 Hz tone, dropping packets with probability `loss` and
/// delaying each by 0..`jitter_ms`; returns everything played and the final stats.
fn run_call(frames: usize, loss: f64, jitter_ms: u64, seed: u64) -> (Vec<i16>, ReceiveStats) {
    let mut source = open_source(&SourceSpec::Tone(440.0), &NoDevices).unwrap();
    let input: Vec<Vec<i16>> = (0..frames).map(|_| source.next_frame()).collect();
    run_frames(&input, loss, jitter_ms, seed)
}

/// Like [`run_call`] with the given input frames.
fn run_frames(input: &[Vec<i16>], loss: f64, jitter_ms: u64, seed: u64) -> (Vec<i16>, ReceiveStats) {
    let frames = input.len();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut sender = MediaSender::with_initial(65_000, u32::MAX - 20_000).unwrap();
    let mut receiver = MediaReceiver::new(60).unwrap();

    // (arrival time, packet)
    let mut in_flight: Vec<(u64, Vec<u8>)> = Vec::new();
    for (i, frame) in input.iter().enumerate() {
        let pkt = sender.next_packet(frame).unwrap();
        if rng.gen_bool(loss) {
            continue;
        }
        let delay = 5 + if jitter_ms > 0 { rng.gen_range(0..jitter_ms) } else { 0 };
        in_flight.push((i as u64 * FRAME_MS + delay, pkt));
    }
    assert_eq!(sender.frames_sent(), frames as u64);
    in_flight.sort_by_key(|(t, _)| *t);

    let mut out = Vec::new();
    let mut next = 0;
    let end = (frames as u64 + 20) * FRAME_MS;
    let mut now = 0;
    while now <= end {
        while next < in_flight.len() && in_flight[next].0 <= now {
            receiver.on_packet(&in_flight[next].1, in_flight[next].0).unwrap();
            next += 1;
        }
        if let Some(frame) = receiver.play(now) {
            assert_eq!(frame.len(), FRAME_SAMPLES);
            out.extend(frame);
        }
        now += FRAME_MS;
    }
    (out, receiver.stats())
}

#[test]
fn clean_call_carries_440_hz() {
    let (out, stats) = run_call(150, 0.0, 0, 1);
    let f = dominant_frequency(&out, SAMPLE_RATE).expect("audio not silent");
    assert!((f - 440.0).abs() <= 3.0, "dominant {f} Hz");
    assert!(rms(&out) > 3000.0, "rms {}", rms(&out));
    assert_eq!(stats.packets_received, 150);
    assert_eq!((stats.loss_before_fec_pct, stats.frames_recovered_fec), (0.0, 0));
    assert!(stats.frames_played >= 150);
    assert_eq!(stats.loss_pct, 0.0);
    assert!(stats.jitter_ms < 0.01, "{}", stats.jitter_ms);
}

#[test]
fn lossy_jittery_call_still_carries_440_hz() {
    let (out, stats) = run_call(250, 0.10, 30, 7);
    let f = dominant_frequency(&out, SAMPLE_RATE).expect("audio not silent");
    eprintln!("lossy call: {f} Hz, {stats:?}");
    assert!((f - 440.0).abs() <= 3.0, "dominant {f} Hz");
    assert!(stats.frames_concealed + stats.frames_recovered_fec > 0, "{stats:?}");
    assert!((5.0..15.0).contains(&stats.loss_pct), "{stats:?}");
    assert!(stats.jitter_ms > 1.0, "{stats:?}");
    assert!(stats.packets_received < 250);
}

#[test]
fn lossy_speech_call_uses_fec() {
    let input = crate::fec::tests::speechy(250);
    let (out, stats) = run_frames(&input, 0.10, 20, 3);
    assert!(rms(&out) > 1000.0, "rms {}", rms(&out));
    assert!(stats.frames_recovered_fec > 5, "{stats:?}");
    assert!(stats.frames_concealed > 0, "{stats:?}");
}
