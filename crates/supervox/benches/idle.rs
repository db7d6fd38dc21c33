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

#[path = "../tests/common/mod.rs"]
mod common;

use common::{start_node, start_sn, status, wait_signed_in, ProcCost};
use std::time::{Duration, Instant};

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let secs: u64 = std::env::var("SUPERVOX_IDLE_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(30);
    let root = tempfile::tempdir().unwrap();
    let sn = start_sn(root.path(), "sn", &[]);
    let node = start_node(root.path(), "idle", &[sn.addr], &[]);
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
    println!("idle cost over {secs} s (one node signed in to one supernode, loopback, release build)");
    println!("| process | wakeups/s (target) | CPU, % of one core (target) |");
    println!("|---|---|---|");
    println!("| node | {nw:.2} (≤ 2) | {ncpu:.3} (≤ 0.05) |");
    println!("| supernode, 1 client | {sw:.2} | {scpu:.3} |");
}
