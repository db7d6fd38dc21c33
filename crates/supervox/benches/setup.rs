//! Call-setup bench (issue 3): real `supervox` processes in two network
//! namespaces joined by the user-space impaired link with 50 ms RTT (this
//! kernel has no netem). A supernode and alice sit in namespace `a`, bob in
//! `b`; alice calls bob N times per path and we report the setup time
//! distribution for each path:
//!
//! * `direct-udp, contact`: both nodes with `--privacy relaxed`, which offers
//!   every candidate at once as a node does to a contact;
//! * `stranger`: both nodes as they come (default privacy, PROTOCOL.md §3.6):
//!   the call connects over the relays, then each side offers its own
//!   addresses and the call upgrades; the row also gives "direct after", the
//!   time from invite to the `path_changed` to `direct-udp`;
//! * `relay-tcp`: alice reaches her relay over TCP only and uses relays only
//!   (`--force-relay --relay-transport tcp`), as a client behind a firewall
//!   that passes only TCP would.
//! * `relay-tcp, auto`: alice behind a firewall that drops all UDP (nftables
//!   in her namespace), on the far side of the link from the supernode, with
//!   `--force-relay` and the relay transport left to auto; she is started
//!   afresh for every call and calls the moment `ctl status` shows her
//!   signed in, so the call cannot wait for her NAT probe (~3 s to conclude
//!   "UDP blocked") nor for a relay made earlier. Bob sits with the
//!   supernode. This is the NAT lab's relay-tcp cells' case (issue 16).
//!
//! Setup is measured two ways: `setup_ms` of `call_connected` (invite sent →
//! media path confirmed at the caller), and "callee hears" = that plus the
//! callee's first playout (one-way delay + its jitter buffer's start-up delay,
//! taken from the callee's live status: `playout_delay_ms`).
//!
//! A second table measures what the trust checks cost (PROTOCOL.md §3.5,
//! §3.6), direct-udp only, "dial" = `ctl call` started → `call_connected`
//! printed (so the caller's lookup and its cross-check count too), for:
//! strangers on a one-supernode network (one opinion: the anchor), strangers
//! with a second supernode (both lookups cross-checked), and contacts (pinned:
//! no second opinion). Strangers are fresh nodes per call (new keys, new
//! names), since a connected call pins them. All with `--privacy relaxed`,
//! so the rows differ in their lookups only. Needs root and `ip`.
//! Run: `cargo bench -p supervox --bench setup [-- CALLS] [trust | relay-auto]`
//! (`relay-auto`: the `relay-tcp, auto` row alone).

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};
use supervox_netlab::{Impairment, Lab, LinkConfig, Namespace, NsProcess};

const BIN: &str = env!("CARGO_BIN_EXE_supervox");
/// 25 ms each way: 50 ms RTT.
const LINK: &str = "delay=25ms";
/// One-way delay of the link, added to the caller's setup for "callee hears".
const ONE_WAY_MS: f64 = 25.0;

/// One row: what to run and what to expect.
struct Row {
    label: &'static str,
    /// The path `call_connected` must report.
    connects: &'static str,
    /// The path a `path_changed` must then move to, if any.
    upgrades: Option<&'static str>,
    alice: &'static [&'static str],
    bob: &'static [&'static str],
    /// Alice behind a UDP-dropping firewall across the link, restarted for every
    /// call and calling right after sign-in (see the module docs).
    fresh_udp_blocked: bool,
}

const ROWS: &[Row] = &[
    Row {
        label: "direct-udp, contact (--privacy relaxed)",
        connects: "direct-udp",
        upgrades: None,
        alice: &["--privacy", "relaxed"],
        bob: &["--privacy", "relaxed"],
        fresh_udp_blocked: false,
    },
    Row {
        label: "stranger: relay-udp, then direct-udp",
        connects: "relay-udp",
        upgrades: Some("direct-udp"),
        alice: &[],
        bob: &[],
        fresh_udp_blocked: false,
    },
    Row {
        label: "relay-tcp (--force-relay --relay-transport tcp)",
        connects: "relay-tcp",
        upgrades: None,
        alice: &["--force-relay", "--relay-transport", "tcp"],
        bob: &[],
        fresh_udp_blocked: false,
    },
    Row {
        label: "relay-tcp, auto (UDP blocked, --force-relay, called right after sign-in)",
        connects: "relay-tcp",
        upgrades: None,
        alice: &["--force-relay"],
        bob: &[],
        fresh_udp_blocked: true,
    },
];

/// Setup figures of one row.
#[derive(Default)]
struct Figures {
    ok: usize,
    setup: Vec<f64>,
    hears: Vec<f64>,
    /// Invite → `path_changed` to the upgrade path.
    upgraded: Vec<f64>,
}

fn main() {
    let calls: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(20);
    let tmp = tempfile::tempdir().expect("tempdir");
    if std::env::args().any(|a| a == "trust") {
        return trust_table(tmp.path(), calls);
    }
    let only_auto = std::env::args().any(|a| a == "relay-auto");
    println!("Call setup over a 50 ms RTT link, {calls} calls per path (median / p90 / max, ms)\n");
    println!(
        "| path | calls connected | setup median | setup p90 | setup max | callee hears median | callee hears p90 | direct after median | direct after p90 |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (i, row) in ROWS.iter().enumerate().filter(|(_, r)| !only_auto || r.fresh_udp_blocked) {
        let dir = tmp.path().join(i.to_string());
        let figures =
            if row.fresh_udp_blocked { run_fresh_blocked(&dir, row, calls) } else { run_path(&dir, row, calls) };
        match figures {
            Ok(f) => {
                let up =
                    |p: f64| if row.upgrades.is_some() { format!("{:.0}", pct(&f.upgraded, p)) } else { "—".into() };
                println!(
                    "| {} | {}/{calls} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {} |",
                    row.label,
                    f.ok,
                    pct(&f.setup, 50.0),
                    pct(&f.setup, 90.0),
                    pct(&f.setup, 100.0),
                    pct(&f.hears, 50.0),
                    pct(&f.hears, 90.0),
                    up(50.0),
                    up(90.0),
                )
            }
            Err(e) => println!("| {} | failed: {e} | | | | | | | |", row.label),
        }
    }
    if !only_auto {
        println!();
        trust_table(tmp.path(), calls);
    }
}

/// The trust checks' cost (module docs).
fn trust_table(root: &Path, calls: usize) {
    println!("Trust checks over the 50 ms RTT link, direct-udp, {calls} calls per row (ms)\n");
    match run_trust(root, calls) {
        Ok(rows) => {
            println!("| case | verified | calls connected | setup min | setup median | setup p90 | dial min | dial median | dial p90 | dial median / anchor |");
            println!("|---|---|---|---|---|---|---|---|---|---|");
            let anchor = rows.first().map(|r| pct(&r.dial, 50.0)).unwrap_or(f64::NAN);
            for r in &rows {
                println!(
                    "| {} | {} | {}/{calls} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2} |",
                    r.case,
                    r.verified,
                    r.setup.len(),
                    pct(&r.setup, 0.0),
                    pct(&r.setup, 50.0),
                    pct(&r.setup, 90.0),
                    pct(&r.dial, 0.0),
                    pct(&r.dial, 50.0),
                    pct(&r.dial, 90.0),
                    pct(&r.dial, 50.0) / anchor
                );
            }
        }
        Err(e) => println!("trust rows failed: {e}"),
    }
}

struct TrustRow {
    case: &'static str,
    verified: String,
    setup: Vec<f64>,
    dial: Vec<f64>,
}

/// A node in namespace `ns` named `name`, seeded with `sn`; returns its control socket.
fn trust_node(
    ns: &Namespace,
    dir: &Path,
    name: &str,
    sn: &str,
    media_ip: &str,
    extra: &[&str],
) -> (NsProcess, std::path::PathBuf) {
    let control = dir.join(format!("{name}.sock"));
    let (data, ctl_s) = (dir.join(name).to_string_lossy().to_string(), control.to_string_lossy().to_string());
    let media = format!("{media_ip}:0");
    // Privacy relaxed: this table isolates the lookups' cost; the first table
    // measures what relay-first costs a stranger.
    let mut args = vec![
        "node",
        "--name",
        name,
        "--seed",
        sn,
        "--media",
        &media,
        "--data-dir",
        &data,
        "--control",
        &ctl_s,
        "--privacy",
        "relaxed",
    ];
    args.extend_from_slice(extra);
    (spawn(ns, &args, &dir.join(format!("{name}.log"))), control)
}

/// One call from `ca` to `callee`: (setup_ms, dial ms, verified) when it connected on direct-udp.
fn timed_call(ca: &Path, callee: &str) -> Option<(f64, f64, String)> {
    use std::io::BufRead;
    let t = Instant::now();
    let mut child = Command::new(BIN)
        .arg("ctl")
        .arg("--control")
        .arg(ca)
        .args(["call", callee, "--duration", "0.3", "--output", "null", "--json"])
        .stdout(Stdio::piped())
        .spawn()
        .ok()?;
    let out = child.stdout.take()?;
    let mut found = None;
    // `ctl` prints each event as it happens: time the call_connected line.
    for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
        let Ok(v) = serde_json::from_str::<Value>(&line) else { continue };
        if v["event"] == "call_connected" && found.is_none() {
            found = Some((v, t.elapsed().as_secs_f64() * 1000.0));
        }
    }
    let _ = child.wait();
    let (c, dial) = found?;
    (c["path"] == "direct-udp")
        .then(|| (c["setup_ms"].as_f64().unwrap_or(f64::NAN), dial, c["verified"].as_str().unwrap_or("?").to_string()))
}

fn run_trust(root: &Path, calls: usize) -> Result<Vec<TrustRow>, String> {
    let dir = root.join("trust");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let lab = Lab::new().map_err(|e| e.to_string())?;
    let (a, b) = (lab.namespace("a").map_err(|e| e.to_string())?, lab.namespace("b").map_err(|e| e.to_string())?);
    let imp = Impairment::from_str(LINK).map_err(|e| e.to_string())?;
    let link = lab.link(&a, &b, LinkConfig::symmetric(imp).with_seed(7)).map_err(|e| e.to_string())?;
    let (ip_a, ip_b) = (link.addr_a().to_string(), link.addr_b().to_string());
    let sn1 = format!("{ip_a}:7000");
    let sn2 = format!("{ip_a}:7001");
    let d1 = dir.join("sn1").to_string_lossy().to_string();
    let _sn1 =
        spawn(&a, &["supernode", "--relay-allow-private", "--listen", &sn1, "--data-dir", &d1], &dir.join("sn1.log"));
    std::thread::sleep(Duration::from_millis(300));
    let mut rows = Vec::new();
    // Strangers: a fresh pair per call, so nothing is pinned yet. `known` supernodes each must list.
    let strangers = |tag: &str, known: u64| -> Result<TrustRow, String> {
        let mut row = TrustRow { case: "", verified: String::new(), setup: vec![], dial: vec![] };
        for i in 0..calls {
            let (an, bn) = (format!("a{tag}{i}"), format!("b{tag}{i}"));
            let (pa, ca) = trust_node(&a, &dir, &an, &sn1, &ip_a, &[]);
            let (pb, cb) = trust_node(&b, &dir, &bn, &sn1, &ip_b, &["--auto-answer"]);
            for c in [&ca, &cb] {
                wait_status(c, "signed in", |s| s["supernode"].is_string())?;
                wait_status(c, "knew the supernodes", |s| s["host_cache"].as_u64().is_some_and(|n| n >= known))?;
            }
            if let Some((setup, dial, v)) = timed_call(&ca, &bn) {
                row.setup.push(setup);
                row.dial.push(dial);
                row.verified = v;
            }
            wait_status(&cb, "left the call", |s| s["call"].is_null())?;
            // Dropping a handle does not stop its process: end this pair now.
            let _ = (pa.kill(), pb.kill());
        }
        Ok(row)
    };
    let mut anchor = strangers("x", 1)?;
    anchor.case = "strangers, 1 supernode (one opinion: anchor)";
    rows.push(anchor);
    let d2 = dir.join("sn2").to_string_lossy().to_string();
    let sn2_proc = spawn(
        &a,
        &["supernode", "--relay-allow-private", "--listen", &sn2, "--data-dir", &d2, "--seed", &sn1],
        &dir.join("sn2.log"),
    );
    // sn1 lists sn2 in its Welcome once the membership has it.
    std::thread::sleep(Duration::from_secs(3));
    let mut checked = strangers("y", 2)?;
    checked.case = "strangers, 2nd supernode on the caller's side (callee's check crosses the link)";
    rows.push(checked);
    // Contacts: one pair, pinned by a first call, then called again and again.
    let (_pa, ca) = trust_node(&a, &dir, "alice", &sn1, &ip_a, &[]);
    let (_pb, cb) = trust_node(&b, &dir, "bob", &sn1, &ip_b, &["--auto-answer"]);
    for c in [&ca, &cb] {
        wait_status(c, "signed in", |s| s["supernode"].is_string())?;
        wait_status(c, "knew the supernodes", |s| s["host_cache"].as_u64().is_some_and(|n| n >= 2))?;
    }
    timed_call(&ca, "bob").ok_or("the first call between alice and bob failed")?;
    wait_status(&cb, "left the call", |s| s["call"].is_null())?;
    let mut row = TrustRow {
        case: "contacts, 2 supernodes (pinned: no second opinion)",
        verified: String::new(),
        setup: vec![],
        dial: vec![],
    };
    for _ in 0..calls {
        if let Some((setup, dial, v)) = timed_call(&ca, "bob") {
            row.setup.push(setup);
            row.dial.push(dial);
            row.verified = v;
        }
        wait_status(&cb, "left the call", |s| s["call"].is_null())?;
    }
    rows.push(row);
    // The second supernode moves to the callee's side: now the caller's check crosses the link.
    let _ = sn2_proc.kill();
    let sn3 = format!("{ip_b}:7001");
    let d3 = dir.join("sn3").to_string_lossy().to_string();
    let _sn3 = spawn(
        &b,
        &["supernode", "--relay-allow-private", "--listen", &sn3, "--data-dir", &d3, "--seed", &sn1],
        &dir.join("sn3.log"),
    );
    // Long enough for the membership to declare sn2 gone and list sn3.
    std::thread::sleep(Duration::from_secs(8));
    let mut far = strangers("z", 2)?;
    far.case = "strangers, 2nd supernode on the callee's side (caller's check crosses the link)";
    rows.push(far);
    Ok(rows)
}

fn pct(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let i = ((p / 100.0) * (s.len() - 1) as f64).round() as usize;
    s[i.min(s.len() - 1)]
}

fn spawn(ns: &Namespace, args: &[&str], log: &Path) -> NsProcess {
    let mut cmd = ns.command(BIN);
    cmd.args(args).stdout(Stdio::null()).stderr(std::fs::File::create(log).expect("log"));
    ns.spawn(cmd).expect("spawn in namespace")
}

fn ctl(control: &Path, args: &[&str]) -> Vec<Value> {
    let out = Command::new(BIN).arg("ctl").arg("--control").arg(control).args(args).output().expect("ctl");
    String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// Run `ctl` and time each JSON line it prints (from the start).
fn ctl_timed(control: &Path, args: &[&str]) -> Vec<(f64, Value)> {
    use std::io::BufRead;
    let start = Instant::now();
    let mut child = Command::new(BIN)
        .arg("ctl")
        .arg("--control")
        .arg(control)
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("ctl");
    let out = child.stdout.take().expect("stdout");
    let lines: Vec<(f64, Value)> = std::io::BufReader::new(out)
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str(&l).ok().map(|v| (start.elapsed().as_secs_f64() * 1000.0, v)))
        .collect();
    let _ = child.wait();
    lines
}

/// Wait until `check` holds for the node's status.
fn wait_status(control: &Path, what: &str, check: impl Fn(&Value) -> bool) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if ctl(control, &["status", "--json"]).first().is_some_and(&check) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!("node never {what}"))
}

fn run_path(dir: &Path, row: &Row, calls: usize) -> Result<Figures, String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let lab = Lab::new().map_err(|e| e.to_string())?;
    let (a, b) = (lab.namespace("a").map_err(|e| e.to_string())?, lab.namespace("b").map_err(|e| e.to_string())?);
    let imp = Impairment::from_str(LINK).map_err(|e| e.to_string())?;
    let link = lab.link(&a, &b, LinkConfig::symmetric(imp).with_seed(7)).map_err(|e| e.to_string())?;
    let sn = format!("{}:7000", link.addr_a());
    let sn_dir = dir.join("sn").to_string_lossy().to_string();
    let _sn =
        spawn(&a, &["supernode", "--relay-allow-private", "--listen", &sn, "--data-dir", &sn_dir], &dir.join("sn.log"));
    std::thread::sleep(Duration::from_millis(300));
    let (ca, cb) = (dir.join("alice.sock"), dir.join("bob.sock"));
    let (ca_s, cb_s) = (ca.to_string_lossy().to_string(), cb.to_string_lossy().to_string());
    let (da, db) = (dir.join("alice").to_string_lossy().to_string(), dir.join("bob").to_string_lossy().to_string());
    let media_a = format!("{}:0", link.addr_a());
    let media_b = format!("{}:0", link.addr_b());
    let mut alice = vec!["node", "--name", "alice", "--seed", &sn, "--media", &media_a, "--data-dir", &da];
    alice.extend(["--control", &ca_s]);
    alice.extend_from_slice(row.alice);
    let bob = ["node", "--name", "bob", "--seed", &sn, "--media", &media_b, "--data-dir", &db, "--control", &cb_s];
    let bob: Vec<&str> =
        bob.iter().copied().chain(["--auto-answer", "--input", "tone:440"]).chain(row.bob.iter().copied()).collect();
    let _alice = spawn(&a, &alice, &dir.join("alice.log"));
    let _bob = spawn(&b, &bob, &dir.join("bob.log"));
    wait_status(&ca, "signed in", |s| s["supernode"].is_string())?;
    wait_status(&cb, "signed in", |s| s["supernode"].is_string())?;
    // Relays and the NAT probe are ready before the first call, as for a user
    // who has been online for a moment.
    wait_status(&ca, "got a relay", |s| s["relay"]["allocated"].is_string())?;
    wait_status(&cb, "got a relay", |s| s["relay"]["allocated"].is_string())?;
    wait_status(&ca, "probed its NAT", |s| s["reachability"]["udp"].is_boolean())?;
    wait_status(&cb, "probed its NAT", |s| s["reachability"]["udp"].is_boolean())?;
    let mut f = Figures::default();
    for _ in 0..calls {
        let cb2 = cb.clone();
        // Bob's playout delay once his side is connected: the start-up part of "callee hears".
        let watcher = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Some(s) = ctl(&cb2, &["status", "--json"]).first() {
                    if let Some(d) = s["call"]["playout_delay_ms"].as_f64().filter(|d| *d > 0.0) {
                        return Some(d);
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            None
        });
        let events = ctl_timed(&ca, &["call", "bob", "--duration", "2", "--json"]);
        let bob_playout = watcher.join().ok().flatten();
        let Some((t_conn, c)) = events.iter().find(|(_, e)| e["event"] == "call_connected") else { continue };
        if c["path"] != row.connects {
            return Err(format!("connected over {} instead of {}", c["path"], row.connects));
        }
        let Some(ms) = c["setup_ms"].as_f64() else { continue };
        if let Some(up) = row.upgrades {
            let Some((t_up, _)) = events.iter().find(|(_, e)| e["event"] == "path_changed" && e["path"] == up) else {
                return Err(format!("never moved to {up}: {events:?}"));
            };
            f.upgraded.push(ms + (t_up - t_conn));
        }
        f.ok += 1;
        f.setup.push(ms);
        if let Some(p) = bob_playout {
            f.hears.push(ms + ONE_WAY_MS + p);
        }
        // Both sides back to idle before the next call.
        wait_status(&cb, "left the call", |s| s["call"].is_null())?;
    }
    Ok(f)
}

/// The `relay-tcp, auto` row (module docs): bob with the supernode in `a`, alice in `b`
/// behind a firewall that drops every UDP packet, started afresh for each call, which
/// she places as soon as her status shows her signed in.
fn run_fresh_blocked(dir: &Path, row: &Row, calls: usize) -> Result<Figures, String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let lab = Lab::new().map_err(|e| e.to_string())?;
    let (a, b) = (lab.namespace("a").map_err(|e| e.to_string())?, lab.namespace("b").map_err(|e| e.to_string())?);
    let imp = Impairment::from_str(LINK).map_err(|e| e.to_string())?;
    let link = lab.link(&a, &b, LinkConfig::symmetric(imp).with_seed(7)).map_err(|e| e.to_string())?;
    // Only TCP gets in or out of `b` (the impaired link's own forwarding is outside it).
    let nft = "add table inet noudp\n\
               add chain inet noudp out { type filter hook output priority 0; }\n\
               add chain inet noudp in { type filter hook input priority 0; }\n\
               add rule inet noudp out meta l4proto udp drop\n\
               add rule inet noudp in meta l4proto udp drop\n";
    let nft_file = dir.join("noudp.nft");
    std::fs::write(&nft_file, nft).map_err(|e| e.to_string())?;
    b.run(["nft", "-f", &nft_file.to_string_lossy()]).map_err(|e| e.to_string())?;
    let sn = format!("{}:7000", link.addr_a());
    let sn_dir = dir.join("sn").to_string_lossy().to_string();
    let _sn =
        spawn(&a, &["supernode", "--relay-allow-private", "--listen", &sn, "--data-dir", &sn_dir], &dir.join("sn.log"));
    std::thread::sleep(Duration::from_millis(300));
    let (ca, cb) = (dir.join("alice.sock"), dir.join("bob.sock"));
    let (ca_s, cb_s) = (ca.to_string_lossy().to_string(), cb.to_string_lossy().to_string());
    let (da, db) = (dir.join("alice").to_string_lossy().to_string(), dir.join("bob").to_string_lossy().to_string());
    let media_a = format!("{}:0", link.addr_b());
    let media_b = format!("{}:0", link.addr_a());
    let mut alice = vec!["node", "--name", "alice", "--seed", &sn, "--media", &media_a, "--data-dir", &da];
    alice.extend(["--control", &ca_s]);
    alice.extend_from_slice(row.alice);
    let bob = ["node", "--name", "bob", "--seed", &sn, "--media", &media_b, "--data-dir", &db, "--control", &cb_s];
    let bob: Vec<&str> =
        bob.iter().copied().chain(["--auto-answer", "--input", "tone:440"]).chain(row.bob.iter().copied()).collect();
    let _bob = spawn(&a, &bob, &dir.join("bob.log"));
    wait_status(&cb, "signed in", |s| s["supernode"].is_string())?;
    wait_status(&cb, "got a relay", |s| s["relay"]["allocated"].is_string())?;
    let mut f = Figures::default();
    for i in 0..calls {
        let _ = std::fs::remove_file(&ca);
        let alice_p = spawn(&b, &alice, &dir.join(format!("alice-{i}.log")));
        // Poll often: the call must go out right after sign-in.
        let deadline = Instant::now() + Duration::from_secs(20);
        while !ctl(&ca, &["status", "--json"]).first().is_some_and(|s| s["supernode"].is_string()) {
            if Instant::now() > deadline {
                return Err("alice never signed in".into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let events = ctl_timed(&ca, &["call", "bob", "--duration", "1", "--json"]);
        let _ = alice_p.kill();
        let Some((_, c)) = events.iter().find(|(_, e)| e["event"] == "call_connected") else { continue };
        if c["path"] != row.connects {
            return Err(format!("connected over {} instead of {}", c["path"], row.connects));
        }
        let Some(ms) = c["setup_ms"].as_f64() else { continue };
        f.ok += 1;
        f.setup.push(ms);
        wait_status(&cb, "left the call", |s| s["call"].is_null())?;
    }
    Ok(f)
}
