use super::*;
use rand::rngs::StdRng;
use rand::SeedableRng;

fn pair() -> (Chat, Chat, UserId, UserId) {
    let a = Identity::from_seed([1; 32]);
    let b = Identity::from_seed([2; 32]);
    let (ua, ub) = (a.user_id(), b.user_id());
    (Chat::new(a, "alice", true), Chat::new(b, "bob", true), ua, ub)
}

type Units = Vec<(UserId, MsgId, Vec<u8>, bool)>;

/// What `c` wants sent: (to, wire id, sealed, is a mailbox put), and the rest.
fn drain(c: &mut Chat) -> (Units, Vec<ChatOutput>) {
    let (mut units, mut other) = (Vec::new(), Vec::new());
    while let Some(o) = c.poll_output() {
        match o {
            ChatOutput::Deliver { to, wire_id, sealed } => units.push((to, wire_id, sealed, false)),
            ChatOutput::Mail { to, wire_id, sealed } => units.push((to, wire_id, sealed, true)),
            o => other.push(o),
        }
    }
    (units, other)
}

#[test]
fn online_message_is_delivered_then_read() {
    let (mut alice, mut bob, ua, ub) = pair();
    let mut rng = StdRng::seed_from_u64(1);
    let id = alice.send(ub, "hi bob", 1_000, &mut rng).unwrap();
    let (units, _) = drain(&mut alice);
    assert_eq!(units.len(), 1);
    for (_, w, s, _) in &units {
        bob.receive(ua, w, s, &mut rng).unwrap();
    }
    let (receipts, got) = drain(&mut bob);
    assert!(matches!(&got[..], [ChatOutput::Received(m)] if m.text == "hi bob" && m.id == id && m.from == ua));
    for (_, w, s, _) in &receipts {
        alice.receive(ub, w, s, &mut rng).unwrap();
    }
    let (_, st) = drain(&mut alice);
    assert_eq!(st, vec![ChatOutput::Status { id, status: Status::Delivered }]);
    assert!(alice.undelivered().is_empty());
    bob.read(&ua, &mut rng).unwrap();
    let (receipts, _) = drain(&mut bob);
    assert_eq!(receipts.len(), 1);
    alice.receive(ub, &receipts[0].1, &receipts[0].2, &mut rng).unwrap();
    let (_, st) = drain(&mut alice);
    assert_eq!(st, vec![ChatOutput::Status { id, status: Status::Read }]);
    assert_eq!(alice.message(&id).unwrap().status, Status::Read);
}

#[test]
fn offline_long_messages_go_stored_then_arrive_in_order_once() {
    let (mut alice, mut bob, ua, ub) = pair();
    let mut rng = StdRng::seed_from_u64(2);
    // A 16 KiB message of two-byte chars splits on char boundaries.
    let long: String = "é".repeat(MAX_TEXT / 2);
    let ids = [
        alice.send(ub, "one", 3_000, &mut rng).unwrap(),
        alice.send(ub, &long, 1_000, &mut rng).unwrap(),
        alice.send(ub, "three", 2_000, &mut rng).unwrap(),
    ];
    let (units, _) = drain(&mut alice);
    assert_eq!(units.len(), 1 + MAX_TEXT.div_ceil(PART_TEXT) + 1);
    assert!(units.iter().all(|u| u.2.len() <= MAX_MAIL_BODY));
    // Online tries fail: into the mailbox, then stored.
    for (_, w, _, _) in &units {
        alice.undeliverable(w);
    }
    let (mail, _) = drain(&mut alice);
    assert_eq!(mail.len(), units.len());
    assert!(mail.iter().all(|m| m.3));
    for (_, w, _, _) in &mail {
        alice.stored(w);
    }
    let (_, st) = drain(&mut alice);
    assert_eq!(st.len(), 3, "{st:?}");
    assert!(ids.iter().all(|id| alice.message(id).unwrap().status == Status::Stored));
    // Bob fetches the mailbox twice (an ack was lost), parts out of order.
    let mut items = mail.clone();
    items.reverse();
    items.extend(mail.iter().cloned());
    for (_, w, s, _) in &items {
        bob.receive(ua, w, s, &mut rng).unwrap();
    }
    let (receipts, got) = drain(&mut bob);
    assert_eq!(got.len(), 3, "each message received once");
    let texts: Vec<&str> = bob.conversation(&ua).iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, vec![long.as_str(), "three", "one"], "ordered by sender time");
    for (_, w, s, _) in &receipts {
        alice.receive(ub, w, s, &mut rng).unwrap();
    }
    assert!(ids.iter().all(|id| alice.message(id).unwrap().status == Status::Delivered));
    assert!(alice.undelivered().is_empty());
}

#[test]
fn read_receipts_off_tells_nothing() {
    let (mut alice, _, ua, ub) = pair();
    let mut bob = Chat::new(Identity::from_seed([2; 32]), "bob", false);
    let mut rng = StdRng::seed_from_u64(3);
    alice.send(ub, "x", 1, &mut rng).unwrap();
    let (units, _) = drain(&mut alice);
    bob.receive(ua, &units[0].1, &units[0].2, &mut rng).unwrap();
    drain(&mut bob);
    bob.read(&ua, &mut rng).unwrap();
    let (receipts, _) = drain(&mut bob);
    assert!(receipts.is_empty());
    assert_eq!(bob.conversation(&ua)[0].status, Status::Read);
}

#[test]
fn limits_and_forgeries_are_refused_with_reasons() {
    let (mut alice, mut bob, ua, ub) = pair();
    let mut rng = StdRng::seed_from_u64(4);
    assert_eq!(alice.send(ub, "", 1, &mut rng), Err(ChatError::Empty));
    let big = "a".repeat(MAX_TEXT + 1);
    assert_eq!(alice.send(ub, &big, 1, &mut rng), Err(ChatError::TooLong(MAX_TEXT + 1)));
    let id = alice.send(ub, "real", 1, &mut rng).unwrap();
    let (units, _) = drain(&mut alice);
    // Claimed to be from someone else, or under another wire id: does not open.
    let carol = Identity::from_seed([3; 32]).user_id();
    assert!(matches!(bob.receive(carol, &units[0].1, &units[0].2, &mut rng), Err(ChatError::Seal(_))));
    assert!(matches!(bob.receive(ua, &[0; 16], &units[0].2, &mut rng), Err(ChatError::Seal(_))));
    // A receipt from a third party for alice's message changes nothing.
    let mut mallory = Chat::new(Identity::from_seed([3; 32]), "mallory", true);
    mallory.receipt(ua, ChatPayload::Read(vec![id]), &mut rng).unwrap();
    let (forged, _) = drain(&mut mallory);
    alice.receive(carol, &forged[0].1, &forged[0].2, &mut rng).unwrap();
    assert_eq!(alice.message(&id).unwrap().status, Status::Sent);
    // A payload that lies about its parts.
    let bad = ChatPayload::Text { id: [7; 16], sent_ms: 1, part: 3, parts: 2, text: "x".into() };
    alice.queue(ub, bad, None, &mut rng).unwrap();
    let (bad, _) = drain(&mut alice);
    assert_eq!(bob.receive(ua, &bad[0].1, &bad[0].2, &mut rng), Err(ChatError::Malformed));
}

#[test]
fn status_never_moves_back() {
    let (mut alice, mut bob, ua, ub) = pair();
    let mut rng = StdRng::seed_from_u64(5);
    let id = alice.send(ub, "m", 1, &mut rng).unwrap();
    let (units, _) = drain(&mut alice);
    bob.receive(ua, &units[0].1, &units[0].2, &mut rng).unwrap();
    bob.read(&ua, &mut rng).unwrap();
    let (receipts, _) = drain(&mut bob);
    // Read arrives before delivered; a late mailbox "stored" changes nothing.
    for (_, w, s, _) in receipts.iter().rev() {
        alice.receive(ub, w, s, &mut rng).unwrap();
    }
    alice.stored(&units[0].1);
    assert_eq!(alice.message(&id).unwrap().status, Status::Read);
}
