//! Spare UDP sockets for port prediction (the hard side's many mappings; see
//! `supervox_core::media_path::predict`). The client state machine decides
//! when to open and close them and what to send; this only owns the sockets:
//! one receive task per socket feeds one bounded channel, tagged with the
//! socket's index and the generation of the set it belongs to, so datagrams
//! from a closed set are told apart from the current one's.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use supervox_core::media_path::MAX_DATAGRAM;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

/// Datagrams waiting for the node actor at most; more are dropped (media is
/// real-time, and a flood must not grow memory).
pub const QUEUE: usize = 256;

/// A datagram one spare socket received.
#[derive(Debug)]
pub struct SpareDatagram {
    /// The set it arrived on (see [`Spares::is_current`]).
    pub generation: u64,
    /// The socket's index in its set.
    pub index: u16,
    /// Sender.
    pub from: SocketAddr,
    /// Payload.
    pub bytes: Vec<u8>,
}

struct Spare {
    sock: Arc<UdpSocket>,
    task: JoinHandle<()>,
}

impl Drop for Spare {
    fn drop(&mut self) {
        // The task holds the other reference: ending it closes the socket.
        self.task.abort();
    }
}

/// The open spare sockets (index → socket; `None` once closed).
pub struct Spares {
    socks: Vec<Option<Spare>>,
    generation: u64,
    tx: mpsc::Sender<SpareDatagram>,
}

impl Spares {
    /// No spares yet; received datagrams will go to `tx`.
    pub fn new(tx: mpsc::Sender<SpareDatagram>) -> Self {
        Spares { socks: Vec::new(), generation: 0, tx }
    }

    /// Close any open set and open up to `n` sockets on `ip`, any port.
    /// Returns how many opened (fewer when the process runs out of
    /// descriptors or ports: prediction then works with fewer mappings).
    pub fn open(&mut self, ip: IpAddr, n: u16) -> u16 {
        self.socks.clear();
        self.generation += 1;
        for index in 0..n {
            let sock = match bind(ip) {
                Ok(s) => Arc::new(s),
                Err(e) => {
                    warn!("spare socket {index} of {n}: {e}; going on with {index}");
                    break;
                }
            };
            let task = tokio::spawn(receive(sock.clone(), self.generation, index, self.tx.clone()));
            self.socks.push(Some(Spare { sock, task }));
        }
        let opened = self.socks.len() as u16;
        info!("opened {opened} spare sockets on {ip} (port prediction)");
        opened
    }

    /// Send from spare `index` (dropped if closed or the buffer is full).
    pub fn send(&self, index: u16, to: SocketAddr, bytes: &[u8]) {
        if let Some(Some(s)) = self.socks.get(usize::from(index)) {
            if let Err(e) = s.sock.try_send_to(bytes, to) {
                debug!("spare {index} send to {to}: {e}");
            }
        }
    }

    /// Close every spare but those in `keep`.
    pub fn close(&mut self, keep: &[u16]) {
        for (i, s) in self.socks.iter_mut().enumerate() {
            if !keep.contains(&(i as u16)) {
                *s = None;
            }
        }
        let open = self.socks.iter().filter(|s| s.is_some()).count();
        debug!("spare sockets closed, {open} kept");
    }

    /// True if a datagram of set `generation` came from the open set.
    pub fn is_current(&self, generation: u64) -> bool {
        generation == self.generation
    }
}

fn bind(ip: IpAddr) -> std::io::Result<UdpSocket> {
    let s = std::net::UdpSocket::bind(SocketAddr::new(ip, 0))?;
    s.set_nonblocking(true)?;
    UdpSocket::from_std(s)
}

async fn receive(sock: Arc<UdpSocket>, generation: u64, index: u16, tx: mpsc::Sender<SpareDatagram>) {
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    loop {
        match sock.recv_from(&mut buf).await {
            Ok((n, from)) if n <= MAX_DATAGRAM => {
                let d = SpareDatagram { generation, index, from, bytes: buf[..n].to_vec() };
                if let Err(mpsc::error::TrySendError::Closed(_)) = tx.try_send(d) {
                    return;
                }
            }
            Ok(_) => {}
            Err(e) => {
                // Transient (e.g. an ICMP error reported on the socket): pause
                // so a persistent one cannot spin.
                debug!("spare {index} receive: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    }
}
