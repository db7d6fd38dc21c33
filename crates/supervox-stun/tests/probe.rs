//! NatProbe against a scripted network: two supernodes running the real Binding server and
//! a NAT model with configurable mapping and filtering behaviour.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};

use supervox_stun::{BindingServer, NatBehaviour, NatProbe, ProbeConfig, Reachability, Reply};

fn a(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

const LOCAL: &str = "10.0.0.2:5000";
const SN1: &str = "198.51.100.1:3478";
const SN1_ALT: &str = "198.51.100.1:443";
const SN2: &str = "198.51.100.2:3478";

#[derive(Clone, Copy, PartialEq)]
enum Net {
    /// No NAT, no firewall.
    Public,
    /// A NAT with this mapping and filtering.
    Nat(NatBehaviour, NatBehaviour),
    /// All UDP dropped.
    Blocked,
}

struct Sim {
    net: Net,
    /// Mapping key -> external port.
    mappings: HashMap<(Option<IpAddr>, Option<u16>), u16>,
    /// Remote endpoints the client has sent to.
    contacted: HashSet<SocketAddr>,
    sn1: BindingServer,
    sn2: BindingServer,
    /// (time, destination) of every datagram the probe sent.
    sent: Vec<(u64, SocketAddr)>,
    /// Drop the first N datagrams addressed to SN1.
    drop_to_sn1: usize,
}

impl Sim {
    fn new(net: Net) -> Self {
        Sim {
            net,
            mappings: HashMap::new(),
            contacted: HashSet::new(),
            sn1: BindingServer { other: Some(a(SN2)), alternate: Some(a(SN1_ALT)), ..BindingServer::default() },
            sn2: BindingServer { other: Some(a(SN1)), ..BindingServer::default() },
            sent: Vec::new(),
            drop_to_sn1: 0,
        }
    }

    /// The client's public address when sending to `to`.
    fn map(&mut self, to: SocketAddr) -> SocketAddr {
        let Net::Nat(mapping, _) = self.net else { return a(LOCAL) };
        let key = match mapping {
            NatBehaviour::EndpointIndependent => (None, None),
            NatBehaviour::AddressDependent => (Some(to.ip()), None),
            _ => (Some(to.ip()), Some(to.port())),
        };
        let next = 40000 + self.mappings.len() as u16;
        let port = *self.mappings.entry(key).or_insert(next);
        SocketAddr::new(a("203.0.113.9:0").ip(), port)
    }

    /// Whether the NAT lets a datagram from `from` in.
    fn admits(&self, from: SocketAddr) -> bool {
        match self.net {
            Net::Public => true,
            Net::Blocked => false,
            Net::Nat(_, filtering) => match filtering {
                NatBehaviour::EndpointIndependent => true,
                NatBehaviour::AddressDependent => self.contacted.iter().any(|c| c.ip() == from.ip()),
                _ => self.contacted.contains(&from),
            },
        }
    }

    /// Runs the probe to its conclusion; returns it and the finish time.
    fn run(&mut self, cfg: ProbeConfig) -> (Reachability, u64) {
        let mut now = 1_000;
        let mut probe = NatProbe::new(cfg, now);
        for _ in 0..10_000 {
            while let Some((to, bytes)) = probe.poll_transmit() {
                self.sent.push((now, to));
                if self.net == Net::Blocked {
                    continue;
                }
                if to == a(SN1) && self.drop_to_sn1 > 0 {
                    self.drop_to_sn1 -= 1;
                    continue;
                }
                let src = self.map(to);
                self.contacted.insert(to);
                let server = if to == a(SN2) { &self.sn2 } else { &self.sn1 };
                let (from, bytes) = match server.handle(&bytes, src, to) {
                    Ok(Some(Reply::Direct { to: dst, response })) => {
                        assert_eq!(dst, src);
                        (to, response)
                    }
                    Ok(Some(Reply::FromAlternate { from, to: dst, response })) => {
                        assert_eq!(dst, src);
                        (from, response)
                    }
                    Ok(Some(Reply::ViaPeer { peer, dial_back })) => {
                        assert_eq!(dial_back.to, src);
                        (peer, dial_back.response(peer).unwrap())
                    }
                    other => panic!("server said {other:?}"),
                };
                if self.admits(from) {
                    assert!(probe.handle_response(from, &bytes, now));
                }
            }
            if let Some(r) = probe.result() {
                return (r.clone(), now);
            }
            now = probe.poll_timeout().expect("a running probe has a timer");
            probe.handle_timeout(now);
        }
        panic!("probe did not finish");
    }
}

fn cfg(alt: bool) -> ProbeConfig {
    let mut c = ProbeConfig::new(a(LOCAL), a(SN1), a(SN2));
    if alt {
        c.sn1_alt = Some(a(SN1_ALT));
    }
    c
}

use NatBehaviour::*;

fn check(net: Net, alt: bool, mapping: NatBehaviour, filtering: NatBehaviour) -> Sim {
    let mut sim = Sim::new(net);
    let (r, _) = sim.run(cfg(alt));
    assert!(r.udp);
    assert_eq!((r.mapping, r.filtering), (mapping, filtering), "alt port: {alt}");
    assert_eq!(r.public, net == Net::Public);
    assert_eq!(r.mapped, Some(if net == Net::Public { a(LOCAL) } else { a("203.0.113.9:40000") }));
    sim
}

#[test]
fn public_host() {
    check(Net::Public, true, EndpointIndependent, EndpointIndependent);
    check(Net::Public, false, EndpointIndependent, EndpointIndependent);
}

#[test]
fn full_cone() {
    let sim = check(Net::Nat(EndpointIndependent, EndpointIndependent), true, EndpointIndependent, EndpointIndependent);
    // EIF is decided by SN2's dial-back alone: basic, filter(IP), filter(port), map SN2, map alt.
    assert_eq!(sim.sent.len(), 5);
    check(Net::Nat(EndpointIndependent, EndpointIndependent), false, EndpointIndependent, EndpointIndependent);
}

#[test]
fn home_router_eim_apdf() {
    let net = Net::Nat(EndpointIndependent, AddressAndPortDependent);
    let sim = check(net, true, EndpointIndependent, AddressAndPortDependent);
    // Both filtering transactions had to time out: 4 sends each at 0, 100, 300, 700 ms.
    let filter_sends: Vec<u64> = sim.sent.iter().filter(|(_, to)| *to == a(SN1)).map(|(t, _)| *t).collect();
    assert_eq!(filter_sends, [1000, 1000, 1000, 1100, 1100, 1300, 1300, 1700, 1700]);
    // The mapping phase starts when they fail, Rm * RTO = 800 ms after the last send.
    let to_sn2: Vec<u64> = sim.sent.iter().filter(|(_, to)| *to == a(SN2)).map(|(t, _)| *t).collect();
    assert_eq!(to_sn2, [2500]);
    check(net, false, EndpointIndependent, AddressAndPortDependent);
}

#[test]
fn restricted_cone_eim_adf() {
    let net = Net::Nat(EndpointIndependent, AddressDependent);
    check(net, true, EndpointIndependent, AddressDependent);
    // Without SN1's alternate port, address-dependent filtering cannot be seen: stricter answer.
    check(net, false, EndpointIndependent, AddressAndPortDependent);
}

#[test]
fn symmetric_edm() {
    let net = Net::Nat(AddressAndPortDependent, AddressAndPortDependent);
    check(net, true, AddressAndPortDependent, AddressAndPortDependent);
    check(net, false, AddressAndPortDependent, AddressAndPortDependent);
    let net = Net::Nat(AddressDependent, AddressDependent);
    check(net, true, AddressDependent, AddressDependent);
    check(net, false, AddressAndPortDependent, AddressAndPortDependent);
}

#[test]
fn second_supernode_view_is_kept_for_port_prediction() {
    // The model NAT allocates ports sequentially (40000, 40001, ...): SN2 sees the next one.
    let (r, _) = Sim::new(Net::Nat(AddressAndPortDependent, AddressAndPortDependent)).run(cfg(false));
    assert_eq!(r.mapped_sn2, Some(a("203.0.113.9:40001")));
    let (r, _) = Sim::new(Net::Nat(EndpointIndependent, AddressAndPortDependent)).run(cfg(true));
    assert_eq!(r.mapped_sn2, r.mapped, "one mapping for every destination");
}

#[test]
fn udp_blocked() {
    let mut sim = Sim::new(Net::Blocked);
    let (r, done) = sim.run(cfg(true));
    assert_eq!(
        r,
        Reachability {
            udp: false,
            mapped: None,
            public: false,
            mapping: Unknown,
            filtering: Unknown,
            mapped_sn2: None
        }
    );
    // RFC 8489 retransmission: SN1 at 0, 100, 300, 700 ms; after Rm*RTO = 800 ms, SN2 likewise.
    let want: Vec<(u64, SocketAddr)> = [0, 100, 300, 700]
        .iter()
        .map(|t| (1000 + t, a(SN1)))
        .chain([0, 100, 300, 700].iter().map(|t| (2500 + t, a(SN2))))
        .collect();
    assert_eq!(sim.sent, want);
    assert_eq!(done, 4000);
    assert_eq!(
        serde_json_value(&r),
        r#"{"udp":false,"mapped":null,"public":false,"mapping":"unknown","filtering":"unknown","mapped_sn2":null}"#
    );
}

fn serde_json_value(r: &Reachability) -> String {
    serde_json::to_string(r).unwrap()
}

#[test]
fn lost_requests_are_retransmitted() {
    let mut sim = Sim::new(Net::Nat(EndpointIndependent, EndpointIndependent));
    sim.drop_to_sn1 = 2;
    let (r, _) = sim.run(cfg(false));
    assert_eq!((r.mapping, r.filtering), (EndpointIndependent, EndpointIndependent));
    let first: Vec<u64> = sim.sent.iter().take(3).map(|(t, _)| *t).collect();
    assert_eq!(first, [1000, 1100, 1300]);
}

#[test]
fn custom_timers() {
    let mut c = cfg(false);
    (c.rto_ms, c.max_transmits, c.final_wait_rtos) = (50, 2, 4);
    let mut sim = Sim::new(Net::Blocked);
    let (_, done) = sim.run(c);
    let times: Vec<u64> = sim.sent.iter().map(|(t, _)| *t).collect();
    assert_eq!(times, [1000, 1050, 1250, 1300]);
    assert_eq!(done, 1500);
}

#[test]
fn sn1_down_falls_back_to_sn2() {
    let mut sim = Sim::new(Net::Nat(EndpointIndependent, EndpointIndependent));
    sim.drop_to_sn1 = usize::MAX;
    let (r, _) = sim.run(cfg(false));
    assert!(r.udp);
    assert_eq!(r.mapped, Some(a("203.0.113.9:40000")));
    assert_eq!((r.mapping, r.filtering), (Unknown, Unknown));
}

#[test]
fn behaviour_names() {
    for (b, s) in [
        (EndpointIndependent, "endpoint-independent"),
        (AddressDependent, "address-dependent"),
        (AddressAndPortDependent, "address-and-port-dependent"),
        (Unknown, "unknown"),
    ] {
        assert_eq!(b.as_str(), s);
        assert_eq!(serde_json::to_string(&b).unwrap(), format!("\"{s}\""));
    }
}

#[test]
fn foreign_and_forged_datagrams_are_ignored() {
    let mut probe = NatProbe::new(cfg(false), 0);
    let (to, req) = probe.poll_transmit().unwrap();
    assert!(!probe.handle_response(to, b"not stun at all, no sir", 1));
    // Our own request echoed back is not a response.
    assert!(!probe.handle_response(to, &req, 1));
    // A response with another transaction ID.
    let other = supervox_stun::build_binding_success([9; 12], a("1.1.1.1:1"), to, None, None);
    assert!(!probe.handle_response(to, &other, 1));
    assert!(!probe.is_done());
}
