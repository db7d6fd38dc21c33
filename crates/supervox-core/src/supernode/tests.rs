use super::*;
use crate::overlay::wire::NetworkKey;
use crate::Identity;
use std::collections::HashSet;
use supervox_proto::overlay::OverlayMsg;
use supervox_proto::{CallId, CallSignal, Claimed, Presence, Refusal, SignalEnvelope};

fn addr(p: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], p))
}

fn sn(seed: u8, port: u16, seeds: Vec<SocketAddr>) -> Supernode {
    let cfg = SupernodeConfig {
        max_clients: 2,
        agent: "t".into(),
        replicas: 3,
        claim_replicas: 5,
        ..SupernodeConfig::new(addr(port), seeds)
    };
    Supernode::new(&Identity::from_seed([seed; 32]), cfg, vec![], u64::from(seed), 0)
}

fn drain(s: &mut Supernode) -> Vec<SnOutput> {
    std::iter::from_fn(|| s.poll_output()).collect()
}

/// `msg` as `s` seals it for the member at `to` (a fresh counter each time:
/// the same bytes twice are a replay).
fn sealed(s: &mut Supernode, to: SocketAddr, msg: supervox_proto::overlay::OverlayMsg) -> Vec<u8> {
    s.send_overlay(to, msg);
    let out = drain(s);
    match out.into_iter().last() {
        Some(SnOutput::Datagram { bytes, to: t, .. }) if t == to => bytes,
        other => panic!("not sealed for {to}: {other:?}"),
    }
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
    s.on_connected(conn, addr(9000 + conn as u16));
    s.on_established(conn, Role::Client, id.user_id(), 0);
    drain(s)
}

/// A network of supernodes exchanging overlay datagrams instantly (or not:
/// `down` ones neither send nor receive), with a virtual clock.
struct Net {
    sns: Vec<Supernode>,
    down: HashSet<usize>,
    /// Datagrams to these addresses are dropped (a silent holder).
    black_hole: HashSet<SocketAddr>,
    /// Probes (`Ping`, `PingReq`) to these addresses are dropped, answers
    /// to their own probes pass: a supernode behind a NAT.
    unprobeable: HashSet<SocketAddr>,
    /// What the supernodes sent their clients: (sn index, output).
    client_out: Vec<(usize, SnOutput)>,
    /// Overlay datagrams delivered, by kind.
    delivered: Vec<(&'static str, SocketAddr)>,
    /// Malicious supernodes: what each sends is rewritten by its function
    /// (the real protocol, with lies in it) and sealed again.
    tamper: std::collections::HashMap<usize, Box<dyn Fn(OverlayMsg) -> OverlayMsg>>,
    now: u64,
}

impl Net {
    fn new(n: usize) -> Self {
        let sns =
            (0..n).map(|i| sn(i as u8 + 1, 4000 + i as u16, if i == 0 { vec![] } else { vec![addr(4000)] })).collect();
        Self {
            sns,
            down: HashSet::new(),
            black_hole: HashSet::new(),
            unprobeable: HashSet::new(),
            client_out: Vec::new(),
            delivered: Vec::new(),
            tamper: Default::default(),
            now: 0,
        }
    }

    fn index_of(&self, a: SocketAddr) -> Option<usize> {
        self.sns.iter().position(|s| s.advertise() == a)
    }

    /// Deliver everything queued, until quiet.
    fn pump(&mut self) {
        loop {
            let mut moved = false;
            for i in 0..self.sns.len() {
                let out = drain(&mut self.sns[i]);
                moved |= !out.is_empty();
                self.deliver(i, out);
            }
            if !moved {
                return;
            }
        }
    }

    /// Deliver what supernode `i` output (unless it is down).
    fn deliver(&mut self, i: usize, out: Vec<SnOutput>) {
        if self.down.contains(&i) {
            return;
        }
        for o in out {
            match o {
                SnOutput::Datagram { to, bytes, kind } => {
                    let bytes = self.tampered(i, to, bytes);
                    if self.black_hole.contains(&to)
                        || (self.unprobeable.contains(&to) && matches!(kind, "Ping" | "PingReq"))
                    {
                        continue;
                    }
                    if let Some(j) = self.index_of(to).filter(|j| !self.down.contains(j)) {
                        self.delivered.push((kind, to));
                        let from = self.sns[i].advertise();
                        self.sns[j].on_datagram(from, &bytes, self.now);
                    }
                }
                o => self.client_out.push((i, o)),
            }
        }
    }

    /// What a malicious supernode `i` really sends to `to` in place of
    /// `bytes`: the receiver's wire opens it (as it would), the lie is sealed
    /// afresh by the sender.
    fn tampered(&mut self, i: usize, to: SocketAddr, bytes: Vec<u8>) -> Vec<u8> {
        let (Some(f), Some(j)) = (self.tamper.get(&i), self.index_of(to)) else { return bytes };
        let (from, now) = (self.sns[i].advertise(), self.now);
        let r = &mut self.sns[j];
        let m = &r.membership;
        let Ok(crate::overlay::wire::Inbound::Packet { packet, .. }) =
            r.wire.open(from, &bytes, now, |id| m.get(id).is_some())
        else {
            return bytes;
        };
        let msg = f(packet.msg);
        sealed(&mut self.sns[i], to, msg)
    }

    /// Member `from` sends `msg` to member `to` as if from `at` (its own
    /// address, or one it spoofs).
    fn forge(&mut self, from: usize, to: usize, at: SocketAddr, msg: OverlayMsg) {
        let dest = self.sns[to].advertise();
        let bytes = sealed(&mut self.sns[from], dest, msg);
        let now = self.now;
        self.sns[to].on_datagram(at, &bytes, now);
    }

    /// Run the clocks for `ms`, ticking every 100 ms.
    fn run(&mut self, ms: u64) {
        let end = self.now + ms;
        while self.now < end {
            self.now += 100;
            for i in 0..self.sns.len() {
                if !self.down.contains(&i) {
                    let now = self.now;
                    self.sns[i].handle_timeout(now);
                }
            }
            self.pump();
        }
    }

    fn take_client_msgs(&mut self, sn: usize, conn: ConnId) -> Vec<Message> {
        let mut mine = Vec::new();
        self.client_out.retain(|(i, o)| match o {
            SnOutput::Send(c, m) if *i == sn && *c == conn => {
                mine.push(m.clone());
                false
            }
            _ => true,
        });
        mine
    }

    fn sign_in(&mut self, sn: usize, conn: ConnId, id: &Identity, name: &str) -> Vec<Message> {
        let now = self.now;
        let s = &mut self.sns[sn];
        s.on_connected(conn, addr(9000 + conn as u16));
        s.on_established(conn, Role::Client, id.user_id(), now);
        s.on_message(conn, Message::Claim { claim: NameClaim::sign(id.signing_key(), name, now + 1).unwrap() }, now);
        self.pump();
        let p = Presence::sign(id.signing_key(), name, self.sns[sn].advertise(), now + 1, now + 60_000).unwrap();
        self.sns[sn].on_message(conn, Message::Publish { presence: p }, now);
        self.pump();
        self.take_client_msgs(sn, conn)
    }

    fn lookup(&mut self, sn: usize, conn: ConnId, name: &str) -> LookupAnswer {
        let now = self.now;
        self.sns[sn].on_message(conn, Message::Lookup { req_id: 77, name: name.into() }, now);
        self.pump();
        for _ in 0..20 {
            let msgs = self.take_client_msgs(sn, conn);
            if let Some(Message::LookupResult { answer, .. }) =
                msgs.into_iter().find(|m| matches!(m, Message::LookupResult { .. }))
            {
                return answer;
            }
            self.run(100);
        }
        panic!("lookup of {name} never answered")
    }

    /// Supernodes (indices) holding `name`'s presence.
    fn presence_at(&self, name: &str) -> Vec<usize> {
        (0..self.sns.len())
            .filter(|i| !self.down.contains(i))
            .filter(|i| matches!(self.sns[*i].directory.lookup(name, self.now), LookupAnswer::Online { .. }))
            .collect()
    }

    /// Supernodes (indices) holding a claim for `name`.
    fn holding(&self, name: &str) -> Vec<usize> {
        (0..self.sns.len())
            .filter(|i| !self.down.contains(i))
            .filter(|i| self.sns[*i].claims().iter().any(|c| c.name == name))
            .collect()
    }
}

#[test]
fn welcome_claim_publish_and_conflict_on_a_lone_supernode() {
    let mut net = Net::new(1);
    let (alice, mallory) = (Identity::from_seed([10; 32]), Identity::from_seed([11; 32]));
    let msgs = net.sign_in(0, 1, &alice, "alice");
    assert!(matches!(&msgs[0], Message::Welcome { supernode, .. } if *supernode == addr(4000)));
    assert!(msgs.contains(&Message::ClaimResult { name: "alice".into(), result: Ok(()) }));
    assert!(msgs.contains(&Message::PublishResult { result: Ok(()) }));
    let msgs = net.sign_in(0, 2, &mallory, "alice");
    assert!(msgs.iter().any(|m| matches!(m, Message::ClaimResult { result: Err(Refusal::Taken), .. })));
    assert!(msgs.iter().any(|m| matches!(m, Message::PublishResult { result: Err(_) })));
}

#[test]
fn forged_or_foreign_presence_is_refused() {
    let mut net = Net::new(1);
    let (alice, bob) = (Identity::from_seed([10; 32]), Identity::from_seed([11; 32]));
    net.sign_in(0, 1, &alice, "alice");
    net.sign_in(0, 2, &bob, "bob");
    // Bob's connection publishes a record signed by alice's key but altered.
    let mut forged = Presence::sign(alice.signing_key(), "alice", addr(4000), 5, 60_000).unwrap();
    forged.seq = 6;
    net.sns[0].on_message(2, Message::Publish { presence: forged.clone() }, 0);
    net.pump();
    let m = net.take_client_msgs(0, 2);
    assert!(
        matches!(&m[..], [Message::PublishResult { result: Err(e) }] if e.contains("not signed by this connection"))
    );
    // Alice's own connection with a bad signature.
    net.sns[0].on_message(1, Message::Publish { presence: forged }, 0);
    net.pump();
    let m = net.take_client_msgs(0, 1);
    assert!(matches!(&m[..], [Message::PublishResult { result: Err(e) }] if e.contains("bad signature")), "{m:?}");
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
fn supernode_links_are_refused() {
    let mut s = sn(1, 4000, vec![]);
    s.on_connected(5, addr(4001));
    s.on_established(5, Role::Supernode, Identity::from_seed([2; 32]).user_id(), 0);
    assert!(drain(&mut s).iter().any(|o| matches!(o, SnOutput::Close(5, _))));
}

#[test]
fn membership_converges_through_one_seed_and_detects_failures() {
    let mut net = Net::new(8);
    net.run(3_000);
    for s in &net.sns {
        assert_eq!(s.peer_addrs().len(), 7, "{} knows {:?}", s.advertise(), s.peer_addrs());
    }
    // Two die silently: everyone else notices within seconds.
    net.down.insert(3);
    net.down.insert(6);
    net.run(15_000);
    for (i, s) in net.sns.iter().enumerate().filter(|(i, _)| !net.down.contains(i)) {
        let mut peers = s.peer_addrs();
        peers.sort();
        assert_eq!(peers.len(), 5, "sn {i} still sees {peers:?}");
        assert!(!peers.contains(&addr(4003)) && !peers.contains(&addr(4006)));
    }
}

#[test]
fn a_record_lives_on_r_holders_and_a_lookup_is_one_hop() {
    let mut net = Net::new(8);
    net.run(3_000);
    let (alice, bob) = (Identity::from_seed([10; 32]), Identity::from_seed([11; 32]));
    let msgs = net.sign_in(2, 1, &alice, "alice");
    assert!(msgs.contains(&Message::PublishResult { result: Ok(()) }), "{msgs:?}");
    net.sign_in(5, 1, &bob, "bob");
    // Exactly the R_c = 5 claim holders have alice's claim, the first R = 3
    // of them her presence, and they are the ones every supernode computes.
    let ranked: Vec<usize> = net.sns[0].holders_of("alice").iter().map(|h| net.index_of(h.addr).unwrap()).collect();
    let sorted = |v: &[usize]| {
        let mut v = v.to_vec();
        v.sort();
        v
    };
    assert_eq!(ranked.len(), 5);
    assert_eq!(net.holding("alice"), sorted(&ranked));
    assert_eq!(net.presence_at("alice"), sorted(&ranked[..3]));
    for s in &net.sns {
        let v: Vec<usize> = s.holders_of("alice").iter().map(|h| net.index_of(h.addr).unwrap()).collect();
        assert_eq!(v, ranked);
    }
    // Bob's supernode asks a majority of the claim holders (3 of 5, the
    // presence holders first, at once: one hop), and no more when they agree.
    net.delivered.clear();
    let answer = net.lookup(5, 1, "alice");
    let LookupAnswer::Online { presence, .. } = answer else { panic!("{answer:?}") };
    assert_eq!(presence.supernode, addr(4002));
    let lookups = net.delivered.iter().filter(|(k, _)| *k == "Lookup").count();
    assert!(lookups <= 3, "{lookups} lookup datagrams");
    // A name nobody claimed.
    assert_eq!(net.lookup(5, 1, "ghost"), LookupAnswer::Unknown);
}

#[test]
fn a_silent_holder_is_hedged_around() {
    let mut net = Net::new(8);
    net.run(3_000);
    let (alice, bob) = (Identity::from_seed([10; 32]), Identity::from_seed([11; 32]));
    net.sign_in(2, 1, &alice, "alice");
    let asker = (0..8).find(|i| !net.presence_at("alice").contains(i) && *i != 2).unwrap();
    net.sign_in(asker, 9, &bob, "bob");
    // The primary holder drops everything (alive to membership a while yet).
    let primary = net.sns[asker].holders_of("alice")[0].addr;
    net.black_hole.insert(primary);
    let t0 = net.now;
    assert!(matches!(net.lookup(asker, 9, "alice"), LookupAnswer::Online { .. }));
    assert!(net.now - t0 <= 600, "answered after {} ms", net.now - t0);
}

#[test]
fn records_survive_their_holders_dying_one_after_another() {
    let mut net = Net::new(8);
    net.run(3_000);
    let (alice, bob) = (Identity::from_seed([10; 32]), Identity::from_seed([11; 32]));
    net.sign_in(2, 1, &alice, "alice");
    let holders = net.presence_at("alice");
    assert_eq!(holders.len(), 3);
    // Kill two of the three presence holders, one at a time, waiting for
    // detection: the records move so that R and R_c copies live again.
    let victims: Vec<usize> = holders.iter().copied().filter(|h| *h != 2).take(2).collect();
    for v in &victims {
        net.down.insert(*v);
        net.run(15_000);
        assert_eq!(net.presence_at("alice").len(), 3, "after {v} died: {:?}", net.presence_at("alice"));
        assert_eq!(net.holding("alice").len(), 5, "after {v} died: {:?}", net.holding("alice"));
    }
    let asker = (0..8).find(|i| !net.down.contains(i) && *i != 2).unwrap();
    net.sign_in(asker, 9, &bob, "bob");
    assert!(matches!(net.lookup(asker, 9, "alice"), LookupAnswer::Online { .. }));
    // The name is still alice's: another key cannot take it.
    let msgs = net.sign_in(asker, 10, &Identity::from_seed([12; 32]), "alice");
    assert!(msgs.iter().any(|m| matches!(m, Message::ClaimResult { result: Err(Refusal::Taken), .. })));
}

#[test]
fn racing_claims_for_one_name_end_with_one_owner_everywhere() {
    let mut net = Net::new(6);
    net.run(3_000);
    let (a, b) = (Identity::from_seed([10; 32]), Identity::from_seed([11; 32]));
    // Both claim "zoe" through different supernodes before either answer.
    let now = net.now;
    for (sn, conn, id) in [(1usize, 1u64, &a), (4, 2, &b)] {
        let s = &mut net.sns[sn];
        s.on_connected(conn, addr(9000));
        s.on_established(conn, Role::Client, id.user_id(), now);
        s.on_message(conn, Message::Claim { claim: NameClaim::sign(id.signing_key(), "zoe", now).unwrap() }, now);
    }
    net.pump();
    net.run(1_000);
    let ok = |sn: usize, conn: ConnId, net: &mut Net| {
        net.take_client_msgs(sn, conn).contains(&Message::ClaimResult { name: "zoe".into(), result: Ok(()) })
    };
    let (ok_a, ok_b) = (ok(1, 1, &mut net), ok(4, 2, &mut net));
    assert!(ok_a ^ ok_b, "exactly one wins: a {ok_a} b {ok_b}");
    let owners: HashSet<UserId> =
        net.sns.iter().flat_map(|s| s.claims()).filter(|c| c.name == "zoe").map(|c| c.user_id).collect();
    assert_eq!(owners.len(), 1);
}

#[test]
fn invites_go_to_the_callees_supernode_and_failures_come_back() {
    let mut net = Net::new(4);
    net.run(3_000);
    let (alice, bob) = (Identity::from_seed([10; 32]), Identity::from_seed([11; 32]));
    net.sign_in(0, 1, &alice, "alice");
    net.sign_in(3, 1, &bob, "bob");
    let env = SignalEnvelope {
        call_id: CallId([1; 16]),
        from: bob.user_id(),
        to: alice.user_id(),
        to_supernode: addr(4000),
        body: CallSignal::Sealed(supervox_proto::call::SealedSignal { seq: 0, ciphertext: vec![1, 2, 3] }),
    };
    net.sns[3].on_message(1, Message::Signal(env.clone()), net.now);
    net.pump();
    assert_eq!(net.take_client_msgs(0, 1), vec![Message::Signal(env.clone())]);
    // Alice leaves: bob's supernode is told the signal could not be delivered.
    net.sns[0].on_closed(1, net.now);
    net.sns[3].on_message(1, Message::Signal(env.clone()), net.now);
    net.pump();
    assert!(
        matches!(&net.take_client_msgs(3, 1)[..], [Message::SignalFailed { reason, .. }] if reason.contains("no longer"))
    );
    // A member that does not answer: failure after the retries.
    net.black_hole.insert(addr(4002));
    let lost = SignalEnvelope { to_supernode: addr(4002), ..env.clone() };
    net.sns[3].on_message(1, Message::Signal(lost), net.now);
    net.pump();
    assert!(net.take_client_msgs(3, 1).is_empty(), "retried first");
    net.run(6_000);
    assert!(
        matches!(&net.take_client_msgs(3, 1)[..], [Message::SignalFailed { reason, .. }] if reason.contains("does not answer"))
    );
    net.black_hole.clear();
    // A spoofed sender closes the connection.
    net.sns[3].on_message(1, Message::Signal(SignalEnvelope { from: alice.user_id(), ..env }), net.now);
    assert!(drain(&mut net.sns[3]).iter().any(|o| matches!(o, SnOutput::Close(1, _))));
}

/// A client's signal names where its callee's supernode is: the supernode sends it only
/// to a live member, never to an address the client chose (a UDP cannon of sealed 8 KB
/// datagrams), and a flood of signals toward a silent member stops at the per-client
/// bound instead of filling the pending table for everyone. An ack from a member the
/// signal did not go to is ignored.
#[test]
fn signals_go_only_to_live_members_and_are_bounded_per_client() {
    let mut net = Net::new(4);
    net.run(3_000);
    let (alice, bob) = (Identity::from_seed([10; 32]), Identity::from_seed([11; 32]));
    net.sign_in(0, 1, &alice, "alice");
    net.sign_in(3, 1, &bob, "bob");
    let env = |n: u8, to: SocketAddr| SignalEnvelope {
        call_id: CallId([n; 16]),
        from: bob.user_id(),
        to: alice.user_id(),
        to_supernode: to,
        body: CallSignal::Sealed(supervox_proto::call::SealedSignal { seq: 0, ciphertext: vec![0; 4000] }),
    };
    let victim = addr(53);
    net.sns[3].on_message(1, Message::Signal(env(1, victim)), net.now);
    let out = drain(&mut net.sns[3]);
    assert!(!out.iter().any(|o| matches!(o, SnOutput::Datagram { to, .. } if *to == victim)), "{out:?}");
    assert!(out.iter().any(
        |o| matches!(o, SnOutput::Send(1, Message::SignalFailed { reason, .. }) if reason.contains("not a member"))
    ));
    // A silent member: at most MAX_SIGNALS_PER_CONN in flight, the rest refused at once.
    net.black_hole.insert(addr(4002));
    for n in 0..40u8 {
        net.sns[3].on_message(1, Message::Signal(env(n, addr(4002))), net.now);
    }
    net.pump();
    let busy = net
        .take_client_msgs(3, 1)
        .iter()
        .filter(|m| matches!(m, Message::SignalFailed { reason, .. } if reason == "supernode busy"))
        .count();
    assert_eq!(busy, 40 - crate::supernode::MAX_SIGNALS_PER_CONN);
    // Another member forges the acks of those in flight: nothing changes for bob.
    let forger = net.sns[1].advertise();
    for req in 0..1_000u64 {
        let ack = supervox_proto::overlay::OverlayMsg::SignalAck { req, result: Err(Refusal::CalleeGone) };
        let to = net.sns[3].advertise();
        let bytes = sealed(&mut net.sns[1], to, ack);
        net.sns[3].on_datagram(forger, &bytes, net.now);
    }
    net.pump();
    assert!(net.take_client_msgs(3, 1).is_empty(), "a forged ack failed a signal");
    // They fail after their retries, and the client may signal again.
    net.run(6_000);
    assert_eq!(net.take_client_msgs(3, 1).len(), crate::supernode::MAX_SIGNALS_PER_CONN);
    net.black_hole.clear();
    net.sns[3].on_message(1, Message::Signal(env(99, addr(4000))), net.now);
    net.pump();
    assert_eq!(net.take_client_msgs(0, 1).len(), 1, "delivered to alice");
}

/// Exchange datagrams between `a` (at `a_addr`) and one member of `net`
/// for a few rounds, as a real network would.
fn converse(net: &mut Net, j: usize, a: &mut Supernode, a_addr: SocketAddr) {
    for _ in 0..6 {
        net.now += 100;
        a.handle_timeout(net.now);
        for o in drain(a) {
            if let SnOutput::Datagram { bytes, .. } = o {
                net.sns[j].on_datagram(a_addr, &bytes, net.now);
            }
        }
        for o in drain(&mut net.sns[j]) {
            match o {
                SnOutput::Datagram { to, bytes, .. } if to == a_addr => {
                    a.on_datagram(net.sns[j].advertise(), &bytes, net.now)
                }
                SnOutput::Datagram { .. } => {}
                o => net.client_out.push((j, o)),
            }
        }
    }
}

#[test]
fn only_members_of_our_network_join_and_nobody_speaks_for_another() {
    let mut net = Net::new(3);
    net.run(3_000);
    // A supernode of another network tries to join through our seed: its
    // Hello is not answered, nothing it seals opens.
    let cfg = SupernodeConfig {
        network_key: NetworkKey::new([42; 32]),
        ..SupernodeConfig::new(addr(4999), vec![addr(4000)])
    };
    let mut outsider = Supernode::new(&Identity::from_seed([9; 32]), cfg, vec![], 9, net.now);
    converse(&mut net, 0, &mut outsider, addr(4999));
    net.sns[0].on_datagram(addr(4999), &[supervox_proto::overlay::OVERLAY_MAGIC; 64], net.now);
    net.sns[0].on_datagram(addr(4999), &[], net.now);
    assert!(net.sns[0].stats().overlay_refused >= 3);
    assert_eq!(net.sns[0].peer_addrs().len(), 2, "the outsider did not join");
    assert!(outsider.peer_addrs().is_empty(), "the outsider learnt no member");
    // A member of our network (its own key) puts another member's identity
    // in its header, to speak for it: refused, whatever it says.
    let mut liar = sn(8, 4998, vec![addr(4000)]);
    converse(&mut net, 0, &mut liar, addr(4998));
    assert_eq!(net.sns[0].peer_addrs().len(), 3, "an honest newcomer joins");
    let victim = net.sns[1].membership.me();
    let refused = net.sns[0].stats().overlay_refused;
    let id = net.sns[0].me;
    let packet = supervox_proto::OverlayPacket {
        from: victim,
        msg: supervox_proto::OverlayMsg::Ping { seq: 1, updates: vec![] },
    };
    let bytes = liar.wire.seal(&id, addr(4000), &packet, false, net.now).unwrap();
    net.sns[0].on_datagram(addr(4998), &bytes, net.now);
    assert_eq!(net.sns[0].stats().overlay_refused, refused + 1);
}

#[test]
fn stun_dial_backs_are_relayed_and_rate_limited() {
    let mut net = Net::new(2);
    net.run(3_000);
    let client: SocketAddr = "192.0.2.7:5555".parse().unwrap();
    assert_eq!(net.sns[0].dial_back_partner(), Some(addr(4001)));
    // The driver heard of the partner as soon as the member came up, not at a later timer.
    let told: Vec<_> =
        net.client_out.iter().filter(|(i, o)| *i == 0 && matches!(o, SnOutput::DialBackPartner(_))).collect();
    assert_eq!(told, vec![&(0, SnOutput::DialBackPartner(Some(addr(4001))))], "{told:?}");
    assert!(net.sns[0].request_dial_back(addr(4001), [7; 12], client, client, 0));
    assert!(!net.sns[0].request_dial_back(addr(4999), [7; 12], client, client, 0), "not a member");
    let out = drain(&mut net.sns[0]);
    let Some(SnOutput::Datagram { bytes, .. }) = out.first() else { panic!("{out:?}") };
    let now = net.now;
    net.sns[1].on_datagram(addr(4000), bytes, now);
    let dial_backs = |o: Vec<SnOutput>| o.into_iter().filter(|o| matches!(o, SnOutput::StunDialBack { .. })).count();
    assert_eq!(dial_backs(drain(&mut net.sns[1])), 1);
    // The same datagram again is a replay: no second dial-back.
    net.sns[1].on_datagram(addr(4000), bytes, now);
    assert_eq!(dial_backs(drain(&mut net.sns[1])), 0, "replayed");
    let order = supervox_proto::overlay::OverlayMsg::StunDialBack {
        transaction_id: [7; 12],
        mapped: client,
        to: client,
        padding: 0,
    };
    for _ in 0..(DIAL_BACKS_PER_SEC + 50) {
        let bytes = sealed(&mut net.sns[0], addr(4001), order.clone());
        net.sns[1].on_datagram(addr(4000), &bytes, now + 10);
    }
    assert_eq!(dial_backs(drain(&mut net.sns[1])), DIAL_BACKS_PER_SEC as usize - 1, "budget per second");
    let bytes = sealed(&mut net.sns[0], addr(4001), order);
    net.sns[1].on_datagram(addr(4000), &bytes, now + 1_010);
    assert_eq!(dial_backs(drain(&mut net.sns[1])), 1, "budget renewed");
}

#[test]
fn a_lookup_flood_is_rate_limited_per_client_and_others_are_served() {
    let mut net = Net::new(1);
    let (alice, mallory) = (Identity::from_seed([10; 32]), Identity::from_seed([11; 32]));
    net.sign_in(0, 1, &alice, "alice");
    net.sign_in(0, 2, &mallory, "mallory");
    let now = 5_000;
    for i in 0..1_000 {
        net.sns[0].on_message(2, Message::Lookup { req_id: i, name: "alice".into() }, now);
    }
    let out = drain(&mut net.sns[0]);
    let to_mallory = sent_to(&out, 2);
    let answered = to_mallory.iter().filter(|m| matches!(m, Message::LookupResult { .. })).count();
    let refused =
        to_mallory.iter().filter(|m| matches!(m, Message::Error { reason } if reason == "rate limited")).count();
    assert_eq!(answered, CLIENT_REQUESTS_PER_SEC as usize);
    assert_eq!(refused, 1_000 - answered);
    assert_eq!(net.sns[0].stats().rate_limited, refused as u64);
    // Alice, in the same second, is served as usual.
    net.sns[0].on_message(1, Message::Lookup { req_id: 1, name: "mallory".into() }, now);
    assert!(matches!(sent_to(&drain(&mut net.sns[0]), 1)[..], [Message::LookupResult { .. }]));
    // And mallory's budget comes back a second later.
    net.sns[0].on_message(2, Message::Lookup { req_id: 7, name: "alice".into() }, now + 1_000);
    assert!(matches!(sent_to(&drain(&mut net.sns[0]), 2)[..], [Message::LookupResult { .. }]));
}

#[test]
fn volunteers_are_promoted_only_when_needed_public_and_reachable() {
    // max_clients 2: one client is 50 % load, two are 100 %.
    let mut s = sn(1, 4000, vec![]);
    let vol = Identity::from_seed([40; 32]);
    join_client(&mut s, 1, &vol);
    let public = addr(9001); // the address the supernode sees conn 1 at
    s.on_message(1, Message::Volunteer { advertise: public }, 0);
    assert!(matches!(&sent_to(&drain(&mut s), 1)[..], [Message::Error { reason }] if reason.contains("capacity")));
    join_client(&mut s, 2, &Identity::from_seed([41; 32]));
    // Needed now, but asked again too soon; then an address we do not see it at.
    s.on_message(1, Message::Volunteer { advertise: public }, 1_000);
    assert!(drain(&mut s).is_empty());
    s.on_message(1, Message::Volunteer { advertise: "192.0.2.1:7000".parse().unwrap() }, 10_000);
    assert!(matches!(&sent_to(&drain(&mut s), 1)[..], [Message::Error { reason }] if reason.contains("public")));
    s.on_message(1, Message::Volunteer { advertise: public }, 20_000);
    assert_eq!(drain(&mut s), vec![SnOutput::CheckReachable { conn: 1, addr: public }]);
    s.on_reachable(1, public, false);
    assert!(matches!(&sent_to(&drain(&mut s), 1)[..], [Message::Error { .. }]));
    s.on_reachable(1, public, true);
    let out = sent_to(&drain(&mut s), 1);
    let [Message::Promote { network_key, seeds }] = &out[..] else { panic!("{out:?}") };
    assert_eq!(*network_key, s.cfg.network_key.bytes());
    assert_eq!(seeds[0], addr(4000));
    assert_eq!(s.stats().promotions, 1);
}

#[test]
fn forged_records_from_a_member_are_not_stored() {
    let mut net = Net::new(2);
    net.run(3_000);
    let (alice, mallory) = (Identity::from_seed([10; 32]), Identity::from_seed([11; 32]));
    net.sign_in(0, 1, &alice, "alice");
    // Past the race window, alice's name is established.
    net.run(120_000);
    // A member (it holds the network key) sends a claim for "alice" by another
    // key, back-dated before alice's, one with a broken signature, and a
    // presence for alice signed by mallory.
    let stolen = NameClaim::sign(mallory.signing_key(), "alice", 1).unwrap();
    let mut broken = NameClaim::sign(mallory.signing_key(), "bob", net.now).unwrap();
    broken.created_ms += 1;
    let fake = Presence::sign(mallory.signing_key(), "alice", addr(4001), 99, net.now + 60_000).unwrap();
    let msg = supervox_proto::OverlayMsg::Store { req: 5, claims: vec![stolen, broken], presence: vec![fake] };
    let bytes = sealed(&mut net.sns[1], addr(4000), msg);
    let now = net.now;
    net.sns[0].on_datagram(addr(4001), &bytes, now);
    net.pump();
    let claims = net.sns[0].claims();
    assert!(claims.iter().all(|c| c.name != "bob"), "a claim with a broken signature was stored");
    let owner = claims.iter().find(|c| c.name == "alice").map(|c| c.user_id);
    assert_eq!(owner, Some(alice.user_id()), "alice's name changed owner");
    // Alice's own presence (refreshed by nobody here) has expired by now;
    // mallory's was not stored in its place.
    assert!(!matches!(
        net.sns[0].directory.lookup("alice", now),
        LookupAnswer::Online { presence, .. } if presence.user_id != alice.user_id()
    ));
}

/// A network of `n` whose last supernode was promoted: it steps back on these terms.
fn net_with_volunteer(n: usize, cfg: StepBackConfig) -> Net {
    let mut net = Net::new(n);
    let last = net.sns.last_mut().unwrap();
    last.cfg.step_back = Some(cfg);
    last.cfg.max_clients = 10;
    net.run(3_000);
    net
}

fn stepped_back(net: &Net, i: usize) -> Option<String> {
    net.client_out.iter().find_map(|(j, o)| match o {
        SnOutput::SteppedBack { reason } if *j == i => Some(reason.clone()),
        _ => None,
    })
}

#[test]
fn an_unneeded_volunteer_steps_back_redirects_its_clients_and_leaves() {
    let cfg = StepBackConfig { after_ms: 10_000, ..StepBackConfig::default() };
    let mut net = net_with_volunteer(4, cfg);
    let v = 3;
    // Two clients: 20 %, not below the low-water mark.
    let (alice, bob) = (Identity::from_seed([10; 32]), Identity::from_seed([11; 32]));
    net.sign_in(v, 1, &alice, "alice");
    net.sign_in(v, 2, &bob, "bob");
    net.run(15_000);
    assert_eq!(stepped_back(&net, v), None, "busy enough");
    // Bob leaves: 10 %. Low load must last `after_ms` before it steps back.
    let now = net.now;
    net.sns[v].on_closed(2, now);
    net.run(9_000);
    assert_eq!(stepped_back(&net, v), None, "not low for long enough");
    net.client_out.clear();
    net.run(1_500);
    let reason = stepped_back(&net, v).expect("stepped back");
    assert!(reason.starts_with("not needed"), "{reason}");
    assert!(net.sns[v].stepped_back());
    // Alice was sent to the others, least loaded first, and her link closed.
    let msgs = net.take_client_msgs(v, 1);
    let Some(Message::Redirect { supernodes, loads, .. }) = msgs.first() else { panic!("{msgs:?}") };
    assert_eq!(supernodes.len(), 3);
    assert_eq!(loads.len(), 3);
    assert!(!supernodes.contains(&addr(4003)));
    assert!(net.client_out.iter().any(|(j, o)| *j == v && matches!(o, SnOutput::Close(1, _))));
    // Every other supernode dropped it at once (the leave), and it stays
    // dead: it does not refute.
    for i in 0..3 {
        assert!(!net.sns[i].peer_addrs().contains(&addr(4003)), "sn {i}");
    }
    net.down.insert(v);
    net.run(5_000);
    for i in 0..3 {
        assert!(!net.sns[i].peer_addrs().contains(&addr(4003)), "sn {i}");
    }
    // Its records moved: alice's claim is still held by others and still hers.
    assert!(!net.holding("alice").is_empty());
}

#[test]
fn a_volunteer_does_not_step_back_while_others_are_busy_or_too_few() {
    // Long enough for the others' loads to reach it before it would go.
    let cfg = StepBackConfig { after_ms: 8_000, ..StepBackConfig::default() };
    // Only one other supernode: it stays.
    let mut net = net_with_volunteer(2, cfg);
    net.run(20_000);
    assert_eq!(stepped_back(&net, 1), None);
    // Three others, but they are busy (the mean load is high): it stays.
    let mut net = net_with_volunteer(4, cfg);
    for (i, conn) in [(0, 1), (1, 2), (2, 3)] {
        // Their capacity is 2: one client each is 50 %.
        let id = Identity::from_seed([20 + conn as u8; 32]);
        net.sign_in(i, conn, &id, &format!("user{conn}"));
    }
    net.run(20_000);
    assert_eq!(stepped_back(&net, 3), None);
    // They go quiet: now it steps back.
    for (i, conn) in [(0, 1), (1, 2), (2, 3)] {
        let now = net.now;
        net.sns[i].on_closed(conn, now);
    }
    net.run(15_000);
    assert!(stepped_back(&net, 3).is_some());
}

#[test]
fn a_volunteer_the_others_cannot_reach_steps_back() {
    // Never for low load; only reachability counts here.
    let cfg = StepBackConfig { after_ms: u64::MAX / 2, ..StepBackConfig::default() };
    let mut net = net_with_volunteer(4, cfg);
    net.run(10_000);
    assert_eq!(stepped_back(&net, 3), None, "reachable");
    // From now on no probe gets to it; the answers to its own probes do.
    net.unprobeable.insert(addr(4003));
    let t0 = net.now;
    while stepped_back(&net, 3).is_none() {
        assert!(net.now < t0 + 20_000, "still serving after {} ms", net.now - t0);
        net.run(500);
    }
    let reason = stepped_back(&net, 3).unwrap();
    assert!(reason.starts_with("unreachable"), "{reason}");
}

#[test]
fn sign_in_with_a_weak_identity_is_refused() {
    let mut s = sn(1, 4000, vec![]);
    // The identity point and a point of order 2 (y = -1): small order, and
    // y + p: a second encoding of a genuine key.
    let mut order2 = [0xffu8; 32];
    order2[0] = 0xec;
    order2[31] = 0x7f;
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let genuine = Identity::from_seed([9; 32]).user_id();
    let mut alias = None;
    for y in 2u8..19 {
        let mut c = [0u8; 32];
        c[0] = y;
        if UserId(c).is_strong() {
            let mut a = [0xffu8; 32];
            a[0] = 0xed + y;
            a[31] = 0x7f;
            alias = Some(a);
            break;
        }
    }
    let alias = alias.expect("some small y is on the curve");
    for (conn, weak) in [(1, identity), (2, order2), (3, alias)] {
        s.on_connected(conn, addr(9000 + conn as u16));
        s.on_established(conn, Role::Client, UserId(weak), 0);
        let out = drain(&mut s);
        assert!(out.iter().any(|o| matches!(o, SnOutput::Close(c, _) if *c == conn)), "{weak:02x?}: {out:?}");
        assert!(sent_to(&out, conn).iter().all(|m| !matches!(m, Message::Welcome { .. })), "no Welcome");
    }
    let out = join_client(&mut s, 4, &Identity::from_seed([9; 32]));
    assert!(sent_to(&out, 4).iter().any(|m| matches!(m, Message::Welcome { .. })), "{genuine:?} still signs in");
}

#[test]
fn offline_mail_survives_two_holder_crashes_and_only_the_recipient_deletes_it() {
    use supervox_proto::mail::{MailAck, MailFetch, MailItem};
    let mut net = Net::new(7);
    net.run(3_000);
    let (alice, bob, mallory) =
        (Identity::from_seed([10; 32]), Identity::from_seed([11; 32]), Identity::from_seed([12; 32]));
    net.sign_in(0, 1, &alice, "alice");
    net.sign_in(0, 3, &mallory, "mallory");
    let now = net.now;
    let items: Vec<MailItem> = (0..3u8)
        .map(|n| {
            MailItem::sign(alice.signing_key(), [n; 16], bob.user_id(), now + u64::from(n), 3_600_000, vec![n; 100])
        })
        .collect();
    for it in &items {
        net.sns[0].on_message(1, Message::MailPut { item: it.clone() }, now);
    }
    // Mallory cannot leave mail in alice's name.
    net.sns[0].on_message(3, Message::MailPut { item: items[0].clone() }, now);
    net.pump();
    let msgs = net.take_client_msgs(0, 1);
    let stored = msgs.iter().filter(|m| matches!(m, Message::MailPutResult { result: Ok(()), .. })).count();
    assert_eq!(stored, 3, "{msgs:?}");
    assert!(net.take_client_msgs(0, 3).iter().any(|m| matches!(m, Message::MailPutResult { result: Err(_), .. })));
    let holders: Vec<usize> = (0..7).filter(|i| net.sns[*i].mail.len() == 3).collect();
    assert_eq!(holders.len(), 3, "R = 3 copies");
    // Two of the three holders crash, one after the other: each time the
    // survivors hand the mailbox to its new holders.
    for h in &holders[..2] {
        net.down.insert(*h);
        net.run(20_000);
    }
    let live_copies = (0..7).filter(|i| !net.down.contains(i) && net.sns[*i].mail.len() == 3).count();
    assert!(live_copies >= 3, "hand-off restored the copies: {live_copies}");
    // Bob signs in somewhere and fetches: all three, oldest first, once each.
    let bob_sn = (1..7).find(|i| !net.down.contains(i)).unwrap();
    net.sign_in(bob_sn, 2, &bob, "bob");
    // Mallory's fetch of bob's mailbox is refused (not signed by bob).
    let mut theirs = MailFetch::sign(mallory.signing_key(), net.now);
    theirs.to = bob.user_id();
    net.sns[0].on_message(3, Message::MailFetch { fetch: theirs }, net.now);
    net.sns[bob_sn].on_message(2, Message::MailFetch { fetch: MailFetch::sign(bob.signing_key(), net.now) }, net.now);
    net.pump();
    net.run(3_000);
    let mut got = Vec::new();
    let mut done = false;
    for m in net.take_client_msgs(bob_sn, 2) {
        if let Message::Mail { items, done: d, .. } = m {
            got.extend(items.into_iter().map(|i| i.id[0]));
            done |= d;
        }
    }
    assert_eq!(got, vec![0, 1, 2]);
    assert!(done);
    assert!(!net.take_client_msgs(0, 3).iter().any(|m| matches!(m, Message::Mail { items, .. } if !items.is_empty())));
    // Mallory's ack for bob's mail deletes nothing; bob's deletes it everywhere.
    let mut forged = MailAck::sign(mallory.signing_key(), vec![[0; 16]], net.now);
    forged.to = bob.user_id();
    net.sns[0].on_message(3, Message::MailAck { ack: forged }, net.now);
    net.pump();
    assert!(live_copies == (0..7).filter(|i| !net.down.contains(i) && net.sns[*i].mail.len() == 3).count());
    let ids = items.iter().map(|i| i.id).collect();
    net.sns[bob_sn].on_message(2, Message::MailAck { ack: MailAck::sign(bob.signing_key(), ids, net.now) }, net.now);
    net.pump();
    let holders_left: Vec<usize> = (0..7).filter(|i| !net.down.contains(i) && !net.sns[*i].mail.is_empty()).collect();
    // Only supernodes that are no longer holders may keep a stale copy (until it expires).
    for i in holders_left {
        let h = net.sns[i].mail_holders(&bob.user_id());
        assert!(!h.iter().any(|(_, a)| *a == net.sns[i].advertise()), "holder {i} kept acked mail");
    }
}

/// Alice (on sn 0 of `net`) leaves one item for bob; the supernodes holding it.
fn leave_one_item(net: &mut Net, alice: &Identity, bob: &Identity) -> Vec<usize> {
    use supervox_proto::mail::MailItem;
    net.sign_in(0, 1, alice, "alice");
    let item = MailItem::sign(alice.signing_key(), [5; 16], bob.user_id(), net.now, 3_600_000, vec![5; 100]);
    net.sns[0].on_message(1, Message::MailPut { item }, net.now);
    net.pump();
    assert!(net.take_client_msgs(0, 1).iter().any(|m| matches!(m, Message::MailPutResult { result: Ok(()), .. })));
    (0..net.sns.len()).filter(|i| net.sns[*i].mail.len() == 1).collect()
}

fn mail_copies_to(net: &Net) -> Vec<SocketAddr> {
    net.delivered.iter().filter(|(k, _)| *k == "MailCopy").map(|(_, a)| *a).collect()
}

#[test]
fn a_membership_change_that_keeps_a_mailboxs_holders_sends_nothing_for_it() {
    let mut net = Net::new(7);
    net.run(3_000);
    let (alice, bob) = (Identity::from_seed([10; 32]), Identity::from_seed([11; 32]));
    let holders = leave_one_item(&mut net, &alice, &bob);
    assert_eq!(holders.len(), 3);
    // A supernode that holds nothing of bob's dies: the membership changes
    // (every survivor sees it go), the mailbox's holders do not.
    let bystander = (1..7).find(|i| !holders.contains(i)).unwrap();
    let gone = net.sns[bystander].advertise();
    net.delivered.clear();
    net.down.insert(bystander);
    net.run(20_000);
    assert!(holders.iter().all(|h| !net.sns[*h].peer_addrs().contains(&gone)), "the death was noticed");
    assert_eq!(mail_copies_to(&net), Vec::<SocketAddr>::new(), "nothing handed off");
    // A holder dies: the survivors send the box to the one new holder, and only to it.
    net.down.insert(holders[0]);
    net.run(20_000);
    let new: Vec<usize> = (0..7).filter(|i| !net.down.contains(i) && !holders.contains(i)).collect();
    let new_holder = new.iter().copied().find(|i| net.sns[*i].mail.len() == 1).expect("a new holder got the box");
    let copies = mail_copies_to(&net);
    assert!(!copies.is_empty());
    assert!(copies.iter().all(|a| *a == net.sns[new_holder].advertise()), "{copies:?}");
    // And a further change that leaves the new set alone sends nothing again.
    let bystander = new.iter().copied().find(|i| *i != new_holder).unwrap();
    net.delivered.clear();
    net.down.insert(bystander);
    net.run(20_000);
    assert_eq!(mail_copies_to(&net), Vec::<SocketAddr>::new());
}

#[test]
fn a_stored_item_and_claim_are_output_before_the_answers_that_depend_on_them() {
    use supervox_proto::mail::{MailAck, MailItem};
    let mut s = sn(1, 4000, vec![]);
    let (alice, bob) = (Identity::from_seed([10; 32]), Identity::from_seed([11; 32]));
    join_client(&mut s, 1, &alice);
    let claim = NameClaim::sign(alice.signing_key(), "alice", 1).unwrap();
    s.on_message(1, Message::Claim { claim: claim.clone() }, 10);
    let out = drain(&mut s);
    let stored = out.iter().position(|o| *o == SnOutput::ClaimStored(claim.clone())).expect("claim persisted");
    let answered = out.iter().position(|o| matches!(o, SnOutput::Send(1, Message::ClaimResult { .. }))).unwrap();
    assert!(stored < answered, "{out:?}");
    let item = MailItem::sign(alice.signing_key(), [5; 16], bob.user_id(), 10, 3_600_000, vec![5; 100]);
    s.on_message(1, Message::MailPut { item: item.clone() }, 10);
    let out = drain(&mut s);
    let stored = out.iter().position(|o| *o == SnOutput::Mail(mailbox::MailChange::Stored(item.clone())));
    let answered =
        out.iter().position(|o| matches!(o, SnOutput::Send(1, Message::MailPutResult { result: Ok(()), .. })));
    assert!(stored.unwrap() < answered.unwrap(), "{out:?}");
    // Restored into a new incarnation, bob's mail is there and his ack is output.
    let mut again = sn(1, 4000, vec![]);
    again.restore_mail(vec![item], vec![], 20);
    assert!(drain(&mut again).is_empty(), "nothing to write back");
    join_client(&mut again, 2, &bob);
    again.on_message(2, Message::MailAck { ack: MailAck::sign(bob.signing_key(), vec![[5; 16]], 20) }, 20);
    let out = drain(&mut again);
    assert!(out.contains(&SnOutput::Mail(mailbox::MailChange::Acked { to: bob.user_id(), ids: vec![[5; 16]] })));
    assert!(again.mail().is_empty());
}

#[test]
fn a_clients_mail_fetches_in_flight_are_bounded_and_freed_when_answered() {
    use supervox_proto::mail::MailFetch;
    let mut net = Net::new(3);
    net.run(3_000);
    let bob = Identity::from_seed([11; 32]);
    net.sign_in(0, 2, &bob, "bob");
    // Holders that never answer keep every fetch in flight until its deadline.
    net.black_hole.insert(net.sns[1].advertise());
    net.black_hole.insert(net.sns[2].advertise());
    let now = net.now;
    for _ in 0..MAX_LOOKUPS_PER_CONN + 1 {
        net.sns[0].on_message(2, Message::MailFetch { fetch: MailFetch::sign(bob.signing_key(), now) }, now);
    }
    net.pump();
    let msgs = net.take_client_msgs(0, 2);
    let refused = msgs.iter().filter(|m| matches!(m, Message::Error { .. })).count();
    assert_eq!(refused, 1, "{msgs:?}");
    // Past the deadline every fetch is answered `done`, and the client may fetch again.
    net.run(3_000);
    let done = net.take_client_msgs(0, 2).iter().filter(|m| matches!(m, Message::Mail { done: true, .. })).count();
    assert_eq!(done, MAX_LOOKUPS_PER_CONN);
    let now = net.now;
    net.sns[0].on_message(2, Message::MailFetch { fetch: MailFetch::sign(bob.signing_key(), now) }, now);
    net.pump();
    assert!(!net.take_client_msgs(0, 2).iter().any(|m| matches!(m, Message::Error { .. })));
}

// ---- names nobody can squat or hijack (issue 15) ----

/// Sign a client in on `sn` from 192.0.2.1 without a claim (room made for
/// it: the test supernodes take two clients).
fn connect(net: &mut Net, sn: usize, conn: ConnId, id: &Identity) {
    net.sns[sn].cfg.max_clients = 100;
    let now = net.now;
    // One public source address (loopback has no new-name budget).
    net.sns[sn].on_connected(conn, SocketAddr::from(([192, 0, 2, 1], 9000 + conn as u16)));
    net.sns[sn].on_established(conn, Role::Client, id.user_id(), now);
    net.pump();
    net.take_client_msgs(sn, conn);
}

/// The claim's outcome as the client hears it.
fn claim_as(net: &mut Net, sn: usize, conn: ConnId, claim: NameClaim) -> Result<(), Refusal> {
    let now = net.now;
    net.sns[sn].on_message(conn, Message::Claim { claim }, now);
    net.pump();
    for _ in 0..80 {
        let msgs = net.take_client_msgs(sn, conn);
        if let Some(Message::ClaimResult { result, .. }) =
            msgs.into_iter().find(|m| matches!(m, Message::ClaimResult { .. }))
        {
            return result;
        }
        net.run(100);
    }
    panic!("claim never answered")
}

fn claim(net: &mut Net, sn: usize, conn: ConnId, id: &Identity, name: &str) -> Result<(), Refusal> {
    let c = NameClaim::sign(id.signing_key(), name, net.now + 1).unwrap();
    claim_as(net, sn, conn, c)
}

/// The keys that hold `name` anywhere.
fn owners(net: &Net, name: &str) -> HashSet<UserId> {
    net.sns.iter().flat_map(|s| s.claims()).filter(|c| c.name == name).map(|c| c.user_id).collect()
}

/// Supernode indices in `sn`'s ranking of `name`'s claim holders.
fn ranked(net: &Net, sn: usize, name: &str) -> Vec<usize> {
    net.sns[sn].holders_of(name).iter().filter_map(|h| net.index_of(h.addr)).collect()
}

/// A member that was not asked answers a request in flight — with guessed
/// (sequential) ids, with the real (random) id learnt by sniffing, and from
/// the asked holder's address under its own member id: all dropped and
/// counted; the real holders decide.
#[test]
fn forged_answers_from_members_not_asked_are_ignored() {
    let mut net = Net::new(8);
    net.run(3_000);
    let (alice, bob, mallory) =
        (Identity::from_seed([10; 32]), Identity::from_seed([11; 32]), Identity::from_seed([12; 32]));
    net.sign_in(2, 1, &alice, "alice");
    let holders = ranked(&net, 0, "alice");
    let outside: Vec<usize> = (0..8).filter(|i| !holders.contains(i) && *i != 2).collect();
    let (asker, forger) = (outside[0], outside[1]);
    let forger_at = net.sns[forger].advertise();
    let holder_at = net.sns[holders[0]].advertise();

    // Mallory claims alice's name through `asker`: the claim goes to every holder.
    connect(&mut net, asker, 5, &mallory);
    let c = NameClaim::sign(mallory.signing_key(), "alice", net.now).unwrap();
    let now = net.now;
    let before = net.sns[asker].pending.ids();
    net.sns[asker].on_message(5, Message::Claim { claim: c }, now);
    let out = drain(&mut net.sns[asker]);
    let claims = out.iter().filter(|o| matches!(o, SnOutput::Datagram { kind: "Claim", .. })).count();
    assert_eq!(claims, holders.len());
    // The id a holder sees (sniffed here from the asker's table).
    let reqs: Vec<u64> = net.sns[asker].pending.ids().into_iter().filter(|r| !before.contains(r)).collect();
    let [req] = reqs[..] else { panic!("{reqs:?}") };
    assert!(req > u64::from(u32::MAX), "request ids are random, not a counter: {req}");
    let yes = |req| OverlayMsg::ClaimAns { req, result: Ok(Claimed::New) };
    for guess in 0..1_000 {
        net.forge(forger, asker, forger_at, yes(guess));
    }
    net.forge(forger, asker, forger_at, yes(req));
    for _ in 0..holders.len() {
        net.forge(forger, asker, holder_at, yes(req));
    }
    assert_eq!(net.sns[asker].stats().answers_refused, 1 + holders.len() as u64);
    assert!(net.take_client_msgs(asker, 5).is_empty() && sent_to(&drain(&mut net.sns[asker]), 5).is_empty());
    net.deliver(asker, out);
    net.pump();
    net.run(1_500);
    let msgs = net.take_client_msgs(asker, 5);
    assert!(msgs.iter().any(|m| matches!(m, Message::ClaimResult { result: Err(Refusal::Taken), .. })), "{msgs:?}");
    assert_eq!(owners(&net, "alice"), HashSet::from([alice.user_id()]));

    // A lookup by bob: the forger answers it with mallory's self-signed records.
    connect(&mut net, asker, 6, &bob);
    let now = net.now;
    let before = net.sns[asker].pending.ids();
    net.sns[asker].on_message(6, Message::Lookup { req_id: 1, name: "alice".into() }, now);
    let out = drain(&mut net.sns[asker]);
    let asked_at = out
        .iter()
        .find_map(|o| match o {
            SnOutput::Datagram { to, kind: "Lookup", .. } => Some(*to),
            _ => None,
        })
        .unwrap();
    let reqs: Vec<u64> = net.sns[asker].pending.ids().into_iter().filter(|r| !before.contains(r)).collect();
    let [req] = reqs[..] else { panic!("{reqs:?}") };
    let forged = LookupAnswer::Online {
        claim: NameClaim::sign(mallory.signing_key(), "alice", now).unwrap(),
        presence: Presence::sign(mallory.signing_key(), "alice", forger_at, now, now + 60_000).unwrap(),
    };
    let before = net.sns[asker].stats().answers_refused;
    net.forge(forger, asker, forger_at, OverlayMsg::LookupAns { req, answer: forged.clone() });
    net.forge(forger, asker, asked_at, OverlayMsg::LookupAns { req, answer: forged });
    assert_eq!(net.sns[asker].stats().answers_refused, before + 2);
    net.deliver(asker, out);
    net.pump();
    let msgs = net.take_client_msgs(asker, 6);
    let Some(Message::LookupResult { answer: LookupAnswer::Online { claim, .. }, .. }) = msgs.first() else {
        panic!("{msgs:?}")
    };
    assert_eq!(claim.user_id, alice.user_id());
}

/// A malicious claim holder says yes to every claim (and answers lookups
/// with a thief's records), then no to every claim: a majority of the
/// holders decides either way, and the lookup believes the majority's key.
#[test]
fn one_malicious_holder_can_neither_grant_nor_refuse_a_claim_nor_forge_a_lookup() {
    let mut net = Net::new(8);
    net.run(3_000);
    let (alice, bob, carol, mallory) = (
        Identity::from_seed([10; 32]),
        Identity::from_seed([11; 32]),
        Identity::from_seed([12; 32]),
        Identity::from_seed([13; 32]),
    );
    let alice_sn = 2;
    net.sign_in(alice_sn, 1, &alice, "alice");
    let holders = ranked(&net, 0, "alice");
    // The heaviest holder: the first a lookup asks.
    let evil = holders[0];
    let asker = (0..8).find(|i| !holders[..3].contains(i) && *i != alice_sn).unwrap();
    let evil_at = net.sns[evil].advertise();
    let thief = mallory.signing_key().clone();
    net.tamper.insert(
        evil,
        Box::new(move |msg| match msg {
            OverlayMsg::ClaimAns { req, .. } => OverlayMsg::ClaimAns { req, result: Ok(Claimed::New) },
            OverlayMsg::LookupAns { req, .. } => OverlayMsg::LookupAns {
                req,
                answer: LookupAnswer::Online {
                    claim: NameClaim::sign(&thief, "alice", 1).unwrap(),
                    presence: Presence::sign(&thief, "alice", evil_at, 1, 200_000).unwrap(),
                },
            },
            m => m,
        }),
    );
    connect(&mut net, asker, 5, &mallory);
    let r = claim(&mut net, asker, 5, &mallory, "alice");
    assert!(r == Err(Refusal::Taken), "{r:?}");
    assert_eq!(owners(&net, "alice"), HashSet::from([alice.user_id()]));
    connect(&mut net, asker, 6, &bob);
    let LookupAnswer::Online { claim: c, presence } = net.lookup(asker, 6, "alice") else { panic!("not online") };
    assert_eq!((c.user_id, presence.supernode), (alice.user_id(), net.sns[alice_sn].advertise()));

    // Now it refuses every claim as taken: a free name it holds is still granted.
    net.tamper.insert(
        evil,
        Box::new(|msg| match msg {
            OverlayMsg::ClaimAns { req, .. } => OverlayMsg::ClaimAns { req, result: Err(Refusal::Taken) },
            m => m,
        }),
    );
    let name = (0..100).map(|n| format!("zoe{n}")).find(|n| ranked(&net, asker, n).contains(&evil)).unwrap();
    connect(&mut net, asker, 7, &carol);
    assert_eq!(claim(&mut net, asker, 7, &carol, &name), Ok(()));
    assert_eq!(owners(&net, &name), HashSet::from([carol.user_id()]));
}

/// The old race rule let a claim dated before a young one (< 60 s) replace
/// it on replication, and a refused claim rode along with the client's next
/// Publish into that rule: mallory took a name registered a moment ago.
/// Now the refused claim stays at its supernode, and no holder replaces
/// another key's claim, however it is dated and whoever sends it.
#[test]
fn a_refused_claim_riding_along_with_a_publish_cannot_steal_a_young_name() {
    let mut net = Net::new(6);
    net.run(3_000);
    let (alice, mallory) = (Identity::from_seed([10; 32]), Identity::from_seed([11; 32]));
    net.sign_in(1, 1, &alice, "alice");
    let asker = (0..6).find(|i| *i != 1).unwrap();
    let at = net.sns[asker].advertise();
    // Seconds later: dated before alice's claim, then a presence, as a client sends them.
    connect(&mut net, asker, 2, &mallory);
    let early = NameClaim::sign(mallory.signing_key(), "alice", 1).unwrap();
    let presence = Presence::sign(mallory.signing_key(), "alice", at, net.now, net.now + 60_000).unwrap();
    let now = net.now;
    net.sns[asker].on_message(2, Message::Claim { claim: early.clone() }, now);
    net.sns[asker].on_message(2, Message::Publish { presence: presence.clone() }, now);
    net.pump();
    net.run(1_500);
    let msgs = net.take_client_msgs(asker, 2);
    assert!(msgs.iter().any(|m| matches!(m, Message::ClaimResult { result: Err(Refusal::Taken), .. })));
    assert!(msgs.iter().any(|m| matches!(m, Message::PublishResult { result: Err(_) })), "{msgs:?}");
    assert_eq!(owners(&net, "alice"), HashSet::from([alice.user_id()]));
    // A member sends the early claim and the presence to every holder as replicas.
    for h in net.holding("alice") {
        let store = OverlayMsg::Store { req: 1, claims: vec![early.clone()], presence: vec![presence.clone()] };
        net.forge(asker, h, at, store);
    }
    net.pump();
    assert_eq!(owners(&net, "alice"), HashSet::from([alice.user_id()]));
    let other = (0..6).find(|i| *i != 1 && *i != asker).unwrap();
    connect(&mut net, other, 3, &Identity::from_seed([12; 32]));
    let LookupAnswer::Online { claim: c, .. } = net.lookup(other, 3, "alice") else { panic!("not online") };
    assert_eq!(c.user_id, alice.user_id());
}

/// One key gets three names; one source address gets
/// [`NEW_NAMES_PER_SOURCE`] new names an hour through a supernode, while
/// renewals of names it holds still pass.
#[test]
fn a_fourth_name_for_a_key_is_refused_and_new_names_per_source_are_rate_limited() {
    let mut net = Net::new(5);
    net.run(3_000);
    let a = Identity::from_seed([10; 32]);
    connect(&mut net, 0, 1, &a);
    for n in ["a1", "a2", "a3"] {
        assert_eq!(claim(&mut net, 0, 1, &a, n), Ok(()), "{n}");
    }
    let r = claim(&mut net, 0, 1, &a, "a4");
    assert!(r == Err(Refusal::TooManyNames(3)), "{r:?}");
    assert!(owners(&net, "a4").is_empty());
    assert_eq!(claim(&mut net, 0, 1, &a, "a1"), Ok(()), "a renewal");
    // Every `connect`ed client comes from 192.0.2.1: three new names so far.
    for k in 0..(NEW_NAMES_PER_SOURCE as u8 - 3) {
        let id = Identity::from_seed([30 + k; 32]);
        connect(&mut net, 0, 10 + u64::from(k), &id);
        assert_eq!(claim(&mut net, 0, 10 + u64::from(k), &id, &format!("n{k}")), Ok(()));
    }
    let late = Identity::from_seed([90; 32]);
    connect(&mut net, 0, 99, &late);
    let r = claim(&mut net, 0, 99, &late, "late");
    assert!(r == Err(Refusal::RateLimited), "{r:?}");
    assert!(owners(&net, "late").is_empty());
    assert_eq!(claim(&mut net, 0, 1, &a, "a2"), Ok(()), "renewals pass over budget");
    // Another supernode keeps its own budget; this one's comes back in an hour.
    connect(&mut net, 1, 99, &late);
    assert_eq!(claim(&mut net, 1, 99, &late, "late"), Ok(()));
    net.now += 3_600_000;
    assert_eq!(claim(&mut net, 0, 99, &late, "late2"), Ok(()));
}

/// A claim lives a year from its owner's last signature: bob never signs in
/// again and loses his name to the next claimant; alice signs in half a
/// year on (her client signs a fresh claim) and keeps hers.
#[test]
fn an_expired_claim_is_dropped_and_an_online_owners_claim_is_renewed() {
    use crate::directory::CLAIM_LIFETIME_MS;
    let mut net = Net::new(3);
    net.run(3_000);
    let (alice, bob, carol) =
        (Identity::from_seed([10; 32]), Identity::from_seed([11; 32]), Identity::from_seed([12; 32]));
    net.sign_in(0, 1, &alice, "alice");
    net.sign_in(1, 1, &bob, "bob");
    let bob_signed = net.sns[1].claims().iter().find(|c| c.name == "bob").unwrap().created_ms;
    net.now += CLAIM_LIFETIME_MS / 2;
    net.run(1_000);
    let now = net.now;
    net.sns[0].on_closed(1, now);
    let msgs = net.sign_in(0, 2, &alice, "alice");
    assert!(msgs.contains(&Message::ClaimResult { name: "alice".into(), result: Ok(()) }), "{msgs:?}");
    let renewed = net.now + 1;
    assert_eq!(net.holding("alice").len(), 3);
    for s in &net.sns {
        let c = s.claims().into_iter().find(|c| c.name == "alice").unwrap();
        assert_eq!(c.created_ms, renewed, "renewed at every holder");
    }
    net.now = bob_signed + CLAIM_LIFETIME_MS;
    net.run(crate::supernode::CLAIM_SWEEP_MS + 1_000);
    assert!(net.holding("bob").is_empty(), "bob's claim outlived its year");
    assert_eq!(net.holding("alice").len(), 3);
    connect(&mut net, 2, 5, &carol);
    assert_eq!(net.lookup(2, 5, "bob"), LookupAnswer::Unknown);
    assert_eq!(claim(&mut net, 2, 5, &carol, "bob"), Ok(()));
}

#[test]
fn a_stranger_with_a_spoofed_source_gets_back_no_more_bytes_than_it_sends() {
    use supervox_proto::overlay::OverlayMsg;
    let mut net = Net::new(2);
    net.run(3_000);
    let alice = Identity::from_seed([10; 32]);
    net.sign_in(0, 1, &alice, "alice");
    let now = net.now;
    // A supernode of our network that never joined: it asks the seed who it
    // is from its own address, then aims every request at a victim's.
    let mut stranger = sn(7, 4997, vec![]);
    net.sns[0].on_datagram(addr(4997), &stranger.wire.hello(), now);
    let Some(SnOutput::Datagram { bytes: reply, .. }) = drain(&mut net.sns[0]).pop() else { panic!("no HelloAck") };
    assert!(reply.len() <= crate::overlay::wire::HELLO_LEN, "a Hello is answered smaller");
    stranger.on_datagram(addr(4000), &reply, now);
    let victim: SocketAddr = "192.0.2.99:53".parse().unwrap();
    let member = net.sns[1].membership.me();
    let claim = NameClaim::sign(alice.signing_key(), "alice2", now).unwrap();
    let presence = Presence::sign(alice.signing_key(), "alice", addr(4000), now, now + 60_000).unwrap();
    let requests = vec![
        OverlayMsg::Join,
        OverlayMsg::Ping { seq: 1, updates: vec![] },
        OverlayMsg::Ping { seq: 2, updates: vec![member; 4] },
        OverlayMsg::PingReq { seq: 3, target: member, updates: vec![] },
        OverlayMsg::SyncDigest { total: 1 },
        OverlayMsg::SyncBuckets { digests: vec![0; 256] },
        OverlayMsg::SyncPull { buckets: (0..=255).collect() },
        OverlayMsg::Claim { req: 4, claim: claim.clone(), renew_only: false },
        OverlayMsg::Publish { req: 5, claim: Some(claim.clone()), presence: presence.clone() },
        OverlayMsg::Lookup { req: 6, name: "alice".into() },
        OverlayMsg::Store { req: 7, claims: vec![claim], presence: vec![presence] },
        OverlayMsg::StunDialBack { transaction_id: [1; 12], mapped: victim, to: victim, padding: 1_400 },
        OverlayMsg::Unpublish { user: alice.user_id() },
    ];
    let (mut sent_in, mut sent_out) = (0usize, 0usize);
    for msg in requests {
        let kind = super::overlay_io::overlay_kind(&msg);
        let packet = supervox_proto::OverlayPacket { from: stranger.membership.me(), msg };
        let bytes = stranger.wire.seal(&net.sns[0].me, addr(4000), &packet, false, now).unwrap();
        net.sns[0].on_datagram(victim, &bytes, now);
        let out: usize = drain(&mut net.sns[0])
            .into_iter()
            .map(|o| match o {
                SnOutput::Datagram { to, bytes, .. } if to == victim => bytes.len(),
                SnOutput::StunDialBack { padding, .. } => 100 + usize::from(padding),
                _ => 0,
            })
            .sum();
        // As QUIC's address validation: what went to the unproved address
        // never exceeds what came from it, at every step.
        (sent_in, sent_out) = (sent_in + bytes.len(), sent_out + out);
        assert!(sent_out <= sent_in, "after {kind}: {sent_out} bytes out for {sent_in} in");
    }
    assert!(sent_out > 0, "a stranger's requests are answered (bounded)");
    // Nothing it said changed the network: not a member, alice still online.
    assert_eq!(net.sns[0].peer_addrs(), vec![addr(4001)]);
    assert!(matches!(net.lookup(0, 1, "alice"), LookupAnswer::Online { .. }));
}

/// Holders that crashed a moment ago are still holders in every view: the
/// owner signing in again is confirmed by the live holder and nobody refuses,
/// so its renewal is accepted within two seconds, not after the claim's whole
/// wait (and the node does not give up its name). The same silence decides
/// nothing for a new name, nor for another key's claim of a held one.
#[test]
fn a_renewal_is_accepted_while_crashed_holders_are_still_in_view_and_nothing_else_is() {
    let mut net = Net::new(8);
    net.run(3_000);
    let (alice, mallory, newbie) =
        (Identity::from_seed([10; 32]), Identity::from_seed([12; 32]), Identity::from_seed([13; 32]));
    net.sign_in(2, 1, &alice, "alice");
    let holders = ranked(&net, 0, "alice");
    assert!(holders.len() >= 3, "{holders:?}");
    let asker = holders[0];
    for h in &holders[1..] {
        let a = net.sns[*h].advertise();
        net.black_hole.insert(a);
    }
    // A new name whose holders are mostly the black-holed ones, claimed at
    // the same moment as alice's renewal.
    let name = (0..1000)
        .map(|i| format!("new{i}"))
        .find(|n| {
            let hs = net.sns[asker].holders_of(n);
            hs.iter().any(|h| h.addr == net.sns[asker].advertise())
                && hs.iter().filter(|h| net.black_hole.contains(&h.addr)).count() * 2 >= hs.len()
        })
        .unwrap();
    connect(&mut net, asker, 5, &alice);
    connect(&mut net, asker, 7, &newbie);
    let t0 = net.now;
    let renewal = NameClaim::sign(alice.signing_key(), "alice", t0).unwrap();
    net.sns[asker].on_message(5, Message::Claim { claim: renewal }, t0);
    net.sns[asker].on_message(
        7,
        Message::Claim { claim: NameClaim::sign(newbie.signing_key(), &name, t0).unwrap() },
        t0,
    );
    net.pump();
    let (mut renewed, mut fresh) = (None, None);
    while net.now - t0 < 2_500 {
        net.run(100);
        let result = |m: Message| match m {
            Message::ClaimResult { result, .. } => Some(result),
            _ => None,
        };
        renewed = renewed.or(net.take_client_msgs(asker, 5).into_iter().find_map(result));
        fresh = fresh.or(net.take_client_msgs(asker, 7).into_iter().find_map(result));
    }
    assert_eq!(renewed, Some(Ok(())));
    assert_eq!(net.sns[asker].stats().claims_renewed_unconfirmed, 1);
    // The new name waits for a majority (or is refused as undecided).
    assert!(fresh.as_ref().is_none_or(|r| r.as_ref().is_err_and(Refusal::is_transient)), "{fresh:?}");

    connect(&mut net, asker, 6, &mallory);
    let stolen = claim(&mut net, asker, 6, &mallory, "alice");
    assert!(stolen.as_ref().is_err_and(|e| *e == Refusal::NoQuorum || *e == Refusal::Taken), "{stolen:?}");
    assert_eq!(owners(&net, "alice"), HashSet::from([alice.user_id()]));
}

/// A lookup needs a majority of the claim holders, most of which hold the
/// claim only: while a presence holder is still to answer, their "offline"
/// does not decide — an online user does not look offline because its
/// presence holders were a moment slower.
#[test]
fn a_lookup_waits_for_a_presence_holder_before_answering_offline() {
    let mut net = Net::new(12);
    for s in &mut net.sns {
        s.cfg.claim_replicas = 10;
    }
    net.run(3_000);
    let (alice, bob) = (Identity::from_seed([10; 32]), Identity::from_seed([11; 32]));
    net.sign_in(2, 1, &alice, "alice");
    let ranked = ranked(&net, 0, "alice");
    assert_eq!(ranked.len(), 10);
    let asker = ranked[3..].iter().copied().find(|i| *i != 2).unwrap();
    connect(&mut net, asker, 9, &bob);
    let slow: Vec<SocketAddr> = ranked[..3].iter().map(|i| net.sns[*i].advertise()).collect();
    net.black_hole.extend(slow.iter().copied());
    let now = net.now;
    net.sns[asker].on_message(9, Message::Lookup { req_id: 5, name: "alice".into() }, now);
    net.pump();
    let mut answer = None;
    for step in 0..15 {
        if step == 4 {
            // The presence holders answer from now on (the lookup asks the silent again).
            for a in &slow {
                net.black_hole.remove(a);
            }
        }
        net.run(100);
        answer = answer.or(net.take_client_msgs(asker, 9).into_iter().find_map(|m| match m {
            Message::LookupResult { answer, .. } => Some(answer),
            _ => None,
        }));
    }
    assert!(matches!(answer, Some(LookupAnswer::Online { .. })), "{answer:?}");
}
