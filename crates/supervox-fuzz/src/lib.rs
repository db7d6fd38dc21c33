//! The decoding logic of supervox's fuzz targets.
//!
//! Each `pub fn <target>(data: &[u8])` feeds untrusted bytes to the real
//! public parsers of one wire or file format and checks, besides "does not
//! panic", the invariants that format promises: where an encoder exists,
//! decode → encode → decode gives the same value; stream splitters return
//! exactly the bytes they consumed. A broken invariant is a panic, which is
//! what libFuzzer reports.
//!
//! The `fuzz/` directory (cargo-fuzz, nightly) wraps each function in a
//! `fuzz_target!`; `tests/corpus.rs` runs every committed corpus and
//! regression input through the same functions on stable, in `cargo test`.
//! See `docs/FUZZING.md`.

use rand::rngs::StdRng;
use rand::SeedableRng;
use std::net::SocketAddr;

/// A target's function.
pub type Target = fn(&[u8]);

/// Every target, by name (the names of `fuzz/fuzz_targets/*.rs` and of the
/// corpus directories), with its function.
pub const TARGETS: &[(&str, Target)] = &[
    ("frame", frame),
    ("message", message),
    ("call_body", call_body),
    ("overlay", overlay),
    ("link", link),
    ("stun", stun),
    ("turn", turn),
    ("turn_tcp_framing", turn_tcp_framing),
    ("rfc4571", rfc4571),
    ("media_packet", media_packet),
    ("media_report", media_report),
    ("control_request", control_request),
    ("host_cache", host_cache),
    ("identity_file", identity_file),
    ("claims_file", claims_file),
];

/// Split `data` into a read size (from its first byte) and the stream, so
/// the fuzzer also explores how a stream parser copes with short reads.
fn reads(data: &[u8]) -> (usize, &[u8]) {
    match data.split_first() {
        // 0 means "everything in one read".
        Some((&0, rest)) => (rest.len().max(1), rest),
        Some((&n, rest)) => (usize::from(n), rest),
        None => (1, data),
    }
}

fn addr(s: &str) -> SocketAddr {
    // Constant literals only: never untrusted data.
    s.parse().expect("constant address")
}

/// The TCP frame splitter of the supernode links
/// ([`supervox_proto::FrameDecoder`]): the frames it returns, re-encoded,
/// are exactly the bytes it consumed; what is left is buffered.
pub fn frame(data: &[u8]) {
    use supervox_proto::frame::encode_frame;
    let (read, stream) = reads(data);
    let mut d = supervox_proto::FrameDecoder::new();
    let mut reencoded = Vec::new();
    let mut pushed = 0;
    'outer: for chunk in stream.chunks(read) {
        d.push(chunk);
        pushed += chunk.len();
        loop {
            match d.next_frame() {
                Ok(Some(f)) => {
                    assert!(!f.is_empty() && f.len() <= supervox_proto::MAX_FRAME_LEN);
                    encode_frame(&f, &mut reencoded);
                }
                Ok(None) => break,
                Err(_) => break 'outer,
            }
        }
        assert_eq!(reencoded.len() + d.buffered(), pushed, "frames + buffer = bytes pushed");
        d.release();
    }
    assert_eq!(&stream[..reencoded.len()], &reencoded[..], "frames re-encode to the consumed bytes");
}

/// A versioned [`supervox_proto::Message`] (the plaintext of every link
/// message): decode → encode → decode is the identity, and records inside
/// are verified as the receiver does (never a panic).
pub fn message(data: &[u8]) {
    use supervox_proto::{decode_message, encode_message, Message};
    let Ok(m) = decode_message(data) else { return };
    match &m {
        Message::Hello { identity, .. } => {
            let _ = supervox_core::identity::noise_public_key(identity);
        }
        Message::Claim { claim, .. } => {
            let _ = claim.verify();
        }
        _ => {}
    }
    let bytes = encode_message(&m).expect("a decoded message encodes");
    assert_eq!(decode_message(&bytes).as_ref(), Ok(&m), "decode(encode(m)) == m");
}

fn roundtrip_call_body<T>(data: &[u8])
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    use supervox_proto::call::{decode_call_body, encode_call_body};
    let Some(v) = decode_call_body::<T>(data) else { return };
    let bytes = encode_call_body(&v).expect("a decoded call body encodes");
    assert_eq!(decode_call_body::<T>(&bytes).as_ref(), Some(&v), "decode(encode(body)) == body");
}

/// The call bodies (offer, sealed signal, call message, signed signal;
/// `supervox_proto::call`), each decoded from the same bytes and round-tripped.
pub fn call_body(data: &[u8]) {
    use supervox_proto::call::{CallMessage, CallOffer, SealedSignal, SignedSignal};
    roundtrip_call_body::<CallOffer>(data);
    roundtrip_call_body::<SealedSignal>(data);
    roundtrip_call_body::<CallMessage>(data);
    roundtrip_call_body::<SignedSignal>(data);
}

/// Overlay datagrams: the plaintext decoder
/// ([`supervox_proto::overlay::decode_packet`], round-tripped), the sealed
/// form ([`supervox_core::overlay::wire::Wire::open`], on the raw bytes
/// and on the packet sealed between two members of the open network), and the
/// membership state machine fed the decoded packet.
pub fn overlay(data: &[u8]) {
    use supervox_core::identity::Identity;
    use supervox_core::overlay::membership::{Membership, MembershipConfig};
    use supervox_core::overlay::wire::{is_overlay, NetworkKey, Wire};
    use supervox_proto::overlay::{decode_packet, encode_packet, Member, MemberState};
    let (ia, ib) = (Identity::from_seed([1; 32]), Identity::from_seed([2; 32]));
    let mut a = Wire::new(&ia, NetworkKey::open_network(), [3; 32], 16);
    let mut b = Wire::new(&ib, NetworkKey::open_network(), [4; 32], 16);
    let (a_addr, b_addr) = (addr("192.0.2.1:7000"), addr("192.0.2.2:7000"));
    let _ = is_overlay(data);
    // Random bytes never authenticate; what matters is that nothing panics.
    let _ = b.open(a_addr, data, 1_000, |_| true);
    let Ok(p) = decode_packet(data) else { return };
    let bytes = encode_packet(&p).expect("a decoded packet encodes");
    assert_eq!(decode_packet(&bytes).as_ref(), Ok(&p), "decode(encode(p)) == p");
    if let Ok(sealed) = a.seal(&ib.user_id(), b_addr, &p, false, 1_000) {
        let opened = b.open(a_addr, &sealed, 1_000, |_| true);
        let Ok(supervox_core::overlay::wire::Inbound::Packet { packet, .. }) = opened else {
            panic!("open(seal(p)) failed: {opened:?}")
        };
        assert_eq!(packet, p, "open(seal(p)) == p");
    }
    let me = Member {
        id: supervox_proto::UserId([0x42; 32]),
        addr: addr("192.0.2.1:7000"),
        incarnation: 1,
        state: MemberState::Alive,
        load: 10,
        nonce: 0,
    };
    let mut m = Membership::new(me, vec![addr("192.0.2.2:7000")], MembershipConfig::default(), 1_000);
    m.observe(p.from, 1_000);
    m.on_msg(p.from.addr, &p.from, &p.msg, 1_010);
    let mut rng = StdRng::seed_from_u64(1);
    m.tick(&mut rng, 5_000);
    while m.poll_send().is_some() {}
    while m.poll_event().is_some() {}
}

/// A supernode link's responder side ([`supervox_core::link::Link`]) fed a
/// byte stream from the network: frame splitting and the Noise handshake
/// refuse garbage with an error, never a panic.
pub fn link(data: &[u8]) {
    use supervox_core::link::Link;
    use supervox_core::Identity;
    use supervox_proto::{Message, Role};
    let id = Identity::from_seed([9; 32]);
    let hello = Message::Hello { role: Role::Supernode, identity: id.user_id(), advertise: None, agent: "fuzz".into() };
    let Ok(mut l) = Link::responder(&id, hello, 0) else { return };
    let (read, stream) = reads(data);
    for (i, chunk) in stream.chunks(read).enumerate() {
        if l.handle_bytes(chunk, i as u64).is_err() {
            break;
        }
        while l.poll_transmit(i as u64).is_some() {}
    }
    let _ = l.handle_timeout(1_000_000);
}

/// STUN ([`supervox_stun::codec`]): parse; without its integrity and
/// fingerprint attributes, encode → parse gives the same message (also with
/// a fresh FINGERPRINT and MESSAGE-INTEGRITY, which must then verify);
/// integrity checks, addresses and the Binding server on the same bytes.
pub fn stun(data: &[u8]) {
    use supervox_stun::codec::{attr, raw_attributes, verify_integrity, Message};
    let key = b"fuzz-key";
    let _ = supervox_stun::codec::peek_header(data);
    let _ = verify_integrity(data, key);
    for a in raw_attributes(data).take(100).flatten() {
        let _ = a.value(data);
    }
    if let Ok(Some(reply)) = supervox_stun::handle_binding(
        data,
        addr("198.51.100.7:40000"),
        addr("192.0.2.1:3478"),
        Some(addr("192.0.2.2:3479")),
    ) {
        match reply {
            supervox_stun::Reply::Direct { response, .. } | supervox_stun::Reply::FromAlternate { response, .. } => {
                if supervox_stun::server::is_legacy_binding(data) {
                    // RFC 3489: no magic cookie; the 16-byte transaction id is echoed.
                    assert_eq!(response[..2], [0x01, 0x01], "a legacy Binding success");
                    assert_eq!(usize::from(u16::from_be_bytes([response[2], response[3]])) + 20, response.len());
                    assert_eq!(response[4..20], data[4..20], "the legacy transaction id is echoed");
                } else {
                    assert!(Message::parse(&response).is_ok(), "our own Binding response parses");
                }
            }
            supervox_stun::Reply::ViaPeer { .. } => {}
        }
    }
    let Ok(m) = Message::parse(data) else { return };
    let _ = m.mapped_address();
    let _ = m.address(attr::OTHER_ADDRESS, false);
    let _ = m.error_code();
    let mut plain = m.clone();
    plain
        .attributes
        .retain(|a| !matches!(a.kind, attr::MESSAGE_INTEGRITY | attr::MESSAGE_INTEGRITY_SHA256 | attr::FINGERPRINT));
    let bytes = plain.encode(None, false);
    assert_eq!(Message::parse(&bytes).as_ref(), Ok(&plain), "parse(encode(m)) == m");
    // Room for MESSAGE-INTEGRITY (24) and FINGERPRINT (8) in the 16-bit length.
    if bytes.len() - supervox_stun::codec::HEADER_LEN + 32 <= usize::from(u16::MAX) {
        let sealed = plain.encode(Some(key), true);
        let back = Message::parse(&sealed).expect("our own message with FINGERPRINT parses");
        assert_eq!(back.attributes[..plain.attributes.len()], plain.attributes[..]);
        assert_eq!(verify_integrity(&sealed, key), Ok(true), "our own MESSAGE-INTEGRITY verifies");
    }
}

/// TURN ([`supervox_turn::codec`] and the server): message parsing and
/// attribute access, ChannelData parse → encode gives the same bytes, and
/// the TURN server handles the bytes as a UDP datagram and as a TCP frame.
pub fn turn(data: &[u8]) {
    use supervox_turn::codec::{attr, decode_address, encode_channel_data, packet_kind, ChannelData, Message};
    use supervox_turn::{Transport, TurnConfig, TurnServer};
    let _ = packet_kind(data);
    if let Ok(m) = Message::parse(data) {
        let _ = m.unknown_required();
        let _ = m.integrity_kind();
        let _ = m.verify_integrity(b"fuzz-key");
        for typ in [attr::XOR_PEER_ADDRESS, attr::XOR_RELAYED_ADDRESS, attr::CHANNEL_NUMBER, attr::LIFETIME] {
            for v in m.get_all(typ) {
                let _ = decode_address(v, true, &m.transaction_id);
            }
        }
    }
    if let Some(cd) = ChannelData::parse(data) {
        let bytes = encode_channel_data(cd.channel, cd.data, false).expect("a parsed ChannelData fits");
        assert_eq!(&data[..bytes.len()], &bytes[..], "encode(parse(cd)) == cd");
        assert_eq!(ChannelData::parse(&bytes), Some(cd));
    }
    let cfg = TurnConfig::new("fuzz.example", b"secret".to_vec());
    let mut server = TurnServer::new(cfg, 0);
    let client = addr("198.51.100.7:40000");
    let local = addr("192.0.2.1:3478");
    server.handle_client(Transport::Udp, client, local, data, 1_000);
    server.handle_client(Transport::Tcp, client, local, data, 2_000);
    while server.poll_output().is_some() {}
}

/// TURN's TCP stream framer ([`supervox_turn::TcpFramer`]): every frame is a
/// whole STUN message or ChannelData (padding removed), and the frames are
/// a prefix of the stream.
pub fn turn_tcp_framing(data: &[u8]) {
    use supervox_turn::codec::{packet_kind, PacketKind, CHANNEL_HEADER_LEN, HEADER_LEN};
    let (read, stream) = reads(data);
    let mut f = supervox_turn::TcpFramer::new();
    let mut consumed = 0;
    'outer: for chunk in stream.chunks(read) {
        if f.push(chunk).is_err() {
            break;
        }
        loop {
            match f.next_frame() {
                Ok(Some(frame)) => {
                    assert!(frame.len() >= CHANNEL_HEADER_LEN);
                    let len = usize::from(u16::from_be_bytes([frame[2], frame[3]]));
                    let padded = match packet_kind(frame) {
                        PacketKind::Stun => {
                            assert_eq!(frame.len(), HEADER_LEN + len, "a STUN frame is one whole message");
                            frame.len()
                        }
                        PacketKind::ChannelData => {
                            assert_eq!(frame.len(), CHANNEL_HEADER_LEN + len, "a ChannelData frame, unpadded");
                            frame.len().div_ceil(4) * 4
                        }
                        PacketKind::Other => panic!("the framer returned neither STUN nor ChannelData"),
                    };
                    assert_eq!(&stream[consumed..consumed + frame.len()], frame, "frames are the stream's bytes");
                    consumed += padded;
                }
                Ok(None) => break,
                Err(_) => break 'outer,
            }
        }
    }
    assert!(consumed <= stream.len());
}

/// RFC 4571 media framing over TCP (`supervox::node::take_frames`): the
/// frames, re-framed, are exactly the bytes consumed, and the rest stays
/// buffered.
pub fn rfc4571(data: &[u8]) {
    let (read, stream) = reads(data);
    let mut buf = Vec::new();
    let mut frames = Vec::new();
    let mut reframed = Vec::new();
    for chunk in stream.chunks(read) {
        buf.extend_from_slice(chunk);
        let ok = supervox::node::take_frames(&mut buf, &mut frames).is_ok();
        for f in frames.drain(..) {
            let len = u16::try_from(f.len()).expect("a frame's length fits its 2-byte prefix");
            reframed.extend_from_slice(&len.to_be_bytes());
            reframed.extend_from_slice(&f);
        }
        if !ok {
            break;
        }
        let pushed = reframed.len() + buf.len();
        assert_eq!(&stream[..pushed][reframed.len()..], &buf[..], "the rest stays buffered");
    }
    assert_eq!(&stream[..reframed.len()], &reframed[..], "frames re-frame to the consumed bytes");
}

/// A media datagram's plaintext ([`supervox_media::packet::decode_packet`]):
/// audio (with redundancy) and reports re-encode to the same value.
pub fn media_packet(data: &[u8]) {
    use supervox_media::packet::{decode_audio, decode_packet, encode_media_redundant, Incoming};
    match decode_packet(data) {
        Ok(Incoming::Audio(a)) => {
            let bytes = encode_media_redundant(&a.header, a.payload, &a.redundant);
            assert_eq!(decode_audio(&bytes).ok().as_ref(), Some(&a), "decode(encode(audio)) == audio");
        }
        Ok(Incoming::Report(r)) => {
            assert_eq!(supervox_media::report::ReceiverReport::decode(&r.encode()).ok(), Some(r));
        }
        Err(_) => {}
    }
}

/// A receiver report ([`supervox_media::report::ReceiverReport`]): decode →
/// encode → decode is the identity, and the derived figures are finite.
pub fn media_report(data: &[u8]) {
    use supervox_media::report::ReceiverReport;
    let Ok(r) = ReceiverReport::decode(data) else { return };
    let bytes = r.encode();
    assert_eq!(bytes.len(), supervox_media::report::REPORT_LEN);
    assert_eq!(ReceiverReport::decode(&bytes).ok(), Some(r), "decode(encode(r)) == r");
    assert!(r.fraction_lost_pct().is_finite() && r.jitter_ms().is_finite());
    for now in [0, u64::from(r.report_ts), u64::MAX] {
        let _ = r.rtt_ms(now);
    }
}

/// A control-socket request line ([`supervox::control::Request`], JSON):
/// parse → serialise → parse gives the same request.
pub fn control_request(data: &[u8]) {
    use supervox::control::{Request, MAX_REQUEST_LEN};
    if data.len() > MAX_REQUEST_LEN {
        return;
    }
    let Ok(line) = std::str::from_utf8(data) else { return };
    // As the control server reads it.
    let Ok(req) = serde_json::from_str::<Request>(line.trim()) else { return };
    let text = serde_json::to_string(&req).expect("a request serialises");
    let back: Request = serde_json::from_str(&text).expect("our own request JSON parses");
    assert_eq!(back, req, "parse(serialise(req)) == req");
}

/// The host cache file ([`supervox_core::host_cache::HostCache::from_text`],
/// any bytes): what it loads saves and loads back the same.
pub fn host_cache(data: &[u8]) {
    use supervox_core::host_cache::HostCache;
    let text = String::from_utf8_lossy(data);
    let c = HostCache::from_text(&text);
    let saved = c.to_text();
    let back = HostCache::from_text(&saved);
    assert_eq!(back, c, "load(save(cache)) == cache");
    assert_eq!(back.to_text(), saved);
    let _ = c.ordered(1_700_000_000_000, 7);
}

/// The identity file ([`supervox_core::Identity::from_file_bytes`]): an
/// accepted file saves back to one that loads the same key.
pub fn identity_file(data: &[u8]) {
    use supervox_core::Identity;
    let Ok(id) = Identity::from_file_bytes(data) else { return };
    let bytes = id.to_file_bytes();
    let back = Identity::from_file_bytes(&bytes).expect("our own identity file loads");
    assert_eq!(back.user_id(), id.user_id());
    assert_eq!(back.to_file_bytes(), bytes);
}

/// A supernode's legacy `claims.json` (`supervox::store::DataDir::legacy_claims`,
/// read from a real data directory): a damaged file is an error, a loaded one
/// re-serialises to the same claims, whose signatures are checked.
pub fn claims_file(data: &[u8]) {
    use supervox::store::DataDir;
    thread_local! {
        static DIR: (tempfile::TempDir, DataDir) = {
            let tmp = tempfile::tempdir().expect("a temporary directory");
            let dir = DataDir::open(tmp.path()).expect("a data directory");
            (tmp, dir)
        };
    }
    DIR.with(|(_, dir)| {
        std::fs::write(dir.path("claims.json"), data).expect("write claims.json");
        let Ok(Some(claims)) = dir.legacy_claims() else { return };
        for c in &claims {
            let _ = c.verify();
        }
        let text = serde_json::to_vec(&claims).expect("claims serialise");
        std::fs::write(dir.path("claims.json"), &text).expect("write claims.json");
        let back = dir.legacy_claims().expect("our own claims file loads").expect("present");
        assert_eq!(back, claims, "load(save(claims)) == claims");
    });
}
