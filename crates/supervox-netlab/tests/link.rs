//! Real-traffic tests of the impaired link: UDP between two namespaces through TUN devices.
//!
//! These tests need root, iproute2 and /dev/net/tun. Without them they FAIL with a message
//! saying what is missing; they are never skipped.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use supervox_netlab::{
    list_namespaces, Direction, Error, GilbertElliott, ImpairedLink, Impairment, JitterDistribution, Lab, LinkConfig,
    Namespace,
};

const PORT: u16 = 4000;

/// A lab, or a panic that tells what the environment lacks.
fn lab() -> Lab {
    Lab::new().unwrap_or_else(|e| {
        panic!("supervox-netlab tests need root, iproute2 and /dev/net/tun (they are never skipped): {e}")
    })
}

/// Two namespaces joined by a link with the given impairments.
fn setup(ab: Impairment, ba: Impairment, seed: u64) -> (Lab, Namespace, Namespace, ImpairedLink) {
    let lab = lab();
    let a = lab.namespace("a").expect("create namespace a");
    let b = lab.namespace("b").expect("create namespace b");
    let link = lab
        .link(&a, &b, LinkConfig::new(ab, ba).with_seed(seed))
        .unwrap_or_else(|e| panic!("impaired link (needs /dev/net/tun): {e}"));
    (lab, a, b, link)
}

/// A UDP socket bound inside `ns`.
fn udp_in(ns: &Namespace, port: u16) -> UdpSocket {
    let sock = ns.enter(|| UdpSocket::bind(("0.0.0.0", port))).expect("enter namespace").expect("bind UDP socket");
    sock.set_read_timeout(Some(Duration::from_millis(300))).expect("set timeout");
    sock
}

/// Nanoseconds since `base`.
fn ns_since(base: Instant) -> u64 {
    u64::try_from(base.elapsed().as_nanos()).expect("test runs for less than 500 years")
}

/// Sends `n` probes of `size` bytes (`seq`, send time) every `spacing` on an absolute schedule.
fn send_probes(sock: &UdpSocket, to: SocketAddr, n: u32, spacing: Duration, size: usize, base: Instant) {
    let start = Instant::now();
    let mut buf = vec![0u8; size.max(12)];
    for seq in 0..n {
        let due = start + spacing * seq;
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        buf[..4].copy_from_slice(&seq.to_be_bytes());
        buf[4..12].copy_from_slice(&ns_since(base).to_be_bytes());
        sock.send_to(&buf, to).expect("send probe");
    }
}

/// A received probe: sequence number, send time and receive time (ns since base).
#[derive(Debug, Clone, Copy)]
struct Probe {
    seq: u32,
    sent: u64,
    received: u64,
}

impl Probe {
    fn delay_ms(&self) -> f64 {
        (self.received.saturating_sub(self.sent)) as f64 / 1e6
    }
}

/// Receives probes until the socket has been idle for its read timeout.
fn receive_probes(sock: &UdpSocket, base: Instant) -> Vec<Probe> {
    let mut out = Vec::new();
    let mut buf = [0u8; 2048];
    loop {
        match sock.recv_from(&mut buf) {
            Ok((n, _)) if n >= 12 => {
                let received = ns_since(base);
                let seq = u32::from_be_bytes(buf[..4].try_into().expect("4 bytes"));
                let sent = u64::from_be_bytes(buf[4..12].try_into().expect("8 bytes"));
                out.push(Probe { seq, sent, received });
            }
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => break,
            Err(e) => panic!("receive: {e}"),
        }
    }
    out
}

/// Sends probes from A to B one way and returns what B received.
fn one_way(a: &Namespace, b: &Namespace, link: &ImpairedLink, n: u32, spacing: Duration, size: usize) -> Vec<Probe> {
    let tx = udp_in(a, 0);
    let rx = udp_in(b, PORT);
    let to = SocketAddr::from((link.addr_b(), PORT));
    let base = Instant::now();
    std::thread::scope(|s| {
        let receiver = s.spawn(|| receive_probes(&rx, base));
        send_probes(&tx, to, n, spacing, size, base);
        receiver.join().expect("receiver thread")
    })
}

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

fn std_dev(xs: &[f64]) -> f64 {
    let m = mean(xs);
    (xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / xs.len() as f64).sqrt()
}

fn percentile(xs: &[f64], p: f64) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// Lengths of the runs of consecutive missing sequence numbers among `0..n`.
fn loss_bursts(received: &[Probe], n: u32) -> Vec<usize> {
    let mut got = vec![false; n as usize];
    for p in received {
        if let Some(slot) = got.get_mut(p.seq as usize) {
            *slot = true;
        }
    }
    got.split(|g| *g).map(<[bool]>::len).filter(|l| *l > 0).collect()
}

#[test]
fn rtt_is_twice_the_one_way_delay() {
    let imp = Impairment::none().with_delay(Duration::from_millis(25));
    let (_lab, a, b, link) = setup(imp.clone(), imp, 1);
    let client = udp_in(&a, 0);
    let server = udp_in(&b, PORT);
    server.set_read_timeout(Some(Duration::from_millis(20))).expect("timeout");
    let to = SocketAddr::from((link.addr_b(), PORT));
    let stop = AtomicBool::new(false);
    let base = Instant::now();
    let n = 200;
    let replies = std::thread::scope(|s| {
        s.spawn(|| {
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::SeqCst) {
                if let Ok((len, from)) = server.recv_from(&mut buf) {
                    server.send_to(&buf[..len], from).expect("echo");
                }
            }
        });
        let receiver = s.spawn(|| receive_probes(&client, base));
        send_probes(&client, to, n, Duration::from_millis(2), 100, base);
        let replies = receiver.join().expect("receiver thread");
        stop.store(true, Ordering::SeqCst);
        replies
    });
    let rtts: Vec<f64> = replies.iter().map(Probe::delay_ms).collect();
    let (m, p50, min, max) = (mean(&rtts), percentile(&rtts, 0.5), percentile(&rtts, 0.0), percentile(&rtts, 1.0));
    let stats = link.stats();
    println!(
        "RTT over {} echoes with 25 ms each way: mean {m:.2} ms, median {p50:.2} ms, min {min:.2} ms, max {max:.2} ms",
        rtts.len()
    );
    println!("a->b: {}\nb->a: {}\nforwarder real-time priority: {}", stats.a_to_b, stats.b_to_a, link.is_realtime());
    assert_eq!(rtts.len(), n as usize, "every echo must come back on a loss-free link");
    assert!((m - 50.0).abs() <= 5.0, "mean RTT {m:.2} ms is not 50 ± 5 ms");
    assert!((p50 - 50.0).abs() <= 5.0, "median RTT {p50:.2} ms is not 50 ± 5 ms");
    assert!(min >= 49.5, "an echo came back faster ({min:.2} ms) than the configured delay allows");
    let added = stats.a_to_b.added_delay_mean().expect("packets were forwarded");
    assert!((added.as_secs_f64() * 1e3 - 25.0).abs() < 1.0, "forwarder added {added:?}, not 25 ms");
}

#[test]
fn random_loss_is_close_to_the_setting() {
    let (_lab, a, b, link) = setup(Impairment::none().with_loss(0.10), Impairment::none(), 11);
    let n = 1000;
    let got = one_way(&a, &b, &link, n, Duration::from_micros(200), 100);
    let loss = 1.0 - got.len() as f64 / f64::from(n);
    let stats = link.stats().a_to_b;
    let bursts = loss_bursts(&got, n);
    let mean_burst = bursts.iter().sum::<usize>() as f64 / bursts.len().max(1) as f64;
    println!("10% loss: measured {:.1}% over {n} packets, mean burst {mean_burst:.2}; {stats}", loss * 100.0);
    assert!((0.06..=0.14).contains(&loss), "loss {:.1}% outside 6-14%", loss * 100.0);
    assert_eq!(stats.received, u64::from(n), "the forwarder must see every packet sent");
    assert_eq!(stats.dropped_loss, u64::from(n) - got.len() as u64, "only the forwarder may drop");
    assert!(mean_burst < 1.5, "independent loss should not be bursty (mean burst {mean_burst:.2})");
}

#[test]
fn jitter_spreads_delays_and_reorders_only_when_allowed() {
    let jittery = Impairment::none()
        .with_delay(Duration::from_millis(25))
        .with_jitter(Duration::from_millis(20), JitterDistribution::Uniform)
        .with_reorder(true);
    let (_lab, a, b, link) = setup(jittery.clone(), Impairment::none(), 5);
    let n = 500;
    let got = one_way(&a, &b, &link, n, Duration::from_millis(1), 100);
    let delays: Vec<f64> = got.iter().map(Probe::delay_ms).collect();
    let (m, sd) = (mean(&delays), std_dev(&delays));
    let (min, max) = (percentile(&delays, 0.0), percentile(&delays, 1.0));
    let (p01, p99) = (percentile(&delays, 0.01), percentile(&delays, 0.99));
    let in_range = delays.iter().filter(|d| (4.5..=46.0).contains(*d)).count() as f64 / delays.len() as f64;
    let reordered = got.windows(2).filter(|w| w[1].seq < w[0].seq).count();
    println!(
        "delay 25 ms, uniform jitter ±20 ms, reordering allowed: mean {m:.2} ms, sd {sd:.2} ms (uniform: 11.55), min {min:.2} ms, max {max:.2} ms, p1 {p01:.2} ms, p99 {p99:.2} ms, {:.1}% within 5-45 ms (+1 ms), {reordered} reordered of {}; {}",
        in_range * 100.0,
        got.len(),
        link.stats().a_to_b
    );
    assert_eq!(got.len(), n as usize, "no loss was configured");
    assert!((m - 25.0).abs() < 3.0, "mean one-way delay {m:.2} ms is not 25 ± 3 ms");
    assert!((9.0..=14.0).contains(&sd), "spread (sd {sd:.2} ms) does not fit ±20 ms uniform jitter (11.5 ms)");
    // The extremes of ±20 ms uniform jitter around 25 ms are 5 and 45 ms. The bounds allow for
    // the odd packet that a loaded machine delays by a few more milliseconds.
    assert!(min >= 4.5, "delay {min:.2} ms is below the 5 ms minimum");
    assert!(p01 < 7.0, "1st percentile {p01:.2} ms should be close to 5 ms");
    assert!(p99 > 43.0 && p99 < 47.0, "99th percentile {p99:.2} ms should be close to 45 ms");
    assert!(in_range >= 0.98, "only {:.1}% of delays within 5-45 ms", in_range * 100.0);
    assert!(reordered > 0, "with reordering allowed and 1 ms spacing some packets must overtake");

    // Same jitter with FIFO order kept: arrivals in order, delays never below the minimum.
    link.set(Direction::AtoB, jittery.with_reorder(false)).expect("set impairment");
    let got = one_way(&a, &b, &link, 200, Duration::from_millis(1), 100);
    let delays: Vec<f64> = got.iter().map(Probe::delay_ms).collect();
    println!(
        "same jitter, order kept: mean {:.2} ms, sd {:.2} ms, min {:.2} ms, max {:.2} ms",
        mean(&delays),
        std_dev(&delays),
        percentile(&delays, 0.0),
        percentile(&delays, 1.0)
    );
    assert_eq!(got.len(), 200);
    assert!(got.windows(2).all(|w| w[1].seq > w[0].seq), "order must be preserved");
    assert!(percentile(&delays, 0.0) >= 4.5);
}

#[test]
fn gilbert_elliott_loss_comes_in_bursts() {
    let p = 0.05;
    let r = 0.3;
    let (_lab, a, b, link) = setup(Impairment::none().with_burst(GilbertElliott::new(p, r)), Impairment::none(), 3);
    let n = 2000;
    let got = one_way(&a, &b, &link, n, Duration::from_micros(200), 100);
    let loss = 1.0 - got.len() as f64 / f64::from(n);
    let bursts = loss_bursts(&got, n);
    let mean_burst = bursts.iter().sum::<usize>() as f64 / bursts.len().max(1) as f64;
    let stats = link.stats().a_to_b;
    println!(
        "Gilbert p={p} r={r}: loss {:.1}% (model {:.1}%), {} bursts, mean burst {mean_burst:.2} (model {:.2}); {stats}",
        loss * 100.0,
        p / (p + r) * 100.0,
        bursts.len(),
        1.0 / r
    );
    assert!(mean_burst > 1.5, "mean burst length {mean_burst:.2} is not > 1.5");
    assert!((0.07..=0.22).contains(&loss), "loss {:.1}% far from the model's 14.3%", loss * 100.0);
    assert_eq!(stats.dropped_burst, u64::from(n) - got.len() as u64);
}

#[test]
fn impairment_changes_on_the_fly() {
    let (_lab, a, b, link) = setup(Impairment::none().with_delay(Duration::from_millis(10)), Impairment::none(), 9);
    let before = one_way(&a, &b, &link, 50, Duration::from_millis(2), 100);
    let later = Impairment::none().with_delay(Duration::from_millis(40));
    link.set(Direction::AtoB, later.clone()).expect("set impairment");
    assert_eq!(link.impairment(Direction::AtoB), later);
    assert_eq!(link.impairment(Direction::BtoA), Impairment::none());
    let after = one_way(&a, &b, &link, 50, Duration::from_millis(2), 100);
    let m_before = mean(&before.iter().map(Probe::delay_ms).collect::<Vec<_>>());
    let m_after = mean(&after.iter().map(Probe::delay_ms).collect::<Vec<_>>());
    println!("delay changed on the fly: {m_before:.2} ms -> {m_after:.2} ms");
    assert_eq!((before.len(), after.len()), (50, 50));
    // Scheduling on a loaded 2-core machine moves single probes by milliseconds either way;
    // the change itself must show as ~30 ms.
    assert!((7.0..18.0).contains(&m_before), "before: {m_before:.2} ms");
    assert!((35.0..48.0).contains(&m_after), "after: {m_after:.2} ms");
    assert!((m_after - m_before - 30.0).abs() < 8.0, "change: {m_before:.2} -> {m_after:.2} ms");
    assert!(link.set(Direction::AtoB, Impairment::none().with_loss(1.5)).is_err(), "invalid loss accepted");
}

#[test]
fn rate_limit_paces_a_burst() {
    let rate = 1_000_000;
    let imp = Impairment::none().with_rate(rate).with_queue_bytes(256 * 1024);
    let (_lab, a, b, link) = setup(imp, Impairment::none(), 2);
    let n = 100;
    let payload = 1000;
    // Sent back to back: the limiter must spread them out at 1 Mbit/s.
    let got = one_way(&a, &b, &link, n, Duration::ZERO, payload);
    assert_eq!(got.len(), n as usize, "the queue is large enough for the whole burst");
    let first = got.iter().map(|p| p.received).min().unwrap_or(0);
    let last = got.iter().map(|p| p.received).max().unwrap_or(0);
    let span = (last - first) as f64 / 1e9;
    // IP + UDP headers add 28 bytes to each payload.
    let bits = f64::from(n - 1) * (payload + 28) as f64 * 8.0;
    let measured = bits / span;
    println!("rate limit 1 Mbit/s: burst of {n} x {payload} B delivered at {:.3} Mbit/s", measured / 1e6);
    assert!((measured / rate as f64 - 1.0).abs() < 0.1, "measured {measured:.0} bit/s");
}

#[test]
fn commands_run_inside_namespaces() {
    let lab = lab();
    let a = lab.namespace("cmd").expect("namespace");
    let out = a.run(["ip", "-o", "link", "show"]).expect("ip link in namespace");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("lo"), "{text}");
    assert!(!text.contains("eth0"), "the namespace must not see the host's interfaces: {text}");
    match a.run(["sh", "-c", "echo oops >&2; exit 3"]) {
        Err(Error::CommandFailed { stderr, .. }) => assert_eq!(stderr, "oops"),
        other => panic!("expected CommandFailed, got {other:?}"),
    }
    assert!(lab.namespace("bad name").is_err());
    let proc = a.spawn(a.shell("exit 7")).expect("spawn");
    let status = proc.wait_timeout(Duration::from_secs(5)).expect("wait").expect("exited");
    assert_eq!(status.code(), Some(7));
}

#[test]
fn dropping_the_lab_removes_everything() {
    let lab = lab();
    let prefix = lab.prefix().to_string();
    let a = lab.namespace("a").expect("namespace a");
    let b = lab.namespace("b").expect("namespace b");
    let link = lab.link(&a, &b, LinkConfig::default()).expect("link");
    // A process group with a background grandchild: both must die.
    let proc = a.spawn(a.shell("sleep 100 & wait")).expect("spawn");
    let leader = proc.pid();
    let names = list_namespaces().expect("list namespaces");
    assert_eq!(names.iter().filter(|n| n.starts_with(&prefix)).count(), 2, "{names:?}");
    drop(link);
    drop(lab);
    let names = list_namespaces().expect("list namespaces");
    assert!(!names.iter().any(|n| n.starts_with(&prefix)), "namespaces left behind: {names:?}");
    let alive = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
            .unwrap_or(false)
    };
    assert!(!alive(leader), "the spawned process survived the lab");
    // The namespace handle now refers to nothing; using it fails instead of touching the host.
    assert!(a.run(["true"]).is_err());
}
