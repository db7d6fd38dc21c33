//! The virtual network: where nodes are, how long a message takes between
//! two of them, and the state of each virtual TCP connection.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::net::{Ipv4Addr, SocketAddr};
use supervox_core::link::{DEAD_AFTER_MS, KEEPALIVE_MS};
use supervox_core::ConnId;
use supervox_proto::{encode_message, Message};

/// Cities nodes live in; the RTT between two cities is drawn once.
pub const CITIES: usize = 64;
/// Median of the city-to-city RTT distribution, ms.
const RTT_MEDIAN_MS: f64 = 70.0;
/// Log-normal sigma: with the median above, 1% of pairs are under ~18 ms
/// and 1% over ~270 ms.
const RTT_SIGMA: f64 = 0.58;
/// RTT floor and cap, ms.
const RTT_MIN_MS: f64 = 20.0;
const RTT_MAX_MS: f64 = 300.0;
/// RTT between two nodes of the same city, ms.
const SAME_CITY_RTT_MS: f64 = 10.0;
/// Most one-way delay a node's access link adds, ms.
const ACCESS_MAX_MS: u32 = 6;
/// Lowest TCP retransmission timeout (Linux), ms.
const MIN_RTO_MS: u64 = 200;

/// Where a node sits: its city and its access-link delay.
#[derive(Debug, Clone, Copy)]
pub struct Location {
    city: u16,
    access_ms: u8,
}

/// RTTs between cities plus per-node access delays: every pair of nodes has
/// one fixed one-way delay, and pair RTTs follow a log-normal distribution
/// clamped to 20-300 ms (median ~80 ms with the access links).
#[derive(Debug)]
pub struct Latency {
    city_rtt: Vec<u16>,
}

impl Latency {
    /// Draw the city matrix.
    pub fn new(rng: &mut StdRng) -> Self {
        let mut city_rtt = vec![0u16; CITIES * CITIES];
        for a in 0..CITIES {
            for b in a..CITIES {
                let rtt = if a == b {
                    SAME_CITY_RTT_MS
                } else {
                    (RTT_MEDIAN_MS * (RTT_SIGMA * normal(rng)).exp()).clamp(RTT_MIN_MS, RTT_MAX_MS)
                };
                city_rtt[a * CITIES + b] = rtt.round() as u16;
                city_rtt[b * CITIES + a] = rtt.round() as u16;
            }
        }
        Self { city_rtt }
    }

    /// A location for a new node.
    pub fn place(&self, rng: &mut StdRng) -> Location {
        Location { city: rng.gen_range(0..CITIES as u16), access_ms: rng.gen_range(0..=ACCESS_MAX_MS) as u8 }
    }

    /// One-way delay between two locations, ms (at least 1).
    pub fn one_way_ms(&self, a: Location, b: Location) -> u64 {
        let rtt = u64::from(self.city_rtt[a.city as usize * CITIES + b.city as usize]);
        (rtt / 2 + u64::from(a.access_ms) + u64::from(b.access_ms)).max(1)
    }
}

/// A standard normal draw (Box-Muller).
pub fn normal(rng: &mut StdRng) -> f64 {
    let u1: f64 = rng.gen_range(f64::EPSILON..1.0);
    let u2: f64 = rng.gen();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// An exponential draw with the given median, ms.
pub fn exp_with_median(rng: &mut StdRng, median_ms: f64) -> u64 {
    let u: f64 = rng.gen_range(f64::EPSILON..1.0);
    (-u.ln() * median_ms / std::f64::consts::LN_2) as u64
}

/// SplitMix64: derives independent seeds (identities, node RNGs) from the
/// run seed, so adding a node never shifts another node's randomness.
pub fn derive(seed: u64, kind: u64, index: u64) -> u64 {
    let mut z = seed ^ kind.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// 32 seed bytes for an identity.
pub fn seed32(seed: u64, kind: u64, index: u64) -> [u8; 32] {
    let mut rng = StdRng::seed_from_u64(derive(seed, kind, index));
    let mut out = [0u8; 32];
    rng.fill(&mut out);
    out
}

const SN_NET: u32 = 0x0A00_0001; // 10.0.0.1
const CLIENT_NET: u32 = 0x0B00_0001; // 11.0.0.1
const SN_PORT: u16 = 4000;

/// The advertised address of supernode slot `i`.
pub fn sn_addr(i: u32) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::from(SN_NET + i), SN_PORT))
}

/// The supernode slot an address belongs to.
pub fn sn_index(addr: SocketAddr) -> Option<u32> {
    match addr {
        SocketAddr::V4(a) if a.port() == SN_PORT => u32::from(*a.ip()).checked_sub(SN_NET),
        _ => None,
    }
}

/// The address a supernode sees for client `i` (the port changes per run
/// of the client process).
pub fn client_addr(i: u32, generation: u32) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::from(CLIENT_NET + i), 40_000 + (generation % 20_000) as u16))
}

/// A node of the simulation, as the end of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Node {
    /// Supernode slot.
    Sn(u32),
    /// Client slot and its process generation (a restart is a new one).
    Client(u32, u32),
}

/// The end of a connection: 0 is the dialler, 1 the acceptor.
pub type Side = usize;

/// One virtual TCP connection (with the Noise link on top).
#[derive(Debug)]
pub struct VLink {
    /// Dialler and acceptor.
    pub ends: [Node; 2],
    /// The address dialled.
    pub target: SocketAddr,
    /// One-way delay, ms.
    pub delay_ms: u64,
    /// The end has been told it is connected and not yet that it closed.
    pub open: [bool; 2],
    /// The end has closed (or died): nothing more reaches it.
    pub gone: [bool; 2],
    /// When each end went (`u64::MAX` while it has not).
    pub gone_at: [u64; 2],
    /// The acceptor finished the handshake and sent its Hello.
    pub acceptor_hello: bool,
    /// Arrival time of the last thing sent towards each end (keeps FIFO).
    pub last_arrival: [u64; 2],
}

impl VLink {
    /// The end that is not `side`.
    pub fn other(side: Side) -> Side {
        1 - side
    }

    /// A link from `from` to `to` (not yet connected).
    pub fn new(ends: [Node; 2], target: SocketAddr, delay_ms: u64) -> Self {
        Self {
            ends,
            target,
            delay_ms,
            open: [false; 2],
            gone: [false; 2],
            gone_at: [u64::MAX; 2],
            acceptor_hello: false,
            last_arrival: [0; 2],
        }
    }

    /// End `side` closed or died at `now`.
    pub fn mark_gone(&mut self, side: Side, now: u64) {
        if !self.gone[side] {
            self.gone[side] = true;
            self.gone_at[side] = now;
        }
        self.open[side] = false;
    }

    /// Which end `node` is, if any.
    pub fn side_of(&self, node: Node) -> Option<Side> {
        self.ends.iter().position(|n| *n == node)
    }

    /// Arrival time of something sent now from `from`, after the delay, an
    /// optional retransmission and everything sent before it on this stream.
    pub fn arrival(&mut self, from: Side, now: u64, lost: bool) -> u64 {
        let to = Self::other(from);
        let rto = if lost { MIN_RTO_MS.max(4 * self.delay_ms) } else { 0 };
        let at = (now + self.delay_ms + rto).max(self.last_arrival[to]);
        self.last_arrival[to] = at;
        at
    }
}

/// Wire size of one message: postcard body, Noise tag, frame header.
pub fn wire_bytes(m: &Message) -> u64 {
    encode_message(m).map_or(0, |b| b.len() as u64 + 16 + 4)
}

/// When peers notice a silent crash: the link gives up [`DEAD_AFTER_MS`]
/// after the last thing heard, which was a keepalive at most
/// [`KEEPALIVE_MS`] before the crash.
pub fn silent_detection_ms(rng: &mut StdRng) -> u64 {
    DEAD_AFTER_MS - rng.gen_range(0..KEEPALIVE_MS)
}

/// Connection ids are indices into the link table.
pub fn conn_index(conn: ConnId) -> usize {
    conn as usize
}

/// A set of small integers with O(1) insert, remove and uniform pick.
#[derive(Debug, Default)]
pub struct IndexSet {
    items: Vec<u32>,
    pos: Vec<u32>,
}

impl IndexSet {
    const ABSENT: u32 = u32::MAX;

    /// Add `x` (no-op if present).
    pub fn insert(&mut self, x: u32) {
        let i = x as usize;
        if self.pos.len() <= i {
            self.pos.resize(i + 1, Self::ABSENT);
        }
        if self.pos[i] == Self::ABSENT {
            self.pos[i] = self.items.len() as u32;
            self.items.push(x);
        }
    }

    /// Remove `x` (no-op if absent).
    pub fn remove(&mut self, x: u32) {
        let i = x as usize;
        let Some(&p) = self.pos.get(i) else {
            return;
        };
        if p == Self::ABSENT {
            return;
        }
        let last = self.items.pop().expect("non-empty: x is in the set");
        if last != x {
            self.items[p as usize] = last;
            self.pos[last as usize] = p;
        }
        self.pos[i] = Self::ABSENT;
    }

    /// Whether `x` is in the set.
    pub fn contains(&self, x: u32) -> bool {
        self.pos.get(x as usize).is_some_and(|p| *p != Self::ABSENT)
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// A uniformly random element.
    pub fn pick(&self, rng: &mut StdRng) -> Option<u32> {
        (!self.items.is_empty()).then(|| self.items[rng.gen_range(0..self.items.len())])
    }

    /// The elements, in an order that depends only on the operations done.
    pub fn as_slice(&self) -> &[u32] {
        &self.items
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtt_distribution_spans_20_to_300_ms() {
        let mut rng = StdRng::seed_from_u64(1);
        let lat = Latency::new(&mut rng);
        let mut rtts: Vec<u64> = (0..5_000)
            .map(|_| {
                let (a, b) = (lat.place(&mut rng), lat.place(&mut rng));
                2 * lat.one_way_ms(a, b)
            })
            .collect();
        rtts.sort_unstable();
        let median = rtts[rtts.len() / 2];
        assert!((65..=100).contains(&median), "median {median}");
        assert!(rtts[0] >= 10 && *rtts.last().unwrap() <= 2 * (150 + 2 * ACCESS_MAX_MS as u64));
    }

    #[test]
    fn addresses_round_trip_and_sets_pick() {
        assert_eq!(sn_index(sn_addr(70_000)), Some(70_000));
        assert_eq!(sn_index(client_addr(3, 0)), None);
        let mut s = IndexSet::default();
        for x in [5, 9, 2] {
            s.insert(x);
        }
        s.remove(5);
        s.insert(9);
        assert_eq!(s.len(), 2);
        assert!(s.contains(2) && s.contains(9) && !s.contains(5));
        let mut rng = StdRng::seed_from_u64(0);
        assert!(matches!(s.pick(&mut rng), Some(2 | 9)));
    }
}
