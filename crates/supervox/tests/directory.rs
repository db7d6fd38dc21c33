//! Names, presence and supernode failure with real processes.

mod common;

use common::*;
use std::time::{Duration, Instant};

fn wait_exit(node: &mut Node, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(st) = node.proc.child.try_wait().unwrap() {
            return st;
        }
        assert!(Instant::now() < deadline, "{} did not exit", node.name);
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_second_key_claiming_a_name_is_refused_on_every_supernode() {
    let root = tempfile::tempdir().unwrap();
    let sn1 = start_sn(root.path(), "sn1", &[]);
    let sn2 = start_sn(root.path(), "sn2", &[sn1.addr]);
    let alice = start_node(root.path(), "alice", &[sn1.addr], &[]);
    wait_signed_in(&alice, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(300)); // replication to sn2
    for (i, sn) in [sn1.addr, sn2.addr].iter().enumerate() {
        let dir = root.path().join(format!("mallory{i}"));
        let mut mallory = start_node_in(root.path(), "alice", &dir, &[*sn], &[]);
        let st = wait_exit(&mut mallory, Duration::from_secs(10));
        assert!(!st.success());
        let log = node_log(root.path(), "alice");
        assert!(log.contains("taken by another key"), "{log}");
    }
    // The owner still signs in again with its own key.
    drop(alice);
    let alice = start_node(root.path(), "alice", &[sn2.addr], &[]);
    wait_signed_in(&alice, Duration::from_secs(10));
}

#[test]
fn name_claims_survive_a_supernode_restart() {
    let root = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let sn = start_sn_at(root.path(), "sn", addr, &[]);
    let alice = start_node(root.path(), "alice", &[addr], &[]);
    wait_signed_in(&alice, Duration::from_secs(10));
    drop(alice);
    // Killed at once: the claim was committed before the node heard it was accepted.
    drop(sn);
    let _sn = start_sn_at(root.path(), "sn", addr, &[]);
    let mut mallory = start_node_in(root.path(), "alice", &root.path().join("mallory"), &[addr], &[]);
    assert!(!wait_exit(&mut mallory, Duration::from_secs(10)).success());
    let dir = root.path().join("sn");
    assert!(dir.join("supernode.db").exists() && !dir.join("claims.json").exists());
}

#[test]
fn a_client_whose_supernode_dies_moves_on_and_is_callable_within_10s() {
    let root = tempfile::tempdir().unwrap();
    let metrics = free_addr();
    let sn1 = start_sn_with(root.path(), "sn1", free_addr(), &[], &["--metrics", &metrics.to_string()]);
    let sn2 = start_sn(root.path(), "sn2", &[sn1.addr]);
    let sn3 = start_sn(root.path(), "sn3", &[sn1.addr]);
    // bob only knows sn1; he learns sn2 and sn3 from its welcome, once they are linked.
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric_opt(metrics, "supernode_peers").unwrap_or(0) < 2 {
        assert!(Instant::now() < deadline, "the supernodes did not link");
        std::thread::sleep(Duration::from_millis(50));
    }
    let bob = start_node(root.path(), "bob", &[sn1.addr], &["--auto-answer"]);
    let alice = start_node(root.path(), "alice", &[sn3.addr], &[]);
    assert_eq!(wait_signed_in(&bob, Duration::from_secs(10)), sn1.addr.to_string());
    wait_signed_in(&alice, Duration::from_secs(10));
    let deadline = Instant::now() + Duration::from_secs(5);
    while status(&bob).unwrap()["host_cache"].as_u64().unwrap() < 3 {
        assert!(Instant::now() < deadline, "bob's host cache did not fill");
        std::thread::sleep(Duration::from_millis(50));
    }
    let dead = sn1.addr.to_string();
    let killed = Instant::now();
    drop(sn1);
    // Callable again: a call from alice connects.
    loop {
        let sn = status(&bob).and_then(|s| s["supernode"].as_str().map(String::from));
        if sn.is_some_and(|s| s != dead) {
            let (ok, events) = call(&alice, "bob", &["--duration", "0.5"]);
            if ok {
                assert!(event(&events, "call_connected").is_some());
                break;
            }
        }
        assert!(killed.elapsed() < Duration::from_secs(10), "bob not callable 10 s after his supernode died");
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("bob callable again {:?} after his supernode died", killed.elapsed());
    let _ = (sn2, sn3);
}

#[test]
fn a_seed_given_by_host_name_is_resolved_and_signed_in_through() {
    let dir = tempfile::tempdir().unwrap();
    let sn = start_sn(dir.path(), "sn", &[]);
    // localhost resolves (A and AAAA: ::1 refuses, 127.0.0.1 answers) through /etc/hosts.
    let seed = format!("localhost:{}", sn.addr.port());
    let alice = start_node(dir.path(), "alice", &[], &["--seed", &seed]);
    assert_eq!(wait_signed_in(&alice, Duration::from_secs(15)), sn.addr.to_string());
    let cache = std::fs::read_to_string(alice.dir.join("hostcache")).unwrap();
    assert!(cache.contains(&sn.addr.to_string()), "{cache}");
    // A malformed name is refused on the command line.
    let bad =
        std::process::Command::new(BIN).args(["node", "--name", "bob", "--seed", "no_such host:1"]).output().unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("neither IP:PORT nor HOST:PORT"));
}
