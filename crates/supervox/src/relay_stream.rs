//! A TCP stream carrying TURN (RFC 8656 over TCP): the client side of a relay
//! reached over TCP, and nothing else. The sans-IO `TurnClient` decides what
//! to send; this only connects, frames and moves bytes.

use std::net::SocketAddr;
use std::time::Duration;

use supervox_turn::TcpFramer;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Messages queued for writing before new ones are dropped (media is real-time).
const WRITE_QUEUE: usize = 512;

/// What a relay stream reports; `generation` tells a stale stream's report from the current one's.
#[derive(Debug)]
pub enum RelayStreamEvent {
    /// One TURN message or ChannelData (padding stripped).
    Frame(u64, Vec<u8>),
    /// The stream could not connect, failed, or was closed by the server.
    Closed(u64, String),
}

/// Read TURN frames (messages and padded ChannelData) from `r` until it ends,
/// sending each wrapped by `wrap` to `tx`; returns why the stream ended, or
/// `Err` once `tx` is closed. Used by both ends of TURN over TCP.
pub async fn read_frames<T>(
    mut r: impl AsyncRead + Unpin,
    tx: &mpsc::Sender<T>,
    wrap: impl Fn(Vec<u8>) -> T,
) -> Result<String, ()> {
    let mut framer = TcpFramer::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) => return Ok("closed by the other end".into()),
            Ok(n) => n,
            Err(e) => return Ok(e.to_string()),
        };
        if let Err(e) = framer.push(&buf[..n]) {
            return Ok(format!("bad stream: {e}"));
        }
        loop {
            match framer.next_frame() {
                Ok(Some(f)) => tx.send(wrap(f.to_vec())).await.map_err(|_| ())?,
                Ok(None) => break,
                Err(e) => return Ok(format!("bad stream: {e}")),
            }
        }
    }
}

/// Connect to `server` in the background; returns the write side. Dropping it closes the stream.
pub fn open(server: SocketAddr, generation: u64, events: mpsc::Sender<RelayStreamEvent>) -> mpsc::Sender<Vec<u8>> {
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(WRITE_QUEUE);
    tokio::spawn(async move {
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(server)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                let _ = events.send(RelayStreamEvent::Closed(generation, format!("connect to {server}: {e}"))).await;
                return;
            }
            Err(_) => {
                let _ =
                    events.send(RelayStreamEvent::Closed(generation, format!("connect to {server} timed out"))).await;
                return;
            }
        };
        let _ = stream.set_nodelay(true);
        let (r, mut w) = stream.into_split();
        let ev = events.clone();
        let reader = tokio::spawn(async move {
            if let Ok(reason) = read_frames(r, &ev, |f| RelayStreamEvent::Frame(generation, f)).await {
                let _ = ev.send(RelayStreamEvent::Closed(generation, reason)).await;
            }
        });
        while let Some(b) = rx.recv().await {
            if let Err(e) = w.write_all(&b).await {
                let _ = events.send(RelayStreamEvent::Closed(generation, format!("write: {e}"))).await;
                break;
            }
        }
        reader.abort();
    });
    tx
}
