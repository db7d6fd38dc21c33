//! A minimal Prometheus text endpoint (`--metrics IP:PORT`): any HTTP GET gets
//! a snapshot the actor renders for that request (no periodic refresh: an
//! idle supernode is not woken for metrics nobody reads). Requests are
//! bounded in size and time; at most a few are served at once.

use anyhow::{Context, Result};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, Semaphore};

const MAX_REQUEST: usize = 8 * 1024;
const MAX_CONCURRENT: usize = 8;

/// A request for the current metrics text, answered by the actor.
pub type SnapshotRequest = oneshot::Sender<String>;

/// Serve on `addr` the text the actor sends back for each request on `snapshots`.
pub async fn serve(addr: SocketAddr, snapshots: mpsc::Sender<SnapshotRequest>) -> Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await.with_context(|| format!("cannot listen for metrics on {addr}"))?;
    let local = listener.local_addr()?;
    let slots = Arc::new(Semaphore::new(MAX_CONCURRENT));
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { continue };
            let Ok(permit) = slots.clone().try_acquire_owned() else { continue };
            let snapshots = snapshots.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let mut buf = vec![0u8; MAX_REQUEST];
                let mut n = 0;
                // Read until the end of the request head, a full buffer or 2 s.
                let _ = tokio::time::timeout(Duration::from_secs(2), async {
                    while n < buf.len() {
                        match stream.read(&mut buf[n..]).await {
                            Ok(0) | Err(_) => break,
                            Ok(k) => n += k,
                        }
                        if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                            break;
                        }
                    }
                })
                .await;
                let resp = if buf[..n].starts_with(b"GET ") {
                    let (tx, rx) = oneshot::channel();
                    let body = match snapshots.try_send(tx) {
                        Ok(()) => tokio::time::timeout(Duration::from_secs(2), rx).await.ok().and_then(Result::ok),
                        Err(_) => None,
                    };
                    let Some(body) = body else {
                        let busy = "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
                        let _ = stream.write_all(busy.as_bytes()).await;
                        return;
                    };
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    )
                } else {
                    "HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_string()
                };
                let _ = stream.write_all(resp.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    Ok(local)
}

/// Render metrics in the Prometheus text format.
pub fn render(metrics: &[(&str, &str, u64)]) -> String {
    let mut out = String::new();
    for (name, help, value) in metrics {
        out.push_str(&format!(
            "# HELP supervox_{name} {help}\n# TYPE supervox_{name} gauge\nsupervox_{name} {value}\n"
        ));
    }
    out
}
