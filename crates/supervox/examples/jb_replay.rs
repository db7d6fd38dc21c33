//! Offline voice-quality experiment: the bench's call, in virtual time and in one
//! process. A 48 kHz mono WAV is encoded by a `MediaSender`, sent through the same
//! impaired-link decisions as the quality bench (`supervox_netlab::Shaper`, 25 ms
//! base delay), received by a `MediaReceiver` ticking every 20 ms, and the played
//! audio is written to a WAV for `bench/pesq_score.py`. Receiver reports travel
//! back through a second shaper and drive the sender's FEC, as in a real call.
//!
//! Deterministic for a seed: used to study the jitter buffer without the noise of
//! real processes on a shared machine.
//!
//! usage: jb_replay IN.wav OUT.wav supervox|tox [IMPAIRMENT] [SEED] [TICK_NOISE_MS]
//! (IMPAIRMENT as for `supervox-impair`, e.g. `loss=10%,jitter=20ms`; the 25 ms base
//! delay is added.) Prints one JSON line of receiver statistics.

use std::str::FromStr;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use supervox_media::receiver::MediaReceiver;
use supervox_media::sender::MediaSender;
use supervox_media::{FRAME_MS, FRAME_SAMPLES};
use supervox_netlab::{Impairment, Shaper, Verdict};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: jb_replay IN.wav OUT.wav supervox|tox [IMPAIRMENT] [SEED] [TICK_NOISE_MS]");
        std::process::exit(2);
    }
    let reader = hound::WavReader::open(&args[1]).expect("input wav");
    let spec = reader.spec();
    assert!(spec.sample_rate == 48_000 && spec.channels == 1, "need 48 kHz mono");
    let input: Vec<i16> = reader.into_samples::<i16>().map(|s| s.expect("sample")).collect();
    let tox = args[3] == "tox";
    // `fixed:N`: our engine (stretching, FEC) around a fixed N ms target.
    let fixed: Option<u64> = args[3].strip_prefix("fixed:").map(|n| n.parse().expect("fixed:N"));
    assert!(tox || fixed.is_some() || args[3] == "supervox", "unknown pipeline {}", args[3]);
    let imp_spec = match args.get(4).filter(|s| !s.is_empty()) {
        Some(s) => format!("delay=25ms,{s}"),
        None => "delay=25ms".to_string(),
    };
    let seed: u64 = args.get(5).map_or(7, |s| s.parse().expect("seed"));
    let tick_noise: f64 = args.get(6).map_or(0.0, |s| s.parse().expect("tick noise"));
    let imp = Impairment::from_str(&imp_spec).expect("impairment");
    let mut fwd = Shaper::new(imp.clone(), seed);
    let mut back = Shaper::new(imp, seed ^ 0x5555);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed.wrapping_add(99));

    let mut tx = MediaSender::new().expect("encoder");
    if tox {
        tx.set_expected_loss(0).expect("fec off");
    }
    let mut rx = match fixed {
        Some(n) => MediaReceiver::with_jitter_buffer(supervox_media::jitter::JitterBuffer::new(n)),
        None if tox => MediaReceiver::baseline(),
        None => MediaReceiver::new(60),
    }
    .expect("decoder");
    let epoch = Instant::now();
    let to_ms = |i: Instant| i.duration_since(epoch).as_secs_f64() * 1000.0;
    let at = |ms: f64| epoch + Duration::from_secs_f64(ms / 1000.0);
    // Base of the virtual wall clock (a large value, as real clocks are).
    const T0: u64 = 1_000_000;
    let mut in_flight: Vec<(f64, Vec<u8>)> = Vec::new();
    let mut reports: Vec<(f64, Vec<u8>)> = Vec::new();
    let mut out: Vec<i16> = Vec::new();
    let frames = input.len() / FRAME_SAMPLES + 150;
    let phase = rng.gen_range(0.0..20.0);
    let mut targets = Vec::new();
    for k in 1..=frames as u64 {
        let t = (k * FRAME_MS) as f64;
        let jit = |rng: &mut rand::rngs::StdRng| if tick_noise > 0.0 { rng.gen_range(0.0..tick_noise) } else { 0.0 };
        let send_at = t + jit(&mut rng);
        let frame: Vec<i16> = input
            .chunks(FRAME_SAMPLES)
            .nth(k as usize - 1)
            .map(|c| {
                let mut v = c.to_vec();
                v.resize(FRAME_SAMPLES, 0);
                v
            })
            .unwrap_or_else(|| vec![0; FRAME_SAMPLES]);
        let pkt = tx.next_packet(&frame).expect("encode");
        if let Verdict::Release(r) = fwd.admit(at(send_at), pkt.len()) {
            in_flight.push((to_ms(r), pkt));
        }
        let now_f = t + phase + jit(&mut rng);
        let now = T0 + now_f as u64;
        in_flight.sort_by(|a, b| a.0.total_cmp(&b.0));
        while in_flight.first().is_some_and(|p| p.0 <= now_f) {
            let (arr, pkt) = in_flight.remove(0);
            rx.on_packet(&pkt, T0 + arr as u64).expect("packet");
        }
        reports.sort_by(|a, b| a.0.total_cmp(&b.0));
        while reports.first().is_some_and(|p| p.0 <= send_at) {
            let (arr, r) = reports.remove(0);
            if !tox {
                tx.on_report_bytes(&r, T0 + arr as u64).expect("report");
            }
        }
        if k % 50 == 0 {
            let r = rx.make_report(now);
            if let Verdict::Release(rel) = back.admit(at(now_f), r.len()) {
                reports.push((to_ms(rel), r));
            }
        }
        if let Some(pcm) = rx.play(now) {
            out.extend_from_slice(&pcm);
        }
        targets.push(rx.stats().target_delay_ms);
    }
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 48_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(&args[2], spec).expect("output wav");
    for s in out {
        w.write_sample(s).expect("write");
    }
    w.finalize().expect("finalize");
    let s = rx.stats();
    let c = rx.engine().counters();
    let mean_target = targets.iter().sum::<f64>() / targets.len().max(1) as f64;
    let changes = targets.windows(2).filter(|w| w[0] != w[1]).count();
    println!(
        "{{\"loss_before_fec\":{:.2},\"loss_after_fec\":{:.2},\"mean_playout_ms\":{:.1},\"concealed\":{},\"expanded_frames\":{},\"dropped\":{},\"samples_compressed\":{},\"samples_expanded\":{},\"late\":{},\"red\":{},\"fec\":{},\"mean_target\":{:.1},\"target_changes\":{}}}",
        s.loss_before_fec_pct,
        s.loss_after_fec_pct,
        s.mean_playout_delay_ms,
        c.frames_concealed,
        c.frames_expanded,
        c.frames_dropped,
        c.samples_compressed,
        c.samples_expanded,
        s.packets_late,
        c.frames_recovered_redundancy,
        c.frames_recovered_fec,
        mean_target,
        changes
    );
}
