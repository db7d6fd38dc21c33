//! TCP media streams (RFC 6544 TCP candidates; the logic is in
//! `supervox_core::client`, module `tcp`): the listener at the media socket's
//! IP, outbound connects, and RFC 4571 framing — each media datagram behind a
//! 2-byte big-endian length. One task per stream moves frames both ways; the
//! node actor owns the map of streams and closes a stream by aborting its task.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;
use supervox_core::media_path::{HEADER_LEN, MAX_DATAGRAM};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

/// Events waiting for the node actor at most (readers wait when it is full).
pub const EVENT_QUEUE: usize = 1024;
/// Streams open at once (all calls, both directions); connections accepted
/// beyond are closed at once. The client's own limits are lower.
pub const MAX_STREAMS: usize = 32;
/// How long an outbound connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Frames queued for writing per stream before new ones are dropped (media is
/// real-time: a stream that cannot keep up loses frames, not latency).
const WRITE_QUEUE: usize = 64;
/// Shortest frame: a media datagram's header and AEAD tag.
const MIN_FRAME: usize = HEADER_LEN + 16;

/// What the TCP media side reports to the node actor.
#[derive(Debug)]
pub enum TcpMediaEvent {
    /// The listener accepted a connection (not yet a stream: the client decides).
    Accepted(TcpStream, SocketAddr),
    /// Outbound stream `id` connected.
    Connected(u64),
    /// One frame (length prefix removed) from stream `id`.
    Frame(u64, Vec<u8>),
    /// Stream `id` failed to connect, failed, or was closed by the peer; `true`
    /// when the connect was refused (a reset answered the SYN).
    Closed(u64, String, bool),
}

struct Handle {
    tx: mpsc::Sender<Vec<u8>>,
    task: JoinHandle<()>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The node's TCP media streams.
pub struct TcpMedia {
    streams: HashMap<u64, Handle>,
    events: mpsc::Sender<TcpMediaEvent>,
    _listener: Option<JoinHandle<()>>,
    /// The listener's address: simultaneous-open connections leave from it.
    local: Option<SocketAddr>,
}

impl TcpMedia {
    /// Listen at `at` (the media socket's address; any port if that one is
    /// taken). Returns the streams and the listening port, if listening works.
    /// Call inside a tokio runtime: the accept task is spawned at once.
    pub fn listen(at: SocketAddr, events: mpsc::Sender<TcpMediaEvent>) -> (Self, Option<u16>) {
        let listener = match reusable(at).and_then(|s| s.listen(64)) {
            Ok(l) => Ok(l),
            Err(_) => reusable(SocketAddr::new(at.ip(), 0)).and_then(|s| s.listen(64)),
        };
        let (task, local) = match listener {
            Ok(l) => {
                let local = l.local_addr().ok();
                (Some(tokio::spawn(accept_loop(l, events.clone()))), local)
            }
            Err(e) => {
                warn!("no TCP media listener at {}: {e}; no passive TCP candidate", at.ip());
                (None, None)
            }
        };
        (TcpMedia { streams: HashMap::new(), events, _listener: task, local }, local.map(|a| a.port()))
    }

    /// True when another stream may be opened or accepted.
    pub fn has_room(&self) -> bool {
        self.streams.len() < MAX_STREAMS
    }

    /// Connect stream `id` to `to` in the background; false when there are
    /// too many streams already (nothing started).
    /// `simultaneous`: connect from the listener's own address (simultaneous
    /// open; the peer dials us at the same time).
    pub fn connect(&mut self, id: u64, to: SocketAddr, simultaneous: bool) -> bool {
        if !self.has_room() {
            return false;
        }
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        let events = self.events.clone();
        let from = if simultaneous { self.local } else { None };
        let task = tokio::spawn(async move {
            let connect = async {
                match from {
                    Some(from) => reusable(from)?.connect(to).await,
                    None => TcpStream::connect(to).await,
                }
            };
            let stream = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    let refused = e.kind() == std::io::ErrorKind::ConnectionRefused;
                    return closed(&events, id, format!("connect to {to}: {e}"), refused).await;
                }
                Err(_) => return closed(&events, id, format!("connect to {to} timed out"), false).await,
            };
            if events.send(TcpMediaEvent::Connected(id)).await.is_ok() {
                pump(id, stream, rx, events).await;
            }
        });
        self.streams.insert(id, Handle { tx, task });
        true
    }

    /// Run accepted connection `stream` as stream `id`.
    pub fn adopt(&mut self, id: u64, stream: TcpStream) {
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        let task = tokio::spawn(pump(id, stream, rx, self.events.clone()));
        self.streams.insert(id, Handle { tx, task });
    }

    /// Queue one frame on stream `id` (dropped when its queue is full).
    pub fn send(&mut self, id: u64, bytes: Vec<u8>) {
        if let Some(h) = self.streams.get(&id) {
            if h.tx.try_send(bytes).is_err() {
                debug!("TCP media stream {id}: write queue full, frame dropped");
            }
        }
    }

    /// Close stream `id` (aborting its task closes the socket).
    pub fn close(&mut self, id: u64) {
        self.streams.remove(&id);
    }

    /// Forget a stream that reported its end.
    pub fn forget(&mut self, id: u64) -> bool {
        self.streams.remove(&id).is_some()
    }
}

async fn closed(events: &mpsc::Sender<TcpMediaEvent>, id: u64, reason: String, refused: bool) {
    let _ = events.send(TcpMediaEvent::Closed(id, reason, refused)).await;
}

/// A TCP socket bound to `at` that shares the address with the listener
/// (`SO_REUSEADDR` + `SO_REUSEPORT`): the listener and simultaneous-open
/// connections use the one port the peer was told about.
fn reusable(at: SocketAddr) -> std::io::Result<tokio::net::TcpSocket> {
    let s = if at.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    s.set_reuseaddr(true)?;
    #[cfg(unix)]
    s.set_reuseport(true)?;
    s.bind(at)?;
    Ok(s)
}

async fn accept_loop(l: TcpListener, events: mpsc::Sender<TcpMediaEvent>) {
    loop {
        match l.accept().await {
            Ok((s, from)) => {
                if events.send(TcpMediaEvent::Accepted(s, from)).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                // Out of descriptors, for instance: do not spin.
                warn!("TCP media listener: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Split RFC 4571 frames off `buf` (complete frames are appended to `out`, a partial one
/// stays in `buf`); `Err` on a length no media datagram has. Public for the fuzz targets.
pub fn take_frames(buf: &mut Vec<u8>, out: &mut Vec<Vec<u8>>) -> Result<(), String> {
    let mut at = 0;
    while buf.len() - at >= 2 {
        let len = u16::from_be_bytes([buf[at], buf[at + 1]]) as usize;
        if !(MIN_FRAME..=MAX_DATAGRAM).contains(&len) {
            return Err(format!("bad frame length {len}"));
        }
        if buf.len() - at - 2 < len {
            break;
        }
        out.push(buf[at + 2..at + 2 + len].to_vec());
        at += 2 + len;
    }
    buf.drain(..at);
    Ok(())
}

/// Move frames both ways on a connected stream until it ends or the actor
/// drops the write side (then the task is aborted anyway).
async fn pump(id: u64, stream: TcpStream, mut rx: mpsc::Receiver<Vec<u8>>, events: mpsc::Sender<TcpMediaEvent>) {
    let _ = stream.set_nodelay(true);
    let (mut r, mut w) = stream.into_split();
    // At most one partial frame plus one read stays buffered.
    let mut buf = Vec::with_capacity(2 * (MAX_DATAGRAM + 2));
    let mut chunk = vec![0u8; MAX_DATAGRAM + 2];
    let mut frames = Vec::new();
    let reason = loop {
        tokio::select! {
            n = r.read(&mut chunk) => {
                let n = match n {
                    Ok(0) => break "closed by the peer".to_string(),
                    Ok(n) => n,
                    Err(e) => break e.to_string(),
                };
                buf.extend_from_slice(&chunk[..n]);
                if let Err(e) = take_frames(&mut buf, &mut frames) {
                    break e;
                }
                for f in frames.drain(..) {
                    if events.send(TcpMediaEvent::Frame(id, f)).await.is_err() {
                        return;
                    }
                }
            }
            b = rx.recv() => {
                let Some(b) = b else { return };
                let Ok(len) = u16::try_from(b.len()) else { continue };
                let mut framed = Vec::with_capacity(2 + b.len());
                framed.extend_from_slice(&len.to_be_bytes());
                framed.extend_from_slice(&b);
                if let Err(e) = w.write_all(&framed).await {
                    break format!("write: {e}");
                }
            }
        }
    };
    closed(&events, id, reason, false).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_split_across_reads_and_bad_lengths_refused() {
        let body = vec![7u8; MIN_FRAME];
        let mut wire = Vec::new();
        for _ in 0..2 {
            wire.extend_from_slice(&(MIN_FRAME as u16).to_be_bytes());
            wire.extend_from_slice(&body);
        }
        // Fed one byte at a time, the two frames come out whole and once.
        let (mut buf, mut out) = (Vec::new(), Vec::new());
        for b in &wire {
            buf.push(*b);
            take_frames(&mut buf, &mut out).unwrap();
        }
        assert_eq!(out, vec![body.clone(), body]);
        assert!(buf.is_empty());
        for bad in [0u16, (MIN_FRAME - 1) as u16, (MAX_DATAGRAM + 1) as u16, u16::MAX] {
            let mut buf = bad.to_be_bytes().to_vec();
            assert!(take_frames(&mut buf, &mut Vec::new()).is_err(), "length {bad} accepted");
        }
    }
}
