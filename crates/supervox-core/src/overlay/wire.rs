//! Overlay datagrams authenticated per sender: pairwise keys, a replay
//! window, return-routability cookies.
//!
//! Every supernode has its own Ed25519 identity (its member id). Two members
//! derive one pairwise key from a static X25519 Diffie-Hellman of their
//! identities' Montgomery forms, salted with the network key, so a datagram
//! proves which member sent it without a signature per datagram (one DH per
//! pair, cached in a bounded [`Wire`] table). The network key is a network
//! *identifier* that keeps networks apart; for the open network it is public,
//! and nothing secret is handed to a promoted client.
//!
//! Sealed datagram (all integers little-endian):
//!
//! ```text
//! 0xc5 ‖ 0x02 ‖ sender id (32) ‖ counter (8) ‖ flags (1) ‖ [echo (16)] ‖ [give (16)]
//!      ‖ ChaCha20-Poly1305(packet [‖ zero padding])
//! ```
//!
//! with everything before the ciphertext, followed by the receiver's id, as
//! associated data, and the nonce `direction ‖ 0 0 0 ‖ counter` (the
//! direction byte keeps the two senders of one pairwise key apart). The
//! counter is `stamp_ms << 20 | seq`: the sender's clock when it last rolled
//! the counter, and a sequence number. A receiver accepts a counter once (a
//! 1024-entry window per sender) and only if its stamp is within
//! [`FRESH_MS`] of its own clock, so a datagram captured earlier cannot be
//! replayed, even after the receiver forgot the sender.
//!
//! Return routability (as QUIC's address validation): answers to an address
//! that has not proved it receives our datagrams may be no larger than what
//! came from it (no amplification toward a spoofed source). A sender proves
//! it by echoing a *cookie* (a MAC of its address under our secret) that we
//! give in datagrams to it; a joiner gets one in the `HelloAck` to its
//! `Hello` (`0xc5 ‖ 0x01 ‖ network tag (8) ‖ zeros`, 64 bytes), which is how
//! it learns the id of a seed it knows only by address.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use curve25519_dalek::montgomery::MontgomeryPoint;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::collections::VecDeque;
use std::net::SocketAddr;
use supervox_proto::overlay::{
    decode_packet, encode_packet, OverlayError, OverlayPacket, MAX_OVERLAY_DATAGRAM, OVERLAY_MAGIC,
};
use supervox_proto::UserId;

use crate::identity::{noise_public_key, Identity};

const KIND_HELLO: u8 = 0x01;
const KIND_SEALED: u8 = 0x02;
const KIND_HELLO_ACK: u8 = 0x03;
/// A `Hello` is this long, so that its answer (`HelloAck`, 50 bytes) is no larger.
pub const HELLO_LEN: usize = 64;
const HELLO_ACK_LEN: usize = 2 + 32 + COOKIE_LEN;
const COOKIE_LEN: usize = 16;
const TAG_LEN: usize = 16;
/// Fixed part of a sealed header: magic, kind, sender, counter, flags.
const HEADER_LEN: usize = 2 + 32 + 8 + 1;
const FLAG_ECHO: u8 = 1;
const FLAG_GIVE: u8 = 2;
/// A counter's stamp must be this close to the receiver's clock (supernodes
/// keep NTP time; the bound limits replays after a receiver forgot a sender).
pub const FRESH_MS: u64 = 60_000;
/// The sender rolls its counter's stamp to its clock this often.
const ROLL_MS: u64 = 10_000;
const SEQ_BITS: u32 = 20;
/// Pairwise keys cached, by default.
pub const DEFAULT_PEER_KEYS: usize = 4_096;
/// Senders not known as members whose key we derive per second, at most: each
/// costs a Diffie-Hellman, and strangers can make up keys for free.
pub const STRANGERS_PER_SEC: u32 = 200;
/// Unvalidated bytes we may answer a peer with, at most, however much it sent.
const MAX_CREDIT: u32 = 16 * 1024;
/// Addresses remembered for senders the membership does not know.
const MAX_ADDRS: usize = 1_024;
/// Cookies are minted per window; the current and the previous one are accepted.
const COOKIE_WINDOW_MS: u64 = 120_000;

/// The identifier of one network, mixed into every pairwise key: members of
/// different networks cannot talk. Public for the open network; a private
/// network may keep its own secret to keep strangers out altogether.
#[derive(Clone)]
pub struct NetworkKey {
    bytes: [u8; 32],
}

impl std::fmt::Debug for NetworkKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NetworkKey(..)")
    }
}

impl NetworkKey {
    /// A network from its 32 bytes.
    pub fn new(bytes: [u8; 32]) -> Self {
        Self { bytes }
    }

    /// The key's bytes (for a promotion, over an encrypted link only).
    pub fn bytes(&self) -> [u8; 32] {
        self.bytes
    }

    /// The open network's identifier, used when an operator gives none:
    /// anyone can run a supernode in it.
    pub fn open_network() -> Self {
        let mut k = [0u8; 32];
        for (i, b) in b"supervox open test network key!!".iter().enumerate() {
            k[i] = *b;
        }
        Self::new(k)
    }

    /// Eight bytes a `Hello` carries so that other networks' seeds ignore it.
    fn tag(&self) -> [u8; 8] {
        let h = Sha256::new().chain_update(b"supervox hello").chain_update(self.bytes).finalize();
        let mut t = [0u8; 8];
        t.copy_from_slice(&h[..8]);
        t
    }
}

/// True if a UDP datagram is meant for the overlay (cheap demultiplexing on
/// the supernode's shared UDP port).
pub fn is_overlay(datagram: &[u8]) -> bool {
    datagram.first() == Some(&OVERLAY_MAGIC)
}

/// What an overlay datagram turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
// Handled at once, never stored: boxing the packet would cost an allocation per datagram.
#[allow(clippy::large_enum_variant)]
pub enum Inbound {
    /// An authenticated packet from member `sender`.
    Packet {
        /// Who sealed it (authenticated).
        sender: UserId,
        /// The source address has echoed our cookie: it receives what we send there.
        validated: bool,
        /// The packet.
        packet: OverlayPacket,
    },
    /// A `Hello` from someone who knows us by address: send `reply` back.
    Hello {
        /// Our `HelloAck` (smaller than the `Hello`).
        reply: Vec<u8>,
    },
    /// The answer to our `Hello`: the member at that address calls itself
    /// `id` (unauthenticated until a sealed packet from `id` opens).
    HelloAck {
        /// Its claimed identity.
        id: UserId,
    },
}

/// Counters of refused datagrams, for the operators.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WireStats {
    /// Failed authentication, malformed, or from another network.
    pub unauthenticated: u64,
    /// Replayed, or stamped too far from our clock.
    pub replayed: u64,
    /// Answers not sent: they would have amplified toward an unvalidated address.
    pub amplification_refused: u64,
    /// Datagrams from strangers dropped by the new-key rate.
    pub strangers_limited: u64,
}

struct Peer {
    cipher: ChaCha20Poly1305,
    /// Our nonce direction byte toward this peer (theirs is the other).
    dir: u8,
    send_stamp: u64,
    send_seq: u64,
    window: Window,
    /// Where it is known to receive (it echoed our cookie from there).
    validated: Option<SocketAddr>,
    /// Bytes we may still answer to an unvalidated address.
    credit: u32,
    /// The cookie it gave us for our address, to echo while it keeps giving.
    their_cookie: Option<[u8; COOKIE_LEN]>,
    they_give: bool,
    last_used_ms: u64,
}

/// One supernode's side of the overlay's datagram security: see the module docs.
pub struct Wire {
    me: UserId,
    secret: [u8; 32],
    network: NetworkKey,
    cookie_key: [u8; 32],
    peers: crate::Map<UserId, Peer>,
    by_addr: crate::Map<SocketAddr, UserId>,
    /// Insertion order, for eviction (second chance for the recently used).
    order: VecDeque<UserId>,
    cap: usize,
    strangers: (u64, u32),
    stats: WireStats,
}

impl std::fmt::Debug for Wire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wire").field("me", &self.me).field("peers", &self.peers.len()).finish()
    }
}

fn hkdf_key(network: &[u8; 32], dh: &[u8; 32], lo: &UserId, hi: &UserId) -> [u8; 32] {
    let hk = hkdf::Hkdf::<Sha256>::new(Some(network), dh);
    let mut info = Vec::with_capacity(19 + 64);
    info.extend_from_slice(b"supervox overlay v2");
    info.extend_from_slice(&lo.0);
    info.extend_from_slice(&hi.0);
    let mut okm = [0u8; 32];
    // 32 bytes is always a valid HKDF-SHA256 output length.
    if hk.expand(&info, &mut okm).is_err() {
        okm = [0; 32];
    }
    okm
}

impl Wire {
    /// The wire of the member `identity` in `network`; `cookie_key` is secret
    /// randomness for cookies; at most `cap` pairwise keys are kept.
    pub fn new(identity: &Identity, network: NetworkKey, cookie_key: [u8; 32], cap: usize) -> Self {
        Self {
            me: identity.user_id(),
            secret: identity.noise_private_key(),
            network,
            cookie_key,
            peers: crate::Map::default(),
            by_addr: crate::Map::default(),
            order: VecDeque::new(),
            cap: cap.max(16),
            strangers: (0, 0),
            stats: WireStats::default(),
        }
    }

    /// Refusal counters.
    pub fn stats(&self) -> WireStats {
        self.stats
    }

    /// The sender not known as a member we last heard from (or were told of
    /// by a `HelloAck`) at `addr`.
    pub fn id_at(&self, addr: &SocketAddr) -> Option<UserId> {
        self.by_addr.get(addr).copied()
    }

    /// Pairwise keys held.
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// A `Hello` to a supernode known only by address.
    pub fn hello(&self) -> Vec<u8> {
        let mut d = vec![0u8; HELLO_LEN];
        d[0] = OVERLAY_MAGIC;
        d[1] = KIND_HELLO;
        d[2..10].copy_from_slice(&self.network.tag());
        d
    }

    fn cookie(&self, addr: &SocketAddr, window: u64) -> [u8; COOKIE_LEN] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.cookie_key).expect("HMAC takes keys of any length");
        mac.update(&window.to_le_bytes());
        mac.update(addr.to_string().as_bytes());
        let out = mac.finalize().into_bytes();
        let mut c = [0u8; COOKIE_LEN];
        c.copy_from_slice(&out[..COOKIE_LEN]);
        c
    }

    fn cookie_ok(&self, addr: &SocketAddr, c: &[u8], now_ms: u64) -> bool {
        let w = now_ms / COOKIE_WINDOW_MS;
        c == self.cookie(addr, w) || (w > 0 && c == self.cookie(addr, w - 1))
    }

    /// The peer's entry, deriving its key on first use. `None` for a key that
    /// is not a valid curve point or gives a zero secret (low order).
    fn peer(&mut self, id: &UserId, now_ms: u64) -> Option<&mut Peer> {
        if !self.peers.contains_key(id) {
            let their = noise_public_key(id).ok()?;
            let dh = MontgomeryPoint(their).mul_clamped(self.secret).to_bytes();
            if dh == [0u8; 32] {
                return None;
            }
            let (lo, hi) = if self.me.0 < id.0 { (&self.me, id) } else { (id, &self.me) };
            let key = hkdf_key(&self.network.bytes, &dh, lo, hi);
            self.evict_for_one(now_ms);
            self.peers.insert(
                *id,
                Peer {
                    cipher: ChaCha20Poly1305::new(Key::from_slice(&key)),
                    dir: if self.me.0 < id.0 { 1 } else { 2 },
                    send_stamp: 0,
                    send_seq: 0,
                    window: Window::default(),
                    validated: None,
                    credit: 0,
                    their_cookie: None,
                    they_give: false,
                    last_used_ms: now_ms,
                },
            );
            self.order.push_back(*id);
        }
        let p = self.peers.get_mut(id)?;
        p.last_used_ms = now_ms;
        Some(p)
    }

    /// Make room for one more peer: the oldest entry not used in the last
    /// [`FRESH_MS`] goes (the recently used get a second chance, a bounded number of times).
    fn evict_for_one(&mut self, now_ms: u64) {
        let mut chances = self.order.len();
        while self.peers.len() >= self.cap {
            let Some(id) = self.order.pop_front() else { break };
            let recent = self.peers.get(&id).is_some_and(|p| p.last_used_ms + FRESH_MS > now_ms);
            if recent && chances > 0 {
                chances -= 1;
                self.order.push_back(id);
                continue;
            }
            self.peers.remove(&id);
        }
    }

    /// Remember who is at `addr` when the membership cannot say (a seed
    /// before we join, a stranger we answer). Bounded: forgotten wholesale
    /// when full, which costs only a `Hello` or an unanswered stranger.
    fn note_addr(&mut self, id: UserId, addr: SocketAddr) {
        if self.by_addr.len() >= MAX_ADDRS && !self.by_addr.contains_key(&addr) {
            self.by_addr.clear();
        }
        self.by_addr.insert(addr, id);
    }

    /// Seal `packet` for member `to_id` at `to`. `limited`: an answer that
    /// must not amplify toward an address not validated (see the module docs).
    pub fn seal(
        &mut self,
        to_id: &UserId,
        to: SocketAddr,
        packet: &OverlayPacket,
        limited: bool,
        now_ms: u64,
    ) -> Result<Vec<u8>, OverlayError> {
        let plain = encode_packet(packet)?;
        let Some(p) = self.peer(to_id, now_ms) else {
            return Err(OverlayError::Unauthenticated);
        };
        let validated = p.validated == Some(to);
        let mut echo = if p.they_give { p.their_cookie } else { None };
        let len = |echo: bool| {
            HEADER_LEN + COOKIE_LEN * (usize::from(echo) + usize::from(!validated)) + plain.len() + TAG_LEN
        };
        // A limited answer leaves our echo out rather than not go at all.
        if limited && !validated && echo.is_some() && len(true) > p.credit as usize {
            echo = None;
        }
        let len = len(echo.is_some());
        if len > MAX_OVERLAY_DATAGRAM {
            return Err(OverlayError::TooLarge(len));
        }
        if limited && !validated {
            match p.credit.checked_sub(len as u32) {
                Some(left) => p.credit = left,
                None => {
                    self.stats.amplification_refused += 1;
                    return Err(OverlayError::Amplification);
                }
            }
        }
        // Until it echoes one, every datagram to the address carries a cookie.
        let give = (!validated).then(|| self.cookie(&to, now_ms / COOKIE_WINDOW_MS));
        let Some(p) = self.peers.get_mut(to_id) else {
            return Err(OverlayError::Unauthenticated);
        };
        let mut flags = 0u8;
        if echo.is_some() {
            flags |= FLAG_ECHO;
        }
        if give.is_some() {
            flags |= FLAG_GIVE;
        }
        if p.send_seq >= 1 << SEQ_BITS || p.send_stamp + ROLL_MS <= now_ms {
            p.send_stamp = now_ms.max(p.send_stamp + 1);
            p.send_seq = 0;
        }
        let counter = (p.send_stamp << SEQ_BITS) | p.send_seq;
        p.send_seq += 1;
        let mut out = Vec::with_capacity(len);
        out.push(OVERLAY_MAGIC);
        out.push(KIND_SEALED);
        out.extend_from_slice(&self.me.0);
        out.extend_from_slice(&counter.to_le_bytes());
        out.push(flags);
        if let Some(e) = echo {
            out.extend_from_slice(&e);
        }
        if let Some(g) = give {
            out.extend_from_slice(&g);
        }
        let mut aad = out.clone();
        aad.extend_from_slice(&to_id.0);
        let sealed = p
            .cipher
            .encrypt(&nonce(p.dir, counter), Payload { msg: &plain, aad: &aad })
            .map_err(|_| OverlayError::Malformed("cannot seal".into()))?;
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Open a datagram from `from`. `is_member`: whether a sender is a member
    /// we know (strangers are rate-limited before their key is derived).
    pub fn open(
        &mut self,
        from: SocketAddr,
        datagram: &[u8],
        now_ms: u64,
        is_member: impl Fn(&UserId) -> bool,
    ) -> Result<Inbound, OverlayError> {
        let r = self.open_inner(from, datagram, now_ms, is_member);
        match &r {
            Err(OverlayError::Replayed) => self.stats.replayed += 1,
            Err(OverlayError::Amplification) => {}
            Err(OverlayError::RateLimited) => self.stats.strangers_limited += 1,
            Err(_) => self.stats.unauthenticated += 1,
            Ok(_) => {}
        }
        r
    }

    fn open_inner(
        &mut self,
        from: SocketAddr,
        d: &[u8],
        now_ms: u64,
        is_member: impl Fn(&UserId) -> bool,
    ) -> Result<Inbound, OverlayError> {
        if d.len() > MAX_OVERLAY_DATAGRAM {
            return Err(OverlayError::TooLarge(d.len()));
        }
        let (&OVERLAY_MAGIC, rest) = d.split_first().ok_or(OverlayError::NotOverlay)? else {
            return Err(OverlayError::NotOverlay);
        };
        match rest.first() {
            Some(&KIND_HELLO) => {
                if d.len() != HELLO_LEN || d[2..10] != self.network.tag() {
                    return Err(OverlayError::NotOverlay);
                }
                let mut reply = Vec::with_capacity(HELLO_ACK_LEN);
                reply.extend_from_slice(&[OVERLAY_MAGIC, KIND_HELLO_ACK]);
                reply.extend_from_slice(&self.me.0);
                reply.extend_from_slice(&self.cookie(&from, now_ms / COOKIE_WINDOW_MS));
                Ok(Inbound::Hello { reply })
            }
            Some(&KIND_HELLO_ACK) => {
                if d.len() != HELLO_ACK_LEN {
                    return Err(OverlayError::NotOverlay);
                }
                let mut id = [0u8; 32];
                id.copy_from_slice(&d[2..34]);
                let id = UserId(id);
                if id == self.me {
                    return Err(OverlayError::NotOverlay);
                }
                let mut cookie = [0u8; COOKIE_LEN];
                cookie.copy_from_slice(&d[34..HELLO_ACK_LEN]);
                let p = self.peer(&id, now_ms).ok_or(OverlayError::Unauthenticated)?;
                p.their_cookie = Some(cookie);
                p.they_give = true;
                self.note_addr(id, from);
                Ok(Inbound::HelloAck { id })
            }
            Some(&KIND_SEALED) => self.open_sealed(from, d, now_ms, is_member),
            _ => Err(OverlayError::NotOverlay),
        }
    }

    fn open_sealed(
        &mut self,
        from: SocketAddr,
        d: &[u8],
        now_ms: u64,
        is_member: impl Fn(&UserId) -> bool,
    ) -> Result<Inbound, OverlayError> {
        if d.len() < HEADER_LEN + TAG_LEN {
            return Err(OverlayError::NotOverlay);
        }
        let mut sender = [0u8; 32];
        sender.copy_from_slice(&d[2..34]);
        let sender = UserId(sender);
        let mut c = [0u8; 8];
        c.copy_from_slice(&d[34..42]);
        let counter = u64::from_le_bytes(c);
        let flags = d[42];
        if flags & !(FLAG_ECHO | FLAG_GIVE) != 0 || sender == self.me {
            return Err(OverlayError::NotOverlay);
        }
        let mut at = HEADER_LEN;
        let mut take = |on: bool| -> Result<Option<[u8; COOKIE_LEN]>, OverlayError> {
            if !on {
                return Ok(None);
            }
            let s = d.get(at..at + COOKIE_LEN).ok_or(OverlayError::NotOverlay)?;
            at += COOKIE_LEN;
            let mut c = [0u8; COOKIE_LEN];
            c.copy_from_slice(s);
            Ok(Some(c))
        };
        let echo = take(flags & FLAG_ECHO != 0)?;
        let give = take(flags & FLAG_GIVE != 0)?;
        if d.len() < at + TAG_LEN {
            return Err(OverlayError::NotOverlay);
        }
        let stamp = counter >> SEQ_BITS;
        if stamp + FRESH_MS < now_ms || stamp > now_ms + FRESH_MS {
            return Err(OverlayError::Replayed);
        }
        let member = is_member(&sender);
        if !self.peers.contains_key(&sender) && !member {
            if now_ms >= self.strangers.0 + 1_000 {
                self.strangers = (now_ms, 0);
            }
            if self.strangers.1 >= STRANGERS_PER_SEC {
                return Err(OverlayError::RateLimited);
            }
            self.strangers.1 += 1;
        }
        let echo_ok = echo.is_some_and(|e| self.cookie_ok(&from, &e, now_ms));
        let me = self.me;
        let p = self.peer(&sender, now_ms).ok_or(OverlayError::Unauthenticated)?;
        let mut aad = d[..at].to_vec();
        aad.extend_from_slice(&me.0);
        let their_dir = 3 - p.dir;
        let plain = p
            .cipher
            .decrypt(&nonce(their_dir, counter), Payload { msg: &d[at..], aad: &aad })
            .map_err(|_| OverlayError::Unauthenticated)?;
        // Only authenticated counters move the window.
        if !p.window.accept(counter) {
            return Err(OverlayError::Replayed);
        }
        let packet = decode_packet(&plain)?;
        if echo_ok {
            p.validated = Some(from);
        }
        let validated = p.validated == Some(from);
        if !validated {
            p.credit = p.credit.saturating_add(d.len() as u32).min(MAX_CREDIT);
        }
        p.they_give = give.is_some();
        if give.is_some() {
            p.their_cookie = give;
        }
        if !member {
            self.note_addr(sender, from);
        }
        Ok(Inbound::Packet { sender, validated, packet })
    }
}

/// Anti-replay window of 64 counters per sender: counters are consecutive
/// per pair, so 64 covers any reordering a datagram network shows, in 16
/// bytes (10^7 of these live in a 10 000-supernode simulation).
#[derive(Debug, Default, Clone, Copy)]
struct Window {
    top: u64,
    bits: u64,
}

impl Window {
    /// True the first time `c` is seen and it is not older than 64 below the top.
    fn accept(&mut self, c: u64) -> bool {
        if c > self.top || (self.top == 0 && self.bits == 0) {
            let shift = c - self.top;
            self.bits = if shift >= 64 { 0 } else { self.bits << shift };
            self.bits |= 1;
            self.top = c;
            return true;
        }
        let back = self.top - c;
        if back >= 64 || self.bits & (1 << back) != 0 {
            return false;
        }
        self.bits |= 1 << back;
        true
    }
}

fn nonce(dir: u8, counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[0] = dir;
    n[4..].copy_from_slice(&counter.to_le_bytes());
    *Nonce::from_slice(&n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use supervox_proto::overlay::{Member, MemberState, OverlayMsg};

    fn packet(id: UserId) -> OverlayPacket {
        let from = Member {
            id,
            addr: "10.1.1.1:5000".parse().unwrap(),
            incarnation: 0,
            state: MemberState::Alive,
            load: 0,
            nonce: 0,
        };
        OverlayPacket { from, msg: OverlayMsg::Join }
    }

    fn wire(seed: u8, net: [u8; 32]) -> (Identity, Wire) {
        let id = Identity::from_seed([seed; 32]);
        let w = Wire::new(&id, NetworkKey::new(net), [seed ^ 0x55; 32], 64);
        (id, w)
    }

    const A: &str = "10.0.0.1:7000";
    const B: &str = "10.0.0.2:7000";
    const NOW: u64 = 1_000_000;

    #[test]
    fn only_the_pair_opens_once_and_any_change_is_refused() {
        let (ia, mut a) = wire(1, [7; 32]);
        let (ib, mut b) = wire(2, [7; 32]);
        let (_, mut c) = wire(3, [7; 32]);
        let (_, mut other_net) = wire(2, [8; 32]);
        let d = a.seal(&ib.user_id(), B.parse().unwrap(), &packet(ia.user_id()), false, NOW).unwrap();
        assert!(is_overlay(&d));
        let opened = b.open(A.parse().unwrap(), &d, NOW, |_| true).unwrap();
        assert_eq!(opened, Inbound::Packet { sender: ia.user_id(), validated: false, packet: packet(ia.user_id()) });
        // Replayed: refused, however soon.
        assert_eq!(b.open(A.parse().unwrap(), &d, NOW + 1, |_| true), Err(OverlayError::Replayed));
        // A third member, or the same key in another network, cannot open it.
        assert_eq!(c.open(A.parse().unwrap(), &d, NOW, |_| true), Err(OverlayError::Unauthenticated));
        assert_eq!(other_net.open(A.parse().unwrap(), &d, NOW, |_| true), Err(OverlayError::Unauthenticated));
        // Any flipped bit (sender id, counter, flags, body) is refused.
        let d2 = a.seal(&ib.user_id(), B.parse().unwrap(), &packet(ia.user_id()), false, NOW).unwrap();
        for i in 1..d2.len() {
            let mut bad = d2.clone();
            bad[i] ^= 0x40;
            assert!(b.open(A.parse().unwrap(), &bad, NOW, |_| true).is_err(), "flipped byte {i}");
        }
        assert!(b.open(A.parse().unwrap(), &d2, NOW, |_| true).is_ok());
        // A captured datagram replayed to a receiver that forgot the sender
        // (a restart) is refused once its stamp is stale.
        let (_, mut b_restarted) = wire(2, [7; 32]);
        assert_eq!(b_restarted.open(A.parse().unwrap(), &d, NOW + FRESH_MS + 1, |_| true), Err(OverlayError::Replayed));
        assert_eq!(b.open(A.parse().unwrap(), &d[..20], NOW, |_| true), Err(OverlayError::NotOverlay));
        assert_eq!(b.open(A.parse().unwrap(), &[], NOW, |_| true), Err(OverlayError::NotOverlay));
    }

    #[test]
    fn answers_to_an_unvalidated_address_never_outgrow_what_came_from_it() {
        let (ia, mut a) = wire(1, [7; 32]);
        let (ib, mut b) = wire(2, [7; 32]);
        let (a_addr, b_addr): (SocketAddr, SocketAddr) = (A.parse().unwrap(), B.parse().unwrap());
        let small = OverlayPacket { msg: OverlayMsg::Ping { seq: 1, updates: vec![] }, ..packet(ia.user_id()) };
        let d = a.seal(&ib.user_id(), b_addr, &small, false, NOW).unwrap();
        let Ok(Inbound::Packet { validated: false, .. }) = b.open(a_addr, &d, NOW, |_| true) else { panic!() };
        let big = OverlayPacket {
            from: packet(ib.user_id()).from,
            msg: OverlayMsg::SyncBuckets { digests: vec![u32::MAX; 256] },
        };
        assert_eq!(b.seal(&ia.user_id(), a_addr, &big, true, NOW), Err(OverlayError::Amplification));
        assert_eq!(b.stats().amplification_refused, 1);
        // A small answer fits the credit and gives A a cookie; A echoes it and
        // is validated: then the big answer goes.
        let ack = OverlayPacket { from: packet(ib.user_id()).from, msg: OverlayMsg::Ack { seq: 1, updates: vec![] } };
        let r = b.seal(&ia.user_id(), a_addr, &ack, true, NOW).unwrap();
        assert!(r.len() <= d.len(), "{} > {}", r.len(), d.len());
        a.open(b_addr, &r, NOW, |_| true).unwrap();
        let d = a.seal(&ib.user_id(), b_addr, &small, false, NOW).unwrap();
        let Ok(Inbound::Packet { validated: true, .. }) = b.open(a_addr, &d, NOW, |_| true) else { panic!() };
        assert!(b.seal(&ia.user_id(), a_addr, &big, true, NOW).is_ok());
        // The cookie is bound to the address: from elsewhere A is not validated.
        let d = a.seal(&ib.user_id(), b_addr, &small, false, NOW).unwrap();
        let Ok(Inbound::Packet { validated: false, .. }) = b.open("10.9.9.9:1".parse().unwrap(), &d, NOW, |_| true)
        else {
            panic!()
        };
    }

    #[test]
    fn a_hello_teaches_the_id_and_a_cookie_and_is_answered_smaller() {
        let (ia, mut a) = wire(1, [7; 32]);
        let (ib, mut b) = wire(2, [7; 32]);
        let (a_addr, b_addr): (SocketAddr, SocketAddr) = (A.parse().unwrap(), B.parse().unwrap());
        let hello = a.hello();
        let Ok(Inbound::Hello { reply }) = b.open(a_addr, &hello, NOW, |_| false) else { panic!() };
        assert!(reply.len() <= hello.len());
        assert_eq!(a.open(b_addr, &reply, NOW, |_| false), Ok(Inbound::HelloAck { id: ib.user_id() }));
        assert_eq!(a.id_at(&b_addr), Some(ib.user_id()));
        // The first sealed datagram echoes the cookie: validated at once.
        let d = a.seal(&ib.user_id(), b_addr, &packet(ia.user_id()), false, NOW).unwrap();
        let Ok(Inbound::Packet { validated: true, .. }) = b.open(a_addr, &d, NOW, |_| false) else { panic!() };
        // Another network's Hello is not answered.
        let (_, other) = wire(3, [9; 32]);
        assert_eq!(b.open(a_addr, &other.hello(), NOW, |_| false), Err(OverlayError::NotOverlay));
    }

    #[test]
    fn the_window_takes_each_counter_once_within_64() {
        let mut w = Window::default();
        assert!(w.accept(1_000));
        assert!(!w.accept(1_000), "duplicate");
        assert!(w.accept(1_002));
        assert!(w.accept(1_001), "reordered within the window");
        assert!(!w.accept(1_001));
        assert!(w.accept(1_100));
        assert!(!w.accept(1_002), "older than the window");
        assert!(w.accept(1_037), "inside the window, unseen");
        assert!(!w.accept(1_036 - 64));
        assert!(w.accept(u64::MAX));
        assert!(!w.accept(u64::MAX));
    }

    #[test]
    fn strangers_keys_are_rate_limited_and_the_table_is_bounded() {
        let (ib, mut b) = wire(2, [7; 32]);
        let b_addr: SocketAddr = B.parse().unwrap();
        let mut limited = 0;
        for i in 0..(STRANGERS_PER_SEC as u64 + 50) {
            let s = Identity::from_seed({
                let mut k = [0u8; 32];
                k[..8].copy_from_slice(&(i + 10).to_le_bytes());
                k
            });
            let mut w = Wire::new(&s, NetworkKey::new([7; 32]), [0; 32], 16);
            let d = w.seal(&ib.user_id(), b_addr, &packet(s.user_id()), false, NOW).unwrap();
            if b.open(A.parse().unwrap(), &d, NOW, |_| false) == Err(OverlayError::RateLimited) {
                limited += 1;
            }
        }
        assert_eq!(limited, 50);
        assert!(b.peer_count() <= 64, "{}", b.peer_count());
    }
}
