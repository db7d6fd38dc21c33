//! The supernode's UDP plane against coturn's reference clients: STUN Binding
//! (RFC 8489 / RFC 5780 with a peer supernode's dial-back) and a TURN relay
//! run by `turnutils_uclient`. Fails, never skips, when coturn's tools are
//! missing (`scripts/setup` installs the `coturn` package).

mod common;
#[path = "common/raw.rs"]
mod raw;

use common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A fresh peer port for `turnutils_uclient -r`: its default (3480) would make
/// concurrent runs talk to each other.
fn peer_port() -> String {
    free_addr().port().to_string()
}

fn tool(name: &str) -> Command {
    let found = Command::new("sh").arg("-c").arg(format!("command -v {name}")).output().unwrap();
    assert!(found.status.success(), "{name} is missing: apt-get install -y coturn (scripts/setup does it)");
    Command::new(name)
}

/// Run a command with a deadline; returns (success, stdout+stderr).
fn run(mut cmd: Command, within: Duration) -> (bool, String) {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + within;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
            return (st.success(), text);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            return (false, format!("timed out\n{}", String::from_utf8_lossy(&out.stdout)));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn coturn_stun_client_gets_its_reflexive_address_and_rfc5780_answers() {
    let root = tempfile::tempdir().unwrap();
    let sn1 = start_sn(root.path(), "sn1", &[]);
    // The peer that answers "change IP" requests sits on another loopback IP.
    let peer_addr: std::net::SocketAddr = format!("127.0.0.2:{}", free_addr().port()).parse().unwrap();
    let _sn2 = start_sn_at(root.path(), "sn2", peer_addr, &[sn1.addr]);
    let mut c = tool("turnutils_stunclient");
    c.args(["-p", &sn1.addr.port().to_string(), "127.0.0.1"]);
    let (ok, out) = run(c, Duration::from_secs(20));
    assert!(ok, "{out}");
    assert!(out.contains("UDP reflexive addr: 127.0.0.1:"), "{out}");
    // RFC 5780 mode: change-IP requests are answered by the peer supernode, once the
    // two supernodes are linked (sn1 then knows its OTHER-ADDRESS): asked until then.
    // Before that the client waits for the change-IP answer for ever: 3 s per try.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut c = tool("turnutils_stunclient");
        c.args(["-f", "-p", &sn1.addr.port().to_string(), "127.0.0.1"]);
        let (ok, out) = run(c, Duration::from_secs(3));
        if ok && !out.to_lowercase().contains("error") {
            break;
        }
        assert!(Instant::now() < deadline, "no RFC 5780 answers 20 s after start: {out}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn coturn_turn_client_completes_a_relay_run_through_a_supernode() {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    let metrics = free_addr();
    // The secret from an owner-only file: the credentials coturn mints with it work.
    let secret = root.path().join("relay.secret");
    std::fs::write(&secret, "s3cret\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let sn = start_sn_with(
        root.path(),
        "sn",
        free_addr(),
        &[],
        &[
            "--relay-secret-file",
            secret.to_str().unwrap(),
            "--relay-allow-loopback",
            "--relay-kbps",
            "0",
            "--metrics",
            &metrics.to_string(),
        ],
    );
    let port = sn.addr.port().to_string();
    // -W: uclient mints TURN REST credentials with the shared secret, as our clients' would be.
    for mode in [&["-c"][..], &["-c", "-s"][..]] {
        let mut c = tool("turnutils_uclient");
        c.args(["-y", "-W", "s3cret", "-u", "00aa11bb", "-p", &port, "-n", "50", "-m", "2", "-l", "120"])
            .args(["-e", "127.0.0.1", "-r", &peer_port()])
            .args(mode)
            .arg("127.0.0.1");
        let (ok, out) = run(c, Duration::from_secs(30));
        assert!(ok, "uclient {mode:?} failed:\n{out}");
        assert!(out.contains("Total lost packets 0"), "uclient {mode:?} lost packets:\n{out}");
        assert!(out.contains("tot_recv_msgs=100"), "uclient {mode:?}:\n{out}");
    }
    // A wrong secret is refused.
    let mut c = tool("turnutils_uclient");
    c.args(["-y", "-c", "-W", "wrong", "-u", "00aa11bb", "-p", &port, "-n", "5", "-m", "1", "-l", "120"]).args([
        "-e",
        "127.0.0.1",
        "-r",
        &peer_port(),
        "127.0.0.1",
    ]);
    let (ok, out) = run(c, Duration::from_secs(30));
    assert!(!ok || !out.contains("tot_recv_msgs=5"), "a wrong secret relayed data:\n{out}");
    let _ = metric(metrics, "relay_allocations");
}

#[test]
fn credentials_minted_for_a_signed_in_client_work_with_coturns_client() {
    let root = tempfile::tempdir().unwrap();
    let sn = start_sn_with(root.path(), "sn", free_addr(), &[], &["--relay-allow-loopback", "--relay-kbps", "0"]);
    let mut alice = raw::Raw::connect(sn.addr, 3);
    let (user, pass, relays) = alice.sign_in("alice");
    assert_eq!(relays, vec![sn.addr], "the relay is the supernode's own UDP port");
    assert!(user.ends_with(&alice.id.user_id().to_string()), "username names the user: {user}");
    let port = sn.addr.port().to_string();
    let uclient = |password: &str| uclient_relay(&["-u", &user, "-w", password, "-p", &port]);
    // -y runs two clients that send 20 messages each to one another.
    let (ok, out) = uclient(&pass);
    assert!(ok && out.contains("tot_send_msgs=40, tot_recv_msgs=40"), "minted credentials did not relay:\n{out}");
    assert!(out.contains("Total lost packets 0"), "{out}");
    // Without the SN's secret nobody can mint a working password.
    let (ok, out) = uclient("bm90IHRoZSBwYXNzd29yZA==");
    assert!(!ok || !out.contains("tot_recv_msgs=40"), "a forged password relayed data:\n{out}");
}

/// Wait until `node`'s relay allocation is up; returns its relayed address.
fn wait_relay(node: &Node, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        if let Some(a) = status(node).and_then(|s| s["relay"]["allocated"].as_str().map(String::from)) {
            return a;
        }
        assert!(Instant::now() < deadline, "{} got no relay allocation", node.name);
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// coturn's client (`-y`: two clients relaying 20 messages of 120 bytes each
/// to one another, channels on) with `args` (transport, credentials, port);
/// returns (exit ok, output).
fn uclient_relay(args: &[&str]) -> (bool, String) {
    let mut c = tool("turnutils_uclient");
    c.args(args).args([
        "-y",
        "-c",
        "-n",
        "20",
        "-m",
        "1",
        "-l",
        "120",
        "-e",
        "127.0.0.1",
        "-r",
        &peer_port(),
        "127.0.0.1",
    ]);
    run(c, Duration::from_secs(30))
}

/// A 2 s call from alice to bob (tone 440 Hz); asserts the path, the frames and the tone.
fn call_and_check(alice: &Node, bob: &Node, wav: &std::path::Path, want_path: &str) {
    let (ok, events) = call(alice, "bob", &["--duration", "2", "--input", "tone:440", "--output", "null"]);
    assert!(ok, "call failed: {events:?}");
    let c = event(&events, "call_connected").expect("connected");
    assert_eq!(c["path"], want_path, "{events:?}");
    let e = event(&events, "call_ended").expect("ended");
    let (sent, recv) = (e["frames_sent"].as_u64().unwrap(), e["frames_received"].as_u64().unwrap());
    assert!(recv as f64 >= 0.9 * sent as f64, "alice got {recv} of {sent} frames from bob");
    let deadline = Instant::now() + Duration::from_secs(5);
    while status(bob).is_some_and(|s| !s["call"].is_null()) {
        assert!(Instant::now() < deadline, "bob still in the call");
        std::thread::sleep(Duration::from_millis(50));
    }
    let pcm = read_wav(wav);
    assert!(pcm.len() > 48_000, "recorded only {} samples", pcm.len());
    let hz = supervox_media::analysis::dominant_frequency(&pcm, 48_000).expect("silent recording");
    assert!((hz - 440.0).abs() < 5.0, "bob heard {hz} Hz");
}

#[test]
fn a_forced_relay_call_goes_through_the_supernodes_turn_relay() {
    let root = tempfile::tempdir().unwrap();
    let relay = ["--relay-allow-loopback"];
    let sn1 = start_sn_with(root.path(), "sn1", free_addr(), &[], &relay);
    let sn2 = start_sn_with(root.path(), "sn2", free_addr(), &[sn1.addr], &relay);
    let wav = root.path().join("bob.wav");
    let alice = start_node(root.path(), "alice", &[sn1.addr], &["--force-relay"]);
    let bob =
        start_node(root.path(), "bob", &[sn2.addr], &["--auto-answer", "--output", &format!("wav:{}", wav.display())]);
    wait_signed_in(&alice, Duration::from_secs(10));
    wait_signed_in(&bob, Duration::from_secs(10));
    let relayed = wait_relay(&alice, Duration::from_secs(10));
    assert!(relayed.starts_with("127.0.0.1:"), "{relayed}");
    call_and_check(&alice, &bob, &wav, "relay-udp");
}

#[test]
fn a_relay_over_tcp_carries_a_call_and_coturns_tcp_client() {
    let root = tempfile::tempdir().unwrap();
    let relay = ["--relay-allow-loopback", "--relay-secret", "s3cret", "--relay-kbps", "0"];
    let sn1 = start_sn_with(root.path(), "sn1", free_addr(), &[], &relay);
    let sn2 = start_sn_with(root.path(), "sn2", free_addr(), &[sn1.addr], &relay);
    // coturn's client allocates over TCP on the supernode's own TCP port (shared with links).
    let (ok, out) = uclient_relay(&["-t", "-W", "s3cret", "-u", "00aa11bb", "-p", &sn1.addr.port().to_string()]);
    assert!(ok && out.contains("tot_send_msgs=40, tot_recv_msgs=40"), "uclient over TCP:\n{out}");
    // A node that reaches its relay only over TCP still gets its call through.
    let wav = root.path().join("bob.wav");
    let alice = start_node(root.path(), "alice", &[sn1.addr], &["--force-relay", "--relay-transport", "tcp"]);
    let bob =
        start_node(root.path(), "bob", &[sn2.addr], &["--auto-answer", "--output", &format!("wav:{}", wav.display())]);
    wait_signed_in(&alice, Duration::from_secs(10));
    wait_signed_in(&bob, Duration::from_secs(10));
    wait_relay(&alice, Duration::from_secs(10));
    assert_eq!(status(&alice).unwrap()["relay"]["transport"], "tcp");
    call_and_check(&alice, &bob, &wav, "relay-tcp");
}

#[test]
fn a_call_survives_the_death_of_the_relay_it_runs_through() {
    let root = tempfile::tempdir().unwrap();
    let relay = ["--relay-allow-loopback"];
    let sn1 = start_sn_with(root.path(), "sn1", free_addr(), &[], &relay);
    let sn2 = start_sn_with(root.path(), "sn2", free_addr(), &[sn1.addr], &relay);
    // Both force relays: alice's audio goes to bob's relay, bob's to alice's. Alice may sign
    // in to either supernode (her host cache spreads clients); bob signs in to the other one.
    // Privacy relaxed: every pair from the start, as this test was written for (with the
    // default, the upgrade after the call is up may settle both directions on one relay,
    // and the death of the other then needs no failover).
    let alice = start_node(root.path(), "alice", &[sn1.addr, sn2.addr], &["--force-relay", "--privacy", "relaxed"]);
    wait_signed_in(&alice, Duration::from_secs(10));
    wait_relay(&alice, Duration::from_secs(10));
    let alice_sn = status(&alice).and_then(|s| s["supernode"].as_str().map(str::to_string)).expect("alice's supernode");
    let (doomed, other) = if alice_sn == sn1.addr.to_string() { (sn1, sn2) } else { (sn2, sn1) };
    let bob =
        start_node(root.path(), "bob", &[other.addr], &["--auto-answer", "--force-relay", "--privacy", "relaxed"]);
    wait_signed_in(&bob, Duration::from_secs(10));
    wait_relay(&bob, Duration::from_secs(10));
    let control = alice.control.clone();
    let caller = std::thread::spawn(move || {
        let out = ctl(&control, &["call", "bob", "--duration", "5", "--input", "tone:440", "--json"]);
        let events: Vec<serde_json::Value> =
            String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        (out.status.success(), events)
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while !status(&alice).is_some_and(|s| s["call"]["state"] == "connected") {
        assert!(Instant::now() < deadline, "call did not connect");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(1_500));
    // Alice's supernode, and the relay bob's audio runs through, dies mid-call.
    drop(doomed);
    let _survivor = other;
    let (ok, events) = caller.join().unwrap();
    assert!(ok, "the call did not survive: {events:?}");
    let e = event(&events, "call_ended").expect("ended");
    assert_eq!(e["reason"], "call duration reached", "{events:?}");
    assert_eq!(e["code"], "duration-reached", "{events:?}");
    let (sent, recv) = (e["frames_sent"].as_u64().unwrap(), e["frames_received"].as_u64().unwrap());
    // 5 s of audio from bob; at most 1 s of it (50 frames) may be lost to the failover.
    assert!(recv + 50 >= sent, "alice got {recv} of {sent} frames from bob: the gap exceeded 1 s");
    let log = std::fs::read_to_string(root.path().join("node-bob.log")).unwrap_or_default();
    let alice_log = std::fs::read_to_string(root.path().join("node-alice.log")).unwrap_or_default();
    assert!(log.contains("failover"), "bob's call did not fail over:\n{log}\nalice:\n{alice_log}\n{events:?}");
    let moved = log.lines().find(|l| l.contains("failover")).unwrap_or_default();
    println!("alice got {recv} of {sent} frames from bob across the relay's death; bob: {moved}");
}

#[test]
fn a_node_can_take_its_relay_from_an_external_turn_server() {
    let root = tempfile::tempdir().unwrap();
    let sn = start_sn(root.path(), "sn", &[]);
    let turn_addr = free_addr();
    let mut turnserver = tool("turnserver");
    turnserver
        .args(["-n", "--listening-ip", "127.0.0.1", "--relay-ip", "127.0.0.1", "--listening-port"])
        .arg(turn_addr.port().to_string())
        .args(["--lt-cred-mech", "--user", "carol:pa55", "--realm", "supervox.test", "--allow-loopback-peers"])
        .args(["--no-tls", "--no-dtls", "--no-cli", "--no-stdout-log", "--log-file", "/dev/null"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _coturn = Proc { child: turnserver.spawn().expect("start turnserver"), name: "coturn".into() };
    std::thread::sleep(Duration::from_millis(500));
    let wav = root.path().join("bob.wav");
    let ext = [
        "--force-relay",
        "--turn-server",
        &turn_addr.to_string(),
        "--turn-username",
        "carol",
        "--turn-password",
        "pa55",
    ];
    let alice = start_node(root.path(), "alice", &[sn.addr], &ext);
    let bob =
        start_node(root.path(), "bob", &[sn.addr], &["--auto-answer", "--output", &format!("wav:{}", wav.display())]);
    wait_signed_in(&alice, Duration::from_secs(10));
    wait_signed_in(&bob, Duration::from_secs(10));
    let relayed = wait_relay(&alice, Duration::from_secs(10));
    assert_ne!(relayed, sn.addr.to_string());
    call_and_check(&alice, &bob, &wav, "relay-udp");
}

#[test]
fn a_node_on_a_public_address_reports_open_reachability() {
    let root = tempfile::tempdir().unwrap();
    let sn1 = start_sn(root.path(), "sn1", &[]);
    let sn2_addr: std::net::SocketAddr = format!("127.0.0.2:{}", free_addr().port()).parse().unwrap();
    let _sn2 = start_sn_at(root.path(), "sn2", sn2_addr, &[sn1.addr]);
    std::thread::sleep(Duration::from_millis(700));
    let node = start_node(root.path(), "alice", &[sn1.addr], &[]);
    wait_signed_in(&node, Duration::from_secs(10));
    let deadline = Instant::now() + Duration::from_secs(10);
    let r = loop {
        let s = status(&node).unwrap();
        if s["reachability"]["mapping"] != "unknown" {
            break s["reachability"].clone();
        }
        assert!(Instant::now() < deadline, "no reachability after 10 s: {s}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(r["udp"], true, "{r}");
    assert_eq!(r["public"], true, "{r}");
    assert_eq!(r["mapping"], "endpoint-independent", "{r}");
    assert_eq!(r["filtering"], "endpoint-independent", "{r}");
}

/// True if the server has closed `s` by now (EOF or reset; data before the close is skipped).
fn closed_now(s: &mut std::net::TcpStream) -> bool {
    use std::io::Read;
    s.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

/// Connect to `to` from `from_ip` (another loopback address than the honest clients').
fn connect_from(from_ip: &str, to: std::net::SocketAddr) -> std::net::TcpStream {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&format!("{from_ip}:0").parse::<std::net::SocketAddr>().unwrap().into()).unwrap();
    s.connect(&to.into()).unwrap();
    s.into()
}

/// True once the server has closed `s` (EOF or reset) within `within`; false if it stays open.
fn closed_by_server(s: &mut std::net::TcpStream, within: Duration) -> bool {
    use std::io::Read;
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            // A TLS alert for garbage: keep reading until the close.
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return false
            }
            Err(_) => return true,
        }
    }
}

#[test]
fn turn_over_tls_serves_a_call_and_coturns_tls_client_and_shrugs_off_junk() {
    use std::io::Write;
    let root = tempfile::tempdir().unwrap();
    let tls_addr = free_addr();
    let tls_flag = tls_addr.to_string();
    let relay = ["--relay-allow-loopback", "--relay-secret", "s3cret", "--relay-kbps", "0"];
    let sn1 =
        start_sn_with(root.path(), "sn1", free_addr(), &[], &[&relay[..], &["--relay-tls-listen", &tls_flag]].concat());
    let sn2 = start_sn_with(root.path(), "sn2", free_addr(), &[sn1.addr], &relay);
    // Signed-in clients learn the TLS relay and the hash of the certificate the SN made on first start.
    let mut raw = raw::Raw::connect(sn1.addr, 5);
    raw.sign_in("carol");
    let tls = raw.relay_tls.clone().expect("the supernode announces its TLS relay");
    assert_eq!(tls.relays, vec![tls_addr]);
    let cert =
        supervox::tls::RelayCert::load(&sn1.dir.join(supervox::tls::CERT_FILE), &sn1.dir.join(supervox::tls::KEY_FILE))
            .unwrap();
    assert_eq!(tls.fingerprint, cert.fingerprint);
    // Alice reaches her relay only over TLS and holds her allocation there.
    let wav = root.path().join("bob.wav");
    let alice = start_node(root.path(), "alice", &[sn1.addr], &["--force-relay", "--relay-transport", "tls"]);
    let bob =
        start_node(root.path(), "bob", &[sn2.addr], &["--auto-answer", "--output", &format!("wav:{}", wav.display())]);
    wait_signed_in(&alice, Duration::from_secs(10));
    wait_signed_in(&bob, Duration::from_secs(10));
    wait_relay(&alice, Duration::from_secs(10));
    assert_eq!(status(&alice).unwrap()["relay"]["transport"], "tls");
    // Junk from another address: idle connections that never say hello (more than one
    // address may hold), garbage, and plain STUN on the TLS port.
    let flood = Instant::now();
    let mut idle: Vec<_> = (0..100).map(|_| connect_from("127.0.0.2", tls_addr)).collect();
    let mut junk: Vec<_> = (0..4)
        .map(|i| {
            let mut s = connect_from("127.0.0.3", tls_addr);
            let stun = [0u8, 1, 0, 0, 0x21, 0x12, 0xA4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
            let bytes: Vec<u8> = if i == 0 { stun.to_vec() } else { (0..500).map(|j| (j * 37 + i) as u8).collect() };
            s.write_all(&bytes).unwrap();
            s
        })
        .collect();
    for s in &mut junk {
        assert!(closed_by_server(s, Duration::from_secs(2)), "garbage on the TLS port was not closed");
    }
    // Beyond the per-address limit, connections are closed at once.
    std::thread::sleep(Duration::from_millis(300));
    let refused = idle.iter_mut().map(closed_now).filter(|c| *c).count();
    assert!((100 - 64..100).contains(&refused), "{refused} of 100 idle connections from one address were refused");
    // Meanwhile coturn's own client runs TURN over TLS against the same port (-S: TLS).
    let (ok, out) = uclient_relay(&["-t", "-S", "-W", "s3cret", "-u", "00aa11bb", "-p", &tls_addr.port().to_string()]);
    assert!(ok && out.contains("tot_send_msgs=40, tot_recv_msgs=40"), "uclient over TLS:\n{out}");
    // And alice's call through her TLS allocation carries audio.
    call_and_check(&alice, &bob, &wav, "relay-tcp");
    // The idle connections met the handshake timeout (5 s).
    std::thread::sleep((flood + Duration::from_millis(6_500)).saturating_duration_since(Instant::now()));
    let open = idle.iter_mut().map(closed_now).filter(|c| !c).count();
    assert_eq!(open, 0, "idle TLS connections were kept past the handshake timeout");
    let log = std::fs::read_to_string(root.path().join("sn1.log")).unwrap_or_default();
    assert!(log.contains(&format!("TURN over TLS on {tls_addr}")), "{log}");
}

#[test]
fn a_node_pins_the_certificate_of_an_external_turns_server() {
    let root = tempfile::tempdir().unwrap();
    let sn = start_sn(root.path(), "sn", &[]);
    // coturn with a self-signed certificate; the nodes are told its hash.
    let certs = root.path().join("coturn");
    std::fs::create_dir_all(&certs).unwrap();
    let cert = supervox::tls::RelayCert::load_or_create(&certs).unwrap();
    let (plain, tls) = (free_addr(), free_addr());
    let mut turnserver = tool("turnserver");
    turnserver
        .args(["-n", "--listening-ip", "127.0.0.1", "--relay-ip", "127.0.0.1", "--listening-port"])
        .arg(plain.port().to_string())
        .arg("--tls-listening-port")
        .arg(tls.port().to_string())
        .arg("--cert")
        .arg(certs.join(supervox::tls::CERT_FILE))
        .arg("--pkey")
        .arg(certs.join(supervox::tls::KEY_FILE))
        .args(["--lt-cred-mech", "--user", "carol:pa55", "--realm", "supervox.test", "--allow-loopback-peers"])
        .args(["--no-dtls", "--no-cli", "--no-stdout-log", "--log-file", "/dev/null"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _coturn = Proc { child: turnserver.spawn().expect("start turnserver"), name: "coturn".into() };
    std::thread::sleep(Duration::from_millis(500));
    let server = format!("turns:{tls}");
    let ext = |pin: &str| {
        [
            "--force-relay".to_string(),
            "--turn-server".into(),
            server.clone(),
            "--turn-tls-fingerprint".into(),
            pin.into(),
            "--turn-username".into(),
            "carol".into(),
            "--turn-password".into(),
            "pa55".into(),
        ]
    };
    let good = ext(&supervox::tls::format_fingerprint(&cert.fingerprint));
    let bad = ext(&"00".repeat(32));
    let wav = root.path().join("bob.wav");
    let alice = start_node(root.path(), "alice", &[sn.addr], &good.iter().map(String::as_str).collect::<Vec<_>>());
    let mallory = start_node(root.path(), "mallory", &[sn.addr], &bad.iter().map(String::as_str).collect::<Vec<_>>());
    let bob =
        start_node(root.path(), "bob", &[sn.addr], &["--auto-answer", "--output", &format!("wav:{}", wav.display())]);
    wait_signed_in(&alice, Duration::from_secs(10));
    wait_signed_in(&bob, Duration::from_secs(10));
    let relayed = wait_relay(&alice, Duration::from_secs(10));
    assert_ne!(relayed, sn.addr.to_string());
    assert_eq!(status(&alice).unwrap()["relay"]["transport"], "tls");
    call_and_check(&alice, &bob, &wav, "relay-tcp");
    // Another certificate than the pinned one: no allocation.
    wait_signed_in(&mallory, Duration::from_secs(10));
    assert!(status(&mallory).unwrap()["relay"]["allocated"].is_null());
    let log = std::fs::read_to_string(root.path().join("node-mallory.log")).unwrap_or_default();
    assert!(log.contains("TLS handshake with") && log.contains("certificate"), "{log}");
}

#[test]
fn contradictory_relay_flags_are_refused() {
    let base = ["node", "--name", "x", "--seed", "127.0.0.1:9", "--turn-username", "u", "--turn-password", "p"];
    for (extra, says) in [
        (&["--turn-server", "turns:127.0.0.1:5349"][..], "--turn-tls-fingerprint"),
        (&["--turn-server", "127.0.0.1:3478", "--relay-transport", "tls"][..], "turns:"),
        (&["--turn-server", "127.0.0.1:3478", "--turn-tls-fingerprint", &"ab".repeat(32)][..], "turns:"),
        (&["--turn-server", "turns:127.0.0.1:5349", "--turn-tls-fingerprint", "abcd"][..], "32 bytes"),
        (&["--turn-server", "turns:relay.example:5349"][..], "IP:PORT"),
    ] {
        let out = Command::new(BIN).args(base).args(extra).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(says), "{extra:?}: {err}");
    }
}
