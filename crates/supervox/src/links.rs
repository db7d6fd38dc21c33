//! The async shell around [`supervox_core::link::Link`]: one reader and one
//! writer task per TCP connection, all feeding a single actor through a
//! bounded channel. The actor owns every `Link` and all protocol state, so
//! no protocol logic runs concurrently and nothing needs a lock.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use supervox_core::link::{Link, LinkError, LinkEvent};
use supervox_core::{ConnId, Identity};
use supervox_proto::Message;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::debug;

/// Frames queued per connection for its writer before it counts as stuck.
const WRITE_QUEUE: usize = 1024;
/// Time allowed for a TCP connect.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Wall-clock milliseconds: the core's notion of "now" (records carry
/// wall-clock expiry, so a monotonic clock would not do).
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// What connection tasks tell the actor.
#[derive(Debug)]
pub enum NetEvent {
    /// Bytes read from a connection.
    Bytes(ConnId, Vec<u8>),
    /// The connection's socket closed or failed.
    Closed(ConnId, String),
    /// An outgoing connect finished.
    Dialed(SocketAddr, Result<TcpStream, String>),
}

struct Entry {
    link: Link,
    remote: SocketAddr,
    tx: mpsc::Sender<Vec<u8>>,
    reader: JoinHandle<()>,
}

/// All connections of one actor.
pub struct LinkSet {
    identity: Identity,
    conns: HashMap<ConnId, Entry>,
    next_id: ConnId,
    events: mpsc::Sender<NetEvent>,
}

impl LinkSet {
    /// A set whose tasks report to `events`.
    pub fn new(identity: Identity, events: mpsc::Sender<NetEvent>) -> Self {
        Self { identity, conns: HashMap::new(), next_id: 1, events }
    }

    /// Number of open connections.
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// True when no connection is open.
    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
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

    /// Adopt a connected stream: start its link (as initiator if we dialled)
    /// and its reader and writer tasks.
    pub fn adopt(&mut self, stream: TcpStream, initiator: bool, hello: Message) -> Result<ConnId, LinkError> {
        let now = now_ms();
        let link = if initiator {
            Link::initiator(&self.identity, hello, now)?
        } else {
            Link::responder(&self.identity, hello, now)?
        };
        let _ = stream.set_nodelay(true);
        let remote = stream.peer_addr().map_err(|e| LinkError::Protocol(e.to_string()))?;
        let conn = self.next_id;
        self.next_id += 1;
        let (rd, mut wr) = stream.into_split();
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(WRITE_QUEUE);
        tokio::spawn(async move {
            while let Some(bytes) = rx.recv().await {
                if wr.write_all(&bytes).await.is_err() {
                    break;
                }
            }
            let _ = wr.shutdown().await;
        });
        let events = self.events.clone();
        let reader = tokio::spawn(async move {
            let reason = loop {
                // Wait for data first and read into a buffer that lives only
                // while the task runs: an idle connection then holds no read
                // buffer (16 KiB each would dominate a supernode's memory).
                if let Err(e) = rd.readable().await {
                    break e.to_string();
                }
                let chunk = {
                    let mut buf = [0u8; 16 * 1024];
                    match rd.try_read(&mut buf) {
                        Ok(0) => break "connection closed by peer".to_string(),
                        Ok(n) => buf[..n].to_vec(),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                        Err(e) => break e.to_string(),
                    }
                };
                if events.send(NetEvent::Bytes(conn, chunk)).await.is_err() {
                    return;
                }
            };
            let _ = events.send(NetEvent::Closed(conn, reason)).await;
        });
        self.conns.insert(conn, Entry { link, remote, tx, reader });
        self.flush(conn)?;
        Ok(conn)
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

    fn flush(&mut self, conn: ConnId) -> Result<(), LinkError> {
        let Some(e) = self.conns.get_mut(&conn) else {
            return Ok(());
        };
        let now = now_ms();
        while let Some(bytes) = e.link.poll_transmit(now) {
            if e.tx.try_send(bytes).is_err() {
                let err = LinkError::SlowPeer(WRITE_QUEUE);
                self.close(conn, &err.to_string());
                return Err(err);
            }
        }
        Ok(())
    }

    /// Close a connection (idempotent).
    pub fn close(&mut self, conn: ConnId, reason: &str) {
        if let Some(e) = self.conns.remove(&conn) {
            debug!(conn, remote = %e.remote, "closing connection: {reason}");
            e.reader.abort();
            // Dropping `tx` lets the writer flush what is queued and shut down.
        }
    }

    /// Keepalive and liveness for every link; returns the connections that
    /// failed (already closed) with their reasons.
    pub fn tick(&mut self) -> Vec<(ConnId, String)> {
        let now = now_ms();
        let mut dead = Vec::new();
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for conn in ids {
            let Some(e) = self.conns.get_mut(&conn) else {
                continue;
            };
            if now >= e.link.poll_timeout() {
                if let Err(err) = e.link.handle_timeout(now) {
                    self.close(conn, &err.to_string());
                    dead.push((conn, err.to_string()));
                    continue;
                }
            }
            if let Err(err) = self.flush(conn) {
                dead.push((conn, err.to_string()));
            }
        }
        dead
    }
}
