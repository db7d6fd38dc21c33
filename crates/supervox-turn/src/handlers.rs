//! Authenticated request handlers: Allocate, Refresh, CreatePermission, ChannelBind.

use std::collections::HashMap;
use std::net::SocketAddr;

use crate::allocation::{
    peer_forbidden, Allocation, CachedResponse, Channel, TokenBucket, CHANNEL_LIFETIME_MS, PERMISSION_LIFETIME_MS,
};
use crate::auth::{long_term_key, parse_username, rest_password, NonceCheck};
use crate::codec::{self, attr, method, Class, IntegrityKind, Message, MessageBuilder};
use crate::server::{AddressFamily, FiveTuple, Output, PendingAllocation, RelayError, RelayToken, TurnServer};

/// UDP protocol number for REQUESTED-TRANSPORT.
const PROTO_UDP: u8 = 17;

/// A request that passed the long-term credential check.
pub(crate) struct Authed {
    username: String,
    user_id: String,
    key: [u8; 16],
    kind: IntegrityKind,
}

/// Entry point for the four authenticated request methods.
pub(crate) fn handle_request(s: &mut TurnServer, t: FiveTuple, msg: &Message<'_>, now_ms: u64) {
    let Some(auth) = authenticate(s, t, msg, now_ms) else { return };
    let unknown = msg.unknown_required();
    if !unknown.is_empty() {
        let mut b = MessageBuilder::new(msg.method, Class::Error, msg.transaction_id);
        b.error(420).unknown_attributes(&unknown);
        sign_and_send(s, t, b, &auth);
        return;
    }
    match msg.method {
        method::ALLOCATE => allocate(s, t, msg, auth, now_ms),
        method::REFRESH => refresh(s, t, msg, &auth, now_ms),
        method::CREATE_PERMISSION => create_permission(s, t, msg, &auth, now_ms),
        _ => channel_bind(s, t, msg, &auth, now_ms),
    }
}

/// Long-term credential check (RFC 8489 §9.2.4) with REST-style usernames. Sends the 400/401/438
/// response itself and returns `None` on failure.
fn authenticate(s: &mut TurnServer, t: FiveTuple, msg: &Message<'_>, now_ms: u64) -> Option<Authed> {
    let challenge = |s: &mut TurnServer, code: u16| {
        let mut b = MessageBuilder::new(msg.method, Class::Error, msg.transaction_id);
        b.error(code)
            .attr(attr::REALM, s.cfg.realm.as_bytes())
            .attr(attr::NONCE, s.nonces.issue(t.client, now_ms).as_bytes());
        s.send_unauth(t, b, now_ms);
    };
    let Some(kind) = msg.integrity_kind() else {
        challenge(s, 401);
        return None;
    };
    let (Some(user), Some(realm), Some(nonce)) = (msg.get(attr::USERNAME), msg.get(attr::REALM), msg.get(attr::NONCE))
    else {
        let mut b = MessageBuilder::new(msg.method, Class::Error, msg.transaction_id);
        b.error(400);
        s.send_unauth(t, b, now_ms);
        return None;
    };
    if s.nonces.check(nonce, t.client, now_ms) == NonceCheck::Stale {
        challenge(s, 438);
        return None;
    }
    let username = std::str::from_utf8(user).ok().map(str::to_owned);
    let parsed = username.as_deref().and_then(parse_username);
    let (Some(username), Some(parsed)) = (username, parsed) else {
        challenge(s, 401);
        return None;
    };
    if realm != s.cfg.realm.as_bytes() || parsed.expiry_unix_secs.saturating_mul(1000) <= now_ms {
        challenge(s, 401);
        return None;
    }
    for secret in &s.cfg.secrets {
        let key = long_term_key(&username, &s.cfg.realm, &rest_password(secret, &username));
        if msg.verify_integrity(&key) {
            return Some(Authed { username, user_id: parsed.user_id, key, kind });
        }
    }
    challenge(s, 401);
    None
}

fn sign_and_send(s: &mut TurnServer, t: FiveTuple, mut b: MessageBuilder, auth: &Authed) {
    s.add_software(&mut b);
    b.integrity(auth.kind, &auth.key);
    s.send_response(t, b.into_bytes());
}

fn error(s: &mut TurnServer, t: FiveTuple, msg: &Message<'_>, auth: &Authed, code: u16) {
    let mut b = MessageBuilder::new(msg.method, Class::Error, msg.transaction_id);
    b.error(code);
    sign_and_send(s, t, b, auth);
}

/// Whether the allocation for `t` is live and owned by the authenticated user; otherwise answers
/// 437/441 and returns false. Expired-but-unswept allocations are deleted here.
fn owned_allocation(s: &mut TurnServer, t: FiveTuple, msg: &Message<'_>, auth: &Authed, now_ms: u64) -> bool {
    match s.allocations.get(&t) {
        Some(a) if a.expires_ms <= now_ms => {
            s.remove_allocation(&t);
            error(s, t, msg, auth, 437);
            false
        }
        None => {
            error(s, t, msg, auth, 437);
            false
        }
        Some(a) if a.user_id != auth.user_id => {
            error(s, t, msg, auth, 441);
            false
        }
        Some(_) => true,
    }
}

fn read_u32(v: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(v.try_into().ok()?))
}

/// REQUESTED-ADDRESS-FAMILY: `Ok(None)` if absent, `Err(code)` if malformed or unsupported.
fn requested_family(msg: &Message<'_>) -> Result<Option<AddressFamily>, u16> {
    match msg.get(attr::REQUESTED_ADDRESS_FAMILY) {
        None => Ok(None),
        Some(v) if v.len() != 4 => Err(400),
        Some(v) if v[0] == 0x01 => Ok(Some(AddressFamily::V4)),
        Some(v) if v[0] == 0x02 => Ok(Some(AddressFamily::V6)),
        Some(_) => Err(440),
    }
}

fn allocate(s: &mut TurnServer, t: FiveTuple, msg: &Message<'_>, auth: Authed, now_ms: u64) {
    if let Some(a) = s.allocations.get(&t) {
        if a.expires_ms > now_ms {
            if a.allocate_response.transaction_id == msg.transaction_id {
                let bytes = a.allocate_response.bytes.clone();
                s.send_response(t, bytes);
            } else {
                error(s, t, msg, &auth, 437);
            }
            return;
        }
        s.remove_allocation(&t);
    }
    if let Some(tok) = s.pending_by_tuple.get(&t) {
        let same = s.pending.get(tok).is_some_and(|p| p.transaction_id == msg.transaction_id);
        if !same {
            error(s, t, msg, &auth, 437);
        }
        // A retransmission of an in-flight Allocate: the answer is on its way.
        return;
    }
    match msg.get(attr::REQUESTED_TRANSPORT) {
        Some(v) if v.len() == 4 && v[0] == PROTO_UDP => {}
        Some(v) if v.len() == 4 => return error(s, t, msg, &auth, 442),
        _ => return error(s, t, msg, &auth, 400),
    }
    let family = match requested_family(msg) {
        Ok(f) => f.unwrap_or(AddressFamily::V4),
        Err(code) => return error(s, t, msg, &auth, code),
    };
    let reservation = msg.get(attr::RESERVATION_TOKEN);
    let even_port = msg.get(attr::EVEN_PORT);
    if reservation.is_some() && (even_port.is_some() || msg.get(attr::REQUESTED_ADDRESS_FAMILY).is_some()) {
        return error(s, t, msg, &auth, 400);
    }
    let even_port = match even_port {
        None => false,
        Some([flags]) if flags & 0x80 == 0 => true,
        // R bit: we do not hold port reservations, so we cannot satisfy it.
        Some([_]) => return error(s, t, msg, &auth, 508),
        Some(_) => return error(s, t, msg, &auth, 400),
    };
    if reservation.is_some() {
        return error(s, t, msg, &auth, 508);
    }
    let lifetime_secs = match msg.get(attr::LIFETIME).map(read_u32) {
        Some(None) => return error(s, t, msg, &auth, 400),
        Some(Some(req)) => req.max(s.cfg.default_lifetime_secs).min(s.cfg.max_lifetime_secs),
        None => s.cfg.default_lifetime_secs.min(s.cfg.max_lifetime_secs),
    };
    let user_count = s.per_user.get(&auth.user_id).copied().unwrap_or(0);
    if user_count >= s.cfg.max_allocations_per_user {
        return error(s, t, msg, &auth, 486);
    }
    if s.allocations.len() + s.pending.len() >= s.cfg.max_allocations {
        return error(s, t, msg, &auth, 508);
    }
    let token = s.new_token();
    *s.per_user.entry(auth.user_id.clone()).or_insert(0) += 1;
    s.pending.insert(
        token,
        PendingAllocation {
            five_tuple: t,
            transaction_id: msg.transaction_id,
            user_id: auth.user_id,
            username: auth.username,
            key: auth.key,
            integrity: auth.kind,
            lifetime_secs,
            deadline_ms: now_ms.saturating_add(s.cfg.relay_allocate_timeout_ms),
        },
    );
    s.pending_by_tuple.insert(t, token);
    s.push_control(Output::AllocateRelay { token, family, even_port, five_tuple: t });
}

/// Completes an Allocate once the driver has (or has not) bound a relay socket.
pub(crate) fn finish_allocate(
    s: &mut TurnServer,
    token: RelayToken,
    result: Result<SocketAddr, RelayError>,
    now_ms: u64,
) {
    let Some(p) = s.pending.remove(&token) else {
        // Unknown or abandoned request: give the socket back.
        if let Ok(relay_addr) = result {
            if !s.by_relay.contains_key(&relay_addr) {
                s.push_control(Output::ReleaseRelay { relay_addr });
            }
        }
        return;
    };
    s.pending_by_tuple.remove(&p.five_tuple);
    let auth = Authed { username: p.username, user_id: p.user_id, key: p.key, kind: p.integrity };
    let t = p.five_tuple;
    let fail = |s: &mut TurnServer, code: u16, auth: &Authed| {
        s.release_user(&auth.user_id);
        let mut b = MessageBuilder::new(method::ALLOCATE, Class::Error, p.transaction_id);
        b.error(code);
        sign_and_send(s, t, b, auth);
    };
    let relay_addr = match result {
        Err(RelayError::InsufficientCapacity) => return fail(s, 508, &auth),
        Err(RelayError::AddressFamilyNotSupported) => return fail(s, 440, &auth),
        // The driver handed out an address already in use: refuse without releasing it.
        Ok(addr) if s.by_relay.contains_key(&addr) => return fail(s, 508, &auth),
        Ok(addr) => addr,
    };
    if s.allocations.contains_key(&t) {
        s.push_control(Output::ReleaseRelay { relay_addr });
        return fail(s, 437, &auth);
    }
    let mut b = MessageBuilder::new(method::ALLOCATE, Class::Success, p.transaction_id);
    b.xor_addr(attr::XOR_RELAYED_ADDRESS, relay_addr)
        .attr_u32(attr::LIFETIME, p.lifetime_secs)
        .xor_addr(attr::XOR_MAPPED_ADDRESS, t.client);
    s.add_software(&mut b);
    b.integrity(auth.kind, &auth.key);
    let bytes = b.into_bytes();
    let alloc = Allocation {
        relay_addr,
        expires_ms: now_ms.saturating_add(u64::from(p.lifetime_secs) * 1000),
        user_id: auth.user_id,
        username: auth.username,
        key: auth.key,
        integrity: auth.kind,
        permissions: HashMap::new(),
        channels: HashMap::new(),
        channel_by_peer: HashMap::new(),
        bucket: TokenBucket::new(s.cfg.relay_kbps, s.cfg.relay_burst_ms, now_ms),
        allocate_response: CachedResponse { transaction_id: p.transaction_id, bytes: bytes.clone() },
    };
    s.allocations.insert(t, alloc);
    s.by_relay.insert(relay_addr, t);
    s.stats.allocations_created += 1;
    s.send_response(t, bytes);
}

fn refresh(s: &mut TurnServer, t: FiveTuple, msg: &Message<'_>, auth: &Authed, now_ms: u64) {
    if !owned_allocation(s, t, msg, auth, now_ms) {
        return;
    }
    let relay_family = s.allocations.get(&t).map(|a| AddressFamily::of(&a.relay_addr));
    match requested_family(msg) {
        Ok(Some(f)) if Some(f) != relay_family => return error(s, t, msg, auth, 443),
        Ok(_) => {}
        Err(code) => return error(s, t, msg, auth, code),
    }
    let lifetime = match msg.get(attr::LIFETIME).map(read_u32) {
        Some(None) => return error(s, t, msg, auth, 400),
        Some(Some(v)) => v.min(s.cfg.max_lifetime_secs),
        None => s.cfg.default_lifetime_secs.min(s.cfg.max_lifetime_secs),
    };
    if lifetime == 0 {
        s.remove_allocation(&t);
    } else if let Some(a) = s.allocations.get_mut(&t) {
        a.expires_ms = now_ms.saturating_add(u64::from(lifetime) * 1000);
        // The same user may rotate to freshly minted credentials.
        a.key = auth.key;
        a.integrity = auth.kind;
        a.username.clone_from(&auth.username);
    }
    let mut b = MessageBuilder::new(method::REFRESH, Class::Success, msg.transaction_id);
    b.attr_u32(attr::LIFETIME, lifetime);
    sign_and_send(s, t, b, auth);
}

/// Decode and vet one XOR-PEER-ADDRESS for an allocation relayed from `relay`.
fn vet_peer(s: &TurnServer, v: &[u8], tid: &[u8; 12], relay: SocketAddr) -> Result<SocketAddr, u16> {
    let peer = codec::decode_address(v, true, tid).ok_or(400u16)?;
    if AddressFamily::of(&peer) != AddressFamily::of(&relay) {
        return Err(443);
    }
    if peer_forbidden(peer.ip(), s.cfg.peers) {
        return Err(403);
    }
    Ok(peer)
}

fn create_permission(s: &mut TurnServer, t: FiveTuple, msg: &Message<'_>, auth: &Authed, now_ms: u64) {
    if !owned_allocation(s, t, msg, auth, now_ms) {
        return;
    }
    let Some(relay) = s.relay_addr_of(&t) else { return };
    let mut peers = Vec::new();
    for v in msg.get_all(attr::XOR_PEER_ADDRESS) {
        match vet_peer(s, v, &msg.transaction_id, relay) {
            Ok(p) => peers.push(p.ip()),
            Err(code) => return error(s, t, msg, auth, code),
        }
    }
    if peers.is_empty() {
        return error(s, t, msg, auth, 400);
    }
    peers.sort_unstable();
    peers.dedup();
    let max = s.cfg.max_permissions_per_allocation;
    let Some(a) = s.allocations.get_mut(&t) else { return };
    a.sweep(now_ms);
    let new = peers.iter().filter(|ip| !a.permissions.contains_key(ip)).count();
    if a.permissions.len() + new > max {
        return error(s, t, msg, auth, 508);
    }
    for ip in peers {
        a.permissions.insert(ip, now_ms.saturating_add(PERMISSION_LIFETIME_MS));
    }
    let b = MessageBuilder::new(method::CREATE_PERMISSION, Class::Success, msg.transaction_id);
    sign_and_send(s, t, b, auth);
}

fn channel_allowed(s: &TurnServer, n: u16) -> bool {
    if s.cfg.accept_rfc5766_channels {
        codec::is_rfc5766_channel(n)
    } else {
        codec::is_valid_channel(n)
    }
}

fn channel_bind(s: &mut TurnServer, t: FiveTuple, msg: &Message<'_>, auth: &Authed, now_ms: u64) {
    if !owned_allocation(s, t, msg, auth, now_ms) {
        return;
    }
    let Some(relay) = s.relay_addr_of(&t) else { return };
    let channel = match msg.get(attr::CHANNEL_NUMBER) {
        Some(v) if v.len() == 4 && channel_allowed(s, u16::from_be_bytes([v[0], v[1]])) => {
            u16::from_be_bytes([v[0], v[1]])
        }
        _ => return error(s, t, msg, auth, 400),
    };
    let Some(pv) = msg.get(attr::XOR_PEER_ADDRESS) else { return error(s, t, msg, auth, 400) };
    let peer = match vet_peer(s, pv, &msg.transaction_id, relay) {
        Ok(p) if p.port() != 0 => p,
        Ok(_) => return error(s, t, msg, auth, 400),
        Err(code) => return error(s, t, msg, auth, code),
    };
    let (max_ch, max_perm) = (s.cfg.max_channels_per_allocation, s.cfg.max_permissions_per_allocation);
    let Some(a) = s.allocations.get_mut(&t) else { return };
    a.sweep(now_ms);
    // Expired bindings stay reserved (quarantine, see `Allocation::sweep`) and block rebinding
    // to a different peer.
    let conflict = a.channels.get(&channel).is_some_and(|c| c.peer != peer)
        || a.channel_by_peer.get(&peer).is_some_and(|&c| c != channel);
    if conflict {
        return error(s, t, msg, auth, 400);
    }
    let is_new_channel = !a.channels.contains_key(&channel);
    let is_new_perm = !a.permissions.contains_key(&peer.ip());
    if (is_new_channel && a.channels.len() >= max_ch) || (is_new_perm && a.permissions.len() >= max_perm) {
        return error(s, t, msg, auth, 508);
    }
    a.channels.insert(channel, Channel { peer, expires_ms: now_ms.saturating_add(CHANNEL_LIFETIME_MS) });
    a.channel_by_peer.insert(peer, channel);
    a.permissions.insert(peer.ip(), now_ms.saturating_add(PERMISSION_LIFETIME_MS));
    let b = MessageBuilder::new(method::CHANNEL_BIND, Class::Success, msg.transaction_id);
    sign_and_send(s, t, b, auth);
}
