//! TURN (RFC 8656) on top of the `supervox-stun` codec: TURN methods and attributes, a
//! borrowed strict message view with the server's error classification, and ChannelData.
//!
//! Everything generic to STUN (header, attribute TLVs, (XOR-)addresses, FINGERPRINT,
//! MESSAGE-INTEGRITY(-SHA256), ERROR-CODE) comes from [`supervox_stun::codec`].
//! Parsing never panics and never allocates more than a small, bounded attribute index;
//! every length is checked against the input before it is used.

use std::net::SocketAddr;

use supervox_stun::codec as stun;

pub use crate::builder::{reason_phrase, MessageBuilder};
pub use stun::{Class, IntegrityKind, HEADER_LEN, MAGIC_COOKIE, MAX_ATTRIBUTES};

/// Size of the ChannelData header.
pub const CHANNEL_HEADER_LEN: usize = 4;

/// STUN/TURN methods used by the server.
pub mod method {
    /// Binding (RFC 8489).
    pub const BINDING: u16 = supervox_stun::codec::METHOD_BINDING;
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

/// Attribute types understood by the server: the generic STUN ones from
/// [`supervox_stun::codec::attr`] plus the TURN ones.
pub mod attr {
    pub use supervox_stun::codec::attr::{
        ERROR_CODE, FINGERPRINT, MAPPED_ADDRESS, MESSAGE_INTEGRITY, MESSAGE_INTEGRITY_SHA256, NONCE, REALM, SOFTWARE,
        UNKNOWN_ATTRIBUTES, USERNAME, XOR_MAPPED_ADDRESS,
    };

    /// CHANNEL-NUMBER.
    pub const CHANNEL_NUMBER: u16 = 0x000C;
    /// LIFETIME.
    pub const LIFETIME: u16 = 0x000D;
    /// XOR-PEER-ADDRESS.
    pub const XOR_PEER_ADDRESS: u16 = 0x0012;
    /// DATA.
    pub const DATA: u16 = 0x0013;
    /// XOR-RELAYED-ADDRESS.
    pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
    /// REQUESTED-ADDRESS-FAMILY.
    pub const REQUESTED_ADDRESS_FAMILY: u16 = 0x0017;
    /// EVEN-PORT.
    pub const EVEN_PORT: u16 = 0x0018;
    /// REQUESTED-TRANSPORT.
    pub const REQUESTED_TRANSPORT: u16 = 0x0019;
    /// RESERVATION-TOKEN.
    pub const RESERVATION_TOKEN: u16 = 0x0022;

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

/// Encode method + class into the 14-bit STUN message type.
pub fn message_type(method: u16, class: Class) -> u16 {
    stun::join_type(class, method)
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
    stun::parse_header(bytes).map(|(class, method, tid)| (method, class, tid))
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
        let mut fingerprint_seen = false;
        for a in stun::raw_attributes(bytes) {
            let a = a.map_err(|()| ParseError::Malformed)?;
            if fingerprint_seen {
                // Nothing may follow FINGERPRINT.
                return Err(ParseError::Malformed);
            }
            let (off, len) = (a.offset, a.len);
            match a.kind {
                attr::FINGERPRINT => {
                    let v = a.value(bytes);
                    if len != 4 {
                        return Err(ParseError::NotStun);
                    }
                    if u32::from_be_bytes([v[0], v[1], v[2], v[3]]) != stun::fingerprint_value(bytes, off) {
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
                    msg.attrs.push(RawAttr { typ: a.kind, start: a.start(), len });
                }
            }
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
        let sha1_ok =
            self.integrity.is_none_or(|off| stun::verify_integrity_at(IntegrityKind::Sha1, key, self.raw, off));
        sha1_ok
            && self
                .integrity_sha256
                .is_none_or(|off| stun::verify_integrity_at(IntegrityKind::Sha256, key, self.raw, off))
    }
}

/// Decode an (XOR-)address attribute value. `xor` selects XOR-MAPPED/PEER/RELAYED semantics.
pub fn decode_address(value: &[u8], xor: bool, tid: &[u8; 12]) -> Option<SocketAddr> {
    stun::decode_address(value, xor.then_some(tid)).ok()
}

/// Encode an XOR-address attribute value.
pub fn encode_xor_address(addr: SocketAddr, tid: &[u8; 12]) -> Vec<u8> {
    stun::encode_address(addr, Some(tid))
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
                let (class, method) = stun::split_type(message_type(m, c));
                assert_eq!((method, class), (m, c));
            }
        }
        assert_eq!(message_type(method::ALLOCATE, Class::Request), 0x0003);
        assert_eq!(message_type(method::ALLOCATE, Class::Success), 0x0103);
        assert_eq!(message_type(method::ALLOCATE, Class::Error), 0x0113);
        assert_eq!(message_type(method::SEND, Class::Indication), 0x0016);
    }

    #[test]
    fn crc32_known_vector() {
        assert_eq!(stun::crc32(&[b"123456789"]), 0xCBF4_3926);
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
