//! Minimal TURN-over-UDP driver for the sans-IO core, for interop tests only.
//!
//! Serves on 127.0.0.1 with loopback peers allowed and a static test secret. This is the shape
//! of the SN daemon's driver: one client-facing socket, one UDP socket per allocation, a clock.
//!
//! ```text
//! cargo run -p supervox-turn --example turn_udp_server -- [PORT] [SECRET]
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use supervox_turn::{AddressFamily, Output, RelayError, Transport, TurnConfig, TurnServer};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Realm used by the test server.
pub const REALM: &str = "supervox.test";

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

struct Relay {
    socket: Arc<UdpSocket>,
    task: JoinHandle<()>,
}

/// Bind a relay socket on 127.0.0.1 (an even port if asked; a few tries).
async fn bind_relay(even: bool) -> std::io::Result<UdpSocket> {
    for _ in 0..32 {
        let s = UdpSocket::bind("127.0.0.1:0").await?;
        if !even || s.local_addr()?.port() % 2 == 0 {
            return Ok(s);
        }
    }
    Err(std::io::Error::other("no even port"))
}

/// Serve TURN on `socket` until the process ends.
pub async fn serve(socket: UdpSocket, secret: &[u8]) -> std::io::Result<()> {
    let server_addr = socket.local_addr()?;
    let mut cfg = TurnConfig::new(REALM, secret.to_vec());
    cfg.peers.allow_loopback = true;
    cfg.relay_kbps = 0;
    let mut turn = TurnServer::new(cfg, now_ms());
    let mut relays: HashMap<SocketAddr, Relay> = HashMap::new();
    let (peer_tx, mut peer_rx) = mpsc::channel::<(SocketAddr, SocketAddr, Vec<u8>)>(1024);
    let mut buf = vec![0u8; 65_536];
    loop {
        let wait = turn.poll_timeout().map(|t| t.saturating_sub(now_ms())).unwrap_or(1000);
        tokio::select! {
            r = socket.recv_from(&mut buf) => {
                let (n, client) = r?;
                turn.handle_client(Transport::Udp, client, server_addr, &buf[..n], now_ms());
            }
            Some((relay, peer, data)) = peer_rx.recv() => turn.handle_peer(relay, peer, &data, now_ms()),
            _ = tokio::time::sleep(Duration::from_millis(wait)) => turn.handle_timeout(now_ms()),
        }
        while let Some(out) = turn.poll_output() {
            match out {
                Output::ToClient { client, bytes, .. } => {
                    let _ = socket.send_to(&bytes, client).await;
                }
                Output::ToPeer { relay_addr, peer, bytes } => {
                    if let Some(r) = relays.get(&relay_addr) {
                        let _ = r.socket.send_to(&bytes, peer).await;
                    }
                }
                Output::AllocateRelay { token, family, even_port, .. } => {
                    let result = match family {
                        AddressFamily::V6 => Err(RelayError::AddressFamilyNotSupported),
                        AddressFamily::V4 => match bind_relay(even_port).await.and_then(|s| Ok((s.local_addr()?, s))) {
                            Ok((addr, s)) => {
                                let socket = Arc::new(s);
                                let rx_sock = Arc::clone(&socket);
                                let tx = peer_tx.clone();
                                let task = tokio::spawn(async move {
                                    let mut b = vec![0u8; 65_536];
                                    while let Ok((n, peer)) = rx_sock.recv_from(&mut b).await {
                                        if tx.send((addr, peer, b[..n].to_vec())).await.is_err() {
                                            break;
                                        }
                                    }
                                });
                                relays.insert(addr, Relay { socket, task });
                                Ok(addr)
                            }
                            Err(_) => Err(RelayError::InsufficientCapacity),
                        },
                    };
                    turn.relay_allocated(token, result, now_ms());
                }
                Output::ReleaseRelay { relay_addr } => {
                    if let Some(r) = relays.remove(&relay_addr) {
                        r.task.abort();
                    }
                }
            }
        }
    }
}

#[allow(dead_code)]
#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().and_then(|p| p.parse().ok()).unwrap_or(3478);
    let secret = args.next().unwrap_or_else(|| "supervox-test-secret".into());
    let socket = UdpSocket::bind(("127.0.0.1", port)).await?;
    println!("TURN/UDP listening on {}", socket.local_addr()?);
    serve(socket, secret.as_bytes()).await
}
