//! The async shell around [`supervox_core::link::Link`]: every TCP connection
//! of one actor, driven by that actor itself. No task and no channel per
//! connection: each socket's readiness wakes a small per-connection waker
//! that queues the connection's id; the actor then reads into one shared
//! buffer and writes straight from each link's outbox. An idle connection
//! so costs its `Link`, its socket and a waker — what lets one supernode
//! hold 100 000 clients (BENCHMARKS.md). The actor owns every `Link` and all
//! protocol state, so no protocol logic runs concurrently and nothing needs
//! a lock but the ready queue.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use supervox_core::link::{Link, LinkError, LinkEvent};
use supervox_core::{ConnId, Identity};
use supervox_proto::Message;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Notify};
use tracing::debug;

/// Time allowed for a TCP connect.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Bytes read from a socket at once (into the one shared buffer).
const READ_CHUNK: usize = 16 * 1024;
/// Reads per connection per wake-up before others get their turn.
const READS_PER_WAKE: usize = 4;
/// Connections served per [`LinkSet::poll_ready`] call: bounds the bytes it
/// returns at once (`READY_BATCH × READS_PER_WAKE × READ_CHUNK` = 4 MiB).
const READY_BATCH: usize = 64;
/// Time a closed connection gets to take what was queued for it (e.g. a
/// `Redirect`) before it is dropped.
const CLOSE_LINGER: Duration = Duration::from_secs(5);

/// Wall-clock milliseconds: the core's notion of "now" (records carry
/// wall-clock expiry, so a monotonic clock would not do).
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// TCP keepalive on a link's socket with the detection time of the link's
/// own liveness rule (`supervox_core::link::DEAD_AFTER_MS`, 75 s): first
/// probe after 25 s idle, then every 10 s, dead after 5 unanswered — and the
/// same bound on data left unacknowledged (`TCP_USER_TIMEOUT`), so a peer
/// that vanishes mid-send is found as fast. The probes keep NAT mappings
/// alive as our pings did; the kernel answers them without waking us.
pub fn transport_keepalive(stream: &TcpStream) -> std::io::Result<()> {
    use supervox_core::link::{DEAD_AFTER_MS, KEEPALIVE_MS};
    let idle = Duration::from_millis(KEEPALIVE_MS);
    let interval = Duration::from_secs(10);
    let retries = ((DEAD_AFTER_MS - KEEPALIVE_MS) / 10_000) as u32;
    let ka = socket2::TcpKeepalive::new().with_time(idle).with_interval(interval).with_retries(retries);
    let s = socket2::SockRef::from(stream);
    s.set_tcp_keepalive(&ka)?;
    s.set_tcp_user_timeout(Some(Duration::from_millis(DEAD_AFTER_MS)))
}

/// Sleep until the wall-clock ms `at_ms` (a deadline from a machine's
/// `poll_timeout`; one in the past returns at once); `None` never returns.
/// The drivers' one timer: they sleep until their machines' earliest
/// deadline or the next input, never on a fixed clock.
pub async fn sleep_until_ms(at_ms: Option<u64>) {
    match at_ms {
        Some(at) => tokio::time::sleep(Duration::from_millis(at.saturating_sub(now_ms()))).await,
        None => std::future::pending().await,
    }
}

/// What the connections tell the actor.
#[derive(Debug)]
pub enum NetEvent {
    /// Bytes read from a connection.
    Bytes(ConnId, Vec<u8>),
    /// The connection's socket closed or failed.
    Closed(ConnId, String),
    /// An outgoing connect finished.
    Dialed(SocketAddr, Result<TcpStream, String>),
}

/// Connections whose socket became readable or writable, for the actor.
#[derive(Debug, Default)]
pub struct Ready {
    queue: Mutex<Vec<ConnId>>,
    notify: Notify,
}

impl Ready {
    /// Wait until some connection is ready; then call [`LinkSet::poll_ready`].
    pub async fn wait(&self) {
        self.notify.notified().await
    }

    fn push(&self, conn: ConnId) {
        // A poisoned lock only means a waker panicked mid-push: the Vec is intact.
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).push(conn);
        self.notify.notify_one();
    }
}

/// The waker a connection's socket registers: queues the connection once
/// until the actor has served it.
struct ConnWaker {
    conn: ConnId,
    queued: AtomicBool,
    ready: Arc<Ready>,
}

impl Wake for ConnWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref()
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.swap(true, Ordering::AcqRel) {
            self.ready.push(self.conn);
        }
    }
}

struct Entry {
    link: Link,
    remote: SocketAddr,
    stream: TcpStream,
    waker: Arc<ConnWaker>,
    /// A frame the socket took only in part, and how much of it went out
    /// (an empty Vec holds no memory).
    partial: Vec<u8>,
    sent: usize,
}

/// All connections of one actor.
pub struct LinkSet {
    identity: Identity,
    conns: HashMap<ConnId, Entry>,
    /// Open connections per host (`defaults::host_key`).
    per_host: HashMap<std::net::IpAddr, usize>,
    next_id: ConnId,
    events: mpsc::Sender<NetEvent>,
    ready: Arc<Ready>,
    buf: Box<[u8]>,
    /// No link's timer is due before this (a bound: lowered when a link is
    /// adopted, recomputed by every sweep; a link's deadline only moves later
    /// as it sends and receives).
    next_due_ms: u64,
    /// When [`LinkSet::tick`] last swept the links.
    last_sweep_ms: u64,
}

// Links hold Noise state and sockets: show how many, not their contents.
impl std::fmt::Debug for LinkSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkSet")
            .field("conns", &self.conns.len())
            .field("next_id", &self.next_id)
            .field("next_due_ms", &self.next_due_ms)
            .finish_non_exhaustive()
    }
}

/// Keepalive sweeps are at least this far apart: every link's timers
/// (25 s keepalive, 75 s liveness, 10 s handshake) tolerate a second's
/// lateness, and a supernode with 10 000 idle clients then wakes for them
/// at most once a second instead of once per client's deadline.
pub const SWEEP_GAP_MS: u64 = 1_000;

impl LinkSet {
    /// A set whose dials report to `events`; socket readiness is announced
    /// through [`LinkSet::ready`].
    pub fn new(identity: Identity, events: mpsc::Sender<NetEvent>) -> Self {
        Self {
            identity,
            conns: HashMap::new(),
            per_host: HashMap::new(),
            next_id: 1,
            events,
            ready: Arc::default(),
            buf: vec![0u8; READ_CHUNK].into_boxed_slice(),
            next_due_ms: u64::MAX,
            last_sweep_ms: 0,
        }
    }

    /// When [`LinkSet::tick`] should next run (the timer contract of
    /// `supervox_core::timer`): the earliest link deadline, but no sooner
    /// than [`SWEEP_GAP_MS`] after the last sweep; `None` without links.
    pub fn poll_timeout(&self) -> Option<u64> {
        (!self.conns.is_empty()).then(|| self.next_due_ms.max(self.last_sweep_ms + SWEEP_GAP_MS))
    }

    /// What the actor waits on (`ready.wait()`) before calling
    /// [`LinkSet::poll_ready`].
    pub fn ready(&self) -> Arc<Ready> {
        Arc::clone(&self.ready)
    }

    /// Number of open connections.
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// True when no connection is open.
    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// Open connections from the host of `ip` (an IPv4 address or an IPv6 /64).
    pub fn from_host(&self, ip: std::net::IpAddr) -> usize {
        self.per_host.get(&crate::defaults::host_key(ip)).copied().unwrap_or(0)
    }

    /// Remote address of a connection.
    pub fn remote(&self, conn: ConnId) -> Option<SocketAddr> {
        self.conns.get(&conn).map(|e| e.remote)
    }

    /// Start dialling `addr` in the background; the result arrives as
    /// [`NetEvent::Dialed`].
    pub fn dial(&self, addr: SocketAddr) {
        let events = self.events.clone();
        tokio::spawn(async move {
            let r = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
                Ok(Ok(s)) => Ok(s),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("connect timed out".to_string()),
            };
            let _ = events.send(NetEvent::Dialed(addr, r)).await;
        });
    }

    /// Adopt a connected stream and start its link (as initiator if we
    /// dialled). Its socket is polled at the next [`LinkSet::poll_ready`].
    pub fn adopt(&mut self, stream: TcpStream, initiator: bool, hello: Message) -> Result<ConnId, LinkError> {
        let now = now_ms();
        let mut link = if initiator {
            Link::initiator(&self.identity, hello, now)?
        } else {
            Link::responder(&self.identity, hello, now)?
        };
        let _ = stream.set_nodelay(true);
        // The kernel keeps the link alive and finds a dead peer; our own
        // pings then go out rarely, so idle links wake nobody.
        match transport_keepalive(&stream) {
            Ok(()) => link.set_transport_keepalive(),
            Err(e) => {
                debug!("no TCP keepalive ({e}): the link pings every {} s", supervox_core::link::KEEPALIVE_MS / 1000)
            }
        }
        let remote = stream.peer_addr().map_err(|e| LinkError::Protocol(e.to_string()))?;
        let conn = self.next_id;
        self.next_id += 1;
        // Queued from the start: the first poll registers the socket's interest.
        let waker = Arc::new(ConnWaker { conn, queued: AtomicBool::new(true), ready: Arc::clone(&self.ready) });
        self.ready.push(conn);
        self.next_due_ms = self.next_due_ms.min(link.poll_timeout());
        *self.per_host.entry(crate::defaults::host_key(remote.ip())).or_default() += 1;
        self.conns.insert(conn, Entry { link, remote, stream, waker, partial: Vec::new(), sent: 0 });
        self.flush(conn)?;
        Ok(conn)
    }

    /// Serve the connections whose sockets became ready: write what their
    /// links queued, read what arrived. Returns what was read (and which
    /// sockets closed) for the actor to handle like any [`NetEvent`].
    pub fn poll_ready(&mut self) -> Vec<NetEvent> {
        let batch: Vec<ConnId> = {
            let mut q = self.ready.queue.lock().unwrap_or_else(|p| p.into_inner());
            if q.len() > READY_BATCH {
                q.drain(..READY_BATCH).collect()
            } else {
                let all = std::mem::take(&mut *q);
                // The queue grew to the largest wave of ready sockets: give that back.
                *q = Vec::with_capacity(READY_BATCH);
                all
            }
        };
        if !self.ready.queue.lock().unwrap_or_else(|p| p.into_inner()).is_empty() {
            // More to serve: come back after the actor handled this batch.
            self.ready.notify.notify_one();
        }
        let mut out = Vec::new();
        for conn in batch {
            let Some(e) = self.conns.get(&conn) else {
                continue;
            };
            // Cleared before any I/O, so readiness from here on queues it again.
            e.waker.queued.store(false, Ordering::Release);
            if let Err(err) = self.flush(conn) {
                out.push(NetEvent::Closed(conn, err.to_string()));
                continue;
            }
            self.read(conn, &mut out);
        }
        out
    }

    /// Read what `conn`'s socket holds (at most [`READS_PER_WAKE`] chunks),
    /// then leave its waker registered for more.
    fn read(&mut self, conn: ConnId, out: &mut Vec<NetEvent>) {
        let Some(e) = self.conns.get(&conn) else {
            return;
        };
        let waker = Waker::from(Arc::clone(&e.waker));
        let mut cx = Context::from_waker(&waker);
        let mut reads = 0;
        loop {
            if reads == READS_PER_WAKE {
                // Others' turn; this one stays queued.
                waker.wake_by_ref();
                return;
            }
            match e.stream.try_read(&mut self.buf) {
                Ok(0) => {
                    out.push(NetEvent::Closed(conn, "connection closed by peer".into()));
                    return;
                }
                Ok(n) => {
                    reads += 1;
                    out.push(NetEvent::Bytes(conn, self.buf[..n].to_vec()));
                }
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => match e.stream.poll_read_ready(&mut cx) {
                    Poll::Pending => return,
                    Poll::Ready(Ok(())) => continue,
                    Poll::Ready(Err(err)) => {
                        out.push(NetEvent::Closed(conn, err.to_string()));
                        return;
                    }
                },
                Err(err) => {
                    out.push(NetEvent::Closed(conn, err.to_string()));
                    return;
                }
            }
        }
    }

    /// Feed bytes read from `conn`; returns link events. On error the
    /// connection is already closed; the caller reports it to the core.
    pub fn handle_bytes(&mut self, conn: ConnId, bytes: &[u8]) -> Result<Vec<LinkEvent>, LinkError> {
        let Some(e) = self.conns.get_mut(&conn) else {
            return Ok(Vec::new());
        };
        let r = e.link.handle_bytes(bytes, now_ms());
        match r {
            Ok(ev) => {
                self.flush(conn)?;
                Ok(ev)
            }
            Err(err) => {
                self.close(conn, &err.to_string());
                Err(err)
            }
        }
    }

    /// Send a message; on error the connection is closed.
    pub fn send(&mut self, conn: ConnId, msg: &Message) -> Result<(), LinkError> {
        let Some(e) = self.conns.get_mut(&conn) else {
            return Err(LinkError::Protocol("no such connection".into()));
        };
        if let Err(err) = e.link.send(msg) {
            self.close(conn, &err.to_string());
            return Err(err);
        }
        self.flush(conn)
    }

    /// Write what the link queued until the socket would block; then the
    /// rest waits in the link's outbox (bounded by `MAX_OUTBOX_BYTES`) and the
    /// socket's writability wakes the connection. On error the connection
    /// is closed.
    fn flush(&mut self, conn: ConnId) -> Result<(), LinkError> {
        let Some(e) = self.conns.get_mut(&conn) else {
            return Ok(());
        };
        let now = now_ms();
        let failed = loop {
            if e.sent == e.partial.len() {
                e.partial = Vec::new();
                e.sent = 0;
                match e.link.poll_transmit(now) {
                    Some(b) => e.partial = b,
                    None => return Ok(()),
                }
            }
            match e.stream.try_write(&e.partial[e.sent..]) {
                Ok(0) => break "socket took no bytes".to_string(),
                Ok(n) => e.sent += n,
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                    let waker = Waker::from(Arc::clone(&e.waker));
                    match e.stream.poll_write_ready(&mut Context::from_waker(&waker)) {
                        Poll::Pending => return Ok(()),
                        Poll::Ready(Ok(())) => continue,
                        Poll::Ready(Err(err)) => break err.to_string(),
                    }
                }
                Err(err) => break err.to_string(),
            }
        };
        let reason = format!("write failed: {failed}");
        self.close(conn, &reason);
        Err(LinkError::Protocol(reason))
    }

    /// Close a connection (idempotent). What its link still had queued is
    /// written in the background (for up to [`CLOSE_LINGER`]) before the
    /// socket shuts down.
    pub fn close(&mut self, conn: ConnId, reason: &str) {
        let Some(mut e) = self.conns.remove(&conn) else {
            return;
        };
        let host = crate::defaults::host_key(e.remote.ip());
        if let Some(n) = self.per_host.get_mut(&host) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_host.remove(&host);
            }
        }
        debug!(conn, remote = %e.remote, "closing connection: {reason}");
        let mut rest = e.partial.split_off(e.sent.min(e.partial.len()));
        while let Some(b) = e.link.poll_transmit(now_ms()) {
            rest.extend_from_slice(&b);
        }
        let mut stream = e.stream;
        tokio::spawn(async move {
            let _ = tokio::time::timeout(CLOSE_LINGER, async {
                if !rest.is_empty() {
                    stream.write_all(&rest).await?;
                }
                stream.shutdown().await
            })
            .await;
        });
    }

    /// Keepalive and liveness for every link; returns the connections that
    /// failed (already closed) with their reasons.
    pub fn tick(&mut self) -> Vec<(ConnId, String)> {
        let now = now_ms();
        let mut dead = Vec::new();
        // Only the links that are due: a supernode has up to 100 000, most idle.
        // The same scan finds the next deadline of the others.
        let mut next = u64::MAX;
        let mut due = Vec::new();
        for (c, e) in &self.conns {
            let at = e.link.poll_timeout();
            if now >= at {
                due.push(*c);
            } else {
                next = next.min(at);
            }
        }
        for conn in due {
            let Some(e) = self.conns.get_mut(&conn) else {
                continue;
            };
            if let Err(err) = e.link.handle_timeout(now) {
                self.close(conn, &err.to_string());
                dead.push((conn, err.to_string()));
                continue;
            }
            if let Err(err) = self.flush(conn) {
                dead.push((conn, err.to_string()));
            }
            // After the flush: a ping written counts as sent.
            if let Some(e) = self.conns.get(&conn) {
                next = next.min(e.link.poll_timeout());
            }
        }
        self.next_due_ms = next;
        self.last_sweep_ms = now;
        dead
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use supervox_proto::Role;

    fn hello(id: &Identity, role: Role) -> Message {
        Message::Hello { role, identity: id.user_id(), advertise: None, agent: "t".into() }
    }

    /// Serve one side's ready sockets; its link events (and closes) go to `got`.
    fn serve(links: &mut LinkSet, got: &mut Vec<Result<LinkEvent, String>>) {
        for ev in links.poll_ready() {
            match ev {
                NetEvent::Bytes(conn, b) => match links.handle_bytes(conn, &b) {
                    Ok(evs) => got.extend(evs.into_iter().map(Ok)),
                    Err(e) => got.push(Err(e.to_string())),
                },
                NetEvent::Closed(conn, reason) => {
                    links.close(conn, &reason);
                    got.push(Err(reason));
                }
                NetEvent::Dialed(..) => {}
            }
        }
    }

    /// Both sides served until `done` holds for what `b` received (or 10 s).
    async fn drive(
        a: &mut LinkSet,
        b: &mut LinkSet,
        got_a: &mut Vec<Result<LinkEvent, String>>,
        got_b: &mut Vec<Result<LinkEvent, String>>,
        done: impl Fn(&[Result<LinkEvent, String>]) -> bool,
    ) {
        let (ra, rb) = (a.ready(), b.ready());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !done(got_b) {
            tokio::select! {
                _ = ra.wait() => serve(a, got_a),
                _ = rb.wait() => serve(b, got_b),
                _ = tokio::time::sleep_until(deadline) => panic!("timed out; b got {} events", got_b.len()),
            }
        }
    }

    #[tokio::test]
    async fn adopted_sockets_keep_alive_in_the_kernel_and_the_set_sleeps_until_the_slow_ping() {
        let (ev_tx, _ev_rx) = mpsc::channel(4);
        let id = Identity::from_seed([1; 32]);
        let mut set = LinkSet::new(id.clone(), ev_tx);
        assert_eq!(set.poll_timeout(), None, "no links, no timer");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dialled = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let _accepted = listener.accept().await.unwrap();
        let before = now_ms();
        let conn = set.adopt(dialled, true, hello(&id, Role::Client)).unwrap();
        let sock = socket2::SockRef::from(&set.conns[&conn].stream);
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.tcp_keepalive_time().unwrap(), Duration::from_secs(25));
        assert_eq!(sock.tcp_keepalive_interval().unwrap(), Duration::from_secs(10));
        assert_eq!(sock.tcp_keepalive_retries().unwrap(), 5);
        assert_eq!(sock.tcp_user_timeout().unwrap(), Some(Duration::from_secs(75)));
        // The handshake's 10 s limit is the first deadline.
        let due = set.poll_timeout().unwrap();
        assert!(due >= before + supervox_core::link::HANDSHAKE_TIMEOUT_MS, "{due}");
    }

    #[tokio::test]
    async fn a_peer_that_stops_reading_still_gets_every_frame_in_order_and_queued_frames_outlive_close() {
        let (ev_tx, _ev_rx) = mpsc::channel(4);
        let (ida, idb) = (Identity::from_seed([1; 32]), Identity::from_seed([2; 32]));
        let mut a = LinkSet::new(ida.clone(), ev_tx.clone());
        let mut b = LinkSet::new(idb.clone(), ev_tx);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dialled = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        // Small kernel buffers (no autotuning): what follows cannot all fit in them.
        socket2::SockRef::from(&accepted).set_send_buffer_size(32 * 1024).unwrap();
        socket2::SockRef::from(&dialled).set_recv_buffer_size(32 * 1024).unwrap();
        let ca = a.adopt(accepted, false, hello(&ida, Role::Supernode)).unwrap();
        b.adopt(dialled, true, hello(&idb, Role::Client)).unwrap();
        let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
        drive(&mut a, &mut b, &mut got_a, &mut got_b, |g| !g.is_empty()).await;
        assert!(matches!(got_b[0], Ok(LinkEvent::Established { role: Role::Supernode, .. })), "{got_b:?}");
        got_b.clear();
        // 1 MB while b reads nothing: far more than the socket buffers take,
        // so nearly all of it waits in the link's outbox for writability, and
        // is still there when the connection is closed.
        let n = 1000;
        for i in 0..n {
            let reason = format!("{i:05}{}", "x".repeat(1000));
            a.send(ca, &Message::Error { reason }).unwrap();
        }
        a.send(ca, &Message::Error { reason: "bye".into() }).unwrap();
        a.close(ca, "done");
        assert_eq!(a.len(), 0);
        drive(&mut a, &mut b, &mut got_a, &mut got_b, |g| g.iter().any(|e| e.is_err())).await;
        let texts: Vec<String> = got_b
            .iter()
            .filter_map(|e| match e {
                Ok(LinkEvent::Message(Message::Error { reason })) => Some(reason.chars().take(5).collect()),
                _ => None,
            })
            .collect();
        let want: Vec<String> = (0..n).map(|i| format!("{i:05}")).chain(["bye".to_string()]).collect();
        assert_eq!(texts, want);
        // Then the close itself.
        assert_eq!(got_b.last(), Some(&Err("connection closed by peer".to_string())));
    }
}
