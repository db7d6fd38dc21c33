//! An evil supernode for attack tests, built from the project's own crates:
//! a Link responder on loopback that admits clients, accepts their claims
//! and presence, and answers every lookup with a claim and presence for the
//! asked name signed by *mallory's* key, as a malicious (or compromised)
//! supernode would to sit in the middle of its clients' calls.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;
use supervox_core::link::{Link, LinkEvent};
use supervox_core::Identity;
use supervox_proto::{LookupAnswer, Message, NameClaim, Presence, Role};

/// What the evil supernode saw.
#[derive(Debug, Default)]
pub struct EvilCounts {
    /// Lookups it answered with a forgery.
    pub lookups: AtomicUsize,
    /// Call signals its clients sent (an invite to mallory would be one).
    pub signals: AtomicUsize,
}

/// A running evil supernode; stops when dropped.
pub struct EvilSn {
    pub addr: SocketAddr,
    /// Mallory: the key every forged answer is signed with.
    pub mallory: Identity,
    pub counts: Arc<EvilCounts>,
    stop: Arc<AtomicBool>,
    /// Each client link's queue of messages to push at it.
    inject: Arc<Mutex<Vec<mpsc::Sender<Message>>>>,
}

impl Drop for EvilSn {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

impl EvilSn {
    /// Listen on loopback; `others` go into every Welcome's supernode list
    /// (so its clients learn of honest supernodes, as they would).
    pub fn start(others: Vec<SocketAddr>) -> EvilSn {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let mallory = Identity::from_seed([0x66; 32]);
        let counts = Arc::new(EvilCounts::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (m, c, s) = (mallory.clone(), counts.clone(), stop.clone());
        let inject: Arc<Mutex<Vec<mpsc::Sender<Message>>>> = Arc::default();
        let inj = inject.clone();
        std::thread::spawn(move || {
            let me = Identity::from_seed([0x67; 32]);
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((sock, remote)) => {
                        let (me, m, c, s, others) = (me.clone(), m.clone(), c.clone(), s.clone(), others.clone());
                        let (tx, rx) = mpsc::channel();
                        inj.lock().unwrap().push(tx);
                        std::thread::spawn(move || serve(sock, remote, addr, me, m, c, s, others, rx));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        EvilSn { addr, mallory, counts, stop, inject }
    }

    /// Push `msg` at every client linked to it (e.g. a forged invite).
    pub fn inject(&self, msg: Message) {
        for tx in self.inject.lock().unwrap().iter() {
            let _ = tx.send(msg.clone());
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn serve(
    mut sock: TcpStream,
    remote: SocketAddr,
    advertise: SocketAddr,
    me: Identity,
    mallory: Identity,
    counts: Arc<EvilCounts>,
    stop: Arc<AtomicBool>,
    others: Vec<SocketAddr>,
    inject: mpsc::Receiver<Message>,
) {
    sock.set_nonblocking(false).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let hello = Message::Hello { role: Role::Supernode, identity: me.user_id(), advertise: None, agent: "evil".into() };
    let Ok(mut link) = Link::responder(&me, hello, now()) else { return };
    let mut buf = [0u8; 8192];
    while !stop.load(Ordering::Relaxed) {
        let events = match sock.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => match link.handle_bytes(&buf[..n], now()) {
                Ok(e) => e,
                Err(_) => return,
            },
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                if link.handle_timeout(now()).is_err() {
                    return;
                }
                Vec::new()
            }
            Err(_) => return,
        };
        if link.is_open() {
            while let Ok(m) = inject.try_recv() {
                if link.send(&m).is_err() {
                    return;
                }
            }
        }
        for e in events {
            let reply = match e {
                LinkEvent::Established { .. } => Some(Message::Welcome {
                    supernode: advertise,
                    observed: remote,
                    supernodes: others.clone(),
                    loads: vec![],
                }),
                LinkEvent::Message(Message::Claim { claim }) => {
                    Some(Message::ClaimResult { name: claim.name, result: Ok(()) })
                }
                LinkEvent::Message(Message::Publish { .. }) => Some(Message::PublishResult { result: Ok(()) }),
                LinkEvent::Message(Message::Lookup { req_id, name }) => {
                    counts.lookups.fetch_add(1, Ordering::Relaxed);
                    // Self-signed by mallory for the asked name: verifies as well as the real one.
                    let claim = NameClaim::sign(mallory.signing_key(), &name, 1).unwrap();
                    let presence =
                        Presence::sign(mallory.signing_key(), &name, advertise, now(), now() + 60_000).unwrap();
                    Some(Message::LookupResult { req_id, answer: LookupAnswer::Online { claim, presence } })
                }
                LinkEvent::Message(Message::Signal(_)) => {
                    counts.signals.fetch_add(1, Ordering::Relaxed);
                    None
                }
                LinkEvent::Message(_) => None,
            };
            if let Some(m) = reply {
                if link.send(&m).is_err() {
                    return;
                }
            }
        }
        while let Some(b) = link.poll_transmit(now()) {
            if sock.write_all(&b).is_err() {
                return;
            }
        }
    }
}
