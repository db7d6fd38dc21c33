//! The NAT lab (issue 3): real `supervox` processes in network namespaces
//! behind routers with NAT and firewall presets (crate `supervox-natlab`, on
//! patchbay). Each test builds its own lab: an internet router with two linked
//! supernodes, and the sites it needs.
//!
//! Needs `nft`, `ip` and root or an unprivileged user namespace; when they are
//! missing the tests fail with the reason, they never skip.

use std::time::Duration;
use supervox_natlab::{event, LabNode, NatLab, Site};

/// Enter a user namespace before the test harness starts its threads (an
/// unshare of the user namespace is refused to a multi-threaded process).
#[ctor::ctor(unsafe)]
fn enter_userns() {
    supervox_natlab::enter_user_namespace();
}

const BIN: &str = env!("CARGO_BIN_EXE_supervox");
const EIM: &str = "endpoint-independent";
const APD: &str = "address-and-port-dependent";
const UNKNOWN: &str = "unknown";

/// What `ctl status --json` must say under `reachability` at each site:
/// (site, udp, public, mapping, filtering).
///
/// The probe has no alternate port on the supernode, so it cannot tell
/// address-dependent from address-and-port-dependent behaviour and reports the
/// stricter one, which is what patchbay's presets do: `Nat::Moderate` filters
/// by address and port, `Nat::Strict` maps per destination with a random port.
const REACHABILITY: [(Site, bool, bool, &str, &str); 8] = [
    (Site::Public, true, true, EIM, EIM),
    (Site::FullCone, true, false, EIM, EIM),
    (Site::Home, true, false, EIM, APD),
    (Site::Strict, true, false, APD, APD),
    (Site::HomeBehindCgnat, true, false, EIM, APD),
    (Site::CaptivePortal, false, false, UNKNOWN, UNKNOWN),
    (Site::HomeUdpBlocked, false, false, UNKNOWN, UNKNOWN),
    (Site::Corporate, false, false, UNKNOWN, UNKNOWN),
];

#[test]
fn reachability_is_right_behind_every_router_preset() {
    let lab = NatLab::start(BIN.as_ref()).expect("NAT lab");
    let mut nodes = Vec::new();
    for (site, ..) in REACHABILITY {
        let router = lab.site(site.label(), site).expect("site");
        let node = lab.node(&format!("n-{}", site.label()), &router, &[]).expect("node");
        nodes.push((router, node));
    }
    let mut wrong = Vec::new();
    for ((site, udp, public, mapping, filtering), (router, node)) in REACHABILITY.iter().zip(&mut nodes) {
        // A UDP-blocked client signs in over TCP (443 from behind the corporate firewall).
        node.wait_signed_in(Duration::from_secs(15)).unwrap();
        let r = node.wait_reachability(Duration::from_secs(15)).unwrap();
        let want = serde_json::json!({"udp": udp, "public": public, "mapping": mapping, "filtering": filtering});
        let got = serde_json::json!({"udp": r["udp"], "public": r["public"], "mapping": r["mapping"], "filtering": r["filtering"]});
        if got != want {
            wrong.push(format!("{site:?}: got {got}, want {want}\n{}", node.log_tail()));
        }
        // The mapped address is the outermost router's public address (the
        // node's own address when it has no NAT).
        let outer = router.upstream.as_ref().unwrap_or(&router.router);
        let want_ip = match site {
            Site::Public => node.device.ip(),
            _ if *udp => outer.uplink_ip(),
            _ => None,
        };
        let got_ip = r["mapped"].as_str().map(|m| m.parse::<std::net::SocketAddr>().unwrap().ip());
        if got_ip != want_ip.map(Into::into) {
            wrong.push(format!("{site:?}: mapped {:?}, want IP {want_ip:?}", r["mapped"]));
        }
    }
    assert!(wrong.is_empty(), "wrong reachability:\n{}", wrong.join("\n"));
}

/// A cell of the call matrix: caller site × callee site, and the path the call must take.
struct Cell {
    caller: Site,
    callee: Site,
    /// Both clients behind the one router (else each has its own router of its site).
    same_router: bool,
    path: &'static str,
    /// Call the moment both are signed in, without waiting for their NAT probes (also
    /// for every cell with `SUPERVOX_NATLAB_CALL_AT_SIGN_IN` set, as `bench/natlab-repeat`
    /// can): a UDP-blocked side's relay must come from the race of PROTOCOL.md §5.6.
    at_sign_in: bool,
}

// Public × CaptivePortal (either way) gets `direct-tcp`: the UDP-blocked side
// connects to the public side's passive TCP candidate (RFC 6544). Home ×
// HomeUdpBlocked (a home NAT that blocks UDP), either way, gets `direct-tcp` by
// simultaneous open: both dial each other's server-reflexive S-O candidate from
// their listener's port and the SYNs cross. FullCone/Home/Strict × CaptivePortal
// stay relayed: the captive portal is a hotel router, `Nat::Strict`, whose random
// TCP ports no simultaneous open can aim at. The lab's NAT routers drop SYNs to
// their own address silently (`stealth` in supervox-natlab), as home routers
// commonly do; patchbay's would answer with a reset and spoil the simultaneous
// open for 10 s (PROTOCOL.md §4.7).
//
// Home (or home behind a CGNAT) × Strict gets `direct-udp` through port
// prediction (docs/PROTOCOL.md §4.6): the Strict side checks from 256 spare
// sockets, the home side sprays guesses at the Strict router's public IP.
// Strict × Strict stays relayed (both sides' ports are random).
//
// A cell's `path` lists the paths it accepts, `|`-separated: the issue's "X or
// better" (relay-udp is better than relay-tcp). The caller's view is checked:
// a caller with UDP that reaches a callee's relay sees `relay-udp` while the
// callee, reaching its relay over TCP, is on `relay-tcp`.
macro_rules! cells {
    ($($name:ident: $caller:ident x $callee:ident, same_router: $same:expr => $path:literal;)*) => {$(
        #[test]
        fn $name() {
            run_cell(Cell { caller: Site::$caller, callee: Site::$callee, same_router: $same, path: $path, at_sign_in: false });
        }
    )*};
}

cells! {
    call_public_x_public: Public x Public, same_router: false => "direct-udp";
    call_public_x_fullcone: Public x FullCone, same_router: false => "direct-udp";
    call_public_x_home: Public x Home, same_router: false => "direct-udp";
    call_fullcone_x_home: FullCone x Home, same_router: false => "direct-udp";
    call_home_x_home: Home x Home, same_router: false => "direct-udp";
    call_home_x_home_behind_the_same_router: Home x Home, same_router: true => "direct-udp";
    call_public_x_strict: Public x Strict, same_router: false => "direct-udp";
    call_fullcone_x_fullcone: FullCone x FullCone, same_router: false => "direct-udp";
    call_fullcone_x_strict: FullCone x Strict, same_router: false => "direct-udp";
    call_home_behind_cgnat_x_home: HomeBehindCgnat x Home, same_router: false => "direct-udp";
    call_home_behind_cgnat_x_strict: HomeBehindCgnat x Strict, same_router: false => "direct-udp";
    call_home_x_strict: Home x Strict, same_router: false => "direct-udp";
    call_strict_x_home: Strict x Home, same_router: false => "direct-udp";
    call_strict_x_strict: Strict x Strict, same_router: false => "relay-udp";
    call_public_x_captive_portal: Public x CaptivePortal, same_router: false => "direct-tcp";
    call_captive_portal_x_public: CaptivePortal x Public, same_router: false => "direct-tcp";
    call_fullcone_x_captive_portal: FullCone x CaptivePortal, same_router: false => "relay-udp|relay-tcp";
    call_home_x_captive_portal: Home x CaptivePortal, same_router: false => "relay-udp|relay-tcp";
    call_home_x_home_udp_blocked: Home x HomeUdpBlocked, same_router: false => "direct-tcp";
    call_home_udp_blocked_x_home: HomeUdpBlocked x Home, same_router: false => "direct-tcp";
    call_public_x_home_udp_blocked: Public x HomeUdpBlocked, same_router: false => "direct-tcp";
    call_strict_x_captive_portal: Strict x CaptivePortal, same_router: false => "relay-udp|relay-tcp";
    call_captive_portal_x_captive_portal: CaptivePortal x CaptivePortal, same_router: false => "relay-tcp";
    call_public_x_corporate: Public x Corporate, same_router: false => "relay-udp|relay-tcp";
    call_fullcone_x_corporate: FullCone x Corporate, same_router: false => "relay-udp|relay-tcp";
    call_home_x_corporate: Home x Corporate, same_router: false => "relay-udp|relay-tcp";
    call_strict_x_corporate: Strict x Corporate, same_router: false => "relay-udp|relay-tcp";
    call_captive_portal_x_corporate: CaptivePortal x Corporate, same_router: false => "relay-tcp";
    call_corporate_x_corporate: Corporate x Corporate, same_router: false => "relay-tcp";
}

// The relay-tcp cells again, called the moment both sides are signed in (issue 16): the
// relay over TCP comes from the race at sign-in, not from the NAT probe's verdict.
#[test]
fn call_corporate_x_corporate_at_sign_in() {
    let cell = Cell {
        caller: Site::Corporate,
        callee: Site::Corporate,
        same_router: false,
        path: "relay-tcp",
        at_sign_in: true,
    };
    run_cell(cell);
}

#[test]
fn call_captive_portal_x_captive_portal_at_sign_in() {
    let (caller, callee) = (Site::CaptivePortal, Site::CaptivePortal);
    run_cell(Cell { caller, callee, same_router: false, path: "relay-tcp", at_sign_in: true });
}

/// Places a 2 s call from a client at `cell.caller` to one at `cell.callee` and
/// checks the path and that audio went both ways.
fn run_cell(cell: Cell) {
    let lab = NatLab::start(BIN.as_ref()).expect("NAT lab");
    let a = lab.site("site-a", cell.caller).expect("caller's site");
    let b = if cell.same_router { a.clone() } else { lab.site("site-b", cell.callee).expect("callee's site") };
    let wav = lab.dir().join("bob.wav");
    let mut alice = lab.node("alice", &a, &[]).expect("alice");
    let mut bob = lab
        .node("bob", &b, &["--auto-answer", "--input", "tone:1000", "--output", &format!("wav:{}", wav.display())])
        .expect("bob");
    let at_sign_in = cell.at_sign_in || std::env::var_os("SUPERVOX_NATLAB_CALL_AT_SIGN_IN").is_some();
    for n in [&mut alice, &mut bob] {
        n.wait_signed_in(Duration::from_secs(10)).unwrap();
        // Candidates include the server-reflexive address once the probe is done.
        if !at_sign_in {
            n.wait_reachability(Duration::from_secs(10)).unwrap();
        }
    }
    let (ok, events) = alice.call("bob", &["--duration", "2", "--input", "tone:440", "--output", "null"]).unwrap();
    let logs = || format!("{}\n{}", alice.log_tail(), bob.log_tail());
    assert!(ok, "{:?} calling {:?}: call failed: {events:?}\n{}", cell.caller, cell.callee, logs());
    let connected = event(&events, "call_connected").expect("call_connected");
    // A call may connect on the first pair that answers (a relay) and move to a
    // better one as its checks succeed: the path it settles on is the last
    // `path_changed`, else the one it connected on.
    let settled = events.iter().rev().find(|e| e["event"] == "path_changed").unwrap_or(connected);
    let path = settled["path"].as_str().unwrap_or_default();
    assert!(
        cell.path.split('|').any(|p| p == path),
        "{:?} calling {:?}: path {path}, want {}: {events:?}\n{}",
        cell.caller,
        cell.callee,
        cell.path,
        logs()
    );
    let ended = event(&events, "call_ended").expect("call_ended");
    let frames = |k: &str| ended[k].as_u64().unwrap_or_else(|| panic!("no {k} in {ended}"));
    let (sent, received) = (frames("frames_sent"), frames("frames_received"));
    assert!(sent >= 90, "2 s of 20 ms frames, sent {sent}: {ended}");
    assert!(received as f64 >= 0.9 * sent as f64, "alice got {received} of {sent} frames from bob: {ended}");
    // Bob's recording holds alice's 440 Hz tone: audio went the other way too.
    wait_call_over(&bob);
    let pcm = read_wav(&wav);
    assert!(pcm.len() >= 48_000 * 3 / 2, "bob recorded only {} samples", pcm.len());
    let hz = supervox_media::analysis::dominant_frequency(&pcm, 48_000).expect("bob's recording is silent");
    assert!((hz - 440.0).abs() < 5.0, "bob heard {hz} Hz");
}

/// Waits until the node's status shows no call (its recording is then closed).
fn wait_call_over(node: &LabNode) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while node.status().is_some_and(|s| !s["call"].is_null()) {
        assert!(std::time::Instant::now() < deadline, "{} still in the call 5 s after hangup", node.name);
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn read_wav(path: &std::path::Path) -> Vec<i16> {
    let mut r = hound::WavReader::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(r.spec().sample_rate, 48_000);
    r.samples::<i16>().map(|s| s.unwrap()).collect()
}
