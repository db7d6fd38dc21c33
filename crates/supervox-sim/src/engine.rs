//! The event loop: a virtual clock, a priority queue of events, and the
//! virtual connections between state machines.
//!
//! A connection goes through the same steps as a TCP connection carrying the
//! Noise XX link of the daemon (one-way delay `d`, dial at `t`): the SYN
//! reaches the acceptor at `t+d` (refused there if nothing listens), the
//! dialler is connected at `t+2d`, the acceptor accepts at `t+3d`, the
//! acceptor has the dialler's Hello at `t+5d` and the dialler the acceptor's
//! at `t+6d`. Each step calls the same `on_connected` / `on_established`
//! methods the drivers call, and messages are handed to `on_message` in
//! order, one one-way delay (plus any retransmission) after they were sent.

use crate::config::{CrashMode, SimConfig, EPOCH_MS};
use crate::metrics::Metrics;
use crate::net::{conn_index, IndexSet, Latency, Node, Side, VLink};
use crate::nodes::{ClientSlot, SnSlot};
use rand::rngs::StdRng;
use rand::Rng;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap};
use std::net::SocketAddr;
use supervox_core::ConnId;
use supervox_proto::Message;

/// How long a dial to a vanished host takes to fail (the daemon's connect
/// timeout).
pub const CONNECT_TIMEOUT_MS: u64 = 2_000;

/// Which lookup a message belongs to and how many supernode-to-supernode
/// forwards led to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ctx {
    /// Lookup id.
    pub lookup: u64,
    /// Overlay hops so far.
    pub hops: u8,
}

/// A message in flight.
#[derive(Debug)]
pub struct Delivery {
    /// The connection.
    pub conn: ConnId,
    /// The end it goes to.
    pub to: Side,
    /// The message.
    pub msg: Message,
    /// Lookup it belongs to, if any.
    pub ctx: Option<Ctx>,
}

/// An overlay datagram in flight.
#[derive(Debug)]
pub struct Datagram {
    /// The supernode slot it goes to.
    pub to: u32,
    /// The sender's address.
    pub from: SocketAddr,
    /// The sealed bytes.
    pub bytes: Vec<u8>,
    /// Lookup it belongs to, if any.
    pub ctx: Option<Ctx>,
}

/// UDP and IPv4 headers, counted with every datagram.
const UDP_IP_HEADER_BYTES: u64 = 28;

/// Something that happens at a virtual time.
#[derive(Debug)]
pub enum Ev {
    /// A supernode process starts.
    SnStart(u32),
    /// A supernode's periodic timer.
    SnTick(u32),
    /// A supernode dies (session end or crash).
    SnStop(u32),
    /// A client process starts (arrival or restart).
    ClientStart(u32),
    /// A client process stops; it comes back after the delay, if any.
    ClientStop(u32, Option<u64>),
    /// A client's timer (ignored unless it is the one last scheduled).
    ClientTick(u32, u32),
    /// A dial's SYN reaches the address dialled.
    Syn(ConnId),
    /// A dial failed (refused or timed out).
    DialFailed(ConnId),
    /// The dialler's TCP connect completed.
    Connected(ConnId),
    /// The acceptor accepted.
    Accepted(ConnId),
    /// This end received the other end's Hello.
    Established(ConnId, Side),
    /// A message arrives.
    Deliver(Box<Delivery>),
    /// An overlay datagram reaches a supernode.
    Datagram(Box<Datagram>),
    /// The other end closed; this end learns it.
    PeerClosed(ConnId, Side),
    /// A client looks someone up (a Poisson process over the network).
    Lookup,
    /// The scenario's event: mass crash or the start of the restart wave.
    Event,
    /// The overlay-traffic measurement window ends.
    WindowEnd,
    /// Someone leaves mail for a signed-out user (`--mail`).
    MailTick,
    /// A refused mail put is tried again.
    MailRetry(supervox_proto::mail::MailId),
    /// A sender puts an undelivered item again.
    MailReput(supervox_proto::mail::MailId),
    /// A signed-in client writes to another (`--mail`).
    PeerTick,
    /// Honest views are checked for missing honest members (`--byzantine`).
    ByzantineSample,
}

struct Queued {
    at: u64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Queued {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Queued {
    // Reversed: BinaryHeap is a max-heap and we want the earliest first;
    // equal times run in the order they were scheduled.
    fn cmp(&self, o: &Self) -> Ordering {
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

/// A whole simulated network. Build with [`Sim::new`], run with
/// [`Sim::run`].
pub struct Sim {
    pub(crate) cfg: SimConfig,
    pub(crate) now: u64,
    pub(crate) rng: StdRng,
    queue: BinaryHeap<Queued>,
    seq: u64,
    pub(crate) latency: Latency,
    pub(crate) sns: Vec<SnSlot>,
    pub(crate) clients: Vec<ClientSlot>,
    pub(crate) links: Vec<VLink>,
    /// Supernodes running.
    pub(crate) live_sns: IndexSet,
    /// Clients signed in to a live supernode.
    pub(crate) callable: IndexSet,
    /// Lookups waiting for their answer.
    pub(crate) pending: BTreeMap<u64, crate::scenario::PendingLookup>,
    pub(crate) metrics: Metrics,
    /// Offline mail and peer messages, with `--mail`.
    pub(crate) mail: Option<crate::mail::MailSim>,
    /// Byzantine supernodes, with `--byzantine`.
    pub(crate) byz: crate::byzantine::ByzSim,
    /// Events handled.
    pub(crate) events: u64,
    /// Why the run stopped before its end, if it did.
    pub(crate) stopped: Option<&'static str>,
}

// The tables hold hundreds of thousands of nodes: show where the run is, not its state.
impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("now", &self.now)
            .field("sns", &self.sns.len())
            .field("clients", &self.clients.len())
            .field("events", &self.events)
            .field("stopped", &self.stopped)
            .finish_non_exhaustive()
    }
}

impl Sim {
    /// The start time, in virtual unix ms.
    pub fn start_ms() -> u64 {
        EPOCH_MS
    }

    pub(crate) fn base(cfg: SimConfig, rng: StdRng, latency: Latency) -> Self {
        Self {
            cfg,
            now: EPOCH_MS,
            rng,
            queue: BinaryHeap::new(),
            seq: 0,
            latency,
            sns: Vec::new(),
            clients: Vec::new(),
            links: Vec::new(),
            live_sns: IndexSet::default(),
            callable: IndexSet::default(),
            pending: BTreeMap::new(),
            metrics: Metrics::default(),
            byz: Default::default(),
            mail: None,
            events: 0,
            stopped: None,
        }
    }

    /// Schedule `ev` at absolute virtual time `at` (never in the past).
    pub(crate) fn at(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Queued { at: at.max(self.now), seq: self.seq, ev });
    }

    /// Schedule `ev` after `delay_ms`.
    pub(crate) fn after(&mut self, delay_ms: u64, ev: Ev) {
        self.at(self.now + delay_ms, ev);
    }

    /// Run until the configured duration has passed.
    /// Returns the virtual time reached, which is the end unless the wall
    /// time budget ran out first.
    pub(crate) fn run_loop(&mut self) -> u64 {
        let end = EPOCH_MS + self.cfg.duration_ms;
        let wall = std::time::Instant::now();
        let every = self.cfg.progress_s.map(|s| s.max(1) * 1000);
        let mut next_report = EPOCH_MS + every.unwrap_or(u64::MAX - EPOCH_MS);
        while let Some(q) = self.queue.pop() {
            if q.at > end {
                break;
            }
            self.now = q.at;
            if self.now >= next_report {
                next_report += every.unwrap_or(0);
                eprintln!(
                    "[{:>6.1} s wall] t={:>5} s  events {:>10}  supernodes {:>6}  callable {:>7}  connections {:>8}",
                    wall.elapsed().as_secs_f64(),
                    (self.now - EPOCH_MS) / 1000,
                    self.events,
                    self.live_sns.len(),
                    self.callable.len(),
                    self.links.len()
                );
            }
            if self.events.is_multiple_of(4096) {
                if self.cfg.max_wall_s.is_some_and(|m| wall.elapsed().as_secs() >= m) {
                    self.stopped = Some("wall-time budget");
                    return self.now;
                }
                if self.cfg.max_rss_mib.is_some_and(|m| rss_mib().is_some_and(|r| r >= m)) {
                    self.stopped = Some("memory budget");
                    return self.now;
                }
            }
            self.events += 1;
            self.handle(q.ev);
        }
        self.now = end;
        end
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::SnStart(i) => self.sn_start(i),
            Ev::SnTick(i) => self.sn_tick(i),
            Ev::SnStop(i) => self.sn_stop(i, true),
            Ev::ClientStart(c) => self.client_start(c),
            Ev::ClientStop(c, back) => self.client_stop(c, back),
            Ev::ClientTick(c, g) => self.client_tick(c, g),
            Ev::Syn(conn) => self.on_syn(conn),
            Ev::DialFailed(conn) => self.on_dial_failed(conn),
            Ev::Connected(conn) => self.on_connected(conn),
            Ev::Accepted(conn) => self.on_accepted(conn),
            Ev::Established(conn, side) => self.on_established(conn, side),
            Ev::Deliver(d) => self.on_deliver(*d),
            Ev::Datagram(d) => self.on_datagram(*d),
            Ev::PeerClosed(conn, side) => self.on_peer_closed(conn, side),
            Ev::Lookup => self.lookup_tick(),
            Ev::Event => self.scenario_event(),
            Ev::WindowEnd => self.window_end(),
            Ev::MailTick => self.mail_tick(),
            Ev::MailRetry(id) => self.mail_retry(id),
            Ev::MailReput(id) => self.mail_reput(id),
            Ev::PeerTick => self.peer_tick(),
            Ev::ByzantineSample => {
                self.byzantine_sample();
                self.after(crate::byzantine::SAMPLE_MS, Ev::ByzantineSample);
            }
        }
    }

    /// Is this node's process running?
    pub(crate) fn alive(&self, n: Node) -> bool {
        match n {
            Node::Sn(i) => self.sns[i as usize].sn.is_some(),
            Node::Client(c, g) => {
                let s = &self.clients[c as usize];
                s.client.is_some() && s.gen == g
            }
        }
    }

    fn location(&self, n: Node) -> crate::net::Location {
        match n {
            Node::Sn(i) => self.sns[i as usize].loc,
            Node::Client(c, _) => self.clients[c as usize].loc,
        }
    }

    /// `from` dials `addr`: the SYN leaves now.
    pub(crate) fn dial(&mut self, from: Node, addr: SocketAddr) {
        let conn = self.links.len() as ConnId;
        let target = crate::net::sn_index(addr).filter(|t| (*t as usize) < self.sns.len());
        let Some(t) = target else {
            // Nothing can ever listen there: fail like a refused connection.
            let mut l = VLink::new([from, from], addr, 1);
            l.mark_gone(1, self.now);
            self.links.push(l);
            self.attach(from, conn);
            self.after(1, Ev::DialFailed(conn));
            return;
        };
        let to = Node::Sn(t);
        let delay = self.latency.one_way_ms(self.location(from), self.location(to));
        self.links.push(VLink::new([from, to], addr, delay));
        self.attach(from, conn);
        self.after(delay, Ev::Syn(conn));
    }

    fn attach(&mut self, n: Node, conn: ConnId) {
        match n {
            Node::Sn(i) => self.sns[i as usize].attach(conn),
            Node::Client(c, _) => self.clients[c as usize].links.push(conn),
        }
    }

    fn on_syn(&mut self, conn: ConnId) {
        let l = &self.links[conn_index(conn)];
        if l.gone[0] {
            return;
        }
        let (d, to) = (l.delay_ms, l.ends[1]);
        if !self.alive(to) {
            self.links[conn_index(conn)].mark_gone(1, self.now);
            match self.cfg.crash_mode {
                CrashMode::Process => self.after(d, Ev::DialFailed(conn)),
                CrashMode::Silent => self.after(CONNECT_TIMEOUT_MS.saturating_sub(d), Ev::DialFailed(conn)),
            }
            return;
        }
        self.attach(to, conn);
        let l = &mut self.links[conn_index(conn)];
        l.last_arrival = [self.now + 5 * d, self.now + 4 * d];
        self.after(d, Ev::Connected(conn));
        self.after(2 * d, Ev::Accepted(conn));
        self.after(4 * d, Ev::Established(conn, 1));
        self.after(5 * d, Ev::Established(conn, 0));
    }

    fn on_dial_failed(&mut self, conn: ConnId) {
        let l = &mut self.links[conn_index(conn)];
        if l.gone[0] {
            return;
        }
        l.mark_gone(0, self.now);
        l.mark_gone(1, self.now);
        let (from, addr) = (l.ends[0], l.target);
        self.node_dial_failed(from, addr);
    }

    fn on_connected(&mut self, conn: ConnId) {
        let l = &mut self.links[conn_index(conn)];
        if l.gone[0] {
            return;
        }
        if l.gone[1] {
            // The acceptor died during the handshake: the connect is reset.
            l.mark_gone(0, self.now);
            let (from, addr) = (l.ends[0], l.target);
            self.node_dial_failed(from, addr);
            return;
        }
        let l = &mut self.links[conn_index(conn)];
        l.open[0] = true;
        let (from, addr) = (l.ends[0], l.target);
        self.node_connected(from, conn, addr);
    }

    fn on_accepted(&mut self, conn: ConnId) {
        let l = &mut self.links[conn_index(conn)];
        if l.gone[1] {
            return;
        }
        if l.gone[0] {
            l.mark_gone(1, self.now);
            return;
        }
        l.open[1] = true;
        let (to, from) = (l.ends[1], l.ends[0]);
        let remote = match from {
            Node::Sn(i) => crate::net::sn_addr(i),
            Node::Client(c, g) => crate::net::client_addr(c, g),
        };
        self.node_connected(to, conn, remote);
    }

    /// `side` receives the other end's Hello — if the other end lived to
    /// send it (one delay ago); if it closed since, its close follows.
    fn on_established(&mut self, conn: ConnId, side: Side) {
        let now = self.now;
        let l = &mut self.links[conn_index(conn)];
        if !l.open[side] || l.gone[side] {
            return;
        }
        let peer_sent_hello = if side == 1 { l.gone_at[0] >= now - l.delay_ms } else { l.acceptor_hello };
        if side == 1 {
            l.acceptor_hello = true;
        }
        if !peer_sent_hello {
            return;
        }
        let (me, peer) = (l.ends[side], l.ends[VLink::other(side)]);
        let Some(Message::Hello { role, identity, .. }) = self.hello(peer) else {
            return;
        };
        self.node_established(me, conn, role, identity);
    }

    /// The Hello a node sends on its links.
    pub(crate) fn hello(&self, n: Node) -> Option<Message> {
        match n {
            Node::Sn(i) => self.sns[i as usize].sn.as_ref().map(|s| s.hello()),
            Node::Client(c, _) => self.clients[c as usize].client.as_ref().map(|s| s.hello()),
        }
    }

    fn on_deliver(&mut self, d: Delivery) {
        let l = &self.links[conn_index(d.conn)];
        if !l.open[d.to] || l.gone[d.to] {
            return;
        }
        let to = l.ends[d.to];
        self.node_message(to, d.conn, d.msg, d.ctx);
    }

    /// Supernode `from` sends an overlay datagram: it arrives one one-way
    /// delay later at the supernode listening on `to`, unless lost or
    /// nobody listens there any more.
    pub(crate) fn send_datagram(
        &mut self,
        from: u32,
        to: SocketAddr,
        bytes: Vec<u8>,
        kind: &'static str,
        ctx: Option<Ctx>,
    ) {
        if self.metrics.in_window(self.now) {
            let b = bytes.len() as u64 + UDP_IP_HEADER_BYTES;
            self.metrics.overlay_bytes += b;
            self.metrics.overlay_msgs += 1;
            *self.metrics.overlay_by_kind.entry(kind).or_default() += b;
        }
        if self.now >= self.metrics.window.0 {
            let b = bytes.len() as u64 + UDP_IP_HEADER_BYTES;
            *self.metrics.after_warmup_by_kind.entry(kind).or_default() += b;
        }
        let ctx = ctx.map(|c| Ctx { hops: c.hops + u8::from(kind == "Lookup"), ..c });
        if let Some(c) = ctx {
            if let Some(p) = self.pending.get_mut(&c.lookup) {
                p.overlay_msgs += 1;
                p.max_hops = p.max_hops.max(c.hops);
            }
        }
        let Some(t) = crate::net::sn_index(to).filter(|t| (*t as usize) < self.sns.len()) else {
            return;
        };
        if self.cfg.loss > 0.0 && self.rng.gen_bool(self.cfg.loss) {
            return;
        }
        let delay = self.latency.one_way_ms(self.sns[from as usize].loc, self.sns[t as usize].loc);
        if let Some(p) = ctx.and_then(|c| self.pending.get_mut(&c.lookup)) {
            match kind {
                "Lookup" if p.overlay_sent.is_none() => p.overlay_sent = Some((self.now, 2 * delay)),
                "LookupAns" if p.overlay_answered.is_none() => p.overlay_answered = Some(self.now + delay),
                _ => {}
            }
        }
        let from = crate::net::sn_addr(from);
        self.after(delay, Ev::Datagram(Box::new(Datagram { to: t, from, bytes, ctx })));
    }

    fn on_datagram(&mut self, d: Datagram) {
        let now = self.now;
        let Some(sn) = self.sns[d.to as usize].sn.as_mut() else {
            return;
        };
        sn.on_datagram(d.from, &d.bytes, now);
        self.drain_sn(d.to, d.ctx);
    }

    fn on_peer_closed(&mut self, conn: ConnId, side: Side) {
        let now = self.now;
        let l = &mut self.links[conn_index(conn)];
        if l.gone[side] {
            return;
        }
        let was_open = l.open[side];
        l.mark_gone(side, now);
        let n = l.ends[side];
        if was_open {
            self.node_closed(n, conn);
        } else if side == 0 {
            // Reset before the dialler's connect completed.
            let addr = l.target;
            self.node_dial_failed(n, addr);
        }
    }

    /// `from` sends `msg` on `conn`.
    pub(crate) fn send(&mut self, conn: ConnId, from: Node, msg: Message, ctx: Option<Ctx>) {
        let l = &self.links[conn_index(conn)];
        let Some(side) = l.side_of(from) else {
            return;
        };
        let to = VLink::other(side);
        if !l.open[side] || l.gone[to] {
            return;
        }
        let lost = self.cfg.loss > 0.0 && self.rng.gen_bool(self.cfg.loss);
        let at = self.links[conn_index(conn)].arrival(side, self.now, lost);
        self.at(at, Ev::Deliver(Box::new(Delivery { conn, to, msg, ctx })));
    }

    /// `n` closes its end of `conn` (or dies): the other end learns it one
    /// delay later, after everything already sent (or, for a silent crash,
    /// when its keepalive gives up). Returns whether the end was open.
    pub(crate) fn close_end(&mut self, conn: ConnId, n: Node, silent: bool) -> bool {
        let now = self.now;
        let l = &mut self.links[conn_index(conn)];
        let Some(side) = l.side_of(n) else {
            return false;
        };
        if l.gone[side] {
            return false;
        }
        let was_open = l.open[side];
        l.mark_gone(side, now);
        let other = VLink::other(side);
        if !l.gone[other] {
            let at =
                if silent { now + crate::net::silent_detection_ms(&mut self.rng) } else { l.arrival(side, now, false) };
            self.at(at, Ev::PeerClosed(conn, other));
        }
        was_open
    }
}

/// Resident memory of this process, MiB (Linux; `None` elsewhere).
fn rss_mib() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096 / (1024 * 1024))
}
