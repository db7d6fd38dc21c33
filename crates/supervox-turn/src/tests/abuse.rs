//! Quotas, floods, malformed input and driver failures.

use rand::{Rng, SeedableRng};

use super::*;
use crate::codec::encode_channel_data;

#[test]
fn random_bytes_never_panic() {
    let mut h = Harness::with(|c| c.peers.allow_loopback = true);
    let mut c = TestClient::new("192.0.2.10:1000", b"u1");
    let relay = relayed(&c.allocate(&mut h, T0));
    assert_eq!(error_code(&c.bind(&mut h, 0x4000, addr(PEER), T0)), None);
    let valid = c.build(method::REFRESH, [1; 12], |b| {
        b.attr_u32(attr::LIFETIME, 600).xor_addr(attr::XOR_PEER_ADDRESS, addr(PEER));
    });
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    for i in 0..100_000u32 {
        let bytes: Vec<u8> = match i % 4 {
            // Pure noise, biased towards STUN/ChannelData first bytes.
            0 | 1 => {
                let n = rng.gen_range(0..120);
                let mut v: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
                if let Some(first) = v.first_mut() {
                    *first &= if i % 2 == 0 { 0x3F } else { 0x7F };
                }
                if v.len() >= 8 && i % 3 == 0 {
                    v[4..8].copy_from_slice(&crate::codec::MAGIC_COOKIE.to_be_bytes());
                    let len = (v.len() as u16).wrapping_sub(20);
                    v[2..4].copy_from_slice(&len.to_be_bytes());
                }
                v
            }
            // Mutations of a valid signed request.
            _ => {
                let mut v = valid.clone();
                for _ in 0..rng.gen_range(1..4) {
                    let idx = rng.gen_range(0..v.len());
                    v[idx] = rng.gen();
                }
                if rng.gen_bool(0.2) {
                    v.truncate(rng.gen_range(0..v.len()));
                }
                v
            }
        };
        h.s.handle_client(c.t.transport, c.t.client, c.t.server, &bytes, T0 + u64::from(i));
        h.s.handle_peer(relay, addr(PEER), &bytes, T0 + u64::from(i));
        while h.s.poll_output().is_some() {}
    }
    // The allocation survived the noise.
    assert_eq!(h.s.relay_addr_of(&c.t), Some(relay));
}

#[test]
fn allocation_flood_hits_quotas_without_disturbing_existing_flow() {
    let mut h = Harness::with(|c| {
        c.max_allocations = 20;
        c.max_allocations_per_user = 3;
        c.relay_kbps = 0;
        c.max_unauthenticated_responses_per_sec = 1_000_000;
    });
    let mut victim = TestClient::new("192.0.2.10:1000", b"a1");
    let relay = relayed(&victim.allocate(&mut h, T0));
    let peer = addr(PEER);
    assert_eq!(error_code(&victim.bind(&mut h, 0x4000, peer, T0)), None);

    let mut codes = std::collections::BTreeMap::<Option<u16>, u32>::new();
    for i in 0..200u32 {
        let now = T0 + u64::from(i);
        // One attacker user id from many ports, then many user ids: 486 first, 508 later.
        let uid = [0xEE, (i / 10) as u8];
        let mut a = TestClient::new(&format!("198.18.0.1:{}", 2000 + i), &uid);
        *codes.entry(error_code(&a.allocate(&mut h, now))).or_default() += 1;
        // Unauthenticated and malformed junk interleaved.
        let junk = MessageBuilder::new(method::ALLOCATE, Class::Request, [i as u8; 12]).into_bytes();
        h.client_send(&a.t, &junk, now);
        h.client_send(&a.t, &[0x00, 0x03, 0x00, 0x04, 0x21, 0x12], now);
        // The victim's media keeps flowing both ways.
        h.to_peer.clear();
        h.client_send(&victim.t, &encode_channel_data(0x4000, b"rtp", false).expect("cd"), now);
        assert_eq!(h.to_peer, vec![(relay, peer, b"rtp".to_vec())], "iteration {i}");
        let got = h.peer_send(relay, peer, b"rtp", now);
        assert_eq!(got.len(), 1, "iteration {i}");
    }
    assert_eq!(codes.get(&None), Some(&19), "{codes:?}");
    assert!(codes.get(&Some(486)).copied().unwrap_or(0) > 0, "{codes:?}");
    assert!(codes.get(&Some(508)).copied().unwrap_or(0) > 0, "{codes:?}");
    assert_eq!(h.s.allocation_count(), 20);
}

#[test]
fn unauthenticated_responses_are_rate_limited() {
    let mut h = Harness::with(|c| c.max_unauthenticated_responses_per_sec = 10);
    let c = TestClient::new("192.0.2.10:1000", b"u1");
    let mut answered = 0;
    for i in 0..100u8 {
        let req = MessageBuilder::new(method::ALLOCATE, Class::Request, [i; 12]).into_bytes();
        answered += h.client_send(&c.t, &req, T0).len();
    }
    assert_eq!(answered, 10);
    assert_eq!(h.s.stats().dropped_rate_limited, 90);
    // Refills with time.
    let req = MessageBuilder::new(method::ALLOCATE, Class::Request, [0; 12]).into_bytes();
    assert_eq!(h.client_send(&c.t, &req, T0 + 1_000).len(), 1);
}

#[test]
fn malformed_requests_get_400_and_others_are_dropped() {
    let mut h = Harness::new();
    let c = TestClient::new("192.0.2.10:1000", b"u1");
    // Attribute length overruns the message.
    let mut req = MessageBuilder::new(method::ALLOCATE, Class::Request, [1; 12]).into_bytes();
    req.extend_from_slice(&[0x00, 0x19, 0x00, 0x08, 17, 0, 0, 0]);
    req[3] = 8;
    assert_eq!(error_code(&h.client_send(&c.t, &req, T0)[0]), Some(400));
    // Unknown method.
    let req = MessageBuilder::new(0x0FF, Class::Request, [2; 12]).into_bytes();
    assert_eq!(error_code(&h.client_send(&c.t, &req, T0)[0]), Some(400));
    // Responses and bad cookies are silently dropped.
    let resp = MessageBuilder::new(method::ALLOCATE, Class::Success, [3; 12]).into_bytes();
    assert!(h.client_send(&c.t, &resp, T0).is_empty());
    let mut bad_cookie = MessageBuilder::new(method::BINDING, Class::Request, [3; 12]).into_bytes();
    bad_cookie[4] = 0;
    assert!(h.client_send(&c.t, &bad_cookie, T0).is_empty());
    assert!(h.client_send(&c.t, &[0xFF; 40], T0).is_empty());
    assert!(h.s.stats().dropped_malformed >= 3);
}

#[test]
fn driver_relay_failures_map_to_error_codes() {
    let mut h = Harness::new();
    let mut c = TestClient::new("192.0.2.10:1000", b"u1");
    h.relay_error = Some(RelayError::InsufficientCapacity);
    assert_eq!(error_code(&c.allocate(&mut h, T0)), Some(508));
    h.relay_error = Some(RelayError::AddressFamilyNotSupported);
    assert_eq!(error_code(&c.allocate(&mut h, T0)), Some(440));
    h.relay_error = None;
    relayed(&c.allocate(&mut h, T0));
    assert_eq!(h.s.per_user.get("7531"), Some(&1), "failed relay binds gave their quota back");
}

#[test]
fn unanswered_relay_request_times_out_and_late_answer_is_released() {
    let mut h = Harness::with(|c| c.max_allocations_per_user = 1);
    let mut c = TestClient::new("192.0.2.10:1000", b"u1");
    h.answer_relays = false;
    c.nonce = Some(h.s.nonces.issue(c.t.client, T0).into_bytes());
    let tid = c.next_tid();
    let req = c.build(method::ALLOCATE, tid, |b| {
        b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
    });
    assert!(h.client_send(&c.t, &req, T0).is_empty(), "answer waits for the relay socket");
    assert!(h.client_send(&c.t, &req, T0).is_empty(), "retransmission is absorbed");
    let mut d = TestClient::new("192.0.2.10:1001", b"u1");
    assert_eq!(error_code(&d.allocate(&mut h, T0)), Some(486), "pending counts toward the quota");
    h.s.handle_timeout(T0 + 6_000);
    let token = h.pending_tokens[0];
    h.s.relay_allocated(token, Ok(addr("198.51.100.1:40000")), T0 + 6_000);
    h.pump(T0 + 6_000);
    assert_eq!(h.released, vec![addr("198.51.100.1:40000")]);
    h.answer_relays = true;
    relayed(&d.allocate(&mut h, T0 + 6_000));
}

#[test]
fn bandwidth_quota_drops_excess_only_for_that_allocation() {
    // 80 kbit/s = 10 kB/s, burst floored at 64 KiB.
    let mut h = Harness::with(|c| c.relay_kbps = 80);
    let mut a = TestClient::new("192.0.2.10:1000", b"u1");
    let mut b = TestClient::new("192.0.2.11:1000", b"u2");
    let ra = relayed(&a.allocate(&mut h, T0));
    let rb = relayed(&b.allocate(&mut h, T0));
    let peer = addr(PEER);
    assert_eq!(error_code(&a.bind(&mut h, 0x4000, peer, T0)), None);
    assert_eq!(error_code(&b.bind(&mut h, 0x4000, peer, T0)), None);
    let big = vec![0u8; 1000];
    let mut delivered = 0;
    for _ in 0..100 {
        delivered += h.peer_send(ra, peer, &big, T0).len();
    }
    assert_eq!(delivered, 65, "burst of 64 KiB then drops");
    assert_eq!(h.s.stats().dropped_bandwidth, 35);
    assert_eq!(h.peer_send(rb, peer, &big, T0).len(), 1, "other allocation unaffected");
    assert_eq!(h.peer_send(ra, peer, &big, T0 + 200).len(), 1, "refilled after 200 ms");
}

/// A relay is not a proxy into the operator's network: permissions toward private, CGNAT
/// and unique-local addresses are refused unless the operator allows them, and data toward
/// the relay host's own address reaches only its relay ports (relay-to-relay), never the
/// host's other services. (No datagram is sent anywhere: the harness records outputs.)
#[test]
fn a_relay_refuses_private_peers_and_the_hosts_own_services() {
    let own = addr("198.51.100.1:0").ip();
    let mut h = Harness::with(|c| c.own_ips = vec![own]);
    let mut a = TestClient::new("192.0.2.10:1000", b"a1");
    let mut b = TestClient::new("192.0.2.11:1000", b"b1");
    let relay_a = relayed(&a.allocate(&mut h, T0));
    let relay_b = relayed(&b.allocate(&mut h, T0));
    for private in ["10.0.0.1:80", "172.16.5.5:80", "192.168.1.1:80", "100.64.0.1:80", "100.127.1.1:80"] {
        assert_eq!(error_code(&a.permit(&mut h, addr(private), T0)), Some(403), "{private}");
        assert_eq!(error_code(&a.bind(&mut h, 0x4001, addr(private), T0)), Some(403), "{private}");
    }
    // Data to a private address (no permission can exist) goes nowhere.
    h.to_peer.clear();
    let ind = a.send_indication(addr("10.0.0.1:80"), b"GET /");
    h.client_send(&a.t, &ind, T0);
    assert!(h.to_peer.is_empty());
    // The host's own address: a permission is allowed (the peer's relay lives there)...
    assert_eq!(error_code(&a.permit(&mut h, relay_b, T0)), None);
    h.to_peer.clear();
    let ind = a.send_indication(relay_b, b"voice");
    h.client_send(&a.t, &ind, T0);
    assert_eq!(h.to_peer, vec![(relay_a, relay_b, b"voice".to_vec())], "relay-to-relay works");
    // ...but its other ports (ssh, metrics, the signalling port) are never reached.
    h.to_peer.clear();
    let dropped = h.s.stats().dropped_no_route;
    for port in [22, 9100, 7000, relay_b.port() + 1] {
        let ind = a.send_indication(SocketAddr::new(own, port), b"hello");
        h.client_send(&a.t, &ind, T0);
    }
    assert!(h.to_peer.is_empty(), "{:?}", h.to_peer);
    assert_eq!(h.s.stats().dropped_no_route, dropped + 4);

    // An operator inside one organisation allows private peers.
    let mut h = Harness::with(|c| c.peers.allow_private = true);
    let mut a = TestClient::new("192.0.2.10:1000", b"a1");
    relayed(&a.allocate(&mut h, T0));
    for private in ["10.0.0.1:80", "192.168.1.1:80", "100.64.0.1:80"] {
        assert_eq!(error_code(&a.permit(&mut h, addr(private), T0)), None, "{private}");
    }
    assert_eq!(error_code(&a.permit(&mut h, addr("169.254.169.254:80"), T0)), Some(403), "never metadata");
}
