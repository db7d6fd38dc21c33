//! The host cache: supernode addresses a client knows, persisted between
//! runs, at most [`MAX_ENTRIES`] (as Skype's did), each with what the client
//! measured or was told about it: the sign-in round trip, the advertised
//! load, when it was last heard of, recent failures, and the supernode's
//! identity key once known.
//!
//! Keys are pinned: a seed given as `KEY@IP:PORT` carries its key from the
//! start; any other entry learns the key its supernode proved in the link
//! handshake at the first successful sign-in (trust on first use). A
//! supernode that later answers at that address with another key is refused
//! by the client ([`HostCache::key`]).
//!
//! Order ([`HostCache::ordered`]): entries waiting out a failure backoff go
//! last (soonest retry first); the others by [`Entry::score_ms`], lowest
//! first, so fresh, lightly loaded, close supernodes are tried first.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use supervox_proto::UserId;

/// Per-client spread added to scores (see [`HostCache::ordered`]): about
/// the RTT difference between neighbouring cities, or 25 load points.
pub const SPREAD_MS: u32 = 100;
/// Most entries kept.
pub const MAX_ENTRIES: usize = 200;
/// RTT assumed for an entry never measured (a typical Internet path).
pub const UNMEASURED_RTT_MS: u32 = 200;
/// Load assumed for an entry whose load was never advertised, percent.
pub const UNKNOWN_LOAD_PCT: u8 = 50;
/// Score cost of one percent of load: a supernode at 50 % costs as much as
/// 200 ms more round trip.
pub const MS_PER_LOAD_PCT: u32 = 4;
/// Score cost of a full supernode (load ≥ 100 %): behind every other one.
pub const FULL_PENALTY_MS: u32 = 10_000;
/// Entries not heard of (listed by a supernode or signed in to) for this
/// long are stale.
pub const FRESH_MS: u64 = 30 * 60_000;
/// Score cost of a stale entry.
pub const STALE_PENALTY_MS: u32 = 300;
/// First failure backoff of an entry; doubles per failure.
pub const FAIL_BACKOFF_MS: u64 = 1_000;
/// Longest failure backoff of an entry.
pub const MAX_FAIL_BACKOFF_MS: u64 = 5 * 60_000;

/// One known supernode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// Where to dial it.
    pub addr: SocketAddr,
    /// Smoothed time from dialling to its `Welcome` (TCP + Noise handshake
    /// and admission), ms; `None` until measured.
    pub rtt_ms: Option<u32>,
    /// Load it advertised (percent of capacity), as a supernode listed it.
    pub load: Option<u8>,
    /// Failures since it last worked.
    pub fails: u32,
    /// Not tried again before this time (unix ms) after a failure.
    pub retry_at_ms: u64,
    /// Last time a supernode listed it or we signed in to it (unix ms; 0: never).
    pub seen_ms: u64,
    /// The supernode's identity (the key it proved in the link handshake),
    /// pinned: from a `KEY@IP:PORT` seed or learnt at the first sign-in.
    pub key: Option<UserId>,
}

impl Entry {
    fn new(addr: SocketAddr) -> Self {
        Self { addr, rtt_ms: None, load: None, fails: 0, retry_at_ms: 0, seen_ms: 0, key: None }
    }

    /// The ordering score at `now_ms`, lower is better:
    /// `rtt + 4 ms × load% (+ 10 000 if full) (+ 300 if not heard of for 30 min)`,
    /// with 200 ms and 50 % for what is unknown.
    pub fn score_ms(&self, now_ms: u64) -> u32 {
        let rtt = self.rtt_ms.unwrap_or(UNMEASURED_RTT_MS);
        let load = self.load.unwrap_or(UNKNOWN_LOAD_PCT);
        let full = if load >= 100 { FULL_PENALTY_MS } else { 0 };
        let stale = if now_ms.saturating_sub(self.seen_ms) > FRESH_MS { STALE_PENALTY_MS } else { 0 };
        rtt.saturating_add(MS_PER_LOAD_PCT * u32::from(load)).saturating_add(full).saturating_add(stale)
    }

    /// Whether it is waiting out a failure backoff at `now_ms`.
    pub fn backing_off(&self, now_ms: u64) -> bool {
        self.retry_at_ms > now_ms
    }
}

/// A supernode named on the command line: `IP:PORT` (its key is trusted on
/// first use) or `KEY@IP:PORT`, KEY being the 64 hex digits of its user id
/// (as `ctl status --json` prints `user_id`), pinned from the start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seed {
    /// Where to dial it.
    pub addr: SocketAddr,
    /// The identity it must prove, if given.
    pub key: Option<UserId>,
}

impl From<SocketAddr> for Seed {
    fn from(addr: SocketAddr) -> Self {
        Self { addr, key: None }
    }
}

impl FromStr for Seed {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (key, addr) = match s.split_once('@') {
            Some((k, a)) => {
                let key = UserId::from_hex(k)
                    .filter(UserId::is_strong)
                    .ok_or_else(|| format!("{k:?} is not a supernode key (64 hex digits of its user id)"))?;
                (Some(key), a)
            }
            None => (None, s),
        };
        let addr = addr.parse().map_err(|_| format!("{addr:?} is not an IP:PORT address"))?;
        Ok(Self { addr, key })
    }
}

impl fmt::Display for Seed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.key {
            Some(k) => write!(f, "{k}@{}", self.addr),
            None => write!(f, "{}", self.addr),
        }
    }
}

/// Longest host name of a named seed (RFC 1035).
pub const MAX_HOST_LEN: usize = 253;

/// A supernode named by host name, `[KEY@]HOST:PORT`: the driver resolves it
/// (A and AAAA) at the start of every connection round, so an operator can
/// move supernodes behind a DNS name. Every address it resolves to is a seed
/// (with KEY pinned, if given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedSeed {
    /// The host name.
    pub host: String,
    /// The port.
    pub port: u16,
    /// The identity every address of it must prove, if given.
    pub key: Option<UserId>,
}

/// A `--seed` as given: an address or a host name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeedSpec {
    /// `[KEY@]IP:PORT`.
    Addr(Seed),
    /// `[KEY@]HOST:PORT`.
    Name(NamedSeed),
}

/// A DNS host name: labels of letters, digits and `-` (not at either end),
/// 1–63 bytes each, 253 in all; not all digits and dots (a mistyped address).
fn valid_host(h: &str) -> bool {
    let label = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let h = h.strip_suffix('.').unwrap_or(h);
    (1..=MAX_HOST_LEN).contains(&h.len())
        && h.split('.').all(label)
        && !h.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

impl FromStr for SeedSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (key_part, rest) = match s.split_once('@') {
            Some((k, r)) => (Some(k), r),
            None => (None, s),
        };
        if rest.parse::<SocketAddr>().is_ok() {
            return s.parse().map(SeedSpec::Addr);
        }
        let key = match key_part {
            Some(k) => Some(
                UserId::from_hex(k)
                    .filter(UserId::is_strong)
                    .ok_or_else(|| format!("{k:?} is not a supernode key (64 hex digits of its user id)"))?,
            ),
            None => None,
        };
        let bad = || format!("{rest:?} is neither IP:PORT nor HOST:PORT");
        let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().ok().filter(|p| *p != 0).ok_or_else(bad)?;
        if !valid_host(host) {
            return Err(bad());
        }
        Ok(SeedSpec::Name(NamedSeed { host: host.to_ascii_lowercase(), port, key }))
    }
}

impl fmt::Display for SeedSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SeedSpec::Addr(s) => write!(f, "{s}"),
            SeedSpec::Name(n) => match n.key {
                Some(k) => write!(f, "{k}@{}:{}", n.host, n.port),
                None => write!(f, "{}:{}", n.host, n.port),
            },
        }
    }
}

/// A bounded set of supernodes with their measurements: see the module docs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostCache {
    entries: Vec<Entry>,
}

impl HostCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// The entries, in storage order (see [`HostCache::ordered`] for the
    /// order to try them in).
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The addresses, in storage order.
    pub fn addrs(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.entries.iter().map(|e| e.addr)
    }

    /// One entry.
    pub fn get(&self, addr: &SocketAddr) -> Option<&Entry> {
        self.entries.iter().find(|e| e.addr == *addr)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there is nothing to try.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The addresses in the order to try them at `now_ms` (module docs).
    /// A non-zero `salt` (drawn once per client) adds 0-[`SPREAD_MS`) ms to
    /// each entry's score, different for every client: clients holding the
    /// same advertised loads (every `Welcome` lists the least loaded
    /// supernodes) would otherwise all pick the same ones after a crash and
    /// fill them, one redirect after another.
    pub fn ordered(&self, now_ms: u64, salt: u64) -> Vec<SocketAddr> {
        let spread = |addr: &SocketAddr| -> u32 {
            if salt == 0 {
                return 0;
            }
            let mut h = std::collections::hash_map::DefaultHasher::new();
            std::hash::Hash::hash(addr, &mut h);
            std::hash::Hash::hash(&salt, &mut h);
            (std::hash::Hasher::finish(&h) % u64::from(SPREAD_MS)) as u32
        };
        let mut v: Vec<(bool, u64, u32, usize)> = self
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let off = e.backing_off(now_ms);
                (off, if off { e.retry_at_ms } else { 0 }, e.score_ms(now_ms).saturating_add(spread(&e.addr)), i)
            })
            .collect();
        // Ties keep storage order (seeds and older entries first).
        v.sort_unstable();
        v.into_iter().map(|(.., i)| self.entries[i].addr).collect()
    }

    fn entry_mut(&mut self, addr: SocketAddr) -> Option<&mut Entry> {
        if let Some(i) = self.entries.iter().position(|e| e.addr == addr) {
            return self.entries.get_mut(i);
        }
        if self.entries.len() >= MAX_ENTRIES {
            // Full: make room only by forgetting the entry that failed most.
            let (i, worst) = self.entries.iter().enumerate().max_by_key(|(_, e)| e.fails)?;
            if worst.fails == 0 {
                return None;
            }
            self.entries.remove(i);
        }
        self.entries.push(Entry::new(addr));
        self.entries.last_mut()
    }

    /// Add an address if it is new (a seed, or one read from an old file).
    pub fn add(&mut self, addr: SocketAddr) {
        self.entry_mut(addr);
    }

    /// Add an address and forget its failures: the user named it (a seed).
    pub fn promote(&mut self, addr: SocketAddr) {
        if let Some(e) = self.entry_mut(addr) {
            e.fails = 0;
            e.retry_at_ms = 0;
        }
    }

    /// Add a seed ([`HostCache::promote`]); a key it carries replaces the
    /// pinned one (the user's word beats what was learnt).
    pub fn add_seed(&mut self, seed: &Seed) {
        self.promote(seed.addr);
        if let (Some(key), Some(e)) = (seed.key, self.entries.iter_mut().find(|e| e.addr == seed.addr)) {
            e.key = Some(key);
        }
    }

    /// The key pinned for `addr`, if any.
    pub fn key(&self, addr: &SocketAddr) -> Option<UserId> {
        self.get(addr).and_then(|e| e.key)
    }

    /// Trust on first use: pin `key` for `addr` unless a key is pinned
    /// already. Returns true if it was pinned now.
    pub fn learn_key(&mut self, addr: SocketAddr, key: UserId) -> bool {
        match self.entries.iter_mut().find(|e| e.addr == addr) {
            Some(e) if e.key.is_none() => {
                e.key = Some(key);
                true
            }
            _ => false,
        }
    }

    /// A supernode listed this member with its load (`Welcome`, `Redirect`):
    /// refreshes the entry, adding it if there is room.
    pub fn heard_of(&mut self, addr: SocketAddr, load: Option<u8>, now_ms: u64) {
        if let Some(e) = self.entry_mut(addr) {
            if load.is_some() {
                e.load = load;
            }
            e.seen_ms = e.seen_ms.max(now_ms);
        }
    }

    /// We signed in there: `rtt_ms` from dialling to its `Welcome` (smoothed
    /// 3:1 with earlier measurements), `load` as it advertised itself.
    pub fn succeeded(&mut self, addr: SocketAddr, rtt_ms: u32, load: Option<u8>, now_ms: u64) {
        if let Some(e) = self.entry_mut(addr) {
            let rtt = rtt_ms.max(1);
            e.rtt_ms = Some(e.rtt_ms.map_or(rtt, |old| ((3 * u64::from(old) + u64::from(rtt)) / 4) as u32));
            if load.is_some() {
                e.load = load;
            }
            e.fails = 0;
            e.retry_at_ms = 0;
            e.seen_ms = e.seen_ms.max(now_ms);
        }
    }

    /// Dialling, the handshake or the link failed: back off from this entry
    /// (1 s, doubling per failure, at most 5 min).
    pub fn failed(&mut self, addr: SocketAddr, now_ms: u64) {
        if let Some(e) = self.entries.iter_mut().find(|e| e.addr == addr) {
            e.fails = e.fails.saturating_add(1);
            let backoff = FAIL_BACKOFF_MS.saturating_mul(1 << (e.fails - 1).min(20)).min(MAX_FAIL_BACKOFF_MS);
            e.retry_at_ms = now_ms.saturating_add(backoff);
        }
    }

    /// It answered but is full (it redirected us): order it behind the others.
    pub fn full(&mut self, addr: SocketAddr, now_ms: u64) {
        if let Some(e) = self.entries.iter_mut().find(|e| e.addr == addr) {
            e.load = Some(100);
            e.seen_ms = e.seen_ms.max(now_ms);
        }
    }

    /// Serialise: one entry per line, `ADDR [rtt=MS] [load=PCT] [fails=N
    /// retry=UNIX_MS] [seen=UNIX_MS] [key=HEX64]`.
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        for e in &self.entries {
            let _ = write!(s, "{}", e.addr);
            if let Some(r) = e.rtt_ms {
                let _ = write!(s, " rtt={r}");
            }
            if let Some(l) = e.load {
                let _ = write!(s, " load={l}");
            }
            if e.fails > 0 {
                let _ = write!(s, " fails={} retry={}", e.fails, e.retry_at_ms);
            }
            if e.seen_ms > 0 {
                let _ = write!(s, " seen={}", e.seen_ms);
            }
            if let Some(k) = e.key {
                let _ = write!(s, " key={k}");
            }
            s.push('\n');
        }
        s
    }

    /// Parse the text form. Old files (one address per line) load too; bad
    /// lines and unknown or malformed fields are skipped (the cache is a hint).
    pub fn from_text(text: &str) -> Self {
        let mut c = Self::new();
        for line in text.lines() {
            let mut words = line.split_whitespace();
            let Some(Ok(addr)) = words.next().map(str::parse::<SocketAddr>) else {
                continue;
            };
            let Some(e) = c.entry_mut(addr) else {
                continue;
            };
            for w in words {
                let Some((k, v)) = w.split_once('=') else { continue };
                match k {
                    "rtt" => e.rtt_ms = v.parse().ok().or(e.rtt_ms),
                    "load" => e.load = v.parse().ok().or(e.load),
                    "fails" => e.fails = v.parse().unwrap_or(e.fails),
                    "retry" => e.retry_at_ms = v.parse().unwrap_or(e.retry_at_ms),
                    "seen" => e.seen_ms = v.parse().unwrap_or(e.seen_ms),
                    // A damaged key is dropped: the entry is then trusted on
                    // first use again, as one without a key.
                    "key" => e.key = UserId::from_hex(v).filter(UserId::is_strong).or(e.key),
                    _ => {}
                }
            }
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(p: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], p))
    }

    const NOW: u64 = 1_700_000_000_000;

    #[test]
    fn bounded_and_persistent_in_both_formats() {
        let mut c = HostCache::new();
        for p in 0..300 {
            c.add(a(p));
        }
        assert_eq!(c.len(), MAX_ENTRIES);
        // Full of entries that never failed: a newcomer is not taken...
        c.heard_of(a(250), Some(10), NOW);
        assert!(c.get(&a(250)).is_none());
        // ...but replaces the entry that failed most.
        c.failed(a(7), NOW);
        c.heard_of(a(250), Some(10), NOW);
        assert!(c.get(&a(7)).is_none());
        assert_eq!(c.get(&a(250)).unwrap().load, Some(10));
        c.succeeded(a(3), 40, Some(20), NOW);
        c.failed(a(4), NOW);
        let back = HostCache::from_text(&(c.to_text() + "garbage\n"));
        assert_eq!(back, c);
        // An old file: one address per line.
        let old = HostCache::from_text("127.0.0.1:1\n127.0.0.1:2\n\n127.0.0.1:1\nnot-an-addr\n");
        assert_eq!(old.addrs().collect::<Vec<_>>(), vec![a(1), a(2)]);
        assert_eq!(old.get(&a(1)).unwrap().rtt_ms, None);
        // Unknown and malformed fields are skipped, the rest is kept.
        let odd = HostCache::from_text("127.0.0.1:9 rtt=x load=30 colour=red junk\n");
        assert_eq!(odd.get(&a(9)).map(|e| (e.rtt_ms, e.load)), Some((None, Some(30))));
    }

    #[test]
    fn keys_are_pinned_persisted_and_old_files_load() {
        let k1 = crate::Identity::from_seed([1; 32]).user_id();
        let k2 = crate::Identity::from_seed([2; 32]).user_id();
        let mut c = HostCache::new();
        c.add(a(1));
        assert_eq!(c.key(&a(1)), None);
        // First use pins; a second key does not replace it.
        assert!(c.learn_key(a(1), k1));
        assert!(!c.learn_key(a(1), k2));
        assert_eq!(c.key(&a(1)), Some(k1));
        // Unknown addresses are not added by learning.
        assert!(!c.learn_key(a(5), k1) && c.get(&a(5)).is_none());
        // A seed with a key overrides; a bare seed keeps the pinned key.
        c.add_seed(&Seed { addr: a(1), key: Some(k2) });
        assert_eq!(c.key(&a(1)), Some(k2));
        c.add_seed(&Seed::from(a(1)));
        assert_eq!(c.key(&a(1)), Some(k2));
        c.add_seed(&format!("{k1}@127.0.0.1:2").parse().unwrap());
        assert_eq!(c.key(&a(2)), Some(k1));
        c.succeeded(a(2), 30, Some(5), NOW);
        let text = c.to_text();
        assert!(text.contains(&format!("127.0.0.1:2 rtt=30 load=5 seen={NOW} key={k1}\n")), "{text}");
        assert_eq!(HostCache::from_text(&text), c);
        // Files from before keys load, and their entries are then TOFU.
        let old = HostCache::from_text("127.0.0.1:1 rtt=20 load=10 seen=5\n127.0.0.1:2\n");
        assert_eq!(old.len(), 2);
        assert!(old.entries().iter().all(|e| e.key.is_none()));
        // A damaged or weak key is dropped, the entry kept.
        let weak = format!("01{}", "00".repeat(31));
        let bad = HostCache::from_text(&format!("127.0.0.1:1 key=zz\n127.0.0.1:2 key={weak} rtt=7\n"));
        assert_eq!(bad.key(&a(1)), None);
        assert_eq!(bad.get(&a(2)).map(|e| (e.key, e.rtt_ms)), Some((None, Some(7))));
    }

    #[test]
    fn seed_syntax() {
        let k = crate::Identity::from_seed([3; 32]).user_id();
        let s: Seed = format!("{k}@[::1]:443").parse().unwrap();
        assert_eq!(s, Seed { addr: "[::1]:443".parse().unwrap(), key: Some(k) });
        assert_eq!(s.to_string().parse::<Seed>().unwrap(), s);
        assert_eq!(
            "10.0.0.1:7000".parse::<Seed>().unwrap(),
            Seed::from("10.0.0.1:7000".parse::<SocketAddr>().unwrap())
        );
        let weak = format!("01{}", "00".repeat(31));
        for bad in [
            "",
            "@1.2.3.4:5",
            "abc@1.2.3.4:5",
            &format!("{k}@"),
            &format!("{k}1.2.3.4:5"),
            &format!("{weak}@1.2.3.4:5"),
            "1.2.3.4",
        ] {
            assert!(bad.parse::<Seed>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_seed_is_an_address_or_a_host_name() {
        let k = crate::Identity::from_seed([3; 32]).user_id();
        let addr = |s: &str| match s.parse::<SeedSpec>() {
            Ok(SeedSpec::Addr(a)) => Some(a),
            _ => None,
        };
        let name = |s: &str| match s.parse::<SeedSpec>() {
            Ok(SeedSpec::Name(n)) => Some(n),
            _ => None,
        };
        assert_eq!(addr("10.0.0.1:7000"), Some(Seed::from("10.0.0.1:7000".parse::<SocketAddr>().unwrap())));
        assert_eq!(addr(&format!("{k}@[::1]:443")).and_then(|s| s.key), Some(k));
        let n = name(&format!("{k}@SN.Example.org:443")).unwrap();
        assert_eq!((n.host.as_str(), n.port, n.key), ("sn.example.org", 443, Some(k)));
        assert_eq!(name("localhost:7000").map(|n| (n.host, n.port)), Some(("localhost".into(), 7000)));
        let long = format!("{}.example", "a".repeat(64));
        for bad in [
            "localhost",
            "localhost:0",
            "localhost:70000",
            "-bad.example:1",
            "bad-.example:1",
            "a..b:1",
            "under_score.example:1",
            "1.2.3:5",
            ":5",
            long.as_str(),
            "abc@localhost:5",
            "[::1:5",
        ] {
            assert!(bad.parse::<SeedSpec>().is_err(), "{bad}");
        }
        for s in [format!("{k}@sn.example:1"), "sn.example:1".into(), "127.0.0.1:9".into()] {
            assert_eq!(s.parse::<SeedSpec>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn low_rtt_and_low_load_fresh_entries_first_failures_last() {
        let mut c = HostCache::new();
        for p in 1..=6 {
            c.add(a(p));
        }
        c.succeeded(a(1), 300, Some(10), NOW); // far: 300 + 40
        c.succeeded(a(2), 20, Some(90), NOW); // near but busy: 20 + 360
        c.succeeded(a(3), 30, Some(10), NOW); // near and light: 30 + 40
        c.heard_of(a(4), Some(0), NOW); // unmeasured, idle: 200 + 0
        c.succeeded(a(5), 10, Some(0), NOW - FRESH_MS - 1); // stale: 10 + 300
        c.succeeded(a(6), 5, Some(0), NOW);
        c.full(a(6), NOW); // redirected us: behind every non-full one
        assert_eq!(c.ordered(NOW, 0), vec![a(3), a(4), a(5), a(1), a(2), a(6)]);
        // A failure moves the best one behind all, until its backoff ends.
        c.failed(a(3), NOW);
        assert_eq!(c.ordered(NOW, 0).last(), Some(&a(3)));
        assert_eq!(c.ordered(NOW + FAIL_BACKOFF_MS, 0)[0], a(3));
        // Backoff doubles per failure, capped.
        c.failed(a(3), NOW);
        assert_eq!(c.get(&a(3)).unwrap().retry_at_ms, NOW + 2 * FAIL_BACKOFF_MS);
        for _ in 0..40 {
            c.failed(a(3), NOW);
        }
        assert_eq!(c.get(&a(3)).unwrap().retry_at_ms, NOW + MAX_FAIL_BACKOFF_MS);
        // Of two entries backing off, the one that may retry sooner goes first.
        c.failed(a(4), NOW);
        let o = c.ordered(NOW, 0);
        assert_eq!(&o[o.len() - 2..], &[a(4), a(3)]);
        // Success clears failures; RTT is smoothed.
        c.succeeded(a(3), 70, None, NOW);
        let e = c.get(&a(3)).unwrap();
        assert_eq!((e.fails, e.retry_at_ms, e.rtt_ms, e.load), (0, 0, Some(40), Some(10)));
        assert_eq!(c.ordered(NOW, 0)[0], a(3));
    }

    #[test]
    fn clients_with_the_same_measurements_spread_over_equal_supernodes() {
        let mut c = HostCache::new();
        for p in 1..=20 {
            c.succeeded(a(p), 50, Some(10), NOW);
        }
        // Without a salt: storage order among equals.
        assert_eq!(c.ordered(NOW, 0)[0], a(1));
        // Different clients put different supernodes first.
        let firsts: std::collections::HashSet<SocketAddr> = (1..=50u64).map(|salt| c.ordered(NOW, salt)[0]).collect();
        assert!(firsts.len() >= 8, "{firsts:?}");
        // The spread never outweighs a large difference in load.
        c.succeeded(a(99), 50, Some(90), NOW);
        assert!((1..=50u64).all(|salt| c.ordered(NOW, salt).last() == Some(&a(99))));
    }
}
