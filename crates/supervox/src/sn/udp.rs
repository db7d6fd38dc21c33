//! The supernode's UDP plane: on each `--listen` address a UDP socket that
//! answers STUN Binding requests (RFC 8489, with RFC 5780 change requests;
//! "change IP" is delegated to a peer supernode) and serves TURN (RFC 8656)
//! for signed-in clients, with one relay socket per allocation.
//!
//! TURN over TCP (RFC 8656 §3.1) is served too: a connection on the TCP
//! port whose first bytes are a STUN header is handed here by the accept
//! loop instead of becoming a signalling link ([`is_turn_stream`]), so a
//! client that can only get TCP out reaches the relay on the same port —
//! 443 when the supernode listens there.
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
    /// A TURN-over-TCP client connected on our `local` TCP listen address.
    TcpOpen { client: SocketAddr, local: SocketAddr, writer: mpsc::Sender<Vec<u8>> },
    /// One TURN message or ChannelData from that client.
    TcpFrame { client: SocketAddr, bytes: Vec<u8> },
    /// That client's connection ended.
    TcpClosed { client: SocketAddr },
}

/// TURN-over-TCP clients served at most at once.
pub const MAX_TCP_CLIENTS: usize = 4_096;
/// Messages queued towards one TCP client before new ones are dropped.
const TCP_WRITE_QUEUE: usize = 1_024;

/// Does a new TCP connection speak TURN (a STUN header: two zero bits, the
/// magic cookie) rather than our Noise link? `first` are its first 8 bytes.
pub fn is_turn_stream(first: &[u8]) -> bool {
    first.len() >= 8 && first[0] & 0xC0 == 0 && first[4..8] == supervox_stun::codec::MAGIC_COOKIE.to_be_bytes()
}

/// Serve one TURN-over-TCP connection: frames in to the plane, its answers out.
pub fn spawn_tcp_client(stream: tokio::net::TcpStream, client: SocketAddr, events: mpsc::Sender<UdpEvent>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tokio::spawn(async move {
        let Ok(local) = stream.local_addr() else { return };
        let _ = stream.set_nodelay(true);
        let (mut r, mut w) = stream.into_split();
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(TCP_WRITE_QUEUE);
        if events.send(UdpEvent::TcpOpen { client, local, writer: tx }).await.is_err() {
            return;
        }
        let writer = tokio::spawn(async move {
            while let Some(b) = rx.recv().await {
                if w.write_all(&b).await.is_err() {
                    return;
                }
            }
        });
        let mut framer = supervox_turn::TcpFramer::new();
        let mut buf = vec![0u8; 16 * 1024];
        'read: loop {
            tokio::select! {
                r = r.read(&mut buf) => match r {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if framer.push(&buf[..n]).is_err() {
                            break;
                        }
                        loop {
                            match framer.next_frame() {
                                Ok(Some(f)) => {
                                    let ev = UdpEvent::TcpFrame { client, bytes: f.to_vec() };
                                    if events.send(ev).await.is_err() {
                                        break 'read;
                                    }
                                }
                                Ok(None) => break,
                                Err(e) => {
                                    debug!("TURN stream from {client} closed: {e}");
                                    break 'read;
                                }
                            }
                        }
                    }
                },
                // The plane dropped our writer (limit reached, or the allocation ended).
                _ = async {}, if writer.is_finished() => break,
            }
        }
        writer.abort();
        let _ = events.send(UdpEvent::TcpClosed { client }).await;
    });
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
    /// TURN-over-TCP clients: their writer and the public address they reached.
    tcp: HashMap<SocketAddr, (mpsc::Sender<Vec<u8>>, SocketAddr)>,
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
        let plane = Self {
            listen: sockets,
            main,
            public,
            stun,
            turn,
            relays: HashMap::new(),
            relay_ip,
            tx,
            tcp: HashMap::new(),
        };
        Ok((plane, rx))
    }

    /// Where TURN-over-TCP connections report (see [`spawn_tcp_client`]).
    pub fn events(&self) -> mpsc::Sender<UdpEvent> {
        self.tx.clone()
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
            UdpEvent::TcpOpen { client, local, writer } => {
                if self.tcp.len() >= MAX_TCP_CLIENTS {
                    warn!("TURN over TCP: {MAX_TCP_CLIENTS} clients, refusing {client}");
                } else {
                    let public = self.public.get(&local).copied().unwrap_or(local);
                    self.tcp.insert(client, (writer, public));
                }
            }
            UdpEvent::TcpFrame { client, bytes } => {
                if let Some((_, public)) = self.tcp.get(&client) {
                    // Binding over TCP is answered by the TURN server itself.
                    self.turn.handle_client(Transport::Tcp, client, *public, &bytes, now);
                }
            }
            UdpEvent::TcpClosed { client } => {
                if let Some((_, public)) = self.tcp.remove(&client) {
                    self.turn.handle_client_closed(Transport::Tcp, client, public);
                }
            }
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
                Output::ToClient { transport: Transport::Tcp, client, bytes, .. } => {
                    if let Some((w, _)) = self.tcp.get(&client) {
                        // A client that does not read loses datagrams, as over UDP.
                        let _ = w.try_send(bytes);
                    }
                }
                // TLS is not served.
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
