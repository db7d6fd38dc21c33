//! The sans-IO client against the sans-IO server: allocation with the 401 challenge,
//! permissions, channel binding, data both ways, refresh and failure.

use super::*;
use crate::client::{TurnClient, TurnEvent};
use crate::Transport;

const CLIENT: &str = "10.0.0.2:40000";
const SERVER: &str = "10.0.0.1:3478";

/// Move every client message to the server and every answer back; returns relayed data the
/// client received.
fn exchange(h: &mut Harness, c: &mut TurnClient, now: u64) -> Vec<(SocketAddr, Vec<u8>)> {
    let mut got = Vec::new();
    for _ in 0..8 {
        let mut moved = false;
        while let Some(b) = c.poll_transmit() {
            moved = true;
            h.s.handle_client(Transport::Udp, addr(CLIENT), addr(SERVER), &b, now);
        }
        h.pump(now);
        for (_, bytes) in std::mem::take(&mut h.to_client) {
            moved = true;
            if let Some(d) = c.handle_message(&bytes, now) {
                got.push(d);
            }
        }
        if !moved {
            break;
        }
    }
    got
}

fn allocated(user: &str, secret: &[u8]) -> (Harness, TurnClient, SocketAddr) {
    let mut h = Harness::new();
    let (u, p) = mint_credentials(secret, user.as_bytes(), T0 / 1000, 600);
    let mut c = TurnClient::new(addr(SERVER), Transport::Udp, &u, &p, 1, T0);
    exchange(&mut h, &mut c, T0);
    let relayed = match c.poll_event() {
        Some(TurnEvent::Allocated { relayed, mapped }) => {
            assert_eq!(mapped, Some(addr(CLIENT)));
            relayed
        }
        e => panic!("no allocation: {e:?}"),
    };
    (h, c, relayed)
}

#[test]
fn client_allocates_after_the_challenge_and_relays_both_ways() {
    let (mut h, mut c, relayed) = allocated("alice", SECRET);
    assert_eq!(c.relayed(), Some(relayed));
    let peer = addr(PEER);
    // First datagram: a Send indication (the channel is not bound yet) that the server relays.
    c.send_to(peer, b"hello", T0 + 10);
    exchange(&mut h, &mut c, T0 + 10);
    assert!(h.to_peer.iter().any(|(r, p, b)| *r == relayed && *p == peer && b == b"hello"), "{:?}", h.to_peer);
    h.to_peer.clear();
    // Now bound: ChannelData out, and the peer's answer comes back to us.
    c.send_to(peer, b"again", T0 + 20);
    let sent: Vec<Vec<u8>> = std::iter::from_fn(|| c.poll_transmit()).collect();
    assert_eq!(sent.len(), 1);
    assert_eq!(crate::codec::packet_kind(&sent[0]), crate::codec::PacketKind::ChannelData);
    for b in &sent {
        h.s.handle_client(Transport::Udp, addr(CLIENT), addr(SERVER), b, T0 + 20);
    }
    h.pump(T0 + 20);
    assert!(h.to_peer.iter().any(|(_, p, b)| *p == peer && b == b"again"));
    h.s.handle_peer(relayed, peer, b"pong", T0 + 30);
    let got = exchange(&mut h, &mut c, T0 + 30);
    assert_eq!(got, vec![(peer, b"pong".to_vec())]);
    // A stranger without a permission does not reach us.
    h.s.handle_peer(relayed, addr("203.0.113.9:1"), b"spam", T0 + 40);
    assert!(exchange(&mut h, &mut c, T0 + 40).is_empty());
}

#[test]
fn client_keeps_the_allocation_alive_and_releases_it() {
    let (mut h, mut c, relayed) = allocated("bob", SECRET);
    c.permit(addr(PEER).ip(), T0);
    exchange(&mut h, &mut c, T0);
    // Hours pass in steps: refreshes keep allocation and permission alive while the
    // supernode hands out fresh credentials (they live 600 s).
    let mut now = T0;
    while now < T0 + 3 * 3_600_000 {
        now += 10_000;
        if (now - T0).is_multiple_of(300_000) {
            let (u, p) = mint_credentials(SECRET, b"bob", now / 1000, 600);
            c.set_credentials(&u, &p);
        }
        c.handle_timeout(now);
        h.s.handle_timeout(now);
        exchange(&mut h, &mut c, now);
    }
    assert!(!c.is_dead());
    h.s.handle_peer(relayed, addr(PEER), b"still here", now);
    assert_eq!(exchange(&mut h, &mut c, now), vec![(addr(PEER), b"still here".to_vec())]);
    c.close(now);
    exchange(&mut h, &mut c, now);
    assert!(h.released.contains(&relayed));
}

#[test]
fn client_reports_refusal_and_timeout() {
    let mut h = Harness::new();
    let (u, _) = mint_credentials(SECRET, b"carol", T0 / 1000, 600);
    let mut c = TurnClient::new(addr(SERVER), Transport::Udp, &u, "not-the-password", 1, T0);
    exchange(&mut h, &mut c, T0);
    assert!(matches!(c.poll_event(), Some(TurnEvent::Failed { code: 401, .. })));
    assert!(c.is_dead());
    // Nobody answers: retransmissions, then a 408.
    let mut c = TurnClient::new(addr(SERVER), Transport::Udp, &u, "x", 2, T0);
    let mut now = T0;
    let mut sent = 0;
    while c.poll_event().is_none() && now < T0 + 60_000 {
        sent += std::iter::from_fn(|| c.poll_transmit()).count();
        now = c.poll_timeout().unwrap_or(now + 1_000).max(now);
        c.handle_timeout(now);
    }
    assert!(c.is_dead());
    assert!((4..=8).contains(&sent), "{sent} transmissions");
    assert!(now - T0 < 20_000, "gave up after {} ms", now - T0);
}

#[test]
fn client_ignores_garbage_and_forged_responses() {
    use rand::{Rng, SeedableRng};
    let (mut h, mut c, _) = allocated("dave", SECRET);
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    for _ in 0..5_000 {
        let len = rng.gen_range(0..300);
        let mut b: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        if b.len() >= 20 && rng.gen_bool(0.5) {
            b[0] &= 0x3F;
            b[4..8].copy_from_slice(&crate::codec::MAGIC_COOKIE.to_be_bytes());
        }
        let _ = c.handle_message(&b, T0 + 1);
    }
    assert!(!c.is_dead());
    assert!(c.relayed().is_some());
    c.send_to(addr(PEER), b"ok", T0 + 2);
    exchange(&mut h, &mut c, T0 + 2);
    assert!(h.to_peer.iter().any(|(_, _, b)| b == b"ok"));
}
