//! Strict STUN (RFC 8489) / TURN (RFC 8656) message codec and ChannelData framing.
//!
//! Parsing never panics and never allocates more than a small, bounded attribute index;
//! every length is checked against the input before it is used.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::Sha256;

pub use crate::builder::{reason_phrase, MessageBuilder};

/// The STUN magic cookie (RFC 8489 §5).
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// Size of the fixed STUN header.
pub const HEADER_LEN: usize = 20;
/// Size of the ChannelData header.
pub const CHANNEL_HEADER_LEN: usize = 4;
/// Maximum number of attributes indexed per message; more is treated as malformed.
pub const MAX_ATTRIBUTES: usize = 48;

/// STUN/TURN methods used by the server.
pub mod method {
    /// Binding (RFC 8489).
    pub const BINDING: u16 = 0x001;
    /// Allocate (RFC 8656).
    pub const ALLOCATE: u16 = 0x003;
    /// Refresh.
    pub const REFRESH: u16 = 0x004;
    /// Send (indication only).
    pub const SEND: u16 = 0x006;
    /// Data (indication only).
    pub const DATA: u16 = 0x007;
    /// CreatePermission.
    pub const CREATE_PERMISSION: u16 = 0x008;
    /// ChannelBind.
    pub const CHANNEL_BIND: u16 = 0x009;
}

/// Attribute types understood by the server.
pub mod attr {
    /// MAPPED-ADDRESS.
    pub const MAPPED_ADDRESS: u16 = 0x0001;
    /// USERNAME.
    pub const USERNAME: u16 = 0x0006;
    /// MESSAGE-INTEGRITY (HMAC-SHA1).
    pub const MESSAGE_INTEGRITY: u16 = 0x0008;
    /// ERROR-CODE.
    pub const ERROR_CODE: u16 = 0x0009;
    /// UNKNOWN-ATTRIBUTES.
    pub const UNKNOWN_ATTRIBUTES: u16 = 0x000A;
    /// CHANNEL-NUMBER.
    pub const CHANNEL_NUMBER: u16 = 0x000C;
    /// LIFETIME.
    pub const LIFETIME: u16 = 0x000D;
    /// XOR-PEER-ADDRESS.
    pub const XOR_PEER_ADDRESS: u16 = 0x0012;
    /// DATA.
    pub const DATA: u16 = 0x0013;
    /// REALM.
    pub const REALM: u16 = 0x0014;
    /// NONCE.
    pub const NONCE: u16 = 0x0015;
    /// XOR-RELAYED-ADDRESS.
    pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
    /// REQUESTED-ADDRESS-FAMILY.
    pub const REQUESTED_ADDRESS_FAMILY: u16 = 0x0017;
    /// EVEN-PORT.
    pub const EVEN_PORT: u16 = 0x0018;
    /// REQUESTED-TRANSPORT.
    pub const REQUESTED_TRANSPORT: u16 = 0x0019;
    /// MESSAGE-INTEGRITY-SHA256.
    pub const MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
    /// XOR-MAPPED-ADDRESS.
    pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
    /// RESERVATION-TOKEN.
    pub const RESERVATION_TOKEN: u16 = 0x0022;
    /// SOFTWARE.
    pub const SOFTWARE: u16 = 0x8022;
    /// FINGERPRINT.
    pub const FINGERPRINT: u16 = 0x8028;

    /// Comprehension-required attributes this server understands. Any other attribute in
    /// 0x0000..=0x7FFF in a request yields 420 (Unknown Attribute). DONT-FRAGMENT (0x001A) is
    /// deliberately absent: the relay cannot honour it, so RFC 8656 §7.2 requires a 420.
    pub const KNOWN_REQUIRED: &[u16] = &[
        MAPPED_ADDRESS,
        USERNAME,
        MESSAGE_INTEGRITY,
        ERROR_CODE,
        UNKNOWN_ATTRIBUTES,
        CHANNEL_NUMBER,
        LIFETIME,
        XOR_PEER_ADDRESS,
        DATA,
        REALM,
        NONCE,
        XOR_RELAYED_ADDRESS,
        REQUESTED_ADDRESS_FAMILY,
        EVEN_PORT,
        REQUESTED_TRANSPORT,
        MESSAGE_INTEGRITY_SHA256,
        XOR_MAPPED_ADDRESS,
        RESERVATION_TOKEN,
    ];
}

/// The class of a STUN message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Request.
    Request,
    /// Indication.
    Indication,
    /// Success response.
    Success,
    /// Error response.
    Error,
}

impl Class {
    fn bits(self) -> u16 {
        match self {
            Class::Request => 0b00,
            Class::Indication => 0b01,
            Class::Success => 0b10,
            Class::Error => 0b11,
        }
    }
}

/// Encode method + class into the 14-bit STUN message type.
pub fn message_type(method: u16, class: Class) -> u16 {
    let m = method & 0x0FFF;
    let c = class.bits();
    (m & 0x000F) | ((c & 0b01) << 4) | ((m & 0x0070) << 1) | ((c & 0b10) << 7) | ((m & 0x0F80) << 2)
}

fn split_type(t: u16) -> (u16, Class) {
    let method = (t & 0x000F) | ((t >> 1) & 0x0070) | ((t >> 2) & 0x0F80);
    let class = match ((t >> 4) & 0b01) | ((t >> 7) & 0b10) {
        0b00 => Class::Request,
        0b01 => Class::Indication,
        0b10 => Class::Success,
        _ => Class::Error,
    };
    (method, class)
}

/// What kind of packet the first bytes of a datagram or frame announce (RFC 8656 §12).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketKind {
    /// A STUN message (top two bits 0b00).
    Stun,
    /// A ChannelData message (top two bits 0b01).
    ChannelData,
    /// Anything else: not for us.
    Other,
}

/// Classify a packet by its first byte.
pub fn packet_kind(bytes: &[u8]) -> PacketKind {
    match bytes.first().map(|b| b >> 6) {
        Some(0b00) => PacketKind::Stun,
        Some(0b01) => PacketKind::ChannelData,
        _ => PacketKind::Other,
    }
}

/// Why a message could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Not a STUN message at all (bad header, cookie, length, fingerprint): drop silently.
    NotStun,
    /// A STUN header we can answer, but malformed attributes: reply 400 if it is a request.
    Malformed,
}

/// Position of one attribute inside the raw message.
#[derive(Debug, Clone, Copy)]
struct RawAttr {
    typ: u16,
    start: usize,
    len: usize,
}

/// A parsed, borrowed STUN message.
#[derive(Debug)]
pub struct Message<'a> {
    /// The method (12 bits).
    pub method: u16,
    /// The class.
    pub class: Class,
    /// The 96-bit transaction id.
    pub transaction_id: [u8; 12],
    raw: &'a [u8],
    attrs: Vec<RawAttr>,
    /// Offset of the MESSAGE-INTEGRITY attribute header, if present.
    integrity: Option<usize>,
    /// Offset of the MESSAGE-INTEGRITY-SHA256 attribute header, if present.
    integrity_sha256: Option<usize>,
}

/// Parse just enough of the header to answer a malformed request: method, class, transaction id.
pub fn parse_header(bytes: &[u8]) -> Option<(u16, Class, [u8; 12])> {
    let head: &[u8; HEADER_LEN] = bytes.get(..HEADER_LEN)?.try_into().ok()?;
    let t = u16::from_be_bytes([head[0], head[1]]);
    if t & 0xC000 != 0 || u32::from_be_bytes([head[4], head[5], head[6], head[7]]) != MAGIC_COOKIE {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
    if len % 4 != 0 || HEADER_LEN + len != bytes.len() {
        return None;
    }
    let (method, class) = split_type(t);
    let mut tid = [0u8; 12];
    tid.copy_from_slice(&head[8..20]);
    Some((method, class, tid))
}

impl<'a> Message<'a> {
    /// Parse a complete STUN message; `bytes` must be exactly one message.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ParseError> {
        let (method, class, transaction_id) = parse_header(bytes).ok_or(ParseError::NotStun)?;
        let mut msg = Message {
            method,
            class,
            transaction_id,
            raw: bytes,
            attrs: Vec::new(),
            integrity: None,
            integrity_sha256: None,
        };
        let mut off = HEADER_LEN;
        let mut fingerprint_seen = false;
        while off < bytes.len() {
            let hdr = bytes.get(off..off + 4).ok_or(ParseError::Malformed)?;
            let typ = u16::from_be_bytes([hdr[0], hdr[1]]);
            let len = usize::from(u16::from_be_bytes([hdr[2], hdr[3]]));
            let start = off + 4;
            let padded = len.div_ceil(4) * 4;
            if start + padded > bytes.len() {
                return Err(ParseError::Malformed);
            }
            if fingerprint_seen {
                // Nothing may follow FINGERPRINT.
                return Err(ParseError::Malformed);
            }
            match typ {
                attr::FINGERPRINT => {
                    let v = &bytes[start..start + len];
                    if len != 4 {
                        return Err(ParseError::NotStun);
                    }
                    let expected = crc32_with_length(bytes, off) ^ 0x5354_554E;
                    if u32::from_be_bytes([v[0], v[1], v[2], v[3]]) != expected {
                        return Err(ParseError::NotStun);
                    }
                    fingerprint_seen = true;
                }
                attr::MESSAGE_INTEGRITY if msg.integrity.is_none() && msg.integrity_sha256.is_none() => {
                    if len != 20 {
                        return Err(ParseError::Malformed);
                    }
                    msg.integrity = Some(off);
                }
                attr::MESSAGE_INTEGRITY_SHA256 if msg.integrity_sha256.is_none() => {
                    if !(16..=32).contains(&len) || len % 4 != 0 {
                        return Err(ParseError::Malformed);
                    }
                    msg.integrity_sha256 = Some(off);
                }
                _ if msg.integrity.is_some() || msg.integrity_sha256.is_some() => {
                    // RFC 8489 §14.5: attributes after MESSAGE-INTEGRITY are ignored.
                }
                _ => {
                    if msg.attrs.len() >= MAX_ATTRIBUTES {
                        return Err(ParseError::Malformed);
                    }
                    msg.attrs.push(RawAttr { typ, start, len });
                }
            }
            off = start + padded;
        }
        Ok(msg)
    }

    /// The first attribute of type `typ` (later duplicates are ignored, RFC 8489 §14).
    pub fn get(&self, typ: u16) -> Option<&'a [u8]> {
        let raw = self.raw;
        self.attrs.iter().find(|a| a.typ == typ).and_then(|a| raw.get(a.start..a.start + a.len))
    }

    /// All attributes of type `typ`, in order (XOR-PEER-ADDRESS may repeat in CreatePermission).
    pub fn get_all(&self, typ: u16) -> impl Iterator<Item = &'a [u8]> + '_ {
        let raw = self.raw;
        self.attrs.iter().filter(move |a| a.typ == typ).filter_map(move |a| raw.get(a.start..a.start + a.len))
    }

    /// Comprehension-required attribute types this server does not understand.
    pub fn unknown_required(&self) -> Vec<u16> {
        let mut out: Vec<u16> = Vec::new();
        for a in &self.attrs {
            if a.typ < 0x8000 && !attr::KNOWN_REQUIRED.contains(&a.typ) && !out.contains(&a.typ) {
                out.push(a.typ);
            }
        }
        out
    }

    /// Whether the message carries any message-integrity attribute.
    pub fn has_integrity(&self) -> bool {
        self.integrity.is_some() || self.integrity_sha256.is_some()
    }

    /// Which integrity algorithm the request used (SHA-256 preferred when both are present).
    pub fn integrity_kind(&self) -> Option<IntegrityKind> {
        if self.integrity_sha256.is_some() {
            Some(IntegrityKind::Sha256)
        } else if self.integrity.is_some() {
            Some(IntegrityKind::Sha1)
        } else {
            None
        }
    }

    /// Verify every message-integrity attribute present against `key`. Returns false if none.
    pub fn verify_integrity(&self, key: &[u8]) -> bool {
        if !self.has_integrity() {
            return false;
        }
        if let Some(off) = self.integrity {
            let Some(mac) = self.raw.get(off + 4..off + 24) else { return false };
            let Ok(mut h) = Hmac::<Sha1>::new_from_slice(key) else { return false };
            feed_with_length(&mut h, self.raw, off, 24);
            if h.verify_slice(mac).is_err() {
                return false;
            }
        }
        if let Some(off) = self.integrity_sha256 {
            let Some(lenb) = self.raw.get(off + 2..off + 4) else { return false };
            let len = usize::from(u16::from_be_bytes([lenb[0], lenb[1]]));
            let Some(mac) = self.raw.get(off + 4..off + 4 + len) else { return false };
            let Ok(mut h) = Hmac::<Sha256>::new_from_slice(key) else { return false };
            feed_with_length(&mut h, self.raw, off, 4 + len);
            if h.verify_truncated_left(mac).is_err() {
                return false;
            }
        }
        true
    }
}

/// Feed `raw[..end]` into a MAC with the header length field rewritten so the message appears to
/// end right after an attribute of `attr_total` bytes starting at `end` (RFC 8489 §14.5).
pub(crate) fn feed_with_length<M: Mac>(h: &mut M, raw: &[u8], end: usize, attr_total: usize) {
    let adj = u16::try_from(end + attr_total - HEADER_LEN).unwrap_or(u16::MAX);
    h.update(&raw[0..2]);
    h.update(&adj.to_be_bytes());
    h.update(&raw[4..end]);
}

/// CRC-32 of `raw[..end]` with the length field adjusted to include an 8-byte FINGERPRINT.
pub(crate) fn crc32_with_length(raw: &[u8], end: usize) -> u32 {
    let adj = u16::try_from(end + 8 - HEADER_LEN).unwrap_or(u16::MAX);
    let mut c = Crc32::new();
    c.update(&raw[0..2]);
    c.update(&adj.to_be_bytes());
    c.update(&raw[4..end]);
    c.finish()
}

/// Minimal table-driven CRC-32 (IEEE 802.3), as used by FINGERPRINT.
struct Crc32(u32);

const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

impl Crc32 {
    fn new() -> Self {
        Crc32(0xFFFF_FFFF)
    }
    fn update(&mut self, data: &[u8]) {
        for &b in data {
            self.0 = CRC_TABLE[((self.0 ^ u32::from(b)) & 0xFF) as usize] ^ (self.0 >> 8);
        }
    }
    fn finish(&self) -> u32 {
        self.0 ^ 0xFFFF_FFFF
    }
}

/// Message-integrity algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntegrityKind {
    /// MESSAGE-INTEGRITY (HMAC-SHA1).
    Sha1,
    /// MESSAGE-INTEGRITY-SHA256 (HMAC-SHA256).
    Sha256,
}

/// Decode an (XOR-)address attribute value. `xor` selects XOR-MAPPED/PEER/RELAYED semantics.
pub fn decode_address(value: &[u8], xor: bool, tid: &[u8; 12]) -> Option<SocketAddr> {
    let family = *value.get(1)?;
    let mut port = u16::from_be_bytes([*value.get(2)?, *value.get(3)?]);
    if xor {
        port ^= (MAGIC_COOKIE >> 16) as u16;
    }
    let mut mask = [0u8; 16];
    mask[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    mask[4..].copy_from_slice(tid);
    match (family, value.len()) {
        (0x01, 8) => {
            let mut ip = [0u8; 4];
            ip.copy_from_slice(&value[4..8]);
            if xor {
                ip.iter_mut().zip(mask.iter()).for_each(|(b, m)| *b ^= m);
            }
            Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port))
        }
        (0x02, 20) => {
            let mut ip = [0u8; 16];
            ip.copy_from_slice(&value[4..20]);
            if xor {
                ip.iter_mut().zip(mask.iter()).for_each(|(b, m)| *b ^= m);
            }
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port))
        }
        _ => None,
    }
}

/// Encode an XOR-address attribute value.
pub fn encode_xor_address(addr: SocketAddr, tid: &[u8; 12]) -> Vec<u8> {
    let port = addr.port() ^ (MAGIC_COOKIE >> 16) as u16;
    let mut mask = [0u8; 16];
    mask[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    mask[4..].copy_from_slice(tid);
    let mut v = Vec::with_capacity(20);
    match addr.ip() {
        IpAddr::V4(ip) => {
            v.extend_from_slice(&[0, 0x01]);
            v.extend_from_slice(&port.to_be_bytes());
            v.extend(ip.octets().iter().zip(mask.iter()).map(|(b, m)| b ^ m));
        }
        IpAddr::V6(ip) => {
            v.extend_from_slice(&[0, 0x02]);
            v.extend_from_slice(&port.to_be_bytes());
            v.extend(ip.octets().iter().zip(mask.iter()).map(|(b, m)| b ^ m));
        }
    }
    v
}

/// A parsed ChannelData message (RFC 8656 §12.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelData<'a> {
    /// Channel number (0x4000..=0x7FFF; which of those may be bound is server policy).
    pub channel: u16,
    /// Application data.
    pub data: &'a [u8],
}

impl<'a> ChannelData<'a> {
    /// Parse a ChannelData message. Trailing bytes (UDP/TCP padding) beyond the length are ignored.
    pub fn parse(bytes: &'a [u8]) -> Option<Self> {
        let hdr = bytes.get(..CHANNEL_HEADER_LEN)?;
        let channel = u16::from_be_bytes([hdr[0], hdr[1]]);
        let len = usize::from(u16::from_be_bytes([hdr[2], hdr[3]]));
        if !is_rfc5766_channel(channel) {
            return None;
        }
        let data = bytes.get(CHANNEL_HEADER_LEN..CHANNEL_HEADER_LEN + len)?;
        Some(ChannelData { channel, data })
    }
}

/// Whether `n` is in the RFC 8656 ChannelBind range 0x4000..=0x4FFF.
pub fn is_valid_channel(n: u16) -> bool {
    (0x4000..=0x4FFF).contains(&n)
}

/// Whether `n` is in the older RFC 5766 range 0x4000..=0x7FFF (every ChannelData header has it).
/// coturn's own clients still pick channel numbers from this range.
pub fn is_rfc5766_channel(n: u16) -> bool {
    (0x4000..=0x7FFF).contains(&n)
}

/// Encode a ChannelData message; `pad` adds zero padding to a multiple of 4 (required over TCP).
/// Returns `None` when `data` is longer than 65535 bytes.
pub fn encode_channel_data(channel: u16, data: &[u8], pad: bool) -> Option<Vec<u8>> {
    let len = u16::try_from(data.len()).ok()?;
    let padding = if pad { (4 - data.len() % 4) % 4 } else { 0 };
    let mut v = Vec::with_capacity(CHANNEL_HEADER_LEN + data.len() + padding);
    v.extend_from_slice(&channel.to_be_bytes());
    v.extend_from_slice(&len.to_be_bytes());
    v.extend_from_slice(data);
    v.extend(std::iter::repeat_n(0u8, padding));
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_roundtrip() {
        for m in [method::BINDING, method::ALLOCATE, method::CHANNEL_BIND, 0xFFF] {
            for c in [Class::Request, Class::Indication, Class::Success, Class::Error] {
                assert_eq!(split_type(message_type(m, c)), (m, c));
            }
        }
        assert_eq!(message_type(method::ALLOCATE, Class::Request), 0x0003);
        assert_eq!(message_type(method::ALLOCATE, Class::Success), 0x0103);
        assert_eq!(message_type(method::ALLOCATE, Class::Error), 0x0113);
        assert_eq!(message_type(method::SEND, Class::Indication), 0x0016);
    }

    #[test]
    fn crc32_known_vector() {
        let mut c = Crc32::new();
        c.update(b"123456789");
        assert_eq!(c.finish(), 0xCBF4_3926);
    }

    #[test]
    fn integrity_and_fingerprint_roundtrip() {
        let tid = [7u8; 12];
        for kind in [IntegrityKind::Sha1, IntegrityKind::Sha256] {
            let mut b = MessageBuilder::new(method::REFRESH, Class::Request, tid);
            b.attr(attr::USERNAME, b"user").attr_u32(attr::LIFETIME, 10).integrity(kind, b"key").fingerprint();
            let bytes = b.into_bytes();
            let m = Message::parse(&bytes).expect("parse");
            assert_eq!(m.integrity_kind(), Some(kind));
            assert!(m.verify_integrity(b"key"));
            assert!(!m.verify_integrity(b"other"));
            assert_eq!(m.get(attr::USERNAME), Some(&b"user"[..]));
            let mut bad = bytes.clone();
            let last = bad.len() - 1;
            bad[last] ^= 1;
            assert_eq!(Message::parse(&bad).unwrap_err(), ParseError::NotStun);
        }
    }

    #[test]
    fn rfc5769_sample_request_verifies() {
        // RFC 5769 §2.1 sample request, short-term password "VOkJxbRl1RmTxUk/WvJxBt".
        let hexs = "000100582112a442b7e7a701bc34d686fa87dfae80220010 5354554e20746573 7420636c69656e74\
                    002400046e0001ff80290008932ff9b151263b360006000965 76746a3a68367659202020\
                    000800149aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a280280004e57a3bcf";
        let clean: String = hexs.chars().filter(|c| !c.is_whitespace()).collect();
        let bytes = hex::decode(clean).expect("hex");
        let m = Message::parse(&bytes).expect("parse");
        assert!(m.verify_integrity(b"VOkJxbRl1RmTxUk/WvJxBt"));
    }

    #[test]
    fn xor_address_roundtrip() {
        let tid = [3u8; 12];
        for a in ["192.0.2.1:32853", "[2001:db8::1]:40000"] {
            let addr: SocketAddr = a.parse().expect("addr");
            assert_eq!(decode_address(&encode_xor_address(addr, &tid), true, &tid), Some(addr));
        }
        assert_eq!(decode_address(&[0, 1, 0], true, &tid), None);
        assert_eq!(decode_address(&[0, 3, 0, 0, 1, 2, 3, 4], true, &tid), None);
    }

    #[test]
    fn channel_data_rules() {
        let enc = encode_channel_data(0x4001, b"abcde", true).expect("enc");
        assert_eq!(enc.len(), 12);
        assert_eq!(ChannelData::parse(&enc), Some(ChannelData { channel: 0x4001, data: b"abcde" }));
        assert_eq!(ChannelData::parse(&[0x80, 0, 0, 0]), None);
        assert!(ChannelData::parse(&[0x50, 0, 0, 0]).is_some());
        assert_eq!(ChannelData::parse(&[0x40, 0, 0, 9, 1]), None);
        assert!(encode_channel_data(0x4000, &vec![0; 70_000], false).is_none());
    }
}
