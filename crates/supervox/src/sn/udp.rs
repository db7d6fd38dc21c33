//! The supernode's UDP plane: on each `--listen` address a UDP socket that
//! answers STUN Binding requests (RFC 8489, with RFC 5780 change requests;
//! "change IP" is delegated to a peer supernode) and serves TURN (RFC 8656)
//! for signed-in clients, with one relay socket per allocation.
//!
//! TURN over TCP (RFC 8656 §3.1) is served too: a connection on the TCP
//! port whose first bytes are a STUN header is handed here by the accept
//! loop instead of becoming a signalling link ([`is_turn_stream`]), so a
//! client that can only get TCP out reaches the relay on the same port —
//! 443 when the supernode listens there. Its frames reach the plane thread
//! through a bounded queue (back-pressure on the TCP reader). TURN over TLS
//! (`--relay-tls-listen`, see `sn/tls.rs`) is the same stream service once the
//! handshake is done. A stream that holds no allocation for 30 s is closed.
//!
//! Protocol logic lives in `supervox-stun` and `supervox-turn` (sans-IO);
//! this module only owns sockets and moves datagrams.
//!
//! The plane runs on a thread of its own with a single-threaded runtime: every
//! socket's reader handles its datagrams in place (no queue, no hand-over to
//! another thread, no copy on the ChannelData path), so a relayed packet costs
//! one receive, one table look-up and one send. The supernode's actor talks to
//! it only for rare things (dial-back orders, the peer answering "change IP").

use crate::links::now_ms;
use crate::udp_batch::{read_socket, recv_batch, send_from, ReadSocket, RecvBatch};
use anyhow::{Context, Result};
use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use supervox_core::supernode::Supernode;
use supervox_stun::{BindingServer, DialBack, PrefixLimiter, Reply, StunError};
use supervox_turn::codec::{packet_kind, PacketKind, CHANNEL_HEADER_LEN};
use supervox_turn::{AddressFamily, FiveTuple, Output, RelayError, Transport, TurnConfig, TurnServer};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tracing::{debug, warn};

/// Largest datagram read.
const MAX_DATAGRAM: usize = 65_536;
/// Dial-back requests queued for the actor before new ones are dropped (UDP may drop).
const QUEUE: usize = 1_024;
/// Datagrams one receive call takes (`recvmmsg`).
const BATCH: usize = 32;
/// Receive calls a reader makes before letting the other sockets' readers run.
const ROUNDS: usize = 2;
/// Receive buffer asked for on every socket, so bursts are absorbed rather than dropped.
const SOCKET_BUFFER: usize = 1 << 20;
/// TURN stream clients without an allocation are looked at this often
/// (they are closed after [`STREAM_IDLE_MS`]; a second late is fine).
const IDLE_STREAM_CHECK_MS: u64 = 1_000;

/// Something the UDP plane needs from the supernode actor.
#[derive(Debug)]
pub enum UdpEvent {
    /// A client asked for a "change IP" answer: the peer supernode must send it.
    DialBack { peer: SocketAddr, order: DialBack },
    /// An overlay datagram from another supernode (still sealed).
    Overlay { from: SocketAddr, bytes: Vec<u8> },
}

/// The plane's events for the supernode actor, in two bounded queues: overlay
/// datagrams in their own, served first, so a flood of spoofed change-request
/// Bindings (dial-back orders) cannot crowd out SWIM probes and acks.
#[derive(Debug)]
pub struct UdpEvents {
    overlay: mpsc::Receiver<UdpEvent>,
    other: mpsc::Receiver<UdpEvent>,
}

impl UdpEvents {
    /// The next event, overlay datagrams first; `None` once the plane is gone.
    pub async fn recv(&mut self) -> Option<UdpEvent> {
        tokio::select! {
            biased;
            Some(e) = self.overlay.recv() => Some(e),
            Some(e) = self.other.recv() => Some(e),
            else => None,
        }
    }

    /// An event already queued, overlay datagrams first.
    pub fn try_recv(&mut self) -> Option<UdpEvent> {
        self.overlay.try_recv().or_else(|_| self.other.try_recv()).ok()
    }
}

/// A TURN-over-TCP or -TLS connection's traffic, for the plane thread. `transport`
/// (`Tcp` or `Tls`) and `client` name the connection.
#[derive(Debug)]
pub enum TcpEvent {
    /// A client connected on our `local` TCP listen address; answers go to `writer`.
    Open { transport: Transport, client: SocketAddr, local: SocketAddr, writer: mpsc::Sender<Vec<u8>> },
    /// One TURN message or ChannelData from that client.
    Frame { transport: Transport, client: SocketAddr, bytes: Vec<u8> },
    /// That client's connection ended.
    Closed { transport: Transport, client: SocketAddr },
}

/// TURN-over-TCP and -TLS clients served at most at once (together).
pub const MAX_TCP_CLIENTS: usize = 4_096;
/// A TURN stream that holds no allocation this long (never allocated, or its allocation
/// ended) is closed, so idle connections do not keep slots of [`MAX_TCP_CLIENTS`].
pub const STREAM_IDLE_MS: u64 = 30_000;
/// Messages queued towards one TCP client before new ones are dropped.
const TCP_WRITE_QUEUE: usize = 1_024;
/// Frames from all TCP clients queued for the plane thread.
const TCP_QUEUE: usize = 8_192;

/// Does a new TCP connection speak TURN (a STUN header: two zero bits, the
/// magic cookie) rather than our Noise link? `first` are its first 8 bytes.
pub fn is_turn_stream(first: &[u8]) -> bool {
    first.len() >= 8 && first[0] & 0xC0 == 0 && first[4..8] == supervox_stun::codec::MAGIC_COOKIE.to_be_bytes()
}

/// Serve one TURN-over-TCP connection: frames in to the plane, its answers out.
pub fn spawn_tcp_client(stream: tokio::net::TcpStream, client: SocketAddr, events: mpsc::Sender<TcpEvent>) {
    tokio::spawn(async move {
        let Ok(local) = stream.local_addr() else { return };
        let _ = stream.set_nodelay(true);
        serve_stream(stream, Transport::Tcp, client, local, events).await;
    });
}

/// Serve one TURN stream (`transport` is `Tcp`, or `Tls` with TLS already terminated) from
/// `client`, accepted on our `local` address, until it ends or the plane lets go of it.
pub async fn serve_stream<S>(
    stream: S,
    transport: Transport,
    client: SocketAddr,
    local: SocketAddr,
    events: mpsc::Sender<TcpEvent>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    use tokio::io::AsyncWriteExt;
    let (r, mut w) = tokio::io::split(stream);
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(TCP_WRITE_QUEUE);
    if events.send(TcpEvent::Open { transport, client, local, writer: tx }).await.is_err() {
        return;
    }
    let mut writer = tokio::spawn(async move {
        while let Some(b) = rx.recv().await {
            if w.write_all(&b).await.is_err() {
                return;
            }
        }
        // The plane let go (limit, idle): say goodbye properly (a TLS close_notify).
        let _ = tokio::time::timeout(Duration::from_secs(1), w.shutdown()).await;
    });
    tokio::select! {
        ended = crate::relay_stream::read_frames(r, &events, |bytes| TcpEvent::Frame { transport, client, bytes }) => {
            if let Ok(reason) = ended {
                debug!("TURN stream ({transport:?}) from {client} ended: {reason}");
            }
        }
        // The writer ended: the plane dropped it (limit reached, idle) or the peer reset.
        _ = &mut writer => {}
    }
    writer.abort();
    let _ = events.send(TcpEvent::Closed { transport, client }).await;
}

/// Orders from the actor to the plane thread.
enum Command {
    SetOther(Option<SocketAddr>),
    DialBack(DialBack),
    Overlay { to: SocketAddr, bytes: Vec<u8> },
}

/// Handle to the UDP plane thread; dropping it stops the thread and closes every socket.
pub struct UdpPlane {
    cmd: mpsc::UnboundedSender<Command>,
    tcp: mpsc::Sender<TcpEvent>,
    other: Option<SocketAddr>,
    counters: Arc<Counters>,
}

impl UdpPlane {
    /// Start the plane on the sockets of [`bind_sockets`] (inside a tokio runtime: it spawns its tasks).
    pub fn bind(bound: Vec<std::net::UdpSocket>, advertise: SocketAddr, turn: TurnConfig) -> Result<(Self, UdpEvents)> {
        let (tx, other) = mpsc::channel(QUEUE);
        let (overlay_tx, overlay) = mpsc::channel(QUEUE);
        let mut sockets = Vec::new();
        for (i, s) in bound.into_iter().enumerate() {
            let local = s.local_addr()?;
            // The first socket is the advertised one; others keep their port on the advertised IP.
            let public = if i == 0 { advertise } else { SocketAddr::new(advertise.ip(), local.port()) };
            sockets.push((local, public, s));
        }
        let main = sockets.first().map(|(l, _, _)| *l).context("no listen address")?;
        let (cmd, cmd_rx) = mpsc::unbounded_channel();
        let (tcp, tcp_rx) = mpsc::channel(TCP_QUEUE);
        let counters = Arc::new(Counters::default());
        let count = Arc::clone(&counters);
        let turn = TurnServer::new(turn, now_ms());
        std::thread::Builder::new()
            .name("supervox-udp".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => return warn!("UDP plane cannot start: {e}"),
                };
                let local = tokio::task::LocalSet::new();
                local
                    .block_on(&rt, run(sockets, main, advertise.ip(), turn, (overlay_tx, tx), (cmd_rx, tcp_rx), count));
            })
            .context("cannot start the UDP plane thread")?;
        Ok((Self { cmd, tcp, other: None, counters }, UdpEvents { overlay, other }))
    }

    /// Where TURN-over-TCP connections report (see [`spawn_tcp_client`]).
    pub fn tcp_events(&self) -> mpsc::Sender<TcpEvent> {
        self.tcp.clone()
    }

    /// The peer supernode that answers "change IP" requests (our OTHER-ADDRESS).
    pub fn set_other(&mut self, other: Option<SocketAddr>) {
        if other != self.other {
            self.other = other;
            let _ = self.cmd.send(Command::SetOther(other));
        }
    }

    /// Live allocations.
    pub fn allocations(&self) -> usize {
        self.counters.allocations.load(Ordering::Relaxed)
    }

    /// STUN Binding answers dropped by the answer-rate limits.
    pub fn stun_answers_limited(&self) -> u64 {
        self.counters.stun_answers_limited.load(Ordering::Relaxed)
    }

    /// Carry out a request from the plane; `sn` is asked to forward dial-backs to a peer.
    pub fn on_event(&mut self, ev: UdpEvent, sn: &mut Supernode) {
        match ev {
            UdpEvent::DialBack { peer, order: d } => {
                if !sn.request_dial_back(peer, d.transaction_id, d.mapped, d.to, d.padding) {
                    debug!("dial-back peer {peer} not a live member");
                }
            }
            UdpEvent::Overlay { from, bytes } => sn.on_datagram(from, &bytes, now_ms()),
        }
    }

    /// Send a dial-back response for a peer supernode from our advertised socket.
    pub fn dial_back(&self, order: DialBack) {
        let _ = self.cmd.send(Command::DialBack(order));
    }

    /// Send a sealed overlay datagram from our advertised socket.
    pub fn send_overlay(&self, to: SocketAddr, bytes: Vec<u8>) {
        let _ = self.cmd.send(Command::Overlay { to, bytes });
    }
}

/// Bind a UDP socket on every listen address (the TCP listeners' addresses, so
/// the port numbers match). Done together with the TCP listeners, so that a
/// supernode that accepts connections also answers STUN and TURN.
pub fn bind_sockets(listen: &[SocketAddr]) -> Result<Vec<std::net::UdpSocket>> {
    let mut v = Vec::new();
    for a in listen {
        let s = std::net::UdpSocket::bind(a).with_context(|| format!("cannot listen on UDP {a}"))?;
        s.set_nonblocking(true)?;
        grow_buffers(&s);
        v.push(s);
    }
    Ok(v)
}

/// Ask for bigger socket buffers (best effort: the kernel caps them at `net.core.*mem_max`).
fn grow_buffers(s: &std::net::UdpSocket) {
    let s = socket2::SockRef::from(s);
    if let Err(e) = s.set_recv_buffer_size(SOCKET_BUFFER).and_then(|()| s.set_send_buffer_size(SOCKET_BUFFER)) {
        debug!("UDP buffer size: {e}");
    }
}

/// The plane's state, shared by the socket readers of its thread.
/// What the plane's thread reports to the actor (for metrics).
#[derive(Debug, Default)]
struct Counters {
    allocations: AtomicUsize,
    stun_answers_limited: std::sync::atomic::AtomicU64,
}

/// Dial-back orders (change-IP Binding requests) forwarded to the actor per second, in
/// all: they share its queue with the overlay, which a spoofed flood must not starve.
const DIAL_BACK_ORDERS_PER_SEC: u32 = 200;

struct Plane {
    /// Listen sockets by local address, with the address clients reach them at.
    listen: HashMap<SocketAddr, (Rc<ReadSocket>, SocketAddr)>,
    /// Listen socket by public address (TURN names its sockets by the public address).
    by_public: HashMap<SocketAddr, SocketAddr>,
    /// The first listen socket: the one whose address is advertised.
    main: SocketAddr,
    stun: BindingServer,
    /// Binding answers per destination prefix.
    answer_limit: PrefixLimiter,
    /// Dial-back orders forwarded to the actor, in all.
    dial_back_limit: PrefixLimiter,
    turn: TurnServer,
    relays: HashMap<SocketAddr, (Rc<ReadSocket>, Option<AbortHandle>)>,
    relay_ip: std::net::IpAddr,
    /// Relay sockets opened while handling a datagram, whose readers are still to start.
    new_relays: Vec<(SocketAddr, Rc<ReadSocket>)>,
    /// Overlay datagrams to the actor (their own queue, see [`UdpEvents`]).
    overlay_tx: mpsc::Sender<UdpEvent>,
    /// Dial-back orders to the actor.
    tx: mpsc::Sender<UdpEvent>,
    counters: Arc<Counters>,
    /// TURN-over-TCP and -TLS clients.
    tcp: HashMap<(Transport, SocketAddr), StreamClient>,
    /// The wall-clock ms the plane's timer loop sleeps until (`u64::MAX`:
    /// no timer). An input that moves the TURN server's deadline earlier,
    /// or opens a relay socket whose reader the loop must start, wakes the
    /// loop through `rearm` (same thread: no context switch).
    armed_ms: u64,
    rearm: Rc<tokio::sync::Notify>,
}

/// A TURN stream client as the plane knows it.
struct StreamClient {
    /// Where its answers go; dropping it closes the connection.
    writer: mpsc::Sender<Vec<u8>>,
    /// The address it reached us at (the server side of its 5-tuple).
    public: SocketAddr,
    /// Since when it has held no allocation.
    idle_since: Option<u64>,
}

async fn run(
    sockets: Vec<(SocketAddr, SocketAddr, std::net::UdpSocket)>,
    main: SocketAddr,
    relay_ip: std::net::IpAddr,
    turn: TurnServer,
    (overlay_tx, tx): (mpsc::Sender<UdpEvent>, mpsc::Sender<UdpEvent>),
    (mut cmd, mut tcp): (mpsc::UnboundedReceiver<Command>, mpsc::Receiver<TcpEvent>),
    counters: Arc<Counters>,
) {
    let mut listen = HashMap::new();
    let mut by_public = HashMap::new();
    for (local, public, s) in sockets {
        match read_socket(s) {
            Ok(s) => {
                listen.insert(local, (Rc::new(s), public));
                by_public.insert(public, local);
            }
            Err(e) => warn!("UDP {local}: {e}"),
        }
    }
    let readers: Vec<_> = listen.iter().map(|(l, (s, p))| (*l, Rc::clone(s), *p)).collect();
    let plane = Rc::new(RefCell::new(Plane {
        listen,
        by_public,
        main,
        stun: BindingServer::default(),
        answer_limit: PrefixLimiter::default(),
        dial_back_limit: PrefixLimiter::new(1, DIAL_BACK_ORDERS_PER_SEC, DIAL_BACK_ORDERS_PER_SEC),
        turn,
        relays: HashMap::new(),
        relay_ip,
        new_relays: Vec::new(),
        overlay_tx,
        tx,
        counters,
        tcp: HashMap::new(),
        armed_ms: u64::MAX,
        rearm: Rc::new(tokio::sync::Notify::new()),
    }));
    let rearm = Rc::clone(&plane.borrow().rearm);
    let batch: SharedBatch = Rc::new(RefCell::new(RecvBatch::new(BATCH, CHANNEL_HEADER_LEN, MAX_DATAGRAM)));
    let mut tasks = Vec::new();
    for (local, sock, public) in readers {
        let reader = listen_reader(Rc::clone(&plane), Rc::clone(&batch), sock, local, public);
        tasks.push(tokio::task::spawn_local(reader));
    }
    let mut next_idle_check = 0u64;
    loop {
        // Sleep until the TURN server's next sweep, or the idle-stream check
        // while stream clients exist; no timer at all on an idle relay.
        let deadline = {
            let mut p = plane.borrow_mut();
            let idle_check = (!p.tcp.is_empty()).then_some(next_idle_check);
            let at = supervox_core::timer::earliest([p.turn.poll_timeout(), idle_check]);
            p.armed_ms = at.unwrap_or(u64::MAX);
            at
        };
        let sleep = crate::links::sleep_until_ms(deadline);
        tokio::select! {
            c = cmd.recv() => match c {
                // The handle is gone: the supernode stopped.
                None => break,
                Some(Command::SetOther(o)) => plane.borrow_mut().stun.other = o,
                Some(Command::DialBack(order)) => plane.borrow().dial_back(order),
                Some(Command::Overlay { to, bytes }) => {
                    let p = plane.borrow();
                    p.send_from(p.main, to, &bytes);
                }
            },
            Some(ev) = tcp.recv() => plane.borrow_mut().on_tcp(ev),
            _ = rearm.notified() => {}
            _ = sleep => {
                let mut p = plane.borrow_mut();
                let now = now_ms();
                if p.turn.poll_timeout().is_some_and(|t| t <= now) {
                    p.turn.handle_timeout(now);
                    p.flush();
                }
                if now >= next_idle_check {
                    next_idle_check = now + IDLE_STREAM_CHECK_MS;
                    p.close_idle_streams(now);
                }
            }
        }
        start_relay_readers(&plane, &batch);
    }
    for t in tasks {
        t.abort();
    }
    for (_, (_, reader)) in plane.borrow_mut().relays.drain() {
        if let Some(r) = reader {
            r.abort();
        }
    }
}

/// Start readers for relay sockets opened since the last call.
fn start_relay_readers(plane: &Rc<RefCell<Plane>>, batch: &SharedBatch) {
    let new = std::mem::take(&mut plane.borrow_mut().new_relays);
    for (relay, sock) in new {
        let task = tokio::task::spawn_local(relay_reader(Rc::clone(plane), Rc::clone(batch), sock, relay));
        match plane.borrow_mut().relays.get_mut(&relay) {
            Some(r) => r.1 = Some(task.abort_handle()),
            // Released before its reader started.
            None => task.abort(),
        }
    }
}

/// The receive buffers every reader of the plane thread shares (readers never
/// hold them across an `.await`).
type SharedBatch = Rc<RefCell<RecvBatch>>;

async fn listen_reader(
    plane: Rc<RefCell<Plane>>,
    batch: SharedBatch,
    sock: Rc<ReadSocket>,
    local: SocketAddr,
    public: SocketAddr,
) {
    let on_datagram = |from: SocketAddr, slot: &mut [u8], n: usize| {
        if let Some(bytes) = slot.get(CHANNEL_HEADER_LEN..CHANNEL_HEADER_LEN + n) {
            plane.borrow_mut().on_listen(local, public, from, bytes);
        }
    };
    // Relay sockets opened by Allocate requests in this batch start reading now.
    read_loop(&sock, &batch, on_datagram, || start_relay_readers(&plane, &batch)).await;
}

async fn relay_reader(plane: Rc<RefCell<Plane>>, batch: SharedBatch, sock: Rc<ReadSocket>, relay: SocketAddr) {
    let on_datagram = |from, slot: &mut [u8], n| plane.borrow_mut().on_relay(relay, from, slot, n);
    read_loop(&sock, &batch, on_datagram, || {}).await;
}

/// Read `sock` for as long as the plane runs (its task is aborted when the
/// socket goes): on each readiness up to [`ROUNDS`] batches, each datagram
/// handed to `on_datagram` (sender, slot with headroom, length), then `after`;
/// a socket still not drained yields to the other readers first.
async fn read_loop(
    sock: &ReadSocket,
    batch: &SharedBatch,
    mut on_datagram: impl FnMut(SocketAddr, &mut [u8], usize),
    mut after: impl FnMut(),
) {
    loop {
        let mut more = true;
        for _ in 0..ROUNDS {
            // On an error nothing is handed on: the shared batch may still hold
            // another socket's datagrams.
            more = match recv_batch(sock, batch).await {
                Ok(more) => more,
                // ICMP errors surface as receive errors on some systems: keep serving.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
                // Anything else (out of buffers, ...) must not leave the socket
                // unread for good: pause briefly, so a lasting error does not spin.
                Err(e) => {
                    warn!("UDP receive: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            };
            let mut b = batch.borrow_mut();
            for i in 0..b.len() {
                if let Some((from, slot, n)) = b.datagram(i) {
                    on_datagram(from, slot, n);
                }
            }
            if !more {
                break;
            }
        }
        after();
        if more {
            tokio::task::yield_now().await;
        }
    }
}

impl Plane {
    /// A datagram on a listen socket: ChannelData straight to its peer, else STUN, else TURN.
    fn on_listen(&mut self, local: SocketAddr, public: SocketAddr, from: SocketAddr, bytes: &[u8]) {
        let now = now_ms();
        if supervox_core::overlay::wire::is_overlay(bytes) {
            // Overlay traffic waits in a bounded queue: a flood is dropped
            // here, before any decryption work.
            if self.overlay_tx.try_send(UdpEvent::Overlay { from, bytes: bytes.to_vec() }).is_err() {
                debug!("overlay datagram from {from} dropped: actor busy");
            }
            return;
        }
        if packet_kind(bytes) == PacketKind::ChannelData {
            if let Some((relay, peer, data)) = self.turn.route_client_channel_data(from, public, bytes, now) {
                if let Some((sock, _)) = self.relays.get(&relay) {
                    if let Err(e) = send_from(sock, data, peer) {
                        debug!("relay send to {peer}: {e}");
                    }
                }
            }
            return;
        }
        let reply = self.stun.handle(bytes, from, public);
        if let Ok(Some(r)) = &reply {
            // Answers go to a source anyone can spoof: capped per destination prefix, and
            // dial-back orders (which travel the actor's queue) in all. Loopback sources
            // cannot be spoofed from the network (the kernel drops them as martians).
            let to = match r {
                Reply::Direct { to, .. } | Reply::FromAlternate { to, .. } => *to,
                Reply::ViaPeer { dial_back, .. } => dial_back.to,
            };
            let via_peer = matches!(r, Reply::ViaPeer { .. });
            if !to.ip().is_loopback()
                && (!self.answer_limit.allow(to.ip(), now) || (via_peer && !self.dial_back_limit.allow(to.ip(), now)))
            {
                self.counters.stun_answers_limited.fetch_add(1, Ordering::Relaxed);
                return debug!("STUN answer to {to} dropped: rate limit");
            }
        }
        match reply {
            Ok(Some(Reply::Direct { to, response })) => self.send_from(local, to, &response),
            Ok(Some(Reply::FromAlternate { from: alt, to, response })) => {
                if let Some(l) = self.by_public.get(&alt).copied() {
                    self.send_from(l, to, &response);
                }
            }
            Ok(Some(Reply::ViaPeer { peer, dial_back })) => {
                if self.tx.try_send(UdpEvent::DialBack { peer, order: dial_back }).is_err() {
                    debug!("dial-back to {peer} dropped: actor busy");
                }
            }
            // TURN messages are STUN too.
            Ok(None) | Err(StunError::NotBindingRequest { .. }) => {
                self.turn.handle_client(Transport::Udp, from, public, bytes, now)
            }
            Err(e) => debug!("STUN datagram from {from} dropped: {e}"),
        }
        self.flush();
    }

    /// Traffic of a TURN-over-TCP or -TLS client.
    fn on_tcp(&mut self, ev: TcpEvent) {
        match ev {
            TcpEvent::Open { transport, client, local, writer } => {
                if self.tcp.len() >= MAX_TCP_CLIENTS {
                    // Dropping the writer closes the connection.
                    warn!("TURN over TCP/TLS: {MAX_TCP_CLIENTS} clients, refusing {client}");
                    return;
                }
                let host = crate::defaults::host_key(client.ip());
                let from_host = self.tcp.keys().filter(|(_, c)| crate::defaults::host_key(c.ip()) == host).count();
                if !client.ip().is_loopback() && from_host >= crate::defaults::MAX_TURN_STREAMS_PER_HOST {
                    debug!("TURN over TCP/TLS: {from_host} clients from the host of {client}, refusing it");
                    return;
                }
                let public = self.listen.get(&local).map(|(_, p)| *p).unwrap_or(local);
                self.tcp.insert((transport, client), StreamClient { writer, public, idle_since: Some(now_ms()) });
            }
            TcpEvent::Frame { transport, client, bytes } => {
                if let Some(c) = self.tcp.get(&(transport, client)) {
                    let public = c.public;
                    // Binding over TCP is answered by the TURN server itself.
                    self.turn.handle_client(transport, client, public, &bytes, now_ms());
                }
            }
            TcpEvent::Closed { transport, client } => {
                if let Some(c) = self.tcp.remove(&(transport, client)) {
                    self.turn.handle_client_closed(transport, client, c.public);
                }
            }
        }
        self.flush();
    }

    /// Close the streams that have held no allocation for [`STREAM_IDLE_MS`].
    fn close_idle_streams(&mut self, now: u64) {
        let turn = &self.turn;
        self.tcp.retain(|&(transport, client), c| {
            if turn.relay_addr_of(&FiveTuple { transport, client, server: c.public }).is_some() {
                c.idle_since = None;
                return true;
            }
            let since = *c.idle_since.get_or_insert(now);
            let keep = now.saturating_sub(since) < STREAM_IDLE_MS;
            if !keep {
                debug!("closing TURN stream ({transport:?}) from {client}: no allocation for {STREAM_IDLE_MS} ms");
            }
            keep
        });
    }

    /// A datagram from a peer on a relay socket, in `buf[CHANNEL_HEADER_LEN..][..len]`.
    fn on_relay(&mut self, relay: SocketAddr, from: SocketAddr, buf: &mut [u8], len: usize) {
        match self.turn.route_peer_in_place(relay, from, buf, len, now_ms()) {
            Some((client, server)) => {
                let local = self.by_public.get(&server).copied().unwrap_or(server);
                if let Some(b) = buf.get(..CHANNEL_HEADER_LEN + len) {
                    self.send_from(local, client, b);
                }
            }
            // Maybe a Data indication (a peer without a channel).
            None => self.flush(),
        }
    }

    fn dial_back(&self, order: DialBack) {
        let public = self.listen.get(&self.main).map(|(_, p)| *p).unwrap_or(self.main);
        let to = order.to;
        match order.response(public) {
            Ok(bytes) => self.send_from(self.main, to, &bytes),
            Err(e) => debug!("dial-back refused: {e}"),
        }
    }

    fn send_from(&self, local: SocketAddr, to: SocketAddr, bytes: &[u8]) {
        if let Some((s, _)) = self.listen.get(&local) {
            if let Err(e) = send_from(s, bytes, to) {
                debug!("UDP send to {to}: {e}");
            }
        }
    }

    fn flush(&mut self) {
        self.flush_outputs();
        // The input may have brought the TURN timer earlier (a first allocation).
        if self.turn.poll_timeout().is_some_and(|t| t < self.armed_ms) {
            self.armed_ms = 0;
            self.rearm.notify_one();
        }
    }

    fn flush_outputs(&mut self) {
        while let Some(out) = self.turn.poll_output() {
            match out {
                Output::ToClient { transport: Transport::Udp, client, server, bytes } => {
                    let local = self.by_public.get(&server).copied().unwrap_or(server);
                    self.send_from(local, client, &bytes);
                }
                Output::ToClient { transport, client, bytes, .. } => {
                    if let Some(c) = self.tcp.get(&(transport, client)) {
                        // A client that does not read loses datagrams, as over UDP.
                        let _ = c.writer.try_send(bytes);
                    }
                }
                Output::ToPeer { relay_addr, peer, bytes } => {
                    if let Some((s, _)) = self.relays.get(&relay_addr) {
                        if let Err(e) = send_from(s, &bytes, peer) {
                            debug!("relay send to {peer}: {e}");
                        }
                    }
                }
                Output::AllocateRelay { token, family, .. } => {
                    let result = match family {
                        AddressFamily::V6 if self.relay_ip.is_ipv4() => Err(RelayError::AddressFamilyNotSupported),
                        AddressFamily::V4 if self.relay_ip.is_ipv6() => Err(RelayError::AddressFamilyNotSupported),
                        _ => self.open_relay(),
                    };
                    self.turn.relay_allocated(token, result, now_ms());
                }
                Output::ReleaseRelay { relay_addr } => {
                    if let Some((_, Some(reader))) = self.relays.remove(&relay_addr) {
                        reader.abort();
                    }
                }
            }
        }
        self.counters.allocations.store(self.turn.allocation_count(), Ordering::Relaxed);
    }

    fn open_relay(&mut self) -> Result<SocketAddr, RelayError> {
        let opened = std::net::UdpSocket::bind(SocketAddr::new(self.relay_ip, 0)).and_then(|s| {
            s.set_nonblocking(true)?;
            grow_buffers(&s);
            read_socket(s)
        });
        let sock = opened.map_err(|e| {
            warn!("cannot open a relay socket: {e}");
            RelayError::InsufficientCapacity
        })?;
        let relay = sock.get_ref().local_addr().map_err(|_| RelayError::InsufficientCapacity)?;
        let sock = Rc::new(sock);
        self.relays.insert(relay, (Rc::clone(&sock), None));
        self.new_relays.push((relay, sock));
        // Its reader is started by the plane loop: wake it now (an allocation
        // made while handling a listen socket's datagram is not the loop's own input).
        self.rearm.notify_one();
        Ok(relay)
    }
}
