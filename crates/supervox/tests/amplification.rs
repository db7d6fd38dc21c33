//! Reflection through the open STUN service, measured on the wire: a stranger floods a
//! supernode with Binding requests whose source is its victim's network (here: its own
//! namespace, which is where the answers of a spoofed flood would land). The answers are
//! capped per destination prefix, so the bytes that reach the victim stay a small share of
//! the bytes the attacker sends. Real processes in network namespaces joined by the
//! project's user-space link; needs root and `ip`: fails, never skips, without them.

mod common;

use std::net::{SocketAddr, UdpSocket};
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

#[test]
fn a_binding_flood_toward_one_network_is_capped_per_prefix() {
    let tmp = tempfile::tempdir().unwrap();
    let lab = Lab::new().expect("a network lab (needs root and ip)");
    let (a, b) = (lab.namespace("a").unwrap(), lab.namespace("b").unwrap());
    let link = lab.link(&a, &b, LinkConfig::symmetric(Impairment::from_str("delay=1ms").unwrap())).unwrap();
    let (ip_a, ip_b) = (link.addr_a(), link.addr_b());
    let sn = SocketAddr::from((ip_a, 7000));
    let metrics = SocketAddr::from((ip_a, 9100));
    let mut cmd = a.command(common::BIN);
    cmd.args(["supernode", "--listen", &sn.to_string(), "--metrics", &metrics.to_string(), "--data-dir"])
        .arg(tmp.path().join("sn"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(tmp.path().join("sn.log")).unwrap());
    let _sn = a.spawn(cmd).expect("spawn the supernode");
    let (sent, answered, bytes_in, bytes_out, limited) = b
        .enter(move || {
            let deadline = Instant::now() + Duration::from_secs(10);
            while common::metric_opt(metrics, "stun_answers_limited_total").is_none() {
                assert!(Instant::now() < deadline, "the supernode did not start");
                std::thread::sleep(Duration::from_millis(50));
            }
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
