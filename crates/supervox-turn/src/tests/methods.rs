//! One test per method and its error paths.

use super::*;
use crate::codec::{encode_channel_data, ChannelData};

fn lifetime(bytes: &[u8]) -> Option<u32> {
    let m = Message::parse(bytes).ok()?;
    let v = m.get(attr::LIFETIME)?;
    Some(u32::from_be_bytes(v.try_into().ok()?))
}

#[test]
fn binding_request_answered_without_auth() {
    let mut h = Harness::new();
    let c = TestClient::new("192.0.2.10:1000", b"u1");
    let req = MessageBuilder::new(method::BINDING, Class::Request, [9; 12]).into_bytes();
    let resp = h.client_send(&c.t, &req, T0).pop().expect("response");
    let m = Message::parse(&resp).expect("parse");
    assert_eq!(m.class, Class::Success);
    let mapped = crate::codec::decode_address(m.get(attr::XOR_MAPPED_ADDRESS).expect("xma"), true, &[9; 12]);
    assert_eq!(mapped, Some(c.t.client));
}

#[test]
fn allocate_challenge_then_success() {
    let mut h = Harness::new();
    let mut c = TestClient::new("192.0.2.10:1000", b"u1");
    // Unauthenticated: 401 with REALM and NONCE, no integrity.
    let req = MessageBuilder::new(method::ALLOCATE, Class::Request, [1; 12]).into_bytes();
    let resp = h.client_send(&c.t, &req, T0).pop().expect("401");
    assert_eq!(error_code(&resp), Some(401));
    let m = Message::parse(&resp).expect("parse");
    assert_eq!(m.get(attr::REALM), Some(REALM.as_bytes()));
    assert!(m.get(attr::NONCE).is_some() && !m.has_integrity());

    let resp = c.allocate(&mut h, T0);
    let relay = relayed(&resp);
    let m = Message::parse(&resp).expect("parse");
    assert!(m.verify_integrity(&c.key), "response signed with the client's key");
    assert_eq!(lifetime(&resp), Some(600));
    let mapped = crate::codec::decode_address(m.get(attr::XOR_MAPPED_ADDRESS).expect("xma"), true, &m.transaction_id);
    assert_eq!(mapped, Some(c.t.client));
    assert_eq!(h.s.relay_addr_of(&c.t), Some(relay));
    assert_eq!(h.s.allocation_count(), 1);
}

#[test]
fn allocate_retransmission_and_mismatch() {
    let mut h = Harness::new();
    let mut c = TestClient::new("192.0.2.10:1000", b"u1");
    relayed(&c.allocate(&mut h, T0));
    let tid = c.next_tid();
    let req = c.build(method::ALLOCATE, tid, |b| {
        b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
    });
    let _ = h.client_send(&c.t, &req, T0);
    // Same transaction id again: the cached success is replayed, no second allocation.
    let h_alloc_before = h.s.stats().allocations_created;
    let again = h.client_send(&c.t, &req, T0).pop().expect("resp");
    assert_eq!(error_code(&again), Some(437), "the second Allocate had a new tid -> 437, replay of it -> 437");
    assert_eq!(h.s.stats().allocations_created, h_alloc_before);
    assert_eq!(error_code(&c.allocate(&mut h, T0)), Some(437));

    // A genuine retransmission of the creating Allocate gets the cached success.
    let mut d = TestClient::new("192.0.2.11:1000", b"u2");
    d.nonce = Some(h.s.nonces.issue(d.t.client, T0).into_bytes());
    let tid = d.next_tid();
    let req = d.build(method::ALLOCATE, tid, |b| {
        b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
    });
    let first = h.client_send(&d.t, &req, T0).pop().expect("first");
    let second = h.client_send(&d.t, &req, T0 + 100).pop().expect("second");
    assert_eq!(first, second);
    relayed(&first);
}

#[test]
fn allocate_attribute_errors() {
    let mut h = Harness::new();
    let mut c = TestClient::new("192.0.2.10:1000", b"u1");
    type Case = (u16, Box<dyn Fn(&mut MessageBuilder)>);
    let cases: Vec<Case> = vec![
        (400, Box::new(|_b: &mut MessageBuilder| {})),
        (
            400,
            Box::new(|b: &mut MessageBuilder| {
                b.attr(attr::REQUESTED_TRANSPORT, &[17]);
            }),
        ),
        (
            442,
            Box::new(|b: &mut MessageBuilder| {
                b.attr(attr::REQUESTED_TRANSPORT, &[6, 0, 0, 0]);
            }),
        ),
        (
            420,
            Box::new(|b: &mut MessageBuilder| {
                b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]).attr(0x001A, &[]);
            }),
        ),
        (
            440,
            Box::new(|b: &mut MessageBuilder| {
                b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]).attr(attr::REQUESTED_ADDRESS_FAMILY, &[3, 0, 0, 0]);
            }),
        ),
        (
            508,
            Box::new(|b: &mut MessageBuilder| {
                b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]).attr(attr::EVEN_PORT, &[0x80]);
            }),
        ),
        (
            400,
            Box::new(|b: &mut MessageBuilder| {
                b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
                    .attr(attr::EVEN_PORT, &[0x80])
                    .attr(attr::RESERVATION_TOKEN, &[0; 8]);
            }),
        ),
        (
            400,
            Box::new(|b: &mut MessageBuilder| {
                b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]).attr(attr::LIFETIME, &[1, 2]);
            }),
        ),
    ];
    for (want, f) in cases {
        let resp = c.request(&mut h, method::ALLOCATE, T0, f);
        assert_eq!(error_code(&resp), Some(want));
        let m = Message::parse(&resp).expect("parse");
        assert!(m.verify_integrity(&c.key), "authenticated errors are signed");
        if want == 420 {
            assert_eq!(m.get(attr::UNKNOWN_ATTRIBUTES), Some(&[0x00, 0x1A][..]));
        }
    }
    assert_eq!(h.s.allocation_count(), 0);
    // Lifetime is clamped into [default, max]; IPv6 relays on request; EVEN-PORT without R is fine.
    let resp = c.request(&mut h, method::ALLOCATE, T0, |b| {
        b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]).attr_u32(attr::LIFETIME, 99_999).attr(attr::EVEN_PORT, &[0]);
    });
    assert_eq!(lifetime(&resp), Some(3600));
    let mut v6 = TestClient::new("192.0.2.10:1001", b"u1");
    let resp = v6.request(&mut h, method::ALLOCATE, T0, |b| {
        b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
            .attr_u32(attr::LIFETIME, 5)
            .attr(attr::REQUESTED_ADDRESS_FAMILY, &[2, 0, 0, 0]);
    });
    assert!(relayed(&resp).is_ipv6());
    assert_eq!(lifetime(&resp), Some(600));
}

#[test]
fn authentication_failures() {
    let mut h = Harness::with(|c| c.secrets.push(b"old-secret".to_vec()));
    let mut c = TestClient::new("192.0.2.10:1000", b"u1");
    c.nonce = Some(h.s.nonces.issue(c.t.client, T0).into_bytes());
    let ok_key = c.key;

    // Wrong password.
    c.key = long_term_key(&c.username, REALM, "nope");
    assert_eq!(error_code(&c.allocate(&mut h, T0)), Some(401));
    c.key = ok_key;
    // Wrong realm.
    let tid = c.next_tid();
    let mut b = MessageBuilder::new(method::ALLOCATE, Class::Request, tid);
    b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]).attr(attr::USERNAME, c.username.as_bytes());
    b.attr(attr::REALM, b"evil")
        .attr(attr::NONCE, c.nonce.as_ref().expect("nonce"))
        .integrity(IntegrityKind::Sha1, &c.key);
    assert_eq!(error_code(&h.client_send(&c.t, &b.into_bytes(), T0)[0]), Some(401));
    // Integrity without NONCE.
    let mut b = MessageBuilder::new(method::ALLOCATE, Class::Request, tid);
    b.attr(attr::USERNAME, c.username.as_bytes())
        .attr(attr::REALM, REALM.as_bytes())
        .integrity(IntegrityKind::Sha1, &c.key);
    assert_eq!(error_code(&h.client_send(&c.t, &b.into_bytes(), T0)[0]), Some(400));
    // Forged nonce -> 438 with a fresh one.
    c.nonce = Some(b"0000000000000000aaaaaaaaaaaaaaaaaaaaaaaa".to_vec());
    let tid = c.next_tid();
    let req = c.build(method::ALLOCATE, tid, |b| {
        b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
    });
    let resp = h.client_send(&c.t, &req, T0).pop().expect("resp");
    assert_eq!(error_code(&resp), Some(438));
    assert!(Message::parse(&resp).expect("parse").get(attr::NONCE).is_some());
    // Expired nonce -> 438 (nonce TTL 600 s).
    c.nonce = Some(h.s.nonces.issue(c.t.client, T0).into_bytes());
    let tid = c.next_tid();
    let req = c.build(method::ALLOCATE, tid, |b| {
        b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
    });
    assert_eq!(error_code(&h.client_send(&c.t, &req, T0 + 601_000)[0]), Some(438));
    // Expired credentials.
    let (u, p) = mint_credentials(SECRET, b"u1", T0 / 1000 - 100, 50);
    let mut e = TestClient::new("192.0.2.12:1000", b"u1");
    e.username = u.clone();
    e.key = long_term_key(&u, REALM, &p);
    assert_eq!(error_code(&e.allocate(&mut h, T0)), Some(401));
    // Username not in the REST format.
    e.username = "alice".into();
    e.key = long_term_key("alice", REALM, "pw");
    assert_eq!(error_code(&e.allocate(&mut h, T0)), Some(401));
    // Credentials minted with the previous secret still work during rotation; SHA-256 integrity.
    let (u, p) = mint_credentials(b"old-secret", b"u9", T0 / 1000, 60);
    let mut r = TestClient::new("192.0.2.13:1000", b"u9");
    r.username = u.clone();
    r.key = long_term_key(&u, REALM, &p);
    r.kind = IntegrityKind::Sha256;
    let resp = r.allocate(&mut h, T0);
    relayed(&resp);
    assert_eq!(Message::parse(&resp).expect("parse").integrity_kind(), Some(IntegrityKind::Sha256));
}

#[test]
fn refresh_lifetimes_delete_and_wrong_user() {
    let mut h = Harness::new();
    let mut c = TestClient::new("192.0.2.10:1000", b"u1");
    assert_eq!(error_code(&c.request(&mut h, method::REFRESH, T0, |_| {})), Some(437));
    let relay = relayed(&c.allocate(&mut h, T0));
    let resp = c.request(&mut h, method::REFRESH, T0, |b| {
        b.attr_u32(attr::LIFETIME, 7200);
    });
    assert_eq!(lifetime(&resp), Some(3600));
    // Another user on the same 5-tuple: 441.
    let mut other = TestClient::new("192.0.2.10:1000", b"u2");
    assert_eq!(error_code(&other.request(&mut h, method::REFRESH, T0, |_| {})), Some(441));
    // Family mismatch: 443.
    let resp = c.request(&mut h, method::REFRESH, T0, |b| {
        b.attr(attr::REQUESTED_ADDRESS_FAMILY, &[2, 0, 0, 0]);
    });
    assert_eq!(error_code(&resp), Some(443));
    // Refresh keeps it alive past the original 600 s.
    h.s.handle_timeout(T0 + 700_000);
    h.pump(T0 + 700_000);
    assert_eq!(h.s.allocation_count(), 1);
    // LIFETIME 0 deletes and releases the relay.
    let resp = c.request(&mut h, method::REFRESH, T0 + 700_000, |b| {
        b.attr_u32(attr::LIFETIME, 0);
    });
    assert_eq!(lifetime(&resp), Some(0));
    assert_eq!(h.s.allocation_count(), 0);
    assert_eq!(h.released, vec![relay]);
}

#[test]
fn create_permission_send_and_data_indications() {
    let mut h = Harness::new();
    let mut c = TestClient::new("192.0.2.10:1000", b"u1");
    let relay = relayed(&c.allocate(&mut h, T0));
    let peer = addr(PEER);
    // No permission yet: Send is dropped, peer data is dropped.
    let ind = c.send_indication(peer, b"hi");
    h.client_send(&c.t, &ind, T0);
    assert!(h.to_peer.is_empty());
    assert!(h.peer_send(relay, peer, b"yo", T0).is_empty());

    assert_eq!(error_code(&c.permit(&mut h, peer, T0)), None);
    let ind = c.send_indication(peer, b"hi");
    h.client_send(&c.t, &ind, T0);
    assert_eq!(h.to_peer, vec![(relay, peer, b"hi".to_vec())]);
    // Permission is per IP: another port of the same IP may answer.
    let other_port = addr("192.0.2.50:4001");
    let got = h.peer_send(relay, other_port, b"yo", T0);
    let m = Message::parse(&got[0]).expect("data indication");
    assert_eq!((m.method, m.class), (method::DATA, Class::Indication));
    assert_eq!(m.get(attr::DATA), Some(&b"yo"[..]));
    let from = crate::codec::decode_address(m.get(attr::XOR_PEER_ADDRESS).expect("peer"), true, &m.transaction_id);
    assert_eq!(from, Some(other_port));
    // Unknown peer IP is still filtered.
    assert!(h.peer_send(relay, addr("192.0.2.99:4000"), b"x", T0).is_empty());

    // Error paths.
    assert_eq!(error_code(&c.request(&mut h, method::CREATE_PERMISSION, T0, |_| {})), Some(400));
    for (bad, code) in [("127.0.0.1:1", 403), ("224.0.0.1:1", 403), ("0.0.0.0:1", 403), ("[2001:db8::2]:1", 443)] {
        assert_eq!(error_code(&c.permit(&mut h, addr(bad), T0)), Some(code), "{bad}");
    }
    let mut stranger = TestClient::new("192.0.2.77:1000", b"u1");
    assert_eq!(error_code(&stranger.permit(&mut h, peer, T0)), Some(437));
}

#[test]
fn permission_quota_is_all_or_nothing() {
    let mut h = Harness::with(|c| c.max_permissions_per_allocation = 2);
    let mut c = TestClient::new("192.0.2.10:1000", b"u1");
    relayed(&c.allocate(&mut h, T0));
    assert_eq!(error_code(&c.permit(&mut h, addr("192.0.2.1:1"), T0)), None);
    let resp = c.request(&mut h, method::CREATE_PERMISSION, T0, |b| {
        b.xor_addr(attr::XOR_PEER_ADDRESS, addr("192.0.2.2:1")).xor_addr(attr::XOR_PEER_ADDRESS, addr("192.0.2.3:1"));
    });
    assert_eq!(error_code(&resp), Some(508));
    assert_eq!(error_code(&c.permit(&mut h, addr("192.0.2.2:1"), T0)), None);
    assert_eq!(error_code(&c.permit(&mut h, addr("192.0.2.1:9"), T0)), None, "refreshing an existing IP is free");
}

#[test]
fn channel_bind_and_channel_data() {
    let mut h = Harness::new();
    let mut c = TestClient::new("192.0.2.10:1000", b"u1");
    let relay = relayed(&c.allocate(&mut h, T0));
    let peer = addr(PEER);
    for bad in [0x3FFF, 0x8000, 0xFFFF] {
        assert_eq!(error_code(&c.bind(&mut h, bad, peer, T0)), Some(400), "{bad:#x}");
    }
    assert_eq!(error_code(&c.bind(&mut h, 0x4000, addr("127.0.0.1:5"), T0)), Some(403));
    assert_eq!(error_code(&c.bind(&mut h, 0x4000, addr("192.0.2.50:0"), T0)), Some(400));
    assert_eq!(error_code(&c.bind(&mut h, 0x4000, peer, T0)), None);
    assert_eq!(error_code(&c.bind(&mut h, 0x4000, peer, T0)), None, "refresh");
    assert_eq!(error_code(&c.bind(&mut h, 0x4000, addr("192.0.2.51:1"), T0)), Some(400), "channel taken");
    assert_eq!(error_code(&c.bind(&mut h, 0x4001, peer, T0)), Some(400), "peer taken");
    let missing = c.request(&mut h, method::CHANNEL_BIND, T0, |b| {
        b.attr(attr::CHANNEL_NUMBER, &[0x40, 0x02, 0, 0]);
    });
    assert_eq!(error_code(&missing), Some(400));

    // Client -> peer via ChannelData (the bind installed the permission).
    let cd = encode_channel_data(0x4000, b"voice", false).expect("cd");
    h.client_send(&c.t, &cd, T0);
    assert_eq!(h.to_peer.last(), Some(&(relay, peer, b"voice".to_vec())));
    // Unbound channel: dropped.
    h.to_peer.clear();
    h.client_send(&c.t, &encode_channel_data(0x4005, b"x", false).expect("cd"), T0);
    assert!(h.to_peer.is_empty());
    // Peer -> client arrives as ChannelData (unpadded over UDP).
    let got = h.peer_send(relay, peer, b"abcde", T0);
    assert_eq!(got, vec![encode_channel_data(0x4000, b"abcde", false).expect("cd")]);
}

#[test]
fn zero_copy_data_path_matches_the_queued_one() {
    let mut h = Harness::new();
    let mut c = TestClient::new("192.0.2.10:1000", b"u1");
    let relay = relayed(&c.allocate(&mut h, T0));
    let (peer, other) = (addr(PEER), addr("192.0.2.60:7"));
    assert_eq!(error_code(&c.bind(&mut h, 0x4000, peer, T0)), None);
    assert_eq!(error_code(&c.permit(&mut h, other, T0)), None);
    let (client, server) = (c.t.client, c.t.server);

    // Client -> peer: same route and counters as handle_client, nothing queued.
    let cd = encode_channel_data(0x4000, b"voice", false).expect("cd");
    let before = h.s.stats().packets_to_peer;
    assert_eq!(h.s.route_client_channel_data(client, server, &cd, T0), Some((relay, peer, &b"voice"[..])));
    assert_eq!(h.s.stats().packets_to_peer, before + 1);
    assert!(h.s.poll_output().is_none());
    let unbound = encode_channel_data(0x4005, b"x", false).expect("cd");
    assert_eq!(h.s.route_client_channel_data(client, server, &unbound, T0), None);
    assert_eq!(h.s.route_client_channel_data(client, server, &[0x40, 0, 0, 9, 1], T0), None, "truncated");
    let stranger = addr("192.0.2.11:1000");
    assert_eq!(h.s.route_client_channel_data(stranger, server, &cd, T0), None, "no allocation");

    // Peer -> client in place: the header lands in the headroom.
    let mut buf = [0u8; 64];
    buf[4..9].copy_from_slice(b"abcde");
    assert_eq!(h.s.route_peer_in_place(relay, peer, &mut buf, 5, T0), Some((client, server)));
    assert_eq!(buf[..9], encode_channel_data(0x4000, b"abcde", false).expect("cd")[..]);
    assert!(h.s.poll_output().is_none());
    // A permitted peer without a channel: a Data indication is queued instead.
    buf[4..9].copy_from_slice(b"fghij");
    assert_eq!(h.s.route_peer_in_place(relay, other, &mut buf, 5, T0), None);
    assert!(matches!(h.s.poll_output(), Some(crate::Output::ToClient { .. })));
    // No permission, unknown relay, and a length beyond the buffer: dropped.
    assert_eq!(h.s.route_peer_in_place(relay, addr("192.0.2.99:1"), &mut buf, 5, T0), None);
    assert_eq!(h.s.route_peer_in_place(addr("198.51.100.9:1"), peer, &mut buf, 5, T0), None);
    assert_eq!(h.s.route_peer_in_place(relay, peer, &mut buf, 61, T0), None);
    assert!(h.s.poll_output().is_none());
}

#[test]
fn strict_rfc8656_channel_range() {
    let mut h = Harness::with(|c| c.accept_rfc5766_channels = false);
    let mut c = TestClient::new("192.0.2.10:1000", b"u1");
    relayed(&c.allocate(&mut h, T0));
    assert_eq!(error_code(&c.bind(&mut h, 0x5000, addr(PEER), T0)), Some(400));
    assert_eq!(error_code(&c.bind(&mut h, 0x4FFF, addr(PEER), T0)), None);
    let mut lax = Harness::new();
    let mut d = TestClient::new("192.0.2.10:1000", b"u1");
    relayed(&d.allocate(&mut lax, T0));
    assert_eq!(error_code(&d.bind(&mut lax, 0x7FFF, addr(PEER), T0)), None);
}

#[test]
fn channel_capacity() {
    let mut h = Harness::with(|c| c.max_channels_per_allocation = 1);
    let mut c = TestClient::new("192.0.2.10:1000", b"u1");
    relayed(&c.allocate(&mut h, T0));
    assert_eq!(error_code(&c.bind(&mut h, 0x4000, addr("192.0.2.1:1"), T0)), None);
    assert_eq!(error_code(&c.bind(&mut h, 0x4001, addr("192.0.2.2:1"), T0)), Some(508));
}

#[test]
fn tcp_channel_data_is_padded_and_close_deletes() {
    let mut h = Harness::new();
    let mut c = TestClient::on(Transport::Tcp, "192.0.2.10:1000", b"u1");
    let relay = relayed(&c.allocate(&mut h, T0));
    let peer = addr(PEER);
    assert_eq!(error_code(&c.bind(&mut h, 0x4ABC, peer, T0)), None);
    let got = h.peer_send(relay, peer, b"abcde", T0);
    assert_eq!(got[0].len(), 12);
    assert_eq!(ChannelData::parse(&got[0]).map(|c| c.data), Some(&b"abcde"[..]));
    // A padded frame from the client parses the same.
    h.client_send(&c.t, &encode_channel_data(0x4ABC, b"xyz", true).expect("cd"), T0);
    assert_eq!(h.to_peer.last(), Some(&(relay, peer, b"xyz".to_vec())));
    h.s.handle_client_closed(c.t.transport, c.t.client, c.t.server);
    h.pump(T0);
    assert_eq!(h.s.allocation_count(), 0);
    assert_eq!(h.released, vec![relay]);
}

#[test]
fn expiry_of_permissions_channels_and_allocations() {
    let mut h = Harness::new();
    let mut c = TestClient::new("192.0.2.10:1000", b"u1");
    let relay = relayed(&c.allocate(&mut h, T0));
    let (p1, p2) = (addr("192.0.2.1:1"), addr("192.0.2.2:2"));
    let long = c.request(&mut h, method::REFRESH, T0, |b| {
        b.attr_u32(attr::LIFETIME, 3600);
    });
    assert_eq!(lifetime(&long), Some(3600));
    assert_eq!(error_code(&c.permit(&mut h, p1, T0)), None);
    assert_eq!(error_code(&c.bind(&mut h, 0x4000, p2, T0)), None);
    let t = T0 + 299_000;
    assert_eq!(h.peer_send(relay, p1, b"a", t).len(), 1);
    // Permissions last 300 s.
    let t = T0 + 300_000;
    h.s.handle_timeout(t);
    assert!(h.peer_send(relay, p1, b"a", t).is_empty());
    assert!(h.peer_send(relay, p2, b"a", t).is_empty(), "channel without permission relays nothing");
    // Refreshing the channel refreshes its permission.
    assert_eq!(error_code(&c.bind(&mut h, 0x4000, p2, t)), None);
    assert_eq!(h.peer_send(relay, p2, b"a", t).len(), 1);
    // Channel binding lasts 600 s from its last refresh; the permission is refreshed separately.
    let t2 = t + 590_000;
    assert_eq!(error_code(&c.permit(&mut h, p2, t2)), None);
    assert_eq!(error_code(&c.request(&mut h, method::REFRESH, t2, |_| {})), None);
    let t3 = t + 600_000;
    let got = h.peer_send(relay, p2, b"a", t3);
    assert_eq!(
        Message::parse(&got[0]).map(|m| m.method).ok(),
        Some(method::DATA),
        "expired channel -> Data indication"
    );
    // During quarantine the channel cannot be rebound to another peer, but can to the same one.
    assert_eq!(error_code(&c.bind(&mut h, 0x4000, p1, t3)), Some(400));
    assert_eq!(error_code(&c.bind(&mut h, 0x4000, p2, t3)), None);
    // Allocation lifetime (600 s from the last refresh at t2) ends it.
    let end = t2 + 600_000;
    h.s.handle_timeout(end);
    h.pump(end);
    assert_eq!(h.s.allocation_count(), 0);
    assert_eq!(h.released, vec![relay]);
    assert!(h.peer_send(relay, p2, b"a", end).is_empty());
}

#[test]
fn tls_is_a_stream_transport_of_its_own_five_tuple() {
    let mut h = Harness::new();
    let mut tcp = TestClient::on(Transport::Tcp, "192.0.2.10:1000", b"u1");
    let mut tls = TestClient::on(Transport::Tls, "192.0.2.10:1000", b"u2");
    let r_tcp = relayed(&tcp.allocate(&mut h, T0));
    let r_tls = relayed(&tls.allocate(&mut h, T0));
    assert_ne!(r_tcp, r_tls);
    let peer = addr(PEER);
    assert_eq!(error_code(&tls.bind(&mut h, 0x4ABC, peer, T0)), None);
    // ChannelData towards a TLS client is padded like TCP's.
    let got = h.peer_send(r_tls, peer, b"abcde", T0);
    assert_eq!(got[0].len(), 12);
    // Closing the TLS connection ends only its own allocation.
    h.s.handle_client_closed(tls.t.transport, tls.t.client, tls.t.server);
    h.pump(T0);
    assert_eq!(h.s.allocation_count(), 1);
    assert_eq!(h.released, vec![r_tls]);
}
