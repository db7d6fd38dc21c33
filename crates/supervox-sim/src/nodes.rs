//! The simulated processes: each supernode and client slot holds the real
//! state machine from `supervox-core`, and this module plays its driver —
//! feeding it connection events, messages and ticks, and carrying out what
//! it asks, the way `supervox::sn` and `supervox::node` do with sockets.

use crate::engine::{Ctx, Ev, Sim};
use crate::net::{self, Location, Node};
use std::net::SocketAddr;
use supervox_core::client::{Client, ClientConfig, ClientEvent, ClientOutput};
use supervox_core::host_cache::HostCache;
use supervox_core::supernode::{SnOutput, SnStats, Supernode, SupernodeConfig};
use supervox_core::{ConnId, Identity};
use supervox_proto::{Message, Role, UserId};

/// Member proofs in the simulator: 16 hashes each on average, so 10 000
/// supernodes start in milliseconds (a real network asks
/// `admission::DEFAULT_DIFFICULTY`; the work does not change the protocol).
pub(crate) const SIM_DIFFICULTY: u8 = 4;

/// Seed-derivation domains.
pub(crate) const KIND_SN_ID: u64 = 1;
pub(crate) const KIND_SN_RNG: u64 = 2;
pub(crate) const KIND_CLIENT_ID: u64 = 3;
pub(crate) const KIND_CLIENT_RNG: u64 = 4;

/// Lookups the simulator injects use request ids from here up, so they
/// never collide with the client's own (which start at 1).
pub(crate) const LOOKUP_REQ_BASE: u64 = 1 << 62;

/// A supernode slot: one process lifetime (a replacement gets a new slot,
/// a new identity and a new address).
pub(crate) struct SnSlot {
    pub sn: Option<Supernode>,
    pub loc: Location,
    /// Connections this process has been part of (pruned as they close).
    links: Vec<ConnId>,
    prune_at: usize,
}

impl SnSlot {
    pub fn new(loc: Location) -> Self {
        Self { sn: None, loc, links: Vec::new(), prune_at: 64 }
    }

    pub fn attach(&mut self, conn: ConnId) {
        self.links.push(conn);
    }
}

/// A client slot: one user (identity and name) whose process may stop and
/// start again.
pub(crate) struct ClientSlot {
    pub client: Option<Client>,
    pub identity: Identity,
    pub name: String,
    /// The host cache as the daemon would have persisted it.
    pub host_cache: HostCache,
    /// Process generation (incremented per start).
    pub gen: u32,
    pub loc: Location,
    /// Connections of the current process.
    pub links: Vec<ConnId>,
    /// The supernode slot it is callable through.
    pub sn: Option<u32>,
    /// A Connect is outstanding.
    pub dialing: bool,
    /// The tick that is scheduled (later ones supersede it).
    pub tick_at: u64,
    /// Its claim was accepted at least once.
    pub claimed: bool,
    pub user: UserId,
}

impl Sim {
    fn sn_slot(&mut self, i: u32) -> &mut SnSlot {
        &mut self.sns[i as usize]
    }

    /// Start supernode slot `i` with `seeds`.
    pub(crate) fn start_supernode(&mut self, i: u32, seeds: Vec<SocketAddr>) {
        let cfg = SupernodeConfig {
            max_clients: self.cfg.max_clients,
            agent: "supervox-sim".into(),
            replicas: self.cfg.replicas,
            member_difficulty: SIM_DIFFICULTY,
            // Every simulated supernode has an address in one /16: no
            // prefix limit (it is tested in supervox-core).
            max_members_per_prefix: usize::MAX,
            ..SupernodeConfig::new(net::sn_addr(i), seeds)
        };
        let id = Identity::from_seed(net::seed32(self.cfg.seed, KIND_SN_ID, u64::from(i)));
        let rng_seed = net::derive(self.cfg.seed, KIND_SN_RNG, u64::from(i));
        self.sn_slot(i).sn = Some(Supernode::new(&id, cfg, Vec::new(), rng_seed, self.now));
        self.metrics.sn_count_changed(self.now, self.live_sns.len());
        self.live_sns.insert(i);
        let phase = rand::Rng::gen_range(&mut self.rng, 0..self.cfg.sn_tick_ms);
        self.after(phase, Ev::SnTick(i));
    }

    pub(crate) fn sn_tick(&mut self, i: u32) {
        let now = self.now;
        let Some(sn) = self.sns[i as usize].sn.as_mut() else {
            return;
        };
        sn.handle_timeout(now);
        self.drain_sn(i, None);
        self.after(self.cfg.sn_tick_ms, Ev::SnTick(i));
    }

    /// Supernode `i` dies. Its clients stop being callable at once; its
    /// peers learn as the crash mode says.
    pub(crate) fn kill_supernode(&mut self, i: u32) {
        let Some(sn) = self.sns[i as usize].sn.take() else {
            return;
        };
        self.absorb_stats(sn.stats());
        self.metrics.sn_count_changed(self.now, self.live_sns.len());
        self.live_sns.remove(i);
        let silent = self.cfg.crash_mode == crate::config::CrashMode::Silent;
        let links = std::mem::take(&mut self.sns[i as usize].links);
        for conn in links {
            self.close_end(conn, Node::Sn(i), silent);
            // Its clients are not callable any more, whenever they notice.
            let l = &self.links[net::conn_index(conn)];
            for end in l.ends {
                if let Node::Client(c, _) = end {
                    if self.alive(end) && self.clients[c as usize].sn == Some(i) {
                        self.set_callable(c, None);
                    }
                }
            }
        }
    }

    fn absorb_stats(&mut self, st: SnStats) {
        self.metrics.redirects += st.redirects;
        self.metrics.violations += st.violations;
    }

    /// Operator counters summed over the supernodes still running.
    pub(crate) fn collect_live_stats(&mut self) {
        let stats: Vec<SnStats> = self.sns.iter().filter_map(|s| s.sn.as_ref().map(|s| s.stats())).collect();
        for st in stats {
            self.absorb_stats(st);
        }
    }

    /// Carry out what supernode `i` asked for. Messages it sends while
    /// handling a lookup's message belong to that lookup.
    pub(crate) fn drain_sn(&mut self, i: u32, ctx: Option<Ctx>) {
        let now = self.now;
        while let Some(out) = self.sns[i as usize].sn.as_mut().and_then(|s| s.poll_output()) {
            match out {
                SnOutput::Send(conn, msg) => self.send(conn, Node::Sn(i), msg, ctx),
                SnOutput::Close(conn, _reason) => {
                    self.close_end(conn, Node::Sn(i), false);
                    if let Some(sn) = self.sns[i as usize].sn.as_mut() {
                        sn.on_closed(conn, now);
                    }
                }
                SnOutput::Datagram { to, bytes, kind } => self.send_datagram(i, to, bytes, kind, ctx),
                // Claims and mail are not persisted (a process that dies is gone for
                // good); STUN over UDP is out of the simulator's scope.
                // Simulated clients do not volunteer (promotion and step-back are
                // tested with real processes).
                SnOutput::ClaimStored(_)
                | SnOutput::Mail(_)
                | SnOutput::StunDialBack { .. }
                | SnOutput::DialBackPartner(_)
                | SnOutput::CheckReachable { .. }
                | SnOutput::SteppedBack { .. } => {}
            }
        }
        let slot = &mut self.sns[i as usize];
        if slot.links.len() > slot.prune_at {
            let links = std::mem::take(&mut slot.links);
            let kept: Vec<ConnId> = links
                .into_iter()
                .filter(|c| {
                    let l = &self.links[net::conn_index(*c)];
                    l.side_of(Node::Sn(i)).is_some_and(|s| !l.gone[s])
                })
                .collect();
            let slot = &mut self.sns[i as usize];
            slot.prune_at = (2 * kept.len()).max(64);
            slot.links = kept;
        }
    }

    /// Start (or restart) client slot `c`.
    pub(crate) fn start_client(&mut self, c: u32) {
        let slot = &mut self.clients[c as usize];
        if slot.client.is_some() {
            return;
        }
        slot.gen += 1;
        let cfg = ClientConfig { name: slot.name.clone(), agent: "supervox-sim".into(), ..Default::default() };
        let rng_seed = net::derive(self.cfg.seed, KIND_CLIENT_RNG, (u64::from(c) << 24) | u64::from(slot.gen));
        slot.client = Some(Client::new(slot.identity.clone(), cfg, slot.host_cache.clone(), rng_seed));
        slot.links.clear();
        slot.dialing = false;
        slot.tick_at = u64::MAX;
        self.mail_client_started(c);
        self.client_tick_at(c, self.now);
    }

    /// Client `c`'s process stops (exit or crash: the same to its peers).
    pub(crate) fn kill_client(&mut self, c: u32) {
        let slot = &mut self.clients[c as usize];
        let Some(client) = slot.client.take() else {
            return;
        };
        // What the daemon persisted at the last HostCacheChanged.
        slot.host_cache = client.host_cache().clone();
        let (gen, links) = (slot.gen, std::mem::take(&mut slot.links));
        let silent = self.cfg.crash_mode == crate::config::CrashMode::Silent;
        for conn in links {
            self.close_end(conn, Node::Client(c, gen), silent);
        }
        self.set_callable(c, None);
        self.fail_lookups_from(c);
        self.mail_client_stopped(c);
    }

    pub(crate) fn client_tick(&mut self, c: u32, gen: u32) {
        let now = self.now;
        let slot = &mut self.clients[c as usize];
        if slot.gen != gen || slot.tick_at != now {
            return;
        }
        slot.tick_at = u64::MAX;
        let Some(client) = slot.client.as_mut() else {
            return;
        };
        client.handle_timeout(now);
        self.drain_client(c);
    }

    fn client_tick_at(&mut self, c: u32, at: u64) {
        let slot = &mut self.clients[c as usize];
        if slot.tick_at != at {
            slot.tick_at = at;
            let gen = slot.gen;
            self.at(at, Ev::ClientTick(c, gen));
        }
    }

    /// Carry out what client `c` asked for, then schedule its next tick at
    /// its `poll_timeout` (presence refresh, staggered attempts and their
    /// timeouts, reconnection backoff), as the node daemon does.
    pub(crate) fn drain_client(&mut self, c: u32) {
        let now = self.now;
        let gen = self.clients[c as usize].gen;
        let me = Node::Client(c, gen);
        while let Some(out) = self.clients[c as usize].client.as_mut().and_then(|s| s.poll_output()) {
            match out {
                ClientOutput::Connect(addr) => {
                    self.clients[c as usize].dialing = true;
                    self.dial(me, addr);
                }
                ClientOutput::Send(conn, msg) => {
                    self.send(conn, me, msg, None);
                }
                ClientOutput::Close(conn, reason) => {
                    self.close_end(conn, me, false);
                    if let Some(cl) = self.clients[c as usize].client.as_mut() {
                        cl.on_closed(conn, &reason, now);
                    }
                }
                ClientOutput::Event(e) => self.client_event(c, e),
                ClientOutput::Datagram(..)
                | ClientOutput::OpenSpares(_)
                | ClientOutput::SpareDatagram(..)
                | ClientOutput::CloseSpares { .. }
                | ClientOutput::HostCacheChanged
                | ClientOutput::Resolve { .. }
                | ClientOutput::Trust(_)
                | ClientOutput::RelayConnect { .. }
                | ClientOutput::RelayStream(_)
                | ClientOutput::RelayDisconnect
                | ClientOutput::TcpConnect { .. }
                | ClientOutput::TcpSend(..)
                | ClientOutput::TcpClose(_) => {}
            }
        }
        let slot = &self.clients[c as usize];
        let Some(client) = slot.client.as_ref() else {
            return;
        };
        // The client's own timer contract (a deadline in the past means now).
        if let Some(t) = client.poll_timeout() {
            self.client_tick_at(c, t.max(now));
        }
    }

    fn client_event(&mut self, c: u32, e: ClientEvent) {
        match e {
            ClientEvent::SignedIn { supernode } => {
                let sn = net::sn_index(supernode).filter(|i| self.sns.get(*i as usize).is_some_and(|s| s.sn.is_some()));
                self.set_callable(c, sn);
                self.mail_signed_in(c);
            }
            ClientEvent::LostSupernode { .. } => {
                self.set_callable(c, None);
                self.fail_lookups_from(c);
                self.peer_cut_off(c);
            }
            ClientEvent::NameRefused { .. } => self.metrics.names_refused += 1,
            ClientEvent::Mail { items } => self.mail_received(c, items),
            ClientEvent::MailStored { id, result } => self.mail_stored(c, id, result),
            ClientEvent::PeerFound { req_id, result, .. } => self.peer_found(c, req_id, result),
            ClientEvent::Peer { id, .. } => self.peer_received(c, id),
            ClientEvent::PeerUndeliverable { id, .. } => self.peer_undeliverable(id),
            _ => {}
        }
    }

    /// Record whether client `c` is callable, and through which supernode.
    pub(crate) fn set_callable(&mut self, c: u32, sn: Option<u32>) {
        self.clients[c as usize].sn = sn;
        if sn.is_some() {
            self.callable.insert(c);
            self.on_callable_up();
        } else {
            self.callable.remove(c);
            self.metrics.callable_low(self.callable.len());
        }
    }

    pub(crate) fn node_dial_failed(&mut self, n: Node, addr: SocketAddr) {
        let now = self.now;
        match n {
            // Supernodes do not dial: they talk in datagrams.
            Node::Sn(_) => {}
            Node::Client(c, g) if self.alive(n) => {
                let _ = g;
                self.clients[c as usize].dialing = false;
                if let Some(cl) = self.clients[c as usize].client.as_mut() {
                    cl.on_connect_failed(addr, "connection refused", now);
                }
                self.drain_client(c);
            }
            Node::Client(..) => {}
        }
    }

    /// A connection is up at `n`: dialled by a client (`addr` is the
    /// address dialled) or accepted by a supernode (`addr` is the remote
    /// address).
    pub(crate) fn node_connected(&mut self, n: Node, conn: ConnId, addr: SocketAddr) {
        match n {
            Node::Sn(i) => {
                if let Some(sn) = self.sns[i as usize].sn.as_mut() {
                    sn.on_connected(conn, addr);
                    self.drain_sn(i, None);
                }
            }
            Node::Client(c, _) if self.alive(n) => {
                self.clients[c as usize].dialing = false;
                if let Some(cl) = self.clients[c as usize].client.as_mut() {
                    cl.on_connected(conn, addr);
                }
                self.drain_client(c);
            }
            Node::Client(..) => {}
        }
    }

    pub(crate) fn node_established(&mut self, n: Node, conn: ConnId, role: Role, identity: UserId) {
        let now = self.now;
        match n {
            Node::Sn(i) => {
                if let Some(sn) = self.sns[i as usize].sn.as_mut() {
                    sn.on_established(conn, role, identity, now);
                    let load = sn.client_count() as f64 / self.cfg.max_clients as f64;
                    self.metrics.max_load = self.metrics.max_load.max(load);
                    self.drain_sn(i, None);
                }
            }
            Node::Client(c, _) if self.alive(n) => {
                if let Some(cl) = self.clients[c as usize].client.as_mut() {
                    cl.on_established(conn, role, identity, now);
                }
                self.drain_client(c);
            }
            Node::Client(..) => {}
        }
    }

    pub(crate) fn node_message(&mut self, n: Node, conn: ConnId, msg: Message, ctx: Option<Ctx>) {
        let now = self.now;
        match n {
            Node::Sn(i) => {
                if let Some(sn) = self.sns[i as usize].sn.as_mut() {
                    sn.on_message(conn, msg, now);
                    self.drain_sn(i, ctx);
                }
            }
            Node::Client(c, _) if self.alive(n) => {
                match &msg {
                    Message::LookupResult { req_id, answer } if *req_id >= LOOKUP_REQ_BASE => {
                        return self.lookup_answered(req_id - LOOKUP_REQ_BASE, answer, ctx);
                    }
                    Message::ClaimResult { result: Ok(()), .. } => self.clients[c as usize].claimed = true,
                    _ => {}
                }
                if let Some(cl) = self.clients[c as usize].client.as_mut() {
                    cl.on_message(conn, msg, now);
                }
                self.drain_client(c);
            }
            Node::Client(..) => {}
        }
    }

    pub(crate) fn node_closed(&mut self, n: Node, conn: ConnId) {
        let now = self.now;
        match n {
            Node::Sn(i) => {
                if let Some(sn) = self.sns[i as usize].sn.as_mut() {
                    sn.on_closed(conn, now);
                    self.drain_sn(i, None);
                }
            }
            Node::Client(c, _) if self.alive(n) => {
                if let Some(cl) = self.clients[c as usize].client.as_mut() {
                    cl.on_closed(conn, "connection closed by the supernode", now);
                }
                self.drain_client(c);
            }
            Node::Client(..) => {}
        }
    }
}
