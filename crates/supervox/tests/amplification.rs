//! A stranger against a supernode's open ports, on the wire, from another host (loopback
//! is exempt from per-host limits, so these run in network namespaces joined by the
//! project's user-space link; they need root and `ip`: fail, never skip, without them).
//!
//! - Reflection through the open STUN service: a flood of Binding requests whose source is
//!   the victim's network (here: the attacker's own namespace, which is where the answers
//!   of a spoofed flood would land). Answers are capped per destination prefix, so the
//!   bytes that reach the victim stay a small share of the bytes the attacker sends.
//! - Connection squatting: one host holds at most `--max-connections-per-host` links, and
//!   only a few silent connections at a time; its slots come back when it closes them.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::Stdio;
use std::str::FromStr;
use std::time::{Duration, Instant};
use supervox_netlab::{Impairment, Lab, LinkConfig};
use supervox_stun::limit::{ANSWERS_PER_SEC, ANSWER_BURST};

/// A bare Binding request (RFC 8489: header only) with transaction id `n`.
fn binding(n: u32) -> [u8; 20] {
    let mut b = [0u8; 20];
    b[1] = 0x01;
    b[4..8].copy_from_slice(&0x2112_A442u32.to_be_bytes());
    b[8..12].copy_from_slice(&n.to_be_bytes());
    b
}

/// A supernode in namespace `a` (on the link's address, port 7000, metrics on 9100) and a
/// stranger's namespace `b` on the other end of the link; returns once the supernode
/// serves its metrics.
/// (Fields drop in this order: the link and namespaces go before the lab, the data
/// directory last.)
struct Stranger {
    b: supervox_netlab::Namespace,
    sn: SocketAddr,
    metrics: SocketAddr,
    ip_b: std::net::Ipv4Addr,
    _sn: supervox_netlab::NsProcess,
    _link: supervox_netlab::ImpairedLink,
    _a: supervox_netlab::Namespace,
    _lab: Lab,
    _tmp: tempfile::TempDir,
}

impl Stranger {
    fn new(extra: &[&str]) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let lab = Lab::new().expect("a network lab (needs root and ip)");
        let (a, b) = (lab.namespace("a").unwrap(), lab.namespace("b").unwrap());
        let link = lab.link(&a, &b, LinkConfig::symmetric(Impairment::from_str("delay=1ms").unwrap())).unwrap();
        let (ip_a, ip_b) = (link.addr_a(), link.addr_b());
        let sn = SocketAddr::from((ip_a, 7000));
        let metrics = SocketAddr::from((ip_a, 9100));
        let mut cmd = a.command(common::BIN);
        cmd.args(["supernode", "--listen", &sn.to_string(), "--metrics", &metrics.to_string()])
            .args(extra)
            .args(["--member-difficulty", "4"])
            .arg("--data-dir")
            .arg(tmp.path().join("sn"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(tmp.path().join("sn.log")).unwrap());
        let proc = a.spawn(cmd).expect("spawn the supernode");
        b.enter(move || {
            let deadline = Instant::now() + Duration::from_secs(10);
            while common::metric_opt(metrics, "connections").is_none() {
                assert!(Instant::now() < deadline, "the supernode did not start");
                std::thread::sleep(Duration::from_millis(50));
            }
        })
        .unwrap();
        Stranger { b, sn, metrics, ip_b, _sn: proc, _link: link, _a: a, _lab: lab, _tmp: tmp }
    }
}

/// Whether the supernode closed `s` (within `wait`): an end of stream, or a reset when it
/// closed with our bytes unread.
fn closed_by_peer(mut s: &TcpStream, wait: Duration) -> bool {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        Ok(_) => false,
    }
}

#[test]
fn a_binding_flood_toward_one_network_is_capped_per_prefix() {
    let net = Stranger::new(&[]);
    let (sn, metrics, ip_b) = (net.sn, net.metrics, net.ip_b);
    let (sent, answered, bytes_in, bytes_out, limited) = net
        .b
        .enter(move || {
            let sock = UdpSocket::bind(SocketAddr::from((ip_b, 0))).unwrap();
            sock.set_nonblocking(true).unwrap();
            let (mut sent, mut answered, mut bytes_in, mut bytes_out) = (0u32, 0u32, 0usize, 0usize);
            let mut buf = [0u8; 2048];
            let mut drain = |answered: &mut u32, bytes_out: &mut usize| {
                while let Ok(n) = sock.recv(&mut buf) {
                    *answered += 1;
                    *bytes_out += n;
                }
            };
            // 3 000 requests over ~1.5 s, then 1 s to collect the last answers.
            let start = Instant::now();
            for n in 0..3_000u32 {
                let req = binding(n);
                if sock.send_to(&req, sn).is_ok() {
                    sent += 1;
                    bytes_in += req.len();
                }
                if n % 2 == 1 {
                    std::thread::sleep(Duration::from_millis(1));
                }
                drain(&mut answered, &mut bytes_out);
            }
            let flood_s = start.elapsed().as_secs_f64();
            let end = Instant::now() + Duration::from_secs(1);
            while Instant::now() < end {
                drain(&mut answered, &mut bytes_out);
                std::thread::sleep(Duration::from_millis(5));
            }
            let limited = common::metric(metrics, "stun_answers_limited_total");
            eprintln!(
                "{sent} Binding requests ({bytes_in} B) in {flood_s:.2} s: {answered} answers ({bytes_out} B), \
                 {limited} dropped by the limit; bytes out per byte in {:.3}",
                bytes_out as f64 / bytes_in as f64
            );
            (sent, answered, bytes_in, bytes_out, limited)
        })
        .unwrap();
    // At most the burst plus the rate over the flood and the collection time (≤ 3 s).
    let cap = ANSWER_BURST + 3 * ANSWERS_PER_SEC;
    assert!(answered <= cap, "{answered} answers > cap {cap}");
    assert!(answered >= ANSWER_BURST / 2, "the service still answers: {answered}");
    assert!(limited >= u64::from(sent.saturating_sub(cap)) * 9 / 10, "{limited} counted as limited of {sent}");
    assert!((bytes_out as f64) < bytes_in as f64, "{bytes_out} B out for {bytes_in} B in");
}

#[test]
fn one_host_holds_a_bounded_number_of_connections() {
    let net = Stranger::new(&["--max-connections-per-host", "5"]);
    let (sn, metrics) = (net.sn, net.metrics);
    net.b
        .enter(move || {
            let wait_for = |what: &str, want: &dyn Fn(u64) -> bool| {
                let deadline = Instant::now() + Duration::from_secs(5);
                loop {
                    let v = common::metric(metrics, what);
                    if want(v) {
                        return v;
                    }
                    assert!(Instant::now() < deadline, "{what} = {v}");
                    std::thread::sleep(Duration::from_millis(50));
                }
            };
            // Ten connections that start a link frame and never finish it: five are held.
            let open = |n: usize| -> Vec<TcpStream> {
                (0..n)
                    .map(|_| {
                        let mut s = TcpStream::connect_timeout(&sn, Duration::from_secs(2)).unwrap();
                        s.write_all(&[0, 0, 0, 100]).unwrap();
                        s
                    })
                    .collect()
            };
            let squat = open(10);
            wait_for("connections_refused_per_host_total", &|v| v >= 5);
            assert_eq!(common::metric(metrics, "connections"), 5, "five links held from one host");
            // The refused ones were closed by the supernode.
            let closed = squat.iter().filter(|s| closed_by_peer(s, Duration::from_millis(300))).count();
            assert_eq!(closed, 5, "the five beyond the limit were closed");
            // Closing them gives the host its slots back.
            drop(squat);
            wait_for("connections", &|v| v == 0);
            let again = open(5);
            wait_for("connections", &|v| v == 5);
            drop(again);
            // Silent connections (not a byte: link or TURN?) are held only a few at a time.
            let silent: Vec<TcpStream> =
                (0..40).map(|_| TcpStream::connect_timeout(&sn, Duration::from_secs(2)).unwrap()).collect();
            let t0 = Instant::now();
            let dropped_at_once = silent.iter().filter(|s| closed_by_peer(s, Duration::from_millis(20))).count();
            assert!(t0.elapsed() < Duration::from_millis(1_800), "still within the sniffing window");
            let held = 40 - dropped_at_once;
            eprintln!(
                "40 silent connections from one host: {held} held while sniffing, {dropped_at_once} dropped at once"
            );
            assert!(held <= supervox::defaults::MAX_SNIFFING_PER_HOST, "{held} held");
            assert!(dropped_at_once >= 40 - supervox::defaults::MAX_SNIFFING_PER_HOST - 2, "{dropped_at_once}");
            drop(silent);
            // TURN over TCP from one host: a bounded number of streams are served (each asks
            // a Binding over its stream and gets an answer); the rest are closed.
            let max = supervox::defaults::MAX_TURN_STREAMS_PER_HOST;
            let mut streams = Vec::new();
            for n in 0..max as u32 + 8 {
                let mut s = TcpStream::connect_timeout(&sn, Duration::from_secs(2)).unwrap();
                s.write_all(&binding(n)).unwrap();
                streams.push(s);
                std::thread::sleep(Duration::from_millis(5));
            }
            let mut answered = 0;
            for mut s in streams.iter() {
                s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
                let mut buf = [0u8; 512];
                if s.read(&mut buf).is_ok_and(|n| n >= 20 && buf[0] == 0x01 && buf[1] == 0x01) {
                    answered += 1;
                }
            }
            assert_eq!(answered, max, "TURN streams served from one host");
        })
        .unwrap();
}
