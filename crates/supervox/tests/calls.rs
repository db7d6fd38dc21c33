//! Calls between real processes: 2 supernodes, 2 clients on loopback.

mod common;

use common::*;
use std::time::{Duration, Instant};

#[test]
fn call_connects_and_the_tone_arrives() {
    let root = tempfile::tempdir().unwrap();
    let sn1 = start_sn(root.path(), "sn1", &[]);
    let sn2 = start_sn(root.path(), "sn2", &[sn1.addr]);
    let wav = root.path().join("bob.wav");
    let alice = start_node(root.path(), "alice", &[sn1.addr], &[]);
    let bob = start_node(
        root.path(),
        "bob",
        &[sn2.addr],
        &["--auto-answer", "--output", &format!("wav:{}", wav.display()), "--input", "tone:1000"],
    );
    assert_eq!(wait_signed_in(&alice, Duration::from_secs(10)), sn1.addr.to_string());
    assert_eq!(wait_signed_in(&bob, Duration::from_secs(10)), sn2.addr.to_string());
    let (ok, events) = call(&alice, "bob", &["--duration", "2", "--input", "tone:440", "--output", "null"]);
    assert!(ok, "call failed: {events:?}");
    let c = event(&events, "call_connected").expect("connected");
    assert_eq!(c["path"], "direct-udp");
    assert_eq!(c["peer"], "bob");
    assert!(c["setup_ms"].as_u64().unwrap() < 2_000);
    let e = event(&events, "call_ended").expect("ended");
    let (sent, recv) = (e["frames_sent"].as_u64().unwrap(), e["frames_received"].as_u64().unwrap());
    assert!((95..=105).contains(&sent), "2 s of 20 ms frames: {sent}");
    assert!(recv as f64 >= 0.95 * sent as f64, "alice got {recv} of {sent} frames from bob");
    // Bob's recording holds alice's 440 Hz tone.
    let deadline = Instant::now() + Duration::from_secs(5);
    while status(&bob).is_some_and(|s| !s["call"].is_null()) {
        assert!(Instant::now() < deadline, "bob still in the call");
        std::thread::sleep(Duration::from_millis(50));
    }
    let pcm = read_wav(&wav);
    assert!(pcm.len() > 48_000, "recorded only {} samples", pcm.len());
    let hz = supervox_media::analysis::dominant_frequency(&pcm, 48_000).expect("silent recording");
    assert!((hz - 440.0).abs() < 5.0, "bob heard {hz} Hz");
}

#[test]
fn hangup_from_either_side_ends_both() {
    let root = tempfile::tempdir().unwrap();
    let sn = start_sn(root.path(), "sn", &[]);
    let alice = start_node(root.path(), "alice", &[sn.addr], &[]);
    let bob = start_node(root.path(), "bob", &[sn.addr], &["--auto-answer"]);
    wait_signed_in(&alice, Duration::from_secs(10));
    wait_signed_in(&bob, Duration::from_secs(10));
    for (hanger, other) in [(&bob, &alice), (&alice, &bob)] {
        let control = alice.control.clone();
        let caller = std::thread::spawn(move || {
            let out = ctl(&control, &["call", "bob", "--json"]);
            let events: Vec<serde_json::Value> =
                String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
            (out.status.success(), events)
        });
        // Wait until both sides are connected, then hang up on one side.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !status(&bob).is_some_and(|s| s["call"]["state"] == "connected")
            || !status(&alice).is_some_and(|s| s["call"]["state"] == "connected")
        {
            assert!(Instant::now() < deadline, "call did not connect");
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(300));
        let out = ctl(&hanger.control, &["hangup"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let (ok, events) = caller.join().unwrap();
        assert!(ok, "{events:?}");
        let ended = event(&events, "call_ended").unwrap();
        let reason = ended["reason"].as_str().unwrap().to_string();
        let (expected, code) =
            if hanger.name == "bob" { ("remote hangup", "remote-hangup") } else { ("local hangup", "local-hangup") };
        assert!(reason.starts_with(expected), "{reason}");
        assert_eq!(ended["code"], code, "{ended}");
        assert_eq!(ended["normal"], true, "{ended}");
        let deadline = Instant::now() + Duration::from_secs(3);
        while status(other).is_none_or(|s| !s["call"].is_null()) {
            assert!(Instant::now() < deadline, "{} still in the call", other.name);
            std::thread::sleep(Duration::from_millis(50));
        }
        // Hanging up with no call is a clear error.
        let out = ctl(&hanger.control, &["hangup"]);
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("no call in progress"));
    }
}

#[test]
fn calls_to_unknown_or_offline_names_fail_fast_with_a_reason() {
    let root = tempfile::tempdir().unwrap();
    let sn1 = start_sn(root.path(), "sn1", &[]);
    let sn2 = start_sn(root.path(), "sn2", &[sn1.addr]);
    let alice = start_node(root.path(), "alice", &[sn1.addr], &[]);
    let carol = start_node(root.path(), "carol", &[sn2.addr], &[]);
    wait_signed_in(&alice, Duration::from_secs(10));
    wait_signed_in(&carol, Duration::from_secs(10));
    let t = Instant::now();
    let (ok, events) = call(&alice, "nobody", &[]);
    assert!(!ok);
    let failed = event(&events, "call_failed").expect("call_failed");
    let reason = failed["reason"].as_str().unwrap().to_string();
    assert!(reason.contains("no user named"), "{reason}");
    assert_eq!(failed["code"], "no-such-user", "{failed}");
    assert!(t.elapsed() < Duration::from_secs(3), "took {:?}", t.elapsed());
    // carol (on the other supernode) goes offline: her name stays claimed.
    drop(carol);
    std::thread::sleep(Duration::from_millis(300));
    let (ok, events) = call(&alice, "carol", &[]);
    assert!(!ok);
    let failed = event(&events, "call_failed").expect("call_failed");
    let reason = failed["reason"].as_str().unwrap().to_string();
    assert!(reason.contains("offline"), "{reason}");
    assert_eq!(failed["code"], "offline", "{failed}");
    // Bad names and flags get clear errors, not crashes.
    let (ok, events) = call(&alice, "Not A Name", &[]);
    assert!(!ok);
    let failed = event(&events, "call_failed").unwrap();
    assert!(failed["reason"].as_str().unwrap().contains("invalid name"));
    assert_eq!(failed["code"], "invalid-name", "{failed}");
    let out = ctl(&alice.control, &["call", "carol", "--input", "tone:abc"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("tone"));
}

#[test]
fn interrupting_ctl_call_hangs_up() {
    let root = tempfile::tempdir().unwrap();
    let sn = start_sn(root.path(), "sn", &[]);
    let alice = start_node(root.path(), "alice", &[sn.addr], &[]);
    let bob = start_node(root.path(), "bob", &[sn.addr], &["--auto-answer"]);
    wait_signed_in(&alice, Duration::from_secs(10));
    wait_signed_in(&bob, Duration::from_secs(10));
    let mut ctl_call = std::process::Command::new(BIN)
        .arg("ctl")
        .arg("--control")
        .arg(&alice.control)
        .args(["call", "bob", "--json"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !status(&bob).is_some_and(|s| s["call"]["state"] == "connected") {
        assert!(Instant::now() < deadline, "call did not connect");
        std::thread::sleep(Duration::from_millis(50));
    }
    ctl_call.kill().unwrap();
    ctl_call.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    while status(&bob).is_none_or(|s| !s["call"].is_null()) || status(&alice).is_none_or(|s| !s["call"].is_null()) {
        assert!(Instant::now() < deadline, "call outlived its ctl client");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `--relay-transport tcp` turns direct UDP off: with no relay in reach the call
/// goes to the peer's passive TCP candidate, both ways round.
#[test]
fn a_node_without_udp_media_calls_over_direct_tcp() {
    let root = tempfile::tempdir().unwrap();
    let sn1 = start_sn(root.path(), "sn1", &[]);
    let wav = root.path().join("bob.wav");
    let alice = start_node(root.path(), "alice", &[sn1.addr], &["--auto-answer", "--relay-transport", "tcp"]);
    let bob = start_node(
        root.path(),
        "bob",
        &[sn1.addr],
        &["--auto-answer", "--output", &format!("wav:{}", wav.display()), "--input", "tone:1000"],
    );
    wait_signed_in(&alice, Duration::from_secs(10));
    wait_signed_in(&bob, Duration::from_secs(10));
    for (caller, callee) in [(&alice, "bob"), (&bob, "alice")] {
        let (ok, events) = call(caller, callee, &["--duration", "2", "--input", "tone:440", "--output", "null"]);
        assert!(ok, "call to {callee} failed: {events:?}");
        let c = event(&events, "call_connected").expect("connected");
        assert_eq!(c["path"], "direct-tcp", "{events:?}");
        assert!(event(&events, "path_changed").is_none(), "{events:?}");
        let e = event(&events, "call_ended").expect("ended");
        let (sent, recv) = (e["frames_sent"].as_u64().unwrap(), e["frames_received"].as_u64().unwrap());
        assert!(sent >= 95, "2 s of 20 ms frames: {sent}");
        assert!(recv as f64 >= 0.95 * sent as f64, "got {recv} of {sent} frames from {callee}");
        let deadline = Instant::now() + Duration::from_secs(5);
        while [&alice, &bob].iter().any(|n| status(n).is_some_and(|s| !s["call"].is_null())) {
            assert!(Instant::now() < deadline, "still in the call");
            std::thread::sleep(Duration::from_millis(50));
        }
        if callee == "bob" {
            // Bob recorded alice's 440 Hz tone: audio went the other way too.
            let pcm = read_wav(&wav);
            assert!(pcm.len() > 48_000, "recorded only {} samples", pcm.len());
            let hz = supervox_media::analysis::dominant_frequency(&pcm, 48_000).expect("silent recording");
            assert!((hz - 440.0).abs() < 5.0, "bob heard {hz} Hz");
        }
    }
}

#[test]
fn an_honest_call_shows_the_directory_verified_peer_key_and_fingerprint() {
    let root = tempfile::tempdir().unwrap();
    let sn1 = start_sn(root.path(), "sn1", &[]);
    let sn2 = start_sn(root.path(), "sn2", &[sn1.addr]);
    let alice = start_node(root.path(), "alice", &[sn1.addr], &[]);
    let bob = start_node(root.path(), "bob", &[sn2.addr], &["--auto-answer"]);
    wait_signed_in(&alice, Duration::from_secs(10));
    wait_signed_in(&bob, Duration::from_secs(10));
    let (a, b) = (status(&alice).unwrap(), status(&bob).unwrap());
    let control = alice.control.clone();
    let caller = std::thread::spawn(move || {
        let out =
            ctl(&control, &["call", "bob", "--json", "--duration", "2", "--input", "tone:440", "--output", "null"]);
        let events: Vec<serde_json::Value> =
            String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        (out.status.success(), events)
    });
    // The callee's status names the caller by key and fingerprint, confirmed by the directory.
    let deadline = Instant::now() + Duration::from_secs(10);
    let call = loop {
        if let Some(c) = status(&bob).map(|s| s["call"].clone()).filter(|c| c["state"] == "connected") {
            break c;
        }
        assert!(Instant::now() < deadline, "bob's call did not connect");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(call["peer"], "alice");
    assert_eq!(call["verified"], "directory", "{call}");
    assert_eq!(call["user_id"], a["user_id"], "{call}");
    assert_eq!(call["fingerprint"], a["fingerprint"], "{call}");
    let (ok, events) = caller.join().unwrap();
    assert!(ok, "call failed: {events:?}");
    let c = event(&events, "call_connected").expect("connected");
    assert_eq!(c["peer"], "bob");
    assert_eq!(c["verified"], "directory", "{c}");
    assert_eq!(c["user_id"], b["user_id"], "{c}");
    assert_eq!(c["fingerprint"], b["fingerprint"], "{c}");
    // bob's log shows the caller with its key and verification, auto-answered.
    let log = std::fs::read_to_string(root.path().join("node-bob.log")).unwrap();
    let fp = a["fingerprint"].as_str().unwrap();
    assert!(
        log.lines().any(|l| l.contains("incoming call")
            && l.contains(&format!("fingerprint {fp}, verified directory"))
            && l.contains("(auto-answer)")),
        "{log}"
    );
    assert!(!log.contains("(unverified)"), "{log}");
}
