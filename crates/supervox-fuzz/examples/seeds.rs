//! Writes the seed inputs of every fuzz target, from real encoded messages,
//! into `fuzz/corpus/<target>/seed-NN` (run from the repository root:
//! `cargo run -p supervox-fuzz --example seeds`). The fuzzer grows and
//! `cargo fuzz cmin` minimises the corpora from there.

use std::net::SocketAddr;
use std::path::Path;
use supervox::control::{ContactAction, Request};
use supervox_core::host_cache::HostCache;
use supervox_core::link::Link;
use supervox_core::overlay::wire::{NetworkKey, Wire};
use supervox_core::Identity;
use supervox_media::packet::{encode_media, encode_media_redundant, MediaHeader};
use supervox_media::report::{Echo, ReceiverReport};
use supervox_proto::call::{encode_call_body, CallMessage, CallOffer, SealedSignal, SignedSignal};
use supervox_proto::frame::encode_frame;
use supervox_proto::overlay::{encode_packet, Member, MemberState, OverlayMsg, OverlayPacket};
use supervox_proto::{
    encode_message, CallId, CallSignal, Candidate, CandidateKind, LookupAnswer, Message, NameClaim, NatBehaviour,
    NatReport, Presence, Role, SignalEnvelope, Transport, UserId,
};
use supervox_stun::codec::{attr, Class, Message as StunMessage, METHOD_BINDING};
use supervox_turn::codec::{encode_channel_data, method};

fn a(s: &str) -> SocketAddr {
    s.parse().expect("constant address")
}

fn write(target: &str, seeds: &[Vec<u8>]) {
    let dir = Path::new("fuzz/corpus").join(target);
    std::fs::create_dir_all(&dir).expect("create the corpus directory");
    for (i, s) in seeds.iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i:02}")), s).expect("write a seed");
    }
    println!("{target}: {} seeds", seeds.len());
}

/// A stream seed: read size byte 0 (one read), then the stream.
fn stream(bytes: &[u8]) -> Vec<u8> {
    let mut v = vec![0];
    v.extend_from_slice(bytes);
    v
}

fn main() {
    let id = Identity::from_seed([7; 32]);
    let key = id.signing_key();
    let sn = a("127.0.0.1:9");
    let claim = NameClaim::sign(key, "bob", 1).expect("a valid name");
    let presence = Presence::sign(key, "bob", sn, 1, 5).expect("a valid name");
    let cand =
        Candidate { kind: CandidateKind::Host, transport: Transport::Udp, addr: a("10.0.0.2:5000"), priority: 7 };
    let relay = Candidate {
        kind: CandidateKind::Relay,
        transport: Transport::TcpPassive,
        addr: a("[2001:db8::1]:443"),
        priority: 1,
    };
    let nat = NatReport {
        mapping: NatBehaviour::EndpointIndependent,
        filtering: NatBehaviour::AddressAndPortDependent,
        mapped: vec![a("198.51.100.3:40000")],
        spare_sockets: 2,
    };
    let env = |body| {
        Message::Signal(SignalEnvelope {
            call_id: CallId([1; 16]),
            from: id.user_id(),
            to: UserId([3; 32]),
            to_supernode: sn,
            body,
        })
    };

    // Messages.
    let messages = [
        Message::Hello {
            role: Role::Client,
            identity: id.user_id(),
            advertise: Some(sn),
            agent: "supervox 0.1".into(),
        },
        Message::Ping { nonce: 3 },
        Message::Claim { claim: claim.clone() },
        Message::Publish { presence: presence.clone() },
        Message::Lookup { req_id: 4, name: "bob".into() },
        Message::LookupResult {
            req_id: 4,
            answer: LookupAnswer::Online { claim: claim.clone(), presence: presence.clone() },
        },
        env(CallSignal::Invite {
            from_name: "bob".into(),
            caller_presence: presence.clone(),
            sent_ms: 77,
            handshake: vec![9; 96],
        }),
        env(CallSignal::Sealed(SealedSignal { seq: 3, ciphertext: vec![1, 2, 3] })),
        Message::ClaimResult { name: "x".into(), result: Err(supervox_proto::Refusal::Taken) },
    ];
    let encoded: Vec<Vec<u8>> = messages.iter().map(|m| encode_message(m).expect("encodes")).collect();
    write("message", &encoded);

    // Frames carrying messages.
    let mut frames = Vec::new();
    for m in &encoded {
        let mut f = Vec::new();
        encode_frame(m, &mut f);
        frames.push(stream(&f));
    }
    let mut two = vec![3];
    encode_frame(b"hello", &mut two);
    encode_frame(b"world!", &mut two);
    frames.push(two);
    write("frame", &frames);

    // Call bodies.
    write(
        "call_body",
        &[
            encode_call_body(&CallOffer { candidates: vec![cand, relay], nat: Some(nat.clone()) }),
            encode_call_body(&SealedSignal { seq: 1, ciphertext: vec![0xAA; 40] }),
            encode_call_body(&CallMessage::Ringing),
            encode_call_body(&CallMessage::Accept { candidates: vec![cand], nat: None }),
            encode_call_body(&CallMessage::Bye { reason: "hung up".into() }),
            encode_call_body(&CallMessage::Nat(nat)),
            encode_call_body(&SignedSignal::Reject { reason: "busy".into() }),
        ]
        .into_iter()
        .map(|b| b.expect("encodes"))
        .collect::<Vec<_>>(),
    );

    // Overlay packets, plaintext and sealed.
    let m = Member {
        id: UserId([4; 32]),
        addr: a("10.0.0.1:7000"),
        incarnation: 3,
        state: MemberState::Suspect,
        load: 40,
        nonce: 7,
    };
    let n = Member {
        id: UserId([5; 32]),
        addr: a("[2001:db8::5]:7000"),
        incarnation: 1,
        state: MemberState::Alive,
        load: 2,
        nonce: 0,
    };
    let packets = [
        OverlayPacket { from: m, msg: OverlayMsg::Join },
        OverlayPacket { from: m, msg: OverlayMsg::Ping { seq: 9, updates: vec![n; 3] } },
        OverlayPacket { from: n, msg: OverlayMsg::Ack { seq: 9, updates: vec![m] } },
        OverlayPacket { from: n, msg: OverlayMsg::PingReq { seq: 2, target: m, updates: vec![] } },
        OverlayPacket { from: m, msg: OverlayMsg::Members { members: vec![m, n] } },
        OverlayPacket { from: m, msg: OverlayMsg::SyncDigest { total: 12345 } },
        OverlayPacket { from: m, msg: OverlayMsg::SyncBuckets { digests: vec![1, 2, 3] } },
    ];
    let mut overlay: Vec<Vec<u8>> = packets.iter().map(|p| encode_packet(p).expect("encodes")).collect();
    let mut wire = Wire::new(&Identity::from_seed([1; 32]), NetworkKey::open_network(), [3; 32], 16);
    let to = Identity::from_seed([2; 32]).user_id();
    overlay
        .push(wire.seal(&to, "192.0.2.2:7000".parse().expect("an address"), &packets[1], false, 1_000).expect("seals"));
    overlay.push(wire.hello());
    write("overlay", &overlay);

    // Link: a real initiator's first handshake message.
    let ia = Identity::from_seed([8; 32]);
    let mut init = Link::initiator(
        &ia,
        Message::Hello { role: Role::Client, identity: ia.user_id(), advertise: None, agent: "s".into() },
        0,
    )
    .expect("an initiator");
    let mut first = Vec::new();
    while let Some(b) = init.poll_transmit(0) {
        first.extend_from_slice(&b);
    }
    write("link", &[stream(&first), first.clone()]);

    // STUN.
    let tid = [7u8; 12];
    let req = StunMessage::new(Class::Request, METHOD_BINDING, tid);
    let mut resp = StunMessage::new(Class::Success, METHOD_BINDING, tid);
    resp.add_xor_address(attr::XOR_MAPPED_ADDRESS, a("192.0.2.1:32853"));
    resp.add_address(attr::OTHER_ADDRESS, a("[2001:db8::2]:3479"));
    resp.add(attr::SOFTWARE, b"supervox".to_vec());
    let mut err = StunMessage::new(Class::Error, METHOD_BINDING, tid);
    err.add_error_code(420, "Unknown Attribute");
    let mut change = StunMessage::new(Class::Request, METHOD_BINDING, tid);
    change.add(attr::CHANGE_REQUEST, 6u32.to_be_bytes().to_vec());
    change.add(attr::PADDING, vec![0; 64]);
    let stun = vec![
        req.encode(None, false),
        req.encode(None, true),
        resp.encode(Some(b"key"), true),
        err.encode(None, true),
        change.encode(None, false),
    ];
    write("stun", &stun);

    // TURN.
    let mut alloc = StunMessage::new(Class::Request, method::ALLOCATE, tid);
    alloc.add(supervox_turn::codec::attr::REQUESTED_TRANSPORT, vec![17, 0, 0, 0]);
    alloc.add(supervox_turn::codec::attr::LIFETIME, 600u32.to_be_bytes().to_vec());
    let mut perm = StunMessage::new(Class::Request, method::CREATE_PERMISSION, tid);
    perm.add_xor_address(supervox_turn::codec::attr::XOR_PEER_ADDRESS, a("198.51.100.9:5000"));
    perm.add(attr::USERNAME, b"1700000000:alice".to_vec());
    perm.add(attr::REALM, b"fuzz.example".to_vec());
    perm.add(attr::NONCE, b"abcdef".to_vec());
    let mut bind = StunMessage::new(Class::Request, method::CHANNEL_BIND, tid);
    bind.add(supervox_turn::codec::attr::CHANNEL_NUMBER, vec![0x40, 0x01, 0, 0]);
    bind.add_xor_address(supervox_turn::codec::attr::XOR_PEER_ADDRESS, a("198.51.100.9:5000"));
    let cd = encode_channel_data(0x4001, b"media bytes", true).expect("fits");
    let turn = vec![
        alloc.encode(None, true),
        perm.encode(Some(b"key"), true),
        bind.encode(Some(b"key"), false),
        cd.clone(),
        req.encode(None, true),
    ];
    write("turn", &turn);

    // TURN over TCP: messages and ChannelData back to back.
    let mut tcp = Vec::new();
    for t in &turn {
        tcp.extend_from_slice(t);
    }
    write(
        "turn_tcp_framing",
        &[stream(&tcp), {
            let mut v = vec![5];
            v.extend_from_slice(&tcp);
            v
        }],
    );

    // RFC 4571: media datagrams (17-byte path header + at least 16) behind a 2-byte length.
    let mut rfc = Vec::new();
    for len in [33usize, 100, 1500] {
        rfc.extend_from_slice(&(len as u16).to_be_bytes());
        rfc.extend((0..len).map(|i| i as u8));
    }
    write(
        "rfc4571",
        &[stream(&rfc), {
            let mut v = vec![7];
            v.extend_from_slice(&rfc);
            v
        }],
    );

    // Media packets and reports.
    let h = MediaHeader { seq: 0xfffe, timestamp: 0xdead_beef, marker: true };
    let report = ReceiverReport {
        fraction_lost_q8: 12,
        cumulative_lost: 5,
        highest_seq: 70_000,
        jitter_ts: 480,
        report_ts: 123_456,
        echo: Some(Echo { ts: 123_000, delay_ms: 20 }),
    };
    let no_echo = ReceiverReport { echo: None, ..report };
    write(
        "media_packet",
        &[encode_media(&h, &[1, 2, 3]), encode_media_redundant(&h, &[9; 40], &[&[1; 30], &[2; 20]]), report.encode()],
    );
    write("media_report", &[report.encode(), no_echo.encode()]);

    // Control requests.
    let requests = [
        Request::Status,
        Request::Call {
            name: "bob".into(),
            duration: Some(2.5),
            input: Some("tone:440".into()),
            output: None,
            detach: true,
        },
        Request::Hangup,
        Request::Trust { name: "bob".into() },
        Request::Contacts { action: Some(ContactAction::Add), name: Some("bob".into()), message: Some("hi".into()) },
        Request::Presence { state: "away".into(), text: Some("lunch".into()) },
        Request::Send { name: "bob".into(), text: "hello \u{e9}".into() },
        Request::Mute { muted: true },
        Request::Devices { input: Some("mic".into()), output: None },
        Request::UiLogin,
    ];
    write("control_request", &requests.iter().map(|r| serde_json::to_vec(r).expect("serialises")).collect::<Vec<_>>());

    // Host cache.
    let mut hc = HostCache::new();
    hc.add(a("127.0.0.1:1"));
    hc.succeeded(a("127.0.0.1:2"), 40, Some(20), 1_700_000_000_000);
    hc.failed(a("[::1]:3"), 1_700_000_000_000);
    hc.learn_key(a("127.0.0.1:2"), id.user_id());
    write("host_cache", &[hc.to_text().into_bytes(), b"127.0.0.1:1\n127.0.0.1:2\n\nnot-an-addr\n".to_vec()]);

    // Identity and claims files.
    write("identity_file", &[id.to_file_bytes(), ia.to_file_bytes()]);
    let claims = vec![claim, NameClaim::sign(ia.signing_key(), "alice", 2).expect("a valid name")];
    write("claims_file", &[serde_json::to_vec(&claims).expect("serialises"), b"[]".to_vec()]);
}
