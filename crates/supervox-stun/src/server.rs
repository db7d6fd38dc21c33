//! The STUN Binding server that every supernode runs on its UDP port.
//!
//! Plain RFC 8489 (any STUN client works against it) plus RFC 5780's CHANGE-REQUEST,
//! answered with the help of a *peer* supernode ("dial-back", see the README): a supernode
//! has a single IP, so "answer from another IP" is delegated to another supernode.

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::codec::{attr, is_stun, peek_header, Class, Message, TransactionId, CHANGE_IP, CHANGE_PORT, METHOD_BINDING};
use crate::StunError;

/// Our SOFTWARE attribute value.
pub const SOFTWARE: &str = concat!("supervox ", env!("CARGO_PKG_VERSION"));

/// Largest PADDING (RFC 5780 §7.6) answered, and asked of a peer in a dial-back: enough to
/// probe a path's MTU, too little for a forged dial-back order to amplify much.
pub const MAX_PADDING: u16 = 1_500;

/// Comprehension-required attributes a Binding request may carry without a 420 answer.
/// Credentials are understood but not required: the Binding service is open.
/// RESPONSE-PORT (RFC 5780 §7.5) is honoured, on the request's own IP only: RFC 5780
/// clients (coturn's `turnutils_stunclient`) need it, and a spoofed source already picks
/// the victim's IP; what bounds reflection is the size rule (PADDING ≤ request) and the
/// answer rate.
const KNOWN_IN_REQUEST: &[u16] = &[
    attr::MAPPED_ADDRESS,
    attr::CHANGE_REQUEST,
    attr::USERNAME,
    attr::MESSAGE_INTEGRITY,
    attr::ERROR_CODE,
    attr::UNKNOWN_ATTRIBUTES,
    attr::REALM,
    attr::NONCE,
    attr::MESSAGE_INTEGRITY_SHA256,
    attr::XOR_MAPPED_ADDRESS,
    attr::PRIORITY,
    attr::USE_CANDIDATE,
    attr::RESPONSE_PORT,
    attr::PADDING,
];

/// What the supernode must do with a Binding request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// Send `response` to `to` from the socket the request arrived on. `to` is the
    /// requester, or its IP with the port of a RESPONSE-PORT attribute (RFC 5780 §7.5).
    Direct {
        /// Where to send the response.
        to: SocketAddr,
        /// The response.
        response: Vec<u8>,
    },
    /// CHANGE-REQUEST(change port): send `response` to `to` from this supernode's
    /// alternate UDP socket, bound to `from`.
    FromAlternate {
        /// The alternate local address to send from.
        from: SocketAddr,
        /// The requester (or its RESPONSE-PORT).
        to: SocketAddr,
        /// The Binding success response.
        response: Vec<u8>,
    },
    /// CHANGE-REQUEST(change IP): send `dial_back` to the peer supernode whose UDP address
    /// is `peer`, over the authenticated supernode link; the peer answers the requester from
    /// its own UDP socket with [`DialBack::response`]. Nothing goes back to the requester here.
    ViaPeer {
        /// The peer supernode's UDP address (this server's OTHER-ADDRESS).
        peer: SocketAddr,
        /// The order for the peer.
        dial_back: DialBack,
    },
}

/// An order from one supernode to a peer: "send a Binding success response for
/// `transaction_id` reporting `mapped` to `to`, from your own UDP address". Carried on the
/// supernode link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DialBack {
    /// The client's Binding request transaction ID.
    pub transaction_id: TransactionId,
    /// The client's address as the first supernode saw it (its mapped address).
    pub mapped: SocketAddr,
    /// Where to send the response: `mapped`, or its IP with the client's RESPONSE-PORT.
    pub to: SocketAddr,
    /// Length of the PADDING attribute to include (the request's, RFC 5780 §7.6), 0 for none.
    #[serde(default)]
    pub padding: u16,
}

impl DialBack {
    /// Builds the response the peer supernode sends to [`DialBack::to`] from its UDP socket
    /// `local` (the address clients know it by). Refuses destinations that cannot be a
    /// client (unspecified, multicast, port 0) and a `to` on another IP than `mapped`.
    /// The caller also rate-limits dial-backs.
    pub fn response(&self, local: SocketAddr) -> Result<Vec<u8>, StunError> {
        let to = canonical(self.to);
        let bad_ip = match to.ip() {
            IpAddr::V4(ip) => ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast(),
            IpAddr::V6(ip) => ip.is_unspecified() || ip.is_multicast(),
        };
        if bad_ip || to.port() == 0 {
            return Err(StunError::BadDialBack("destination is not a unicast address"));
        }
        let mapped = canonical(self.mapped);
        if mapped.ip() != to.ip() {
            return Err(StunError::BadDialBack("destination is not the mapped address"));
        }
        if self.padding > MAX_PADDING {
            return Err(StunError::BadDialBack("padding larger than a request may carry"));
        }
        Ok(success(self.transaction_id, mapped, local, None, Some(SOFTWARE), self.padding))
    }
}

/// Builds a Binding success response: XOR-MAPPED-ADDRESS and MAPPED-ADDRESS = `mapped`,
/// RESPONSE-ORIGIN = `origin` (omitted if its IP is unspecified), OTHER-ADDRESS = `other`,
/// SOFTWARE, FINGERPRINT.
pub fn build_binding_success(
    transaction_id: TransactionId,
    mapped: SocketAddr,
    origin: SocketAddr,
    other: Option<SocketAddr>,
    software: Option<&str>,
) -> Vec<u8> {
    success(transaction_id, mapped, origin, other, software, 0)
}

/// [`build_binding_success`] with a PADDING attribute of `padding` bytes if non-zero.
fn success(
    transaction_id: TransactionId,
    mapped: SocketAddr,
    origin: SocketAddr,
    other: Option<SocketAddr>,
    software: Option<&str>,
    padding: u16,
) -> Vec<u8> {
    let mut m = Message::new(Class::Success, METHOD_BINDING, transaction_id);
    m.add_xor_address(attr::XOR_MAPPED_ADDRESS, mapped);
    m.add_address(attr::MAPPED_ADDRESS, mapped);
    if !origin.ip().is_unspecified() {
        m.add_address(attr::RESPONSE_ORIGIN, origin);
    }
    if let Some(o) = other {
        m.add_address(attr::OTHER_ADDRESS, o);
    }
    if let Some(s) = software {
        m.add(attr::SOFTWARE, s.as_bytes().to_vec());
    }
    if padding > 0 {
        m.add(attr::PADDING, vec![0; usize::from(padding)]);
    }
    m.encode(None, true)
}

/// Builds a Binding error response with ERROR-CODE, UNKNOWN-ATTRIBUTES (if any), SOFTWARE
/// and FINGERPRINT.
pub fn build_binding_error(
    transaction_id: TransactionId,
    code: u16,
    reason: &str,
    unknown: &[u16],
    software: Option<&str>,
) -> Vec<u8> {
    let mut m = Message::new(Class::Error, METHOD_BINDING, transaction_id);
    m.add_error_code(code, reason);
    if !unknown.is_empty() {
        m.add(attr::UNKNOWN_ATTRIBUTES, unknown.iter().flat_map(|t| t.to_be_bytes()).collect());
    }
    if let Some(s) = software {
        m.add(attr::SOFTWARE, s.as_bytes().to_vec());
    }
    m.encode(None, true)
}

/// `[::ffff:a.b.c.d]:p` → `a.b.c.d:p`, so dual-stack sockets report IPv4 clients as IPv4.
fn canonical(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => a,
        },
        SocketAddr::V4(_) => a,
    }
}

/// A supernode's Binding server configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindingServer {
    /// SOFTWARE attribute value; `None` omits it.
    pub software: Option<String>,
    /// The peer supernode's UDP address: sent as OTHER-ADDRESS, and CHANGE-REQUEST(change IP)
    /// is delegated to it. `None`: such requests get 420.
    pub other: Option<SocketAddr>,
    /// This supernode's second UDP socket on the same IP (e.g. its port-443 listener):
    /// CHANGE-REQUEST(change port) is answered from it. `None`: such requests get 420.
    pub alternate: Option<SocketAddr>,
}

impl Default for BindingServer {
    fn default() -> Self {
        BindingServer { software: Some(SOFTWARE.to_string()), other: None, alternate: None }
    }
}

impl BindingServer {
    /// Handles one datagram that arrived on `local` from `from`.
    ///
    /// - `Ok(None)`: not STUN; the port's other protocol may take it.
    /// - `Ok(Some(reply))`: a Binding request (good or bad) and what to send.
    /// - `Err(e)`: STUN that is not answered: a bad FINGERPRINT, or a message that is not a
    ///   Binding request ([`StunError::NotBindingRequest`], e.g. TURN), which the caller may
    ///   route elsewhere.
    ///
    /// `local` should be the address clients reach this socket at (it is sent as
    /// RESPONSE-ORIGIN unless its IP is unspecified). Never panics.
    pub fn handle(&self, request: &[u8], from: SocketAddr, local: SocketAddr) -> Result<Option<Reply>, StunError> {
        let from = canonical(from);
        let sw = self.software.as_deref();
        if !is_stun(request) {
            return Ok(
                legacy_binding(request, from, local, self.other).map(|response| Reply::Direct { to: from, response })
            );
        }
        let Some((class, method, tid)) = peek_header(request) else { return Ok(None) };
        let msg = match Message::parse(request) {
            Ok(m) => m,
            Err(StunError::Malformed(why)) if class == Class::Request && method == METHOD_BINDING => {
                return Ok(Some(Reply::Direct { to: from, response: build_binding_error(tid, 400, why, &[], sw) }));
            }
            Err(e) => return Err(e),
        };
        if class != Class::Request || method != METHOD_BINDING {
            return Err(StunError::NotBindingRequest { class, method });
        }
        let mut unknown: Vec<u16> = Vec::new();
        for a in &msg.attributes {
            if a.kind < 0x8000 && !KNOWN_IN_REQUEST.contains(&a.kind) && !unknown.contains(&a.kind) {
                unknown.push(a.kind);
            }
        }
        if !unknown.is_empty() {
            let response = build_binding_error(tid, 420, "Unknown Attribute", &unknown, sw);
            return Ok(Some(Reply::Direct { to: from, response }));
        }
        let bad =
            |why: &str| Ok(Some(Reply::Direct { to: from, response: build_binding_error(tid, 400, why, &[], sw) }));
        let to = match msg.get(attr::RESPONSE_PORT) {
            None => from,
            Some(&[a, b, _, _]) if u16::from_be_bytes([a, b]) != 0 => {
                SocketAddr::new(from.ip(), u16::from_be_bytes([a, b]))
            }
            Some(_) => return bad("Bad RESPONSE-PORT"),
        };
        let flags = match msg.get(attr::CHANGE_REQUEST) {
            None => 0,
            Some(&[a, b, c, d]) => u32::from_be_bytes([a, b, c, d]) & (CHANGE_IP | CHANGE_PORT),
            Some(_) => return bad("Bad CHANGE-REQUEST"),
        };
        // PADDING (RFC 5780 §7.6): answer with as much padding, so no amplification; bounded,
        // since the same length goes into a dial-back order for the peer.
        let padding = match msg.get(attr::PADDING) {
            None => 0,
            Some(p) if p.len() <= usize::from(MAX_PADDING) => p.len() as u16,
            Some(_) => return bad("PADDING too large"),
        };
        let cannot = || Reply::Direct {
            to: from,
            response: build_binding_error(tid, 420, "Unknown Attribute", &[attr::CHANGE_REQUEST], sw),
        };
        let reply = if flags & CHANGE_IP != 0 {
            match self.other {
                Some(peer) => {
                    Reply::ViaPeer { peer, dial_back: DialBack { transaction_id: tid, mapped: from, to, padding } }
                }
                None => cannot(),
            }
        } else if flags & CHANGE_PORT != 0 {
            match self.alternate {
                Some(alt) => {
                    Reply::FromAlternate { from: alt, to, response: success(tid, from, alt, self.other, sw, padding) }
                }
                None => cannot(),
            }
        } else {
            Reply::Direct { to, response: success(tid, from, local, self.other, sw, padding) }
        };
        Ok(Some(reply))
    }
}

/// Answers a Binding request with the default [`BindingServer`] (SOFTWARE = "supervox x.y.z",
/// no alternate port) whose OTHER-ADDRESS / change-IP peer is `other`.
/// See [`BindingServer::handle`].
pub fn handle_binding(
    request: &[u8],
    from: SocketAddr,
    local: SocketAddr,
    other: Option<SocketAddr>,
) -> Result<Option<Reply>, StunError> {
    BindingServer { other, ..BindingServer::default() }.handle(request, from, local)
}

/// True if `bytes` is an RFC 3489 (no magic cookie) Binding request: type 0x0001 and a
/// length field that matches the datagram exactly.
pub fn is_legacy_binding(bytes: &[u8]) -> bool {
    bytes.len() >= 20
        && bytes.len() <= 548
        && bytes[0..2] == [0, 1]
        && usize::from(u16::from_be_bytes([bytes[2], bytes[3]])) + 20 == bytes.len()
        && !is_stun(bytes)
}

/// Answers an RFC 3489 Binding request with MAPPED-ADDRESS, SOURCE-ADDRESS and
/// CHANGED-ADDRESS, echoing the 128-bit transaction ID. Requests with a CHANGE-REQUEST or
/// bad attribute framing get no answer (a legacy client then sees "no response").
fn legacy_binding(bytes: &[u8], from: SocketAddr, local: SocketAddr, other: Option<SocketAddr>) -> Option<Vec<u8>> {
    if !is_legacy_binding(bytes) {
        return None;
    }
    let mut at = 20;
    while at < bytes.len() {
        let kind = u16::from_be_bytes([*bytes.get(at)?, *bytes.get(at + 1)?]);
        let len = usize::from(u16::from_be_bytes([*bytes.get(at + 2)?, *bytes.get(at + 3)?]));
        let value = bytes.get(at + 4..at + 4 + len)?;
        if kind == attr::CHANGE_REQUEST && value.iter().any(|b| *b != 0) {
            return None;
        }
        at += 4 + len; // RFC 3489 attributes are 4-byte multiples; no padding rules.
    }
    if !from.is_ipv4() {
        return None; // RFC 3489 addresses are IPv4 only.
    }
    let mut body = Vec::new();
    let mut put = |kind: u16, a: SocketAddr| {
        if let IpAddr::V4(ip) = a.ip() {
            body.extend_from_slice(&kind.to_be_bytes());
            body.extend_from_slice(&[0, 8, 0, 1]);
            body.extend_from_slice(&a.port().to_be_bytes());
            body.extend_from_slice(&ip.octets());
        }
    };
    put(attr::MAPPED_ADDRESS, from);
    put(attr::SOURCE_ADDRESS, local);
    if let Some(o) = other {
        put(attr::CHANGED_ADDRESS, o);
    }
    let mut out = vec![0x01, 0x01];
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(&bytes[4..20]);
    out.extend_from_slice(&body);
    Some(out)
}
