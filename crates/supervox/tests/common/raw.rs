//! A test client speaking the raw supervox protocol with the library's own
//! sans-IO link over a blocking socket (shared by the wire and relay tests).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;
use supervox_core::link::{Link, LinkEvent};
use supervox_core::Identity;
use supervox_proto::{Message, NameClaim, Presence, Role};

/// A signed-in test client speaking raw protocol.
pub struct Raw {
    pub sock: TcpStream,
    link: Link,
    pub id: Identity,
    sn: Option<SocketAddr>,
    pending: Vec<Message>,
    /// The TURN-over-TLS relay the supernode announced with its credentials.
    pub relay_tls: Option<supervox_proto::RelayTls>,
}

impl Raw {
    pub fn connect(addr: SocketAddr, seed: u8) -> Raw {
        Self::connect_as(addr, Identity::from_seed([seed; 32]))
    }

    /// A client with a distinct identity per `seed` (any u64).
    pub fn connect_seeded(addr: SocketAddr, seed: u64) -> Raw {
        let mut s = [0x5a; 32];
        s[..8].copy_from_slice(&seed.to_le_bytes());
        Self::connect_as(addr, Identity::from_seed(s))
    }

    /// Like [`Raw::connect_seeded`], from source address `from` (port chosen
    /// by the system): many loopback sources get past one address's ports.
    pub fn connect_seeded_from(addr: SocketAddr, seed: u64, from: std::net::IpAddr) -> Raw {
        let mut s = [0x5a; 32];
        s[..8].copy_from_slice(&seed.to_le_bytes());
        let sock = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None).unwrap();
        sock.bind(&SocketAddr::new(from, 0).into()).unwrap();
        sock.connect(&addr.into()).unwrap();
        Self::with_stream(sock.into(), Identity::from_seed(s))
    }

    /// A client with the given identity.
    pub fn connect_as_identity(addr: SocketAddr, id: Identity) -> Raw {
        Self::connect_as(addr, id)
    }

    fn connect_as(addr: SocketAddr, id: Identity) -> Raw {
        Self::with_stream(TcpStream::connect(addr).unwrap(), id)
    }

    fn with_stream(sock: TcpStream, id: Identity) -> Raw {
        let hello =
            Message::Hello { role: Role::Client, identity: id.user_id(), advertise: None, agent: "test".into() };
        let link = Link::initiator(&id, hello, 0).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut r = Raw { sock, link, id, sn: None, pending: Vec::new(), relay_tls: None };
        r.flush();
        r
    }

    pub fn flush(&mut self) {
        while let Some(b) = self.link.poll_transmit(0) {
            self.sock.write_all(&b).unwrap();
        }
    }

    pub fn send(&mut self, m: Message) {
        self.link.send(&m).unwrap();
        self.flush();
    }

    /// Next application message (the Welcome is remembered, not returned).
    pub fn recv(&mut self) -> Message {
        loop {
            if !self.pending.is_empty() {
                return self.pending.remove(0);
            }
            self.read_once();
        }
    }

    pub fn read_once(&mut self) {
        let mut buf = [0u8; 4096];
        let n = self.sock.read(&mut buf).expect("read");
        assert!(n > 0, "supernode closed the connection");
        let events = self.link.handle_bytes(&buf[..n], 0).unwrap();
        self.flush();
        for e in events {
            match e {
                LinkEvent::Established { role, .. } => assert_eq!(role, Role::Supernode),
                LinkEvent::Message(Message::Welcome { supernode, .. }) => self.sn = Some(supernode),
                LinkEvent::Message(m) => self.pending.push(m),
            }
        }
    }

    /// On a non-blocking socket: read what arrived (answering keepalives)
    /// without waiting. False once the supernode has closed the link.
    pub fn poll_idle(&mut self) -> bool {
        let mut buf = [0u8; 4096];
        loop {
            match self.sock.read(&mut buf) {
                Ok(0) => return false,
                Ok(n) => {
                    if self.link.handle_bytes(&buf[..n], now()).is_err() {
                        return false;
                    }
                    while let Some(b) = self.link.poll_transmit(now()) {
                        if self.sock.write_all(&b).is_err() {
                            return false;
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
                Err(_) => return false,
            }
        }
    }

    /// Claim `name`, publish presence; returns the TURN (username, password, relays) the SN gave.
    pub fn sign_in(&mut self, name: &str) -> (String, String, Vec<SocketAddr>) {
        while self.sn.is_none() {
            self.read_once();
        }
        self.send(Message::Claim { claim: NameClaim::sign(self.id.signing_key(), name, now()).unwrap() });
        assert!(matches!(self.recv(), Message::ClaimResult { result: Ok(()), .. }));
        let p = Presence::sign(self.id.signing_key(), name, self.sn.unwrap(), now(), now() + 60_000).unwrap();
        self.send(Message::Publish { presence: p });
        assert_eq!(self.recv(), Message::PublishResult { result: Ok(()) });
        // A signed-in client is handed TURN credentials for its supernode's relay.
        match self.recv() {
            Message::RelayCredentials { username, password, relays, tls, .. } => {
                self.relay_tls = tls;
                (username, password, relays)
            }
            m => panic!("expected relay credentials, got {m:?}"),
        }
    }
}

pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

impl Raw {
    /// The next application message within `within`, or `None` (a timeout).
    pub fn try_recv(&mut self, within: Duration) -> Option<Message> {
        let deadline = std::time::Instant::now() + within;
        loop {
            if !self.pending.is_empty() {
                return Some(self.pending.remove(0));
            }
            let left = deadline.checked_duration_since(std::time::Instant::now())?;
            self.sock.set_read_timeout(Some(left.max(Duration::from_millis(1)))).unwrap();
            let mut buf = [0u8; 4096];
            let n = match self.sock.read(&mut buf) {
                Ok(n) => n,
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    self.sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    return None;
                }
                Err(e) => panic!("read: {e}"),
            };
            self.sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            assert!(n > 0, "supernode closed the connection");
            for e in self.link.handle_bytes(&buf[..n], 0).unwrap() {
                match e {
                    LinkEvent::Message(Message::Welcome { supernode, .. }) => self.sn = Some(supernode),
                    LinkEvent::Message(m) => self.pending.push(m),
                    LinkEvent::Established { .. } => {}
                }
            }
            self.flush();
        }
    }

    /// Our supernode's advertised address (after sign-in).
    pub fn supernode(&self) -> SocketAddr {
        self.sn.expect("signed in")
    }

    /// The next call signal within `within`, skipping other messages.
    pub fn next_signal(&mut self, within: Duration) -> Option<supervox_proto::SignalEnvelope> {
        let deadline = std::time::Instant::now() + within;
        loop {
            let left = deadline.checked_duration_since(std::time::Instant::now())?;
            if let Message::Signal(env) = self.try_recv(left)? {
                return Some(env);
            }
        }
    }
}

/// A caller built from the project's own crates, playing by the protocol
/// (or not) one message at a time: the attacker of the call tests.
pub struct RawCall {
    pub id: supervox_proto::CallId,
    pub callee: supervox_proto::UserId,
    pub callee_sn: SocketAddr,
    pub hs: Option<snow::HandshakeState>,
    pub keys: Option<supervox_core::call::CallKeys>,
    pub seq: u64,
    /// The invite as sent (to replay it).
    pub invite: supervox_proto::SignalEnvelope,
}

impl Raw {
    /// Look up `name` and return its key and supernode.
    pub fn lookup(&mut self, name: &str) -> (supervox_proto::UserId, SocketAddr) {
        self.send(Message::Lookup { req_id: 77, name: name.into() });
        loop {
            if let Message::LookupResult { answer: supervox_proto::LookupAnswer::Online { claim, presence }, .. } =
                self.recv()
            {
                return (claim.user_id, presence.supernode);
            }
        }
    }

    /// Invite `name` as `as_name` (our own name, or a spoofed one), offering `offer`.
    pub fn invite(&mut self, name: &str, as_name: &str, offer: supervox_proto::call::CallOffer) -> RawCall {
        let (callee, callee_sn) = self.lookup(name);
        let mut id = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut id);
        let id = supervox_proto::CallId(id);
        let sent_ms = now();
        let binding = supervox_core::call::Binding { call_id: id, caller: self.id.user_id(), callee, sent_ms };
        let (hs, msg1) = supervox_core::call::start_handshake(&self.id, &binding, &offer).unwrap();
        let presence = Presence::sign(self.id.signing_key(), as_name, self.supernode(), now(), now() + 60_000).unwrap();
        let invite = supervox_proto::SignalEnvelope {
            call_id: id,
            from: self.id.user_id(),
            to: callee,
            to_supernode: callee_sn,
            body: supervox_proto::CallSignal::Invite {
                from_name: as_name.into(),
                caller_presence: presence,
                sent_ms,
                handshake: msg1,
            },
        };
        self.send(Message::Signal(invite.clone()));
        RawCall { id, callee, callee_sn, hs: Some(hs), keys: None, seq: 0, invite }
    }

    /// The callee's `Respond`: finish the handshake and return its first message.
    pub fn respond(&mut self, call: &mut RawCall, within: Duration) -> Option<supervox_proto::call::CallMessage> {
        let env = self.next_signal(within)?;
        assert_eq!(env.call_id, call.id);
        let supervox_proto::CallSignal::Respond { handshake, first } = env.body else {
            panic!("expected Respond, got {:?}", env.body)
        };
        let keys = supervox_core::call::finish_handshake(call.hs.take().unwrap(), &handshake).unwrap();
        let msg = keys.open(&first);
        call.keys = Some(keys);
        msg
    }

    /// The next sealed message of `call`.
    pub fn sealed(&mut self, call: &RawCall, within: Duration) -> Option<supervox_proto::call::CallMessage> {
        let env = self.next_signal(within)?;
        let supervox_proto::CallSignal::Sealed(s) = env.body else { panic!("expected a sealed signal: {env:?}") };
        call.keys.as_ref().unwrap().open(&s)
    }

    /// Send `body` on `call` as an envelope from us.
    pub fn signal(&mut self, call: &RawCall, body: supervox_proto::CallSignal) {
        let env = supervox_proto::SignalEnvelope {
            call_id: call.id,
            from: self.id.user_id(),
            to: call.callee,
            to_supernode: call.callee_sn,
            body,
        };
        self.send(Message::Signal(env));
    }

    /// Seal and send `msg` on `call`.
    pub fn say(&mut self, call: &mut RawCall, msg: &supervox_proto::call::CallMessage) {
        let s = call.keys.as_ref().unwrap().seal(call.seq, msg).unwrap();
        call.seq += 1;
        self.signal(call, supervox_proto::CallSignal::Sealed(s));
    }
}
