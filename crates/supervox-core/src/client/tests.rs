//! A deterministic in-memory network: one supernode, two clients, links
//! replaced by direct message delivery, datagrams delivered by address.

use super::*;
use crate::call::Verified;
use crate::media_path::predict::SPARE_SOCKETS;
use crate::reason::{Reason, Rejection};
use crate::supernode::{SnOutput, Supernode, SupernodeConfig};
use std::collections::HashSet;
use supervox_proto::NatBehaviour as Behaviour;
use supervox_proto::{CallId, CallSignal, CandidateKind, Presence, Refusal, SignalEnvelope, Transport};
use supervox_stun::Reachability;

const SN: u16 = 4000;

fn addr(p: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], p))
}

struct Net {
    sn: Supernode,
    clients: Vec<Client>,
    /// client index → its conn id at the supernode (same id both ends).
    conns: Vec<Option<ConnId>>,
    events: Vec<Vec<ClientEvent>>,
    media: Vec<Vec<Vec<u8>>>,
    now: u64,
    /// Drop datagrams to this client.
    blackhole: Option<usize>,
    /// Relay streams each client asked for: server and TLS pin.
    relay_connects: Vec<Vec<(SocketAddr, Option<[u8; 32]>)>>,
    /// Drop every datagram between clients (NATs that let nothing in).
    direct_cut: bool,
    /// Spare socket requests and releases, per client.
    spare_ops: Vec<Vec<ClientOutput>>,
    /// Datagrams sent from spare sockets, per client.
    spare_sends: Vec<Vec<SocketAddr>>,
    /// Datagrams to addresses that are no client's, per sender.
    elsewhere: Vec<Vec<SocketAddr>>,
    /// Clients listening for TCP media at `tcp_addr(i)`.
    tcp_listen: Vec<bool>,
    /// Connected TCP media streams: (client, its stream id) → the other end.
    tcp_links: std::collections::HashMap<(usize, u64), (usize, u64)>,
    /// Streams each client closed.
    tcp_closes: Vec<Vec<u64>>,
    /// When each client dialled a TCP media stream.
    tcp_dials: Vec<Vec<u64>>,
    /// Simultaneous-open dials, per client: when, and to where.
    tcp_so_dials: Vec<Vec<(u64, SocketAddr)>>,
    /// Every address each client dialled for TCP media.
    tcp_dialled: Vec<Vec<SocketAddr>>,
    /// The supernode sees client `i` at this IP (its NAT's public side).
    observed_ip: Vec<std::net::IpAddr>,
    /// A dial to a client that does not listen is refused (a reset) rather than silent.
    tcp_refuse: bool,
    /// Call signals each client sent.
    signals: Vec<Vec<SignalEnvelope>>,
    /// The supernode never sees this client's lookups (a directory that does not answer).
    lost_lookups: Option<usize>,
    /// How the second supernode at `addr(SN2)` (a fake: links and lookups only) behaves.
    second: Second,
    /// Lookups the second supernode forwarded to the real one: its req id → (client, conn, client's req id).
    spied: std::collections::HashMap<u64, (usize, ConnId, u64)>,
    /// Clients that dialled the second supernode.
    second_dials: Vec<usize>,
    /// Messages each client sent on its second-supernode link.
    second_sent: Vec<Vec<Message>>,
    /// Record this client's outputs into `recorded` (see [`Net::step_collecting`]).
    record: Option<usize>,
    recorded: Vec<ClientOutput>,
    /// The supernode's TURN server (see [`Net::with_turn`]); without it, TURN gets no answer.
    turn: Option<supervox_turn::TurnServer>,
    /// Client `i`'s datagrams reach the supernode's host, its UDP port and relay sockets,
    /// and come back from it (else lost: UDP blocked).
    udp_to_sn: Vec<bool>,
    /// Client `i`'s open relay stream: the client address the TURN server sees it from.
    relay_stream: Vec<Option<SocketAddr>>,
    /// Relay streams opened so far (each gets its own client port).
    relay_streams_opened: u16,
    /// Bytes each client wrote to its relay streams.
    relay_stream_sent: Vec<Vec<Vec<u8>>>,
    /// `RelayDisconnect`s per client.
    relay_disconnects: Vec<usize>,
    /// Relay sockets the TURN server was given.
    turn_relays: u16,
}

/// The TURN server's relay sockets: `addr(RELAY_PORTS + n)`.
const RELAY_PORTS: u16 = 20_000;

/// The second supernode's port.
const SN2: u16 = 4001;
/// Its conn ids: `SECOND_CONN + client`.
const SECOND_CONN: ConnId = 100;
/// The conn the second supernode asks the real one's directory on.
const SPY_CONN: ConnId = 500;

/// How the fake second supernode answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Second {
    /// What the real supernode's directory says.
    Honest,
    /// A claim and presence signed by this seed's key for whatever name is asked.
    Forge(u8),
    /// Admits, then never answers the lookup.
    Silent,
    /// Its address refuses connections.
    Down,
}

/// Client `i`'s TCP media listener.
fn tcp_addr(i: usize) -> SocketAddr {
    addr(7000 + i as u16)
}

impl Net {
    fn new(names: &[&str], auto_answer: bool) -> Self {
        Self::new_with(names, auto_answer, |_| {})
    }

    fn new_with(names: &[&str], auto_answer: bool, tweak: impl Fn(&mut ClientConfig)) -> Self {
        let cfg = SupernodeConfig {
            max_clients: 10,
            agent: "t".into(),
            member_difficulty: 2,
            ..SupernodeConfig::new(addr(SN), vec![])
        };
        let sn = Supernode::new(&Identity::from_seed([99; 32]), cfg, vec![], 1, 0);
        let clients = names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let mut hc = HostCache::new();
                hc.add(addr(SN));
                let mut cfg =
                    ClientConfig { name: n.to_string(), auto_answer, agent: "t".into(), ..Default::default() };
                tweak(&mut cfg);
                let mut c = Client::new(Identity::from_seed([i as u8 + 1; 32]), cfg, hc, i as u64);
                c.set_local_candidates(vec![Candidate {
                    kind: CandidateKind::Host,
                    transport: Transport::Udp,
                    addr: addr(5000 + i as u16),
                    priority: 100,
                }]);
                c
            })
            .collect::<Vec<_>>();
        let n = clients.len();
        Net {
            sn,
            clients,
            conns: vec![None; n],
            events: vec![vec![]; n],
            media: vec![vec![]; n],
            now: 1_000_000,
            blackhole: None,
            relay_connects: vec![vec![]; n],
            direct_cut: false,
            spare_ops: vec![vec![]; n],
            spare_sends: vec![vec![]; n],
            elsewhere: vec![vec![]; n],
            tcp_listen: vec![false; n],
            tcp_links: Default::default(),
            tcp_closes: vec![vec![]; n],
            tcp_dials: vec![vec![]; n],
            tcp_so_dials: vec![vec![]; n],
            tcp_dialled: vec![vec![]; n],
            observed_ip: vec![addr(0).ip(); n],
            tcp_refuse: false,
            signals: vec![vec![]; n],
            lost_lookups: None,
            second: Second::Honest,
            spied: Default::default(),
            second_dials: vec![],
            second_sent: vec![vec![]; n],
            record: None,
            recorded: vec![],
            turn: None,
            udp_to_sn: vec![true; n],
            relay_stream: vec![None; n],
            relay_streams_opened: 0,
            relay_stream_sent: vec![vec![]; n],
            relay_disconnects: vec![0; n],
            turn_relays: 0,
        }
    }

    /// A TURN server behind the supernode (its credentials' secret), over UDP at
    /// `addr(SN)` and over TCP streams to it; relay sockets at `RELAY_PORTS` and up.
    fn with_turn(mut self) -> Self {
        let mut cfg = supervox_turn::TurnConfig::new("supervox", b"secret".to_vec());
        cfg.peers.allow_loopback = true;
        self.turn = Some(supervox_turn::TurnServer::new(cfg, self.now));
        self
    }

    /// Deliver what the TURN server sends.
    fn turn_outputs(&mut self) -> bool {
        use supervox_turn::Output;
        let mut moved = false;
        while let Some(o) = self.turn.as_mut().and_then(|t| t.poll_output()) {
            moved = true;
            match o {
                Output::ToClient { transport: supervox_turn::Transport::Udp, client, bytes, .. } => {
                    let j = usize::from(client.port().wrapping_sub(5000));
                    if j < self.clients.len() && self.udp_to_sn[j] {
                        if let Some((_, m)) = self.clients[j].handle_datagram(addr(SN), &bytes, self.now) {
                            self.media[j].push(m);
                        }
                    }
                }
                Output::ToClient { client, bytes, .. } => {
                    if let Some(j) = self.relay_stream.iter().position(|s| *s == Some(client)) {
                        if let Some((_, m)) = self.clients[j].on_relay_frame(&bytes, self.now) {
                            self.media[j].push(m);
                        }
                    }
                }
                // Relay to relay (both clients' allocations are on this server).
                Output::ToPeer { relay_addr, peer, bytes } if peer.port() > RELAY_PORTS => {
                    let now = self.now;
                    if let Some(t) = self.turn.as_mut() {
                        t.handle_peer(peer, relay_addr, &bytes, now);
                    }
                }
                Output::ToPeer { relay_addr, peer, bytes } => {
                    let j = usize::from(peer.port().wrapping_sub(5000));
                    if j < self.clients.len() && self.udp_to_sn[j] {
                        if let Some((_, m)) = self.clients[j].handle_datagram(relay_addr, &bytes, self.now) {
                            self.media[j].push(m);
                        }
                    }
                }
                Output::AllocateRelay { token, .. } => {
                    self.turn_relays += 1;
                    let relay = addr(RELAY_PORTS + self.turn_relays);
                    let now = self.now;
                    if let Some(t) = self.turn.as_mut() {
                        t.relay_allocated(token, Ok(relay), now);
                    }
                }
                Output::ReleaseRelay { .. } => {}
            }
        }
        moved
    }

    /// Sign in, then let every client know the second supernode too.
    fn with_second(mut self, second: Second) -> Self {
        self.second = second;
        self.run(100);
        for c in &mut self.clients {
            c.host_cache.add(addr(SN2));
        }
        let spy = Identity::from_seed([77; 32]).user_id();
        self.sn.on_connected(SPY_CONN, addr(6999));
        self.sn.on_established(SPY_CONN, Role::Client, spy, self.now);
        while self.sn.poll_output().is_some() {}
        self
    }

    /// Client `i` talks to the fake second supernode.
    fn second_output(&mut self, i: usize, o: ClientOutput) {
        let conn = SECOND_CONN + i as ConnId;
        match o {
            ClientOutput::Connect(_) => {
                self.second_dials.push(i);
                if self.second == Second::Down {
                    return self.clients[i].on_connect_failed(addr(SN2), "refused", self.now);
                }
                self.clients[i].on_connected(conn, addr(SN2));
                let key = Identity::from_seed([98; 32]).user_id();
                self.clients[i].on_established(conn, Role::Supernode, key, self.now);
                let welcome =
                    Message::Welcome { supernode: addr(SN2), supernodes: vec![], loads: vec![], observed: addr(6000) };
                self.clients[i].on_message(conn, welcome, self.now);
            }
            ClientOutput::Send(_, m) => {
                self.second_sent[i].push(m.clone());
                let Message::Lookup { req_id, name } = m else { return };
                match self.second {
                    Second::Honest => {
                        let spy_req = 1_000 + self.spied.len() as u64;
                        self.spied.insert(spy_req, (i, conn, req_id));
                        self.sn.on_message(SPY_CONN, Message::Lookup { req_id: spy_req, name }, self.now);
                    }
                    Second::Forge(seed) => {
                        let evil = Identity::from_seed([seed; 32]);
                        let claim = supervox_proto::NameClaim::sign(evil.signing_key(), &name, 1).unwrap();
                        let presence =
                            Presence::sign(evil.signing_key(), &name, addr(SN2), 1, self.now + 60_000).unwrap();
                        let answer = supervox_proto::LookupAnswer::Online { claim, presence };
                        self.clients[i].on_message(conn, Message::LookupResult { req_id, answer }, self.now);
                    }
                    Second::Silent | Second::Down => {}
                }
            }
            _ => {}
        }
    }

    /// Run every machine whose timer is due, then deliver until quiet. A
    /// machine whose deadline is still due right after its `handle_timeout`
    /// would spin its driver: that fails the test.
    fn step(&mut self) {
        let now = self.now;
        for i in 0..self.clients.len() {
            if self.clients[i].poll_timeout().is_some_and(|t| t <= now) {
                self.clients[i].handle_timeout(now);
                let next = self.clients[i].poll_timeout();
                assert!(next.is_none_or(|t| t > now), "client {i} still due at {now} after handle_timeout: {next:?}");
            }
        }
        if let Some(t) = self.turn.as_mut().filter(|t| t.poll_timeout().is_some_and(|t| t <= now)) {
            t.handle_timeout(now);
        }
        if self.sn.poll_timeout().is_some_and(|t| t <= now) {
            self.sn.handle_timeout(now);
            let next = self.sn.poll_timeout();
            assert!(next.is_none_or(|t| t > now), "supernode still due at {now} after handle_timeout: {next:?}");
        }
        for _ in 0..50 {
            let mut moved = false;
            for i in 0..self.clients.len() {
                while let Some(o) = self.clients[i].poll_output() {
                    moved = true;
                    if self.record == Some(i) {
                        self.recorded.push(o.clone());
                    }
                    let to_second = match &o {
                        ClientOutput::Connect(a) => *a == addr(SN2),
                        ClientOutput::Send(c, _) => *c == SECOND_CONN + i as ConnId,
                        _ => false,
                    };
                    if to_second {
                        self.second_output(i, o);
                        continue;
                    }
                    match o {
                        ClientOutput::Connect(a) => {
                            assert_eq!(a, addr(SN));
                            let conn = 10 + i as ConnId;
                            self.conns[i] = Some(conn);
                            self.clients[i].on_connected(conn, a);
                            self.sn.on_connected(conn, SocketAddr::new(self.observed_ip[i], 6000 + i as u16));
                            self.clients[i].on_established(
                                conn,
                                Role::Supernode,
                                Identity::from_seed([99; 32]).user_id(),
                                self.now,
                            );
                            let id = self.clients[i].identity().user_id();
                            self.sn.on_established(conn, Role::Client, id, self.now);
                        }
                        ClientOutput::Send(_, Message::Lookup { .. }) if self.lost_lookups == Some(i) => {}
                        ClientOutput::Send(c, m) => {
                            if let Message::Signal(env) = &m {
                                self.signals[i].push(env.clone());
                            }
                            self.sn.on_message(c, m, self.now)
                        }
                        // To the supernode's UDP port (STUN, TURN): its TURN server if it has
                        // one and UDP gets there, else lost, as if UDP were blocked.
                        ClientOutput::Datagram(to, bytes) if to.port() < 5000 => {
                            if to == addr(SN) && self.udp_to_sn[i] {
                                let from = addr(5000 + i as u16);
                                if let Some(t) = self.turn.as_mut() {
                                    t.handle_client(supervox_turn::Transport::Udp, from, to, &bytes, self.now);
                                }
                            }
                        }
                        // To a relayed address on the TURN server.
                        ClientOutput::Datagram(to, bytes) if to.port() > RELAY_PORTS && self.turn.is_some() => {
                            let from = addr(5000 + i as u16);
                            if let Some(t) = self.turn.as_mut().filter(|_| self.udp_to_sn[i]) {
                                t.handle_peer(to, from, &bytes, self.now);
                            }
                        }
                        ClientOutput::Datagram(to, bytes) => {
                            let j = usize::from(to.port().wrapping_sub(5000));
                            if to.ip() != addr(0).ip() || j >= self.clients.len() {
                                self.elsewhere[i].push(to);
                            } else if self.blackhole != Some(j) && !self.direct_cut {
                                let from = addr(5000 + i as u16);
                                if let Some((_, m)) = self.clients[j].handle_datagram(from, &bytes, self.now) {
                                    self.media[j].push(m);
                                }
                            }
                        }
                        ClientOutput::Event(e) => self.events[i].push(e),
                        ClientOutput::RelayConnect { server, tls } => {
                            self.relay_connects[i].push((server, tls));
                            // Plain TCP to the supernode connects when it has a TURN server.
                            if let Some(t) = self.turn.as_mut() {
                                if let Some(old) = self.relay_stream[i].take() {
                                    t.handle_client_closed(supervox_turn::Transport::Tcp, old, addr(SN));
                                }
                                if server == addr(SN) && tls.is_none() {
                                    self.relay_streams_opened += 1;
                                    self.relay_stream[i] = Some(addr(9000 + self.relay_streams_opened));
                                }
                            }
                        }
                        ClientOutput::RelayStream(bytes) => {
                            self.relay_stream_sent[i].push(bytes.clone());
                            if let (Some(t), Some(from)) = (self.turn.as_mut(), self.relay_stream[i]) {
                                t.handle_client(supervox_turn::Transport::Tcp, from, addr(SN), &bytes, self.now);
                            }
                        }
                        ClientOutput::RelayDisconnect => {
                            self.relay_disconnects[i] += 1;
                            if let (Some(t), Some(from)) = (self.turn.as_mut(), self.relay_stream[i].take()) {
                                t.handle_client_closed(supervox_turn::Transport::Tcp, from, addr(SN));
                            }
                        }
                        ClientOutput::SpareDatagram(_, to, _) => self.spare_sends[i].push(to),
                        o @ (ClientOutput::OpenSpares(_) | ClientOutput::CloseSpares { .. }) => {
                            self.spare_ops[i].push(o)
                        }
                        ClientOutput::TcpConnect { stream, to, simultaneous } => {
                            self.tcp_dials[i].push(self.now);
                            self.tcp_dialled[i].push(to);
                            if simultaneous {
                                self.tcp_so_dials[i].push((self.now, to));
                            }
                            let j = usize::from(to.port().wrapping_sub(7000));
                            let accepted = match self.tcp_listen.get(j) {
                                Some(true) => self.clients[j].on_tcp_accepted(addr(8000 + i as u16), self.now),
                                _ => None,
                            };
                            match accepted {
                                Some(js) => {
                                    self.tcp_links.insert((i, stream), (j, js));
                                    self.tcp_links.insert((j, js), (i, stream));
                                    self.clients[i].on_tcp_connected(stream, self.now);
                                }
                                None if self.tcp_refuse => self.clients[i].on_tcp_refused(stream, self.now),
                                None => self.clients[i].on_tcp_closed(stream, self.now),
                            }
                        }
                        ClientOutput::TcpSend(stream, bytes) => {
                            if let Some(&(j, js)) = self.tcp_links.get(&(i, stream)) {
                                if let Some((_, m)) = self.clients[j].on_tcp_frame(js, &bytes, self.now) {
                                    self.media[j].push(m);
                                }
                            }
                        }
                        ClientOutput::TcpClose(stream) => {
                            self.tcp_closes[i].push(stream);
                            if let Some(far) = self.tcp_links.remove(&(i, stream)) {
                                self.tcp_links.remove(&far);
                                self.clients[far.0].on_tcp_closed(far.1, self.now);
                            }
                        }
                        ClientOutput::Close(..)
                        | ClientOutput::HostCacheChanged
                        | ClientOutput::Resolve { .. }
                        | ClientOutput::Trust(_) => {}
                    }
                }
            }
            moved |= self.turn_outputs();
            while let Some(o) = self.sn.poll_output() {
                moved = true;
                if let SnOutput::Send(SPY_CONN, Message::LookupResult { req_id, answer }) = o {
                    if let Some((i, conn, req_id)) = self.spied.remove(&req_id) {
                        self.clients[i].on_message(conn, Message::LookupResult { req_id, answer }, self.now);
                    }
                } else if let SnOutput::Send(c, m) = o {
                    if let Some(i) = self.conns.iter().position(|x| *x == Some(c)) {
                        self.clients[i].on_message(c, m, self.now);
                    }
                }
            }
            if !moved {
                break;
            }
        }
    }

    /// One [`Net::step`], recording client `i`'s outputs in order as they go.
    fn step_collecting(&mut self, i: usize, into: &mut Vec<ClientOutput>) {
        self.record = Some(i);
        self.step();
        self.record = None;
        into.append(&mut self.recorded);
    }

    /// Advance `ms` of virtual time event by event: the clock jumps to the
    /// earliest `poll_timeout` of any machine (as a driver that sleeps until
    /// then would), so a timer missing from a `poll_timeout` shows up here as
    /// a stalled call or sign-in.
    fn run(&mut self, ms: u64) {
        let end = self.now + ms;
        loop {
            self.step();
            let turn = self.turn.as_ref().and_then(|t| t.poll_timeout());
            let next = crate::timer::earliest(
                self.clients.iter().map(|c| c.poll_timeout()).chain([self.sn.poll_timeout(), turn]),
            );
            match next {
                Some(t) if t < end => self.now = t.max(self.now + 1),
                _ => break,
            }
        }
        self.now = end;
    }

    fn drop_link(&mut self, i: usize) {
        let c = self.conns[i].take().unwrap();
        self.sn.on_closed(c, self.now);
        self.clients[i].on_closed(c, "test", self.now);
    }
}

fn has(ev: &[ClientEvent], f: impl Fn(&ClientEvent) -> bool) -> bool {
    ev.iter().any(f)
}

#[test]
fn sign_in_call_media_and_hangup() {
    let mut net = Net::new(&["alice", "bob"], true);
    net.run(100);
    assert!(has(&net.events[0], |e| matches!(e, ClientEvent::SignedIn { .. })));
    assert_eq!(net.clients[1].supernode(), Some(addr(SN)));
    let id = net.clients[0].place_call("bob", net.now).unwrap();
    net.run(200);
    assert!(has(&net.events[1], |e| matches!(e, ClientEvent::Incoming { from, .. } if from == "alice")));
    assert!(has(
        &net.events[0],
        |e| matches!(e, ClientEvent::Connected { path: PathKind::DirectUdp, peer, .. } if peer == "bob")
    ));
    assert!(net.clients[0].is_connected(&id) && net.clients[1].is_connected(&id));
    net.clients[0].send_media(id, b"frame-1", net.now);
    net.step();
    assert_eq!(net.media[1], vec![b"frame-1".to_vec()]);
    net.clients[1].hangup(id, CallEnd::LocalHangup, net.now);
    net.run(50);
    // The peer's Bye carries our reason's text; both ends count it as normal.
    let remote = CallEnd::remote_hangup("local hangup");
    assert!(has(&net.events[0], |e| matches!(e, ClientEvent::Ended { reason, .. } if *reason == remote)));
    assert!(remote.is_normal());
    assert!(has(&net.events[1], |e| matches!(e, ClientEvent::Ended { reason: CallEnd::LocalHangup, .. })));
    assert!(net.clients[0].active_call().is_none() && net.clients[1].active_call().is_none());
}

#[test]
fn unknown_and_offline_names_fail_fast() {
    let mut net = Net::new(&["alice", "bob"], true);
    net.run(100);
    net.clients[0].place_call("nobody", net.now).unwrap();
    net.run(20);
    assert!(has(
        &net.events[0],
        |e| matches!(e, ClientEvent::Failed { reason: CallFailure::NoSuchUser(n), .. } if n == "nobody")
    ));
    net.drop_link(1);
    // bob's client is now reconnecting; stop it from succeeding by checking at once.
    net.clients[0].place_call("bob", net.now).unwrap();
    net.sn.handle_timeout(net.now);
    let mut out = Vec::new();
    while let Some(o) = net.clients[0].poll_output() {
        out.push(o);
    }
    for o in out {
        if let ClientOutput::Send(c, m) = o {
            net.sn.on_message(c, m, net.now);
        }
    }
    while let Some(o) = net.sn.poll_output() {
        if let SnOutput::Send(c, m) = o {
            if net.conns[0] == Some(c) {
                net.clients[0].on_message(c, m, net.now);
            }
        }
    }
    while let Some(o) = net.clients[0].poll_output() {
        if let ClientOutput::Event(e) = o {
            net.events[0].push(e);
        }
    }
    assert!(has(
        &net.events[0],
        |e| matches!(e, ClientEvent::Failed { reason: CallFailure::Offline(n), .. } if n == "bob")
    ));
}

#[test]
fn unanswered_call_can_be_declined_and_cancelled() {
    let mut net = Net::new(&["alice", "bob"], false);
    net.run(100);
    let id = net.clients[0].place_call("bob", net.now).unwrap();
    net.run(50);
    assert!(has(&net.events[0], |e| matches!(e, ClientEvent::Ringing { .. })));
    net.clients[1].hangup(id, CallEnd::LocalHangup, net.now);
    net.run(50);
    let declined = CallFailure::Rejected(Rejection::Declined);
    assert!(has(&net.events[0], |e| matches!(e, ClientEvent::Failed { reason, .. } if *reason == declined)));
    let hung_up = CallFailure::Ended(CallEnd::LocalHangup);
    assert!(has(&net.events[1], |e| matches!(e, ClientEvent::Failed { reason, .. } if *reason == hung_up)));
    // Caller cancels while ringing: the callee stops ringing.
    let id = net.clients[0].place_call("bob", net.now).unwrap();
    net.run(50);
    net.clients[0].hangup(id, CallEnd::LocalHangup, net.now);
    net.run(50);
    assert!(has(&net.events[1], |e| matches!(e, ClientEvent::Failed { reason: CallFailure::CallerCancelled, .. })));
    assert!(net.clients[1].active_call().is_none());
}

#[test]
fn forged_and_replayed_signals_from_whoever_routes_them_change_nothing() {
    let mut net = Net::new(&["alice", "bob"], false);
    net.run(100);
    let id = net.clients[0].place_call("bob", net.now).unwrap();
    net.run(50);
    assert!(has(&net.events[0], |e| matches!(e, ClientEvent::Ringing { .. })));
    let (alice, bob) = (net.clients[0].identity().user_id(), net.clients[1].identity().user_id());
    // What a supernode on the path could send alice as bob: a Reject signed
    // by another key, a Reject whose signature is bob's for another call, a
    // sealed signal it made up, and bob's own Ringing again (a replay).
    let mallory = Identity::from_seed([66; 32]);
    let body = supervox_proto::call::SignedSignal::Reject { reason: "declined".into() };
    let sig_by = |key: &Identity, call: CallId| {
        let payload = supervox_proto::call::signed_signal_payload(&call, &bob, &alice, &body);
        ed25519_dalek::Signer::sign(key.signing_key(), &payload)
    };
    let ringing = net.signals[1]
        .iter()
        .find_map(|e| match &e.body {
            CallSignal::Respond { first, .. } => Some(CallSignal::Sealed(first.clone())),
            _ => None,
        })
        .expect("bob responded");
    let forged = [
        CallSignal::Signed { body: body.clone(), signature: sig_by(&mallory, id) },
        CallSignal::Signed {
            body: body.clone(),
            signature: sig_by(&net.clients[1].identity().clone(), CallId([0; 16])),
        },
        CallSignal::Sealed(supervox_proto::call::SealedSignal { seq: 1, ciphertext: vec![0x55; 40] }),
        ringing,
        // An unauthenticated Respond: alice's handshake is already finished.
        CallSignal::Respond {
            handshake: vec![1; 48],
            first: supervox_proto::call::SealedSignal { seq: 0, ciphertext: vec![2; 32] },
        },
    ];
    let conn = net.conns[0].unwrap();
    let before = net.events[0].len();
    for body in forged {
        let env = SignalEnvelope { call_id: id, from: bob, to: alice, to_supernode: addr(SN), body };
        net.clients[0].on_message(conn, Message::Signal(env), net.now);
    }
    net.step();
    assert_eq!(net.events[0].len(), before, "{:?}", &net.events[0][before..]);
    assert_eq!(net.clients[0].call_info(&id).map(|i| i.1), Some("ringing"));
    // The call still works: bob answers and it connects.
    net.clients[1].answer(id, net.now);
    net.run(300);
    assert!(has(&net.events[0], |e| matches!(e, ClientEvent::Connected { .. })));
    // A forged Bye does not end it either; bob's real one does.
    let env = SignalEnvelope {
        call_id: id,
        from: bob,
        to: alice,
        to_supernode: addr(SN),
        body: CallSignal::Sealed(supervox_proto::call::SealedSignal { seq: 9, ciphertext: vec![7; 48] }),
    };
    net.clients[0].on_message(conn, Message::Signal(env), net.now);
    net.step();
    assert!(net.clients[0].is_connected(&id));
    net.clients[1].hangup(id, CallEnd::LocalHangup, net.now);
    net.run(50);
    assert!(!net.clients[0].is_connected(&id));
}

#[test]
fn a_hostile_reject_reason_from_the_callee_is_sanitised_and_decides_nothing() {
    // The callee itself may be hostile: its (authentic) reason text tries to
    // forge log lines and pass for a normal outcome, 60 KB long.
    let reason = format!("call duration reached\n{}", "\u{202e}x".repeat(30_000));
    let failed = CallFailure::Rejected(Rejection::from_wire(&reason));
    assert_eq!(failed.code(), "rejected");
    assert!(!failed.is_normal());
    let text = failed.to_string();
    assert!(text.starts_with("rejected: call duration reached "), "{text:.80}");
    assert!(text.chars().count() <= "rejected: ".len() + crate::reason::MAX_REASON_CHARS + 1);
    assert!(!text.chars().any(|c| c.is_control() || c == '\u{202e}'));
}

#[test]
fn media_timeout_ends_a_call_whose_peer_vanished() {
    let mut net = Net::new(&["alice", "bob"], true);
    net.run(100);
    net.clients[0].place_call("bob", net.now).unwrap();
    net.run(200);
    net.blackhole = Some(0);
    net.run(crate::call::MEDIA_TIMEOUT_MS + 100);
    assert!(has(&net.events[0], |e| matches!(e, ClientEvent::Ended { reason: CallEnd::MediaTimeout, .. })));
}

#[test]
fn reconnects_after_losing_the_supernode() {
    let mut net = Net::new(&["alice"], true);
    net.run(100);
    net.drop_link(0);
    net.run(100);
    assert!(has(&net.events[0], |e| matches!(e, ClientEvent::LostSupernode { reason: LinkClose::Closed(_), .. })));
    let signed_in = net.events[0].iter().filter(|e| matches!(e, ClientEvent::SignedIn { .. })).count();
    assert_eq!(signed_in, 2);
}

/// A supernode that relays, also over TLS at `tls` with certificate hash `pin`.
fn relaying_net(tweak: impl Fn(&mut ClientConfig), tls: Option<(SocketAddr, [u8; 32])>) -> Net {
    relaying_net_of(&["alice"], tweak, tls)
}

/// [`relaying_net`] with these clients (auto-answering).
fn relaying_net_of(names: &[&str], tweak: impl Fn(&mut ClientConfig), tls: Option<(SocketAddr, [u8; 32])>) -> Net {
    let mut net = Net::new_with(names, true, tweak);
    net.sn.enable_relay_credentials(b"secret".to_vec(), 3600);
    if let Some((a, fingerprint)) = tls {
        net.sn.enable_relay_tls(supervox_proto::RelayTls { fingerprint, relays: vec![a] });
    }
    net
}

#[test]
fn relay_falls_back_from_udp_to_tcp_to_tls_in_auto_mode() {
    let tls = (addr(443), [7; 32]);
    let mut net = relaying_net(|_| {}, Some(tls));
    // UDP to the supernode is lost: TURN over TCP races it after UDP's head start, to
    // the address the supernode was reached at, long before the UDP Allocate gives up.
    net.run(1_000);
    assert_eq!(net.relay_connects[0], vec![(addr(SN), None)]);
    // Nothing is proven yet: UDP may still work.
    assert_eq!(net.clients[0].relay_transport(), RelayTransport::Udp);
    // Plain TCP is refused (a firewall that passes only 443): TLS to the announced listener, pinned.
    let now = net.now;
    net.clients[0].on_relay_stream_closed(now);
    net.run(100);
    assert_eq!(net.relay_connects[0].last(), Some(&(addr(443), Some([7; 32]))));
    // The UDP Allocate gives up after its retransmissions (~16 s): UDP is blocked, TLS it is.
    net.run(17_000);
    assert_eq!(net.clients[0].relay_transport(), RelayTransport::Tls);
    // A TLS stream that fails is retried over TLS (after a pause), never back to TCP.
    let n = net.relay_connects[0].len();
    let now = net.now;
    net.clients[0].on_relay_stream_closed(now);
    net.run(6_000);
    assert!(net.relay_connects[0].len() > n);
    assert!(net.relay_connects[0][1..].iter().all(|c| *c == (addr(443), Some([7; 32]))), "{:?}", net.relay_connects);
}

#[test]
fn without_a_tls_relay_auto_mode_keeps_retrying_tcp() {
    let mut net = relaying_net(|_| {}, None);
    net.run(17_000);
    let now = net.now;
    net.clients[0].on_relay_stream_closed(now);
    net.run(6_000);
    assert!(net.relay_connects[0].len() >= 2);
    assert!(net.relay_connects[0].iter().all(|c| *c == (addr(SN), None)), "{:?}", net.relay_connects);
    assert_eq!(net.clients[0].relay_transport(), RelayTransport::Tcp);
}

#[test]
fn forced_transports_do_not_move() {
    // tls: straight to the TLS listener.
    let mut net = relaying_net(|c| c.relay_transport = Some(RelayTransport::Tls), Some((addr(443), [9; 32])));
    net.run(200);
    assert_eq!(net.relay_connects[0], vec![(addr(443), Some([9; 32]))]);
    // tls with a supernode that has none: no relay at all rather than another transport.
    let mut net = relaying_net(|c| c.relay_transport = Some(RelayTransport::Tls), None);
    net.run(17_000);
    assert!(net.relay_connects[0].is_empty());
    assert!(net.clients[0].relayed_addr().is_none());
    // tcp: a refused stream is retried over TCP, not TLS.
    let mut net = relaying_net(|c| c.relay_transport = Some(RelayTransport::Tcp), Some((addr(443), [9; 32])));
    net.run(200);
    let now = net.now;
    net.clients[0].on_relay_stream_closed(now);
    net.run(6_000);
    assert!(net.relay_connects[0].len() >= 2);
    assert!(net.relay_connects[0].iter().all(|c| *c == (addr(SN), None)), "{:?}", net.relay_connects);
}

#[test]
fn an_external_turns_server_is_reached_over_tls_with_its_pin() {
    let ext = ExternalRelay { server: addr(5349), username: "carol".into(), password: "pw".into(), tls: Some([3; 32]) };
    let mut net = relaying_net(move |c| c.external_relay = Some(ext.clone()), None);
    net.run(200);
    assert_eq!(net.relay_connects[0], vec![(addr(5349), Some([3; 32]))]);
}

#[test]
fn a_tcp_relay_stream_that_never_answers_falls_back_to_tls() {
    let mut net = relaying_net(|_| {}, Some((addr(443), [7; 32])));
    net.run(1_000);
    assert_eq!(net.relay_connects[0], vec![(addr(SN), None)]);
    // The stream "connects" but nothing comes back (a middlebox that eats non-TLS bytes):
    // the Allocate times out after 10 s.
    net.run(10_000);
    assert_eq!(net.relay_connects[0].last(), Some(&(addr(443), Some([7; 32]))));
}

/// The last TURN request client `i` wrote to a relay stream is a Refresh with lifetime 0.
fn released_on_stream(net: &Net, i: usize) -> bool {
    use supervox_turn::codec::{attr, method, Message as TurnMessage};
    net.relay_stream_sent[i]
        .last()
        .and_then(|b| TurnMessage::parse(b).ok())
        .is_some_and(|m| m.method == method::REFRESH && m.get(attr::LIFETIME) == Some(&0u32.to_be_bytes()[..]))
}

#[test]
fn with_udp_blocked_a_tcp_relay_races_the_probe_and_reaches_a_call_placed_at_sign_in() {
    // Alice's UDP gets nowhere (not to the supernode, not to bob); bob's does.
    let mut net = relaying_net_of(&["alice", "bob"], |_| {}, None).with_turn();
    net.udp_to_sn[0] = false;
    net.direct_cut = true;
    // Media addresses: candidates follow the relay, and alice probes her NAT.
    net.clients[0].set_media_addr(addr(5000));
    net.clients[1].set_media_addr(addr(5001));
    net.run(1);
    assert!(has(&net.events[0], |e| matches!(e, ClientEvent::SignedIn { .. })));
    // The call goes out right after sign-in, before any relay is up.
    assert!(net.clients[0].relayed_addr().is_none());
    let id = net.clients[0].place_call("bob", net.now).unwrap();
    net.run(1_000);
    // TURN over TCP is up while the probe still waits for its answers.
    assert!(net.clients[0].reachability().is_none(), "the probe has concluded: {:?}", net.clients[0].reachability());
    assert_eq!(net.relay_connects[0], vec![(addr(SN), None)]);
    assert_eq!(net.clients[0].relay_transport(), RelayTransport::Tcp);
    let relayed = net.clients[0].relayed_addr().expect("a TCP allocation");
    // Bob's side of the call has the relayed candidate (trickled), and the call is up
    // through it.
    let bob_call = net.clients[1].calls.get(&id).expect("bob's call");
    assert!(
        bob_call.peer_candidates.contains(&super::relay::relay_candidate(relayed)),
        "{:?}",
        bob_call.peer_candidates
    );
    assert!(
        has(&net.events[0], |e| matches!(e, ClientEvent::Connected { path: PathKind::RelayTcp, .. })),
        "{:?}",
        net.events[0]
    );
    // Once the probe concludes, UDP is off and the UDP leg stays down.
    net.run(5_000);
    assert!(net.clients[0].reachability().is_some_and(|r| !r.udp));
    assert!(net.clients[0].relays.slot(super::relay::Leg::Udp).is_none());
    assert_eq!(net.clients[0].relayed_addr(), Some(relayed));
}

#[test]
fn when_udp_works_the_udp_allocation_is_kept_and_the_tcp_one_released() {
    let mut net = relaying_net(|_| {}, None).with_turn();
    // The first UDP Allocates are lost: TCP wins the race.
    net.udp_to_sn[0] = false;
    net.run(1);
    // Candidates follow the relay from now on (set after sign-in: no NAT probe).
    net.clients[0].set_media_addr(addr(5000));
    net.run(1_000);
    assert_eq!(net.relay_connects[0], vec![(addr(SN), None)]);
    assert_eq!(net.clients[0].relay_transport(), RelayTransport::Tcp);
    let over_tcp = net.clients[0].relayed_addr().expect("a TCP allocation");
    assert!(net.clients[0].local_candidates.contains(&super::relay::relay_candidate(over_tcp)));
    // Then UDP gets through: a retransmitted Allocate succeeds, UDP is proven.
    net.udp_to_sn[0] = true;
    net.run(5_000);
    assert_eq!(net.clients[0].relay_transport(), RelayTransport::Udp);
    let over_udp = net.clients[0].relayed_addr().expect("a UDP allocation");
    assert_ne!(over_udp, over_tcp);
    // The TCP allocation is released (Refresh with lifetime 0, then the stream closed).
    assert!(released_on_stream(&net, 0), "{:?}", net.relay_stream_sent[0].last());
    assert_eq!(net.relay_disconnects[0], 1);
    assert_eq!(net.turn.as_ref().map(|t| t.allocation_count()), Some(1));
    let cands = &net.clients[0].local_candidates;
    assert!(cands.contains(&super::relay::relay_candidate(over_udp)));
    assert!(!cands.contains(&super::relay::relay_candidate(over_tcp)));
    // And no stream comes back.
    net.run(30_000);
    assert_eq!(net.relay_connects[0].len(), 1);
    assert_eq!(net.clients[0].relayed_addr(), Some(over_udp));
}

#[test]
fn a_udp_relay_that_comes_up_within_its_head_start_opens_no_stream() {
    let mut net = relaying_net(|_| {}, None).with_turn();
    net.run(30_000);
    assert!(net.relay_connects[0].is_empty(), "{:?}", net.relay_connects[0]);
    assert_eq!(net.clients[0].relay_transport(), RelayTransport::Udp);
    assert!(net.clients[0].relayed_addr().is_some());
    assert_eq!(net.turn.as_ref().map(|t| t.stats().allocations_created), Some(1));
}

#[test]
fn udp_proven_during_a_call_over_the_tcp_relay_waits_for_the_call_to_end() {
    let mut net = relaying_net_of(&["alice", "bob"], |c| c.force_relay = true, None).with_turn();
    net.udp_to_sn[0] = false;
    for i in 0..2 {
        net.clients[i].set_media_addr(addr(5000 + i as u16));
    }
    net.run(1_000);
    let over_tcp = net.clients[0].relayed_addr().expect("a TCP allocation");
    let id = net.clients[0].place_call("bob", net.now).unwrap();
    net.run(1_000);
    assert!(net.clients[0].is_connected(&id), "{:?}", net.events[0]);
    // UDP works now, but the call keeps the relay it runs on.
    net.udp_to_sn[0] = true;
    net.run(5_000);
    assert!(net.clients[0].relays.up(super::relay::Leg::Udp));
    assert_eq!(net.clients[0].relayed_addr(), Some(over_tcp));
    assert_eq!(net.relay_disconnects[0], 0);
    assert!(net.clients[0].is_connected(&id));
    let media = net.media[1].len();
    net.run(200);
    let now = net.now;
    net.clients[0].send_media(id, b"still here", now);
    net.run(50);
    assert!(net.media[1].len() > media, "media through the TCP relay stopped");
    // Hung up: the TCP allocation goes, UDP's is used.
    let now = net.now;
    net.clients[0].hangup(id, crate::reason::CallEnd::LocalHangup, now);
    net.run(100);
    assert!(released_on_stream(&net, 0));
    assert_eq!(net.relay_disconnects[0], 1);
    assert_eq!(net.clients[0].relay_transport(), RelayTransport::Udp);
    assert_ne!(net.clients[0].relayed_addr(), Some(over_tcp));
}

#[test]
fn an_explicit_transport_is_not_raced() {
    // udp, with UDP blocked: no stream, ever.
    let mut net = relaying_net(|c| c.relay_transport = Some(RelayTransport::Udp), None).with_turn();
    net.udp_to_sn[0] = false;
    net.run(40_000);
    assert!(net.relay_connects[0].is_empty(), "{:?}", net.relay_connects[0]);
    assert!(net.clients[0].relayed_addr().is_none());
    // tcp, with UDP working: the stream at once, no UDP allocation beside it.
    let mut net = relaying_net(|c| c.relay_transport = Some(RelayTransport::Tcp), None).with_turn();
    net.run(30_000);
    assert_eq!(net.relay_connects[0], vec![(addr(SN), None)]);
    assert_eq!(net.clients[0].relay_transport(), RelayTransport::Tcp);
    assert!(net.clients[0].relayed_addr().is_some());
    assert_eq!(net.turn.as_ref().map(|t| t.stats().allocations_created), Some(1));
    assert!(net.clients[0].relays.slot(super::relay::Leg::Udp).is_none());
}

fn reach(mapping: Behaviour, filtering: Behaviour, mapped: &str, mapped_sn2: &str) -> Reachability {
    Reachability {
        udp: true,
        mapped: Some(mapped.parse().unwrap()),
        public: false,
        mapping,
        filtering,
        mapped_sn2: Some(mapped_sn2.parse().unwrap()),
    }
}

#[test]
fn port_prediction_is_negotiated_in_the_call_signalling() {
    use Behaviour::*;
    let mut net = Net::new(&["alice", "bob"], true);
    net.direct_cut = true;
    net.run(100);
    // alice behind a home router, bob (the callee) behind a symmetric NAT.
    net.clients[0].reach =
        Some(reach(EndpointIndependent, AddressAndPortDependent, "203.0.113.1:40000", "203.0.113.1:40000"));
    net.clients[1].reach =
        Some(reach(AddressAndPortDependent, AddressAndPortDependent, "198.51.100.7:31000", "198.51.100.7:47000"));
    let id = net.clients[0].place_call("bob", net.now).unwrap();
    net.run(100);
    // bob is the hard side: he asks for spares; alice waits for them before spraying.
    assert_eq!(net.spare_ops[1], vec![ClientOutput::OpenSpares(SPARE_SOCKETS)]);
    assert!(net.spare_ops[0].is_empty());
    assert!(net.elsewhere[0].is_empty(), "alice sprayed before bob's spares were open");
    net.clients[1].on_spares_opened(SPARE_SOCKETS, net.now);
    net.run(1_000);
    // Each spare sent a check to alice's mapped address, at once and a second later.
    assert!(net.spare_sends[1].len() >= usize::from(SPARE_SOCKETS));
    assert!(net.spare_sends[1].iter().all(|a| *a == "203.0.113.1:40000".parse().unwrap()));
    // bob's second report started alice's spray at his public IP, rate-limited.
    let sprayed: HashSet<SocketAddr> = net.elsewhere[0].iter().copied().collect();
    assert!(sprayed.iter().all(|a| a.ip() == "198.51.100.7".parse::<std::net::IpAddr>().unwrap()));
    assert!((1_300..=1_600).contains(&sprayed.len()), "{} guesses in ~1 s", sprayed.len());
    // Hanging up closes bob's spares; spares that open after the call are closed at once.
    net.clients[0].hangup(id, CallEnd::LocalHangup, net.now);
    net.run(50);
    assert_eq!(net.spare_ops[1].last(), Some(&ClientOutput::CloseSpares { keep: vec![] }));
    net.clients[1].on_spares_opened(SPARE_SOCKETS, net.now);
    net.run(10);
    assert_eq!(net.spare_ops[1].last(), Some(&ClientOutput::CloseSpares { keep: vec![] }));
    assert_eq!(net.spare_ops[1].len(), 3);
}

#[test]
fn no_port_prediction_between_two_symmetric_nats() {
    use Behaviour::*;
    let mut net = Net::new(&["alice", "bob"], true);
    net.direct_cut = true;
    net.run(100);
    for (i, ip) in ["203.0.113.1", "198.51.100.7"].iter().enumerate() {
        let (a, b) = (format!("{ip}:31000"), format!("{ip}:47000"));
        net.clients[i].reach = Some(reach(AddressAndPortDependent, AddressAndPortDependent, &a, &b));
    }
    net.clients[0].place_call("bob", net.now).unwrap();
    net.run(1_000);
    assert!(net.spare_ops.iter().all(Vec::is_empty));
    assert!(net.elsewhere[0].is_empty() && net.elsewhere[1].is_empty());
}

/// Alice listens for TCP media (a public node); UDP between the clients is
/// dropped when `udp_blocked`.
fn tcp_net(udp_blocked: bool) -> Net {
    let mut net = Net::new(&["alice", "bob"], true);
    net.tcp_listen[0] = true;
    let mut cands = net.clients[0].local_candidates.clone();
    cands.push(Candidate {
        kind: CandidateKind::Host,
        transport: Transport::TcpPassive,
        addr: tcp_addr(0),
        priority: 50,
    });
    cands.push(Candidate { kind: CandidateKind::Host, transport: Transport::TcpActive, addr: addr(9), priority: 60 });
    net.clients[0].set_local_candidates(cands);
    net.direct_cut = udp_blocked;
    net.run(100);
    net
}

#[test]
fn with_udp_blocked_the_call_goes_direct_tcp_and_hangup_closes_the_stream() {
    for caller in [0, 1] {
        let mut net = tcp_net(true);
        let callee = if caller == 0 { "bob" } else { "alice" };
        let id = net.clients[caller].place_call(callee, net.now).unwrap();
        net.run(400);
        for i in 0..2 {
            assert!(
                has(&net.events[i], |e| matches!(e, ClientEvent::Connected { path: PathKind::DirectTcp, .. })),
                "client {i} (caller {caller}): {:?}",
                net.events[i]
            );
        }
        // Bob connected to alice's passive candidate (never to an active one): one stream each.
        assert_eq!(net.tcp_links.len(), 2);
        assert_eq!((net.clients[0].tcp_stream_count(), net.clients[1].tcp_stream_count()), (1, 1));
        net.clients[0].send_media(id, b"over-tcp", net.now);
        net.clients[1].send_media(id, b"back", net.now);
        net.step();
        assert_eq!(net.media[1], vec![b"over-tcp".to_vec()]);
        assert_eq!(net.media[0], vec![b"back".to_vec()]);
        net.clients[caller].hangup(id, CallEnd::LocalHangup, net.now);
        net.run(50);
        assert_eq!((net.clients[0].tcp_stream_count(), net.clients[1].tcp_stream_count()), (0, 0));
        assert!(net.tcp_links.is_empty());
    }
}

/// A hostile callee offers "TCP candidates" at services of the caller's own host
/// (loopback) and at the cloud metadata address (link-local): the caller dials neither,
/// only the callee's real listener. Loopback is dialled only by a client that is on
/// loopback itself (as every client of this test net is, until bob moves).
#[test]
fn a_peer_cannot_make_us_dial_our_own_host_or_link_local_services() {
    let mut net = tcp_net(true);
    let mut cands = net.clients[0].local_candidates.clone();
    for (a, p) in [("169.254.169.254:80", 90), ("[fe80::1]:80", 89), ("[::ffff:169.254.169.254]:80", 88)] {
        let c = Candidate {
            kind: CandidateKind::Host,
            transport: Transport::TcpPassive,
            addr: a.parse().unwrap(),
            priority: p,
        };
        cands.push(c);
    }
    net.clients[0].set_local_candidates(cands.clone());
    net.clients[1].place_call("alice", net.now).unwrap();
    net.run(400);
    assert_eq!(net.tcp_dialled[1], vec![tcp_addr(0)], "bob dialled only alice's listener");
    // Bob on a real interface: alice's loopback "listener" is a service on bob's host.
    let mut net = tcp_net(true);
    let mut bobs = net.clients[1].local_candidates.clone();
    for c in &mut bobs {
        c.addr = SocketAddr::new("192.0.2.2".parse().unwrap(), c.addr.port());
    }
    net.clients[1].set_local_candidates(bobs);
    net.clients[1].place_call("alice", net.now).unwrap();
    net.run(400);
    assert!(net.tcp_dialled[1].is_empty(), "bob dialled a loopback candidate: {:?}", net.tcp_dialled[1]);
}

/// Both ends see every TCP media stream close (a NAT or firewall dropped them).
fn cut_tcp_streams(net: &mut Net) {
    let links: Vec<(usize, u64)> = net.tcp_links.drain().map(|(k, _)| k).collect();
    for (i, s) in links {
        net.clients[i].on_tcp_closed(s, net.now);
    }
}

#[test]
fn a_lost_tcp_stream_is_dialled_again_with_backoff_while_the_call_lasts() {
    let mut net = tcp_net(true);
    let id = net.clients[1].place_call("alice", net.now).unwrap();
    net.run(400);
    assert_eq!(net.tcp_links.len(), 2, "bob dialled alice's passive candidate");
    assert_eq!(net.tcp_dials[1].len(), 1);
    cut_tcp_streams(&mut net);
    let cut = net.now;
    net.run(REDIAL_FIRST_MS + 100);
    assert_eq!(net.tcp_dials[1].len(), 2, "bob dials again");
    let waited = net.tcp_dials[1][1] - cut;
    assert!((REDIAL_FIRST_MS..REDIAL_FIRST_MS + 20).contains(&waited), "dialled {waited} ms after the loss");
    assert_eq!(net.tcp_links.len(), 2);
    net.clients[1].send_media(id, b"again", net.now);
    net.step();
    assert_eq!(net.media[0].last().map(Vec::as_slice), Some(&b"again"[..]), "media back over the new stream");
    assert!(net.tcp_dials[0].is_empty(), "alice has no passive candidate of bob's to dial");
    // Alice stops listening: each failed dial doubles the wait, and after
    // REDIAL_ATTEMPTS failures in a row bob stops. (UDP gets through now, so the
    // call lives on without TCP.)
    net.direct_cut = false;
    net.tcp_listen[0] = false;
    cut_tcp_streams(&mut net);
    net.run(REDIAL_MAX_MS * (REDIAL_ATTEMPTS as u64 + 2));
    let dials = &net.tcp_dials[1][2..];
    assert_eq!(dials.len(), REDIAL_ATTEMPTS as usize, "{dials:?}");
    let gaps: Vec<u64> = dials.windows(2).map(|w| w[1] - w[0]).collect();
    let want: Vec<u64> = (1..REDIAL_ATTEMPTS).map(|k| (REDIAL_FIRST_MS << k).min(REDIAL_MAX_MS)).collect();
    for (g, w) in gaps.iter().zip(&want) {
        assert!((*w..*w + 20).contains(g), "gaps {gaps:?}, want {want:?}");
    }
    assert!(
        !has(&net.events[1], |e| matches!(e, ClientEvent::Ended { .. } | ClientEvent::Failed { .. })),
        "the call ended: {:?}",
        net.events[1]
    );
    // A call that ends stops dialling.
    net.clients[1].hangup(id, CallEnd::LocalHangup, net.now);
    net.run(50);
    let n = net.tcp_dials[1].len();
    net.tcp_listen[0] = true;
    net.run(REDIAL_MAX_MS + 100);
    assert_eq!(net.tcp_dials[1].len(), n);
}

#[test]
fn behind_nats_both_sides_dial_each_others_simultaneous_open_candidate() {
    let mut net = Net::new(&["alice", "bob"], true);
    // Each behind a NAT whose public IP the supernode sees; both listen for TCP media.
    net.observed_ip = vec!["198.51.100.1".parse().unwrap(), "198.51.100.2".parse().unwrap()];
    for i in 0..2 {
        net.clients[i].set_media_addr(addr(5000 + i as u16));
        net.clients[i].set_tcp_media_port(Some(7000 + i as u16));
    }
    // UDP gets through (the call lives on it); TCP is dialled as a standby pair.
    net.run(100);
    let so = |c: &Client| -> Vec<(CandidateKind, SocketAddr)> {
        c.local_candidates.iter().filter(|c| c.transport == Transport::TcpSo).map(|c| (c.kind, c.addr)).collect()
    };
    assert_eq!(
        so(&net.clients[1]),
        vec![
            (CandidateKind::Host, tcp_addr(1)),
            (CandidateKind::ServerReflexive, "198.51.100.2:7001".parse().unwrap())
        ],
        "S-O candidates at the listener and at the public IP with the listener's port"
    );
    net.tcp_refuse = true;
    let id = net.clients[0].place_call("bob", net.now).unwrap();
    net.run(300);
    // Each dials the other's public S-O address from its listener (the host ones
    // are the passive candidates' addresses, dialled as such).
    assert_eq!(net.tcp_so_dials[0].iter().map(|d| d.1).collect::<Vec<_>>(), vec!["198.51.100.2:7001".parse().unwrap()]);
    assert_eq!(net.tcp_so_dials[1].iter().map(|d| d.1).collect::<Vec<_>>(), vec!["198.51.100.1:7000".parse().unwrap()]);
    // Refused (the peer's router reset our SYN): not again before SO_REFUSED_WAIT_MS.
    let first = net.tcp_so_dials[0][0].0;
    net.run(SO_REFUSED_WAIT_MS + 200);
    let again: Vec<u64> = net.tcp_so_dials[0].iter().map(|d| d.0 - first).collect();
    assert_eq!(again.len(), 2, "{again:?}");
    assert!((SO_REFUSED_WAIT_MS..SO_REFUSED_WAIT_MS + 20).contains(&again[1]), "{again:?}");
    net.clients[0].hangup(id, CallEnd::LocalHangup, net.now);
}

#[test]
fn direct_udp_is_preferred_to_direct_tcp() {
    let mut net = tcp_net(false);
    net.clients[1].place_call("alice", net.now).unwrap();
    net.run(2_000);
    for i in 0..2 {
        assert!(has(&net.events[i], |e| matches!(e, ClientEvent::Connected { path: PathKind::DirectUdp, .. })));
        assert!(!has(&net.events[i], |e| matches!(e, ClientEvent::PathChanged { .. })), "{:?}", net.events[i]);
    }
    assert_eq!(net.tcp_links.len(), 2, "the TCP stream stays up as a standby pair");
}

#[test]
fn inbound_tcp_streams_must_authenticate_in_time_and_are_bounded() {
    let mut net = tcp_net(false);
    let from = addr(8001);
    assert_eq!(net.clients[0].on_tcp_accepted(from, net.now), None, "no call: nothing to accept for");
    let id = net.clients[1].place_call("alice", net.now).unwrap();
    net.run(300);
    let a = &mut net.clients[0];
    while a.poll_output().is_some() {}
    let streams: Vec<u64> = (0..MAX_PENDING_INBOUND).map(|_| a.on_tcp_accepted(from, net.now).unwrap()).collect();
    assert_eq!(a.on_tcp_accepted(from, net.now), None, "pending streams are bounded");
    let closes = |a: &mut Client| {
        std::iter::from_fn(|| a.poll_output())
            .filter_map(|o| match o {
                ClientOutput::TcpClose(s) => Some(s),
                _ => None,
            })
            .collect::<Vec<u64>>()
    };
    // Garbage, a frame for no call, a forged frame with the call's tag: closed.
    assert!(a.on_tcp_frame(streams[0], b"GET / HTTP/1.1", net.now).is_none());
    let mut forged = vec![crate::media_path::KIND_CHECK];
    forged.extend_from_slice(&crate::media_path::call_tag(&id));
    forged.extend_from_slice(&[0u8; 40]);
    assert!(a.on_tcp_frame(streams[1], &forged, net.now).is_none());
    forged[1] ^= 0xff;
    assert!(a.on_tcp_frame(streams[2], &forged, net.now).is_none());
    assert_eq!(closes(a), vec![streams[0], streams[1], streams[2]]);
    // The silent ones are closed when their time is up; a fresh slot opens.
    a.handle_timeout(net.now + PENDING_TIMEOUT_MS - 10);
    assert!(closes(a).is_empty());
    a.handle_timeout(net.now + PENDING_TIMEOUT_MS);
    let mut late = closes(a);
    late.sort_unstable();
    assert_eq!(late, streams[3..].to_vec());
    assert!(a.on_tcp_accepted(from, net.now + PENDING_TIMEOUT_MS).is_some());
}

#[test]
fn an_invite_from_a_small_order_caller_key_is_dropped() {
    use supervox_proto::{CallId, CallSignal, Presence, SignalEnvelope, UserId};
    let mut net = Net::new(&["bob"], true);
    net.run(100);
    let conn = net.conns[0].unwrap();
    let bob = net.clients[0].identity().user_id();
    let sn = addr(SN);
    let exp = net.now + 60_000;
    // The identity point as the caller's key: with it, R = [s]B and s
    // "verify" over any payload (lax `verify`); `verify_strict` and the key
    // check refuse it. [s]B for s = a genuine key's scalar is that key.
    let k = ed25519_dalek::SigningKey::from_bytes(&[5; 32]);
    let mut sig = [0u8; 64];
    sig[..32].copy_from_slice(&k.verifying_key().to_bytes());
    sig[32..].copy_from_slice(&k.to_scalar().to_bytes());
    let mut weak = [0u8; 32];
    weak[0] = 1;
    let forged = Presence {
        user_id: UserId(weak),
        name: "alice".into(),
        supernode: sn,
        seq: 1,
        expires_ms: exp,
        signature: ed25519_dalek::Signature::from_bytes(&sig),
    };
    let genuine = Identity::from_seed([8; 32]);
    let honest = Presence::sign(genuine.signing_key(), "carol", sn, 1, exp).unwrap();
    let now = net.now;
    let invite = |from: UserId, p: Presence, n: u8, msg1: Vec<u8>| {
        Message::Signal(SignalEnvelope {
            call_id: CallId([n; 16]),
            from,
            to: bob,
            to_supernode: sn,
            body: CallSignal::Invite { from_name: p.name.clone(), caller_presence: p, sent_ms: now, handshake: msg1 },
        })
    };
    let binding =
        crate::call::Binding { call_id: CallId([2; 16]), caller: genuine.user_id(), callee: bob, sent_ms: now };
    let offer = supervox_proto::call::CallOffer { candidates: vec![], nat: None };
    let (_hs, msg1) = crate::call::start_handshake(&genuine, &binding, &offer).unwrap();
    net.clients[0].on_message(conn, invite(UserId(weak), forged, 1, vec![9; 96]), net.now);
    net.step();
    assert!(!has(&net.events[0], |e| matches!(e, ClientEvent::Incoming { .. })), "{:?}", net.events[0]);
    // The same invite from a genuine key rings (the control).
    net.clients[0].on_message(conn, invite(genuine.user_id(), honest, 2, msg1), net.now);
    net.step();
    assert!(has(&net.events[0], |e| matches!(e, ClientEvent::Incoming { from, .. } if from == "carol")));
}

#[test]
fn an_honest_call_is_directory_verified_at_both_ends() {
    let mut net = Net::new(&["alice", "bob"], true);
    net.run(100);
    let (alice, bob) = (net.clients[0].identity().user_id(), net.clients[1].identity().user_id());
    let id = net.clients[0].place_call("bob", net.now).unwrap();
    net.run(200);
    assert!(has(&net.events[1], |e| matches!(e,
        ClientEvent::Incoming { from, user_id, verified: Verified::Directory, .. } if from == "alice" && *user_id == alice)));
    assert!(has(&net.events[1], |e| matches!(e,
        ClientEvent::Connected { peer, user_id, verified: Verified::Directory, .. } if peer == "alice" && *user_id == alice)));
    assert!(has(&net.events[0], |e| matches!(e,
        ClientEvent::Connected { peer, user_id, verified: Verified::Directory, .. } if peer == "bob" && *user_id == bob)));
    assert_eq!(net.clients[1].call_peer(&id), Some((alice, Some(Verified::Directory))));
}

#[test]
fn a_caller_spoofing_a_claimed_name_is_refused_and_never_rings() {
    // alice holds the claim for "alice"; mallory (a fresh key, signed in as
    // "mallory") signs a presence for "alice" and rings bob, who auto-answers.
    let mut net = Net::new(&["alice", "bob", "mallory"], true);
    net.run(100);
    let bob = net.clients[1].identity().user_id();
    let mallory = Identity::from_seed([3; 32]);
    assert_eq!(mallory.user_id(), net.clients[2].identity().user_id());
    let presence = Presence::sign(mallory.signing_key(), "alice", addr(SN), 1, net.now + 60_000).unwrap();
    let call_id = CallId([7; 16]);
    let binding = crate::call::Binding { call_id, caller: mallory.user_id(), callee: bob, sent_ms: net.now };
    let offer = supervox_proto::call::CallOffer { candidates: vec![], nat: None };
    let (hs, msg1) = crate::call::start_handshake(&mallory, &binding, &offer).unwrap();
    let env = SignalEnvelope {
        call_id,
        from: mallory.user_id(),
        to: bob,
        to_supernode: addr(SN),
        body: CallSignal::Invite {
            from_name: "alice".into(),
            caller_presence: presence,
            sent_ms: net.now,
            handshake: msg1,
        },
    };
    net.sn.on_message(net.conns[2].unwrap(), Message::Signal(env), net.now);
    net.run(crate::call::VERIFY_TIMEOUT_MS + 1_000);
    // bob never rang, answered or connected; the attempt is reported as what it is.
    assert!(
        !has(&net.events[1], |e| matches!(e, ClientEvent::Incoming { .. } | ClientEvent::Connected { .. })),
        "{:?}",
        net.events[1]
    );
    assert!(has(&net.events[1], |e| matches!(e,
        ClientEvent::Failed { call_id: c, reason: CallFailure::CallerNameMismatch(n) } if *c == call_id && n == "alice")));
    assert!(net.clients[1].active_call().is_none());
    // The caller got a typed refusal, and no Ringing or Accept.
    let to_mallory: Vec<_> = net.signals[1].iter().filter(|e| e.to == mallory.user_id()).map(|e| &e.body).collect();
    let [CallSignal::Respond { handshake, first }] = to_mallory[..] else { panic!("{to_mallory:?}") };
    let keys = crate::call::finish_handshake(hs, handshake).unwrap();
    assert_eq!(
        keys.open(first),
        Some(supervox_proto::call::CallMessage::Reject { reason: "caller not verified".into() })
    );
    assert_eq!(Rejection::from_wire("caller not verified"), Rejection::CallerNotVerified);
    // The real alice saw nothing of it.
    assert!(net.events[0].iter().all(|e| matches!(e, ClientEvent::SignedIn { .. })), "{:?}", net.events[0]);
}

#[test]
fn a_caller_the_directory_does_not_confirm_rings_unverified_and_is_not_auto_answered() {
    let mut net = Net::new(&["alice", "bob"], true);
    net.lost_lookups = Some(1);
    net.run(100);
    let alice = net.clients[0].identity().user_id();
    let id = net.clients[0].place_call("bob", net.now).unwrap();
    net.run(crate::call::VERIFY_TIMEOUT_MS - 100);
    // Still verifying: nothing shown, nothing answered, no Ringing sent.
    assert!(!has(&net.events[1], |e| matches!(e, ClientEvent::Incoming { .. })));
    assert_eq!(net.clients[1].call_info(&id).map(|i| i.1), Some("verifying"));
    assert!(!has(&net.events[0], |e| matches!(e, ClientEvent::Ringing { .. })));
    net.clients[1].answer(id, net.now);
    net.run(50);
    assert_eq!(net.clients[1].call_info(&id).map(|i| i.1), Some("verifying"), "answered while verifying");
    net.run(200);
    assert!(has(&net.events[1], |e| matches!(e,
        ClientEvent::Incoming { from, user_id, verified: Verified::Unverified, .. } if from == "alice" && *user_id == alice)));
    assert!(has(&net.events[0], |e| matches!(e, ClientEvent::Ringing { .. })));
    // --auto-answer does not pick up a caller nobody vouched for; the user may.
    assert_eq!(net.clients[1].call_info(&id).map(|i| i.1), Some("incoming"));
    assert_eq!(Verified::Unverified.label("alice"), "\"alice\" (unverified)");
    net.clients[1].answer(id, net.now);
    net.run(200);
    assert!(has(&net.events[1], |e| matches!(e,
        ClientEvent::Connected { verified: Verified::Unverified, user_id, .. } if *user_id == alice)));
    assert!(has(&net.events[0], |e| matches!(e, ClientEvent::Connected { verified: Verified::Directory, .. })));
}

#[test]
fn a_replayed_or_stale_invite_never_rings() {
    let mut net = Net::new(&["alice", "bob"], true);
    net.run(100);
    let id = net.clients[0].place_call("bob", net.now).unwrap();
    net.run(300);
    assert!(net.clients[1].is_connected(&id));
    net.clients[0].hangup(id, CallEnd::LocalHangup, net.now);
    net.run(50);
    let invite = net.signals[0].iter().find(|e| matches!(e.body, CallSignal::Invite { .. })).unwrap().clone();
    let incoming = |net: &Net| net.events[1].iter().filter(|e| matches!(e, ClientEvent::Incoming { .. })).count();
    assert_eq!(incoming(&net), 1);
    // The captured invite, replayed 5 s later through bob's supernode.
    net.run(5_000);
    net.sn.on_message(net.conns[0].unwrap(), Message::Signal(invite.clone()), net.now);
    net.run(crate::call::VERIFY_TIMEOUT_MS + 500);
    assert_eq!(incoming(&net), 1, "a replay rang: {:?}", net.events[1]);
    assert!(net.clients[1].active_call().is_none());
    // Given a newer send time, message 1 no longer decrypts (the time is in the prologue).
    let mut retimed = invite.clone();
    if let CallSignal::Invite { sent_ms, .. } = &mut retimed.body {
        *sent_ms = net.now;
    }
    retimed.call_id = CallId([0x42; 16]);
    net.sn.on_message(net.conns[0].unwrap(), Message::Signal(retimed), net.now);
    net.run(crate::call::VERIFY_TIMEOUT_MS + 500);
    assert_eq!(incoming(&net), 1);
    // An authentic invite whose time is 31 s off is refused too.
    let (alice, bob) = (Identity::from_seed([1; 32]), net.clients[1].identity().user_id());
    let sent_ms = net.now - crate::call::MAX_INVITE_AGE_MS - 1_000;
    let binding = crate::call::Binding { call_id: CallId([0x43; 16]), caller: alice.user_id(), callee: bob, sent_ms };
    let offer = supervox_proto::call::CallOffer { candidates: vec![], nat: None };
    let (_hs, msg1) = crate::call::start_handshake(&alice, &binding, &offer).unwrap();
    let CallSignal::Invite { from_name, caller_presence, .. } = invite.body.clone() else { unreachable!() };
    let old = SignalEnvelope {
        call_id: binding.call_id,
        body: CallSignal::Invite { from_name, caller_presence, sent_ms, handshake: msg1 },
        ..invite
    };
    net.sn.on_message(net.conns[0].unwrap(), Message::Signal(old), net.now);
    net.run(crate::call::VERIFY_TIMEOUT_MS + 500);
    assert_eq!(incoming(&net), 1);
    // A fresh call still rings.
    net.clients[0].place_call("bob", net.now).unwrap();
    net.run(300);
    assert_eq!(incoming(&net), 2);
}

#[test]
fn a_stranger_learns_no_address_before_the_answer() {
    for relaxed in [false, true] {
        let mut net = Net::new_with(&["alice", "bob"], false, |c| c.relaxed_privacy = relaxed);
        net.run(100);
        let id = net.clients[0].place_call("bob", net.now).unwrap();
        net.run(200);
        assert_eq!(net.clients[1].call_info(&id).map(|i| i.1), Some("incoming"));
        // What bob has of alice's addresses while it rings, and alice of bob's.
        let offered = net.clients[1].calls[&id].peer_candidates.clone();
        assert_eq!(offered.is_empty(), !relaxed, "relaxed={relaxed}: {offered:?}");
        assert!(net.clients[0].calls[&id].peer_candidates.is_empty());
        // Nothing went to a peer address before the answer either.
        assert!(net.media[0].is_empty() && net.media[1].is_empty());
        net.clients[1].answer(id, net.now);
        net.run(300);
        // No relay here: the answer reveals both sides, and the call goes direct.
        assert!(has(&net.events[0], |e| matches!(e, ClientEvent::Connected { path: PathKind::DirectUdp, .. })));
        assert!(net.clients[1].calls[&id].peer_candidates.iter().any(|c| c.addr == addr(5000)));
        assert!(net.clients[0].calls[&id].peer_candidates.iter().any(|c| c.addr == addr(5001)));
    }
}

#[test]
fn mail_left_for_a_user_arrives_at_its_next_fetch_and_goes_once_acknowledged() {
    let mut net = Net::new(&["alice", "bob"], false);
    net.run(100);
    let bob = net.clients[1].identity().user_id();
    let id = net.clients[0].leave_mail(bob, b"sealed for bob".to_vec(), net.now).unwrap();
    net.run(100);
    assert!(has(&net.events[0], |e| matches!(e, ClientEvent::MailStored { id: i, result: Ok(()) } if *i == id)));
    assert!(net.clients[0].leave_mail(bob, vec![0; supervox_proto::mail::MAX_MAIL_BODY + 1], net.now).is_none());
    let mail = |net: &Net| {
        net.events[1]
            .iter()
            .filter_map(|e| match e {
                ClientEvent::Mail { items } => Some(items.iter().map(|i| (i.id, i.body.clone())).collect::<Vec<_>>()),
                _ => None,
            })
            .flatten()
            .collect::<Vec<_>>()
    };
    assert!(mail(&net).is_empty(), "bob fetched at sign-in, before it was left");
    net.run(MAIL_FETCH_EVERY_MS);
    assert_eq!(mail(&net), vec![(id, b"sealed for bob".to_vec())]);
    // Not acknowledged: it comes again. Acknowledged: it is gone.
    net.run(MAIL_FETCH_EVERY_MS);
    assert_eq!(mail(&net).len(), 2);
    net.clients[1].mail_saved(&[id], net.now);
    net.run(100);
    assert!(net.sn.mail().is_empty());
    net.run(MAIL_FETCH_EVERY_MS);
    assert_eq!(mail(&net).len(), 2);
}
#[test]
fn a_fetch_that_ends_with_more_after_every_page_was_saved_fetches_the_next_page_at_once() {
    // With holders on other supernodes, pages come as each holder answers and
    // the fetch's `done` (with `more`) after them; a driver that saves each
    // page as it comes (the node does) has saved everything by then, so the
    // client itself must fetch the next page, not wait 5 min for the next
    // periodic fetch.
    let mut net = Net::new(&["alice", "bob"], false);
    net.run(100);
    let bob = net.clients[1].identity().user_id();
    for n in 0..20u8 {
        net.clients[0].leave_mail(bob, vec![n; 1000], net.now).unwrap();
    }
    net.run(100);
    let held = net.sn.mail().items_of(&bob);
    assert_eq!(held.len(), 20);
    let conn = net.clients[1].supernode_conn().unwrap();
    let mail_events = |net: &Net| net.events[1].iter().filter(|e| matches!(e, ClientEvent::Mail { .. })).count();
    // The first page, as a remote holder's answer passed on: saved at once.
    let page: Vec<_> = held[..5].to_vec();
    let ids: Vec<_> = page.iter().map(|i| i.id).collect();
    net.clients[1].on_message(conn, Message::Mail { items: page, done: false, more: false }, net.now);
    net.run(1);
    assert_eq!(mail_events(&net), 1);
    net.clients[1].mail_saved(&ids, net.now);
    net.run(50);
    assert_eq!(net.sn.mail().items_of(&bob).len(), 15, "the saved page is acknowledged");
    // Then the fetch's end: a holder has more.
    net.clients[1].on_message(conn, Message::Mail { items: Vec::new(), done: true, more: true }, net.now);
    net.run(200);
    assert_eq!(mail_events(&net), 2, "the next page was fetched at once");
}

/// Pinned keys and cross-checked lookups.
mod trust;

/// Move what a chat wants sent through client `i`: online as a peer
/// message to `to` at our supernode, or into the mailbox.
fn pump_chat(net: &mut Net, i: usize, chat: &mut crate::social::chat::Chat) -> Vec<crate::social::chat::ChatOutput> {
    use crate::social::chat::ChatOutput;
    let mut rest = Vec::new();
    while let Some(o) = chat.poll_output() {
        match o {
            ChatOutput::Deliver { to, wire_id, sealed } => {
                assert!(net.clients[i].send_peer(wire_id, to, addr(SN), sealed))
            }
            ChatOutput::Mail { to, wire_id, sealed } => {
                assert!(net.clients[i].leave_mail_as(wire_id, to, sealed, net.now).is_some())
            }
            o => rest.push(o),
        }
    }
    rest
}

/// Feed client `i`'s social events since `from` into its chat.
fn feed_chat(net: &mut Net, i: usize, from: usize, chat: &mut crate::social::chat::Chat) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(i as u64);
    let mut saved = Vec::new();
    for e in net.events[i][from..].iter().cloned() {
        match e {
            ClientEvent::Peer { id, from, body } => chat.receive(from, &id.0, &body, &mut rng).unwrap(),
            ClientEvent::PeerUndeliverable { id, .. } => chat.undeliverable(&id.0),
            ClientEvent::MailStored { id, result: Ok(()) } => chat.stored(&id),
            ClientEvent::Mail { items } => {
                for item in items {
                    chat.receive(item.from, &item.id, &item.body, &mut rng).unwrap();
                    saved.push(item.id);
                }
            }
            _ => {}
        }
    }
    net.clients[i].mail_saved(&saved, net.now);
}

#[test]
fn chat_goes_online_as_sealed_peer_messages_and_to_the_mailbox_when_undeliverable() {
    use crate::social::chat::{Chat, ChatOutput, Status};
    use rand::SeedableRng;
    let mut net = Net::new(&["alice", "bob"], true);
    net.run(100);
    let (ua, ub) = (net.clients[0].identity().user_id(), net.clients[1].identity().user_id());
    let mut alice = Chat::new(Identity::from_seed([1; 32]), "alice", true);
    let mut bob = Chat::new(Identity::from_seed([2; 32]), "bob", true);
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    // Online: straight through the supernode, which sees only ciphertext.
    let id = alice.send(ub, "hello bob", net.now, &mut rng).unwrap();
    pump_chat(&mut net, 0, &mut alice);
    let seen = net.signals[0].len();
    let (ea, eb) = (net.events[0].len(), net.events[1].len());
    net.run(50);
    let sent = &net.signals[0][seen..];
    assert_eq!(sent.len(), 1);
    assert!(matches!(&sent[0].body, CallSignal::Peer(b) if !b.windows(5).any(|w| w == b"hello")));
    feed_chat(&mut net, 1, eb, &mut bob);
    let got = pump_chat(&mut net, 1, &mut bob);
    assert!(matches!(&got[..], [ChatOutput::Received(m)] if m.text == "hello bob" && m.from == ua));
    net.run(50);
    feed_chat(&mut net, 0, ea, &mut alice);
    assert_eq!(alice.message(&id).unwrap().status, Status::Delivered);

    // Bob's link drops: the peer message is answered undeliverable and goes to his mailbox.
    net.drop_link(1);
    let id2 = alice.send(ub, "while you were out", net.now, &mut rng).unwrap();
    pump_chat(&mut net, 0, &mut alice);
    let ea = net.events[0].len();
    net.run(50);
    feed_chat(&mut net, 0, ea, &mut alice);
    assert!(has(&net.events[0][ea..], |e| matches!(e, ClientEvent::PeerUndeliverable { .. })));
    pump_chat(&mut net, 0, &mut alice);
    let ea = net.events[0].len();
    net.run(50);
    feed_chat(&mut net, 0, ea, &mut alice);
    assert_eq!(alice.message(&id2).unwrap().status, Status::Stored);
    // Bob's client reconnected by itself before the item was put; his next
    // sign-in fetches it (a new session: drop the link once more).
    let eb = net.events[1].len();
    net.drop_link(1);
    net.run(1_000);
    assert!(net.clients[1].supernode().is_some());
    feed_chat(&mut net, 1, eb, &mut bob);
    let got = pump_chat(&mut net, 1, &mut bob);
    assert!(
        matches!(&got[..], [ChatOutput::Received(m)] if m.text == "while you were out"),
        "{got:?} {:?}",
        &net.events[1][eb..]
    );
    let ea = net.events[0].len();
    net.run(50);
    feed_chat(&mut net, 0, ea, &mut alice);
    assert_eq!(alice.message(&id2).unwrap().status, Status::Delivered);
    let texts: Vec<_> = bob.conversation(&ua).iter().map(|m| m.text.clone()).collect();
    assert_eq!(texts, ["hello bob", "while you were out"]);
}

#[test]
fn peer_lookups_verify_the_answer_and_say_online_offline_or_unknown() {
    let mut net = Net::new(&["alice", "bob"], true);
    net.run(100);
    let ub = net.clients[1].identity().user_id();
    let found = |net: &Net, req: u64| {
        net.events[0].iter().find_map(|e| match e {
            ClientEvent::PeerFound { req_id, result, .. } if *req_id == req => Some(result.clone()),
            _ => None,
        })
    };
    let r = net.clients[0].lookup_peer("bob").unwrap();
    net.run(50);
    assert_eq!(found(&net, r), Some(Ok(PeerAt { user_id: ub, supernode: Some(addr(SN)) })));
    let r = net.clients[0].lookup_peer("nobody").unwrap();
    net.run(50);
    assert_eq!(found(&net, r), Some(Err(PeerLookupError::Unknown)));
    // No call was started by either lookup.
    assert!(net.clients[0].active_call().is_none());
}

/// A link that lasts a day signs a fresh claim at its next presence refresh
/// (a claim lives a year from its owner's last signature), on the same link.
#[test]
fn a_long_lived_link_renews_its_claim() {
    let mut net = Net::new(&["alice"], false);
    net.run(100);
    let first = net.sn.claims().into_iter().find(|c| c.name == "alice").unwrap().created_ms;
    // A day of refreshes, without walking the clock through all of them.
    for _ in 0..24 {
        net.now += CLAIM_RENEW_MS / 24 - PRESENCE_REFRESH_MS;
        net.run(PRESENCE_REFRESH_MS);
    }
    net.run(PRESENCE_REFRESH_MS + 1_000);
    let c = net.sn.claims().into_iter().find(|c| c.name == "alice").unwrap();
    assert!(c.created_ms >= first + CLAIM_RENEW_MS, "not renewed: {} then {}", first, c.created_ms);
    let sign_ins = net.events[0].iter().filter(|e| matches!(e, ClientEvent::SignedIn { .. })).count();
    assert_eq!(sign_ins, 1, "renewed on the same link, not by signing in again");
    assert!(!has(&net.events[0], |e| matches!(e, ClientEvent::NameRefused { .. })));
}

/// A claim the holders could not decide (no quorum while a crash's churn
/// settles) is asked again after a backoff, on the same link, and the node
/// keeps its name; a final refusal (taken) is reported.
#[test]
fn an_undecided_claim_is_asked_again_and_only_a_final_refusal_is_reported() {
    let mut net = Net::new(&["alice"], false);
    net.run(100);
    let conn = net.conns[0].unwrap();
    let before = net.sn.stats().claims_accepted;
    let (t0, now) = (net.now, net.now);
    let undecided = Message::ClaimResult { name: "alice".into(), result: Err(Refusal::NoQuorum) };
    net.clients[0].on_message(conn, undecided, now);
    let due = net.clients[0].poll_timeout().unwrap();
    assert!((t0 + CLAIM_RETRY_MIN_MS / 2..=t0 + CLAIM_RETRY_MIN_MS * 2).contains(&due), "retry at +{}", due - t0);
    net.run(CLAIM_RETRY_MIN_MS * 2 + 100);
    assert_eq!(net.sn.stats().claims_accepted, before + 1, "asked again");
    assert!(!has(&net.events[0], |e| matches!(e, ClientEvent::NameRefused { .. })));
    let sign_ins = net.events[0].iter().filter(|e| matches!(e, ClientEvent::SignedIn { .. })).count();
    assert_eq!(sign_ins, 1);

    let now = net.now;
    let taken = Message::ClaimResult { name: "alice".into(), result: Err(Refusal::Taken) };
    net.clients[0].on_message(conn, taken, now);
    net.run(100);
    assert!(has(&net.events[0], |e| matches!(
        e,
        ClientEvent::NameRefused { reason: SignInRefusal::Supernode(Refusal::Taken) }
    )));
}
