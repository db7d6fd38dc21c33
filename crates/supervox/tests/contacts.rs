//! Contacts, presence, chat, offline messages and call history with real
//! processes, driven through the `ctl` contract (issue 13).

mod common;

use common::*;
use serde_json::Value;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(15);

fn contact<'a>(lines: &'a [Value], name: &str) -> Option<&'a Value> {
    lines.iter().find(|c| c["name"] == name)
}

fn contacts(node: &Node) -> Vec<Value> {
    let (ok, lines) = ctl_json(node, &["contacts", "--json"]);
    assert!(ok, "{lines:?}");
    lines
}

fn ok(node: &Node, args: &[&str]) {
    let out = ctl(&node.control, args);
    assert!(
        out.status.success(),
        "ctl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// alice asks, bob accepts: both accepted and online.
fn befriend(alice: &Node, bob: &Node) {
    let bob_events = Events::of(bob);
    ok(alice, &["contacts", "add", "bob", "--message", "hi, it's alice"]);
    let (_, req) = bob_events.wait(T, |v| v["event"] == "contact_request");
    assert_eq!((req["name"].as_str(), req["message"].as_str()), (Some("alice"), Some("hi, it's alice")));
    assert_eq!(contact(&contacts(bob), "alice").unwrap()["state"], "incoming");
    assert_eq!(contact(&contacts(alice), "bob").unwrap()["state"], "outgoing");
    ok(bob, &["contacts", "accept", "alice"]);
    for (me, them) in [(alice, "bob"), (bob, "alice")] {
        wait_for(T, "accepted and online", || {
            let c = contacts(me);
            let c = contact(&c, them)?.clone();
            (c["state"] == "accepted" && c["presence"] == "online").then_some(())
        });
    }
    assert_eq!(contact(&contacts(alice), "bob").unwrap()["verified"], "contact");
}

#[test]
fn contacts_share_presence_within_2_s_strangers_see_none_and_blocked_keys_are_dropped() {
    let root = tempfile::tempdir().unwrap();
    let sn1 = start_sn(root.path(), "sn1", &[]);
    let sn2 = start_sn(root.path(), "sn2", &[sn1.addr]);
    std::thread::sleep(Duration::from_millis(500));
    let alice = start_node(root.path(), "alice", &[sn1.addr], &[]);
    let bob = start_node(root.path(), "bob", &[sn2.addr], &[]);
    let carol = start_node(root.path(), "carol", &[sn1.addr], &["--auto-answer"]);
    for n in [&alice, &bob, &carol] {
        wait_signed_in(n, T);
    }
    befriend(&alice, &bob);

    // A change shows at the contact by push, within 2 s.
    let alice_events = Events::of(&alice);
    let t0 = Instant::now();
    ok(&bob, &["presence", "away", "--text", "at lunch"]);
    let (t, v) = alice_events.wait(T, |v| v["event"] == "presence" && v["name"] == "bob");
    assert_eq!((v["presence"].as_str(), v["status_text"].as_str()), (Some("away"), Some("at lunch")));
    assert!(t - t0 < Duration::from_secs(2), "presence took {:?}", t - t0);
    let b = contacts(&alice);
    assert_eq!(contact(&b, "bob").unwrap()["presence"], "away");

    // A stranger learns nothing: carol asks bob, bob does not answer.
    ok(&carol, &["contacts", "add", "bob"]);
    std::thread::sleep(Duration::from_millis(500));
    let c = contacts(&carol);
    assert_eq!(contact(&c, "bob").unwrap()["presence"], "offline");
    assert_eq!(contact(&c, "bob").unwrap()["status_text"], "");

    // Invisible looks offline; a clean sign-out shows offline at once.
    ok(&bob, &["presence", "invisible"]);
    alice_events.wait(T, |v| v["event"] == "presence" && v["name"] == "bob" && v["presence"] == "offline");
    ok(&bob, &["presence", "online"]);
    alice_events.wait(T, |v| v["event"] == "presence" && v["name"] == "bob" && v["presence"] == "online");

    // Chat both ways, receipts.
    let (sent, lines) = ctl_json(&alice, &["send", "bob", "hello bob", "--json"]);
    assert!(sent, "{lines:?}");
    assert_eq!(lines[0]["status"], "delivered", "{lines:?}");
    let (_, conv) = ctl_json(&bob, &["messages", "alice", "--json"]);
    assert_eq!(conv.iter().map(|m| m["text"].as_str().unwrap()).collect::<Vec<_>>(), ["hello bob"]);
    assert_eq!(conv[0]["contact"], true, "from an accepted contact");
    ok(&bob, &["read", "alice"]);
    alice_events.wait(T, |v| v["event"] == "message_status" && v["status"] == "read");
    // Too long a message is refused with a reason.
    let (sent, lines) = ctl_json(&alice, &["send", "bob", &"x".repeat(16 * 1024 + 1), "--json"]);
    assert!(!sent);
    assert_eq!(lines[0]["code"], "too-long");

    // Carol is blocked by bob: her message and her call are dropped without a word.
    ok(&bob, &["contacts", "block", "carol"]);
    assert_eq!(contact(&contacts(&bob), "carol").unwrap()["state"], "blocked");
    let (sent, lines) = ctl_json(&carol, &["send", "bob", "let me in", "--json"]);
    assert!(lines.iter().all(|l| l["status"] != "delivered"), "{sent} {lines:?}");
    let (called, _) = call(&carol, "bob", &["--duration", "1"]);
    assert!(!called, "a blocked caller got through");
    let (_, conv) = ctl_json(&bob, &["messages", "carol", "--json"]);
    assert!(conv.iter().all(|m| m["text"] != "let me in"), "{conv:?}");
    assert!(!node_log(root.path(), "bob").contains("incoming call"), "it rang");

    // Bob signs out cleanly: alice sees it at once.
    let t0 = Instant::now();
    bob.stop();
    alice_events.wait(T, |v| v["event"] == "presence" && v["name"] == "bob" && v["presence"] == "offline");
    assert!(t0.elapsed() < Duration::from_secs(3), "sign-out took {:?}", t0.elapsed());
}

#[test]
fn offline_messages_survive_a_holder_arrive_in_order_via_another_supernode_and_get_receipts() {
    let root = tempfile::tempdir().unwrap();
    // Three supernodes and R = 3: each holds bob's mailbox.
    let sn0 = start_sn(root.path(), "sn0", &[]);
    let sn1 = start_sn(root.path(), "sn1", &[sn0.addr]);
    let _sn2 = start_sn(root.path(), "sn2", &[sn0.addr]);
    std::thread::sleep(Duration::from_millis(1500));
    let alice = start_node(root.path(), "alice", &[sn0.addr], &[]);
    let bob_dir = root.path().join("bob-data");
    let bob = start_node_in(root.path(), "bob", &bob_dir, &[sn1.addr], &["--auto-answer"]);
    wait_signed_in(&alice, T);
    wait_signed_in(&bob, T);
    befriend(&alice, &bob);
    // Alice calls bob for the history, then bob goes.
    let (called, ev) = call(&alice, "bob", &["--duration", "1"]);
    assert!(called, "{ev:?}");
    bob.stop();
    wait_for(T, "bob offline at alice", || (contact(&contacts(&alice), "bob")?["presence"] == "offline").then_some(()));

    let mut ids = Vec::new();
    for text in ["one", "two", "three"] {
        let (sent, lines) = ctl_json(&alice, &["send", "bob", text, "--json"]);
        assert!(sent, "{lines:?}");
        assert_eq!(lines[0]["status"], "stored", "{lines:?}");
        ids.push(lines[0]["id"].as_str().unwrap().to_string());
    }
    // A call while bob is offline leaves a missed-call notice.
    let (called, _) = call(&alice, "bob", &["--duration", "1"]);
    assert!(!called);
    // Bob's own supernode, one of the three holders, dies.
    let sn1_addr = sn1.addr.to_string();
    drop(sn1);

    let alice_events = Events::of(&alice);
    let bob = start_node_in(root.path(), "bob", &bob_dir, &[sn0.addr], &[]);
    assert_ne!(wait_signed_in(&bob, Duration::from_secs(30)), sn1_addr, "bob is back on another supernode");
    let conv = wait_for(Duration::from_secs(20), "bob has the three", || {
        let (_, conv) = ctl_json(&bob, &["messages", "alice", "--json"]);
        let incoming: Vec<Value> = conv.into_iter().filter(|m| m["direction"] == "in").collect();
        (incoming.len() >= 3).then_some(incoming)
    });
    let texts: Vec<&str> = conv.iter().map(|m| m["text"].as_str().unwrap()).collect();
    assert_eq!(texts, ["one", "two", "three"]);
    for id in &ids {
        alice_events
            .wait(T, |v| v["event"] == "message_status" && v["id"] == id.as_str() && v["status"] == "delivered");
    }
    ok(&bob, &["read", "alice"]);
    for id in &ids {
        let (_, conv) = ctl_json(&alice, &["messages", "bob", "--json"]);
        let _ = conv;
        wait_for(T, "read", || {
            let (_, conv) = ctl_json(&alice, &["messages", "bob", "--json"]);
            conv.iter().any(|m| m["id"] == id.as_str() && m["status"] == "read").then_some(())
        });
    }
    // History: alice's connected call and the one bob missed.
    let (_, hist) = ctl_json(&alice, &["history", "--json"]);
    let done = hist.iter().find(|c| c["duration_ms"].as_u64().unwrap_or(0) > 0).expect("the connected call");
    assert_eq!((done["direction"].as_str(), done["peer"].as_str()), (Some("outgoing"), Some("bob")));
    assert!(done["path"].is_string() && done["mos"].is_number(), "{done}");
    let missed = wait_for(T, "bob sees the missed call", || {
        let (_, hist) = ctl_json(&bob, &["history", "--json"]);
        hist.into_iter().find(|c| c["missed"] == true)
    });
    assert_eq!(missed["peer"], "alice");
}

#[test]
fn a_kill_9_while_receiving_loses_and_duplicates_nothing() {
    let root = tempfile::tempdir().unwrap();
    let sn = start_sn(root.path(), "sn", &[]);
    let alice = start_node(root.path(), "alice", &[sn.addr], &[]);
    let bob_dir = root.path().join("bob-data");
    let bob = start_node_in(root.path(), "bob", &bob_dir, &[sn.addr], &[]);
    wait_signed_in(&alice, T);
    wait_signed_in(&bob, T);
    befriend(&alice, &bob);
    bob.stop();
    wait_for(T, "bob offline", || (contact(&contacts(&alice), "bob")?["presence"] == "offline").then_some(()));
    const N: usize = 40;
    for i in 0..N {
        let (sent, lines) = ctl_json(&alice, &["send", "bob", &format!("m{i:02}"), "--json"]);
        assert!(sent, "{lines:?}");
    }
    // Bob starts, and dies (SIGKILL) as soon as the first messages are in.
    let mut bob = start_node_in(root.path(), "bob", &bob_dir, &[sn.addr], &[]);
    wait_signed_in(&bob, T);
    wait_for(T, "some arrived", || {
        let (_, conv) = ctl_json(&bob, &["messages", "alice", "--json"]);
        conv.iter().any(|m| m["direction"] == "in").then_some(())
    });
    bob.proc.child.kill().unwrap();
    bob.proc.child.wait().unwrap();
    let bob = start_node_in(root.path(), "bob", &bob_dir, &[sn.addr], &[]);
    wait_signed_in(&bob, T);
    let conv = wait_for(Duration::from_secs(20), "all arrived", || {
        let (_, conv) = ctl_json(&bob, &["messages", "alice", "--json"]);
        let incoming: Vec<String> =
            conv.iter().filter(|m| m["direction"] == "in").map(|m| m["text"].as_str().unwrap().to_string()).collect();
        (incoming.len() >= N).then_some(incoming)
    });
    let want: Vec<String> = (0..N).map(|i| format!("m{i:02}")).collect();
    assert_eq!(conv, want, "lost, duplicated or out of order");
    // A restart more changes nothing.
    bob.stop();
    let bob = start_node_in(root.path(), "bob", &bob_dir, &[sn.addr], &[]);
    wait_signed_in(&bob, T);
    std::thread::sleep(Duration::from_millis(1000));
    let (_, conv) = ctl_json(&bob, &["messages", "alice", "--json"]);
    assert_eq!(conv.iter().filter(|m| m["direction"] == "in").count(), N);
}
