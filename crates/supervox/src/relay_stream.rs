//! A TCP stream carrying TURN (RFC 8656 over TCP, or over TLS over TCP): the
//! client side of a relay reached over a stream, and nothing else. The sans-IO
//! `TurnClient` decides what to send; this only connects (and for TLS checks
//! the pinned certificate, see [`crate::tls`]), frames and moves bytes.

use std::net::SocketAddr;
use std::time::Duration;

use supervox_turn::TcpFramer;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// How long connecting (and the TLS handshake) may take.
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

/// Connect to `server` in the background — inside TLS when `tls` pins the certificate the
/// server must show (SHA-256 of its DER); returns the write side. Dropping it closes the stream.
pub fn open(
    server: SocketAddr,
    tls: Option<[u8; 32]>,
    generation: u64,
    events: mpsc::Sender<RelayStreamEvent>,
) -> mpsc::Sender<Vec<u8>> {
    let (tx, rx) = mpsc::channel::<Vec<u8>>(WRITE_QUEUE);
    tokio::spawn(async move {
        let closed = |reason: String| {
            let events = events.clone();
            async move {
                let _ = events.send(RelayStreamEvent::Closed(generation, reason)).await;
            }
        };
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(server)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return closed(format!("connect to {server}: {e}")).await,
            Err(_) => return closed(format!("connect to {server} timed out")).await,
        };
        // Given up while we connected (a raced stream that lost to UDP): no allocation can
        // exist on a stream never written to, so there is nothing to release.
        if rx.is_closed() {
            return;
        }
        let _ = stream.set_nodelay(true);
        let Some(pin) = tls else { return pump(stream, rx, generation, events).await };
        let config = match crate::tls::pinned_client_config(pin) {
            Ok(c) => c,
            Err(e) => return closed(format!("TLS to {server}: {e}")).await,
        };
        let connector = tokio_rustls::TlsConnector::from(config);
        let name = rustls::pki_types::ServerName::IpAddress(server.ip().into());
        match tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, stream)).await {
            Ok(Ok(s)) => pump(s, rx, generation, events).await,
            Ok(Err(e)) => closed(format!("TLS handshake with {server}: {e}")).await,
            Err(_) => closed(format!("TLS handshake with {server} timed out")).await,
        }
    });
    tx
}

/// Move frames both ways on a connected stream until it ends or `rx` is dropped.
async fn pump<S>(stream: S, mut rx: mpsc::Receiver<Vec<u8>>, generation: u64, events: mpsc::Sender<RelayStreamEvent>)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (r, mut w) = tokio::io::split(stream);
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
    // Our side let go: close TLS politely (best effort), then the socket.
    let _ = tokio::time::timeout(Duration::from_millis(200), w.shutdown()).await;
    reader.abort();
}
