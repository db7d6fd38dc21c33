//! NAT behaviour discovery (RFC 5780 in spirit) against two supernodes, sans-IO.
//!
//! The probe runs in phases, each a set of Binding transactions sent in parallel:
//!
//! 1. **Basic**: a Binding request to SN1 gives the mapped address M1. No answer after all
//!    retransmissions: retry once against SN2 (**Fallback**); no answer there either means
//!    UDP is blocked.
//! 2. **Filtering** (before we ever send to SN2 or SN1's alternate port, so the NAT holds
//!    no filter state for them): CHANGE-REQUEST(IP+port) to SN1, which has SN2 answer
//!    ("dial-back"), and, if SN1's alternate port is known, CHANGE-REQUEST(port) to SN1,
//!    answered from that port. SN2's answer arrives: endpoint-independent filtering. Only the
//!    alternate port's: address-dependent. Neither: address-and-port-dependent.
//! 3. **Mapping**: plain requests to SN2 (M2) and SN1's alternate port (M3). M2 = M1:
//!    endpoint-independent; else M3 = M1: address-dependent; else address-and-port-dependent.
//!
//! Without an alternate port the address- vs address-and-port-dependent cases cannot be told
//! apart and the stricter one (address-and-port-dependent) is reported.
//!
//! Retransmission follows RFC 8489 §6.2.1: sends at 0, RTO, 3·RTO, 7·RTO … (Rc sends in
//! all), the transaction failing Rm·RTO after the last send.

use std::collections::VecDeque;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::codec::{attr, is_stun, Class, Message, TransactionId, CHANGE_IP, CHANGE_PORT, METHOD_BINDING};

/// A NAT mapping or filtering behaviour (RFC 4787 terms); defined once, in `supervox-proto`,
/// because calls carry it to the peer.
pub use supervox_proto::NatBehaviour;

/// What the probe concluded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reachability {
    /// Some supernode answered over UDP.
    pub udp: bool,
    /// Our address as SN1 (or, if SN1 was silent, SN2) saw it.
    pub mapped: Option<SocketAddr>,
    /// The mapped address is our local address: no NAT.
    pub public: bool,
    /// NAT mapping behaviour.
    pub mapping: NatBehaviour,
    /// NAT/firewall filtering behaviour.
    pub filtering: NatBehaviour,
    /// Our address as SN2 saw it in the mapping test, if it answered. With an
    /// endpoint-dependent mapping its port minus [`Reachability::mapped`]'s is
    /// the NAT's allocation step (port prediction for sequential NATs).
    pub mapped_sn2: Option<SocketAddr>,
}

/// Addresses and timers of a [`NatProbe`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeConfig {
    /// The local address of the probing socket (an interface address, not `0.0.0.0`),
    /// compared with the mapped address for [`Reachability::public`].
    pub local: SocketAddr,
    /// The first supernode's UDP address; it must know SN2 as its dial-back peer.
    pub sn1: SocketAddr,
    /// A second supernode's UDP address, on another IP.
    pub sn2: SocketAddr,
    /// SN1's alternate UDP port (same IP), if it has one.
    pub sn1_alt: Option<SocketAddr>,
    /// Initial retransmission timeout, ms (RFC 8489 default 500; 100 is fine on a LAN).
    pub rto_ms: u64,
    /// Rc: requests sent per transaction in all (RFC 8489 default 7).
    pub max_transmits: u32,
    /// Rm: the wait after the last request, in RTOs (RFC 8489 default 16).
    pub final_wait_rtos: u64,
}

impl ProbeConfig {
    /// Defaults: no alternate port, RTO 100 ms, Rc = 4, Rm = 8 (a silent transaction
    /// fails after 1.5 s).
    pub fn new(local: SocketAddr, sn1: SocketAddr, sn2: SocketAddr) -> Self {
        ProbeConfig { local, sn1, sn2, sn1_alt: None, rto_ms: 100, max_transmits: 4, final_wait_rtos: 8 }
    }
}

/// One probe test (one transaction).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Test {
    Basic,
    Fallback,
    FilterIp,
    FilterPort,
    MapSn2,
    MapAlt,
}

/// How a test ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// A success response with this mapped address.
    Mapped(SocketAddr),
    /// Silence after all retransmissions.
    Timeout,
    /// An error response, or a response that shows the server did not honour CHANGE-REQUEST.
    Unusable,
}

#[derive(Clone, Debug)]
struct Tx {
    test: Test,
    to: SocketAddr,
    id: TransactionId,
    bytes: Vec<u8>,
    sent: u32,
    deadline: u64,
    outcome: Option<Outcome>,
}

/// The NAT discovery state machine. Drive it with [`NatProbe::poll_transmit`],
/// [`NatProbe::poll_timeout`] / [`NatProbe::handle_timeout`] and
/// [`NatProbe::handle_response`] until [`NatProbe::result`] is `Some`.
#[derive(Debug)]
pub struct NatProbe {
    cfg: ProbeConfig,
    /// Transactions of the current phase (finished ones keep their outcome).
    txs: Vec<Tx>,
    /// Every transaction ID we sent, so late answers are recognised as ours.
    sent_ids: Vec<TransactionId>,
    queue: VecDeque<(SocketAddr, Vec<u8>)>,
    m1: Option<SocketAddr>,
    filtering: NatBehaviour,
    udp: bool,
    result: Option<Reachability>,
}

impl NatProbe {
    /// Starts a probe at `now_ms`; the first request is ready in [`NatProbe::poll_transmit`].
    pub fn new(cfg: ProbeConfig, now_ms: u64) -> Self {
        let mut p = NatProbe {
            cfg,
            txs: Vec::new(),
            sent_ids: Vec::new(),
            queue: VecDeque::new(),
            m1: None,
            filtering: NatBehaviour::Unknown,
            udp: false,
            result: None,
        };
        let sn1 = p.cfg.sn1;
        p.start(Test::Basic, sn1, 0, now_ms);
        p
    }

    /// The next datagram to send: (destination, bytes).
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.queue.pop_front()
    }

    /// When [`NatProbe::handle_timeout`] should next be called (ms), if ever.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.txs.iter().filter(|t| t.outcome.is_none()).map(|t| t.deadline).min()
    }

    /// The conclusion, once the probe is done.
    pub fn result(&self) -> Option<&Reachability> {
        self.result.as_ref()
    }

    /// True once [`NatProbe::result`] is available.
    pub fn is_done(&self) -> bool {
        self.result.is_some()
    }

    /// Retransmits and times out transactions whose deadline is at or before `now_ms`.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        let (rto, rc, rm) = (self.cfg.rto_ms, self.cfg.max_transmits.max(1), self.cfg.final_wait_rtos);
        let mut finished = false;
        for tx in self.txs.iter_mut().filter(|t| t.outcome.is_none() && t.deadline <= now_ms) {
            if tx.sent >= rc {
                tx.outcome = Some(Outcome::Timeout);
                finished = true;
                continue;
            }
            self.queue.push_back((tx.to, tx.bytes.clone()));
            tx.sent += 1;
            let wait =
                if tx.sent >= rc { rto.saturating_mul(rm) } else { rto.saturating_mul(1 << (tx.sent - 1).min(20)) };
            tx.deadline = now_ms.saturating_add(wait);
        }
        if finished {
            self.advance(now_ms);
        }
    }

    /// Feeds a datagram received on the probing socket. Returns true if it was a STUN
    /// response to one of our transactions (consumed), false otherwise. Never panics.
    pub fn handle_response(&mut self, from: SocketAddr, bytes: &[u8], now_ms: u64) -> bool {
        if !is_stun(bytes) {
            return false;
        }
        let Ok(msg) = Message::parse(bytes) else { return false };
        if msg.method != METHOD_BINDING || !matches!(msg.class, Class::Success | Class::Error) {
            return false;
        }
        if !self.sent_ids.contains(&msg.transaction_id) {
            return false;
        }
        let Some(tx) = self.txs.iter_mut().find(|t| t.id == msg.transaction_id && t.outcome.is_none()) else {
            return true; // late or duplicate answer to a finished transaction
        };
        self.udp = true;
        let changed = !matches!(tx.test, Test::FilterIp | Test::FilterPort) || from != tx.to;
        tx.outcome = Some(match (msg.class, msg.mapped_address()) {
            (Class::Success, Ok(Some(m))) if changed => Outcome::Mapped(m),
            _ => Outcome::Unusable,
        });
        self.advance(now_ms);
        true
    }

    /// Queues the first request of a new transaction.
    fn start(&mut self, test: Test, to: SocketAddr, change: u32, now_ms: u64) {
        let id: TransactionId = rand::random();
        let mut m = Message::new(Class::Request, METHOD_BINDING, id);
        if change != 0 {
            m.add(attr::CHANGE_REQUEST, change.to_be_bytes().to_vec());
        }
        let bytes = m.encode(None, true);
        self.queue.push_back((to, bytes.clone()));
        self.sent_ids.push(id);
        let wait = if self.cfg.max_transmits <= 1 {
            self.cfg.rto_ms.saturating_mul(self.cfg.final_wait_rtos)
        } else {
            self.cfg.rto_ms
        };
        self.txs.push(Tx { test, to, id, bytes, sent: 1, deadline: now_ms.saturating_add(wait), outcome: None });
    }

    fn outcome(&self, test: Test) -> Option<Outcome> {
        self.txs.iter().find(|t| t.test == test).and_then(|t| t.outcome)
    }

    fn finish(&mut self, mapped: Option<SocketAddr>, mapping: NatBehaviour, filtering: NatBehaviour) {
        self.finish_with(mapped, None, mapping, filtering);
    }

    fn finish_with(
        &mut self,
        mapped: Option<SocketAddr>,
        mapped_sn2: Option<SocketAddr>,
        mapping: NatBehaviour,
        filtering: NatBehaviour,
    ) {
        let public = mapped == Some(self.cfg.local);
        self.result = Some(Reachability { udp: self.udp, mapped, public, mapping, filtering, mapped_sn2 });
        self.txs.clear();
    }

    /// Moves to the next phase once the current one has what it needs.
    fn advance(&mut self, now_ms: u64) {
        if self.result.is_some() {
            return;
        }
        let all_done = self.txs.iter().all(|t| t.outcome.is_some());
        let current = self.txs.first().map(|t| t.test);
        match current {
            Some(Test::Basic) if all_done => match self.outcome(Test::Basic) {
                Some(Outcome::Mapped(m1)) => {
                    self.m1 = Some(m1);
                    self.txs.clear();
                    let sn1 = self.cfg.sn1;
                    self.start(Test::FilterIp, sn1, CHANGE_IP | CHANGE_PORT, now_ms);
                    if self.cfg.sn1_alt.is_some() {
                        self.start(Test::FilterPort, sn1, CHANGE_PORT, now_ms);
                    }
                }
                _ => {
                    self.txs.clear();
                    let sn2 = self.cfg.sn2;
                    self.start(Test::Fallback, sn2, 0, now_ms);
                }
            },
            Some(Test::Fallback) if all_done => {
                let mapped = match self.outcome(Test::Fallback) {
                    Some(Outcome::Mapped(m)) => Some(m),
                    _ => None,
                };
                self.finish(mapped, NatBehaviour::Unknown, NatBehaviour::Unknown);
            }
            Some(Test::FilterIp) => {
                let ip = self.outcome(Test::FilterIp);
                let port = self.outcome(Test::FilterPort);
                let filtering = match (ip, port) {
                    (Some(Outcome::Mapped(_)), _) => NatBehaviour::EndpointIndependent,
                    _ if !all_done => return,
                    (Some(Outcome::Unusable), _) => NatBehaviour::Unknown,
                    (_, Some(Outcome::Mapped(_))) => NatBehaviour::AddressDependent,
                    _ => NatBehaviour::AddressAndPortDependent,
                };
                self.filtering = filtering;
                self.txs.clear();
                let sn2 = self.cfg.sn2;
                self.start(Test::MapSn2, sn2, 0, now_ms);
                if let Some(alt) = self.cfg.sn1_alt {
                    self.start(Test::MapAlt, alt, 0, now_ms);
                }
            }
            Some(Test::MapSn2) if all_done => {
                let m1 = self.m1;
                let mapped = |o: Option<Outcome>| match o {
                    Some(Outcome::Mapped(m)) => Some(m),
                    _ => None,
                };
                let (m2, m3) = (mapped(self.outcome(Test::MapSn2)), mapped(self.outcome(Test::MapAlt)));
                let mapping = match (m2, m3) {
                    (_, Some(m3)) if Some(m3) != m1 => NatBehaviour::AddressAndPortDependent,
                    (Some(m2), _) if Some(m2) == m1 => NatBehaviour::EndpointIndependent,
                    (Some(_), Some(_)) => NatBehaviour::AddressDependent,
                    (Some(_), None) => NatBehaviour::AddressAndPortDependent,
                    (None, _) => NatBehaviour::Unknown,
                };
                let filtering = self.filtering;
                self.finish_with(m1, m2, mapping, filtering);
            }
            _ => {}
        }
    }
}
