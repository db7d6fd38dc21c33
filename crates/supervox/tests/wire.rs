//! Hostile bytes on the supernode port, and forged records, against a real
//! supernode process. The test speaks the protocol with the library's own
//! sans-IO link over a blocking socket.

mod common;
#[path = "common/raw.rs"]
mod raw;

use common::*;
use raw::{now, Raw};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;
use supervox_core::Identity;
use supervox_proto::{Message, Presence};

/// The supernode closes this connection (EOF or reset) within 5 s.
fn assert_closed(mut s: TcpStream) {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => continue,
        }
    }
}

#[test]
fn forged_presence_is_rejected() {
    let root = tempfile::tempdir().unwrap();
    let sn = start_sn(root.path(), "sn", &[]);
    let mut alice = Raw::connect(sn.addr, 1);
    alice.sign_in("alice");
    // Altered after signing: the signature no longer matches.
    let mut forged = Presence::sign(alice.id.signing_key(), "alice", sn.addr, now() + 1, now() + 60_000).unwrap();
    forged.supernode = "127.0.0.1:1".parse().unwrap();
    alice.send(Message::Publish { presence: forged });
    match alice.recv() {
        Message::PublishResult { result: Err(e) } => assert!(e.contains("bad signature"), "{e}"),
        m => panic!("forged presence accepted: {m:?}"),
    }
    // Signed by another key than the connection's.
    let mallory = Identity::from_seed([9; 32]);
    let other = Presence::sign(mallory.signing_key(), "alice", sn.addr, now() + 2, now() + 60_000).unwrap();
    alice.send(Message::Publish { presence: other });
    assert!(matches!(alice.recv(), Message::PublishResult { result: Err(_) }));
    // The genuine record still answers lookups.
    let mut bob = Raw::connect(sn.addr, 2);
    bob.sign_in("bob");
    bob.send(Message::Lookup { req_id: 1, name: "alice".into() });
    match bob.recv() {
        Message::LookupResult { answer: supervox_proto::LookupAnswer::Online { presence, .. }, .. } => {
            assert_eq!(presence.supernode, sn.addr);
            assert_eq!(presence.user_id, alice.id.user_id());
        }
        m => panic!("{m:?}"),
    }
}

#[test]
fn garbage_and_oversized_frames_do_not_disturb_other_clients() {
    let root = tempfile::tempdir().unwrap();
    let metrics = free_addr();
    let sn = start_sn_with(root.path(), "sn", free_addr(), &[], &["--metrics", &metrics.to_string()]);
    let alice = start_node(root.path(), "alice", &[sn.addr], &[]);
    let bob = start_node(root.path(), "bob", &[sn.addr], &["--auto-answer"]);
    wait_signed_in(&alice, Duration::from_secs(10));
    wait_signed_in(&bob, Duration::from_secs(10));
    let hostile: Vec<Vec<u8>> = vec![
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        vec![0xff, 0xff, 0xff, 0xff, 1, 2, 3], // 4 GiB frame announced
        vec![0, 1, 0, 0],                      // 65536 bytes: one over the limit
        vec![0, 0, 0, 0],                      // empty frame
        (0..5000u32).map(|i| (i * 7919 % 251) as u8).collect(),
    ];
    for bytes in hostile {
        let mut s = TcpStream::connect(sn.addr).unwrap();
        let _ = s.write_all(&bytes);
        assert_closed(s);
    }
    // A valid handshake followed by a garbage transport frame.
    let mut raw = Raw::connect(sn.addr, 3);
    raw.sign_in("carol");
    raw.sock.write_all(&[0, 0, 0, 20]).unwrap();
    raw.sock.write_all(&[0xAA; 20]).unwrap();
    assert_closed(raw.sock.try_clone().unwrap());
    // Many half-open connections that never speak.
    let idle: Vec<TcpStream> = (0..50).map(|_| TcpStream::connect(sn.addr).unwrap()).collect();
    // The supernode is alive and calls still work.
    let (ok, events) = call(&alice, "bob", &["--duration", "1"]);
    assert!(ok, "{events:?}");
    drop(idle);
    assert!(sn.proc.child.id() > 0);
    let log = std::fs::read_to_string(root.path().join("sn.log")).unwrap();
    assert!(log.contains("frame of 65536 bytes exceeds"), "oversized frame not logged with a reason");
    assert!(!log.contains("panicked"));
    // The operator sees it: every hostile connection was counted.
    std::thread::sleep(Duration::from_millis(300));
    assert!(metric(metrics, "link_errors_total") >= 5, "hostile connections not counted");
    assert_eq!(metric(metrics, "clients"), 2, "alice and bob; the garbage-sending client was dropped");
}

/// Poll `path` until it contains `needle` (within `within`).
fn wait_for_log(path: &std::path::Path, needle: &str, within: Duration) -> String {
    let deadline = std::time::Instant::now() + within;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(std::time::Instant::now() < deadline, "{needle:?} not in {}:\n{text}", path.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_seed_pinned_to_another_key_is_not_signed_in_to() {
    let root = tempfile::tempdir().unwrap();
    let sn = start_sn(root.path(), "sn", &[]);
    let sn_key = Identity::from_file_bytes(&std::fs::read(sn.dir.join("identity")).unwrap()).unwrap().user_id();
    // Pinned to a key the supernode at that address does not hold.
    let wrong = Identity::from_seed([42; 32]).user_id();
    let seed = format!("{wrong}@{}", sn.addr);
    let alice = start_node(root.path(), "alice", &[], &["--seed", &seed]);
    let log = wait_for_log(&root.path().join("node-alice.log"), "possible attack", Duration::from_secs(10));
    assert!(log.contains(&sn_key.to_string()) && log.contains(&wrong.to_string()), "{log}");
    // Still not signed in a while (and a few refused rounds) later.
    std::thread::sleep(Duration::from_millis(1500));
    let st = status(&alice).expect("status");
    assert!(st["supernode"].is_null(), "signed in through an impostor: {st}");
    let hc = std::fs::read_to_string(alice.dir.join("hostcache")).unwrap_or_default();
    assert!(!hc.contains(&sn_key.to_string()), "the impostor's key is never pinned: {hc}");
    // The right key signs in; so does a bare seed, which then pins the key.
    let bob = start_node(root.path(), "bob", &[], &["--seed", &format!("{sn_key}@{}", sn.addr)]);
    let carol = start_node(root.path(), "carol", &[sn.addr], &[]);
    for n in [&bob, &carol] {
        assert_eq!(wait_signed_in(n, Duration::from_secs(10)), sn.addr.to_string());
    }
    let hc = std::fs::read_to_string(carol.dir.join("hostcache")).unwrap();
    assert!(hc.contains(&format!("key={sn_key}")), "{hc}");
}
