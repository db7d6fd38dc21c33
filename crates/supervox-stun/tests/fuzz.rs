//! Any bytes, never a panic: random datagrams and mutations of valid messages through the
//! codec, the Binding server and the probe.

use std::net::SocketAddr;

use rand::{rngs::StdRng, Rng, SeedableRng};
use supervox_stun::codec::{attr, verify_integrity, Class, Message, CHANGE_IP, CHANGE_PORT};
use supervox_stun::{BindingServer, NatProbe, ProbeConfig};

fn feed(bytes: &[u8], server: &BindingServer, probe: &mut NatProbe, from: SocketAddr, local: SocketAddr) {
    let _ = Message::parse(bytes);
    let _ = verify_integrity(bytes, b"key");
    let _ = supervox_stun::is_stun(bytes);
    if let Ok(Some(supervox_stun::Reply::ViaPeer { dial_back, .. })) = server.handle(bytes, from, local) {
        let _ = dial_back.response(local);
    }
    let _ = probe.handle_response(from, bytes, 5);
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = StdRng::seed_from_u64(0x5717);
    let from: SocketAddr = "203.0.113.7:4000".parse().unwrap();
    let local: SocketAddr = "198.51.100.1:3478".parse().unwrap();
    let server = BindingServer { other: Some(from), alternate: Some(local), ..BindingServer::default() };
    let mut probe = NatProbe::new(ProbeConfig::new(local, local, from), 0);
    let mut valid = Message::new(Class::Request, 1, [3; 12]);
    valid.add(attr::SOFTWARE, b"fuzz".to_vec());
    valid.add(attr::CHANGE_REQUEST, (CHANGE_IP | CHANGE_PORT).to_be_bytes().to_vec());
    valid.add_xor_address(attr::XOR_MAPPED_ADDRESS, from);
    let seeds = [
        valid.encode(Some(b"key"), true),
        supervox_stun::build_binding_success([3; 12], from, local, Some(local), Some("x")),
    ];
    for i in 0..100_000 {
        let bytes: Vec<u8> = if i % 2 == 0 {
            // Pure noise, sometimes with a STUN-looking header so the body parser is reached.
            let len = rng.gen_range(0..120);
            let mut b: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            if len >= 20 && rng.gen_bool(0.7) {
                b[0] &= 0x3F;
                b[4..8].copy_from_slice(&supervox_stun::MAGIC_COOKIE.to_be_bytes());
                if rng.gen_bool(0.5) {
                    b[2..4].copy_from_slice(&((len as u16).wrapping_sub(20)).to_be_bytes());
                }
            }
            b
        } else {
            // Mutations of valid messages: flipped bytes, truncation, extension.
            let mut b = seeds[rng.gen_range(0..seeds.len())].clone();
            for _ in 0..rng.gen_range(1..4) {
                let at = rng.gen_range(0..b.len());
                b[at] = rng.gen();
            }
            match rng.gen_range(0..3) {
                0 => b.truncate(rng.gen_range(0..b.len())),
                1 => b.extend((0..rng.gen_range(0..12)).map(|_| rng.gen::<u8>())),
                _ => {}
            }
            b
        };
        feed(&bytes, &server, &mut probe, from, local);
    }
}
