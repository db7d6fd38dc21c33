//! Happy-eyeballs sign-in, driven by hand: which entries are dialled when,
//! who wins, what is closed, what the host cache learns.

use super::*;
use crate::host_cache::FAIL_BACKOFF_MS;

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
    c.on_established(12, Role::Supernode);
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
    c.on_established(11, Role::Supernode);
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
    c.on_established(conn, Role::Supernode);
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
