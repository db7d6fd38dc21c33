//! A small, strict STUN message codec (RFC 8489, with the RFC 5780 attributes).
//!
//! [`Message::parse`] accepts only well-formed messages: exact datagram length, 32-bit
//! aligned attributes that fit, FINGERPRINT (verified) only as the last attribute, and only
//! FINGERPRINT after MESSAGE-INTEGRITY(-SHA256). Attribute values stay raw; typed accessors
//! decode the ones this crate needs. Nothing here panics on any input.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::Sha256;

use crate::StunError;

/// The RFC 8489 magic cookie, the second 32-bit word of every message.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// Size of the STUN message header in bytes.
pub const HEADER_LEN: usize = 20;
/// XOR constant of the FINGERPRINT attribute (RFC 8489 §14.7).
pub const FINGERPRINT_XOR: u32 = 0x5354_554E;
/// A sane bound on the number of attributes a parser indexes per message (used by parsers
/// that keep an attribute index, e.g. the TURN server's; [`Message::parse`] has none).
pub const MAX_ATTRIBUTES: usize = 48;
/// The 96-bit transaction ID of RFC 8489.
pub type TransactionId = [u8; 12];

/// The Binding method.
pub const METHOD_BINDING: u16 = 0x001;

/// Attribute types used by this crate.
pub mod attr {
    /// MAPPED-ADDRESS (RFC 8489 §14.1).
    pub const MAPPED_ADDRESS: u16 = 0x0001;
    /// CHANGE-REQUEST (RFC 5780 §7.2).
    pub const CHANGE_REQUEST: u16 = 0x0003;
    /// SOURCE-ADDRESS (RFC 3489 §11.2.3, legacy responses only).
    pub const SOURCE_ADDRESS: u16 = 0x0004;
    /// CHANGED-ADDRESS (RFC 3489 §11.2.3, legacy responses only).
    pub const CHANGED_ADDRESS: u16 = 0x0005;
    /// USERNAME (RFC 8489 §14.3).
    pub const USERNAME: u16 = 0x0006;
    /// MESSAGE-INTEGRITY (RFC 8489 §14.5).
    pub const MESSAGE_INTEGRITY: u16 = 0x0008;
    /// ERROR-CODE (RFC 8489 §14.8).
    pub const ERROR_CODE: u16 = 0x0009;
    /// UNKNOWN-ATTRIBUTES (RFC 8489 §14.9).
    pub const UNKNOWN_ATTRIBUTES: u16 = 0x000A;
    /// REALM (RFC 8489 §14.9).
    pub const REALM: u16 = 0x0014;
    /// NONCE (RFC 8489 §14.10).
    pub const NONCE: u16 = 0x0015;
    /// MESSAGE-INTEGRITY-SHA256 (RFC 8489 §14.6).
    pub const MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
    /// XOR-MAPPED-ADDRESS (RFC 8489 §14.2).
    pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
    /// PADDING (RFC 5780 §7.6).
    pub const PADDING: u16 = 0x0026;
    /// RESPONSE-PORT (RFC 5780 §7.5).
    pub const RESPONSE_PORT: u16 = 0x0027;
    /// PRIORITY (RFC 8445 §16.1).
    pub const PRIORITY: u16 = 0x0024;
    /// USE-CANDIDATE (RFC 8445 §16.1).
    pub const USE_CANDIDATE: u16 = 0x0025;
    /// SOFTWARE (RFC 8489 §14.14).
    pub const SOFTWARE: u16 = 0x8022;
    /// FINGERPRINT (RFC 8489 §14.7).
    pub const FINGERPRINT: u16 = 0x8028;
    /// ICE-CONTROLLED (RFC 8445 §16.1).
    pub const ICE_CONTROLLED: u16 = 0x8029;
    /// ICE-CONTROLLING (RFC 8445 §16.1).
    pub const ICE_CONTROLLING: u16 = 0x802A;
    /// RESPONSE-ORIGIN (RFC 5780 §7.3).
    pub const RESPONSE_ORIGIN: u16 = 0x802B;
    /// OTHER-ADDRESS (RFC 5780 §7.4).
    pub const OTHER_ADDRESS: u16 = 0x802C;
}

/// CHANGE-REQUEST flag: answer from the other IP address.
pub const CHANGE_IP: u32 = 0x4;
/// CHANGE-REQUEST flag: answer from the other port.
pub const CHANGE_PORT: u32 = 0x2;

/// The class of a STUN message (RFC 8489 §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    /// A request, answered by a success or error response.
    Request,
    /// An indication: no response.
    Indication,
    /// A success response.
    Success,
    /// An error response.
    Error,
}

impl Class {
    fn bits(self) -> u16 {
        match self {
            Class::Request => 0x000,
            Class::Indication => 0x010,
            Class::Success => 0x100,
            Class::Error => 0x110,
        }
    }
}

/// Splits a 14-bit message type into class and method.
pub fn split_type(t: u16) -> (Class, u16) {
    let class = match t & 0x0110 {
        0x000 => Class::Request,
        0x010 => Class::Indication,
        0x100 => Class::Success,
        _ => Class::Error,
    };
    let method = (t & 0x000F) | ((t & 0x00E0) >> 1) | ((t & 0x3E00) >> 2);
    (class, method)
}

/// Joins class and 12-bit method into the message type field.
pub fn join_type(class: Class, method: u16) -> u16 {
    let m = method & 0x0FFF;
    (m & 0x000F) | ((m & 0x0070) << 1) | ((m & 0x0F80) << 2) | class.bits()
}

/// One attribute, value unpadded and still encoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attribute {
    /// The attribute type.
    pub kind: u16,
    /// The value without padding.
    pub value: Vec<u8>,
}

/// A STUN message: header fields and attributes in wire order.
///
/// MESSAGE-INTEGRITY(-SHA256) and FINGERPRINT are not stored in `attributes` when built;
/// [`Message::encode`] appends them. A parsed message keeps them as they were received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Request, indication, success or error response.
    pub class: Class,
    /// The 12-bit method, e.g. [`METHOD_BINDING`].
    pub method: u16,
    /// The transaction ID.
    pub transaction_id: TransactionId,
    /// The attributes in order.
    pub attributes: Vec<Attribute>,
}

/// True if `bytes` can be a STUN message: at least a header, the two leading bits zero and
/// the magic cookie in place (RFC 8489 §5). Use it to share a UDP port with other traffic.
pub fn is_stun(bytes: &[u8]) -> bool {
    bytes.len() >= HEADER_LEN && bytes[0] & 0xC0 == 0 && bytes[4..8] == MAGIC_COOKIE.to_be_bytes()
}

/// Class, method and transaction ID of anything that passes [`is_stun`].
pub fn peek_header(bytes: &[u8]) -> Option<(Class, u16, TransactionId)> {
    if !is_stun(bytes) {
        return None;
    }
    let (class, method) = split_type(be16(bytes, 0)?);
    let mut tid = [0u8; 12];
    tid.copy_from_slice(bytes.get(8..HEADER_LEN)?);
    Some((class, method, tid))
}

/// Like [`peek_header`], but also requires the length field to be 32-bit aligned and to
/// match `bytes` exactly (one whole message).
pub fn parse_header(bytes: &[u8]) -> Option<(Class, u16, TransactionId)> {
    let header = peek_header(bytes)?;
    let len = usize::from(be16(bytes, 2)?);
    (len % 4 == 0 && HEADER_LEN + len == bytes.len()).then_some(header)
}

/// Position of one attribute inside a raw message (see [`raw_attributes`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawAttribute {
    /// The attribute type.
    pub kind: u16,
    /// Offset of the attribute header (type and length) in the message.
    pub offset: usize,
    /// Length of the value, without padding; the value starts at `offset + 4`.
    pub len: usize,
}

impl RawAttribute {
    /// Offset of the value.
    pub fn start(&self) -> usize {
        self.offset + 4
    }

    /// Offset just past the padded value (where the next attribute starts).
    pub fn end(&self) -> usize {
        self.offset + 4 + padded(self.len)
    }

    /// The unpadded value inside `raw`.
    pub fn value<'a>(&self, raw: &'a [u8]) -> &'a [u8] {
        raw.get(self.start()..self.start() + self.len).unwrap_or(&[])
    }
}

/// Walks the attribute TLVs of a whole message `bytes` (header included, length already
/// checked, e.g. by [`parse_header`]). Yields `Err(())` once, and then stops, for an
/// attribute whose header or padded value runs past the end.
pub fn raw_attributes(bytes: &[u8]) -> impl Iterator<Item = Result<RawAttribute, ()>> + '_ {
    let mut at = HEADER_LEN;
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed || at >= bytes.len() {
            return None;
        }
        let (Some(kind), Some(len)) = (be16(bytes, at), be16(bytes, at + 2)) else {
            failed = true;
            return Some(Err(()));
        };
        let a = RawAttribute { kind, offset: at, len: usize::from(len) };
        if a.end() > bytes.len() {
            failed = true;
            return Some(Err(()));
        }
        at = a.end();
        Some(Ok(a))
    })
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes([*b.get(at)?, *b.get(at + 1)?, *b.get(at + 2)?, *b.get(at + 3)?]))
}

fn padded(len: usize) -> usize {
    (len + 3) & !3
}

/// CRC-32 (ISO-HDLC, as in RFC 8489 §14.7) of the concatenated parts.
pub fn crc32(parts: &[&[u8]]) -> u32 {
    const CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);
    let mut d = CRC.digest();
    for p in parts {
        d.update(p);
    }
    d.finalize()
}

fn hmac_sha1(key: &[u8], parts: &[&[u8]]) -> [u8; 20] {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = match <Hmac<Sha1> as Mac>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return [0; 20],
    };
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// The header with its length field replaced by `len` (bytes after the header).
fn header_with_len(bytes: &[u8], len: usize) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h.copy_from_slice(&bytes[..HEADER_LEN]);
    h[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    h
}

/// The first two header bytes and a length field saying the message ends `attr_total` bytes
/// after `end`: the prefix that FINGERPRINT and MESSAGE-INTEGRITY(-SHA256) are computed over.
fn adjusted_len(end: usize, attr_total: usize) -> [u8; 2] {
    u16::try_from(end + attr_total - HEADER_LEN).unwrap_or(u16::MAX).to_be_bytes()
}

/// The FINGERPRINT value (CRC-32 XOR [`FINGERPRINT_XOR`]) for an attribute placed at offset
/// `end` of the message `raw` (header included), i.e. over `raw[..end]` with the length
/// field adjusted (RFC 8489 §14.7).
pub fn fingerprint_value(raw: &[u8], end: usize) -> u32 {
    crc32(&[&raw[0..2], &adjusted_len(end, 8), &raw[4..end]]) ^ FINGERPRINT_XOR
}

/// Message-integrity algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IntegrityKind {
    /// MESSAGE-INTEGRITY (HMAC-SHA1).
    Sha1,
    /// MESSAGE-INTEGRITY-SHA256 (HMAC-SHA256).
    Sha256,
}

impl IntegrityKind {
    /// The attribute type carrying this MAC.
    pub fn attribute(self) -> u16 {
        match self {
            IntegrityKind::Sha1 => attr::MESSAGE_INTEGRITY,
            IntegrityKind::Sha256 => attr::MESSAGE_INTEGRITY_SHA256,
        }
    }

    /// The full MAC length in bytes.
    pub fn mac_len(self) -> usize {
        match self {
            IntegrityKind::Sha1 => 20,
            IntegrityKind::Sha256 => 32,
        }
    }
}

/// The HMAC of `raw[..end]` (header included) with the length field adjusted so the message
/// ends right after an integrity attribute of `attr_total` bytes placed at `end`
/// (RFC 8489 §14.5, §14.6). Untruncated.
pub fn integrity_mac(kind: IntegrityKind, key: &[u8], raw: &[u8], end: usize, attr_total: usize) -> Vec<u8> {
    let len = adjusted_len(end, attr_total);
    let parts: [&[u8]; 3] = [&raw[0..2], &len, &raw[4..end]];
    match kind {
        IntegrityKind::Sha1 => hmac_sha1(key, &parts).to_vec(),
        IntegrityKind::Sha256 => {
            let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(key) else { return vec![0; 32] };
            for p in parts {
                mac.update(p);
            }
            mac.finalize().into_bytes().to_vec()
        }
    }
}

/// Checks the integrity attribute of type `kind` whose header is at offset `off` of `raw`
/// with `key`. A MESSAGE-INTEGRITY-SHA256 may be truncated (to 16..=32 bytes); the MAC is
/// compared in constant time. False if the attribute does not fit `raw`.
pub fn verify_integrity_at(kind: IntegrityKind, key: &[u8], raw: &[u8], off: usize) -> bool {
    let Some(len) = be16(raw, off + 2).map(usize::from) else { return false };
    let Some(got) = raw.get(off + 4..off + 4 + len) else { return false };
    if len == 0 || len > kind.mac_len() {
        return false;
    }
    let want = integrity_mac(kind, key, raw, off, 4 + len);
    got.iter().zip(want.iter()).fold(0u8, |d, (a, b)| d | (a ^ b)) == 0
}

/// The ERROR-CODE value for `code` (300..=699) and a reason phrase (RFC 8489 §14.8).
pub fn encode_error_code(code: u16, reason: &str) -> Vec<u8> {
    let mut v = vec![0, 0, ((code / 100) & 0x7) as u8, (code % 100) as u8];
    v.extend_from_slice(reason.as_bytes());
    v
}

/// The short-term credential key (RFC 8489 §9.1.1): the password itself.
/// (OpaqueString preparation is the caller's job for non-ASCII passwords.)
pub fn short_term_key(password: &str) -> Vec<u8> {
    password.as_bytes().to_vec()
}

/// The long-term credential key for MESSAGE-INTEGRITY (RFC 8489 §9.2.2):
/// MD5(username ":" realm ":" password).
pub fn long_term_key(username: &str, realm: &str, password: &str) -> Vec<u8> {
    use md5::Digest;
    md5::Md5::digest(format!("{username}:{realm}:{password}").as_bytes()).to_vec()
}

impl Message {
    /// A message without attributes.
    pub fn new(class: Class, method: u16, transaction_id: TransactionId) -> Self {
        Message { class, method, transaction_id, attributes: Vec::new() }
    }

    /// Parses one RFC 8489 message (with magic cookie), strictly. FINGERPRINT, if present,
    /// is verified; MESSAGE-INTEGRITY is not (see [`verify_integrity`]). Attributes after
    /// MESSAGE-INTEGRITY other than FINGERPRINT are dropped, as RFC 8489 §14.5 asks.
    pub fn parse(bytes: &[u8]) -> Result<Message, StunError> {
        if !is_stun(bytes) {
            return Err(StunError::NotStun);
        }
        let (class, method) = split_type(be16(bytes, 0).ok_or(StunError::NotStun)?);
        let mut transaction_id = [0u8; 12];
        transaction_id.copy_from_slice(&bytes[8..HEADER_LEN]);
        let len = usize::from(be16(bytes, 2).ok_or(StunError::NotStun)?);
        if len % 4 != 0 || HEADER_LEN + len != bytes.len() {
            return Err(StunError::Malformed("message length does not match the datagram"));
        }
        let mut attributes = Vec::new();
        let mut at = HEADER_LEN;
        let mut after_integrity = false;
        while at < bytes.len() {
            let kind = be16(bytes, at).ok_or(StunError::Malformed("truncated attribute header"))?;
            let vlen = usize::from(be16(bytes, at + 2).ok_or(StunError::Malformed("truncated attribute header"))?);
            let start = at + 4;
            let end = start + padded(vlen);
            if end > bytes.len() {
                return Err(StunError::Malformed("attribute runs past the end of the message"));
            }
            let value = &bytes[start..start + vlen];
            match kind {
                attr::FINGERPRINT => {
                    if vlen != 4 || end != bytes.len() {
                        return Err(StunError::Malformed("FINGERPRINT is not a last 4-byte attribute"));
                    }
                    let header = header_with_len(bytes, end - HEADER_LEN);
                    let want = crc32(&[&header, &bytes[HEADER_LEN..at]]) ^ FINGERPRINT_XOR;
                    if be32(value, 0) != Some(want) {
                        return Err(StunError::BadFingerprint);
                    }
                }
                attr::MESSAGE_INTEGRITY if vlen != 20 => {
                    return Err(StunError::Malformed("MESSAGE-INTEGRITY is not 20 bytes"));
                }
                attr::MESSAGE_INTEGRITY_SHA256 if !(16..=32).contains(&vlen) || vlen % 4 != 0 => {
                    return Err(StunError::Malformed("MESSAGE-INTEGRITY-SHA256 has a bad length"));
                }
                _ => {}
            }
            let integrity = matches!(kind, attr::MESSAGE_INTEGRITY | attr::MESSAGE_INTEGRITY_SHA256);
            if !after_integrity || integrity || kind == attr::FINGERPRINT {
                attributes.push(Attribute { kind, value: value.to_vec() });
            }
            after_integrity |= integrity;
            at = end;
        }
        Ok(Message { class, method, transaction_id, attributes })
    }

    /// The value of the first attribute of type `kind`.
    pub fn get(&self, kind: u16) -> Option<&[u8]> {
        self.attributes.iter().find(|a| a.kind == kind).map(|a| a.value.as_slice())
    }

    /// Appends an attribute. Values longer than 65535 bytes are truncated by encoding rules,
    /// so callers keep them short; this crate's own attributes always are.
    pub fn add(&mut self, kind: u16, value: Vec<u8>) -> &mut Self {
        self.attributes.push(Attribute { kind, value });
        self
    }

    /// Appends a MAPPED-ADDRESS-style attribute (also RESPONSE-ORIGIN, OTHER-ADDRESS).
    pub fn add_address(&mut self, kind: u16, addr: SocketAddr) -> &mut Self {
        self.add(kind, encode_address(addr, None))
    }

    /// Appends an XOR-MAPPED-ADDRESS-style attribute.
    pub fn add_xor_address(&mut self, kind: u16, addr: SocketAddr) -> &mut Self {
        let tid = self.transaction_id;
        self.add(kind, encode_address(addr, Some(&tid)))
    }

    /// Appends ERROR-CODE with `code` (300..=699) and a reason phrase.
    pub fn add_error_code(&mut self, code: u16, reason: &str) -> &mut Self {
        self.add(attr::ERROR_CODE, encode_error_code(code, reason))
    }

    /// Decodes the address in the first attribute of type `kind`, XOR-ed if `xor`.
    pub fn address(&self, kind: u16, xor: bool) -> Result<Option<SocketAddr>, StunError> {
        match self.get(kind) {
            None => Ok(None),
            Some(v) => decode_address(v, if xor { Some(&self.transaction_id) } else { None }).map(Some),
        }
    }

    /// The reflexive address: XOR-MAPPED-ADDRESS, or MAPPED-ADDRESS from old servers.
    pub fn mapped_address(&self) -> Result<Option<SocketAddr>, StunError> {
        match self.address(attr::XOR_MAPPED_ADDRESS, true)? {
            Some(a) => Ok(Some(a)),
            None => self.address(attr::MAPPED_ADDRESS, false),
        }
    }

    /// The ERROR-CODE as (code, reason), if present and well-formed.
    pub fn error_code(&self) -> Option<(u16, String)> {
        let v = self.get(attr::ERROR_CODE)?;
        if v.len() < 4 {
            return None;
        }
        let code = u16::from(v[2] & 0x7) * 100 + u16::from(v[3]);
        Some((code, String::from_utf8_lossy(&v[4..]).into_owned()))
    }

    /// Encodes the message. With `integrity_key`, MESSAGE-INTEGRITY (HMAC-SHA1) is appended;
    /// with `fingerprint`, FINGERPRINT is appended last. Attributes already of those types
    /// in `attributes` are skipped.
    pub fn encode(&self, integrity_key: Option<&[u8]>, fingerprint: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        out.extend_from_slice(&join_type(self.class, self.method).to_be_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        out.extend_from_slice(&self.transaction_id);
        for a in &self.attributes {
            if matches!(a.kind, attr::MESSAGE_INTEGRITY | attr::MESSAGE_INTEGRITY_SHA256 | attr::FINGERPRINT) {
                continue;
            }
            let vlen = a.value.len().min(usize::from(u16::MAX) - 3);
            out.extend_from_slice(&a.kind.to_be_bytes());
            out.extend_from_slice(&(vlen as u16).to_be_bytes());
            out.extend_from_slice(&a.value[..vlen]);
            out.resize(out.len() + padded(vlen) - vlen, 0);
        }
        if let Some(key) = integrity_key {
            let header = header_with_len(&out, out.len() + 24 - HEADER_LEN);
            let mac = hmac_sha1(key, &[&header, &out[HEADER_LEN..]]);
            out.extend_from_slice(&attr::MESSAGE_INTEGRITY.to_be_bytes());
            out.extend_from_slice(&20u16.to_be_bytes());
            out.extend_from_slice(&mac);
        }
        if fingerprint {
            let header = header_with_len(&out, out.len() + 8 - HEADER_LEN);
            let crc = crc32(&[&header, &out[HEADER_LEN..]]) ^ FINGERPRINT_XOR;
            out.extend_from_slice(&attr::FINGERPRINT.to_be_bytes());
            out.extend_from_slice(&4u16.to_be_bytes());
            out.extend_from_slice(&crc.to_be_bytes());
        }
        let len = (out.len() - HEADER_LEN) as u16;
        out[2..4].copy_from_slice(&len.to_be_bytes());
        out
    }
}

/// Checks the MESSAGE-INTEGRITY (HMAC-SHA1) of the raw message `bytes` with `key`
/// (see [`short_term_key`], [`long_term_key`]). Ok(false) means the message has no
/// MESSAGE-INTEGRITY; a wrong HMAC is [`StunError::BadIntegrity`].
pub fn verify_integrity(bytes: &[u8], key: &[u8]) -> Result<bool, StunError> {
    Message::parse(bytes)?; // structure, lengths and FINGERPRINT
    let mut at = HEADER_LEN;
    while at + 4 <= bytes.len() {
        let kind = be16(bytes, at).ok_or(StunError::NotStun)?;
        let vlen = usize::from(be16(bytes, at + 2).ok_or(StunError::NotStun)?);
        let end = at + 4 + padded(vlen);
        if kind == attr::MESSAGE_INTEGRITY {
            let got = bytes.get(at + 4..at + 24).ok_or(StunError::Malformed("short MESSAGE-INTEGRITY"))?;
            let header = header_with_len(bytes, at + 24 - HEADER_LEN);
            let want = hmac_sha1(key, &[&header, &bytes[HEADER_LEN..at]]);
            // Constant-time enough for our use: compare all bytes before deciding.
            let diff = got.iter().zip(want.iter()).fold(0u8, |d, (a, b)| d | (a ^ b));
            return if diff == 0 { Ok(true) } else { Err(StunError::BadIntegrity) };
        }
        at = end;
    }
    Ok(false)
}

/// Encodes an address attribute value; XOR-ed with the cookie (and `tid` for IPv6) if
/// `xor_tid` is given (RFC 8489 §14.1, §14.2).
pub fn encode_address(addr: SocketAddr, xor_tid: Option<&TransactionId>) -> Vec<u8> {
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let mut mask = [0u8; 16];
    if let Some(tid) = xor_tid {
        mask[..4].copy_from_slice(&cookie);
        mask[4..].copy_from_slice(tid);
    }
    let port = addr.port() ^ u16::from_be_bytes([mask[0], mask[1]]);
    let (family, ip): (u8, Vec<u8>) = match addr.ip() {
        IpAddr::V4(ip) => (1, ip.octets().to_vec()),
        IpAddr::V6(ip) => (2, ip.octets().to_vec()),
    };
    let mut v = vec![0, family];
    v.extend_from_slice(&port.to_be_bytes());
    v.extend(ip.iter().zip(mask.iter()).map(|(a, m)| a ^ m));
    v
}

/// Decodes an address attribute value (see [`encode_address`]).
pub fn decode_address(v: &[u8], xor_tid: Option<&TransactionId>) -> Result<SocketAddr, StunError> {
    let mut mask = [0u8; 16];
    if let Some(tid) = xor_tid {
        mask[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        mask[4..].copy_from_slice(tid);
    }
    let port =
        be16(v, 2).ok_or(StunError::Malformed("short address attribute"))? ^ u16::from_be_bytes([mask[0], mask[1]]);
    let x = |i: usize| v[4 + i] ^ mask[i];
    match (v.get(1), v.len()) {
        (Some(1), 8) => Ok(SocketAddr::new(Ipv4Addr::new(x(0), x(1), x(2), x(3)).into(), port)),
        (Some(2), 20) => {
            let mut o = [0u8; 16];
            for (i, b) in o.iter_mut().enumerate() {
                *b = x(i);
            }
            Ok(SocketAddr::new(Ipv6Addr::from(o).into(), port))
        }
        _ => Err(StunError::Malformed("bad address family or length")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_round_trip() {
        for class in [Class::Request, Class::Indication, Class::Success, Class::Error] {
            for method in [0x001, 0x003, 0x00A, 0xFFF, 0x080] {
                assert_eq!(split_type(join_type(class, method)), (class, method));
            }
        }
        assert_eq!(join_type(Class::Success, METHOD_BINDING), 0x0101);
        assert_eq!(join_type(Class::Error, METHOD_BINDING), 0x0111);
    }

    #[test]
    fn address_round_trip() {
        let tid = [7u8; 12];
        for a in ["192.0.2.1:32853", "[2001:db8:1234:5678:11:2233:4455:6677]:32853"] {
            let a: SocketAddr = a.parse().unwrap();
            assert_eq!(decode_address(&encode_address(a, Some(&tid)), Some(&tid)).unwrap(), a);
            assert_eq!(decode_address(&encode_address(a, None), None).unwrap(), a);
        }
    }
}
