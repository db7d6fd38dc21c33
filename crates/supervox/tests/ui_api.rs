//! The node's local API (docs/API.md) as an attacker and as a program see
//! it: real node processes on loopback, raw HTTP.

mod common;
#[path = "common/http.rs"]
mod http;

use common::*;
use http::{raw, Api};
use serde_json::json;
use std::time::Duration;

/// A signed-in node's API (with its token) and the node.
fn node_with_api(root: &std::path::Path, name: &str, seeds: &[std::net::SocketAddr], extra: &[&str]) -> (Node, Api) {
    let node = start_node(root, name, seeds, extra);
    wait_signed_in(&node, Duration::from_secs(15));
    let url = status(&node).and_then(|s| s["ui"].as_str().map(String::from)).expect("status names the ui");
    let api = Api::of(&url, &node.dir);
    (node, api)
}

fn login_url(node: &Node) -> String {
    let out = std::process::Command::new(BIN).args(["ui", "--print", "--control"]).arg(&node.control).output().unwrap();
    assert!(out.status.success(), "supervox ui: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn strangers_forged_hosts_and_foreign_origins_are_refused_and_bad_bodies_get_json_errors() {
    let dir = tempfile::tempdir().unwrap();
    let sn = start_sn(dir.path(), "sn", &[]);
    let (alice, api) = node_with_api(dir.path(), "alice", &[sn.addr], &[]);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(alice.dir.join("ui-token")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the API token is private");

    // With the token: the same answer as `ctl status`.
    let st = api.get("/api/v1/status");
    assert_eq!(st.status, 200, "{st:?}");
    assert_eq!(st.json()["name"], "alice");
    assert_eq!(st.json()["ui"].as_str(), Some(format!("http://{}/", api.addr).as_str()));
    assert!(st.json()["reachability"]["summary"].is_string());
    assert_eq!(api.get("/api/v1/version").json()["api"], 1);
    // Every answer forbids framing and inline script.
    assert_eq!(st.header("x-frame-options"), Some("DENY"));
    assert!(st.header("content-security-policy").is_some_and(|c| c.contains("frame-ancestors 'none'")));

    // No token, a wrong one: 401.
    let anon = Api { token: None, ..api.clone() };
    for a in [&anon, &Api { token: Some("0".repeat(64)), ..api.clone() }] {
        let r = a.get("/api/v1/status");
        assert_eq!((r.status, r.code().as_str()), (401, "unauthorized"), "{r:?}");
    }
    // The page itself is served to anyone on loopback (it holds no secret), the API is not.
    assert_eq!(anon.get("/").status, 200);
    assert_eq!(anon.get("/api/v1/contacts").status, 401);

    // DNS rebinding: a page on evil.example that resolves to 127.0.0.1 sends its own Host.
    for host in ["evil.example", &format!("evil.example:{}", api.addr.port()), "127.0.0.1:1"] {
        let r = api.send("GET", "/api/v1/status", &[("Host", host)], None);
        assert_eq!((r.status, r.code().as_str()), (403, "bad-host"), "{host}: {r:?}");
    }
    let r = raw(api.addr, "GET", "/", &[], None);
    assert_eq!((r.status, r.code().as_str()), (403, "bad-host"), "no Host at all");
    // CSRF: another origin, even another port on loopback.
    for origin in ["http://evil.example", "http://127.0.0.1:1", "null"] {
        let r = api.send("POST", "/api/v1/hangup", &[("Origin", origin)], None);
        assert_eq!((r.status, r.code().as_str()), (403, "bad-origin"), "{origin}: {r:?}");
    }

    // Malformed and oversized bodies.
    let bad = |body: &[u8]| api.send("POST", "/api/v1/contacts", &[("Content-Type", "application/json")], Some(body));
    for body in [&b"{not json"[..], b"", b"[]", br#"{"action":"befriend","name":"bob"}"#, br#"{"name":"bob"}"#] {
        let r = bad(body);
        assert_eq!((r.status, r.code().as_str()), (400, "bad-json"), "{:?}: {r:?}", String::from_utf8_lossy(body));
    }
    let big = format!(r#"{{"text":"{}"}}"#, "x".repeat(70 * 1024));
    let r = api.send("POST", "/api/v1/messages/bob", &[("Content-Type", "application/json")], Some(big.as_bytes()));
    assert_eq!((r.status, r.code().as_str()), (413, "too-large"), "{:?}", r.status);
    let r = api.get("/api/v1/nothing-here");
    assert_eq!((r.status, r.code().as_str()), (404, "not-found"));
    let r = api.get("/api/v1/hangup");
    assert_eq!((r.status, r.code().as_str()), (405, "method-not-allowed"));
    // The node's own refusals keep their codes.
    let r = api.post("/api/v1/presence", &json!({"state": "sleeping"}));
    assert_eq!((r.status, r.code().as_str()), (400, "bad-request"), "{r:?}");
    let r = api.post("/api/v1/hangup", &json!({}));
    assert_eq!(r.status, 409, "{r:?}");
    let r = api.post("/api/v1/mute", &json!({"muted": true}));
    assert_eq!((r.status, r.code().as_str()), (409, "no-call"), "{r:?}");

    // A browser: `supervox ui` hands out a one-time code that becomes a cookie.
    let url = login_url(&alice);
    let path = url.split_once(&api.addr.to_string()).map(|(_, p)| p.to_string()).expect("login URL on our address");
    let r = anon.send("GET", &path, &[], None);
    assert_eq!(r.status, 303, "{r:?}");
    let set = r.header("set-cookie").expect("a session cookie").to_string();
    assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict"), "{set}");
    let cookie = set.split(';').next().unwrap().to_string();
    assert!(cookie.starts_with(&format!("sv_{}=", api.addr.port())), "{cookie}");
    let again = anon.send("GET", &path, &[], None);
    assert_eq!(again.status, 401, "a login code works once");
    let r = anon.send("GET", "/api/v1/status", &[("Cookie", &cookie)], None);
    assert_eq!(r.status, 200, "{r:?}");
    // Ambient credentials: a change needs our own Origin.
    let body = json!({"state": "away", "text": "lunch"}).to_string();
    let ct = ("Content-Type", "application/json");
    let r = anon.send("POST", "/api/v1/presence", &[("Cookie", &cookie), ct], Some(body.as_bytes()));
    assert_eq!((r.status, r.code().as_str()), (403, "origin-required"), "{r:?}");
    let evil = [("Cookie", cookie.as_str()), ct, ("Origin", "http://evil.example")];
    assert_eq!(anon.send("POST", "/api/v1/presence", &evil, Some(body.as_bytes())).status, 403);
    let ours = [("Cookie", cookie.as_str()), ct, ("Origin", &api.origin())];
    let r = anon.send("POST", "/api/v1/presence", &ours, Some(body.as_bytes()));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(api.get("/api/v1/status").json()["presence"], "away");
    let forged = anon.send("GET", "/api/v1/status", &[("Cookie", &format!("sv_{}=forged", api.addr.port()))], None);
    assert_eq!(forged.status, 401);
}

#[test]
fn a_call_through_the_api_streams_its_path_and_quality_every_second() {
    let dir = tempfile::tempdir().unwrap();
    let sn = start_sn(dir.path(), "sn", &[]);
    let (_bob, _) = node_with_api(dir.path(), "bob", &[sn.addr], &["--auto-answer", "--input", "tone:660"]);
    let (_alice, api) = node_with_api(dir.path(), "alice", &[sn.addr], &["--input", "tone:440"]);
    let events = api.events();
    assert_eq!(events.status, 200);
    let r = api.post("/api/v1/call", &json!({"name": "bob"}));
    assert_eq!(r.status, 200, "{r:?}");
    let call_id = r.json()["call_id"].as_str().expect("call id").to_string();
    let same = |v: &serde_json::Value| v["call_id"] == call_id.as_str();
    let up = events.wait(Duration::from_secs(15), "connected", |v| v["event"] == "call_connected" && same(v));
    assert_eq!(up["path"], "direct-udp");
    // The answer did not end the call: its figures arrive each second.
    let mut stats = Vec::new();
    for _ in 0..3 {
        stats.push(events.wait(Duration::from_secs(3), "stats", |v| v["event"] == "call_stats" && same(v)));
    }
    assert!(stats.iter().all(|s| s["path"] == "direct-udp" && s["jitter_ms"].is_number()), "{stats:?}");
    assert!(stats[2]["frames_received"].as_u64() > stats[0]["frames_received"].as_u64(), "{stats:?}");
    assert!(stats[2]["mos"].as_f64().is_some_and(|m| m > 3.5), "{stats:?}");
    let r = api.post("/api/v1/mute", &json!({"muted": true}));
    assert_eq!(r.status, 200, "{r:?}");
    events.wait(Duration::from_secs(3), "muted stats", |v| v["event"] == "call_stats" && v["muted"] == true);
    let st = api.get("/api/v1/status").json();
    assert_eq!((st["call"]["state"].as_str(), st["call"]["muted"].as_bool()), (Some("connected"), Some(true)));
    assert_eq!(st["call"]["path"], "direct-udp");
    assert_eq!(api.post("/api/v1/hangup", &json!({})).status, 200);
    let end = events.wait(Duration::from_secs(5), "ended", |v| v["event"] == "call_ended" && same(v));
    assert_eq!(end["code"], "local-hangup");
    let history = api.get("/api/v1/history").json();
    assert_eq!(history[0]["peer"], "bob");
    assert_eq!(history[0]["path"], "direct-udp");
    assert!(history[0]["duration_ms"].as_u64().is_some_and(|d| d > 2_000), "{history}");
}

#[test]
fn the_event_stream_survives_a_supernode_failover() {
    let dir = tempfile::tempdir().unwrap();
    let sn1 = start_sn(dir.path(), "sn1", &[]);
    let sn2 = start_sn(dir.path(), "sn2", &[sn1.addr]);
    let (alice, api) = node_with_api(dir.path(), "alice", &[sn1.addr, sn2.addr], &[]);
    let first = status(&alice).unwrap()["supernode"].as_str().unwrap().to_string();
    let events = api.events();
    assert_eq!(events.status, 200);
    // Bob on the other supernode; the one alice is on dies.
    let (dead, other) = if first == sn1.addr.to_string() { (sn1, sn2) } else { (sn2, sn1) };
    let (bob, _) = node_with_api(dir.path(), "bob", &[other.addr], &[]);
    drop(dead);
    let lost = events.wait(Duration::from_secs(15), "lost", |v| v["event"] == "lost_supernode");
    assert_eq!(lost["supernode"], first.as_str());
    let back = events.wait(Duration::from_secs(20), "signed in", |v| v["event"] == "signed_in");
    assert_eq!(back["supernode"], other.addr.to_string().as_str());
    // The same stream still carries what happens next.
    let out = ctl(&bob.control, &["contacts", "add", "alice", "--message", "after the failover"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let req = events.wait(Duration::from_secs(15), "request", |v| v["event"] == "contact_request");
    assert_eq!((req["name"].as_str(), req["message"].as_str()), (Some("bob"), Some("after the failover")));
}

#[test]
fn a_remote_bind_is_refused_without_its_flag_and_served_over_tls_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let sn = start_sn(dir.path(), "sn", &[]);
    let mut n = start_node(dir.path(), "carol", &[sn.addr], &["--ui", "0.0.0.0:0"]);
    let st = wait_for(Duration::from_secs(10), "carol exits", || n.proc.child.try_wait().ok().flatten());
    assert!(!st.success());
    assert!(node_log(dir.path(), "carol").contains("--ui-allow-remote"), "{}", node_log(dir.path(), "carol"));

    // With the flag it listens on every address, over HTTPS only (we connect over loopback).
    let port = free_addr().port();
    let ui = format!("0.0.0.0:{port}");
    let dave = start_node(dir.path(), "dave", &[sn.addr], &["--ui", &ui, "--ui-allow-remote"]);
    wait_signed_in(&dave, Duration::from_secs(15));
    let token = std::fs::read_to_string(dave.dir.join("ui-token")).unwrap().trim().to_string();
    let cert = std::fs::read(dave.dir.join("ui-tls").join(supervox::tls::CERT_FILE)).unwrap();
    use rustls::pki_types::pem::PemObject;
    let der = rustls::pki_types::CertificateDer::from_pem_slice(&cert).unwrap();
    let pinned = supervox::tls::pinned_client_config(supervox::tls::fingerprint(&der)).unwrap();
    // That config offers TURN's ALPN; the web app speaks HTTP/1.1.
    let mut config = (*pinned).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let config = std::sync::Arc::new(config);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let answer = rt.block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("supervox-relay").unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.expect("TLS");
        let req =
            format!("GET /api/v1/version HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n\r\n");
        tls.write_all(req.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        let _ = tls.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).to_string()
    });
    assert!(answer.starts_with("HTTP/1.0 200") && answer.contains("\"api\":1"), "{answer}");
    // Plain HTTP gets no answer from a TLS server.
    let api = Api { addr: ([127, 0, 0, 1], port).into(), token: Some(token) };
    let plain = std::panic::catch_unwind(|| api.get("/api/v1/version"));
    assert!(plain.map(|a| a.status != 200).unwrap_or(true));
}
