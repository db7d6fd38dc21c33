//! Issue 12's attacks on a call, performed against real node and supernode
//! processes by a caller built from the project's own crates (`RawCall` in
//! the shared kit): a spoofed caller name, a replayed invite, forged signals,
//! and a stranger's auto-answered call that must not reveal the callee's
//! addresses before the call is up.

mod common;
#[path = "common/raw.rs"]
mod raw;

use common::*;
use raw::Raw;
use std::time::{Duration, Instant};
use supervox_proto::call::{CallMessage, CallOffer, SealedSignal, SignedSignal};
use supervox_proto::{CallSignal, CandidateKind};

fn no_offer() -> CallOffer {
    CallOffer { candidates: vec![], nat: None }
}

/// Poll `node`'s status until its `call` phase is `want` (or no call, for `None`).
fn wait_phase(node: &Node, want: Option<&str>, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let st = status(node).unwrap_or_default();
        let phase = st["call"]["state"].as_str().map(str::to_owned);
        if phase.as_deref() == want {
            return;
        }
        assert!(Instant::now() < deadline, "{}: phase {phase:?}, want {want:?}: {st}", node.name);
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_spoofed_caller_name_is_refused_and_never_rings() {
    let root = tempfile::tempdir().unwrap();
    let sn = start_sn(root.path(), "sn", &[]);
    let alice = start_node(root.path(), "alice", &[sn.addr], &[]);
    let bob = start_node(root.path(), "bob", &[sn.addr], &["--auto-answer"]);
    wait_signed_in(&alice, Duration::from_secs(10));
    wait_signed_in(&bob, Duration::from_secs(10));
    // Mallory signs in as herself, then rings bob as "alice" with a presence she signed.
    let mut mallory = Raw::connect(sn.addr, 66);
    mallory.sign_in("mallory");
    let mut call = mallory.invite("bob", "alice", no_offer());
    let first = mallory.respond(&mut call, Duration::from_secs(5)).expect("bob answers the invite");
    assert_eq!(first, CallMessage::Reject { reason: "caller not verified".into() });
    std::thread::sleep(Duration::from_millis(300));
    let log = node_log(root.path(), "bob");
    assert!(!log.contains("incoming call from \"alice\""), "{log}");
    assert!(log.contains("another key owns that name"), "{log}");
    assert!(status(&bob).unwrap()["call"].is_null());
}

#[test]
fn a_replayed_invite_never_rings_twice() {
    let root = tempfile::tempdir().unwrap();
    let sn = start_sn(root.path(), "sn", &[]);
    let bob = start_node(root.path(), "bob", &[sn.addr], &[]);
    wait_signed_in(&bob, Duration::from_secs(10));
    let mut carol = Raw::connect(sn.addr, 67);
    carol.sign_in("carol");
    let mut call = carol.invite("bob", "carol", no_offer());
    assert_eq!(carol.respond(&mut call, Duration::from_secs(5)), Some(CallMessage::Ringing));
    wait_phase(&bob, Some("incoming"), Duration::from_secs(5));
    carol.say(&mut call, &CallMessage::Cancel);
    wait_phase(&bob, None, Duration::from_secs(5));
    // The same invite again (what anyone on the path could capture and resend).
    carol.send(supervox_proto::Message::Signal(call.invite.clone()));
    assert!(carol.next_signal(Duration::from_secs(2)).is_none(), "bob answered a replay");
    assert!(status(&bob).unwrap()["call"].is_null());
    let log = node_log(root.path(), "bob");
    assert!(log.contains("Replayed"), "{log}");
    assert_eq!(log.matches("incoming call from").count(), 1, "{log}");
}

#[test]
fn forged_signals_change_nothing_and_the_callers_own_do() {
    let root = tempfile::tempdir().unwrap();
    let sn = start_sn(root.path(), "sn", &[]);
    let bob = start_node(root.path(), "bob", &[sn.addr], &[]);
    wait_signed_in(&bob, Duration::from_secs(10));
    let mut carol = Raw::connect(sn.addr, 68);
    carol.sign_in("carol");
    let mut call = carol.invite("bob", "carol", no_offer());
    assert_eq!(carol.respond(&mut call, Duration::from_secs(5)), Some(CallMessage::Ringing));
    wait_phase(&bob, Some("incoming"), Duration::from_secs(5));
    // What a supernode on the path could inject as carol: a Cancel signed by
    // another key, sealed bytes of its own, a Bye and candidates under no key.
    let mallory = supervox_core::Identity::from_seed([69; 32]);
    let payload =
        supervox_proto::call::signed_signal_payload(&call.id, &carol.id.user_id(), &call.callee, &SignedSignal::Cancel);
    let bad_sig = ed25519_dalek::Signer::sign(mallory.signing_key(), &payload);
    carol.signal(&call, CallSignal::Signed { body: SignedSignal::Cancel, signature: bad_sig });
    for seq in 0..3 {
        carol.signal(&call, CallSignal::Sealed(SealedSignal { seq, ciphertext: vec![0x5a; 64] }));
    }
    std::thread::sleep(Duration::from_millis(500));
    wait_phase(&bob, Some("incoming"), Duration::from_secs(1));
    // carol's own (sealed) Cancel ends it.
    carol.say(&mut call, &CallMessage::Cancel);
    wait_phase(&bob, None, Duration::from_secs(5));
    assert!(node_log(root.path(), "bob").contains("caller cancelled"));
}

#[test]
fn a_stranger_gets_relay_candidates_only_until_the_call_is_up() {
    let root = tempfile::tempdir().unwrap();
    let sn = start_sn(root.path(), "sn", &[]);
    let strict = start_node(root.path(), "bob", &[sn.addr], &["--auto-answer"]);
    let relaxed = start_node(root.path(), "dave", &[sn.addr], &["--auto-answer", "--privacy", "relaxed"]);
    for n in [&strict, &relaxed] {
        wait_signed_in(n, Duration::from_secs(10));
        // The relay allocation and NAT probe are done once reachability is known.
        let deadline = Instant::now() + Duration::from_secs(10);
        while status(n).is_some_and(|s| s["reachability"]["udp"].is_null()) {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let mut carol = Raw::connect(sn.addr, 70);
    carol.sign_in("carol");
    let mut offered = Vec::new();
    for name in ["bob", "dave"] {
        let mut call = carol.invite(name, "carol", no_offer());
        assert_eq!(carol.respond(&mut call, Duration::from_secs(5)), Some(CallMessage::Ringing));
        // Auto-answered: the Accept is the callee's first word about where it is.
        let accept = carol.sealed(&call, Duration::from_secs(5)).expect("an authentic accept");
        let CallMessage::Accept { candidates, nat } = accept else { panic!("{accept:?}") };
        offered.push((name, candidates, nat));
        // Nothing more follows while the call is not up (carol sends no media).
        let more = carol.next_signal(Duration::from_millis(800));
        assert!(more.is_none() || name == "dave", "{name} said more before the call was up: {more:?}");
        carol.say(&mut call, &CallMessage::Bye { reason: "test over".into() });
    }
    let (_, bob_cands, bob_nat) = &offered[0];
    assert!(!bob_cands.is_empty(), "bob offered no relay");
    assert!(bob_cands.iter().all(|c| c.kind == CandidateKind::Relay), "{bob_cands:?}");
    assert!(bob_nat.is_none());
    // The control: with --privacy relaxed the host candidate goes out at once.
    let (_, dave_cands, _) = &offered[1];
    assert!(dave_cands.iter().any(|c| c.kind == CandidateKind::Host), "{dave_cands:?}");
}

#[test]
fn records_under_a_small_order_key_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let sn = start_sn(root.path(), "sn", &[]);
    let mut eve = Raw::connect(sn.addr, 71);
    eve.sign_in("eve");
    // The identity point as the "key" and (R = identity, s = 0) as the
    // signature: it verifies for every message under a non-strict check.
    let mut weak = [0u8; 32];
    weak[0] = 1;
    let mut sig = [0u8; 64];
    sig[0] = 1;
    let signature = ed25519_dalek::Signature::from_bytes(&sig);
    let claim = supervox_proto::NameClaim {
        name: "victim".into(),
        user_id: supervox_proto::UserId(weak),
        created_ms: raw::now(),
        signature,
    };
    eve.send(supervox_proto::Message::Claim { claim });
    match eve.recv() {
        // Refused as not the connection's key (a weak key cannot sign in at
        // all), or as invalid were it the connection's.
        supervox_proto::Message::ClaimResult {
            result: Err(supervox_proto::Refusal::NotYourKey | supervox_proto::Refusal::Invalid(_)),
            ..
        } => {}
        m => panic!("a claim under a small-order key was accepted: {m:?}"),
    }
    let presence = supervox_proto::Presence {
        user_id: supervox_proto::UserId(weak),
        name: "victim".into(),
        supernode: eve.supernode(),
        seq: 1,
        expires_ms: raw::now() + 60_000,
        signature,
    };
    eve.send(supervox_proto::Message::Publish { presence });
    assert!(matches!(eve.recv(), supervox_proto::Message::PublishResult { result: Err(_) }));
    // Nobody answers for "victim".
    eve.send(supervox_proto::Message::Lookup { req_id: 5, name: "victim".into() });
    loop {
        if let supervox_proto::Message::LookupResult { answer, .. } = eve.recv() {
            assert_eq!(answer, supervox_proto::LookupAnswer::Unknown);
            break;
        }
    }
}

#[test]
fn a_caller_offers_a_stranger_its_relays_only() {
    let root = tempfile::tempdir().unwrap();
    let sn = start_sn(root.path(), "sn", &[]);
    let strict = start_node(root.path(), "alice", &[sn.addr], &[]);
    let relaxed = start_node(root.path(), "frank", &[sn.addr], &["--privacy", "relaxed"]);
    let mut bob = Raw::connect(sn.addr, 72);
    bob.sign_in("bob");
    for (node, relays_only) in [(&strict, true), (&relaxed, false)] {
        wait_signed_in(node, Duration::from_secs(10));
        let deadline = Instant::now() + Duration::from_secs(10);
        while status(node).is_some_and(|s| s["relay"]["allocated"].is_null() || s["reachability"]["udp"].is_null()) {
            assert!(Instant::now() < deadline, "no relay or probe");
            std::thread::sleep(Duration::from_millis(50));
        }
        let control = node.control.clone();
        let caller = std::thread::spawn(move || ctl(&control, &["call", "bob", "--json"]));
        let env = bob.next_signal(Duration::from_secs(5)).expect("an invite");
        let CallSignal::Invite { sent_ms, handshake, .. } = env.body else { panic!("{env:?}") };
        let binding =
            supervox_core::call::Binding { call_id: env.call_id, caller: env.from, callee: bob.id.user_id(), sent_ms };
        let (_, _, offer) = supervox_core::call::answer_handshake(&bob.id, &binding, &handshake).unwrap();
        assert!(!offer.candidates.is_empty(), "{}: no candidates at all", node.name);
        let only_relays = offer.candidates.iter().all(|c| c.kind == CandidateKind::Relay);
        assert_eq!(only_relays, relays_only, "{}: {:?}", node.name, offer.candidates);
        assert_eq!(offer.nat.is_none(), relays_only, "{}: {:?}", node.name, offer.nat);
        // Never answered: the caller gives up on its own (5 s) and says so, signed.
        let cancel = bob.next_signal(Duration::from_secs(8)).expect("a cancel");
        assert!(matches!(cancel.body, CallSignal::Signed { body: SignedSignal::Cancel, .. }), "{cancel:?}");
        let out = caller.join().unwrap();
        assert!(!out.status.success());
    }
}
