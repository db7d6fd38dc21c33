//! A TCP stream carrying TURN (RFC 8656 over TCP): the client side of a relay
//! reached over TCP, and nothing else. The sans-IO `TurnClient` decides what
//! to send; this only connects, frames and moves bytes.

use std::net::SocketAddr;
use std::time::Duration;

use supervox_turn::TcpFramer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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
        let (mut r, mut w) = stream.into_split();
        let ev = events.clone();
        let reader = tokio::spawn(async move {
            let mut framer = TcpFramer::new();
            let mut buf = vec![0u8; 16 * 1024];
            let reason = loop {
                match r.read(&mut buf).await {
                    Ok(0) => break "closed by the server".to_string(),
                    Ok(n) => {
                        if let Err(e) = framer.push(&buf[..n]) {
                            break format!("bad stream: {e}");
                        }
                        loop {
                            match framer.next_frame() {
                                Ok(Some(f)) => {
                                    if ev.send(RelayStreamEvent::Frame(generation, f.to_vec())).await.is_err() {
                                        return;
                                    }
                                }
                                Ok(None) => break,
                                Err(e) => {
                                    let _ =
                                        ev.send(RelayStreamEvent::Closed(generation, format!("bad stream: {e}"))).await;
                                    return;
                                }
                            }
                        }
                    }
                    Err(e) => break e.to_string(),
                }
            };
            let _ = ev.send(RelayStreamEvent::Closed(generation, reason)).await;
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
