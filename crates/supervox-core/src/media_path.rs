//! The media path of one call: end-to-end encrypted datagrams, connectivity
//! checks over candidate pairs, and the choice of the path in use.
//!
//! A pair is a local base — our socket directly, or our TURN allocation — and
//! a remote candidate. Checks run on every pair until one answers; the best
//! answering pair carries media (direct before relayed). Checks go on after
//! that: a better pair that starts answering takes over (upgrade), and when
//! the pair in use stops answering consent checks the best other live pair
//! takes over within [`FAILOVER_MS`] (failover). Both raise `path_changed`.
//! Port prediction ([`predict`]) adds pairs where a NAT maps per destination.
//! A TCP media stream (RFC 6544; opened by the client, see `client/tcp.rs`) is
//! a base of its own with one pair, added once the stream is up.
//!
//! Wire format of every media datagram (see docs/PROTOCOL.md):
//! `[kind u8][call tag 8][counter u64 BE][ChaCha20-Poly1305 ciphertext of
//! (kind u8 ‖ payload)]`.
//! The key comes from the callers' Noise IK handshake; the counter is the
//! AEAD nonce, checked against a replay window after decryption. The path
//! kind is where TCP and relayed transports slot in.

pub mod predict;

use crate::reason::PathChange;
use crate::replay::ReplayWindow;
use std::collections::VecDeque;
use std::net::SocketAddr;
use supervox_proto::{CallId, Candidate};

/// Connectivity check (payload: 8-byte nonce).
pub const KIND_CHECK: u8 = 1;
/// Answer to a check (payload: the nonce).
pub const KIND_CHECK_ACK: u8 = 2;
/// Encrypted media (payload: an RTP-like media frame).
pub const KIND_MEDIA: u8 = 3;
/// Header bytes before the ciphertext.
pub const HEADER_LEN: usize = 1 + 8 + 8;
/// Largest datagram accepted.
pub const MAX_DATAGRAM: usize = 1500;
/// Interval between checks while no path works.
pub const CHECK_INTERVAL_MS: u64 = 50;
/// Interval of consent checks on the pair in use: fast, so a dead path is
/// noticed well within a second.
pub const CONSENT_INTERVAL_MS: u64 = 200;
/// Interval of checks on the other pairs once a path works (upgrade and
/// standby for failover).
pub const STANDBY_INTERVAL_MS: u64 = 1_000;
/// How long new pairs are checked at full pace after candidates arrive.
pub const SEARCH_MS: u64 = 3_000;
/// The pair in use is dead when no check was answered for this long.
pub const FAILOVER_MS: u64 = 700;
/// A standby pair counts as live when it answered within this window.
const ALIVE_MS: u64 = 2_500;
/// A relayed pair that answers first is used only after this long from the
/// start of the checks, so a direct pair answering a moment later wins
/// without a path change (direct pairs need a round of triggered checks).
pub const RELAY_GRACE_MS: u64 = 150;
/// Pairs per call at most (remote candidates × local bases, plus learnt ones,
/// plus TCP streams).
pub const MAX_PAIRS: usize = 40;
/// TCP media streams open per call at most; also the most pairs over TCP.
pub const MAX_TCP_STREAMS: usize = 4;

/// How media reaches the peer; the names are the JSON contract's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PathKind {
    /// UDP straight between the two clients.
    DirectUdp,
    /// TCP straight between the two clients.
    DirectTcp,
    /// UDP through a relay.
    RelayUdp,
    /// TCP through a relay.
    RelayTcp,
}

impl PathKind {
    /// The contract name, e.g. `direct-udp`.
    pub fn as_str(self) -> &'static str {
        match self {
            PathKind::DirectUdp => "direct-udp",
            PathKind::DirectTcp => "direct-tcp",
            PathKind::RelayUdp => "relay-udp",
            PathKind::RelayTcp => "relay-tcp",
        }
    }
}

/// The call tag carried in clear so a socket can demultiplex calls.
pub fn call_tag(id: &CallId) -> [u8; 8] {
    let mut t = [0u8; 8];
    t.copy_from_slice(&id.0[..8]);
    t
}

/// The call tag of a datagram, if it is long enough to be one of ours.
pub fn datagram_tag(bytes: &[u8]) -> Option<[u8; 8]> {
    if bytes.len() < HEADER_LEN + 16 || bytes.len() > MAX_DATAGRAM {
        return None;
    }
    let mut t = [0u8; 8];
    t.copy_from_slice(&bytes[1..9]);
    Some(t)
}

/// Which local base a datagram leaves from or arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Via {
    /// Our media socket, straight to the peer.
    Direct,
    /// Our TURN allocation (the peer sees our relayed address).
    Relay,
    /// Spare socket `n` of port prediction's hard side, straight to the peer.
    Spare(u16),
    /// TCP media stream `n` (the client's stream id), straight to the peer.
    Tcp(u64),
}

#[derive(Debug, Clone)]
struct Pair {
    via: Via,
    remote: SocketAddr,
    /// The remote address is the peer's relay.
    remote_relayed: bool,
    last_ack_ms: Option<u64>,
}

/// Media path state for one call.
pub struct MediaPath {
    tag: [u8; 8],
    crypto: std::sync::Arc<snow::StatelessTransportState>,
    tx_counter: u64,
    replay: ReplayWindow,
    pairs: Vec<Pair>,
    /// Our relay's transport, when we have a TURN allocation (true: over TCP).
    relay: Option<bool>,
    force_relay: bool,
    no_udp: bool,
    /// Only our relay may be used (the peer is a stranger and the call is
    /// not up yet): nothing leaves from our own addresses.
    private: bool,
    /// The peer's UDP candidates so far, for pairs that become usable later.
    remote_cands: Vec<Candidate>,
    selected: Option<usize>,
    /// When the pair in use was chosen (its consent window starts no earlier).
    selected_since_ms: u64,
    confirmed: bool,
    started_ms: u64,
    next_check_ms: u64,
    next_standby_ms: u64,
    /// Until then, pairs other than the one in use are checked at full pace
    /// (new candidates arrived: an upgrade is likely).
    fast_until_ms: u64,
    check_nonce: u64,
    last_rx_ms: u64,
    /// Checks awaiting an ack: (nonce, sent at, pair), oldest first, bounded.
    in_flight: VecDeque<(u64, u64, usize)>,
    srtt_ms: Option<f64>,
    out: VecDeque<(Via, SocketAddr, Vec<u8>)>,
    changed: Option<PathChange>,
    predict: predict::Predictor,
    /// TCP media streams that are up and belong to this call (≤ [`MAX_TCP_STREAMS`]).
    tcp_open: Vec<u64>,
}

impl std::fmt::Debug for MediaPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MediaPath(selected={:?}, confirmed={})", self.selected.map(|i| &self.pairs[i]), self.confirmed)
    }
}

/// Which local bases a path may use.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalBases {
    /// We hold a TURN allocation; `Some(true)` when it is reached over TCP.
    pub relay: Option<bool>,
    /// Use relayed pairs only (privacy, or a network that must not see the peer).
    pub force_relay: bool,
    /// UDP does not get out of here (we reach our relay over TCP): no direct pairs.
    pub no_udp: bool,
    /// Until [`MediaPath::reveal`]: only our relay (the peer is a stranger).
    pub private: bool,
}

impl MediaPath {
    /// A path for call `id` with the keys of a finished handshake, the peer's
    /// candidates (UDP ones) and our local bases.
    pub fn new(
        id: &CallId,
        crypto: std::sync::Arc<snow::StatelessTransportState>,
        remote: &[Candidate],
        local: LocalBases,
        now_ms: u64,
    ) -> Self {
        let mut p = Self {
            tag: call_tag(id),
            crypto,
            tx_counter: 0,
            replay: ReplayWindow::new(),
            pairs: Vec::new(),
            relay: local.relay,
            force_relay: local.force_relay,
            no_udp: local.no_udp,
            private: local.private,
            remote_cands: Vec::new(),
            selected: None,
            selected_since_ms: now_ms,
            confirmed: false,
            started_ms: now_ms,
            next_check_ms: now_ms,
            next_standby_ms: now_ms,
            fast_until_ms: 0,
            check_nonce: 0,
            last_rx_ms: now_ms,
            in_flight: VecDeque::new(),
            srtt_ms: None,
            out: VecDeque::new(),
            changed: None,
            predict: predict::Predictor::default(),
            tcp_open: Vec::new(),
        };
        p.add_remote_candidates(remote);
        p.handle_timeout(now_ms);
        p
    }

    fn usable(&self, via: Via, remote_relayed: bool) -> bool {
        if self.private && via != Via::Relay {
            return false;
        }
        match via {
            Via::Relay => self.relay.is_some(),
            Via::Direct => !self.no_udp && (!self.force_relay || remote_relayed),
            Via::Spare(i) => !self.no_udp && (!self.force_relay || remote_relayed) && self.spare_open(i),
            Via::Tcp(s) => !self.force_relay && self.tcp_open.contains(&s),
        }
    }

    /// Pair `i` can be sent on now (its spare socket was not closed since).
    fn pair_usable(&self, i: usize) -> bool {
        self.usable(self.pairs[i].via, self.pairs[i].remote_relayed)
    }

    fn add_pair(&mut self, via: Via, remote: SocketAddr, remote_relayed: bool) -> Option<usize> {
        if let Some(i) = self.pairs.iter().position(|p| p.via == via && p.remote == remote) {
            return Some(i);
        }
        if !self.usable(via, remote_relayed) || self.pairs.len() >= MAX_PAIRS {
            return None;
        }
        self.pairs.push(Pair { via, remote, remote_relayed, last_ack_ms: None });
        Some(self.pairs.len() - 1)
    }

    /// Our own addresses may be used from now on (the call is up, or its
    /// relay pairs failed): pair every base with the peer's candidates.
    pub fn reveal(&mut self, now_ms: u64) {
        if !self.private {
            return;
        }
        self.private = false;
        let known = std::mem::take(&mut self.remote_cands);
        self.add_remote_candidates(&known);
        self.search(now_ms);
    }

    /// New pairs may work (candidates were trickled or revealed): check
    /// them at full pace for a few seconds instead of at standby pace.
    pub fn search(&mut self, now_ms: u64) {
        self.fast_until_ms = now_ms + SEARCH_MS;
        self.next_check_ms = self.next_check_ms.min(now_ms);
        self.next_standby_ms = self.next_standby_ms.min(now_ms);
    }

    /// True while only our relay may be used.
    pub fn is_private(&self) -> bool {
        self.private
    }

    /// The local relay came up (or went away) after the call started.
    pub fn set_relay(&mut self, relay: Option<bool>) {
        self.relay = relay;
        if relay.is_some() {
            let remotes: Vec<(SocketAddr, bool)> =
                self.pairs.iter().filter(|p| p.via == Via::Direct).map(|p| (p.remote, p.remote_relayed)).collect();
            for (r, relayed) in remotes {
                self.add_pair(Via::Relay, r, relayed);
            }
        }
    }

    /// Remote candidates (offered, or trickled later): their UDP ones, at most
    /// 16, highest priority first, each paired with every local base.
    pub fn add_remote_candidates(&mut self, remote: &[Candidate]) {
        for c in remote.iter().filter(|c| c.transport == supervox_proto::Transport::Udp) {
            if self.remote_cands.len() < supervox_proto::call::MAX_CALL_CANDIDATES && !self.remote_cands.contains(c) {
                self.remote_cands.push(*c);
            }
        }
        let mut remotes: Vec<&Candidate> =
            remote.iter().filter(|c| c.transport == supervox_proto::Transport::Udp).collect();
        remotes.sort_by_key(|c| std::cmp::Reverse(c.priority));
        for c in remotes.into_iter().take(16) {
            let relayed = c.kind == supervox_proto::CandidateKind::Relay;
            self.add_pair(Via::Direct, c.addr, relayed);
            self.add_pair(Via::Relay, c.addr, relayed);
        }
    }

    /// TCP stream `stream` to the peer at `remote` is up (we connected, or it
    /// is an inbound stream about to be authenticated by its first frame):
    /// frames on it count as this call's. An outbound one gets its pair and a
    /// check at once; an inbound one gets its pair from its first authentic
    /// check. False when the call has its [`MAX_TCP_STREAMS`] already.
    pub fn tcp_up(&mut self, stream: u64, remote: SocketAddr, outbound: bool, now_ms: u64) -> bool {
        if self.force_relay || (!self.tcp_open.contains(&stream) && self.tcp_open.len() >= MAX_TCP_STREAMS) {
            return false;
        }
        if !self.tcp_open.contains(&stream) {
            self.tcp_open.push(stream);
        }
        if outbound {
            if let Some(i) = self.add_pair(Via::Tcp(stream), remote, false) {
                self.send_check(i, now_ms);
            }
        }
        true
    }

    /// TCP stream `stream` closed: its pair is never used again (a pair in use
    /// fails over like any dead pair).
    pub fn tcp_down(&mut self, stream: u64) {
        self.tcp_open.retain(|s| *s != stream);
    }

    /// An authentic datagram has arrived on TCP stream `stream` (it has a pair).
    pub fn tcp_authenticated(&self, stream: u64) -> bool {
        self.pairs.iter().any(|p| p.via == Via::Tcp(stream))
    }

    /// The TCP streams this call holds.
    pub fn tcp_streams(&self) -> &[u64] {
        &self.tcp_open
    }

    /// The remote addresses the relay must permit.
    pub fn remote_addrs(&self) -> Vec<SocketAddr> {
        let mut v: Vec<SocketAddr> =
            self.pairs.iter().filter(|p| !matches!(p.via, Via::Tcp(_))).map(|p| p.remote).collect();
        v.dedup();
        v
    }

    /// True once a check was answered (or media arrived) on a path.
    pub fn is_connected(&self) -> bool {
        self.confirmed
    }

    fn kind_of(&self, p: &Pair) -> PathKind {
        match (p.via, self.relay) {
            (Via::Relay, Some(true)) => PathKind::RelayTcp,
            (Via::Relay, _) => PathKind::RelayUdp,
            (Via::Tcp(_), _) => PathKind::DirectTcp,
            (Via::Direct | Via::Spare(_), _) if p.remote_relayed => PathKind::RelayUdp,
            (Via::Direct | Via::Spare(_), _) => PathKind::DirectUdp,
        }
    }

    /// The path in use.
    pub fn kind(&self) -> PathKind {
        self.selected.map(|i| self.kind_of(&self.pairs[i])).unwrap_or(PathKind::DirectUdp)
    }

    /// Better is smaller: direct UDP, direct TCP, relayed by one side,
    /// relayed by both.
    fn rank(&self, i: usize) -> u8 {
        let p = &self.pairs[i];
        match (p.via, p.remote_relayed) {
            (Via::Direct | Via::Spare(_), false) => 0,
            (Via::Tcp(_), _) => 1,
            (Via::Direct | Via::Spare(_), true) | (Via::Relay, false) => 2,
            (Via::Relay, true) => 3,
        }
    }

    /// The peer address in use.
    pub fn remote(&self) -> Option<SocketAddr> {
        self.selected.map(|i| self.pairs[i].remote)
    }

    /// When we last received an authenticated datagram.
    pub fn last_rx_ms(&self) -> u64 {
        self.last_rx_ms
    }

    /// A change of path since the last call, with its reason.
    pub fn take_change(&mut self) -> Option<PathChange> {
        self.changed.take()
    }

    /// Handle a datagram for this call that arrived `via` a base from `from`.
    /// Returns the media plaintext for media packets; checks are answered
    /// internally. Anything that does not authenticate or is a replay is
    /// dropped silently.
    pub fn handle_datagram(&mut self, via: Via, from: SocketAddr, bytes: &[u8], now_ms: u64) -> Option<Vec<u8>> {
        if datagram_tag(bytes)? != self.tag {
            return None;
        }
        if matches!(via, Via::Spare(i) if !self.spare_open(i)) {
            return None; // a closed spare: nothing may be sent from it
        }
        if matches!(via, Via::Tcp(s) if !self.tcp_open.contains(&s)) {
            return None; // a stream this call does not hold
        }
        if self.no_udp && matches!(via, Via::Direct | Via::Spare(_)) {
            // Direct UDP is off here: answering it would lead the peer onto a
            // path we never send media on.
            return None;
        }
        let kind = bytes[0];
        let counter = u64::from_be_bytes(bytes[9..17].try_into().ok()?);
        if counter >= supervox_proto::call::SEALED_NONCE_BASE {
            return None; // the signals' half of the nonce space
        }
        let mut plain = vec![0u8; bytes.len()];
        let n = self.crypto.read_message(counter, &bytes[HEADER_LEN..], &mut plain).ok()?;
        plain.truncate(n);
        // The kind byte is repeated inside the ciphertext: the clear copy is
        // only a hint, and a packet whose copies differ was tampered with.
        // (The tag is bound by the key: another call's key cannot open it.)
        if plain.first() != Some(&kind) || !self.replay.accept(counter) {
            return None;
        }
        plain.remove(0);
        self.last_rx_ms = now_ms;
        // A source we were not told of is a peer-reflexive candidate: learn it.
        let known = self.pairs.iter().position(|p| p.via == via && p.remote == from);
        let pair = known.or_else(|| {
            let relayed = self.pairs.iter().any(|p| p.remote == from && p.remote_relayed);
            self.add_pair(via, from, relayed)
        });
        match kind {
            KIND_CHECK => {
                self.seal_to(via, from, KIND_CHECK_ACK, &plain);
                // Triggered check: a pair the peer can reach us on is worth
                // checking from our side at once.
                if let Some(i) = pair.filter(|&i| !self.alive(i, now_ms)) {
                    self.send_check(i, now_ms);
                }
                None
            }
            KIND_CHECK_ACK => {
                if let Some(i) = pair {
                    self.pairs[i].last_ack_ms = Some(now_ms);
                    self.reselect(now_ms);
                    self.rtt_sample(&plain, i, now_ms);
                }
                None
            }
            KIND_MEDIA => {
                if !self.confirmed {
                    if let Some(i) = pair {
                        self.pairs[i].last_ack_ms = Some(now_ms);
                        self.reselect(now_ms);
                    }
                }
                Some(plain)
            }
            _ => None,
        }
    }

    fn alive(&self, i: usize, now_ms: u64) -> bool {
        let Some(ack) = self.pairs[i].last_ack_ms.filter(|_| self.pair_usable(i)) else {
            return false;
        };
        if Some(i) == self.selected {
            now_ms.saturating_sub(ack.max(self.selected_since_ms)) <= FAILOVER_MS
        } else {
            now_ms.saturating_sub(ack) <= ALIVE_MS
        }
    }

    /// Use the best live pair; note upgrades and failovers.
    fn reselect(&mut self, now_ms: u64) {
        let best = (0..self.pairs.len()).filter(|&i| self.alive(i, now_ms)).min_by_key(|&i| (self.rank(i), i));
        let Some(best) = best else {
            return;
        };
        match self.selected {
            None if self.rank(best) > 0 && now_ms < self.started_ms + RELAY_GRACE_MS => {}
            None => {
                self.selected = Some(best);
                self.selected_since_ms = now_ms;
                self.confirmed = true;
            }
            Some(cur) if cur == best => {}
            Some(cur) => {
                let cur_alive = self.alive(cur, now_ms);
                if !cur_alive || self.rank(best) < self.rank(cur) {
                    let before = self.kind_of(&self.pairs[cur]);
                    self.selected = Some(best);
                    self.selected_since_ms = now_ms;
                    self.next_check_ms = now_ms;
                    self.srtt_ms = None;
                    let after = self.kind_of(&self.pairs[best]);
                    if !cur_alive {
                        // Its old answers must not make it a live standby again
                        // (it would win back on rank and flap until ALIVE_MS).
                        self.pairs[cur].last_ack_ms = None;
                        self.changed = Some(PathChange::Failover);
                    } else if before != after {
                        self.changed = Some(PathChange::Upgrade);
                    }
                }
            }
        }
        self.settle_prediction(now_ms);
    }

    /// Smoothed round-trip time of the path (RFC 6298 style, from check
    /// round trips), once one was measured.
    pub fn rtt_ms(&self) -> Option<f64> {
        self.srtt_ms
    }

    fn rtt_sample(&mut self, nonce: &[u8], pair: usize, now_ms: u64) {
        let Ok(nonce) = <[u8; 8]>::try_from(nonce).map(u64::from_be_bytes) else {
            return;
        };
        let Some(pos) = self.in_flight.iter().position(|(n, _, _)| *n == nonce) else {
            return;
        };
        let (_, sent, on) = self.in_flight[pos];
        self.in_flight.remove(pos);
        if on != pair || Some(pair) != self.selected {
            return;
        }
        let sample = now_ms.saturating_sub(sent) as f64;
        self.srtt_ms = Some(match self.srtt_ms {
            Some(s) => 0.875 * s + 0.125 * sample,
            None => sample,
        });
    }

    /// Encrypt and queue one media frame on the selected path.
    pub fn send_media(&mut self, plaintext: &[u8]) {
        if let (true, Some(i)) = (self.confirmed, self.selected) {
            let (via, to) = (self.pairs[i].via, self.pairs[i].remote);
            self.seal_to(via, to, KIND_MEDIA, plaintext);
        }
    }

    fn seal_to(&mut self, via: Via, to: SocketAddr, kind: u8, plaintext: &[u8]) {
        let counter = self.tx_counter;
        self.tx_counter += 1;
        let mut pkt = Vec::with_capacity(HEADER_LEN + plaintext.len() + 16);
        pkt.push(kind);
        pkt.extend_from_slice(&self.tag);
        pkt.extend_from_slice(&counter.to_be_bytes());
        let mut inner = Vec::with_capacity(plaintext.len() + 1);
        inner.push(kind);
        inner.extend_from_slice(plaintext);
        let mut ct = vec![0u8; inner.len() + 16];
        match self.crypto.write_message(counter, &inner, &mut ct) {
            Ok(n) => {
                pkt.extend_from_slice(&ct[..n]);
                self.out.push_back((via, to, pkt));
            }
            Err(e) => tracing::warn!("media encryption failed: {e}"),
        }
    }

    /// Next datagram to send, and the base to send it from.
    pub fn poll_transmit(&mut self) -> Option<(Via, SocketAddr, Vec<u8>)> {
        self.out.pop_front()
    }

    fn send_check(&mut self, i: usize, now_ms: u64) {
        self.check_nonce += 1;
        let nonce = self.check_nonce.to_be_bytes();
        if self.in_flight.len() >= 64 {
            self.in_flight.pop_front();
        }
        self.in_flight.push_back((self.check_nonce, now_ms, i));
        let (via, to) = (self.pairs[i].via, self.pairs[i].remote);
        self.seal_to(via, to, KIND_CHECK, &nonce);
    }

    /// Send checks: on every pair until one answers; then consent checks on
    /// the pair in use and slower checks on the others (upgrade, standby).
    pub fn handle_timeout(&mut self, now_ms: u64) {
        if !self.confirmed {
            // A relayed pair may have answered inside the grace period.
            self.reselect(now_ms);
        }
        if self.confirmed {
            self.reselect(now_ms);
            if let Some(cur) = self.selected {
                if !self.alive(cur, now_ms) {
                    // No live alternative yet: search on every pair at full pace.
                    self.next_standby_ms = self.next_standby_ms.min(now_ms);
                }
            }
        }
        if now_ms >= self.next_check_ms {
            match (self.confirmed, self.selected) {
                (true, Some(cur)) => {
                    self.send_check(cur, now_ms);
                    self.next_check_ms = now_ms + CONSENT_INTERVAL_MS;
                }
                _ => {
                    for i in 0..self.pairs.len() {
                        if self.pair_usable(i) {
                            self.send_check(i, now_ms);
                        }
                    }
                    // Full pace for the first seconds, then gentler.
                    let pace = if now_ms < self.started_ms + 3_000 { CHECK_INTERVAL_MS } else { 4 * CHECK_INTERVAL_MS };
                    self.next_check_ms = now_ms + pace;
                }
            }
        }
        if self.confirmed && now_ms >= self.next_standby_ms {
            let searching = self.selected.is_some_and(|c| !self.alive(c, now_ms));
            for i in 0..self.pairs.len() {
                if Some(i) != self.selected && self.pair_usable(i) {
                    self.send_check(i, now_ms);
                }
            }
            let fast = searching || now_ms < self.fast_until_ms;
            self.next_standby_ms = now_ms + if fast { 2 * CHECK_INTERVAL_MS } else { STANDBY_INTERVAL_MS };
        }
        self.tick_prediction(now_ms);
    }

    /// When [`MediaPath::handle_timeout`] wants to run next.
    pub fn poll_timeout(&self) -> u64 {
        let checks = if self.confirmed { self.next_check_ms.min(self.next_standby_ms) } else { self.next_check_ms };
        self.prediction_timeout().map_or(checks, |p| p.min(checks))
    }
}

#[cfg(test)]
mod tests;
