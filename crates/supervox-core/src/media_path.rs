//! The media path of one call: end-to-end encrypted datagrams, connectivity
//! checks over the peer's candidates, and the choice of the path in use.
//!
//! Wire format of every media datagram (see docs/PROTOCOL.md):
//! `[kind u8][call tag 8][counter u64 BE][ChaCha20-Poly1305 ciphertext of
//! (kind u8 ‖ payload)]`.
//! The key comes from the callers' Noise IK handshake; the counter is the
//! AEAD nonce, checked against a replay window after decryption. The path
//! kind is where TCP and relayed transports slot in.

use std::collections::VecDeque;
use std::net::SocketAddr;
use supervox_media::replay::ReplayWindow;
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
/// Interval of consent checks on a working path.
pub const CONSENT_INTERVAL_MS: u64 = 1_000;

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

/// Media path state for one call.
pub struct MediaPath {
    tag: [u8; 8],
    crypto: snow::StatelessTransportState,
    tx_counter: u64,
    replay: ReplayWindow,
    remotes: Vec<SocketAddr>,
    selected: Option<SocketAddr>,
    confirmed: bool,
    next_check_ms: u64,
    check_nonce: u64,
    last_rx_ms: u64,
    /// Checks awaiting an ack: (nonce, sent at), oldest first, bounded.
    in_flight: VecDeque<(u64, u64)>,
    srtt_ms: Option<f64>,
    out: VecDeque<(SocketAddr, Vec<u8>)>,
}

impl std::fmt::Debug for MediaPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MediaPath(selected={:?}, confirmed={})", self.selected, self.confirmed)
    }
}

impl MediaPath {
    /// A path for call `id` with the keys of a finished handshake and the
    /// peer's candidates (UDP ones are used; others await their transports).
    pub fn new(id: &CallId, crypto: snow::StatelessTransportState, remote: &[Candidate], now_ms: u64) -> Self {
        let mut remotes: Vec<&Candidate> =
            remote.iter().filter(|c| c.transport == supervox_proto::Transport::Udp).collect();
        remotes.sort_by_key(|c| std::cmp::Reverse(c.priority));
        let mut p = Self {
            tag: call_tag(id),
            crypto,
            tx_counter: 0,
            replay: ReplayWindow::new(),
            remotes: remotes.iter().map(|c| c.addr).take(16).collect(),
            selected: None,
            confirmed: false,
            next_check_ms: now_ms,
            check_nonce: 0,
            last_rx_ms: now_ms,
            in_flight: VecDeque::new(),
            srtt_ms: None,
            out: VecDeque::new(),
        };
        p.handle_timeout(now_ms);
        p
    }

    /// True once a check was answered (or media arrived) on a path.
    pub fn is_connected(&self) -> bool {
        self.confirmed
    }

    /// The path in use.
    pub fn kind(&self) -> PathKind {
        PathKind::DirectUdp
    }

    /// The peer address in use.
    pub fn remote(&self) -> Option<SocketAddr> {
        self.selected
    }

    /// When we last received an authenticated datagram.
    pub fn last_rx_ms(&self) -> u64 {
        self.last_rx_ms
    }

    /// Handle a datagram for this call. Returns the media plaintext for
    /// media packets; checks are answered internally. Anything that does not
    /// authenticate or is a replay is dropped silently.
    pub fn handle_datagram(&mut self, from: SocketAddr, bytes: &[u8], now_ms: u64) -> Option<Vec<u8>> {
        if datagram_tag(bytes)? != self.tag {
            return None;
        }
        let kind = bytes[0];
        let counter = u64::from_be_bytes(bytes[9..17].try_into().ok()?);
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
        match kind {
            KIND_CHECK => {
                // Learn the address the peer's packets come from (it may be a
                // mapping we were not told of) and answer there.
                if !self.confirmed {
                    self.selected = Some(from);
                }
                self.seal_to(from, KIND_CHECK_ACK, &plain);
                None
            }
            KIND_CHECK_ACK => {
                self.rtt_sample(&plain, now_ms);
                if !self.confirmed || self.selected != Some(from) {
                    self.selected = Some(from);
                    self.confirmed = true;
                }
                None
            }
            KIND_MEDIA => {
                if !self.confirmed {
                    self.selected = Some(from);
                    self.confirmed = true;
                }
                Some(plain)
            }
            _ => None,
        }
    }

    /// Smoothed round-trip time of the path (RFC 6298 style, from check
    /// round trips), once one was measured.
    pub fn rtt_ms(&self) -> Option<f64> {
        self.srtt_ms
    }

    fn rtt_sample(&mut self, nonce: &[u8], now_ms: u64) {
        let Ok(nonce) = <[u8; 8]>::try_from(nonce).map(u64::from_be_bytes) else {
            return;
        };
        let Some(pos) = self.in_flight.iter().position(|(n, _)| *n == nonce) else {
            return;
        };
        let (_, sent) = self.in_flight[pos];
        self.in_flight.drain(..=pos);
        let sample = now_ms.saturating_sub(sent) as f64;
        self.srtt_ms = Some(match self.srtt_ms {
            Some(s) => 0.875 * s + 0.125 * sample,
            None => sample,
        });
    }

    /// Encrypt and queue one media frame on the selected path.
    pub fn send_media(&mut self, plaintext: &[u8]) {
        if let (true, Some(to)) = (self.confirmed, self.selected) {
            self.seal_to(to, KIND_MEDIA, plaintext);
        }
    }

    fn seal_to(&mut self, to: SocketAddr, kind: u8, plaintext: &[u8]) {
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
                self.out.push_back((to, pkt));
            }
            Err(e) => tracing::warn!("media encryption failed: {e}"),
        }
    }

    /// Next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.out.pop_front()
    }

    /// Send checks: to every candidate until one answers, then a consent
    /// check on the selected path every second.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        if now_ms < self.next_check_ms {
            return;
        }
        self.check_nonce += 1;
        let nonce = self.check_nonce.to_be_bytes();
        if self.in_flight.len() >= 32 {
            self.in_flight.pop_front();
        }
        self.in_flight.push_back((self.check_nonce, now_ms));
        if self.confirmed {
            if let Some(to) = self.selected {
                self.seal_to(to, KIND_CHECK, &nonce);
            }
            self.next_check_ms = now_ms + CONSENT_INTERVAL_MS;
        } else {
            for to in self.remotes.clone() {
                self.seal_to(to, KIND_CHECK, &nonce);
            }
            self.next_check_ms = now_ms + CHECK_INTERVAL_MS;
        }
    }

    /// When [`MediaPath::handle_timeout`] wants to run next.
    pub fn poll_timeout(&self) -> u64 {
        self.next_check_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::tests::handshake_pair;
    use supervox_proto::{CandidateKind, Transport};

    fn cand(p: u16) -> Candidate {
        Candidate {
            kind: CandidateKind::Host,
            transport: Transport::Udp,
            addr: SocketAddr::from(([127, 0, 0, 1], p)),
            priority: 1,
        }
    }

    #[test]
    fn checks_select_a_path_then_media_flows_once() {
        let id = CallId([4; 16]);
        let (ka, kb) = handshake_pair();
        let (aa, ab) = (cand(1000).addr, cand(2000).addr);
        let mut a = MediaPath::new(&id, ka, &[cand(2000), cand(2001)], 0);
        let mut b = MediaPath::new(&id, kb, &[cand(1000)], 0);
        // a's checks go to both of b's candidates; only 2000 is real.
        let mut sent = Vec::new();
        while let Some(d) = a.poll_transmit() {
            sent.push(d);
        }
        assert_eq!(sent.len(), 2);
        for (to, bytes) in sent {
            if to == ab {
                assert!(b.handle_datagram(aa, &bytes, 1).is_none());
            }
        }
        // b answers with an ack (and its own check to a).
        while let Some((to, bytes)) = b.poll_transmit() {
            assert_eq!(to, aa);
            a.handle_datagram(ab, &bytes, 2);
        }
        assert!(a.is_connected());
        assert_eq!(a.remote(), Some(ab));
        assert_eq!(a.rtt_ms(), Some(2.0), "check sent at 0, acked at 2");
        a.send_media(b"frame");
        let (to, pkt) = a.poll_transmit().filter(|(_, p)| p[0] == KIND_MEDIA).or_else(|| a.poll_transmit()).unwrap();
        assert_eq!(to, ab);
        assert_eq!(b.handle_datagram(aa, &pkt, 3).as_deref(), Some(&b"frame"[..]));
        // Replays and tampering are dropped.
        assert!(b.handle_datagram(aa, &pkt, 4).is_none());
        let mut bad = pkt.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(b.handle_datagram(aa, &bad, 4).is_none());
        // Relabelling the clear kind byte is detected too.
        a.send_media(b"frame-2");
        let (_, mut relabelled) = a.poll_transmit().unwrap();
        relabelled[0] = KIND_CHECK;
        while b.poll_transmit().is_some() {}
        assert!(b.handle_datagram(aa, &relabelled, 5).is_none());
        assert!(b.poll_transmit().is_none(), "a relabelled media packet was answered as a check");
    }

    #[test]
    fn garbage_datagrams_are_ignored() {
        use rand::{Rng, SeedableRng};
        let id = CallId([4; 16]);
        let (ka, _) = handshake_pair();
        let mut a = MediaPath::new(&id, ka, &[cand(2000)], 0);
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let from = cand(9).addr;
        for _ in 0..20_000 {
            let len = rng.gen_range(0..200);
            let mut b: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            if b.len() > 9 && rng.gen_bool(0.5) {
                b[1..9].copy_from_slice(&call_tag(&id));
            }
            assert!(a.handle_datagram(from, &b, 1).is_none());
        }
        assert!(!a.is_connected());
    }
}
