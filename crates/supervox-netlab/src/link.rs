//! The impaired link: two TUN devices in two namespaces and a user-space forwarder between them.

use std::cmp::{Ordering as CmpOrdering, Reverse};
use std::collections::BinaryHeap;
use std::fmt;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::thread::JoinHandleExt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::impairment::Impairment;
use crate::lab::{ip, lock, Namespace};
use crate::shaper::{DropReason, Shaper, Verdict};
use crate::tun::{open_tun, read_packet, write_packet, MAX_PACKET};

/// Packets held at once per direction; beyond that new packets are dropped (as queue drops).
const MAX_IN_FLIGHT: usize = 50_000;
/// The forwarder sleeps until this long before a release, then polls without sleeping, so the
/// release is not late by the scheduler's wake-up latency.
const SPIN: Duration = Duration::from_micros(200);
/// Longest sleep of the forwarder when nothing is scheduled.
const IDLE_WAIT: Duration = Duration::from_millis(250);
/// Packets read from one device per loop turn, so reading never starves releasing.
const READ_BATCH: usize = 64;

/// One direction of a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Packets sent by namespace A to namespace B.
    AtoB,
    /// Packets sent by namespace B to namespace A.
    BtoA,
}

impl Direction {
    /// Both directions, A→B first.
    pub const BOTH: [Direction; 2] = [Direction::AtoB, Direction::BtoA];

    fn index(self) -> usize {
        match self {
            Direction::AtoB => 0,
            Direction::BtoA => 1,
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::AtoB => "a->b",
            Direction::BtoA => "b->a",
        })
    }
}

impl FromStr for Direction {
    type Err = Error;

    /// Accepts `ab`, `a->b`, `a2b` and `ba`, `b->a`, `b2a`.
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().replace("->", "").replace('2', "").as_str() {
            "ab" => Ok(Direction::AtoB),
            "ba" => Ok(Direction::BtoA),
            other => Err(Error::InvalidArgument(format!("unknown direction {other:?} (ab or ba)"))),
        }
    }
}

/// How to build an impaired link.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkConfig {
    /// Impairment of packets from A to B.
    pub a_to_b: Impairment,
    /// Impairment of packets from B to A.
    pub b_to_a: Impairment,
    /// Seed of the random numbers (each direction derives its own stream from it).
    pub seed: u64,
    /// Third octet of the link's addresses (`10.77.<subnet>.1` and `.2`); by default the
    /// lab numbers its links from 0.
    pub subnet: Option<u8>,
    /// MTU of the two TUN devices (default 1500).
    pub mtu: Option<u32>,
    /// Run the forwarder thread with real-time priority (`SCHED_FIFO` 10) so that other work
    /// on a busy machine does not make releases late. Best effort: if the kernel refuses,
    /// the thread keeps normal priority (see [`ImpairedLink::is_realtime`]). Default: on.
    /// The kernel's real-time throttling (95% of each second by default) still applies.
    pub realtime: bool,
    /// Record the first this-many packets' addresses (a packet capture for tests:
    /// [`ImpairedLink::captured`]); 0 (the default) records nothing.
    pub capture: usize,
}

/// One packet the link received, as [`LinkConfig::capture`] records it: when, which way,
/// and its IPv4 addresses, protocol and (for UDP and TCP) ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Captured {
    /// When the forwarder read it.
    pub at: std::time::SystemTime,
    /// Its direction.
    pub direction: Direction,
    /// IP protocol number (17 UDP, 6 TCP).
    pub protocol: u8,
    /// Source address and port (port 0 for other protocols).
    pub src: std::net::SocketAddrV4,
    /// Destination address and port.
    pub dst: std::net::SocketAddrV4,
    /// Length of the IP packet.
    pub len: usize,
}

/// The addresses of an IPv4 packet, `None` for anything else or a cut header.
fn parse_ipv4(p: &[u8]) -> Option<(u8, std::net::SocketAddrV4, std::net::SocketAddrV4)> {
    if p.len() < 20 || p[0] >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(p[0] & 0x0f) * 4;
    let protocol = p[9];
    let src = Ipv4Addr::new(p[12], p[13], p[14], p[15]);
    let dst = Ipv4Addr::new(p[16], p[17], p[18], p[19]);
    let ports = match (protocol, p.get(ihl..ihl + 4)) {
        (6 | 17, Some(h)) => (u16::from_be_bytes([h[0], h[1]]), u16::from_be_bytes([h[2], h[3]])),
        _ => (0, 0),
    };
    Some((protocol, std::net::SocketAddrV4::new(src, ports.0), std::net::SocketAddrV4::new(dst, ports.1)))
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig::symmetric(Impairment::none())
    }
}

impl LinkConfig {
    /// The same impairment in both directions, seed 1.
    pub fn symmetric(imp: Impairment) -> Self {
        LinkConfig::new(imp.clone(), imp)
    }

    /// Different impairments per direction, seed 1.
    pub fn new(a_to_b: Impairment, b_to_a: Impairment) -> Self {
        LinkConfig { a_to_b, b_to_a, seed: 1, subnet: None, mtu: None, realtime: true, capture: 0 }
    }

    /// Sets the random seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Sets the third octet of the link's addresses.
    pub fn with_subnet(mut self, subnet: u8) -> Self {
        self.subnet = Some(subnet);
        self
    }

    /// Sets the MTU of the TUN devices.
    pub fn with_mtu(mut self, mtu: u32) -> Self {
        self.mtu = Some(mtu);
        self
    }

    /// Records the addresses of the first `max_packets` packets (see [`Captured`]).
    pub fn with_capture(mut self, max_packets: usize) -> Self {
        self.capture = max_packets;
        self
    }

    /// Asks for (or refuses) real-time priority for the forwarder thread.
    pub fn with_realtime(mut self, realtime: bool) -> Self {
        self.realtime = realtime;
        self
    }
}

/// Counters of one direction of a link.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirectionStats {
    /// Packets read from the sending side.
    pub received: u64,
    /// Packets written to the receiving side.
    pub forwarded: u64,
    /// Bytes written to the receiving side.
    pub bytes_forwarded: u64,
    /// Packets dropped by independent random loss.
    pub dropped_loss: u64,
    /// Packets dropped by the Gilbert–Elliott model.
    pub dropped_burst: u64,
    /// Packets dropped because the rate limiter's queue (or the in-flight limit) was full.
    pub dropped_queue: u64,
    /// Packets the receiving device refused (full queue or error).
    pub dropped_write: u64,
    /// Sum of the delays actually added (write time minus read time) of forwarded packets.
    pub added_delay_total: Duration,
    /// Smallest delay actually added.
    pub added_delay_min: Option<Duration>,
    /// Largest delay actually added.
    pub added_delay_max: Option<Duration>,
    /// Sum of the lateness of releases (write time minus scheduled release time).
    pub lateness_total: Duration,
    /// Largest lateness of a release.
    pub lateness_max: Duration,
}

impl DirectionStats {
    /// All drops together.
    pub fn dropped(&self) -> u64 {
        self.dropped_loss + self.dropped_burst + self.dropped_queue + self.dropped_write
    }

    /// Mean delay actually added to forwarded packets.
    pub fn added_delay_mean(&self) -> Option<Duration> {
        let n = u32::try_from(self.forwarded).ok().filter(|n| *n > 0)?;
        Some(self.added_delay_total / n)
    }

    /// Mean lateness of releases against their schedule (the forwarder's timing error).
    pub fn lateness_mean(&self) -> Option<Duration> {
        let n = u32::try_from(self.forwarded).ok().filter(|n| *n > 0)?;
        Some(self.lateness_total / n)
    }

    fn record_forward(&mut self, bytes: usize, added: Duration, late: Duration) {
        self.forwarded += 1;
        self.bytes_forwarded += bytes as u64;
        self.added_delay_total += added;
        self.added_delay_min = Some(self.added_delay_min.map_or(added, |m| m.min(added)));
        self.added_delay_max = Some(self.added_delay_max.map_or(added, |m| m.max(added)));
        self.lateness_total += late;
        self.lateness_max = self.lateness_max.max(late);
    }
}

impl fmt::Display for DirectionStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: Option<Duration>| d.map_or("-".to_string(), |d| format!("{:.2}ms", d.as_secs_f64() * 1e3));
        write!(
            f,
            "received {} forwarded {} dropped {} (loss {}, burst {}, queue {}, write {}); added delay mean {} min {} max {}; lateness mean {} max {}",
            self.received,
            self.forwarded,
            self.dropped(),
            self.dropped_loss,
            self.dropped_burst,
            self.dropped_queue,
            self.dropped_write,
            ms(self.added_delay_mean()),
            ms(self.added_delay_min),
            ms(self.added_delay_max),
            ms(self.lateness_mean()),
            ms(Some(self.lateness_max)),
        )
    }
}

/// Counters of both directions of a link.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Packets from A to B.
    pub a_to_b: DirectionStats,
    /// Packets from B to A.
    pub b_to_a: DirectionStats,
}

impl LinkStats {
    /// The counters of one direction.
    pub fn direction(&self, dir: Direction) -> &DirectionStats {
        match dir {
            Direction::AtoB => &self.a_to_b,
            Direction::BtoA => &self.b_to_a,
        }
    }
}

/// State shared between an [`ImpairedLink`] handle, its lab and its forwarder thread.
pub(crate) struct LinkShared {
    stop: AtomicBool,
    /// eventfd that wakes the forwarder.
    wake: OwnedFd,
    config: Mutex<[Impairment; 2]>,
    config_version: AtomicU64,
    stats: Mutex<LinkStats>,
    error: Mutex<Option<String>>,
    realtime: AtomicBool,
    /// Packets recorded so far, and how many may be.
    capture: Mutex<(Vec<Captured>, usize)>,
}

impl LinkShared {
    /// Asks the forwarder to stop and wakes it.
    pub(crate) fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.wake();
    }

    fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our eventfd. A failure (counter overflow)
        // cannot happen with single increments that the forwarder drains.
        unsafe {
            libc::write(self.wake.as_raw_fd(), (&one as *const u64).cast(), 8);
        }
    }
}

/// A point-to-point IPv4 link between two namespaces whose packets pass through a user-space
/// forwarder that delays, jitters, drops and rate-limits them.
///
/// Each namespace gets a TUN device `svl<n>`; A has `10.77.n.1/30`, B has `10.77.n.2/30`. A
/// dedicated thread reads packets from each device, decides their fate with a [`Shaper`] per
/// direction, keeps the survivors in a heap ordered by release time and writes each to the
/// other device when due: it sleeps until shortly before the release and polls for the last
/// 200 µs, so added delays are accurate to well under a millisecond on an idle machine.
///
/// Dropping the link stops the forwarder and removes both devices.
pub struct ImpairedLink {
    shared: Arc<LinkShared>,
    thread: Option<JoinHandle<()>>,
    addr_a: Ipv4Addr,
    addr_b: Ipv4Addr,
    ifname: String,
    ns_a: String,
    ns_b: String,
}

impl fmt::Debug for ImpairedLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImpairedLink")
            .field("ifname", &self.ifname)
            .field("a", &format_args!("{} {}", self.ns_a, self.addr_a))
            .field("b", &format_args!("{} {}", self.ns_b, self.addr_b))
            .finish()
    }
}

impl ImpairedLink {
    /// Builds the link; called by [`crate::Lab::link`].
    pub(crate) fn create(a: &Namespace, b: &Namespace, index: u8, config: LinkConfig) -> Result<ImpairedLink> {
        config.a_to_b.validate()?;
        config.b_to_a.validate()?;
        let ifname = format!("svl{index}");
        let addr_a = Ipv4Addr::new(10, 77, index, 1);
        let addr_b = Ipv4Addr::new(10, 77, index, 2);

        let fd_a = a.enter(|| open_tun(&ifname))??;
        let fd_b = b.enter(|| open_tun(&ifname))??;
        for (ns, addr) in [(a, addr_a), (b, addr_b)] {
            let n = ns.name();
            // No IPv6 link-local address: keeps router solicitations and DAD off the link.
            ip(["-n", n, "link", "set", "dev", &ifname, "addrgenmode", "none"])?;
            if let Some(mtu) = config.mtu {
                ip(["-n", n, "link", "set", "dev", &ifname, "mtu", &mtu.to_string()])?;
            }
            ip(["-n", n, "addr", "add", &format!("{addr}/30"), "dev", &ifname])?;
            ip(["-n", n, "link", "set", "dev", &ifname, "up"])?;
        }

        // SAFETY: eventfd has no memory preconditions; the result is checked below.
        let efd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if efd < 0 {
            return Err(Error::io("creating eventfd", std::io::Error::last_os_error()));
        }
        // SAFETY: `efd` is a fresh descriptor we own.
        let wake = unsafe { OwnedFd::from_raw_fd(efd) };

        let shared = Arc::new(LinkShared {
            stop: AtomicBool::new(false),
            wake,
            config: Mutex::new([config.a_to_b.clone(), config.b_to_a.clone()]),
            config_version: AtomicU64::new(0),
            stats: Mutex::new(LinkStats::default()),
            error: Mutex::new(None),
            realtime: AtomicBool::new(false),
            capture: Mutex::new((Vec::new(), config.capture)),
        });
        let shapers =
            [Shaper::new(config.a_to_b, config.seed), Shaper::new(config.b_to_a, config.seed ^ 0x9e37_79b9_7f4a_7c15)];
        let forwarder = Forwarder {
            shared: Arc::clone(&shared),
            fds: [fd_a, fd_b],
            shapers,
            heaps: [BinaryHeap::new(), BinaryHeap::new()],
            seen_version: 0,
            seq: 0,
        };
        let thread = std::thread::Builder::new()
            .name(format!("svl-link-{index}"))
            .spawn(move || forwarder.run())
            .map_err(|e| Error::io("spawning the forwarder thread", e))?;
        if config.realtime {
            let param = libc::sched_param { sched_priority: 10 };
            // SAFETY: the pthread handle belongs to a thread we have not joined yet, and
            // `param` is live and initialised for the call.
            let rc = unsafe { libc::pthread_setschedparam(thread.as_pthread_t(), libc::SCHED_FIFO, &param) };
            shared.realtime.store(rc == 0, Ordering::SeqCst);
        }
        Ok(ImpairedLink {
            shared,
            thread: Some(thread),
            addr_a,
            addr_b,
            ifname,
            ns_a: a.name().to_string(),
            ns_b: b.name().to_string(),
        })
    }

    pub(crate) fn downgrade_shared(&self) -> Weak<LinkShared> {
        Arc::downgrade(&self.shared)
    }

    /// A's address on the link (`10.77.n.1`).
    pub fn addr_a(&self) -> Ipv4Addr {
        self.addr_a
    }

    /// B's address on the link (`10.77.n.2`).
    pub fn addr_b(&self) -> Ipv4Addr {
        self.addr_b
    }

    /// Name of the TUN device, the same in both namespaces (`svl<n>`).
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// Names of the two namespaces, A then B.
    pub fn namespaces(&self) -> (&str, &str) {
        (&self.ns_a, &self.ns_b)
    }

    /// Changes the impairment of one direction, effective for packets arriving from now on
    /// (packets already in flight keep their schedule).
    pub fn set(&self, direction: Direction, imp: Impairment) -> Result<()> {
        imp.validate()?;
        lock(&self.shared.config)[direction.index()] = imp;
        self.shared.config_version.fetch_add(1, Ordering::SeqCst);
        self.shared.wake();
        Ok(())
    }

    /// Changes the impairment of both directions.
    pub fn set_both(&self, imp: Impairment) -> Result<()> {
        imp.validate()?;
        *lock(&self.shared.config) = [imp.clone(), imp];
        self.shared.config_version.fetch_add(1, Ordering::SeqCst);
        self.shared.wake();
        Ok(())
    }

    /// The impairment currently set for a direction.
    pub fn impairment(&self, direction: Direction) -> Impairment {
        lock(&self.shared.config)[direction.index()].clone()
    }

    /// The packets recorded so far ([`LinkConfig::with_capture`]).
    pub fn captured(&self) -> Vec<Captured> {
        lock(&self.shared.capture).0.clone()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> LinkStats {
        lock(&self.shared.stats).clone()
    }

    /// Zeroes the counters.
    pub fn reset_stats(&self) {
        *lock(&self.shared.stats) = LinkStats::default();
    }

    /// The error that stopped the forwarder, if it stopped on its own.
    pub fn error(&self) -> Option<String> {
        lock(&self.shared.error).clone()
    }

    /// Whether the forwarder thread got the real-time priority asked for with
    /// [`LinkConfig::realtime`].
    pub fn is_realtime(&self) -> bool {
        self.shared.realtime.load(Ordering::SeqCst)
    }

    /// Whether the forwarder thread is still running.
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }
}

impl Drop for ImpairedLink {
    fn drop(&mut self) {
        self.shared.request_stop();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A packet waiting for its release time.
struct Pending {
    release: Instant,
    seq: u64,
    arrival: Instant,
    data: Vec<u8>,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == CmpOrdering::Equal
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    /// By release time, ties in arrival order.
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (self.release, self.seq).cmp(&(other.release, other.seq))
    }
}

/// The forwarder thread's state.
struct Forwarder {
    shared: Arc<LinkShared>,
    /// TUN devices of A and B; direction `i` reads `fds[i]` and writes `fds[1 - i]`.
    fds: [OwnedFd; 2],
    shapers: [Shaper; 2],
    heaps: [BinaryHeap<Reverse<Pending>>; 2],
    seen_version: u64,
    seq: u64,
}

impl Forwarder {
    fn run(mut self) {
        // SAFETY: PR_SET_TIMERSLACK takes an integer argument; 1 ns slack makes sleeps precise.
        unsafe {
            libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0 as libc::c_ulong, 0 as libc::c_ulong, 0);
        }
        if let Err(e) = self.forward() {
            *lock(&self.shared.error) = Some(e.to_string());
        }
    }

    fn forward(&mut self) -> std::io::Result<()> {
        let mut buf = vec![0u8; MAX_PACKET];
        while !self.shared.stop.load(Ordering::SeqCst) {
            self.refresh_config();
            self.release_due();

            let now = Instant::now();
            let next = self.heaps.iter().filter_map(|h| h.peek().map(|Reverse(p)| p.release)).min();
            let wait = match next {
                Some(at) => at.saturating_duration_since(now).saturating_sub(SPIN).min(IDLE_WAIT),
                None => IDLE_WAIT,
            };
            let ready = self.poll(wait)?;
            if ready[2] {
                self.drain_wake();
            }
            for (dir, readable) in ready.into_iter().take(2).enumerate() {
                if readable {
                    self.read_batch(dir, &mut buf)?;
                }
            }
        }
        Ok(())
    }

    /// Waits up to `wait` for a device or the wake-up fd to become readable.
    fn poll(&self, wait: Duration) -> std::io::Result<[bool; 3]> {
        let mut fds = [
            libc::pollfd { fd: self.fds[0].as_raw_fd(), events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: self.fds[1].as_raw_fd(), events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: self.shared.wake.as_raw_fd(), events: libc::POLLIN, revents: 0 },
        ];
        let ts =
            libc::timespec { tv_sec: wait.as_secs() as libc::time_t, tv_nsec: wait.subsec_nanos() as libc::c_long };
        // SAFETY: `fds` and `ts` are live for the call; the length matches the array.
        let rc = unsafe { libc::ppoll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, &ts, std::ptr::null()) };
        if rc < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                return Ok([false; 3]);
            }
            return Err(err);
        }
        let bad = libc::POLLERR | libc::POLLNVAL;
        for p in &fds[..2] {
            if p.revents & bad != 0 {
                return Err(std::io::Error::other(format!(
                    "TUN device fd {} reported an error (revents {:#x})",
                    p.fd, p.revents
                )));
            }
        }
        Ok([fds[0].revents & libc::POLLIN != 0, fds[1].revents & libc::POLLIN != 0, fds[2].revents & libc::POLLIN != 0])
    }

    fn drain_wake(&self) {
        let mut value: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64 from our non-blocking eventfd.
        unsafe {
            libc::read(self.shared.wake.as_raw_fd(), (&mut value as *mut u64).cast(), 8);
        }
    }

    fn refresh_config(&mut self) {
        let version = self.shared.config_version.load(Ordering::SeqCst);
        if version != self.seen_version {
            let config = lock(&self.shared.config).clone();
            for (shaper, imp) in self.shapers.iter_mut().zip(config) {
                shaper.set_impairment(imp);
            }
            self.seen_version = version;
        }
    }

    /// Reads up to [`READ_BATCH`] packets from direction `dir`'s source and schedules them.
    fn read_batch(&mut self, dir: usize, buf: &mut [u8]) -> std::io::Result<()> {
        for _ in 0..READ_BATCH {
            let Some(len) = read_packet(&self.fds[dir], buf)? else { break };
            if len == 0 {
                continue;
            }
            let now = Instant::now();
            {
                let mut cap = lock(&self.shared.capture);
                let (list, max) = &mut *cap;
                if list.len() < *max {
                    if let Some((protocol, src, dst)) = parse_ipv4(&buf[..len]) {
                        let direction = if dir == 0 { Direction::AtoB } else { Direction::BtoA };
                        list.push(Captured { at: std::time::SystemTime::now(), direction, protocol, src, dst, len });
                    }
                }
            }
            let verdict = if self.heaps[dir].len() >= MAX_IN_FLIGHT {
                Verdict::Drop(DropReason::Queue)
            } else {
                self.shapers[dir].admit(now, len)
            };
            let mut stats = lock(&self.shared.stats);
            let st = if dir == 0 { &mut stats.a_to_b } else { &mut stats.b_to_a };
            st.received += 1;
            match verdict {
                Verdict::Drop(DropReason::Loss) => st.dropped_loss += 1,
                Verdict::Drop(DropReason::Burst) => st.dropped_burst += 1,
                Verdict::Drop(DropReason::Queue) => st.dropped_queue += 1,
                Verdict::Release(release) => {
                    drop(stats);
                    self.seq += 1;
                    let data = buf[..len].to_vec();
                    self.heaps[dir].push(Reverse(Pending { release, seq: self.seq, arrival: now, data }));
                }
            }
        }
        Ok(())
    }

    /// Writes every packet whose release time has come.
    fn release_due(&mut self) {
        for dir in 0..2 {
            loop {
                let now = Instant::now();
                match self.heaps[dir].peek() {
                    Some(Reverse(p)) if p.release <= now => {}
                    _ => break,
                }
                let Some(Reverse(p)) = self.heaps[dir].pop() else { break };
                let ok = matches!(write_packet(&self.fds[1 - dir], &p.data), Ok(true));
                let done = Instant::now();
                let mut stats = lock(&self.shared.stats);
                let st = if dir == 0 { &mut stats.a_to_b } else { &mut stats.b_to_a };
                if ok {
                    st.record_forward(p.data.len(), done - p.arrival, done.saturating_duration_since(p.release));
                } else {
                    st.dropped_write += 1;
                }
            }
        }
    }
}
