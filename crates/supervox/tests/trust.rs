//! Attacks on who is at the other end of a call, between real processes:
//! a pinned peer whose key changes, and a supernode that answers lookups
//! with a forged claim.

mod common;
#[path = "common/evil.rs"]
mod evil;

use common::*;
use evil::EvilSn;
use std::sync::atomic::Ordering;
use std::time::Duration;

fn user_id_of(node: &Node) -> String {
    status(node).expect("status")["user_id"].as_str().unwrap().to_string()
}

fn pins(node: &Node) -> serde_json::Value {
    let out = ctl(&node.control, &["trust", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_pinned_peer_with_a_new_key_is_refused_until_trusted_and_the_pin_survives_kill_9() {
    let root = tempfile::tempdir().unwrap();
    let sn = start_sn(root.path(), "sn", &[]);
    let alice_dir = root.path().join("alice-data");
    let alice = start_node_in(root.path(), "alice", &alice_dir, &[sn.addr], &[]);
    let bob = start_node(root.path(), "bob", &[sn.addr], &["--auto-answer"]);
    wait_signed_in(&alice, Duration::from_secs(10));
    wait_signed_in(&bob, Duration::from_secs(10));
    let old_bob = user_id_of(&bob);
    let (ok, events) = call(&alice, "bob", &["--duration", "0.5", "--output", "null"]);
    assert!(ok, "{events:?}");
    assert_eq!(event(&events, "call_connected").unwrap()["verified"], "directory");
    let p = pins(&alice);
    assert_eq!(p["pins"][0]["name"], "bob", "{p}");
    assert_eq!(p["pins"][0]["user_id"], old_bob.as_str(), "{p}");
    // kill -9 alice (Proc's drop), then the whole network: the name "bob"
    // is claimed afresh by another key on a new supernode (a new identity,
    // or an attacker who got there first).
    drop(alice);
    drop(bob);
    drop(sn);
    let sn2 = start_sn(root.path(), "sn2", &[]);
    let alice = start_node_in(root.path(), "alice2", &alice_dir, &[sn2.addr], &[]);
    // A fresh data dir: a new key for "bob" (its log replaces the old bob's).
    let bob2 = start_node_in(root.path(), "bob", &root.path().join("bob2-data"), &[sn2.addr], &["--auto-answer"]);
    wait_signed_in(&alice, Duration::from_secs(15));
    wait_signed_in(&bob2, Duration::from_secs(10));
    let new_bob = user_id_of(&bob2);
    assert_ne!(old_bob, new_bob);
    assert_eq!(pins(&alice)["pins"][0]["user_id"], old_bob.as_str(), "the pin survived kill -9");
    let (ok, events) = call(&alice, "bob", &["--duration", "0.5", "--output", "null"]);
    assert!(!ok, "{events:?}");
    let kc = events.iter().position(|e| e["event"] == "key_changed").expect("key_changed");
    let failed = events.iter().position(|e| e["event"] == "call_failed").expect("call_failed");
    assert!(kc < failed, "{events:?}");
    assert_eq!(events[kc]["peer"], "bob");
    assert_eq!(events[kc]["old_user_id"], old_bob.as_str());
    assert_eq!(events[kc]["new_user_id"], new_bob.as_str());
    assert_eq!(events[failed]["code"], "key-changed", "{events:?}");
    assert!(event(&events, "call_connected").is_none());
    assert!(node_log(root.path(), "alice2").contains("possible attack"));
    // bob2 never rang.
    assert!(!node_log(root.path(), "bob").contains("incoming call"), "{}", node_log(root.path(), "bob"));
    // The user accepts the new key; the next call connects, between contacts.
    let out = ctl(&alice.control, &["trust", "bob"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("now pinned"));
    let out = ctl(&alice.control, &["trust", "bob"]);
    assert!(!out.status.success(), "nothing pending any more");
    let (ok, events) = call(&alice, "bob", &["--duration", "0.5", "--output", "null"]);
    assert!(ok, "{events:?}");
    let c = event(&events, "call_connected").unwrap();
    assert_eq!(c["verified"], "contact", "{c}");
    assert_eq!(c["user_id"], new_bob.as_str());
    // The database is private to its owner.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(alice_dir.join("supervox.db")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn a_supernode_forging_lookup_answers_is_caught_by_the_second_opinion() {
    let root = tempfile::tempdir().unwrap();
    // An honest network where the real bob lives.
    let sn = start_sn(root.path(), "sn", &[]);
    let bob = start_node(root.path(), "bob", &[sn.addr], &["--auto-answer"]);
    wait_signed_in(&bob, Duration::from_secs(10));
    // alice's own supernode is evil: it answers every lookup with mallory's
    // forged (self-signed, valid) claim; it names the honest one in its Welcome.
    let evil = EvilSn::start(vec![sn.addr]);
    let alice = start_node(root.path(), "alice", &[evil.addr], &[]);
    assert_eq!(wait_signed_in(&alice, Duration::from_secs(10)), evil.addr.to_string());
    let (ok, events) = call(&alice, "bob", &[]);
    assert!(!ok, "{events:?}");
    let f = event(&events, "call_failed").expect("call_failed");
    assert_eq!(f["code"], "lookup-mismatch", "{f}");
    assert!(event(&events, "call_connected").is_none());
    assert!(evil.counts.lookups.load(Ordering::Relaxed) >= 1, "the evil supernode was asked");
    // No invite ever went towards mallory.
    assert_eq!(evil.counts.signals.load(Ordering::Relaxed), 0);
    let l = node_log(root.path(), "alice");
    assert!(l.contains("possible attack") && l.contains(&evil.mallory.user_id().to_string()), "{l}");
    assert!(!node_log(root.path(), "bob").contains("incoming call"));
}

#[test]
fn a_callee_whose_own_supernode_vouches_for_a_spoofed_caller_is_saved_by_the_second_opinion() {
    use supervox_proto::{CallId, CallSignal, Message, Presence, SignalEnvelope, UserId};
    let root = tempfile::tempdir().unwrap();
    // The real alice owns "alice" on an honest supernode.
    let sn = start_sn(root.path(), "sn", &[]);
    let alice = start_node(root.path(), "alice", &[sn.addr], &[]);
    wait_signed_in(&alice, Duration::from_secs(10));
    // bob's own supernode is evil, and he auto-answers.
    let evil = EvilSn::start(vec![sn.addr]);
    let bob = start_node(root.path(), "bob", &[evil.addr], &["--auto-answer"]);
    assert_eq!(wait_signed_in(&bob, Duration::from_secs(10)), evil.addr.to_string());
    let bob_id = UserId::from_hex(&user_id_of(&bob)).unwrap();
    // The evil supernode rings bob as "alice" on mallory's key (finding 1 with an
    // accomplice supernode): the presence is mallory's, and its lookups will say
    // "alice" is mallory's too.
    let m = &evil.mallory;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let presence = Presence::sign(m.signing_key(), "alice", evil.addr, now, now + 60_000).unwrap();
    let binding =
        supervox_core::call::Binding { call_id: CallId([7; 16]), caller: m.user_id(), callee: bob_id, sent_ms: now };
    let offer = supervox_proto::call::CallOffer { candidates: vec![], nat: None };
    let (_hs, msg1) = supervox_core::call::start_handshake(m, &binding, &offer).unwrap();
    evil.inject(Message::Signal(SignalEnvelope {
        call_id: CallId([7; 16]),
        from: m.user_id(),
        to: bob_id,
        to_supernode: evil.addr,
        body: CallSignal::Invite {
            from_name: "alice".into(),
            caller_presence: presence,
            sent_ms: now,
            handshake: msg1,
        },
    }));
    let deadline = std::time::Instant::now() + Duration::from_secs(6);
    while !node_log(root.path(), "bob").contains("call 07070707070707070707070707070707 failed") {
        assert!(std::time::Instant::now() < deadline, "{}", node_log(root.path(), "bob"));
        std::thread::sleep(Duration::from_millis(50));
    }
    let l = node_log(root.path(), "bob");
    assert!(l.contains("possible attack"), "{l}");
    assert!(l.contains("two supernodes disagree"), "{l}");
    assert!(!l.contains("incoming call"), "bob rang for a spoofed caller: {l}");
    assert!(status(&bob).unwrap()["call"].is_null());
    assert!(evil.counts.lookups.load(Ordering::Relaxed) >= 1);
    // bob refused it (a Reject went back through the evil supernode); the real alice saw nothing.
    assert!(evil.counts.signals.load(Ordering::Relaxed) >= 1);
    assert!(!node_log(root.path(), "alice").contains("call 0707"));
}
