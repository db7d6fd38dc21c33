//! Happy-eyeballs sign-in, driven by hand: which entries are dialled when,
//! who wins, what is closed, what the host cache learns.

use super::*;
use crate::host_cache::{Seed, FAIL_BACKOFF_MS};
use supervox_proto::UserId;

const T0: u64 = 1_700_000_000_000;

fn a(p: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], p))
}

/// A client whose cache orders 4001, 4002, … by measured RTT.
fn client(ports: &[u16]) -> Client {
    let mut hc = HostCache::new();
    for (i, p) in ports.iter().enumerate() {
        hc.succeeded(a(*p), 10 + 10 * i as u32, Some(0), T0);
    }
    let cfg = ClientConfig { name: "alice".into(), agent: "t".into(), ..Default::default() };
    let mut c = Client::new(Identity::from_seed([1; 32]), cfg, hc, 7);
    // These tests follow the cache's score order; the per-client spread is
    // tested in host_cache.
    c.spread_salt = 0;
    c
}

/// The identity of the supernode at port `p`.
fn sn_id(p: u16) -> UserId {
    Identity::from_seed([(p % 200) as u8 + 1; 32]).user_id()
}

fn drain(c: &mut Client) -> Vec<ClientOutput> {
    std::iter::from_fn(|| c.poll_output()).collect()
}

fn connects(out: &[ClientOutput]) -> Vec<SocketAddr> {
    out.iter().filter_map(|o| if let ClientOutput::Connect(x) = o { Some(*x) } else { None }).collect()
}

fn closes(out: &[ClientOutput]) -> Vec<ConnId> {
    out.iter().filter_map(|o| if let ClientOutput::Close(c, _) = o { Some(*c) } else { None }).collect()
}

fn welcome(sn: SocketAddr, others: &[(SocketAddr, u8)]) -> Message {
    let mut supernodes = vec![sn];
    let mut loads = vec![30];
    for (s, l) in others {
        supernodes.push(*s);
        loads.push(*l);
    }
    Message::Welcome { supernode: sn, observed: a(9999), supernodes, loads }
}

#[test]
fn attempts_are_staggered_bounded_and_the_first_admitted_wins() {
    let mut c = client(&[4001, 4002, 4003, 4004, 4005]);
    c.handle_timeout(T0);
    assert_eq!(connects(&drain(&mut c)), vec![a(4001)]);
    assert_eq!(c.poll_timeout(), Some(T0 + ATTEMPT_STAGGER_MS));
    c.handle_timeout(T0 + ATTEMPT_STAGGER_MS - 1);
    assert!(connects(&drain(&mut c)).is_empty());
    c.handle_timeout(T0 + ATTEMPT_STAGGER_MS);
    assert_eq!(connects(&drain(&mut c)), vec![a(4002)]);
    c.handle_timeout(T0 + 2 * ATTEMPT_STAGGER_MS);
    assert_eq!(connects(&drain(&mut c)), vec![a(4003)]);
    // At most three in flight, however long they take (up to the timeout).
    for t in (3..19).map(|k| T0 + k * ATTEMPT_STAGGER_MS) {
        c.handle_timeout(t);
        assert!(connects(&drain(&mut c)).is_empty(), "at {t}");
    }
    assert_eq!(c.connect_attempts(), vec![a(4001), a(4002), a(4003)]);
    // 4001 and 4002 connect; 4002 finishes its handshake and admits us first.
    c.on_connected(11, a(4001));
    c.on_connected(12, a(4002));
    c.on_established(12, Role::Supernode, sn_id(4002), T0 + 800);
    let t = T0 + 900;
    c.on_message(12, welcome(a(4002), &[(a(4009), 5)]), t);
    let out = drain(&mut c);
    assert_eq!(closes(&out), vec![11], "the other open attempt is closed: {out:?}");
    assert!(out.iter().any(|o| matches!(o, ClientOutput::Send(12, Message::Claim { .. }))));
    assert!(out.iter().any(|o| matches!(o, ClientOutput::Send(12, Message::Publish { .. }))));
    assert!(c.connect_attempts().is_empty());
    assert_eq!(c.supernode_conn(), Some(12));
    // The dial still in progress is closed when it completes.
    c.on_connected(13, a(4003));
    assert_eq!(closes(&drain(&mut c)), vec![13]);
    // Messages on a losing connection are ignored.
    c.on_message(11, welcome(a(4001), &[]), t);
    assert!(drain(&mut c).is_empty());
    // Measured: dial (at +250) to Welcome (at +900) smoothed into the RTT
    // (20 before), and the loads it listed.
    let e = c.host_cache().get(&a(4002)).unwrap();
    assert_eq!(e.rtt_ms, Some((3 * 20 + 650) / 4));
    assert_eq!(e.load, Some(30));
    assert_eq!(c.host_cache().get(&a(4009)).unwrap().load, Some(5));
    // Signed in on the winner's presence answer.
    c.on_message(12, Message::PublishResult { result: Ok(()) }, t + 10);
    assert_eq!(c.supernode(), Some(a(4002)));
    // No connection work left: the one timer is the presence refresh.
    assert_eq!(c.poll_timeout(), Some(t + PRESENCE_REFRESH_MS));
}

#[test]
fn failures_start_the_next_attempt_at_once_and_back_the_entry_off() {
    let mut c = client(&[4001, 4002, 4003]);
    c.handle_timeout(T0);
    assert_eq!(connects(&drain(&mut c)), vec![a(4001)]);
    // Refused: the next one starts without waiting for the stagger.
    c.on_connect_failed(a(4001), "refused", T0 + 5);
    assert_eq!(connects(&drain(&mut c)), vec![a(4002)]);
    assert_eq!(c.host_cache().get(&a(4001)).unwrap().retry_at_ms, T0 + 5 + FAIL_BACKOFF_MS);
    // A handshake that closes fails its attempt too.
    c.on_connected(12, a(4002));
    c.on_closed(12, "reset", T0 + 20);
    assert_eq!(connects(&drain(&mut c)), vec![a(4003)]);
    // A blackholed entry is abandoned after the attempt timeout; with nothing
    // left this round, the client backs off before the next round.
    c.handle_timeout(T0 + 20 + ATTEMPT_TIMEOUT_MS);
    let out = drain(&mut c);
    assert!(connects(&out).is_empty() && closes(&out).is_empty(), "{out:?}");
    let next = c.poll_timeout().unwrap();
    assert!((T0 + 20 + ATTEMPT_TIMEOUT_MS + 125..=T0 + 20 + ATTEMPT_TIMEOUT_MS + 250).contains(&next), "{next}");
    assert!(c.host_cache().entries().iter().all(|e| e.fails == 1));
    // The next round leaves out 4003, still backing off.
    c.handle_timeout(next);
    assert_eq!(connects(&drain(&mut c)), vec![a(4001)]);
    c.on_connect_failed(a(4001), "refused", next + 1);
    assert_eq!(connects(&drain(&mut c)), vec![a(4002)]);
    c.on_connect_failed(a(4002), "refused", next + 2);
    assert!(connects(&drain(&mut c)).is_empty());
    // When every entry is backing off, a round tries them all, soonest retry first.
    let next = c.poll_timeout().unwrap();
    c.handle_timeout(next);
    assert_eq!(connects(&drain(&mut c)), vec![a(4003)]);
}

#[test]
fn a_redirect_puts_its_suggestions_next_and_marks_the_supernode_full() {
    let mut c = client(&[4001, 4002]);
    c.handle_timeout(T0);
    drain(&mut c);
    c.on_connected(11, a(4001));
    c.on_established(11, Role::Supernode, sn_id(4001), T0 + 50);
    let redirect =
        Message::Redirect { supernodes: vec![a(4007), a(4008)], reason: "supernode full".into(), loads: vec![3, 9] };
    c.on_message(11, redirect, T0 + 100);
    let out = drain(&mut c);
    assert_eq!(closes(&out), vec![11]);
    assert_eq!(connects(&out), vec![a(4007)], "the least loaded suggestion goes first: {out:?}");
    assert_eq!(c.host_cache().get(&a(4001)).unwrap().load, Some(100));
    assert_eq!(c.host_cache().get(&a(4008)).unwrap().load, Some(9));
    c.handle_timeout(T0 + 100 + ATTEMPT_STAGGER_MS);
    assert_eq!(connects(&drain(&mut c)), vec![a(4008)]);
}

fn signed_in(c: &mut Client, conn: ConnId, sn: SocketAddr, t: u64) {
    c.handle_timeout(t);
    drain(c);
    c.on_connected(conn, sn);
    c.on_established(conn, Role::Supernode, sn_id(sn.port()), t + 5);
    c.on_message(conn, welcome(sn, &[]), t + 10);
    c.on_message(conn, Message::PublishResult { result: Ok(()) }, t + 20);
    drain(c);
    assert_eq!(c.supernode(), Some(sn));
}

#[test]
fn losing_the_supernode_starts_a_round_at_once_without_it() {
    let mut c = client(&[4001, 4002, 4003]);
    signed_in(&mut c, 11, a(4001), T0);
    c.on_closed(11, "reset", T0 + 1_000);
    let out = drain(&mut c);
    assert!(out.iter().any(|o| matches!(o, ClientOutput::Event(ClientEvent::LostSupernode { .. }))));
    assert_eq!(connects(&out), vec![a(4002)], "the lost one is backed off: {out:?}");
    c.handle_timeout(T0 + 1_000 + ATTEMPT_STAGGER_MS);
    assert_eq!(connects(&drain(&mut c)), vec![a(4003)]);
    c.handle_timeout(T0 + 1_000 + 2 * ATTEMPT_STAGGER_MS);
    assert!(connects(&drain(&mut c)).is_empty(), "4001 waits out its backoff");
}

#[test]
fn a_redirect_from_our_own_supernode_moves_us_to_its_suggestion() {
    // What a supernode that steps back sends its clients.
    let mut c = client(&[4001, 4002]);
    signed_in(&mut c, 11, a(4001), T0);
    let redirect =
        Message::Redirect { supernodes: vec![a(4005)], reason: "supernode stepping back".into(), loads: vec![1] };
    c.on_message(11, redirect, T0 + 1_000);
    let out = drain(&mut c);
    assert_eq!(closes(&out), vec![11]);
    // Its suggestion is known now with its load; the measured 4002 (20 ms,
    // idle) still scores better than the unmeasured 4005.
    assert_eq!(connects(&out), vec![a(4002)], "{out:?}");
    assert_eq!(c.host_cache().get(&a(4005)).unwrap().load, Some(1));
    c.handle_timeout(T0 + 1_000 + ATTEMPT_STAGGER_MS);
    assert_eq!(connects(&drain(&mut c)), vec![a(4005)]);
    assert_eq!(c.supernode(), None);
    // The close the driver reports back is not a second loss.
    c.on_closed(11, "redirected", T0 + 1_001);
    assert!(drain(&mut c).iter().all(|o| !matches!(o, ClientOutput::Event(ClientEvent::LostSupernode { .. }))));
}

fn sent_on(out: &[ClientOutput], conn: ConnId) -> usize {
    out.iter().filter(|o| matches!(o, ClientOutput::Send(c, _) if *c == conn)).count()
}

#[test]
fn the_supernode_key_is_learnt_on_the_first_sign_in_and_persisted() {
    let mut c = client(&[4001, 4002]);
    assert!(c.host_cache().entries().iter().all(|e| e.key.is_none()));
    signed_in(&mut c, 11, a(4001), T0);
    assert_eq!(c.host_cache().key(&a(4001)), Some(sn_id(4001)));
    assert_eq!(c.host_cache().key(&a(4002)), None, "only where we signed in");
    let text = c.host_cache().to_text();
    assert!(text.contains(&format!("key={}", sn_id(4001))), "{text}");
    // Next run (from the file), the same supernode with the same key is fine.
    let cfg = ClientConfig { name: "alice".into(), agent: "t".into(), ..Default::default() };
    let mut hc = HostCache::from_text(&text);
    // (Its Welcome advertised load 30: make it first again.)
    hc.succeeded(a(4001), 1, Some(0), T0);
    let mut c = Client::new(Identity::from_seed([1; 32]), cfg, hc, 7);
    c.spread_salt = 0;
    signed_in(&mut c, 21, a(4001), T0 + 60_000);
}

#[test]
fn a_different_key_at_a_pinned_address_is_refused_and_the_next_entry_tried() {
    let mut c = client(&[4001, 4002, 4003]);
    signed_in(&mut c, 11, a(4001), T0);
    // Next run, from the same cache: someone else answers at 4001.
    let cfg = ClientConfig { name: "alice".into(), agent: "t".into(), ..Default::default() };
    let mut hc = c.host_cache().clone();
    hc.succeeded(a(4001), 1, Some(0), T0);
    let mut c = Client::new(Identity::from_seed([1; 32]), cfg, hc, 7);
    c.spread_salt = 0;
    let t = T0 + 60_000;
    c.handle_timeout(t);
    assert_eq!(connects(&drain(&mut c)), vec![a(4001)]);
    c.on_connected(31, a(4001));
    let mallory = Identity::from_seed([66; 32]).user_id();
    c.on_established(31, Role::Supernode, mallory, t + 5);
    let out = drain(&mut c);
    assert_eq!(closes(&out), vec![31], "{out:?}");
    assert_eq!(connects(&out), vec![a(4002)], "the next entry at once: {out:?}");
    let e = c.host_cache().get(&a(4001)).unwrap();
    assert_eq!((e.key, e.fails), (Some(sn_id(4001)), 1), "the pinned key stays; the entry backs off");
    assert!(e.backing_off(t + 5));
    // Its Welcome, sent along with its Hello, does not sign us in there.
    c.on_message(31, welcome(a(4001), &[]), t + 6);
    let out = drain(&mut c);
    assert_eq!(sent_on(&out, 31), 0, "no claim or presence to the impostor: {out:?}");
    assert_eq!(c.supernode_conn(), None);
    c.on_closed(31, "closed", t + 7);
    assert!(connects(&drain(&mut c)).is_empty(), "the close is not a second failure");
    assert_eq!(c.host_cache().get(&a(4001)).unwrap().fails, 1);
    // The next entry, unpinned, is trusted on first use.
    c.on_connected(32, a(4002));
    c.on_established(32, Role::Supernode, sn_id(4002), t + 20);
    c.on_message(32, welcome(a(4002), &[]), t + 30);
    let out = drain(&mut c);
    assert!(sent_on(&out, 32) >= 2, "claim and presence: {out:?}");
    assert_eq!(c.supernode_conn(), Some(32));
    assert_eq!(c.host_cache().key(&a(4002)), Some(sn_id(4002)));
}

#[test]
fn a_seed_with_a_key_is_pinned_from_the_start() {
    let genuine = sn_id(4001);
    let seed: Seed = format!("{genuine}@127.0.0.1:4001").parse().unwrap();
    let cfg = || ClientConfig { name: "alice".into(), agent: "t".into(), ..Default::default() };
    let mut hc = HostCache::new();
    hc.add_seed(&seed);
    assert_eq!(hc.key(&a(4001)), Some(genuine));
    // On first contact an impostor there is refused (a bare seed would
    // have trusted it).
    let mut c = Client::new(Identity::from_seed([1; 32]), cfg(), hc.clone(), 7);
    c.handle_timeout(T0);
    assert_eq!(connects(&drain(&mut c)), vec![a(4001)]);
    c.on_connected(11, a(4001));
    c.on_established(11, Role::Supernode, Identity::from_seed([66; 32]).user_id(), T0 + 5);
    c.on_message(11, welcome(a(4001), &[]), T0 + 6);
    let out = drain(&mut c);
    assert_eq!(closes(&out), vec![11]);
    assert_eq!(sent_on(&out, 11), 0);
    assert_eq!(c.host_cache().key(&a(4001)), Some(genuine));
    // The genuine supernode signs us in.
    let mut c = Client::new(Identity::from_seed([1; 32]), cfg(), hc, 7);
    signed_in(&mut c, 12, a(4001), T0);
    // The same impostor at a bare seed is trusted on first use.
    let mut hc = HostCache::new();
    hc.add_seed(&"127.0.0.1:4001".parse().unwrap());
    let mut c = Client::new(Identity::from_seed([1; 32]), cfg(), hc, 7);
    c.handle_timeout(T0);
    drain(&mut c);
    c.on_connected(13, a(4001));
    let mallory = Identity::from_seed([66; 32]).user_id();
    c.on_established(13, Role::Supernode, mallory, T0 + 5);
    c.on_message(13, welcome(a(4001), &[]), T0 + 6);
    assert_eq!(c.supernode_conn(), Some(13));
    assert_eq!(c.host_cache().key(&a(4001)), Some(mallory));
}

#[test]
fn a_host_cache_file_without_keys_loads_and_learns_them() {
    let old = "127.0.0.1:4001 rtt=10 load=0 seen=1700000000000\n127.0.0.1:4002\n";
    let hc = HostCache::from_text(old);
    assert_eq!(hc.addrs().collect::<Vec<_>>(), vec![a(4001), a(4002)]);
    let cfg = ClientConfig { name: "alice".into(), agent: "t".into(), ..Default::default() };
    let mut c = Client::new(Identity::from_seed([1; 32]), cfg, hc, 7);
    c.spread_salt = 0;
    signed_in(&mut c, 11, a(4001), T0);
    assert_eq!(c.host_cache().key(&a(4001)), Some(sn_id(4001)));
}

#[test]
fn a_named_seed_is_resolved_at_every_round_and_where_it_points_now_is_tried() {
    use crate::host_cache::NamedSeed;
    let mut c = client(&[]);
    c.set_named_seeds(vec![NamedSeed { host: "sn.example".into(), port: 7000, key: Some(sn_id(7000)) }]);
    let ask = ClientOutput::Resolve { host: "sn.example".into(), port: 7000 };
    c.handle_timeout(T0);
    let out = drain(&mut c);
    assert!(out.contains(&ask), "{out:?}");
    assert!(connects(&out).is_empty(), "nothing to dial before the answer");
    // Answers nobody asked for, and addresses on another port, are not taken.
    c.handle_resolved("evil.example", 7000, Ok(vec![a(6666)]), T0 + 1);
    assert!(c.host_cache().is_empty());
    c.handle_resolved("sn.example", 7000, Ok(vec![a(7000), a(7001)]), T0 + 5);
    assert_eq!(connects(&drain(&mut c)), vec![a(7000)], "dialled as soon as it is known");
    assert_eq!(c.host_cache().get(&a(7001)), None);
    assert_eq!(c.host_cache().key(&a(7000)), Some(sn_id(7000)), "the seed's key is pinned for its addresses");
    // A second answer to the same question is not taken either.
    c.handle_resolved("sn.example", 7000, Ok(vec![SocketAddr::from(([127, 0, 0, 9], 7000))]), T0 + 6);
    assert_eq!(c.host_cache().len(), 1);

    // The supernode there is gone; the next round asks the name again, and it moved.
    c.on_connect_failed(a(7000), "refused", T0 + 10);
    let moved = SocketAddr::from(([127, 0, 0, 2], 7000));
    let mut t = T0 + 10;
    loop {
        t = c.poll_timeout().expect("a retry is due").max(t);
        assert!(t < T0 + 60_000, "no new resolution within a minute");
        c.handle_timeout(t);
        let out = drain(&mut c);
        if out.contains(&ask) {
            break;
        }
        for x in connects(&out) {
            c.on_connect_failed(x, "refused", t);
        }
    }
    c.handle_resolved("sn.example", 7000, Ok(vec![moved]), t + 20);
    c.on_connect_failed(a(7000), "refused", t + 30);
    let out = drain(&mut c);
    assert!(connects(&out).contains(&moved) || c.connect_attempts().contains(&moved), "{out:?}");
}

/// A supernode that admits us but cannot store our first presence (its
/// holders in churn, "the directory did not answer"): we publish again
/// after a backoff on the same link and sign in then — not never.
#[test]
fn a_refused_first_presence_is_published_again_until_we_are_signed_in() {
    let mut c = client(&[4001]);
    c.handle_timeout(T0);
    assert_eq!(connects(&drain(&mut c)), vec![a(4001)]);
    c.on_connected(11, a(4001));
    c.on_established(11, Role::Supernode, sn_id(4001), T0 + 100);
    c.on_message(11, welcome(a(4001), &[]), T0 + 200);
    drain(&mut c);
    let t = T0 + 300;
    c.on_message(11, Message::PublishResult { result: Err("the directory did not answer; try again".into()) }, t);
    assert_eq!(c.supernode(), None, "not signed in yet");
    let again = c.poll_timeout().expect("a timer to publish again");
    assert!(again < t + PRESENCE_REFRESH_MS && again >= t + CLAIM_RETRY_MIN_MS / 2, "{}", again - t);
    c.handle_timeout(again);
    let out = drain(&mut c);
    assert!(out.iter().any(|o| matches!(o, ClientOutput::Send(11, Message::Publish { .. }))), "{out:?}");
    c.on_message(11, Message::PublishResult { result: Ok(()) }, again + 10);
    assert_eq!(c.supernode(), Some(a(4001)));
}
