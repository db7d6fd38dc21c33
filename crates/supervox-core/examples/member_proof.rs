//! Time to solve a supernode's member proof (`overlay::admission::solve`)
//! on this machine, for BENCHMARKS.md.
//!
//! `cargo run --release -p supervox-core --example member_proof -- [DIFFICULTY] [RUNS]`
//! (defaults: the default difficulty, 7 runs). Each run solves for a new
//! random key on one core and prints the time and the hashes tried; the
//! summary gives min / median / max and the hash rate, from which an
//! attacker's cost (about N · 2^difficulty hashes per name it targets among N
//! members) follows.

use std::time::Instant;
use supervox_core::overlay::admission::{self, Prover, DEFAULT_DIFFICULTY};
use supervox_proto::UserId;

fn main() {
    let mut args = std::env::args().skip(1);
    let difficulty: u8 = args.next().and_then(|a| a.parse().ok()).unwrap_or(DEFAULT_DIFFICULTY);
    let runs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(7);
    let network = supervox_core::overlay::wire::NetworkKey::open_network().bytes();
    let mut times = Vec::new();
    let mut hashes = 0u64;
    for run in 0..runs {
        let id = UserId(rand::random());
        let t = Instant::now();
        let nonce = admission::solve(&network, &id, difficulty).expect("solvable");
        let dt = t.elapsed().as_secs_f64();
        assert!(admission::verify(&network, &id, nonce, difficulty).is_some());
        hashes += u64::from(nonce) + 1;
        println!("run {run}: {dt:.3} s, {} hashes", u64::from(nonce) + 1);
        times.push(dt);
    }
    // One verification: one hash.
    let (p, t) = (Prover::new(&network, &UserId([7; 32])), Instant::now());
    let n = 1_000_000u32;
    let mut acc = 0u8;
    for k in 0..n {
        acc ^= p.hash(k)[0];
    }
    let per_hash = t.elapsed().as_secs_f64() / f64::from(n);
    times.sort_by(|a, b| a.total_cmp(b));
    let total: f64 = times.iter().sum();
    println!(
        "difficulty {difficulty}: min {:.3} s, median {:.3} s, max {:.3} s over {runs} runs; {:.1} M hashes/s while solving; one hash {:.0} ns ({acc})",
        times[0],
        times[runs / 2],
        times[runs - 1],
        hashes as f64 / total / 1e6,
        per_hash * 1e9,
    );
}
