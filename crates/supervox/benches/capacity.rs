//! Supernode capacity (issue 5): one real supernode process holding N idle
//! signed-in clients — real Noise handshakes, claims, presence, keepalives
//! answered — reporting the supernode's memory per client, its CPU while the
//! clients idle, and how fast it accepted the login wave.
//!
//! `SUPERVOX_CAPACITY_CLIENTS=N cargo bench -p supervox --bench capacity`
//! (default 5000). Clients connect from 127.0.0.2, 127.0.0.3, … (10 000 per
//! source address, past one address's ephemeral ports); the bench raises its
//! open-file limit (the hard one too where CAP_SYS_RESOURCE allows; the
//! supernode child inherits it) and the supernode's `--max-connections` to
//! fit N, and stops with the reason when the limit cannot fit N. `SUPERVOX_CAPACITY_WRAPPER="heaptrack -o F"`
//! runs the supernode under that command (its memory figures then describe
//! the wrapper, not the supernode).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/common/raw.rs"]
mod raw;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_supervox");
const THREADS: usize = 8;
const IDLE_S: u64 = 30;
/// Clients per loopback source address.
const PER_ADDRESS: usize = 10_000;
/// How often every client reads what the supernode sent (keepalives come
/// after 25 s of silence and must be answered within 75 s).
const POLL_EVERY: Duration = Duration::from_secs(5);

/// Let this process (and the supernode it starts) open `want` files: the
/// hard limit is raised too where that is allowed (CAP_SYS_RESOURCE).
fn raise_nofile(want: u64) {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit read and write one rlimit struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        let raised = libc::rlimit { rlim_cur: lim.rlim_max.max(want), rlim_max: lim.rlim_max.max(want) };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
            lim.rlim_cur = lim.rlim_max;
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
    }
    assert!(
        lim.rlim_cur >= want,
        "the open-file limit is {} and cannot be raised to {want} here (hard limit; raising it needs \
         CAP_SYS_RESOURCE): the bench and the supernode each hold one descriptor per client",
        lim.rlim_cur
    );
}

/// The `i`th client's source address: 127.0.0.2 for the first PER_ADDRESS.
fn source(i: usize) -> IpAddr {
    let k = 2 + i / PER_ADDRESS;
    assert!(k < 255, "too many clients for 127.0.0.0/24");
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, k as u8))
}

/// (resident KiB, user+system CPU ticks) of a process.
fn usage(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    // utime and stime are fields 14 and 15 of stat: 11th and 12th after ')' (state is not numeric).
    let cpu = f.get(10).copied().unwrap_or(0) + f.get(11).copied().unwrap_or(0);
    (rss, cpu)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n: usize = std::env::var("SUPERVOX_CAPACITY_CLIENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(5000);
    raise_nofile(n as u64 + 200);
    let dir = tempfile::tempdir().unwrap();
    let addr: SocketAddr = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let wrapper = std::env::var("SUPERVOX_CAPACITY_WRAPPER").unwrap_or_default();
    let mut argv: Vec<String> = wrapper.split_whitespace().map(String::from).collect();
    argv.push(BIN.into());
    let mut sn = Command::new(&argv[0])
        .args(&argv[1..])
        .args(["supernode", "--listen", &addr.to_string()])
        .args(["--max-clients", &(n + 10).to_string(), "--max-connections", &(n + 50).to_string()])
        .arg("--data-dir")
        .arg(dir.path().join("sn"))
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = sn.id();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "supernode did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    let (rss0, _) = usage(pid);

    // The login wave: THREADS clients at a time, each a Noise handshake,
    // claim and presence. Each worker answers its earlier clients'
    // keepalives as it goes (a long wave outlasts the supernode's patience).
    let next = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let workers: Vec<_> = (0..THREADS)
        .map(|_| {
            let next = Arc::clone(&next);
            std::thread::spawn(move || {
                let mut mine: Vec<raw::Raw> = Vec::new();
                let mut polled = Instant::now();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return mine;
                    }
                    let mut c = raw::Raw::connect_seeded_from(addr, i as u64, source(i));
                    c.sign_in(&format!("c{i}"));
                    c.sock.set_nonblocking(true).unwrap();
                    mine.push(c);
                    if polled.elapsed() >= POLL_EVERY {
                        polled = Instant::now();
                        for c in mine.iter_mut() {
                            c.poll_idle();
                        }
                    }
                }
            })
        })
        .collect();
    let mut clients: Vec<raw::Raw> = workers.into_iter().flat_map(|w| w.join().unwrap()).collect();
    let wave = t0.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    let (rss1, cpu1) = usage(pid);
    let cost1 = common::ProcCost::of(pid);
    // Idle: the supernode pings every link that was quiet for 25 s; answer.
    let t1 = Instant::now();
    while t1.elapsed() < Duration::from_secs(IDLE_S) {
        for c in clients.iter_mut() {
            c.poll_idle();
        }
        std::thread::sleep(POLL_EVERY);
    }
    let (rss2, cpu2) = usage(pid);
    let (wakeups, _) = cost1.rate(&common::ProcCost::of(pid), t1.elapsed().as_secs_f64());
    let ticks = 100.0; // USER_HZ on Linux
    let cpu_pct = (cpu2 - cpu1) as f64 / ticks / IDLE_S as f64 * 100.0;
    let alive = clients.iter_mut().map(|c| c.poll_idle()).filter(|ok| *ok).count();
    let per_client = (rss2.saturating_sub(rss0)) as f64 * 1024.0 / n as f64;
    println!(
        "supernode capacity: {n} idle signed-in clients on one supernode process, from {} source addresses",
        n.div_ceil(PER_ADDRESS)
    );
    println!("| figure | value |");
    println!("|---|---|");
    println!(
        "| login wave ({THREADS} at a time) | {:.1} s, {:.0} sign-ins/s |",
        wave.as_secs_f64(),
        n as f64 / wave.as_secs_f64()
    );
    println!(
        "| supernode RSS: empty / after the wave / after {IDLE_S} s idle | {} / {} / {} MiB |",
        rss0 / 1024,
        rss1 / 1024,
        rss2 / 1024
    );
    println!("| memory per client | {:.0} bytes (target ≤ 4096) |", per_client);
    println!("| CPU while idle (keepalives) | {cpu_pct:.2} % of one core |");
    println!(
        "| supernode wakeups while idle (context switches, all threads) | {wakeups:.1} per s (target ≤ 20 at 10 000) |"
    );
    println!("| clients still connected after the idle period | {alive} / {n} |");
    let _ = sn.kill();
    let _ = sn.wait();
}
