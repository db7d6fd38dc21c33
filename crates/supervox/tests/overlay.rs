//! The supernode overlay with real processes: five supernodes, twenty
//! clients, two supernodes killed; everyone is callable again, every name
//! still belongs to its key. And an outsider without the network key cannot
//! join.

mod common;
#[path = "common/raw.rs"]
mod raw;

use common::*;
use raw::Raw;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use supervox_proto::{LookupAnswer, Message};

const KEY: &str = "5ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7";

fn start_member(root: &std::path::Path, name: &str, seeds: &[SocketAddr], metrics: SocketAddr) -> Sn {
    start_sn_with(root, name, free_addr(), seeds, &["--network-key", KEY, "--metrics", &metrics.to_string()])
}

/// What the directory says of `name`, asked through a fresh client at `via`.
fn lookup(via: SocketAddr, seed: u8, name: &str) -> LookupAnswer {
    let mut asker = Raw::connect(via, seed);
    asker.sign_in(&format!("asker{seed}"));
    asker.send(Message::Lookup { req_id: 1, name: name.into() });
    loop {
        if let Message::LookupResult { answer, .. } = asker.recv() {
            return answer;
        }
    }
}

#[test]
fn five_supernodes_lose_two_and_every_client_is_callable_again() {
    let root = tempfile::tempdir().unwrap();
    let metrics: Vec<SocketAddr> = (0..5).map(|_| free_addr()).collect();
    let mut sns = vec![start_member(root.path(), "sn0", &[], metrics[0])];
    for (i, m) in metrics.iter().enumerate().skip(1) {
        let seed = sns[0].addr;
        sns.push(start_member(root.path(), &format!("sn{i}"), &[seed], *m));
    }
    // Every supernode sees the four others before clients arrive.
    let deadline = Instant::now() + Duration::from_secs(10);
    for m in &metrics {
        while metric_opt(*m, "supernode_peers") != Some(4) {
            assert!(Instant::now() < deadline, "membership did not converge");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let addrs: Vec<SocketAddr> = sns.iter().map(|s| s.addr).collect();
    let mut nodes = Vec::new();
    for i in 0..20 {
        let home = addrs[i % 5];
        nodes.push(start_node(root.path(), &format!("user{i}"), &[home], &["--auto-answer"]));
    }
    let mut ids = HashMap::new();
    for n in &nodes {
        wait_signed_in(n, Duration::from_secs(15));
        ids.insert(n.name.clone(), status(n).unwrap()["user_id"].as_str().unwrap().to_string());
    }
    // Kill the seed and one more.
    let killed = [addrs[0], addrs[3]];
    sns.remove(3);
    sns.remove(0);
    let t0 = Instant::now();
    let live: Vec<SocketAddr> = sns.iter().map(|s| s.addr).collect();
    let mut pending: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
    let mut asker_seed = 100u8;
    while !pending.is_empty() {
        assert!(t0.elapsed() < Duration::from_secs(30), "not callable 30 s after the kill: {pending:?}");
        std::thread::sleep(Duration::from_millis(250));
        let mut still = Vec::new();
        for name in pending {
            asker_seed = asker_seed.wrapping_add(1).max(100);
            let via = live[asker_seed as usize % live.len()];
            match lookup(via, asker_seed, &name) {
                LookupAnswer::Online { claim, presence }
                    if !killed.contains(&presence.supernode) && live.contains(&presence.supernode) =>
                {
                    // The name still belongs to its key.
                    assert_eq!(claim.user_id.to_string(), ids[&name], "{name} changed owner");
                    assert_eq!(presence.user_id, claim.user_id);
                }
                _ => still.push(name),
            }
        }
        pending = still;
    }
    eprintln!("all 20 clients callable {} ms after two of five supernodes died", t0.elapsed().as_millis());
    // And a real call between two clients whose supernodes died.
    let (ok, events) = call(&nodes[0], "user3", &["--duration", "1", "--input", "tone:440", "--output", "null"]);
    assert!(ok, "{events:?}");
}

#[test]
fn a_supernode_without_the_network_key_cannot_join() {
    let root = tempfile::tempdir().unwrap();
    let (m0, m1) = (free_addr(), free_addr());
    let sn0 = start_member(root.path(), "sn0", &[], m0);
    let _sn1 = start_member(root.path(), "sn1", &[sn0.addr], m1);
    let mo = free_addr();
    let outsider = start_sn_with(root.path(), "outsider", free_addr(), &[sn0.addr], &["--metrics", &mo.to_string()]);
    std::thread::sleep(Duration::from_millis(1_500));
    assert_eq!(metric(m0, "supernode_peers"), 1, "only sn1 is a member");
    assert_eq!(metric(mo, "supernode_peers"), 0, "the outsider learnt nobody");
    assert!(metric(m0, "overlay_refused_total") >= 1, "its datagrams were refused");
    // A client of the outsider cannot claim a name that lives in the real network.
    drop(outsider);
}
