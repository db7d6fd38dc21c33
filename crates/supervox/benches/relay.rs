//! Relay benchmark (issue 3): our supernode's TURN relay against coturn on the same machine,
//! driven by the same open-loop load generator with the same flows and packet size.
//!
//! For each server the generator opens F flows: one UDP client socket per flow, an
//! authenticated Allocate (TURN REST credentials minted from the shared secret with
//! `supervox_turn::mint_credentials`), a CreatePermission and a ChannelBind to a peer UDP
//! socket owned by the generator. Then it sends 120-byte payloads as ChannelData from the
//! clients, round robin over the flows, at stepped open-loop rates; the relay forwards them to
//! the peer socket, where a receiver thread counts them and reads the send timestamp carried in
//! each payload. Server CPU time (all threads, from `/proc/PID/task/*/schedstat`) is sampled
//! around every step, so "pps per core" is packets forwarded per CPU-second of the server.
//! One-way added latency is measured at a moderate fixed rate, minus the same generator's
//! direct client->peer latency (no relay) at that rate.
//!
//! Run: `bench/relay` (installs coturn, prints a Markdown table), or
//! `cargo bench -p supervox --bench relay -- [--flows N] [--rates 50000,100000,...]
//! [--step-secs S] [--latency-pps N] [--coturn-threads N] [--servers supervox,coturn]
//! [--pin SERVER_CPU,GENERATOR_CPU | --no-pin] [--nice N] [--repeat N]`. By default (2+ cores) the server runs pinned to
//! CPU 0 and the generator to CPU 1, so the server has exactly one core and neither steals the
//! other's.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use supervox_stun::codec::{self as stun, Class, Message};

const BIN: &str = env!("CARGO_BIN_EXE_supervox");
const SECRET: &str = "relaybench-secret";
const REALM: &str = "supervox";
const PAYLOAD: usize = 120;
const MAGIC: &[u8; 4] = b"SVRB";
const ALLOCATE: u16 = 0x003;
const CREATE_PERMISSION: u16 = 0x008;
const CHANNEL_BIND: u16 = 0x009;
const ATTR_CHANNEL_NUMBER: u16 = 0x000C;
const ATTR_LIFETIME: u16 = 0x000D;
const ATTR_XOR_PEER_ADDRESS: u16 = 0x0012;
const ATTR_XOR_RELAYED_ADDRESS: u16 = 0x0016;
const ATTR_REQUESTED_TRANSPORT: u16 = 0x0019;

type Res<T> = Result<T, String>;

struct Opts {
    flows: usize,
    rates: Vec<u64>,
    step_secs: f64,
    latency_pps: u64,
    coturn_threads: usize,
    servers: Vec<String>,
    /// (server CPU, generator CPU), when pinned.
    pin: Option<(usize, usize)>,
    /// Niceness of the server and the generator (negative: ahead of other work on the machine).
    nice: i32,
    /// Runs per server.
    repeat: usize,
}

fn parse_opts() -> Res<Opts> {
    let mut o = Opts {
        flows: 50,
        rates: vec![25_000, 50_000, 100_000, 200_000, 400_000],
        step_secs: 3.0,
        latency_pps: 5_000,
        coturn_threads: 1,
        servers: vec!["supervox".into(), "coturn".into()],
        pin: (std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) >= 2 && which("taskset").is_some())
            .then_some((0, 1)),
        nice: 0,
        repeat: 3,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            // Passed by `cargo bench`.
            "--bench" => {}
            "--flows" => o.flows = val()?.parse().map_err(|e| format!("--flows: {e}"))?,
            "--rates" => {
                o.rates = val()?
                    .split(',')
                    .map(|r| r.trim().parse().map_err(|e| format!("--rates: {e}")))
                    .collect::<Res<_>>()?
            }
            "--step-secs" => o.step_secs = val()?.parse().map_err(|e| format!("--step-secs: {e}"))?,
            "--latency-pps" => o.latency_pps = val()?.parse().map_err(|e| format!("--latency-pps: {e}"))?,
            "--coturn-threads" => o.coturn_threads = val()?.parse().map_err(|e| format!("--coturn-threads: {e}"))?,
            "--servers" => o.servers = val()?.split(',').map(str::to_string).collect(),
            "--no-pin" => o.pin = None,
            "--repeat" => o.repeat = val()?.parse().map_err(|e| format!("--repeat: {e}"))?,
            "--nice" => o.nice = val()?.parse().map_err(|e| format!("--nice: {e}"))?,
            "--pin" => {
                let v = val()?;
                let (a, b) = v.split_once(',').ok_or("--pin SERVER_CPU,GENERATOR_CPU")?;
                o.pin = Some((
                    a.parse().map_err(|e| format!("--pin: {e}"))?,
                    b.parse().map_err(|e| format!("--pin: {e}"))?,
                ));
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if o.flows == 0
        || o.flows > 16_000
        || o.repeat == 0
        || o.rates.is_empty()
        || o.step_secs <= 0.0
        || o.latency_pps == 0
    {
        return Err("need 1..=16000 flows, at least one rate, positive step and latency rate".into());
    }
    Ok(o)
}

// ---------------------------------------------------------------------------------------------
// Servers under test.

struct Server {
    threads_note: String,
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Res<u16> {
    // The server binds both TCP and UDP on the port: pick one free for both.
    for _ in 0..50 {
        let t = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let port = t.local_addr().map_err(|e| e.to_string())?.port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err("no free port".into())
}

fn start_server(kind: &str, opts: &Opts) -> Res<Server> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let port = free_port()?;
    let addr: SocketAddr = SocketAddr::from(([127, 0, 0, 1], port));
    let log = std::fs::File::create(dir.path().join("server.log")).map_err(|e| e.to_string())?;
    let log2 = log.try_clone().map_err(|e| e.to_string())?;
    let max_alloc = (opts.flows * 2 + 16).to_string();
    let d = |name: &str| dir.path().join(name).into_os_string();
    let strs = |v: &[&str]| v.iter().map(|a| OsString::from(*a)).collect::<Vec<_>>();
    let (program, args, note): (OsString, Vec<OsString>, String) = match kind {
        "supervox" => {
            let mut a = strs(&["supernode", "--listen", &addr.to_string(), "--relay-secret", SECRET]);
            a.extend(strs(&["--relay-allow-loopback", "--relay-kbps", "0", "--max-allocations", &max_alloc]));
            a.extend([OsString::from("--data-dir"), d("sn")]);
            (BIN.into(), a, "tokio multi-thread runtime, default worker count".to_string())
        }
        "coturn" => {
            let tool = which("turnserver").ok_or("turnserver not found: apt-get install -y coturn")?;
            let mut a = strs(&["-n", "--listening-ip", "127.0.0.1", "--listening-port", &port.to_string()]);
            a.extend(strs(&["--relay-ip", "127.0.0.1", "--use-auth-secret", "--static-auth-secret", SECRET]));
            a.extend(strs(&["--realm", REALM, "--no-tls", "--no-dtls", "--allow-loopback-peers", "--no-cli"]));
            a.extend(strs(&["--total-quota", "0", "--user-quota", "0", "--bps-capacity", "0", "--max-bps", "0"]));
            a.extend(strs(&["--relay-threads", &opts.coturn_threads.to_string(), "--no-stdout-log", "--simple-log"]));
            a.extend([
                OsString::from("--pidfile"),
                d("turnserver.pid"),
                OsString::from("--log-file"),
                d("turnserver.log"),
            ]);
            (tool.into_os_string(), a, format!("--relay-threads {}", opts.coturn_threads))
        }
        other => return Err(format!("unknown server {other}")),
    };
    // nice and taskset exec the server: the child's pid is the server's.
    let (mut program, mut args) = (program, args);
    if let Some((server_cpu, _)) = opts.pin {
        args.splice(0..0, [OsString::from("-c"), OsString::from(server_cpu.to_string()), program]);
        program = OsString::from("taskset");
    }
    if opts.nice != 0 {
        args.splice(0..0, [OsString::from("-n"), OsString::from(opts.nice.to_string()), program]);
        program = OsString::from("nice");
    }
    let mut cmd = Command::new(program);
    cmd.args(&args).env("RUST_LOG", "warn");
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log2))
        .spawn()
        .map_err(|e| format!("cannot start {kind}: {e}"))?;
    let server = Server { threads_note: note, child, addr, _dir: dir };
    wait_ready(addr)?;
    Ok(server)
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(name)).find(|p| p.is_file())
}

/// Wait until the server answers a STUN Binding request.
fn wait_ready(addr: SocketAddr) -> Res<()> {
    let s = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_millis(100))).map_err(|e| e.to_string())?;
    let req = Message::new(Class::Request, stun::METHOD_BINDING, rand::random()).encode(None, true);
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut buf = [0u8; 1500];
    while Instant::now() < deadline {
        let _ = s.send_to(&req, addr);
        if let Ok((n, _)) = s.recv_from(&mut buf) {
            if Message::parse(&buf[..n]).is_ok_and(|m| m.class == Class::Success) {
                return Ok(());
            }
        }
    }
    Err(format!("server at {addr} never answered STUN"))
}

/// CPU time of a process, all threads, in seconds.
fn cpu_secs(pid: u32) -> f64 {
    let mut ns: u64 = 0;
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in dir.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("schedstat")) {
                ns += s.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            }
        }
    }
    ns as f64 / 1e9
}

fn thread_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map(|d| d.count()).unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// TURN client side of the generator.

struct Flow {
    sock: UdpSocket,
    channel: u16,
}

fn transact(sock: &UdpSocket, to: SocketAddr, req: &[u8], tid: [u8; 12]) -> Res<Message> {
    let mut buf = [0u8; 1500];
    for _ in 0..5 {
        sock.send_to(req, to).map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_millis(500);
        while Instant::now() < deadline {
            match sock.recv_from(&mut buf) {
                Ok((n, _)) => {
                    if let Ok(m) = Message::parse(&buf[..n]) {
                        if m.transaction_id == tid {
                            return Ok(m);
                        }
                    }
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
                Err(e) => return Err(e.to_string()),
            }
        }
    }
    Err("no response".into())
}

fn expect_success(m: &Message, what: &str) -> Res<()> {
    match m.class {
        Class::Success => Ok(()),
        _ => Err(format!("{what} refused: {:?}", m.error_code())),
    }
}

/// Long-term credentials of one flow, with the server's realm and nonce.
struct Creds {
    username: String,
    realm: Vec<u8>,
    nonce: Vec<u8>,
    key: Vec<u8>,
}

impl Creds {
    fn request(&self, method: u16, attrs: &[(u16, Vec<u8>)], peer: Option<SocketAddr>) -> (Vec<u8>, [u8; 12]) {
        let tid: [u8; 12] = rand::random();
        let mut m = Message::new(Class::Request, method, tid);
        for (k, v) in attrs {
            m.add(*k, v.clone());
        }
        if let Some(p) = peer {
            m.add_xor_address(ATTR_XOR_PEER_ADDRESS, p);
        }
        m.add(stun::attr::USERNAME, self.username.as_bytes().to_vec())
            .add(stun::attr::REALM, self.realm.clone())
            .add(stun::attr::NONCE, self.nonce.clone());
        (m.encode(Some(&self.key), true), tid)
    }
}

/// Allocate, CreatePermission and ChannelBind for one flow; returns the flow and its relay.
fn open_flow(server: SocketAddr, peer: SocketAddr, index: usize) -> Res<(Flow, SocketAddr)> {
    let sock = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_millis(200))).map_err(|e| e.to_string())?;
    let user_id = u32::try_from(index).unwrap_or(u32::MAX).to_be_bytes();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_err(|e| e.to_string())?.as_secs();
    let (username, password) = supervox_turn::mint_credentials(SECRET.as_bytes(), &user_id, now, 3_600);
    // First Allocate without credentials: the 401 carries realm and nonce.
    let tid: [u8; 12] = rand::random();
    let mut m = Message::new(Class::Request, ALLOCATE, tid);
    m.add(ATTR_REQUESTED_TRANSPORT, vec![17, 0, 0, 0]);
    let r = transact(&sock, server, &m.encode(None, true), tid)?;
    let (Some(realm), Some(nonce)) = (r.get(stun::attr::REALM), r.get(stun::attr::NONCE)) else {
        return Err(format!("Allocate challenge without realm/nonce: {:?}", r.error_code()));
    };
    let key = stun::long_term_key(&username, &String::from_utf8_lossy(realm), &password);
    let creds = Creds { username, realm: realm.to_vec(), nonce: nonce.to_vec(), key };
    let lifetime = 3_600u32.to_be_bytes().to_vec();
    let (req, tid) =
        creds.request(ALLOCATE, &[(ATTR_REQUESTED_TRANSPORT, vec![17, 0, 0, 0]), (ATTR_LIFETIME, lifetime)], None);
    let r = transact(&sock, server, &req, tid)?;
    expect_success(&r, "Allocate")?;
    let relay = r.address(ATTR_XOR_RELAYED_ADDRESS, true).map_err(|e| e.to_string())?.ok_or("no relayed address")?;
    let (req, tid) = creds.request(CREATE_PERMISSION, &[], Some(peer));
    expect_success(&transact(&sock, server, &req, tid)?, "CreatePermission")?;
    let channel = 0x4000 + u16::try_from(index % 0x1000).unwrap_or(0);
    let (req, tid) = creds.request(CHANNEL_BIND, &[(ATTR_CHANNEL_NUMBER, channel_attr(channel))], Some(peer));
    expect_success(&transact(&sock, server, &req, tid)?, "ChannelBind")?;
    sock.connect(server).map_err(|e| e.to_string())?;
    Ok((Flow { sock, channel }, relay))
}

fn channel_attr(channel: u16) -> Vec<u8> {
    let b = channel.to_be_bytes();
    vec![b[0], b[1], 0, 0]
}

// ---------------------------------------------------------------------------------------------
// Load: an open-loop paced sender and a receiver on the peer socket.

/// What the receiver saw for one step.
#[derive(Default)]
struct StepRx {
    packets: u64,
    /// One-way latency of every packet, nanoseconds.
    latencies: Vec<u32>,
}

/// The generator's peer side: a non-blocking socket drained by the sending thread itself
/// whenever it is not due to send, so one pinned core does all the generator's work and the
/// receive timestamps do not wait for a thread wake-up.
struct Peer {
    sock: UdpSocket,
    epoch: Instant,
    steps: HashMap<u32, StepRx>,
    buf: Vec<u8>,
}

impl Peer {
    fn new(epoch: Instant) -> Res<Self> {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).map_err(|e| e.to_string())?;
        // Big enough that the generator never drops what the relay forwarded.
        let _ = s.set_recv_buffer_size(64 << 20);
        s.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).map_err(|e| e.to_string())?;
        s.set_nonblocking(true).map_err(|e| e.to_string())?;
        Ok(Peer { sock: s.into(), epoch, steps: HashMap::new(), buf: vec![0u8; 2048] })
    }

    fn addr(&self) -> Res<SocketAddr> {
        self.sock.local_addr().map_err(|e| e.to_string())
    }

    /// Read every datagram waiting (at most `max`); returns how many were read.
    fn drain(&mut self, max: usize) -> usize {
        let mut n_read = 0;
        while n_read < max {
            let Ok(n) = self.sock.recv(&mut self.buf) else { break };
            n_read += 1;
            let now = self.epoch.elapsed().as_nanos() as u64;
            // Relayed ChannelData arrives as the bare payload; the direct baseline too.
            let Some(p) = self.buf.get(..n).filter(|p| p.len() == PAYLOAD && p.starts_with(MAGIC)) else { continue };
            let step = u32::from_be_bytes([p[4], p[5], p[6], p[7]]);
            let mut ts = [0u8; 8];
            ts.copy_from_slice(&p[16..24]);
            let lat = now.saturating_sub(u64::from_be_bytes(ts));
            let e = self.steps.entry(step).or_default();
            e.packets += 1;
            e.latencies.push(u32::try_from(lat).unwrap_or(u32::MAX));
        }
        n_read
    }

    /// Keep draining for `d`, then hand over what step `step` received.
    fn take(&mut self, step: u32, d: Duration) -> StepRx {
        let until = Instant::now() + d;
        while Instant::now() < until {
            if self.drain(usize::MAX) == 0 {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        self.steps.remove(&step).unwrap_or_default()
    }
}

static NEXT_STEP: AtomicU32 = AtomicU32::new(1);

/// Send `rate` packets per second for `secs` round robin over `socks` (connected sockets),
/// each datagram `header ++ payload`, receiving on `peer` between sends. Open loop: the send
/// times are fixed in advance and never wait for what comes back. Returns (step id, packets
/// sent, seconds taken).
fn send_step(socks: &[(UdpSocket, Vec<u8>)], peer: &mut Peer, rate: u64, secs: f64) -> (u32, u64, f64) {
    let step = NEXT_STEP.fetch_add(1, Ordering::Relaxed);
    let mut bufs: Vec<Vec<u8>> = socks.iter().map(|(_, h)| [h.as_slice(), &[0u8; PAYLOAD]].concat()).collect();
    for (b, (_, h)) in bufs.iter_mut().zip(socks) {
        let p = &mut b[h.len()..];
        p[..4].copy_from_slice(MAGIC);
        p[4..8].copy_from_slice(&step.to_be_bytes());
    }
    let interval = 1e9 / rate as f64;
    let end_ns = (secs * 1e9) as u64;
    let start = Instant::now();
    let (mut k, mut sent) = (0u64, 0u64);
    loop {
        let due = (k as f64 * interval) as u64;
        if due >= end_ns {
            break;
        }
        let now = start.elapsed().as_nanos() as u64;
        // Open loop with a fixed duration: packets the generator could not send in time are
        // not sent late.
        if now >= end_ns {
            break;
        }
        if due > now {
            peer.drain(64);
            continue;
        }
        let i = (k % socks.len() as u64) as usize;
        let (sock, h) = &socks[i];
        let b = &mut bufs[i];
        let p = &mut b[h.len()..];
        p[8..16].copy_from_slice(&k.to_be_bytes());
        p[16..24].copy_from_slice(&(peer.epoch.elapsed().as_nanos() as u64).to_be_bytes());
        if sock.send(b).is_ok() {
            sent += 1;
        }
        k += 1;
        // Behind schedule the loop only sends: still empty the peer socket now and then.
        if k % 32 == 0 {
            peer.drain(64);
        }
    }
    (step, sent, start.elapsed().as_secs_f64())
}

fn percentile(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    f64::from(sorted[i.min(sorted.len() - 1)]) / 1e3
}

struct Row {
    server: String,
    flows: usize,
    offered: u64,
    sent_pps: f64,
    forwarded_pps: f64,
    loss_pct: f64,
    cpu_s: f64,
    /// Duration of the sending phase.
    secs: f64,
    per_core: f64,
    p50: f64,
    p99: f64,
}

fn print_row(r: &Row) {
    println!(
        "| {} | {} | {} | {:.0} | {:.0} | {:.2} | {:.2} | {:.0} | {:.0} | {:.0} |",
        r.server, r.flows, r.offered, r.sent_pps, r.forwarded_pps, r.loss_pct, r.cpu_s, r.per_core, r.p50, r.p99
    );
}

fn run_step(
    name: &str,
    socks: &[(UdpSocket, Vec<u8>)],
    peer: &mut Peer,
    pid: Option<u32>,
    rate: u64,
    secs: f64,
) -> Row {
    let cpu0 = pid.map(cpu_secs).unwrap_or(0.0);
    let (step, sent, took) = send_step(socks, peer, rate, secs);
    // Let the queues drain; late packets still count for their step.
    let mut got = peer.take(step, Duration::from_millis(300));
    let cpu = pid.map(cpu_secs).unwrap_or(0.0) - cpu0;
    got.latencies.sort_unstable();
    let forwarded = got.packets as f64;
    Row {
        server: name.to_string(),
        flows: socks.len(),
        offered: rate,
        sent_pps: sent as f64 / took,
        forwarded_pps: forwarded / took,
        loss_pct: if sent == 0 { 0.0 } else { 100.0 * (1.0 - forwarded / sent as f64).max(0.0) },
        cpu_s: cpu,
        secs: took,
        per_core: if cpu > 0.0 { forwarded / cpu } else { f64::NAN },
        p50: percentile(&got.latencies, 0.5),
        p99: percentile(&got.latencies, 0.99),
    }
}

/// Results of one server, for the summary.
struct Summary {
    threads: String,
    saturation: Row,
    latency: Row,
}

fn bench_server(kind: &str, opts: &Opts, epoch: Instant, run: usize) -> Res<Summary> {
    let server = start_server(kind, opts)?;
    let pid = server.child.id();
    let mut peer = Peer::new(epoch)?;
    let peer_addr = peer.addr()?;
    let mut socks = Vec::with_capacity(opts.flows);
    for i in 0..opts.flows {
        let (flow, _relay) = open_flow(server.addr, peer_addr, i).map_err(|e| format!("{kind} flow {i}: {e}"))?;
        let header = [flow.channel.to_be_bytes(), u16::try_from(PAYLOAD).unwrap_or(0).to_be_bytes()].concat();
        socks.push((flow.sock, header));
    }
    // Warm-up: caches, the allocator, the server's lazily created state.
    let label = format!("{kind} (run {run})");
    let _ = run_step(&label, &socks, &mut peer, Some(pid), opts.latency_pps, 1.0);
    let latency = run_step(&label, &socks, &mut peer, Some(pid), opts.latency_pps, opts.step_secs);
    print_row(&latency);
    let mut best: Option<Row> = None;
    let mut lossy_steps = 0;
    for &rate in &opts.rates {
        let row = run_step(&label, &socks, &mut peer, Some(pid), rate, opts.step_secs);
        print_row(&row);
        lossy_steps = if row.loss_pct > 10.0 { lossy_steps + 1 } else { 0 };
        if best.as_ref().is_none_or(|b| row.forwarded_pps > b.forwarded_pps) {
            best = Some(row);
        }
        if lossy_steps >= 2 {
            break;
        }
    }
    let threads = format!("{} threads ({})", thread_count(pid), server.threads_note);
    let saturation = best.ok_or("no steps")?;
    Ok(Summary { threads, saturation, latency })
}

/// The generator's own one-way latency without a relay (client socket straight to the peer).
fn baseline(opts: &Opts, epoch: Instant) -> Res<Row> {
    let mut peer = Peer::new(epoch)?;
    let peer_addr = peer.addr()?;
    let mut socks = Vec::new();
    for _ in 0..opts.flows {
        let s = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        s.connect(peer_addr).map_err(|e| e.to_string())?;
        socks.push((s, Vec::new()));
    }
    let _ = run_step("direct", &socks, &mut peer, None, opts.latency_pps, 1.0);
    Ok(run_step("direct (no relay)", &socks, &mut peer, None, opts.latency_pps, opts.step_secs))
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 && a.is_finite() && b.is_finite() {
        format!("{:.2}", a / b)
    } else {
        "n/a".into()
    }
}

fn main() {
    let opts = match parse_opts() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("relay bench: {e}");
            std::process::exit(2);
        }
    };
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    if let Some((_, gen_cpu)) = opts.pin {
        let pinned = Command::new("taskset")
            .args(["-a", "-p", "-c", &gen_cpu.to_string(), &std::process::id().to_string()])
            .stdout(Stdio::null())
            .status();
        if !pinned.is_ok_and(|s| s.success()) {
            eprintln!("relay bench: cannot pin the generator to CPU {gen_cpu}");
            std::process::exit(1);
        }
    }
    if opts.nice != 0 {
        let reniced = Command::new("renice")
            .args(["-n", &opts.nice.to_string(), "-p", &std::process::id().to_string()])
            .stdout(Stdio::null())
            .status();
        if !reniced.is_ok_and(|s| s.success()) {
            eprintln!("relay bench: cannot renice the generator to {}", opts.nice);
            std::process::exit(1);
        }
    }
    let epoch = Instant::now();
    println!(
        "Relay bench: {} flows, {PAYLOAD}-byte payloads as ChannelData client -> relay -> peer, {} s per step, {} cores",
        opts.flows,
        opts.step_secs,
        cores
    );
    println!("Load average at start (whole machine): {}", loadavg());
    match opts.pin {
        Some((s, g)) => println!("Server pinned to CPU {s} (all its threads), generator (one thread) to CPU {g}."),
        None => println!("Not pinned: server and generator share the cores."),
    }
    println!("Server and generator niceness: {}.", opts.nice);
    println!();
    println!("| server | flows | offered pps | sent pps | forwarded pps | loss % | server CPU s | pps per core | one-way p50 µs | one-way p99 µs |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let base = match baseline(&opts, epoch) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("relay bench: baseline: {e}");
            std::process::exit(1);
        }
    };
    print_row(&base);
    // Servers alternate run by run (A B, B A, ...), so drifting background load on the machine
    // falls on both; the summary takes each metric's median over the runs.
    let mut results: Vec<(String, Vec<Summary>)> = opts.servers.iter().map(|s| (s.clone(), Vec::new())).collect();
    for rep in 0..opts.repeat {
        let mut order: Vec<usize> = (0..results.len()).collect();
        if rep % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let s = results[i].0.clone();
            match bench_server(&s, &opts, epoch, rep + 1) {
                Ok(r) => results[i].1.push(r),
                Err(e) => {
                    eprintln!("relay bench: {s}: {e}");
                    std::process::exit(1);
                }
            }
        }
    }
    println!();
    println!(
        "Summary, medians over {} runs (saturation = the run's step with the most packets forwarded; latency at {} pps offered, minus the direct path's):",
        opts.repeat, opts.latency_pps
    );
    println!();
    let names: Vec<&str> = results.iter().map(|r| r.0.as_str()).collect();
    println!("| metric | {} | ratio {} |", names.join(" | "), names.join("/"));
    println!("|---|{}---|", "---|".repeat(names.len()));
    let line = |label: &str, f: &dyn Fn(&Summary) -> f64, fmt: &dyn Fn(f64) -> String| {
        let vals: Vec<f64> = results.iter().map(|(_, runs)| median(runs.iter().map(f).collect())).collect();
        let r = if vals.len() == 2 { ratio(vals[0], vals[1]) } else { "n/a".into() };
        let cells: Vec<String> = vals.iter().map(|v| fmt(*v)).collect();
        println!("| {label} | {} | {r} |", cells.join(" | "));
    };
    let int = |v: f64| format!("{v:.0}");
    line("max forwarded pps", &|r| r.saturation.forwarded_pps, &int);
    line("server CPU cores busy at saturation", &|r| r.saturation.cpu_s / r.saturation.secs, &|v| format!("{v:.2}"));
    line("pps per core at saturation (forwarded / server CPU s)", &|r| r.saturation.per_core, &int);
    line(&format!("pps per core at {} pps", opts.latency_pps), &|r| r.latency.per_core, &int);
    line("added latency p50 µs (lower is better)", &|r| (r.latency.p50 - base.p50).max(0.0), &int);
    line("added latency p99 µs (lower is better)", &|r| (r.latency.p99 - base.p99).max(0.0), &int);
    println!();
    for (name, runs) in &results {
        if let Some(r) = runs.last() {
            println!("- {name}: {}", r.threads);
        }
    }
    println!("- load average at end (whole machine): {}", loadavg());
}

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
