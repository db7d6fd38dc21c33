//! Added delay of the media pipeline on a clean link, and the adaptive jitter buffer's
//! settling time after a jitter step.
//!
//! A 30 s signal of 10 ms 1 kHz tone bursts (every 250 ms, off the frame grid) is
//! encoded frame by frame, sent over a link that adds no delay, and played at 20 ms
//! ticks. The added delay of each burst is the time its onset is played minus the time
//! it was captured: framing, Opus look-ahead, jitter buffer and decoded-audio buffer
//! (no network, no device buffers). Run with `cargo bench -p supervox-media`.

use rand::{Rng, SeedableRng};
use supervox_media::receiver::MediaReceiver;
use supervox_media::sender::MediaSender;
use supervox_media::{FRAME_MS, FRAME_SAMPLES};

const SPMS: usize = 48;
const BURST_EVERY_MS: usize = 250;
const BURST_AT_MS: usize = 7;
const BURST_LEN_MS: usize = 10;

fn input(ms: usize) -> Vec<i16> {
    (0..ms * SPMS)
        .map(|n| {
            let t = n % (BURST_EVERY_MS * SPMS);
            if (BURST_AT_MS * SPMS..(BURST_AT_MS + BURST_LEN_MS) * SPMS).contains(&t) {
                (12_000.0 * (n as f64 * 1000.0 * std::f64::consts::TAU / 48_000.0).sin()) as i16
            } else {
                0
            }
        })
        .collect()
}

struct Outcome {
    /// Added delay of each burst after the first `skip_ms`, in ms.
    delays: Vec<f64>,
    all_delays: Vec<f64>,
    stats_pipeline_ms: f64,
    /// (tick ms, target ms)
    targets: Vec<(u64, f64)>,
}

/// Sends `ms` of signal; `jitter(t)` gives the extra network delay of a packet sent at
/// `t`; the receiver ticks `phase` ms after the sender.
fn call(mut rx: MediaReceiver, ms: usize, phase: u64, mut jitter: impl FnMut(u64) -> u64, skip_ms: f64) -> Outcome {
    let signal = input(ms);
    let mut tx = MediaSender::with_initial(100, 1000).expect("encoder");
    let mut in_flight: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut out: Vec<(f64, i16)> = Vec::new();
    let mut targets = Vec::new();
    let frames = signal.len() / FRAME_SAMPLES;
    for k in 1..=frames as u64 + 50 {
        let t = k * FRAME_MS;
        if let Some(frame) = signal.chunks(FRAME_SAMPLES).nth(k as usize - 1) {
            // Frame k-1 was captured during [t - 20, t) and is sent at t.
            let pkt = tx.next_packet(frame).expect("encode");
            in_flight.push((t + jitter(t), pkt));
        }
        let now = t + phase;
        in_flight.sort_by_key(|p| p.0);
        while in_flight.first().is_some_and(|p| p.0 <= now) {
            let (at, pkt) = in_flight.remove(0);
            rx.on_packet(&pkt, at).expect("packet");
        }
        if let Some(pcm) = rx.play(now) {
            out.extend(pcm.iter().enumerate().map(|(j, &s)| (now as f64 + j as f64 / SPMS as f64, s)));
        }
        targets.push((now, rx.stats().target_delay_ms));
    }
    // Onsets: first sample above a quarter of the burst amplitude after 100 ms of quiet.
    let mut onsets = Vec::new();
    let mut last_loud = f64::MIN;
    for &(t, s) in &out {
        if i32::from(s).abs() > 3000 {
            if t - last_loud > 100.0 {
                onsets.push(t);
            }
            last_loud = t;
        }
    }
    let all_delays: Vec<f64> = onsets
        .iter()
        .map(|&t| {
            let b = ((t - BURST_AT_MS as f64) / BURST_EVERY_MS as f64).floor();
            t - (b * BURST_EVERY_MS as f64 + BURST_AT_MS as f64)
        })
        .collect();
    let delays = onsets.iter().zip(&all_delays).filter(|(&t, _)| t >= skip_ms).map(|(_, &d)| d).collect();
    Outcome { delays, all_delays, stats_pipeline_ms: rx.pipeline_delay_ms(), targets }
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

fn settle(targets: &[(u64, f64)], change: u64) -> (f64, f64) {
    let mut steady: Vec<f64> =
        targets.iter().filter(|t| (change + 3_000..change + 10_000).contains(&t.0)).map(|t| t.1).collect();
    steady.sort_by(f64::total_cmp);
    let s = steady[steady.len() / 2];
    let last_out = targets
        .iter()
        .filter(|t| (change..change + 10_000).contains(&t.0) && (t.1 - s).abs() > 0.1 * s)
        .map(|t| t.0 + FRAME_MS)
        .max()
        .unwrap_or(change);
    ((last_out - change) as f64, s)
}

fn main() {
    println!("Media pipeline added delay on a clean link (capture -> playout, no network/devices)");
    println!(
        "{:<34} {:>6} {:>10} {:>10} {:>8} {:>8} {:>12}",
        "receiver", "phase", "mean", "steady", "min", "max", "stats est."
    );
    for (name, adaptive) in [("adaptive (initial 60 ms)", true), ("Tox-like fixed 3 packets", false)] {
        let mut steady_all = Vec::new();
        for phase in [0u64, 5, 10, 15] {
            let rx = if adaptive { MediaReceiver::new(60) } else { MediaReceiver::baseline() }.expect("decoder");
            let o = call(rx, 30_000, phase, |_| 0, 5_000.0);
            let min = o.delays.iter().copied().fold(f64::MAX, f64::min);
            let max = o.delays.iter().copied().fold(0.0, f64::max);
            steady_all.extend(&o.delays);
            println!(
                "{:<34} {:>4}ms {:>8.1}ms {:>8.1}ms {:>6.1}ms {:>6.1}ms {:>10.1}ms",
                name,
                phase,
                mean(&o.all_delays),
                mean(&o.delays),
                min,
                max,
                o.stats_pipeline_ms
            );
        }
        println!("{:<34} {:>6} {:>10} {:>8.1}ms", name, "all", "", mean(&steady_all));
    }
    println!("(mean: whole 30 s call incl. the start-up target; steady: after 5 s; stats est.: 20 ms framing");
    println!(" + 6.5 ms Opus look-ahead + the receiver's own mean playout delay)");
    println!();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let rx = MediaReceiver::new(60).expect("decoder");
    let o = call(rx, 30_000, 0, |t| if (10_000..20_000).contains(&t) { rng.gen_range(0..40) } else { 0 }, 0.0);
    let (up, s_up) = settle(&o.targets, 10_000);
    let (down, s_down) = settle(&o.targets, 20_000);
    println!("Adaptive target after a jitter step (time to stay within 10 % of the new steady target)");
    println!("{:<22} {:>14} {:>12}", "step", "steady target", "settled in");
    println!("{:<22} {:>12.0}ms {:>10.0}ms", "0 -> 0..40 ms jitter", s_up, up);
    println!("{:<22} {:>12.0}ms {:>10.0}ms", "0..40 -> 0 ms jitter", s_down, down);
}
