//! The supernode Binding server: success, errors, CHANGE-REQUEST dial-back, legacy clients.

use std::net::SocketAddr;

use supervox_stun::codec::{attr, Class, Message, CHANGE_IP, CHANGE_PORT};
use supervox_stun::{handle_binding, is_stun, BindingServer, DialBack, Reply, StunError, MAX_PADDING};

const TID: [u8; 12] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];

fn a(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn request(attrs: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut m = Message::new(Class::Request, 1, TID);
    for (k, v) in attrs {
        m.add(*k, v.clone());
    }
    m.encode(None, true)
}

fn direct(r: Result<Option<Reply>, StunError>) -> Message {
    match r {
        Ok(Some(Reply::Direct { response, .. })) => Message::parse(&response).expect("our reply parses"),
        other => panic!("expected a direct reply, got {other:?}"),
    }
}

#[test]
fn binding_success_has_all_addresses() {
    let (client, local, other) = (a("203.0.113.7:40000"), a("198.51.100.1:3478"), a("198.51.100.2:3478"));
    let m = direct(handle_binding(&request(&[]), client, local, Some(other)));
    assert_eq!((m.class, m.method, m.transaction_id), (Class::Success, 1, TID));
    assert_eq!(m.address(attr::XOR_MAPPED_ADDRESS, true).unwrap(), Some(client));
    assert_eq!(m.address(attr::MAPPED_ADDRESS, false).unwrap(), Some(client));
    assert_eq!(m.address(attr::RESPONSE_ORIGIN, false).unwrap(), Some(local));
    assert_eq!(m.address(attr::OTHER_ADDRESS, false).unwrap(), Some(other));
    assert!(m.get(attr::SOFTWARE).is_some_and(|s| s.starts_with(b"supervox")));
    assert_eq!(m.attributes.last().map(|x| x.kind), Some(attr::FINGERPRINT));
    // No OTHER-ADDRESS without a peer; IPv6 and v4-mapped clients.
    let m = direct(handle_binding(&request(&[]), a("[2001:db8::1]:5"), local, None));
    assert_eq!(m.mapped_address().unwrap(), Some(a("[2001:db8::1]:5")));
    assert_eq!(m.get(attr::OTHER_ADDRESS), None);
    let m = direct(handle_binding(&request(&[]), a("[::ffff:203.0.113.7]:9"), local, None));
    assert_eq!(m.mapped_address().unwrap(), Some(a("203.0.113.7:9")));
}

#[test]
fn malformed_binding_request_gets_400() {
    let mut bytes = request(&[(attr::SOFTWARE, b"hello".to_vec())]);
    bytes.truncate(bytes.len() - 4); // length field now disagrees with the datagram
    let m = direct(handle_binding(&bytes, a("1.2.3.4:5"), a("5.6.7.8:9"), None));
    assert_eq!((m.class, m.transaction_id), (Class::Error, TID));
    assert_eq!(m.error_code().map(|e| e.0), Some(400));
    // A CHANGE-REQUEST of the wrong size.
    let m =
        direct(handle_binding(&request(&[(attr::CHANGE_REQUEST, vec![0; 8])]), a("1.2.3.4:5"), a("5.6.7.8:9"), None));
    assert_eq!(m.error_code().map(|e| e.0), Some(400));
}

#[test]
fn unknown_comprehension_required_attribute_gets_420() {
    let bytes = request(&[(0x7777, vec![1, 2]), (0x0028, vec![0; 8]), (0xC001, vec![9])]);
    let m = direct(handle_binding(&bytes, a("1.2.3.4:5"), a("5.6.7.8:9"), None));
    assert_eq!(m.error_code().map(|e| e.0), Some(420));
    // 0x7777 and 0x0028 are listed; the comprehension-optional 0xC001 is not.
    assert_eq!(m.get(attr::UNKNOWN_ATTRIBUTES), Some(&[0x77, 0x77, 0x00, 0x28][..]));
    // PADDING is understood and mirrored.
    let m = direct(handle_binding(&request(&[(attr::PADDING, vec![0; 700])]), a("1.2.3.4:5"), a("5.6.7.8:9"), None));
    assert_eq!(m.get(attr::PADDING).map(|p| p.len()), Some(700));
}

#[test]
fn change_request_without_peer_gets_420() {
    let bytes = request(&[(attr::CHANGE_REQUEST, (CHANGE_IP | CHANGE_PORT).to_be_bytes().to_vec())]);
    let m = direct(handle_binding(&bytes, a("1.2.3.4:5"), a("5.6.7.8:9"), None));
    assert_eq!(m.error_code().map(|e| e.0), Some(420));
    assert_eq!(m.get(attr::UNKNOWN_ATTRIBUTES), Some(&[0x00, 0x03][..]));
}

#[test]
fn change_ip_is_delegated_to_the_peer() {
    let (client, sn1, sn2) = (a("203.0.113.7:40000"), a("198.51.100.1:3478"), a("198.51.100.2:3478"));
    let bytes = request(&[(attr::CHANGE_REQUEST, (CHANGE_IP | CHANGE_PORT).to_be_bytes().to_vec())]);
    let reply = handle_binding(&bytes, client, sn1, Some(sn2)).unwrap().unwrap();
    let dial_back = DialBack { transaction_id: TID, mapped: client, to: client, padding: 0 };
    assert_eq!(reply, Reply::ViaPeer { peer: sn2, dial_back });
    // SN2 answers from its own address.
    let m = Message::parse(&dial_back.response(sn2).unwrap()).unwrap();
    assert_eq!((m.class, m.transaction_id), (Class::Success, TID));
    assert_eq!(m.mapped_address().unwrap(), Some(client));
    assert_eq!(m.address(attr::RESPONSE_ORIGIN, false).unwrap(), Some(sn2));
    // Refused destinations.
    for to in ["0.0.0.0:5", "224.0.0.1:5", "1.2.3.4:0", "255.255.255.255:9", "[::]:5"] {
        let d = DialBack { transaction_id: TID, mapped: a(to), to: a(to), padding: 0 };
        assert!(matches!(d.response(sn2), Err(StunError::BadDialBack(_))), "{to}");
    }
}

#[test]
fn response_port_redirects_to_the_same_ip() {
    let (client, sn1, sn2) = (a("203.0.113.7:40000"), a("198.51.100.1:3478"), a("198.51.100.2:3478"));
    let bytes = request(&[(attr::RESPONSE_PORT, vec![0x1f, 0x90, 0, 0])]);
    let Ok(Some(Reply::Direct { to, response })) = handle_binding(&bytes, client, sn1, None) else { panic!() };
    assert_eq!(to, a("203.0.113.7:8080"));
    assert_eq!(Message::parse(&response).unwrap().mapped_address().unwrap(), Some(client));
    let change = (CHANGE_IP | CHANGE_PORT).to_be_bytes().to_vec();
    let bytes = request(&[(attr::RESPONSE_PORT, vec![0x1f, 0x90, 0, 0]), (attr::CHANGE_REQUEST, change)]);
    let Ok(Some(Reply::ViaPeer { dial_back, .. })) = handle_binding(&bytes, client, sn1, Some(sn2)) else { panic!() };
    assert_eq!((dial_back.mapped, dial_back.to), (client, a("203.0.113.7:8080")));
    // A forged order to another IP is refused by the peer.
    let forged = DialBack { to: a("192.0.2.99:8080"), ..dial_back };
    assert!(forged.response(sn2).is_err());
    // Port 0 and a short value: 400.
    for v in [vec![0, 0, 0, 0], vec![1]] {
        let m = direct(handle_binding(&request(&[(attr::RESPONSE_PORT, v)]), client, sn1, None));
        assert_eq!(m.error_code().map(|e| e.0), Some(400));
    }
}

#[test]
fn padding_is_bounded_so_a_dial_back_cannot_amplify() {
    let (client, sn1, sn2) = (a("203.0.113.7:40000"), a("198.51.100.1:3478"), a("198.51.100.2:3478"));
    // Up to the bound: answered with as much padding (bytes out ≈ bytes in).
    let req = request(&[(attr::PADDING, vec![0; usize::from(MAX_PADDING)])]);
    let Ok(Some(Reply::Direct { response, .. })) = handle_binding(&req, client, sn1, None) else { panic!() };
    assert!(response.len() <= req.len() + 64, "{} out for {} in", response.len(), req.len());
    // Beyond it: 400, without padding.
    let big = request(&[(attr::PADDING, vec![0; usize::from(MAX_PADDING) + 4])]);
    let m = direct(handle_binding(&big, client, sn1, None));
    assert_eq!(m.error_code().map(|e| e.0), Some(400));
    // Attack: a forged dial-back order (~100 bytes on the overlay) asking for 65 KB of padding.
    let forged = DialBack { transaction_id: TID, mapped: client, to: client, padding: u16::MAX };
    assert!(matches!(forged.response(sn2), Err(StunError::BadDialBack(_))));
    let ok = DialBack { padding: MAX_PADDING, ..forged };
    assert!(ok.response(sn2).unwrap().len() < 1_700);
}

#[test]
fn change_port_is_answered_from_the_alternate_socket() {
    let (client, sn1, alt) = (a("203.0.113.7:40000"), a("198.51.100.1:3478"), a("198.51.100.1:443"));
    let server = BindingServer { alternate: Some(alt), ..BindingServer::default() };
    let bytes = request(&[(attr::CHANGE_REQUEST, CHANGE_PORT.to_be_bytes().to_vec())]);
    match server.handle(&bytes, client, sn1) {
        Ok(Some(Reply::FromAlternate { from, to, response })) => {
            assert_eq!((from, to), (alt, client));
            let m = Message::parse(&response).unwrap();
            assert_eq!(m.address(attr::RESPONSE_ORIGIN, false).unwrap(), Some(alt));
            assert_eq!(m.mapped_address().unwrap(), Some(client));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn non_stun_and_non_binding_are_not_answered() {
    let (c, l) = (a("1.2.3.4:5"), a("5.6.7.8:9"));
    assert_eq!(handle_binding(b"hello world, this is not stun", c, l, None), Ok(None));
    assert_eq!(handle_binding(&[], c, l, None), Ok(None));
    assert!(!is_stun(&[0xC0; 40]));
    // A success response, an indication, an Allocate request: not for the Binding server.
    for (class, method) in [(Class::Success, 1), (Class::Indication, 1), (Class::Request, 3)] {
        let bytes = Message::new(class, method, TID).encode(None, true);
        assert_eq!(handle_binding(&bytes, c, l, None), Err(StunError::NotBindingRequest { class, method }));
    }
    // A bad FINGERPRINT: dropped silently.
    let mut bytes = request(&[(attr::SOFTWARE, b"abcd".to_vec())]);
    bytes[24] ^= 1;
    assert_eq!(handle_binding(&bytes, c, l, None), Err(StunError::BadFingerprint));
}

#[test]
fn rfc3489_client_gets_mapped_address() {
    let mut req = vec![0x00, 0x01, 0x00, 0x00];
    req.extend_from_slice(&[0xAA; 16]); // 128-bit transaction ID, no cookie
    let (client, local, other) = (a("203.0.113.7:40000"), a("198.51.100.1:3478"), a("198.51.100.2:3478"));
    let Ok(Some(Reply::Direct { to, response: resp })) = handle_binding(&req, client, local, Some(other)) else {
        panic!()
    };
    assert_eq!(to, client);
    assert_eq!(&resp[0..2], &[0x01, 0x01]);
    assert_eq!(&resp[4..20], &[0xAA; 16]);
    assert_eq!(usize::from(u16::from_be_bytes([resp[2], resp[3]])), resp.len() - 20);
    // MAPPED-ADDRESS first: type 1, len 8, family 1, port, IP.
    assert_eq!(&resp[20..32], &[0, 1, 0, 8, 0, 1, 0x9c, 0x40, 203, 0, 113, 7]);
    assert_eq!(resp.len(), 20 + 3 * 12);
    // With CHANGE-REQUEST flags set, no answer.
    let mut req = vec![0x00, 0x01, 0x00, 0x08];
    req.extend_from_slice(&[0xAA; 16]);
    req.extend_from_slice(&[0, 3, 0, 4, 0, 0, 0, 6]);
    assert_eq!(handle_binding(&req, client, local, None), Ok(None));
}

#[test]
fn reply_round_trips_through_json_for_the_sn_link() {
    let d = DialBack { transaction_id: TID, mapped: a("203.0.113.7:40000"), to: a("203.0.113.7:40000"), padding: 4 };
    let s = serde_json::to_string(&d).unwrap();
    assert_eq!(serde_json::from_str::<DialBack>(&s).unwrap(), d);
}
