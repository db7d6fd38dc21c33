//! The supernode's UDP plane: on each `--listen` address a UDP socket that
//! answers STUN Binding requests (RFC 8489, with RFC 5780 change requests;
//! "change IP" is delegated to a peer supernode) and serves TURN (RFC 8656)
//! for signed-in clients, with one relay socket per allocation.
//!
//! Protocol logic lives in `supervox-stun` and `supervox-turn` (sans-IO);
//! this module only owns sockets and moves datagrams.

use crate::links::now_ms;
use anyhow::{Context, Result};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use supervox_core::supernode::Supernode;
use supervox_stun::{BindingServer, Reply, StunError};
use supervox_turn::{AddressFamily, Output, RelayError, Transport, TurnConfig, TurnServer};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

/// Largest datagram read.
const MAX_DATAGRAM: usize = 65_536;
/// Datagrams queued for the actor before new ones are dropped (UDP may drop).
const QUEUE: usize = 8_192;

/// A datagram for the actor.
#[derive(Debug)]
pub enum UdpEvent {
    /// On a listen socket.
    Listen { local: SocketAddr, from: SocketAddr, bytes: Vec<u8> },
    /// On a relay socket (from a peer of an allocation).
    Relay { relay: SocketAddr, from: SocketAddr, bytes: Vec<u8> },
}

struct RelaySocket {
    socket: Arc<UdpSocket>,
    reader: JoinHandle<()>,
}

/// Sockets, the STUN server and the TURN server of one supernode.
pub struct UdpPlane {
    listen: HashMap<SocketAddr, Arc<UdpSocket>>,
    /// The first listen socket: the one whose address is advertised.
    main: SocketAddr,
    /// The address clients reach each listen socket at (for RESPONSE-ORIGIN).
    public: HashMap<SocketAddr, SocketAddr>,
    stun: BindingServer,
    turn: TurnServer,
    relays: HashMap<SocketAddr, RelaySocket>,
    relay_ip: std::net::IpAddr,
    tx: mpsc::Sender<UdpEvent>,
}

impl UdpPlane {
    /// Bind a UDP socket on every listen address (the TCP ports' numbers).
    pub async fn bind(
        listen: &[SocketAddr],
        advertise: SocketAddr,
        turn: TurnConfig,
    ) -> Result<(Self, mpsc::Receiver<UdpEvent>)> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let mut sockets = HashMap::new();
        let mut public = HashMap::new();
        let mut main = None;
        for (i, a) in listen.iter().enumerate() {
            let s = Arc::new(UdpSocket::bind(a).await.with_context(|| format!("cannot listen on UDP {a}"))?);
            let local = s.local_addr()?;
            main.get_or_insert(local);
            // The first socket is the advertised one; others keep their port on the advertised IP.
            public.insert(local, if i == 0 { advertise } else { SocketAddr::new(advertise.ip(), local.port()) });
            spawn_reader(Arc::clone(&s), tx.clone(), move |from, bytes| UdpEvent::Listen { local, from, bytes });
            sockets.insert(local, s);
        }
        let stun = BindingServer::default();
        let turn = TurnServer::new(turn, now_ms());
        let main = main.context("no listen address")?;
        let relay_ip = advertise.ip();
        Ok((Self { listen: sockets, main, public, stun, turn, relays: HashMap::new(), relay_ip, tx }, rx))
    }

    /// The peer supernode that answers "change IP" requests (our OTHER-ADDRESS).
    pub fn set_other(&mut self, other: Option<SocketAddr>) {
        self.stun.other = other;
    }

    /// When the TURN server next wants [`UdpPlane::on_timeout`].
    pub fn poll_timeout(&self) -> Option<u64> {
        self.turn.poll_timeout()
    }

    /// TURN timers (allocation, permission and channel expiry).
    pub async fn on_timeout(&mut self) {
        self.turn.handle_timeout(now_ms());
        self.flush().await;
    }

    /// Live allocations.
    pub fn allocations(&self) -> usize {
        self.turn.allocation_count()
    }

    /// Handle one datagram; `sn` is asked to forward dial-backs to a peer.
    pub async fn on_event(&mut self, ev: UdpEvent, sn: &mut Supernode) {
        let now = now_ms();
        match ev {
            UdpEvent::Relay { relay, from, bytes } => self.turn.handle_peer(relay, from, &bytes, now),
            UdpEvent::Listen { local, from, bytes } => {
                let public = self.public.get(&local).copied().unwrap_or(local);
                match self.stun.handle(&bytes, from, public) {
                    Ok(Some(Reply::Direct { to, response })) => self.send_from(local, to, &response),
                    Ok(Some(Reply::FromAlternate { from: alt, to, response })) => {
                        let sock = self.public.iter().find(|(_, p)| **p == alt).map(|(l, _)| *l);
                        if let Some(l) = sock {
                            self.send_from(l, to, &response);
                        }
                    }
                    Ok(Some(Reply::ViaPeer { peer, dial_back })) => {
                        let d = dial_back;
                        if !sn.request_dial_back(peer, d.transaction_id, d.mapped, d.to, d.padding) {
                            debug!("dial-back peer {peer} not linked");
                        }
                    }
                    // TURN messages are STUN too; ChannelData is not STUN.
                    Ok(None) | Err(StunError::NotBindingRequest { .. }) => {
                        self.turn.handle_client(Transport::Udp, from, public, &bytes, now)
                    }
                    Err(e) => debug!("STUN datagram from {from} dropped: {e}"),
                }
            }
        }
        self.flush().await;
    }

    /// Send a dial-back response for a peer supernode from our advertised socket.
    pub fn dial_back(&self, order: supervox_stun::DialBack) {
        let public = self.public.get(&self.main).copied().unwrap_or(self.main);
        let to = order.to;
        match order.response(public) {
            Ok(bytes) => self.send_from(self.main, to, &bytes),
            Err(e) => debug!("dial-back refused: {e}"),
        }
    }

    fn send_from(&self, local: SocketAddr, to: SocketAddr, bytes: &[u8]) {
        if let Some(s) = self.listen.get(&local) {
            if let Err(e) = s.try_send_to(bytes, to) {
                debug!("UDP send to {to}: {e}");
            }
        }
    }

    async fn flush(&mut self) {
        while let Some(out) = self.turn.poll_output() {
            match out {
                Output::ToClient { transport: Transport::Udp, client, server, bytes } => {
                    let local = self.public.iter().find(|(_, p)| **p == server).map(|(l, _)| *l).unwrap_or(server);
                    self.send_from(local, client, &bytes);
                }
                // TURN over TCP/TLS is not served yet; the server never emits these for UDP input.
                Output::ToClient { .. } => {}
                Output::ToPeer { relay_addr, peer, bytes } => {
                    if let Some(r) = self.relays.get(&relay_addr) {
                        if let Err(e) = r.socket.try_send_to(&bytes, peer) {
                            debug!("relay send to {peer}: {e}");
                        }
                    }
                }
                Output::AllocateRelay { token, family, .. } => {
                    let result = match family {
                        AddressFamily::V6 if self.relay_ip.is_ipv4() => Err(RelayError::AddressFamilyNotSupported),
                        AddressFamily::V4 if self.relay_ip.is_ipv6() => Err(RelayError::AddressFamilyNotSupported),
                        _ => self.open_relay().await,
                    };
                    self.turn.relay_allocated(token, result, now_ms());
                }
                Output::ReleaseRelay { relay_addr } => {
                    if let Some(r) = self.relays.remove(&relay_addr) {
                        r.reader.abort();
                    }
                }
            }
        }
    }

    async fn open_relay(&mut self) -> Result<SocketAddr, RelayError> {
        let sock = UdpSocket::bind(SocketAddr::new(self.relay_ip, 0)).await.map_err(|e| {
            warn!("cannot open a relay socket: {e}");
            RelayError::InsufficientCapacity
        })?;
        let relay = sock.local_addr().map_err(|_| RelayError::InsufficientCapacity)?;
        let socket = Arc::new(sock);
        let reader = spawn_reader(Arc::clone(&socket), self.tx.clone(), move |from, bytes| UdpEvent::Relay {
            relay,
            from,
            bytes,
        });
        self.relays.insert(relay, RelaySocket { socket, reader });
        Ok(relay)
    }
}

fn spawn_reader(
    socket: Arc<UdpSocket>,
    tx: mpsc::Sender<UdpEvent>,
    wrap: impl Fn(SocketAddr, Vec<u8>) -> UdpEvent + Send + 'static,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            match socket.recv_from(&mut buf).await {
                Ok((n, from)) => {
                    // A full queue drops the datagram, as a full socket buffer would.
                    if let Err(mpsc::error::TrySendError::Closed(_)) = tx.try_send(wrap(from, buf[..n].to_vec())) {
                        return;
                    }
                }
                // ICMP errors surface as recv errors on some systems: keep serving.
                Err(e) => debug!("UDP receive: {e}"),
            }
        }
    })
}
