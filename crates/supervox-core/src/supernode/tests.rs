use super::*;
use crate::Identity;
use supervox_proto::{CallId, Presence};

fn addr(p: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], p))
}

fn sn(seed: u8, port: u16, seeds: Vec<SocketAddr>) -> Supernode {
    let cfg = SupernodeConfig { advertise: addr(port), seeds, max_clients: 2, agent: "t".into() };
    Supernode::new(Identity::from_seed([seed; 32]).user_id(), cfg, vec![], 1, 0)
}

fn drain(s: &mut Supernode) -> Vec<SnOutput> {
    std::iter::from_fn(|| s.poll_output()).collect()
}

fn sent_to(out: &[SnOutput], conn: ConnId) -> Vec<Message> {
    out.iter()
        .filter_map(|o| match o {
            SnOutput::Send(c, m) if *c == conn => Some(m.clone()),
            _ => None,
        })
        .collect()
}

fn join_client(s: &mut Supernode, conn: ConnId, id: &Identity) -> Vec<SnOutput> {
    s.on_connected(conn, addr(9000 + conn as u16), None);
    s.on_established(conn, Role::Client, id.user_id(), None, 0);
    drain(s)
}

fn sign_in(s: &mut Supernode, conn: ConnId, id: &Identity, name: &str) -> Vec<Message> {
    let mut out = join_client(s, conn, id);
    s.on_message(conn, Message::Claim { claim: NameClaim::sign(id.signing_key(), name, 1).unwrap() }, 0);
    let p = Presence::sign(id.signing_key(), name, s.advertise(), 1, 60_000).unwrap();
    s.on_message(conn, Message::Publish { presence: p }, 0);
    out.extend(drain(s));
    // Keep what was meant for other connections (replication) queued.
    let mine = sent_to(&out, conn);
    s.out.extend(out.into_iter().filter(|o| !matches!(o, SnOutput::Send(c, _) if *c == conn)));
    mine
}

/// Link two supernodes: `a` dialled `b`. Returns their conn ids.
fn link(a: &mut Supernode, b: &mut Supernode, ca: ConnId, cb: ConnId) {
    a.on_connected(ca, b.advertise(), Some(b.advertise()));
    b.on_connected(cb, a.advertise(), None);
    a.on_established(ca, Role::Supernode, b.me, Some(b.advertise()), 0);
    b.on_established(cb, Role::Supernode, a.me, Some(a.advertise()), 0);
}

/// Deliver messages between two linked supernodes until quiet; returns what
/// was addressed to other connections (clients).
fn pump(a: &mut Supernode, b: &mut Supernode, ca: ConnId, cb: ConnId) -> Vec<SnOutput> {
    let mut rest = Vec::new();
    loop {
        let (oa, ob) = (drain(a), drain(b));
        if oa.is_empty() && ob.is_empty() {
            return rest;
        }
        for o in oa {
            match o {
                SnOutput::Send(c, m) if c == ca => b.on_message(cb, m, 0),
                o => rest.push(o),
            }
        }
        for o in ob {
            match o {
                SnOutput::Send(c, m) if c == cb => a.on_message(ca, m, 0),
                o => rest.push(o),
            }
        }
    }
}

#[test]
fn welcome_claim_publish_and_conflict() {
    let mut s = sn(1, 4000, vec![]);
    let (alice, mallory) = (Identity::from_seed([10; 32]), Identity::from_seed([11; 32]));
    let msgs = sign_in(&mut s, 1, &alice, "alice");
    assert!(matches!(&msgs[0], Message::Welcome { supernode, .. } if *supernode == addr(4000)));
    assert!(msgs.contains(&Message::ClaimResult { name: "alice".into(), result: Ok(()) }));
    assert!(msgs.contains(&Message::PublishResult { result: Ok(()) }));
    let msgs = sign_in(&mut s, 2, &mallory, "alice");
    assert!(msgs.iter().any(|m| matches!(m, Message::ClaimResult { result: Err(e), .. } if e.contains("taken"))));
    assert!(msgs.iter().any(|m| matches!(m, Message::PublishResult { result: Err(_) })));
}

#[test]
fn forged_or_foreign_presence_is_refused() {
    let mut s = sn(1, 4000, vec![]);
    let (alice, bob) = (Identity::from_seed([10; 32]), Identity::from_seed([11; 32]));
    sign_in(&mut s, 1, &alice, "alice");
    sign_in(&mut s, 2, &bob, "bob");
    // Bob's connection publishes a record signed by alice's key but altered.
    let mut forged = Presence::sign(alice.signing_key(), "alice", s.advertise(), 5, 60_000).unwrap();
    forged.seq = 6;
    s.on_message(2, Message::Publish { presence: forged.clone() }, 0);
    let m = sent_to(&drain(&mut s), 2);
    assert!(
        matches!(&m[..], [Message::PublishResult { result: Err(e) }] if e.contains("not signed by this connection"))
    );
    // Alice's own connection with a bad signature.
    s.on_message(1, Message::Publish { presence: forged }, 0);
    let m = sent_to(&drain(&mut s), 1);
    assert!(matches!(&m[..], [Message::PublishResult { result: Err(e) }] if e.contains("bad signature")));
}

#[test]
fn full_supernode_redirects() {
    let mut s = sn(1, 4000, vec![]);
    for i in 0..2 {
        join_client(&mut s, i, &Identity::from_seed([20 + i as u8; 32]));
    }
    let out = join_client(&mut s, 7, &Identity::from_seed([30; 32]));
    assert!(matches!(&sent_to(&out, 7)[..], [Message::Redirect { .. }]));
    assert!(out.iter().any(|o| matches!(o, SnOutput::Close(7, _))));
}

#[test]
fn mesh_replicates_claims_forwards_lookups_and_routes_invites() {
    let mut a = sn(1, 4000, vec![addr(4001)]);
    let mut b = sn(2, 4001, vec![]);
    a.on_tick(0);
    assert!(drain(&mut a).contains(&SnOutput::Dial(addr(4001))));
    link(&mut a, &mut b, 100, 200);
    pump(&mut a, &mut b, 100, 200);
    let (alice, bob) = (Identity::from_seed([10; 32]), Identity::from_seed([11; 32]));
    sign_in(&mut a, 1, &alice, "alice");
    pump(&mut a, &mut b, 100, 200);
    // The claim replicated: bob's SN refuses "alice" to another key.
    let refused = sign_in(&mut b, 2, &Identity::from_seed([12; 32]), "alice");
    assert!(refused.iter().any(|m| matches!(m, Message::ClaimResult { result: Err(_), .. })));
    sign_in(&mut b, 3, &bob, "bob");
    pump(&mut a, &mut b, 100, 200);
    // Bob looks alice up: b forwards to a, answers online.
    b.on_message(3, Message::Lookup { req_id: 7, name: "alice".into() }, 0);
    let out = pump(&mut a, &mut b, 100, 200);
    let answer = sent_to(&out, 3);
    let Some(Message::LookupResult { req_id: 7, answer: LookupAnswer::Online { presence, .. } }) = answer.first()
    else {
        panic!("no online answer: {answer:?}")
    };
    assert_eq!(presence.supernode, addr(4000));
    // Bob invites alice: routed b → a → alice's connection.
    let env = SignalEnvelope {
        call_id: CallId([1; 16]),
        from: bob.user_id(),
        to: alice.user_id(),
        to_supernode: addr(4000),
        body: CallSignal::Ringing,
    };
    b.on_message(3, Message::Signal(env.clone()), 0);
    let out = pump(&mut a, &mut b, 100, 200);
    assert_eq!(sent_to(&out, 1), vec![Message::Signal(env.clone())]);
    // Unknown supernode: the sender learns at once.
    let lost = SignalEnvelope { to_supernode: addr(4999), ..env.clone() };
    b.on_message(3, Message::Signal(lost), 0);
    assert!(matches!(&sent_to(&drain(&mut b), 3)[..], [Message::SignalFailed { .. }]));
    // Spoofed sender closes the connection.
    b.on_message(3, Message::Signal(SignalEnvelope { from: alice.user_id(), ..env }), 0);
    assert!(drain(&mut b).iter().any(|o| matches!(o, SnOutput::Close(3, _))));
}

#[test]
fn duplicate_links_resolve_to_one() {
    let mut a = sn(1, 4000, vec![]);
    let mut b = sn(2, 4001, vec![]);
    // Both dial at once.
    link(&mut a, &mut b, 100, 200);
    link(&mut b, &mut a, 201, 101);
    let (oa, ob) = (drain(&mut a), drain(&mut b));
    let closed_a: Vec<_> =
        oa.iter().filter_map(|o| if let SnOutput::Close(c, _) = o { Some(*c) } else { None }).collect();
    let closed_b: Vec<_> =
        ob.iter().filter_map(|o| if let SnOutput::Close(c, _) = o { Some(*c) } else { None }).collect();
    assert_eq!(closed_a.len(), 1);
    assert_eq!(closed_b.len(), 1);
    // They closed the two ends of the same TCP connection.
    let pair = [(100, 200), (101, 201)];
    assert!(pair.contains(&(closed_a[0], closed_b[0])), "{closed_a:?} {closed_b:?}");
}

#[test]
fn lookup_times_out_to_local_answer() {
    let mut a = sn(1, 4000, vec![]);
    let mut b = sn(2, 4001, vec![]);
    link(&mut a, &mut b, 100, 200);
    pump(&mut a, &mut b, 100, 200);
    join_client(&mut a, 1, &Identity::from_seed([10; 32]));
    a.on_message(1, Message::Lookup { req_id: 1, name: "ghost".into() }, 0);
    drain(&mut a); // the forwarded lookup is lost
    a.on_tick(LOOKUP_TIMEOUT_MS);
    assert_eq!(sent_to(&drain(&mut a), 1), vec![Message::LookupResult { req_id: 1, answer: LookupAnswer::Unknown }]);
}

#[test]
fn stun_dial_backs_are_relayed_and_rate_limited() {
    let mut a = sn(1, 4000, vec![]);
    let mut b = sn(2, 4001, vec![]);
    link(&mut a, &mut b, 100, 200);
    pump(&mut a, &mut b, 100, 200);
    let client: SocketAddr = "192.0.2.7:5555".parse().unwrap();
    assert!(a.request_dial_back(addr(4001), [7; 12], client, client, 0));
    assert!(!a.request_dial_back(addr(4999), [7; 12], client, client, 0), "not linked");
    let out = drain(&mut a);
    let Some(SnOutput::Send(100, m)) = out.first() else { panic!("{out:?}") };
    b.on_message(200, m.clone(), 0);
    assert_eq!(
        drain(&mut b),
        vec![SnOutput::StunDialBack { transaction_id: [7; 12], mapped: client, to: client, padding: 0 }]
    );
    for _ in 0..(DIAL_BACKS_PER_SEC + 50) {
        b.on_message(200, m.clone(), 10);
    }
    assert_eq!(drain(&mut b).len(), DIAL_BACKS_PER_SEC as usize - 1, "budget per second");
    b.on_message(200, m.clone(), 1_010);
    assert_eq!(drain(&mut b).len(), 1, "budget renewed");
}

#[test]
fn a_lookup_flood_is_rate_limited_per_client_and_others_are_served() {
    let mut s = sn(1, 4000, vec![]);
    let (alice, mallory) = (Identity::from_seed([10; 32]), Identity::from_seed([11; 32]));
    sign_in(&mut s, 1, &alice, "alice");
    sign_in(&mut s, 2, &mallory, "mallory");
    drain(&mut s);
    let now = 5_000;
    for i in 0..1_000 {
        s.on_message(2, Message::Lookup { req_id: i, name: "alice".into() }, now);
    }
    let out = drain(&mut s);
    let to_mallory = sent_to(&out, 2);
    let answered = to_mallory.iter().filter(|m| matches!(m, Message::LookupResult { .. })).count();
    let refused =
        to_mallory.iter().filter(|m| matches!(m, Message::Error { reason } if reason == "rate limited")).count();
    assert_eq!(answered, CLIENT_REQUESTS_PER_SEC as usize);
    assert_eq!(refused, 1_000 - answered);
    assert_eq!(s.stats().rate_limited, refused as u64);
    // Alice, in the same second, is served as usual.
    s.on_message(1, Message::Lookup { req_id: 1, name: "mallory".into() }, now);
    assert!(matches!(sent_to(&drain(&mut s), 1)[..], [Message::LookupResult { .. }]));
    // And mallory's budget comes back a second later.
    s.on_message(2, Message::Lookup { req_id: 7, name: "alice".into() }, now + 1_000);
    assert!(matches!(sent_to(&drain(&mut s), 2)[..], [Message::LookupResult { .. }]));
}
