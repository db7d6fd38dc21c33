//! TCP media streams (ICE TCP candidates, RFC 6544): for networks that let
//! UDP nowhere out but TCP out, so a call can still go `direct-tcp` instead
//! of through a relay.
//!
//! The node listens for media on TCP at its media socket's IP and offers that
//! as a passive candidate, plus an active one (port 9) saying it connects out,
//! and simultaneous-open (S-O) ones at the listener's address and at its
//! public IP with the listener's port. When a call's keys are agreed, each
//! side connects to the peer's passive candidates, and from its listener's
//! address to the peer's S-O ones (at most [`MAX_TCP_STREAMS`] per call). A stream carries the
//! call's ordinary media datagrams (checks, acks, media; docs/PROTOCOL.md §4.1)
//! each framed with a 2-byte length (RFC 4571) by the driver. An outbound
//! stream becomes a pair as soon as it connects; an inbound one stays pending
//! until its first frame authenticates as a check of one of our calls, and is
//! closed if that frame does not, or if none comes within
//! [`PENDING_TIMEOUT_MS`]. An outbound stream that fails or drops while its
//! call lasts is dialled again after [`REDIAL_FIRST_MS`], doubling up to
//! [`REDIAL_MAX_MS`], for at most [`REDIAL_ATTEMPTS`] failures in a row (the
//! call meanwhile runs on another pair, and moves back when the stream is up).
//! The driver does the sockets
//! ([`ClientOutput::TcpConnect`], [`ClientOutput::TcpSend`],
//! [`ClientOutput::TcpClose`]) and reports back through the `on_tcp_*` methods.

use super::{Client, ClientOutput};
use crate::call::Phase;
use crate::media_path::{call_tag, datagram_tag, MAX_TCP_STREAMS};
use crate::Map;
use std::net::{IpAddr, SocketAddr};
use supervox_proto::{CallId, Candidate, CandidateKind, Transport};
use tracing::{debug, info};

/// Inbound streams waiting for their first authentic frame, at most.
pub const MAX_PENDING_INBOUND: usize = 8;
/// An inbound stream must authenticate within this long.
pub const PENDING_TIMEOUT_MS: u64 = 5_000;
/// An outbound stream must connect within this long (the driver's own
/// timeout is shorter; this one also covers a driver that never reports).
pub const CONNECT_TIMEOUT_MS: u64 = 5_000;
/// Discard port of active candidates (RFC 6544 §4.5): never connected to.
pub const ACTIVE_PORT: u16 = 9;
/// First wait before dialling a call's lost or failed TCP stream again.
pub const REDIAL_FIRST_MS: u64 = 1_000;
/// Longest wait between two dials.
pub const REDIAL_MAX_MS: u64 = 30_000;
/// Failed dials in a row after which a call stops dialling.
pub const REDIAL_ATTEMPTS: u32 = 6;
/// After a simultaneous-open dial is refused, the wait before dialling that
/// target again. The reset came from the peer's NAT router itself (our SYN
/// reached it before the peer's own SYN had opened it), and that router now
/// holds a conntrack entry for the pair of addresses in its closing state for
/// 10 s (Linux `nf_conntrack_tcp_timeout_close`), which makes it move the
/// peer's own connection to another port; dialling again sooner only renews it.
pub const SO_REFUSED_WAIT_MS: u64 = 12_000;
/// Passive and S-O candidates kept per call for dialling again.
const MAX_REDIAL_TARGETS: usize = 8;

/// What a call dials over TCP, and when it dials again.
#[derive(Debug, Clone)]
struct Redial {
    /// The peer's passive and simultaneous-open candidates, best first (`true`: S-O).
    targets: Vec<(SocketAddr, bool)>,
    due_ms: Option<u64>,
    backoff_ms: u64,
    failures: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// We asked the driver to connect.
    Connecting { deadline_ms: u64 },
    /// Accepted; no authentic frame yet.
    Pending { deadline_ms: u64 },
    /// Carries its call's datagrams.
    Open,
}

#[derive(Debug, Clone)]
struct Stream {
    remote: SocketAddr,
    /// The call it belongs to (known from the start for outbound streams).
    call: Option<CallId>,
    state: State,
}

/// The TCP media streams of a client.
#[derive(Debug, Default)]
pub(super) struct TcpStreams {
    next_id: u64,
    streams: Map<u64, Stream>,
    /// Our TCP media listener's port, if the driver has one.
    pub(super) port: Option<u16>,
    redial: Map<CallId, Redial>,
}

impl TcpStreams {
    fn of_call(&self, id: CallId) -> impl Iterator<Item = (u64, &Stream)> + '_ {
        self.streams.iter().filter(move |(_, s)| s.call == Some(id)).map(|(k, s)| (*k, s))
    }

    fn pending(&self) -> usize {
        self.streams.values().filter(|s| matches!(s.state, State::Pending { .. })).count()
    }
}

/// A peer address one could connect to (not a wildcard, multicast or port 0).
/// Whether a peer's TCP candidate `a` may be dialled; `on_loopback`: one of our own host
/// candidates is on loopback (one machine, tests). Never link-local (169.254/16 holds
/// cloud metadata services, fe80::/10 needs a scope), and loopback only when we are on
/// loopback ourselves: otherwise a peer's "candidate" at 127.0.0.1 would make us connect
/// to a service on our own host.
fn connectable(a: &SocketAddr, on_loopback: bool) -> bool {
    let ip = a.ip().to_canonical();
    let link_local = match ip {
        IpAddr::V4(v4) => v4.is_link_local() || v4.is_broadcast(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xFFC0) == 0xFE80,
    };
    a.port() != 0
        && a.port() != ACTIVE_PORT
        && !ip.is_unspecified()
        && !ip.is_multicast()
        && !link_local
        && (!ip.is_loopback() || on_loopback)
}

impl Client {
    /// Our TCP media listener (same IP as the media socket) is on `port`, or
    /// gone: offered as a passive candidate in calls from now on.
    pub fn set_tcp_media_port(&mut self, port: Option<u16>) {
        self.tcp.port = port;
        self.refresh_candidates();
    }

    /// The TCP candidates to offer (after the UDP ones): passive at the media
    /// IP and our listener's port, active, and simultaneous-open (S-O) at the
    /// listener's address and at our public IP with the same port.
    ///
    /// The server-reflexive S-O candidate assumes the NAT keeps the port of a
    /// TCP connection's source (Linux conntrack and most home routers do when
    /// it is free): it is not learnt over TCP STUN. A NAT that changes it
    /// makes the simultaneous open miss, and the call stays on another pair.
    pub(super) fn tcp_candidates(&self, host: SocketAddr) -> Vec<Candidate> {
        // RFC 6544 §4.2: local preference = 2^13 × direction preference + other
        // preference; direction for host: active 6, passive 4, S-O 2; for
        // server-reflexive: S-O 6, active 4, passive 2. Below UDP host's 65535.
        let pref = |ty: u32, dir: u32| super::reach::priority(ty, (dir << 13) | 8191);
        let (host_kind, srflx_kind) =
            (supervox_proto::CandidateKind::Host, supervox_proto::CandidateKind::ServerReflexive);
        let mut c = Vec::new();
        if let Some(port) = self.tcp.port {
            let addr = SocketAddr::new(host.ip(), port);
            c.push(Candidate {
                kind: host_kind,
                transport: Transport::TcpPassive,
                addr,
                priority: pref(super::reach::PREF_HOST, 4),
            });
            c.push(Candidate {
                kind: host_kind,
                transport: Transport::TcpSo,
                addr,
                priority: pref(super::reach::PREF_HOST, 2),
            });
            let public = self.observed_ip.or_else(|| self.reach.as_ref().and_then(|r| r.mapped).map(|m| m.ip()));
            if let Some(ip) = public.filter(|ip| *ip != host.ip()) {
                let addr = SocketAddr::new(ip, port);
                c.push(Candidate {
                    kind: srflx_kind,
                    transport: Transport::TcpSo,
                    addr,
                    priority: pref(super::reach::PREF_SRFLX, 6),
                });
            }
        }
        let addr = SocketAddr::new(host.ip(), ACTIVE_PORT);
        c.push(Candidate {
            kind: host_kind,
            transport: Transport::TcpActive,
            addr,
            priority: pref(super::reach::PREF_HOST, 6),
        });
        c
    }

    /// Connect to the peer's passive TCP candidates, and to its S-O ones
    /// (simultaneous open, when we listen: the connection leaves from the
    /// listener's port), the highest priority first, while the call holds
    /// fewer than [`MAX_TCP_STREAMS`] streams.
    pub(super) fn connect_tcp(&mut self, id: CallId, remote: &[Candidate], now_ms: u64) {
        if self.cfg.force_relay || self.calls.get(&id).is_some_and(|c| c.private) {
            return; // the peer must not learn our addresses (now)
        }
        let so = self.tcp.port.is_some();
        let on_loopback =
            self.local_candidates.iter().any(|c| c.kind == CandidateKind::Host && c.addr.ip().is_loopback());
        let mut dialable: Vec<&Candidate> = remote
            .iter()
            .filter(|c| c.transport == Transport::TcpPassive || (so && c.transport == Transport::TcpSo))
            .filter(|c| connectable(&c.addr, on_loopback))
            .collect();
        dialable.sort_by_key(|c| std::cmp::Reverse(c.priority));
        let r = self.tcp.redial.entry(id).or_insert_with(|| Redial {
            targets: Vec::new(),
            due_ms: None,
            backoff_ms: REDIAL_FIRST_MS,
            failures: 0,
        });
        for c in dialable {
            let target = (c.addr, c.transport == Transport::TcpSo);
            if !r.targets.contains(&target) && r.targets.len() < MAX_REDIAL_TARGETS {
                r.targets.push(target);
            }
        }
        self.dial_tcp(id, now_ms);
    }

    /// Dial the call's targets that have no stream yet.
    fn dial_tcp(&mut self, id: CallId, now_ms: u64) {
        let Some(targets) = self.tcp.redial.get(&id).map(|r| r.targets.clone()) else { return };
        for (to, simultaneous) in targets {
            if self.tcp.of_call(id).any(|(_, s)| s.remote == to) {
                continue;
            }
            if self.tcp.of_call(id).count() >= MAX_TCP_STREAMS {
                break;
            }
            let stream = self.tcp.next_id;
            self.tcp.next_id += 1;
            let state = State::Connecting { deadline_ms: now_ms + CONNECT_TIMEOUT_MS };
            self.tcp.streams.insert(stream, Stream { remote: to, call: Some(id), state });
            debug!("call {id}: TCP stream {stream} to {to}");
            self.out.push_back(ClientOutput::TcpConnect { stream, to, simultaneous });
        }
    }

    /// The driver accepted a TCP connection from `from` on the media listener.
    /// Returns the stream id to report its frames under, or `None`: refused
    /// (no call that could use it, or too many pending), close it.
    pub fn on_tcp_accepted(&mut self, from: SocketAddr, now_ms: u64) -> Option<u64> {
        let wanted = self
            .calls
            .values()
            .any(|c| matches!(c.phase, Phase::Inviting { .. } | Phase::Connecting | Phase::Connected));
        if !wanted || self.tcp.pending() >= MAX_PENDING_INBOUND {
            return None;
        }
        let stream = self.tcp.next_id;
        self.tcp.next_id += 1;
        let state = State::Pending { deadline_ms: now_ms + PENDING_TIMEOUT_MS };
        self.tcp.streams.insert(stream, Stream { remote: from, call: None, state });
        Some(stream)
    }

    /// A [`ClientOutput::TcpConnect`] stream is up.
    pub fn on_tcp_connected(&mut self, stream: u64, now_ms: u64) {
        let Some(s) = self.tcp.streams.get_mut(&stream) else {
            return self.out.push_back(ClientOutput::TcpClose(stream));
        };
        let (Some(id), State::Connecting { .. }) = (s.call, s.state) else { return };
        s.state = State::Open;
        let remote = s.remote;
        let taken = self
            .calls
            .get_mut(&id)
            .and_then(|c| c.path.as_mut())
            .is_some_and(|p| p.tcp_up(stream, remote, true, now_ms));
        if taken {
            info!("call {id}: TCP stream {stream} to {remote} connected");
            if let Some(r) = self.tcp.redial.get_mut(&id) {
                (r.backoff_ms, r.failures) = (REDIAL_FIRST_MS, 0);
            }
            self.flush_path(id, now_ms);
        } else {
            self.close_tcp(stream, now_ms);
        }
    }

    /// One frame (a media datagram, length prefix removed) from stream
    /// `stream`. Returns the media plaintext and its call, if it was media.
    pub fn on_tcp_frame(&mut self, stream: u64, bytes: &[u8], now_ms: u64) -> Option<(CallId, Vec<u8>)> {
        let s = self.tcp.streams.get(&stream)?.clone();
        match s.state {
            State::Open => self.call_datagram(crate::media_path::Via::Tcp(stream), s.remote, bytes, now_ms),
            State::Connecting { .. } => None,
            State::Pending { .. } => self.pending_frame(stream, s.remote, bytes, now_ms),
        }
    }

    /// The first frames of an inbound stream: the stream joins the call whose
    /// check it carries, or is closed.
    fn pending_frame(&mut self, stream: u64, from: SocketAddr, bytes: &[u8], now_ms: u64) -> Option<(CallId, Vec<u8>)> {
        let call = datagram_tag(bytes).and_then(|tag| self.calls.keys().find(|id| call_tag(id) == tag).copied());
        let Some(id) = call else {
            debug!("TCP stream {stream} from {from}: not one of our calls' datagrams; closed");
            self.close_tcp(stream, now_ms);
            return None;
        };
        // The peer may have its keys before we have ours (it answered our
        // invite): wait for its next check.
        let path = self.calls.get_mut(&id)?.path.as_mut()?;
        if !path.tcp_up(stream, from, false, now_ms) {
            self.close_tcp(stream, now_ms);
            return None;
        }
        let got = self.call_datagram(crate::media_path::Via::Tcp(stream), from, bytes, now_ms);
        let authentic = self.calls.get(&id).and_then(|c| c.path.as_ref()).is_some_and(|p| p.tcp_authenticated(stream));
        if authentic {
            info!("call {id}: TCP stream {stream} from {from} authenticated");
            if let Some(s) = self.tcp.streams.get_mut(&stream) {
                s.call = Some(id);
                s.state = State::Open;
            }
            self.flush_path(id, now_ms);
            got
        } else {
            debug!("TCP stream {stream} from {from}: first frame did not authenticate; closed");
            if let Some(p) = self.calls.get_mut(&id).and_then(|c| c.path.as_mut()) {
                p.tcp_down(stream);
            }
            self.close_tcp(stream, now_ms);
            None
        }
    }

    /// Stream `stream` failed to connect, or closed.
    pub fn on_tcp_closed(&mut self, stream: u64, now_ms: u64) {
        self.tcp_stream_ended(stream, false, now_ms);
    }

    /// A [`ClientOutput::TcpConnect`] stream's connect was refused (a reset).
    pub fn on_tcp_refused(&mut self, stream: u64, now_ms: u64) {
        self.tcp_stream_ended(stream, true, now_ms);
    }

    fn tcp_stream_ended(&mut self, stream: u64, refused: bool, now_ms: u64) {
        if let Some(s) = self.tcp.streams.remove(&stream) {
            if let Some(id) = s.call {
                debug!("call {id}: TCP stream {stream} to {} closed", s.remote);
                self.schedule_redial(id, s.remote, refused, now_ms);
                if let Some(p) = self.calls.get_mut(&id).and_then(|c| c.path.as_mut()) {
                    p.tcp_down(stream);
                }
                self.flush_path(id, now_ms);
            }
        }
    }

    /// Close stream `stream` ourselves (the driver reports nothing back).
    fn close_tcp(&mut self, stream: u64, now_ms: u64) {
        self.on_tcp_closed(stream, now_ms);
        self.out.push_back(ClientOutput::TcpClose(stream));
    }

    /// One of the call's outbound streams to `remote` failed or dropped: dial again later.
    fn schedule_redial(&mut self, id: CallId, remote: SocketAddr, refused: bool, now_ms: u64) {
        let Some(r) = self.tcp.redial.get_mut(&id) else { return };
        let Some(&(_, so)) = r.targets.iter().find(|(a, _)| *a == remote) else {
            return; // an inbound stream: the peer dials it
        };
        if so && refused {
            // Also when a dial is planned: it must not come sooner.
            r.failures += 1;
            r.due_ms = (r.failures <= REDIAL_ATTEMPTS).then_some(now_ms + SO_REFUSED_WAIT_MS);
            return;
        }
        if r.due_ms.is_some() {
            return;
        }
        r.failures += 1;
        if r.failures > REDIAL_ATTEMPTS {
            debug!("call {id}: TCP to {remote} failed {REDIAL_ATTEMPTS} times in a row; not dialling again");
            return;
        }
        r.due_ms = Some(now_ms + r.backoff_ms);
        r.backoff_ms = (r.backoff_ms * 2).min(REDIAL_MAX_MS);
    }

    /// A call is over: its streams close.
    pub(super) fn close_call_streams(&mut self, id: CallId, now_ms: u64) {
        self.tcp.redial.remove(&id);
        let ids: Vec<u64> = self.tcp.of_call(id).map(|(k, _)| k).collect();
        for k in ids {
            self.close_tcp(k, now_ms);
        }
    }

    /// The earliest connect/authentication deadline of a stream or re-dial.
    pub(super) fn tcp_timeout(&self) -> Option<u64> {
        let streams = self.tcp.streams.values().map(|s| match s.state {
            State::Connecting { deadline_ms } | State::Pending { deadline_ms } => Some(deadline_ms),
            State::Open => None,
        });
        crate::timer::earliest(streams.chain(self.tcp.redial.values().map(|r| r.due_ms)))
    }

    /// Streams that did not connect or authenticate in time are closed.
    pub(super) fn tick_tcp(&mut self, now_ms: u64) {
        let late: Vec<u64> = self
            .tcp
            .streams
            .iter()
            .filter(|(_, s)| match s.state {
                State::Connecting { deadline_ms } | State::Pending { deadline_ms } => now_ms >= deadline_ms,
                State::Open => false,
            })
            .map(|(k, _)| *k)
            .collect();
        for k in late {
            debug!("TCP stream {k}: timed out");
            self.close_tcp(k, now_ms);
        }
        let due: Vec<CallId> = self
            .tcp
            .redial
            .iter_mut()
            .filter(|(_, r)| r.due_ms.is_some_and(|d| now_ms >= d))
            .map(|(id, r)| {
                r.due_ms = None;
                *id
            })
            .collect();
        for id in due {
            self.dial_tcp(id, now_ms);
        }
    }

    /// TCP media streams open or being opened (for status and tests).
    pub fn tcp_stream_count(&self) -> usize {
        self.tcp.streams.len()
    }
}
