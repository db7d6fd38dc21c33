//! Encoding of outgoing STUN messages.

use std::net::SocketAddr;

use supervox_stun::codec as stun;

use crate::codec::{attr, encode_xor_address, message_type, Class, IntegrityKind, HEADER_LEN, MAGIC_COOKIE};

/// Incrementally builds an outgoing STUN message.
#[derive(Debug, Clone)]
pub struct MessageBuilder {
    buf: Vec<u8>,
    tid: [u8; 12],
}

impl MessageBuilder {
    /// Start a message with the given method, class and transaction id.
    pub fn new(method: u16, class: Class, tid: [u8; 12]) -> Self {
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(&message_type(method, class).to_be_bytes());
        buf.extend_from_slice(&[0, 0]);
        buf.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        buf.extend_from_slice(&tid);
        MessageBuilder { buf, tid }
    }

    fn set_len(&mut self) {
        let len = u16::try_from(self.buf.len() - HEADER_LEN).unwrap_or(u16::MAX);
        self.buf[2..4].copy_from_slice(&len.to_be_bytes());
    }

    /// Append a raw attribute (value is padded to 4 bytes). Values over 65535 bytes are truncated.
    pub fn attr(&mut self, typ: u16, value: &[u8]) -> &mut Self {
        let value = &value[..value.len().min(usize::from(u16::MAX))];
        self.buf.extend_from_slice(&typ.to_be_bytes());
        self.buf.extend_from_slice(&(value.len() as u16).to_be_bytes());
        self.buf.extend_from_slice(value);
        let pad = (4 - value.len() % 4) % 4;
        self.buf.extend(std::iter::repeat_n(0u8, pad));
        self.set_len();
        self
    }

    /// Append a 32-bit attribute such as LIFETIME.
    pub fn attr_u32(&mut self, typ: u16, v: u32) -> &mut Self {
        self.attr(typ, &v.to_be_bytes())
    }

    /// Append an XOR-address attribute.
    pub fn xor_addr(&mut self, typ: u16, addr: SocketAddr) -> &mut Self {
        let v = encode_xor_address(addr, &self.tid);
        self.attr(typ, &v)
    }

    /// Append ERROR-CODE with the standard reason phrase.
    pub fn error(&mut self, code: u16) -> &mut Self {
        let v = stun::encode_error_code(code, reason_phrase(code));
        self.attr(attr::ERROR_CODE, &v)
    }

    /// Append UNKNOWN-ATTRIBUTES.
    pub fn unknown_attributes(&mut self, types: &[u16]) -> &mut Self {
        let v: Vec<u8> = types.iter().take(32).flat_map(|t| t.to_be_bytes()).collect();
        self.attr(attr::UNKNOWN_ATTRIBUTES, &v)
    }

    /// Append MESSAGE-INTEGRITY or MESSAGE-INTEGRITY-SHA256 computed with `key`.
    pub fn integrity(&mut self, kind: IntegrityKind, key: &[u8]) -> &mut Self {
        let end = self.buf.len();
        let mac = stun::integrity_mac(kind, key, &self.buf, end, 4 + kind.mac_len());
        self.attr(kind.attribute(), &mac)
    }

    /// Append FINGERPRINT.
    pub fn fingerprint(&mut self) -> &mut Self {
        let end = self.buf.len();
        let v = stun::fingerprint_value(&self.buf, end);
        self.attr_u32(attr::FINGERPRINT, v)
    }

    /// Finish and return the encoded message.
    pub fn build(&self) -> Vec<u8> {
        self.buf.clone()
    }

    /// Finish, consuming the builder.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }
}

/// Standard reason phrases for the error codes the server emits.
pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        420 => "Unknown Attribute",
        437 => "Allocation Mismatch",
        438 => "Stale Nonce",
        440 => "Address Family not Supported",
        441 => "Wrong Credentials",
        442 => "Unsupported Transport Protocol",
        443 => "Peer Address Family Mismatch",
        486 => "Allocation Quota Reached",
        500 => "Server Error",
        508 => "Insufficient Capacity",
        _ => "Error",
    }
}
