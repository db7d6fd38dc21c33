use super::*;

fn hello(id: &Identity, role: Role) -> Message {
    Message::Hello { role, identity: id.user_id(), advertise: None, agent: "test".into() }
}

/// Shuttle bytes between two links until both are quiet.
fn pump(a: &mut Link, b: &mut Link, now: u64) -> (Vec<LinkEvent>, Vec<LinkEvent>) {
    let (mut ea, mut eb) = (Vec::new(), Vec::new());
    loop {
        let mut moved = false;
        while let Some(bytes) = a.poll_transmit(now) {
            eb.extend(b.handle_bytes(&bytes, now).unwrap());
            moved = true;
        }
        while let Some(bytes) = b.poll_transmit(now) {
            ea.extend(a.handle_bytes(&bytes, now).unwrap());
            moved = true;
        }
        if !moved {
            return (ea, eb);
        }
    }
}

fn pair() -> (Link, Link, Identity, Identity) {
    let (ia, ib) = (Identity::from_seed([1; 32]), Identity::from_seed([2; 32]));
    let a = Link::initiator(&ia, hello(&ia, Role::Client), 0).unwrap();
    let b = Link::responder(&ib, hello(&ib, Role::Supernode), 0).unwrap();
    (a, b, ia, ib)
}

#[test]
fn handshake_hello_and_messages() {
    let (mut a, mut b, ia, ib) = pair();
    let (ea, eb) = pump(&mut a, &mut b, 0);
    assert!(
        matches!(&ea[..], [LinkEvent::Established { role: Role::Supernode, identity, .. }] if *identity == ib.user_id())
    );
    assert!(
        matches!(&eb[..], [LinkEvent::Established { role: Role::Client, identity, .. }] if *identity == ia.user_id())
    );
    a.send(&Message::Lookup { req_id: 1, name: "bob".into() }).unwrap();
    let (_, eb) = pump(&mut a, &mut b, 1);
    assert_eq!(eb, vec![LinkEvent::Message(Message::Lookup { req_id: 1, name: "bob".into() })]);
}

#[test]
fn hello_with_someone_elses_identity_is_refused() {
    let (ia, ib) = (Identity::from_seed([1; 32]), Identity::from_seed([2; 32]));
    let liar = Identity::from_seed([3; 32]);
    let mut a = Link::initiator(&ia, hello(&liar, Role::Client), 0).unwrap();
    let mut b = Link::responder(&ib, hello(&ib, Role::Supernode), 0).unwrap();
    let mut err = None;
    for _ in 0..4 {
        while let Some(bytes) = a.poll_transmit(0) {
            if let Err(e) = b.handle_bytes(&bytes, 0) {
                err = Some(e);
            }
        }
        while let Some(bytes) = b.poll_transmit(0) {
            let _ = a.handle_bytes(&bytes, 0);
        }
    }
    assert!(matches!(err, Some(LinkError::Protocol(m)) if m.contains("does not match")));
}

#[test]
fn garbage_and_oversized_frames_close_the_link() {
    let (_, mut b, _, _) = pair();
    assert!(matches!(b.handle_bytes(&[0, 0, 0, 5, 1, 2, 3, 4, 5], 0), Err(LinkError::Noise(_))));
    let (_, mut b, _, _) = pair();
    assert!(matches!(b.handle_bytes(&[0x7f, 0, 0, 0], 0), Err(LinkError::Frame(_))));
    // Tampered transport message after establishment.
    let (mut a, mut b, _, _) = pair();
    pump(&mut a, &mut b, 0);
    a.send(&Message::Ping { nonce: 1 }).unwrap();
    let mut bytes = a.poll_transmit(0).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    assert!(matches!(b.handle_bytes(&bytes, 0), Err(LinkError::Noise(_))));
}

/// A stranger that has not finished the handshake cannot make us buffer a big frame: its
/// announced length beyond the pre-authentication limit closes the link at once, before
/// the body arrives; an established peer may send frames up to the full limit.
#[test]
fn before_authentication_only_handshake_sized_frames_are_buffered() {
    let (_, mut b, _, _) = pair();
    let len = (supervox_proto::MAX_PREAUTH_FRAME_LEN as u32 + 1).to_be_bytes();
    assert!(matches!(b.handle_bytes(&len, 0), Err(LinkError::Frame(_))));
    let (mut a, mut b, _, _) = pair();
    pump(&mut a, &mut b, 0);
    let name = "x".repeat(20_000);
    a.send(&Message::Error { reason: name.clone() }).unwrap();
    let (_, eb) = pump(&mut a, &mut b, 1);
    assert_eq!(eb, vec![LinkEvent::Message(Message::Error { reason: name })]);
}

#[test]
fn a_link_kept_alive_by_its_transport_pings_rarely() {
    let (mut a, mut b, _, _) = pair();
    pump(&mut a, &mut b, 0);
    a.set_transport_keepalive();
    assert_eq!(a.poll_timeout(), TRANSPORT_KEEPALIVE_PING_MS);
    // Nothing to do at the ordinary keepalive or liveness times.
    a.handle_timeout(DEAD_AFTER_MS).unwrap();
    assert!(a.poll_transmit(DEAD_AFTER_MS).is_none(), "no ping at 25 s or 75 s");
    a.handle_timeout(TRANSPORT_KEEPALIVE_PING_MS).unwrap();
    assert!(a.poll_transmit(TRANSPORT_KEEPALIVE_PING_MS).is_some(), "the slow ping");
    // A peer whose process hangs is still given up, after three slow intervals.
    assert!(matches!(a.handle_timeout(3 * TRANSPORT_KEEPALIVE_PING_MS), Err(LinkError::Timeout(_))));
}

#[test]
fn keepalive_then_dead_peer() {
    let (mut a, mut b, _, _) = pair();
    pump(&mut a, &mut b, 0);
    assert_eq!(a.poll_timeout(), KEEPALIVE_MS);
    a.handle_timeout(KEEPALIVE_MS).unwrap();
    assert!(a.poll_transmit(KEEPALIVE_MS).is_some(), "a ping is queued when idle");
    // b answers nothing; a gives up after three intervals of silence.
    assert!(a.handle_timeout(DEAD_AFTER_MS - 1).is_ok());
    assert!(matches!(a.handle_timeout(DEAD_AFTER_MS), Err(LinkError::Timeout(_))));
}

#[test]
fn unfinished_handshake_times_out() {
    let (_, mut b, _, _) = pair();
    assert!(b.handle_timeout(HANDSHAKE_TIMEOUT_MS - 1).is_ok());
    assert!(b.handle_timeout(HANDSHAKE_TIMEOUT_MS).is_err());
}

#[test]
fn random_bytes_never_panic() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    for _ in 0..2000 {
        let (mut a, mut b, _, _) = pair();
        if rng.gen_bool(0.5) {
            pump(&mut a, &mut b, 0);
        }
        let len = rng.gen_range(0..300);
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        if bytes.len() >= 4 && rng.gen_bool(0.7) {
            bytes[..4].copy_from_slice(&((len - 4) as u32).to_be_bytes());
        }
        let _ = b.handle_bytes(&bytes, 0);
    }
}

mod low_order {
    //! A peer that offers a low-order X25519 key (ephemeral or static) makes
    //! every DH with it zero, a "secret" everyone knows: the link refuses.
    use super::*;
    use crate::noise::{EvilResolver, LOW_ORDER_POINTS};

    fn evil(
        point: [u8; 32],
        evil_static: bool,
        evil_ephemeral: bool,
        id: &Identity,
        initiator: bool,
    ) -> snow::HandshakeState {
        let params = LINK_NOISE_PARAMS.parse().unwrap();
        let b = snow::Builder::with_resolver(params, Box::new(EvilResolver::new(point, evil_static, evil_ephemeral)));
        let key = id.noise_private_key();
        let b = b.local_private_key(&key);
        if initiator { b.build_initiator() } else { b.build_responder() }.unwrap()
    }

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        encode_frame(body, &mut f);
        f
    }

    #[test]
    fn responder_refuses_a_low_order_ephemeral() {
        for point in LOW_ORDER_POINTS {
            let ib = Identity::from_seed([2; 32]);
            let mut b = Link::responder(&ib, hello(&ib, Role::Supernode), 0).unwrap();
            // XX message 1 is the bare ephemeral key.
            let err = b.handle_bytes(&frame(&point), 0).unwrap_err();
            assert!(matches!(err, LinkError::Noise(_)), "{err}");
            assert!(b.poll_transmit(0).is_none(), "no message 2 for {point:02x?}");
        }
    }

    #[test]
    fn initiator_refuses_a_low_order_ephemeral_in_message_2() {
        for point in LOW_ORDER_POINTS {
            let (ia, ib) = (Identity::from_seed([1; 32]), Identity::from_seed([2; 32]));
            let mut a = Link::initiator(&ia, hello(&ia, Role::Client), 0).unwrap();
            let mut m = evil(point, false, true, &ib, false);
            let m1 = a.poll_transmit(0).unwrap();
            let mut buf = [0u8; 1024];
            m.read_message(&m1[4..], &mut buf).unwrap();
            let n = m.write_message(&[], &mut buf).unwrap();
            let err = a.handle_bytes(&frame(&buf[..n]), 0).unwrap_err();
            assert!(matches!(err, LinkError::Noise(_)), "{err}");
            assert!(a.poll_transmit(0).is_none(), "no message 3 for {point:02x?}");
        }
    }

    #[test]
    fn responder_refuses_a_low_order_static_key() {
        for point in LOW_ORDER_POINTS {
            let (ia, ib) = (Identity::from_seed([1; 32]), Identity::from_seed([2; 32]));
            let mut m = evil(point, true, false, &ia, true);
            let mut b = Link::responder(&ib, hello(&ib, Role::Supernode), 0).unwrap();
            let mut buf = [0u8; 1024];
            let n = m.write_message(&[], &mut buf).unwrap();
            b.handle_bytes(&frame(&buf[..n]), 0).unwrap();
            let m2 = b.poll_transmit(0).unwrap();
            m.read_message(&m2[4..], &mut buf).unwrap();
            // Message 3 carries the low-order static key; `se` is zero.
            let n = m.write_message(&[], &mut buf).unwrap();
            let err = b.handle_bytes(&frame(&buf[..n]), 0).unwrap_err();
            assert!(matches!(err, LinkError::Noise(_)), "{err}");
            assert!(!b.is_open() && b.peer().is_none());
        }
    }
}
