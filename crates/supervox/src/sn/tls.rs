//! The supernode's TURN-over-TLS listeners (`--relay-tls-listen`, RFC 8656 §3.1):
//! accept, run the TLS handshake, then hand the plaintext stream to the same TURN
//! stream service as TURN over TCP ([`udp::serve_stream`], transport `Tls`).
//!
//! Whatever arrives on the port cannot disturb the allocations already served: a
//! handshake must finish within [`HANDSHAKE_TIMEOUT`]; at most [`MAX_HANDSHAKES`] run at
//! once and one IP address holds at most [`MAX_CONNECTIONS_PER_IP`] connections (both
//! refused by closing at once, not queued); garbage fails the handshake and is closed;
//! established streams count against the plane's `MAX_TCP_CLIENTS` and are closed after
//! `STREAM_IDLE_MS` without an allocation. The handshakes run on the runtime's worker
//! threads, not on the plane thread that forwards media.

use super::udp::{self, TcpEvent};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use supervox_turn::Transport;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, warn};

/// How long a TLS handshake may take, from accept.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// TLS handshakes in progress at most (per listener).
pub const MAX_HANDSHAKES: usize = 256;
/// TLS connections (handshaking or established) one IP address holds at most (per listener).
pub const MAX_CONNECTIONS_PER_IP: usize = 64;

/// Serve TURN over TLS on `listener` until the plane (`events`) goes away.
pub fn spawn_listener(listener: TcpListener, acceptor: TlsAcceptor, events: mpsc::Sender<TcpEvent>) {
    tokio::spawn(async move {
        let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
        let per_ip = Arc::new(Mutex::new(HashMap::new()));
        loop {
            let (stream, remote) = match listener.accept().await {
                Ok(a) => a,
                // e.g. EMFILE: pause instead of spinning.
                Err(e) => {
                    warn!("TLS accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            if events.is_closed() {
                return;
            }
            let Ok(handshake) = Arc::clone(&handshakes).try_acquire_owned() else {
                debug!("TLS: {MAX_HANDSHAKES} handshakes in progress, refusing {remote}");
                continue;
            };
            let Some(slot) = IpSlot::take(&per_ip, remote.ip()) else {
                debug!("TLS: {} holds {MAX_CONNECTIONS_PER_IP} connections, refusing another", remote.ip());
                continue;
            };
            let (acceptor, events) = (acceptor.clone(), events.clone());
            tokio::spawn(async move {
                let _slot = slot;
                let Ok(local) = stream.local_addr() else { return };
                let _ = stream.set_nodelay(true);
                let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => return debug!("TLS handshake from {remote} failed: {e}"),
                    Err(_) => return debug!("TLS handshake from {remote} timed out"),
                };
                drop(handshake);
                udp::serve_stream(tls, Transport::Tls, remote, local, events).await;
            });
        }
    });
}

/// One of an IP address's connection slots; given back on drop.
struct IpSlot {
    map: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl IpSlot {
    fn take(map: &Arc<Mutex<HashMap<IpAddr, usize>>>, ip: IpAddr) -> Option<Self> {
        let mut m = map.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(ip).or_insert(0);
        if *n >= MAX_CONNECTIONS_PER_IP {
            return None;
        }
        *n += 1;
        Some(Self { map: Arc::clone(map), ip })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

/// The address clients reach a TLS listener bound to `local` at: the advertised IP when
/// it listens on every address or on the first `--listen` IP (which `--advertise` stands
/// for), else its own.
pub fn public_addr(local: SocketAddr, first_listen_ip: IpAddr, advertise: SocketAddr) -> SocketAddr {
    if local.ip().is_unspecified() || local.ip() == first_listen_ip {
        SocketAddr::new(advertise.ip(), local.port())
    } else {
        local
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_slots_are_bounded_and_given_back() {
        let map = Arc::new(Mutex::new(HashMap::new()));
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let slots: Vec<_> = (0..MAX_CONNECTIONS_PER_IP).map(|_| IpSlot::take(&map, ip).unwrap()).collect();
        assert!(IpSlot::take(&map, ip).is_none());
        assert!(IpSlot::take(&map, "192.0.2.2".parse().unwrap()).is_some(), "other addresses are not affected");
        drop(slots);
        assert!(map.lock().unwrap().get(&ip).is_none());
        assert!(IpSlot::take(&map, ip).is_some());
    }

    #[test]
    fn tls_addresses_are_advertised_like_the_listen_ports() {
        let adv: SocketAddr = "203.0.113.5:4000".parse().unwrap();
        let first: IpAddr = "10.0.0.5".parse().unwrap();
        assert_eq!(public_addr("0.0.0.0:443".parse().unwrap(), first, adv), "203.0.113.5:443".parse().unwrap());
        assert_eq!(public_addr("10.0.0.5:443".parse().unwrap(), first, adv), "203.0.113.5:443".parse().unwrap());
        assert_eq!(public_addr("10.0.0.6:443".parse().unwrap(), first, adv), "10.0.0.6:443".parse().unwrap());
    }
}
