//! Port prediction against a model of the two NATs it is for: an easy side
//! behind an endpoint-independent, address-and-port filtering NAT (a home
//! router) and a hard side behind one that gives every (socket, destination)
//! a fresh port (random, or sequential) and filters likewise. Time is passed
//! in; every run is deterministic.

use super::*;
use crate::call::tests::transport_pair;
use crate::media_path::{LocalBases, PathKind};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::{HashMap, HashSet};
use supervox_proto::{CallId, Candidate, CandidateKind, Transport};

const EASY_PUB: &str = "203.0.113.1:40000";
const HARD_IP: [u8; 4] = [198, 51, 100, 7];

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn hard_at(port: u16) -> SocketAddr {
    SocketAddr::from((HARD_IP, port))
}

fn report(mapping: NatBehaviour, filtering: NatBehaviour, mapped: &[SocketAddr]) -> NatReport {
    NatReport { mapping, filtering, mapped: mapped.to_vec(), spare_sockets: 0 }
}

/// How the hard NAT picks the public port of a new mapping.
enum Alloc {
    Random(Box<StdRng>),
    Sequential { next: u16, step: u16 },
}

struct Lab {
    easy: MediaPath,
    hard: MediaPath,
    /// Destinations the easy side has sent to (its NAT's filter).
    easy_contacted: HashSet<SocketAddr>,
    /// The hard NAT: (local socket, destination) → public port, and back.
    maps: HashMap<(Via, SocketAddr), u16>,
    rev: HashMap<u16, (Via, SocketAddr)>,
    alloc: Alloc,
    /// Guesses and checks the easy side sent to the hard IP: (time, port).
    easy_sent: Vec<(u64, u16)>,
    /// Datagrams the hard side sent, by local socket.
    hard_sent: Vec<(u64, Via)>,
    media_at_hard: usize,
}

impl Lab {
    /// The hard side's supernodes saw it at `sn_ports`; those mappings exist.
    fn new(alloc: Alloc, sn_ports: [u16; 2]) -> Lab {
        let id = CallId([9; 16]);
        let (ke, kh) = transport_pair();
        let srflx =
            |addr| Candidate { kind: CandidateKind::ServerReflexive, transport: Transport::Udp, addr, priority: 1 };
        let mut lab = Lab {
            easy: MediaPath::new(&id, ke, &[srflx(hard_at(sn_ports[0]))], LocalBases::default(), 0),
            hard: MediaPath::new(&id, kh, &[srflx(sa(EASY_PUB))], LocalBases::default(), 0),
            easy_contacted: HashSet::new(),
            maps: HashMap::new(),
            rev: HashMap::new(),
            alloc,
            easy_sent: Vec::new(),
            hard_sent: Vec::new(),
            media_at_hard: 0,
        };
        for (i, p) in sn_ports.into_iter().enumerate() {
            let sn = SocketAddr::from(([192, 0, 2, i as u8 + 1], 3478));
            lab.maps.insert((Via::Direct, sn), p);
            lab.rev.insert(p, (Via::Direct, sn));
        }
        lab
    }

    fn map(&mut self, via: Via, to: SocketAddr) -> u16 {
        if let Some(p) = self.maps.get(&(via, to)) {
            return *p;
        }
        let p = loop {
            let p = match &mut self.alloc {
                Alloc::Random(rng) => rng.gen_range(1024..=u16::MAX),
                Alloc::Sequential { next, step } => {
                    *next += *step;
                    *next
                }
            };
            if !self.rev.contains_key(&p) {
                break p;
            }
        };
        self.maps.insert((via, to), p);
        self.rev.insert(p, (via, to));
        p
    }

    fn deliver(&mut self, now: u64) {
        for _ in 0..10 {
            let from_easy: Vec<_> = std::iter::from_fn(|| self.easy.poll_transmit()).collect();
            let from_hard: Vec<_> = std::iter::from_fn(|| self.hard.poll_transmit()).collect();
            if from_easy.is_empty() && from_hard.is_empty() {
                return;
            }
            for (via, to, bytes) in from_easy {
                assert_eq!(via, Via::Direct, "the easy side has one socket");
                self.easy_contacted.insert(to);
                if to.ip() != IpAddr::from(HARD_IP) {
                    continue;
                }
                self.easy_sent.push((now, to.port()));
                // The hard NAT lets in only what answers a mapping's own destination.
                if let Some(&(spare, dest)) = self.rev.get(&to.port()) {
                    if dest == sa(EASY_PUB) && self.hard.handle_datagram(spare, sa(EASY_PUB), &bytes, now).is_some() {
                        self.media_at_hard += 1;
                    }
                }
            }
            for (via, to, bytes) in from_hard {
                self.hard_sent.push((now, via));
                let src = hard_at(self.map(via, to));
                if to == sa(EASY_PUB) && self.easy_contacted.contains(&src) {
                    self.easy.handle_datagram(Via::Direct, src, &bytes, now);
                }
            }
        }
    }

    /// Run both sides in 10 ms steps until `until` or both are on a direct pair.
    fn run(&mut self, from: u64, until: u64) -> u64 {
        let mut now = from;
        while now < until {
            now += 10;
            self.easy.handle_timeout(now);
            self.hard.handle_timeout(now);
            self.deliver(now);
            if self.easy.is_connected() && self.hard.is_connected() {
                break;
            }
        }
        now
    }

    /// The hard side's selected spare, if a spare carries the call.
    fn hard_spare(&self) -> Option<u16> {
        match self.hard.selected.map(|i| self.hard.pairs[i].via) {
            Some(Via::Spare(k)) => Some(k),
            _ => None,
        }
    }
}

#[test]
fn roles_follow_both_nat_reports() {
    use NatBehaviour::*;
    let m = [sa(EASY_PUB)];
    let home = report(EndpointIndependent, AddressAndPortDependent, &m);
    let strict = report(AddressAndPortDependent, AddressAndPortDependent, &m);
    let full_cone = report(EndpointIndependent, EndpointIndependent, &m);
    let unknown = report(Unknown, Unknown, &m);
    assert_eq!(role(&home, &strict), Some(Role::Easy));
    assert_eq!(role(&strict, &home), Some(Role::Hard));
    let restricted = report(AddressDependent, AddressDependent, &m);
    assert_eq!(role(&restricted, &home), Some(Role::Hard), "address-dependent mapping is per destination too");
    // Both per destination: relay. Nothing filtered: the hard side's checks get in already.
    assert_eq!(role(&strict, &strict), None);
    assert_eq!(role(&strict, &full_cone), None);
    assert_eq!(role(&full_cone, &strict), None);
    assert_eq!(role(&home, &home), None);
    assert_eq!(role(&unknown, &home), None);
    assert_eq!(role(&home, &unknown), None);
    // Nothing to aim at.
    assert_eq!(role(&home, &report(AddressAndPortDependent, AddressAndPortDependent, &[])), None);
}

#[test]
fn random_plan_is_distinct_ports_from_1024_without_the_supernodes_mappings() {
    let mapped = [hard_at(30_000), hard_at(51_234)];
    let plan = spray_plan(&mapped, SPRAY_BUDGET, &mut StdRng::seed_from_u64(1));
    assert_eq!(plan.len(), SPRAY_BUDGET);
    assert!(plan.iter().all(|&p| p >= 1024 && p != 30_000 && p != 51_234));
    assert_eq!(plan.iter().collect::<HashSet<_>>().len(), plan.len(), "no port twice");
    assert_eq!(plan, spray_plan(&mapped, SPRAY_BUDGET, &mut StdRng::seed_from_u64(1)), "seeded: reproducible");
    // Spread over the range, not bunched (a uniform half holds about half).
    let low = plan.iter().filter(|&&p| p < 33_280).count();
    assert!((900..1150).contains(&low), "{low} of 2048 in the lower half");
    // A huge budget is capped and still ends.
    assert_eq!(spray_plan(&mapped, usize::MAX, &mut StdRng::seed_from_u64(2)).len(), 16_384);
}

#[test]
fn sequential_ports_are_guessed_first_along_the_step() {
    let plan = spray_plan(&[hard_at(40_000), hard_at(40_002)], 600, &mut StdRng::seed_from_u64(3));
    assert_eq!(plan.len(), 600);
    let ahead: Vec<u16> = (1..=384).map(|k| 40_002 + 2 * k).collect();
    assert_eq!(plan[..384], ahead[..]);
    // Then behind the second port (40 000 itself is a supernode's), then random.
    assert_eq!(plan[384..387], [39_998, 39_996, 39_994]);
    // A falling NAT: the step is negative.
    let plan = spray_plan(&[hard_at(40_010), hard_at(40_007)], 10, &mut StdRng::seed_from_u64(3));
    assert_eq!(plan[..3], [40_004, 40_001, 39_998]);
    // Steps run off the port range without wrapping or going below 1024.
    let plan = spray_plan(&[hard_at(65_530), hard_at(65_533)], 40, &mut StdRng::seed_from_u64(3));
    assert_eq!(plan[0], 65_527, "nothing above 65 535: straight to the steps behind");
    // A large step, different IPs or one address only: random guesses only.
    for mapped in [vec![hard_at(1_000), hard_at(9_000)], vec![hard_at(40_000), sa("192.0.2.9:40002")], vec![]] {
        let plan = spray_plan(&mapped, 50, &mut StdRng::seed_from_u64(4));
        assert_eq!(plan.len(), 50);
        assert_ne!(plan[..2], [40_004, 40_006]);
    }
}

#[test]
fn birthday_spray_meets_a_spare_on_a_random_port_nat() {
    let mut guesses = Vec::new();
    for seed in 0..20 {
        let mut lab = Lab::new(Alloc::Random(Box::new(StdRng::seed_from_u64(seed))), [31_000, 47_000]);
        lab.hard.start_spares(SPARE_SOCKETS, sa(EASY_PUB), 0);
        lab.deliver(0);
        let spare_sends = lab.hard_sent.iter().filter(|(_, v)| matches!(v, Via::Spare(_))).count();
        assert_eq!(spare_sends, usize::from(SPARE_SOCKETS), "one check from each spare at once");
        // The easy side learns of the spares through signalling a moment later.
        let plan =
            spray_plan(&[hard_at(31_000), hard_at(47_000)], SPRAY_BUDGET, &mut StdRng::seed_from_u64(seed + 100));
        lab.easy.start_spray(IpAddr::from(HARD_IP), plan, 40);
        let now = lab.run(40, 4_000);
        assert!(lab.easy.is_connected() && lab.hard.is_connected(), "seed {seed}: no direct pair by {now} ms");
        assert_eq!((lab.easy.kind(), lab.hard.kind()), (PathKind::DirectUdp, PathKind::DirectUdp));
        let k = lab.hard_spare().expect("a spare carries the call");
        assert_eq!(lab.easy.remote(), Some(hard_at(lab.maps[&(Via::Spare(k), sa(EASY_PUB))])));
        // The spray stops; the other spares are released, the winner kept.
        lab.hard.handle_timeout(now + 10);
        assert!(!lab.easy.is_spraying());
        let kept = lab.hard.take_spare_release().expect("released");
        assert!(kept.contains(&k) && kept.len() <= 3, "kept {kept:?}");
        assert_eq!(lab.hard.take_spare_release(), None, "released once");
        guesses.push(lab.easy_sent.len());
        // Media flows on the predicted pair, and only the kept spare sends.
        lab.hard_sent.clear();
        let mut t = now;
        for _ in 0..50 {
            t += 20;
            lab.easy.send_media(b"voice");
            lab.hard.send_media(b"voice");
            lab.easy.handle_timeout(t);
            lab.hard.handle_timeout(t);
            lab.deliver(t);
        }
        assert!(lab.media_at_hard >= 50, "seed {seed}: {} frames arrived", lab.media_at_hard);
        assert!(lab.hard_sent.iter().all(|(_, v)| match v {
            Via::Spare(i) => kept.contains(i),
            _ => true,
        }));
    }
    // 256 mappings among 64 512 ports: a hit every ~250 guesses on average.
    let mean = guesses.iter().sum::<usize>() / guesses.len();
    assert!((60..800).contains(&mean), "mean guesses before a hit: {mean} ({guesses:?})");
}

#[test]
fn spray_is_rate_limited() {
    let mut lab = Lab::new(Alloc::Random(Box::new(StdRng::seed_from_u64(7))), [31_000, 47_000]);
    // No spares: nothing can answer, so the whole plan goes out.
    let plan = spray_plan(&[hard_at(31_000)], SPRAY_BUDGET, &mut StdRng::seed_from_u64(8));
    lab.easy.start_spray(IpAddr::from(HARD_IP), plan, 0);
    let mut now = 0;
    let mut per_tick = Vec::new();
    while now < 3_000 {
        let before = lab.easy_sent.len();
        now += 20;
        if lab.easy.is_spraying() {
            assert!(lab.easy.poll_timeout() <= now, "the spray's timer is due");
        }
        lab.easy.handle_timeout(now);
        lab.hard.handle_timeout(now);
        lab.deliver(now);
        per_tick.push(lab.easy_sent.len() - before);
    }
    let sprayed = |upto: u64| lab.easy_sent.iter().filter(|(t, p)| *t <= upto && *p != 31_000).count();
    assert!((1_450..=1_560).contains(&sprayed(1_000)), "{} guesses in the first second", sprayed(1_000));
    assert_eq!(sprayed(3_000), SPRAY_BUDGET, "the whole plan, once");
    assert!(!lab.easy.is_spraying());
    // A late timer sends a bounded burst, not the backlog.
    let mut lab = Lab::new(Alloc::Random(Box::new(StdRng::seed_from_u64(7))), [31_000, 47_000]);
    let plan = spray_plan(&[hard_at(31_000)], SPRAY_BUDGET, &mut StdRng::seed_from_u64(8));
    lab.easy.start_spray(IpAddr::from(HARD_IP), plan, 0);
    lab.deliver(0);
    let before = lab.easy_sent.len();
    lab.easy.handle_timeout(5_000);
    lab.deliver(5_000);
    assert!(lab.easy_sent.len() - before <= SPRAY_BURST + 2, "{} at once", lab.easy_sent.len() - before);
}

#[test]
fn sequential_nat_is_met_by_the_first_guesses() {
    // The supernodes saw 40 000 and 40 002; the NAT steps by 2 from there.
    let mut lab = Lab::new(Alloc::Sequential { next: 40_002, step: 2 }, [40_000, 40_002]);
    // The hard side's ordinary check to the easy side takes the next port...
    lab.deliver(0);
    // ...and a few spares the ones after it.
    lab.hard.start_spares(4, sa(EASY_PUB), 0);
    lab.deliver(0);
    let plan = spray_plan(&[hard_at(40_000), hard_at(40_002)], SPRAY_BUDGET, &mut StdRng::seed_from_u64(5));
    lab.easy.start_spray(IpAddr::from(HARD_IP), plan, 10);
    let now = lab.run(10, 2_000);
    assert!(lab.easy.is_connected() && lab.hard.is_connected());
    assert_eq!(lab.easy.kind(), PathKind::DirectUdp);
    let guesses: HashSet<u16> = lab.easy_sent.iter().map(|(_, p)| *p).filter(|p| *p != 40_000).collect();
    assert!(guesses.len() <= 16, "{} guesses", guesses.len());
    assert!(now <= 50, "direct after {now} ms");
    // The main socket's own mapping was hit first; the spares were hit in the
    // same burst, and stay open in case the easy side uses one of them.
    lab.hard.handle_timeout(now + 10);
    assert_eq!(lab.hard.kind(), PathKind::DirectUdp);
    assert_eq!(lab.hard_spare(), None);
    assert_eq!(lab.hard.take_spare_release(), Some(vec![0, 1, 2, 3]));
}

#[test]
fn unused_spares_close_after_the_window_and_stay_silent() {
    let mut lab = Lab::new(Alloc::Random(Box::new(StdRng::seed_from_u64(11))), [31_000, 47_000]);
    lab.hard.start_spares(8, sa(EASY_PUB), 0);
    lab.deliver(0);
    // No spray ever comes: the spares repeat their checks, then close.
    let mut now = 0;
    while now < PREDICTION_WINDOW_MS + 100 {
        now += 20;
        lab.hard.handle_timeout(now);
        lab.deliver(now);
        if now < PREDICTION_WINDOW_MS {
            assert_eq!(lab.hard.take_spare_release(), None, "{now} ms");
        }
    }
    let rounds = PREDICTION_WINDOW_MS / SPARE_RESEND_MS;
    let spare_sends = lab.hard_sent.iter().filter(|(_, v)| matches!(v, Via::Spare(_))).count() as u64;
    assert_eq!(spare_sends, 8 * rounds, "a round every {SPARE_RESEND_MS} ms");
    assert_eq!(lab.hard.take_spare_release(), Some(vec![]));
    // Closed: nothing more leaves them, and what arrives on them is not answered.
    lab.hard_sent.clear();
    lab.hard.handle_timeout(now + 2_000);
    lab.deliver(now + 2_000);
    assert!(lab.hard_sent.iter().all(|(_, v)| !matches!(v, Via::Spare(_))));
    let to = hard_at(lab.maps[&(Via::Spare(3), sa(EASY_PUB))]);
    lab.easy.send_probe(Via::Direct, to);
    let (_, _, check) = lab.easy.poll_transmit().unwrap();
    assert!(lab.hard.handle_datagram(Via::Spare(3), sa(EASY_PUB), &check, now + 2_001).is_none());
    assert!(lab.hard.poll_transmit().is_none(), "a closed spare answered");
}

#[test]
fn forced_relay_and_udp_less_paths_never_predict() {
    let (ka, _) = transport_pair();
    let bases = LocalBases { relay: Some(false), force_relay: true, no_udp: false, private: false };
    let mut p = MediaPath::new(&CallId([1; 16]), ka, &[], bases, 0);
    p.start_spares(4, sa(EASY_PUB), 0);
    p.start_spray(IpAddr::from(HARD_IP), vec![5_000, 5_001], 0);
    p.handle_timeout(100);
    assert!(p.poll_transmit().is_none());
    assert!(!p.is_spraying());
}

#[test]
fn two_spares_hit_in_one_burst_both_stay_open() {
    let mut lab = Lab::new(Alloc::Random(Box::new(StdRng::seed_from_u64(12))), [31_000, 47_000]);
    lab.hard.start_spares(16, sa(EASY_PUB), 0);
    lab.deliver(0);
    // The first two guesses land on spares 5 and 9: both answer before
    // either side has chosen, and the easy side may settle on either.
    let maps = lab.maps.clone();
    let port = |k| maps[&(Via::Spare(k), sa(EASY_PUB))];
    let plan = vec![port(5), port(9), 2_000, 2_001];
    lab.easy.start_spray(IpAddr::from(HARD_IP), plan, 10);
    let now = lab.run(10, 1_000);
    assert!(lab.easy.is_connected() && lab.hard.is_connected());
    lab.hard.handle_timeout(now + 10);
    assert_eq!(lab.hard.take_spare_release(), Some(vec![5, 9]));
    // The spare the hard side did not choose still answers the easy side.
    let other = if lab.hard_spare() == Some(5) { 9 } else { 5 };
    lab.easy.send_probe(Via::Direct, hard_at(port(other)));
    let (_, _, check) = lab.easy.poll_transmit().unwrap();
    while lab.hard.poll_transmit().is_some() {}
    lab.hard.handle_datagram(Via::Spare(other), sa(EASY_PUB), &check, now + 20);
    let answer = lab.hard.poll_transmit().expect("an ack");
    assert_eq!((answer.0, answer.1), (Via::Spare(other), sa(EASY_PUB)));
}
