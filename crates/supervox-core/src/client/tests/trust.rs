//! Pinned peer keys (TOFU), key changes, and lookups cross-checked through
//! a second supernode, on the in-memory network.

use super::*;
use crate::trust::{Pin, TrustChange, TrustStore};

fn pinned(c: &Client, name: &str) -> Option<UserId> {
    c.trust_store().get(name).map(|p| p.user_id)
}

fn pin_of(name: &str, key: UserId) -> Pin {
    Pin { name: name.into(), user_id: key, first_seen_ms: 1, last_seen_ms: 1, pending: None }
}

fn connected(ev: &[ClientEvent], v: Verified) -> bool {
    has(ev, |e| matches!(e, ClientEvent::Connected { verified, .. } if *verified == v))
}

fn failed_with(ev: &[ClientEvent], code: &str) -> bool {
    has(ev, |e| matches!(e, ClientEvent::Failed { reason, .. } if reason.code() == code))
}

/// Place a call from 0 to 1, let it connect, hang up.
fn call_and_hang_up(net: &mut Net) -> CallId {
    let id = net.clients[0].place_call("bob", net.now).unwrap();
    net.run(300);
    net.clients[0].hangup(id, CallEnd::LocalHangup, net.now);
    net.run(50);
    id
}

#[test]
fn the_first_connected_call_pins_both_peers_and_the_next_is_between_contacts() {
    let mut net = Net::new(&["alice", "bob"], true);
    net.run(100);
    let (alice, bob) = (net.clients[0].identity().user_id(), net.clients[1].identity().user_id());
    assert!(!net.clients[0].is_contact(&bob));
    call_and_hang_up(&mut net);
    assert!(connected(&net.events[0], Verified::Directory) && connected(&net.events[1], Verified::Directory));
    assert_eq!(pinned(&net.clients[0], "bob"), Some(bob));
    assert_eq!(pinned(&net.clients[1], "alice"), Some(alice));
    assert!(net.clients[0].is_contact(&bob) && net.clients[1].is_contact(&alice));
    assert!(!net.clients[0].is_contact(&alice));
    net.events = vec![vec![]; 2];
    call_and_hang_up(&mut net);
    assert!(connected(&net.events[0], Verified::Contact), "{:?}", net.events[0]);
    assert!(connected(&net.events[1], Verified::Contact), "{:?}", net.events[1]);
    assert!(has(&net.events[1], |e| matches!(e, ClientEvent::Incoming { verified: Verified::Contact, .. })));
    assert_eq!(Verified::Contact.as_str(), "contact");
}

#[test]
fn a_pin_is_handed_to_the_driver_before_the_connected_event() {
    let mut net = Net::new(&["alice", "bob"], true);
    net.run(100);
    net.clients[0].place_call("bob", net.now).unwrap();
    // Drive by hand: collect alice's outputs in order until she reports Connected.
    let mut order = Vec::new();
    for _ in 0..200 {
        net.now += 1;
        net.step_collecting(0, &mut order);
        if order.iter().any(|o| matches!(o, ClientOutput::Event(ClientEvent::Connected { .. }))) {
            break;
        }
    }
    let pin = order.iter().position(|o| matches!(o, ClientOutput::Trust(TrustChange::Upsert(p)) if p.name == "bob"));
    let conn = order.iter().position(|o| matches!(o, ClientOutput::Event(ClientEvent::Connected { .. })));
    assert!(pin.is_some() && conn.is_some() && pin < conn, "pin {pin:?}, connected {conn:?}");
}

#[test]
fn a_callee_whose_key_changed_is_refused_until_the_user_trusts_the_new_key() {
    let mut net = Net::new(&["alice", "bob"], true);
    net.run(100);
    let bob = net.clients[1].identity().user_id();
    let old = Identity::from_seed([42; 32]).user_id();
    // alice once pinned "bob" to another key (the bob she knew).
    net.clients[0].set_trust_store(TrustStore::from_pins([pin_of("bob", old)]));
    let id = net.clients[0].place_call("bob", net.now).unwrap();
    net.run(300);
    assert!(has(&net.events[0], |e| matches!(e,
        ClientEvent::KeyChanged { call_id, name, old: o, new } if *call_id == id && name == "bob" && *o == old && *new == bob)));
    assert!(has(&net.events[0], |e| matches!(e,
        ClientEvent::Failed { call_id, reason: CallFailure::KeyChanged(n) } if *call_id == id && n == "bob")));
    // The invite never went out: bob heard nothing.
    assert!(net.signals[0].is_empty(), "{:?}", net.signals[0]);
    assert!(!has(&net.events[1], |e| matches!(e, ClientEvent::Incoming { .. })));
    assert_eq!(net.clients[0].trust_store().get("bob").unwrap().pending, Some(bob));
    // The user accepts the new key; calls work again, between contacts.
    assert_eq!(net.clients[0].trust_accept("bob", net.now), Ok((old, bob)));
    assert_eq!(pinned(&net.clients[0], "bob"), Some(bob));
    assert!(net.clients[0].trust_accept("bob", net.now).is_err(), "nothing pending any more");
    net.events = vec![vec![]; 2];
    call_and_hang_up(&mut net);
    assert!(connected(&net.events[0], Verified::Contact), "{:?}", net.events[0]);
}

#[test]
fn a_caller_whose_key_changed_is_refused_without_ringing() {
    let mut net = Net::new(&["alice", "bob"], true);
    net.run(100);
    let alice = net.clients[0].identity().user_id();
    let old = Identity::from_seed([42; 32]).user_id();
    net.clients[1].set_trust_store(TrustStore::from_pins([pin_of("alice", old)]));
    let id = net.clients[0].place_call("bob", net.now).unwrap();
    net.run(crate::call::VERIFY_TIMEOUT_MS + 500);
    assert!(has(&net.events[1], |e| matches!(e,
        ClientEvent::KeyChanged { name, old: o, new, .. } if name == "alice" && *o == old && *new == alice)));
    assert!(failed_with(&net.events[1], "key-changed"));
    assert!(!has(&net.events[1], |e| matches!(e, ClientEvent::Incoming { .. } | ClientEvent::Connected { .. })));
    // The caller hears only "not verified": nothing about whom bob has pinned.
    assert!(has(&net.events[0], |e| matches!(e,
        ClientEvent::Failed { call_id, reason: CallFailure::Rejected(Rejection::CallerNotVerified) } if *call_id == id)));
    // The directory backs alice's key, so it waits for bob's decision.
    assert_eq!(net.clients[1].trust_store().get("alice").unwrap().pending, Some(alice));
}

#[test]
fn a_pinned_caller_rings_as_a_contact_whatever_the_directory_says() {
    let mut net = Net::new(&["alice", "bob"], true);
    net.lost_lookups = Some(1); // bob's directory never answers
    net.run(100);
    let alice = net.clients[0].identity().user_id();
    net.clients[1].set_trust_store(TrustStore::from_pins([pin_of("alice", alice)]));
    let id = net.clients[0].place_call("bob", net.now).unwrap();
    net.run(crate::call::VERIFY_TIMEOUT_MS + 500);
    // Without an answer it rings at the verification timeout: as a contact, and auto-answered.
    assert!(has(&net.events[1], |e| matches!(e, ClientEvent::Incoming { verified: Verified::Contact, .. })));
    assert!(net.clients[1].is_connected(&id));
}

#[test]
fn an_honest_second_supernode_confirms_the_lookup_both_ways() {
    let mut net = Net::new(&["alice", "bob"], true).with_second(Second::Honest);
    call_and_hang_up(&mut net);
    assert!(connected(&net.events[0], Verified::Directory), "{:?}", net.events[0]);
    assert!(connected(&net.events[1], Verified::Directory), "{:?}", net.events[1]);
    // Both asked it: alice for "bob", bob for "alice".
    let asked = |i: usize| {
        net.second_sent[i]
            .iter()
            .filter_map(|m| if let Message::Lookup { name, .. } = m { Some(name.clone()) } else { None })
            .collect::<Vec<_>>()
    };
    assert_eq!(asked(0), vec!["bob".to_string()]);
    assert_eq!(asked(1), vec!["alice".to_string()]);
    // Pinned now: the next call asks nobody a second time.
    net.events = vec![vec![]; 2];
    let dials = net.second_dials.len();
    call_and_hang_up(&mut net);
    assert!(connected(&net.events[0], Verified::Contact));
    assert_eq!(net.second_dials.len(), dials, "a pinned name needs no second opinion");
}

#[test]
fn a_second_supernode_naming_another_key_fails_the_call_as_a_mismatch() {
    let mut net = Net::new(&["alice", "bob"], true).with_second(Second::Forge(66));
    let id = net.clients[0].place_call("bob", net.now).unwrap();
    net.run(500);
    assert!(has(&net.events[0], |e| matches!(e,
        ClientEvent::Failed { call_id, reason: CallFailure::LookupMismatch(n) } if *call_id == id && n == "bob")));
    assert_eq!(CallFailure::LookupMismatch("bob".into()).code(), "lookup-mismatch");
    // No invite left alice; bob heard nothing; nothing was pinned.
    assert!(net.signals[0].is_empty());
    assert!(!has(&net.events[1], |e| matches!(e, ClientEvent::Incoming { .. })));
    assert!(net.clients[0].trust_store().is_empty());
}

#[test]
fn an_incoming_call_whose_caller_a_second_supernode_disputes_never_rings() {
    let mut net = Net::new(&["alice", "bob"], true).with_second(Second::Honest);
    // Only bob's second opinion lies (alice's own check goes to the same fake: let it through first).
    net.clients[0].host_cache = HostCache::new();
    net.clients[0].host_cache.add(addr(SN));
    net.second = Second::Forge(66);
    let id = net.clients[0].place_call("bob", net.now).unwrap();
    net.run(crate::call::VERIFY_TIMEOUT_MS + 500);
    assert!(failed_with(&net.events[1], "lookup-mismatch"), "{:?}", net.events[1]);
    assert!(!has(&net.events[1], |e| matches!(e, ClientEvent::Incoming { .. } | ClientEvent::Connected { .. })));
    assert!(has(&net.events[0], |e| matches!(e,
        ClientEvent::Failed { call_id, reason: CallFailure::Rejected(Rejection::CallerNotVerified) } if *call_id == id)));
}

#[test]
fn a_silent_second_supernode_fails_an_outgoing_call_and_rings_an_incoming_one_unverified() {
    let mut net = Net::new(&["alice", "bob"], true).with_second(Second::Silent);
    let id = net.clients[0].place_call("bob", net.now).unwrap();
    net.run(crate::client::CROSS_CHECK_TIMEOUT_MS + 200);
    assert!(
        has(&net.events[0], |e| matches!(e,
            ClientEvent::Failed { call_id, reason: CallFailure::LookupUnconfirmed(_) } if *call_id == id)),
        "{:?}",
        net.events[0]
    );
    assert!(net.signals[0].is_empty(), "invited anyway");
    // The callee side: alice knows no second supernode (so she invites), bob's does not answer.
    let mut net = Net::new(&["alice", "bob"], true).with_second(Second::Silent);
    net.clients[0].host_cache = HostCache::new();
    net.clients[0].host_cache.add(addr(SN));
    let id = net.clients[0].place_call("bob", net.now).unwrap();
    net.run(crate::call::VERIFY_TIMEOUT_MS + 500);
    assert!(
        has(&net.events[1], |e| matches!(e, ClientEvent::Incoming { verified: Verified::Unverified, .. })),
        "{:?}",
        net.events[1]
    );
    assert_eq!(net.clients[1].call_info(&id).map(|i| i.1), Some("incoming"), "auto-answered");
}

#[test]
fn a_second_supernode_nobody_can_reach_leaves_the_one_answer_standing() {
    // E.g. a firewall that passes only our own supernode's port: as in a one-supernode network.
    let mut net = Net::new(&["alice", "bob"], true).with_second(Second::Down);
    call_and_hang_up(&mut net);
    assert_eq!(net.second_dials, vec![0, 1], "both tried it");
    assert!(connected(&net.events[0], Verified::Directory), "{:?}", net.events[0]);
    assert!(connected(&net.events[1], Verified::Directory), "{:?}", net.events[1]);
}

#[test]
fn a_cross_check_never_asks_our_own_supernode() {
    let mut net = Net::new(&["alice", "bob"], true);
    net.run(100);
    call_and_hang_up(&mut net);
    // One supernode only: no second dial at all, and the call still connects (one opinion).
    assert!(net.second_dials.is_empty());
    assert!(connected(&net.events[0], Verified::Directory));
}
