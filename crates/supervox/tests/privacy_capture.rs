//! Issue 12's address-leak finding, checked on the wire: a packet capture of
//! the link between two strangers' namespaces shows no datagram between their
//! own addresses before the call is up (only their relay traffic with the
//! supernode), and direct datagrams once it is. Real processes in network
//! namespaces joined by the project's user-space link (`supervox-netlab`,
//! which records the packets it forwards). Needs root and `ip`: fails, never
//! skips, without them.

use serde_json::Value;
use std::net::SocketAddrV4;
use std::path::Path;
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant, SystemTime};
use supervox_netlab::{Impairment, Lab, LinkConfig, Namespace, NsProcess};

const BIN: &str = env!("CARGO_BIN_EXE_supervox");

fn spawn(ns: &Namespace, args: &[&str], log: &Path) -> NsProcess {
    let mut cmd = ns.command(BIN);
    cmd.args(args).stdout(Stdio::null()).stderr(std::fs::File::create(log).expect("log"));
    ns.spawn(cmd).expect("spawn in namespace")
}

fn status(control: &Path) -> Option<Value> {
    let out = Command::new(BIN).arg("ctl").arg("--control").arg(control).args(["status", "--json"]).output().ok()?;
    serde_json::from_slice(&out.stdout).ok()
}

fn wait_ready(control: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !status(control).is_some_and(|s| s["relay"]["allocated"].is_string() && s["reachability"]["udp"] == true) {
        assert!(Instant::now() < deadline, "{} never had a relay and a NAT probe", control.display());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `ctl call` from `control`, each event line with the wall time it was read.
fn call(control: &Path, callee: &str) -> Vec<(SystemTime, Value)> {
    use std::io::BufRead;
    let mut child = Command::new(BIN)
        .arg("ctl")
        .arg("--control")
        .arg(control)
        .args(["call", callee, "--duration", "3", "--json"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("ctl");
    let out = child.stdout.take().expect("stdout");
    let lines = std::io::BufReader::new(out)
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str(&l).ok().map(|v| (SystemTime::now(), v)))
        .collect();
    let _ = child.wait();
    lines
}

/// When `log` says the call connected: the tracing timestamp
/// (`YYYY-MM-DDTHH:MM:SS.ffffffZ`, UTC) of its "connected over" line.
fn connected_at(log: &Path) -> SystemTime {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let line = text.lines().find(|l| l.contains("connected over")).unwrap_or_else(|| panic!("{text}"));
    let start = line.find("20").expect("a timestamp");
    let ts = &line[start..start + 26];
    let num = |r: std::ops::Range<usize>| ts[r].parse::<i64>().expect("digits");
    let (y, m, d) = (num(0..4), num(5..7), num(8..10));
    // Days from 1970-01-01 to y-m-d (proleptic Gregorian, H. Hinnant's algorithm).
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    let secs = days * 86_400 + num(11..13) * 3600 + num(14..16) * 60 + num(17..19);
    let micros = num(20..26);
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs as u64) + Duration::from_micros(micros as u64)
}

#[test]
fn strangers_exchange_no_datagram_between_their_own_addresses_before_the_call_is_up() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let lab = Lab::new().expect("a network lab (needs root and ip)");
    let (a, b) = (lab.namespace("a").unwrap(), lab.namespace("b").unwrap());
    let imp = Impairment::from_str("delay=10ms").unwrap();
    let link = lab.link(&a, &b, LinkConfig::symmetric(imp).with_capture(200_000)).unwrap();
    let (ip_a, ip_b) = (link.addr_a(), link.addr_b());
    // The supernode and alice share namespace a; bob is alone behind the link.
    let sn = format!("{ip_a}:7000");
    let sn_dir = dir.join("sn").to_string_lossy().to_string();
    // The lab link is in 10.77/16: the relay must be allowed to reach private peers.
    let sn_args =
        ["supernode", "--listen", &sn, "--data-dir", &sn_dir, "--relay-allow-private", "--member-difficulty", "4"];
    let _sn = spawn(&a, &sn_args, &dir.join("sn.log"));
    std::thread::sleep(Duration::from_millis(300));
    let alice_media = SocketAddrV4::new(ip_a, 41000);
    let (ca, cb) = (dir.join("alice.sock"), dir.join("bob.sock"));
    let node = |name: &str, control: &Path, media: String, extra: &[&str]| {
        let data = dir.join(name).to_string_lossy().to_string();
        let c = control.to_string_lossy().to_string();
        let mut args =
            vec!["node", "--name", name, "--seed", &sn, "--media", &media, "--data-dir", &data, "--control", &c];
        args.extend_from_slice(extra);
        args.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let alice_args = node("alice", &ca, alice_media.to_string(), &[]);
    let bob_args = node("bob", &cb, format!("{ip_b}:0"), &["--auto-answer", "--input", "tone:440"]);
    let _alice = spawn(&a, &alice_args.iter().map(String::as_str).collect::<Vec<_>>(), &dir.join("alice.log"));
    let _bob = spawn(&b, &bob_args.iter().map(String::as_str).collect::<Vec<_>>(), &dir.join("bob.log"));
    wait_ready(&ca);
    wait_ready(&cb);
    let events = call(&ca, "bob");
    let logs = || {
        format!(
            "{}\n{}",
            std::fs::read_to_string(dir.join("alice.log")).unwrap_or_default(),
            std::fs::read_to_string(dir.join("bob.log")).unwrap_or_default()
        )
    };
    let (_, connected) =
        events.iter().find(|(_, e)| e["event"] == "call_connected").unwrap_or_else(|| panic!("{events:?}\n{}", logs()));
    assert_eq!(connected["path"], "relay-udp", "a stranger's call starts on the relays: {events:?}");
    assert!(
        events.iter().any(|(_, e)| e["event"] == "path_changed" && e["path"] == "direct-udp"),
        "and then goes direct: {events:?}\n{}",
        logs()
    );
    let packets = link.captured();
    // Each side reveals its own addresses once *its* side of the call is up
    // (its log's "connected over" line; the event alice's ctl printed is a
    // little later than her node's).
    let (t_alice, t_bob) = (connected_at(&dir.join("alice.log")), connected_at(&dir.join("bob.log")));
    let t_up = t_alice.min(t_bob);
    // Between bob's address and alice's own media socket, either way (UDP or TCP):
    // possible only once alice offered it, after her call was up.
    let direct = |p: &supervox_netlab::Captured| {
        (*p.src.ip() == ip_b && p.dst == alice_media) || (p.src == alice_media && *p.dst.ip() == ip_b)
    };
    let sn_port = |p: &supervox_netlab::Captured| p.src.port() == 7000 || p.dst.port() == 7000;
    let early: Vec<_> = packets.iter().filter(|p| p.at < t_alice && direct(p)).collect();
    assert!(
        early.is_empty(),
        "{} direct packets before alice's call was up: {:?}",
        early.len(),
        &early[..early.len().min(5)]
    );
    // Before his call was up, bob sent nothing but to the supernode (signalling,
    // STUN, his relay), and nothing but the supernode sent to him.
    let others: Vec<_> = packets.iter().filter(|p| p.at < t_bob.min(t_alice) && !sn_port(p)).collect();
    assert!(
        others.is_empty(),
        "packets not to or from the supernode before the call was up: {:?}",
        &others[..others.len().min(5)]
    );
    assert!(packets.iter().any(|p| p.at < t_up && *p.src.ip() == ip_b && p.dst == SocketAddrV4::new(ip_a, 7000)));
    let after = packets.iter().filter(|p| p.at >= t_up && direct(p)).count();
    assert!(after > 50, "the direct path carried {after} packets after the call was up");
}
