//! Idle cost (issue 11): how often an idle signed-in node and its idle
//! supernode wake up, and the CPU they use, measured from `/proc` (context
//! switches summed over every thread, utime + stime) over a quiet window.
//!
//! `cargo bench -p supervox --bench idle` (release build). One supernode and
//! one node on loopback; the window starts once the node is signed in and
//! its NAT probe has finished. `SUPERVOX_IDLE_SECS` sets the window (default
//! 30 s). The supernode with 10 000 idle clients is measured by the
//! capacity bench (`SUPERVOX_CAPACITY_CLIENTS=10000 cargo bench -p supervox
//! --bench capacity`), which reports its wakeups too.
//!
//! `SUPERVOX_IDLE_ANCHOR=PATH` measures another `supervox` binary the same way
//! in the same run (e.g. a release build of the commit before the timer
//! contract) and prints the ratios.

#[path = "../tests/common/mod.rs"]
mod common;

use common::{free_addr, start_node_bin, start_sn_bin, status, wait_signed_in, ProcCost, BIN};
use std::time::{Duration, Instant};

/// (node wakeups/s, node CPU %, supernode wakeups/s, supernode CPU %) of `bin` over `secs`.
fn measure(bin: &str, secs: u64) -> (f64, f64, f64, f64) {
    let root = tempfile::tempdir().unwrap();
    let sn = start_sn_bin(bin, root.path(), "sn", free_addr(), &[], &[]);
    let node = start_node_bin(bin, root.path(), "idle", &root.path().join("idle-data"), &[sn.addr], &[]);
    wait_signed_in(&node, Duration::from_secs(20));
    // The probe, the relay allocation and the first exchanges settle first.
    let deadline = Instant::now() + Duration::from_secs(20);
    while status(&node).is_none_or(|s| s["reachability"]["udp"].is_null() || s["relay"]["allocated"].is_null()) {
        assert!(Instant::now() < deadline, "the node's probe or relay did not finish");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    let (node_pid, sn_pid) = (node.proc.child.id(), sn.proc.child.id());
    let (n0, s0) = (ProcCost::of(node_pid), ProcCost::of(sn_pid));
    std::thread::sleep(Duration::from_secs(secs));
    let (n1, s1) = (ProcCost::of(node_pid), ProcCost::of(sn_pid));
    let (nw, ncpu) = n0.rate(&n1, secs as f64);
    let (sw, scpu) = s0.rate(&s1, secs as f64);
    assert!(status(&node).is_some_and(|s| s["supernode"].is_string()), "the node is still signed in");
    (nw, ncpu, sw, scpu)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let secs: u64 = std::env::var("SUPERVOX_IDLE_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(30);
    let anchor = std::env::var("SUPERVOX_IDLE_ANCHOR").ok();
    let (nw, ncpu, sw, scpu) = measure(BIN, secs);
    let old = anchor.as_deref().map(|a| measure(a, secs));
    println!("idle cost over {secs} s (one node signed in to one supernode, loopback, release build)");
    println!("| process | wakeups/s (target) | CPU, % of one core (target) |");
    println!("|---|---|---|");
    println!("| node | {nw:.2} (≤ 2) | {ncpu:.3} (≤ 0.05) |");
    println!("| supernode, 1 client | {sw:.2} | {scpu:.3} |");
    if let (Some(a), Some((anw, ancpu, asw, ascpu))) = (&anchor, old) {
        println!("| anchor node ({a}) | {anw:.2} ({:.0}× ours) | {ancpu:.3} |", anw / nw.max(1e-9));
        println!("| anchor supernode, 1 client | {asw:.2} ({:.1}× ours) | {ascpu:.3} |", asw / sw.max(1e-9));
    }
}
