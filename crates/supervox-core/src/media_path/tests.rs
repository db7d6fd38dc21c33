use super::*;
use crate::call::tests::transport_pair;
use std::collections::HashSet;
use supervox_proto::{CandidateKind, Transport};

fn cand(kind: CandidateKind, addr: SocketAddr) -> Candidate {
    Candidate { kind, transport: Transport::Udp, addr, priority: 1 }
}

fn host(p: u16) -> Candidate {
    cand(CandidateKind::Host, SocketAddr::from(([127, 0, 0, 1], p)))
}

#[test]
fn checks_select_a_path_then_media_flows_once() {
    let id = CallId([4; 16]);
    let (ka, kb) = transport_pair();
    let (aa, ab) = (host(1000).addr, host(2000).addr);
    let mut a = MediaPath::new(&id, ka, &[host(2000), host(2001)], LocalBases::default(), 0);
    let mut b = MediaPath::new(&id, kb, &[host(1000)], LocalBases::default(), 0);
    // a's checks go to both of b's candidates, from its socket; only 2000 is real.
    let sent: Vec<_> = std::iter::from_fn(|| a.poll_transmit()).collect();
    assert_eq!(sent.len(), 2);
    assert!(sent.iter().all(|(via, _, _)| *via == Via::Direct), "no relay: direct only");
    for (_, to, bytes) in sent {
        if to == ab {
            assert!(b.handle_datagram(Via::Direct, aa, &bytes, 1).is_none());
        }
    }
    // b answers with an ack (and its own checks to a).
    while let Some((_, to, bytes)) = b.poll_transmit() {
        assert_eq!(to, aa);
        a.handle_datagram(Via::Direct, ab, &bytes, 2);
    }
    assert!(a.is_connected());
    assert_eq!(a.remote(), Some(ab));
    assert_eq!(a.kind(), PathKind::DirectUdp);
    assert_eq!(a.rtt_ms(), Some(2.0), "check sent at 0, acked at 2");
    while a.poll_transmit().is_some() {}
    a.send_media(b"frame");
    let (_, to, pkt) = a.poll_transmit().unwrap();
    assert_eq!(to, ab);
    assert_eq!(b.handle_datagram(Via::Direct, aa, &pkt, 3).as_deref(), Some(&b"frame"[..]));
    // Replays and tampering are dropped.
    assert!(b.handle_datagram(Via::Direct, aa, &pkt, 4).is_none());
    let mut bad = pkt.clone();
    *bad.last_mut().unwrap() ^= 1;
    assert!(b.handle_datagram(Via::Direct, aa, &bad, 4).is_none());
    // Relabelling the clear kind byte is detected too.
    a.send_media(b"frame-2");
    let (_, _, mut relabelled) = a.poll_transmit().unwrap();
    relabelled[0] = KIND_CHECK;
    while b.poll_transmit().is_some() {}
    assert!(b.handle_datagram(Via::Direct, aa, &relabelled, 5).is_none());
    assert!(b.poll_transmit().is_none(), "a relabelled media packet was answered as a check");
}

#[test]
fn garbage_datagrams_are_ignored() {
    use rand::{Rng, SeedableRng};
    let id = CallId([4; 16]);
    let (ka, _) = transport_pair();
    let mut a = MediaPath::new(&id, ka, &[host(2000)], LocalBases::default(), 0);
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let from = host(9).addr;
    for _ in 0..20_000 {
        let len = rng.gen_range(0..200);
        let mut b: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        if b.len() > 9 && rng.gen_bool(0.5) {
            b[1..9].copy_from_slice(&call_tag(&id));
        }
        assert!(a.handle_datagram(Via::Direct, from, &b, 1).is_none());
    }
    assert!(!a.is_connected());
}

/// Two callers, each with a host address and a relayed address on a TURN
/// server, on a network whose direct path can be cut.
struct Net {
    a: MediaPath,
    b: MediaPath,
    a_host: SocketAddr,
    b_host: SocketAddr,
    a_relay: SocketAddr,
    b_relay: SocketAddr,
    /// Direct (host-to-host) traffic is dropped.
    direct_cut: bool,
    /// Relayed traffic is dropped (the relay died).
    relay_cut: bool,
    /// TCP stream traffic is dropped (the stream is stuck).
    tcp_cut: bool,
    media_at_b: Vec<u64>,
    seen_kinds: HashSet<(bool, Via)>,
}

impl Net {
    fn new(force_relay: bool) -> Net {
        let id = CallId([7; 16]);
        let (ka, kb) = transport_pair();
        let a_host: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let b_host: SocketAddr = "10.0.1.1:5000".parse().unwrap();
        let a_relay: SocketAddr = "192.0.2.1:50000".parse().unwrap();
        let b_relay: SocketAddr = "192.0.2.1:50002".parse().unwrap();
        let bases = LocalBases { relay: Some(false), force_relay, no_udp: false, private: false };
        let a_cands = [cand(CandidateKind::Host, a_host), cand(CandidateKind::Relay, a_relay)];
        let b_cands = [cand(CandidateKind::Host, b_host), cand(CandidateKind::Relay, b_relay)];
        Net {
            a: MediaPath::new(&id, ka, &b_cands, bases, 0),
            b: MediaPath::new(&id, kb, &a_cands, bases, 0),
            a_host,
            b_host,
            a_relay,
            b_relay,
            direct_cut: false,
            relay_cut: false,
            tcp_cut: false,
            media_at_b: Vec::new(),
            seen_kinds: HashSet::new(),
        }
    }

    /// Deliver everything queued, as the network and the TURN server would.
    fn deliver(&mut self, now: u64) {
        for _ in 0..10 {
            let from_a: Vec<_> = std::iter::from_fn(|| self.a.poll_transmit()).collect();
            let from_b: Vec<_> = std::iter::from_fn(|| self.b.poll_transmit()).collect();
            if from_a.is_empty() && from_b.is_empty() {
                return;
            }
            for (from_is_a, (via, to, bytes)) in
                from_a.into_iter().map(|x| (true, x)).chain(from_b.into_iter().map(|x| (false, x)))
            {
                self.seen_kinds.insert((from_is_a, via));
                if let Via::Tcp(stream) = via {
                    // One stream, the same id at both ends; its far end is the peer.
                    let (peer, src) = if from_is_a { (&mut self.b, self.a_host) } else { (&mut self.a, self.b_host) };
                    let media =
                        if self.tcp_cut { None } else { peer.handle_datagram(Via::Tcp(stream), src, &bytes, now) };
                    if media.is_some() && from_is_a {
                        self.media_at_b.push(now);
                    }
                    continue;
                }
                let (my_host, my_relay) =
                    if from_is_a { (self.a_host, self.a_relay) } else { (self.b_host, self.b_relay) };
                // Where the packet appears to come from.
                let src = if via == Via::Relay { my_relay } else { my_host };
                let relayed = via == Via::Relay || to == self.a_relay || to == self.b_relay;
                if (relayed && self.relay_cut) || (!relayed && self.direct_cut) {
                    continue;
                }
                let (peer, peer_host, peer_relay) = if from_is_a {
                    (&mut self.b, self.b_host, self.b_relay)
                } else {
                    (&mut self.a, self.a_host, self.a_relay)
                };
                let arrives_via = if to == peer_relay {
                    Via::Relay
                } else if to == peer_host {
                    Via::Direct
                } else {
                    continue;
                };
                let media = peer.handle_datagram(arrives_via, src, &bytes, now);
                if media.is_some() && from_is_a {
                    self.media_at_b.push(now);
                }
            }
        }
    }

    /// Run 20 ms media frames from a to b for `ms`.
    fn run(&mut self, from: u64, ms: u64) -> u64 {
        let mut now = from;
        while now < from + ms {
            now += 10;
            self.a.handle_timeout(now);
            self.b.handle_timeout(now);
            if now.is_multiple_of(20) {
                self.a.send_media(b"voice");
            }
            self.deliver(now);
        }
        now
    }
}

#[test]
fn relay_carries_the_call_when_direct_is_blocked_then_direct_takes_over() {
    let mut n = Net::new(false);
    n.direct_cut = true;
    let now = n.run(0, 500);
    assert!(n.a.is_connected() && n.b.is_connected());
    assert_eq!(n.a.kind(), PathKind::RelayUdp);
    assert!(!n.media_at_b.is_empty(), "media flows over the relay");
    assert_eq!(n.a.take_change(), None);
    // The direct path opens (say a NAT binding appeared): the call upgrades.
    n.direct_cut = false;
    let now = n.run(now, 2_500);
    assert_eq!(n.a.kind(), PathKind::DirectUdp);
    assert_eq!(n.a.take_change(), Some(PathChange::Upgrade));
    let before = n.media_at_b.len();
    n.run(now, 400);
    assert!(n.media_at_b.len() >= before + 18, "media keeps flowing after the upgrade");
}

#[test]
fn a_dead_path_fails_over_within_a_second_of_audio() {
    let mut n = Net::new(false);
    let now = n.run(0, 3_000);
    assert_eq!(n.a.kind(), PathKind::DirectUdp, "direct preferred");
    // The direct path dies (NAT binding flushed).
    n.direct_cut = true;
    let cut_at = now;
    let now = n.run(now, 3_000);
    assert_eq!(n.a.kind(), PathKind::RelayUdp);
    assert_eq!(n.a.take_change(), Some(PathChange::Failover));
    let resumed = n.media_at_b.iter().find(|&&t| t > cut_at).copied().expect("media resumed");
    assert!(resumed - cut_at <= 1_000, "audio gap {} ms", resumed - cut_at);
    // And when the relay dies too but direct is back, the call moves again.
    n.relay_cut = true;
    n.direct_cut = false;
    let cut_at = now;
    n.run(now, 3_000);
    assert_eq!(n.a.kind(), PathKind::DirectUdp);
    let resumed = n.media_at_b.iter().find(|&&t| t > cut_at).copied().expect("media resumed");
    assert!(resumed - cut_at <= 1_000, "audio gap {} ms", resumed - cut_at);
}

#[test]
fn force_relay_never_sends_host_to_host() {
    let mut n = Net::new(true);
    n.run(0, 3_000);
    assert!(n.a.is_connected());
    assert_ne!(n.a.kind(), PathKind::DirectUdp);
    assert!(!n.media_at_b.is_empty());
    // Every direct send went to a relayed address, never to the peer's host.
    let mut n2 = Net::new(true);
    n2.a.handle_timeout(0);
    for (via, to, _) in std::iter::from_fn(|| n2.a.poll_transmit()) {
        assert!(via == Via::Relay || to == n2.b_relay, "{via:?} to {to}");
    }
}

#[test]
fn direct_tcp_beats_relays_loses_to_direct_udp_and_takes_over_when_udp_dies() {
    let mut n = Net::new(false);
    n.direct_cut = true;
    let now = n.run(0, 500);
    assert_eq!(n.a.kind(), PathKind::RelayUdp);
    // a connects a TCP stream to b's passive candidate; b accepts it.
    assert!(n.a.tcp_up(1, n.b_host, true, now));
    assert!(n.b.tcp_up(1, n.a_host, false, now));
    assert!(!n.b.tcp_authenticated(1), "an inbound stream has no pair before an authentic frame");
    let now = n.run(now, 1_500);
    assert!(n.b.tcp_authenticated(1));
    assert_eq!(n.a.kind(), PathKind::DirectTcp);
    assert_eq!(n.b.kind(), PathKind::DirectTcp, "b learnt the pair from a's check on the stream");
    assert_eq!(n.a.take_change(), Some(PathChange::Upgrade));
    assert!(n.seen_kinds.contains(&(true, Via::Tcp(1))));
    let before = n.media_at_b.len();
    let now = n.run(now, 400);
    assert!(n.media_at_b.len() >= before + 18, "media flows on the stream");
    // Direct UDP starts working: it beats TCP.
    n.direct_cut = false;
    let now = n.run(now, 2_500);
    assert_eq!(n.a.kind(), PathKind::DirectUdp);
    assert_eq!(n.a.take_change(), Some(PathChange::Upgrade));
    // UDP dies again: the standby TCP pair takes over, not the relay.
    n.direct_cut = true;
    let now = n.run(now, 2_000);
    assert_eq!(n.a.kind(), PathKind::DirectTcp);
    assert_eq!(n.a.take_change(), Some(PathChange::Failover));
    // The stream closes: the call falls back to the relay.
    n.a.tcp_down(1);
    n.b.tcp_down(1);
    let cut_at = now;
    n.run(now, 2_000);
    assert_eq!(n.a.kind(), PathKind::RelayUdp);
    assert!(n.media_at_b.iter().any(|&t| t > cut_at + 1_000), "media resumed over the relay");
}

#[test]
fn tcp_streams_are_bounded_per_call_and_unknown_streams_are_ignored() {
    let mut n = Net::new(false);
    for s in 0..MAX_TCP_STREAMS as u64 {
        assert!(n.a.tcp_up(s, n.b_host, true, 0));
    }
    assert!(n.a.tcp_up(0, n.b_host, true, 0), "a stream it holds is no new one");
    assert!(!n.a.tcp_up(99, n.b_host, true, 0), "one stream over the limit");
    assert_eq!(n.a.tcp_streams().len(), MAX_TCP_STREAMS);
    // A check arriving on a stream b does not hold is dropped unanswered.
    while n.b.poll_transmit().is_some() {}
    let check = std::iter::from_fn(|| n.a.poll_transmit()).find(|(v, _, _)| *v == Via::Tcp(0)).unwrap().2;
    assert!(n.b.handle_datagram(Via::Tcp(0), n.a_host, &check, 1).is_none());
    assert!(n.b.poll_transmit().is_none() && !n.b.tcp_authenticated(0));
    // With --force-relay no stream is taken.
    let mut f = Net::new(true);
    assert!(!f.a.tcp_up(1, f.b_host, true, 0));
}
