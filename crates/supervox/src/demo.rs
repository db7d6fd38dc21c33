//! `supervox demo`: two supernodes and two clients on loopback, in one
//! process; alice calls bob, bob records, and the recording is checked;
//! then they become contacts, bob signs out, alice leaves him two messages
//! on the network, bob signs in through the other supernode and reads them.

use crate::control::Request;
use crate::ctl;
use crate::node::{self, NodeOptions};
use crate::sn::{BoundSupernode, SnOptions};
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};
use supervox_media::sink::SinkSpec;
use supervox_media::source::SourceSpec;
use tokio::sync::watch;

/// Tone alice sends.
const TONE_HZ: f32 = 440.0;
/// Call length.
const CALL_SECS: f64 = 3.0;

/// Run the demo; returns true if the call worked.
pub async fn run(json_out: bool, ui: bool) -> Result<bool> {
    let dir = tempfile::tempdir()?;
    let (stop_tx, stop) = watch::channel(false);
    let say = |s: &str| {
        if !json_out {
            println!("{s}");
        }
    };
    let mut sns = Vec::new();
    // The demo network's own key: nobody else can join it.
    let network_key: [u8; 32] = rand::random();
    for i in 0..2 {
        let seeds = sns.first().map(|a: &std::net::SocketAddr| vec![*a]).unwrap_or_default();
        let sn = BoundSupernode::bind(SnOptions {
            listen: vec!["127.0.0.1:0".parse()?],
            seeds,
            data_dir: dir.path().join(format!("sn{i}")),
            advertise: None,
            max_clients: 1000,
            max_connections: crate::defaults::MAX_CONNECTIONS,
            max_connections_per_host: crate::defaults::MAX_CONNECTIONS_PER_HOST,
            metrics: None,
            relay_kbps: supervox_turn::defaults::RELAY_KBPS,
            max_allocations: 100,
            relay_secret: None,
            relay_allow_loopback: false,
            relay_allow_private: false,
            relay_tls_listen: vec![],
            relay_tls_files: None,
            network_key: Some(network_key),
            step_back: None,
            // A demo on one machine: proofs of a few hashes.
            member_difficulty: 8,
            max_members_per_prefix: supervox_core::overlay::admission::DEFAULT_MAX_MEMBERS_PER_PREFIX,
        })
        .await?;
        let addr = sn.advertise();
        say(&format!("supernode {} listening on {addr}", i + 1));
        tokio::spawn(sn.run(stop.clone()));
        sns.push(addr);
    }
    let recording = dir.path().join("bob.wav");
    let mut controls = Vec::new();
    let mut node_stops = Vec::new();
    for (i, name) in ["alice", "bob"].iter().enumerate() {
        let output = if i == 1 { SinkSpec::Wav(recording.clone()) } else { SinkSpec::Null };
        let (control, stop) = spawn_node(dir.path(), name, sns[i], output, &stop, ui)?;
        controls.push(control);
        node_stops.push(stop);
    }
    for (c, name) in controls.iter().zip(["alice", "bob"]) {
        let sn = wait_signed_in(c).await.with_context(|| format!("{name} did not sign in"))?;
        say(&format!("{name} signed in via supernode {sn}"));
    }
    say(&format!("alice calls bob for {CALL_SECS} s with a {TONE_HZ} Hz tone; bob records"));
    let req = Request::Call {
        name: "bob".into(),
        duration: Some(CALL_SECS),
        input: Some(format!("tone:{TONE_HZ}")),
        output: Some("null".into()),
        detach: false,
    };
    let events = ctl::request(&controls[0], &req, |v| {
        if json_out {
            println!("{v}");
        } else {
            println!("  {}", ctl::describe(v));
        }
    })
    .await?;
    // Let bob's side see the hangup and close the recording.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let verdict = judge(&events, &recording);
    let social = match &verdict {
        Ok(_) => offline_chat(dir.path(), &sns, &controls, node_stops, &stop, json_out, ui).await,
        Err(_) => Ok(json!(null)),
    };
    if ui && verdict.is_ok() {
        keep_open_for_the_browser(&controls).await?;
    }
    let _ = stop_tx.send(true);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let verdict = verdict.and_then(|mut v| {
        let social = social?;
        v["messages"] = social;
        Ok(v)
    });
    match &verdict {
        Ok(summary) if json_out => println!("{summary}"),
        Ok(summary) => println!(
            "call worked: path {}, setup {} ms; alice sent {} frames and received {} from bob; bob heard {:.1} Hz; \
             offline messages: {}",
            summary["path"],
            summary["setup_ms"],
            summary["frames_sent"],
            summary["frames_received"],
            summary["heard_hz"],
            summary["messages"]["result"].as_str().unwrap_or("?")
        ),
        Err(e) if json_out => println!("{}", json!({"event": "demo_result", "ok": false, "reason": e.to_string()})),
        Err(e) => println!("call did not work: {e:#}"),
    }
    Ok(verdict.is_ok())
}

/// Start node `name` in one task, signing in through `sn`; its control
/// socket and a stop of its own (the demo's stop ends it too).
fn spawn_node(
    root: &Path,
    name: &str,
    sn: std::net::SocketAddr,
    output: SinkSpec,
    all: &watch::Receiver<bool>,
    ui: bool,
) -> Result<(std::path::PathBuf, watch::Sender<bool>)> {
    let control = root.join(format!("{name}.sock"));
    let opts = NodeOptions {
        name: name.to_string(),
        seeds: vec![sn.into()],
        named_seeds: Vec::new(),
        data_dir: root.join(name),
        control: control.clone(),
        auto_answer: true,
        input: SourceSpec::Silence,
        output,
        media_bind: "127.0.0.1:0".parse()?,
        media: node::media::MediaConfig::default(),
        force_relay: false,
        relaxed_privacy: false,
        read_receipts: true,
        refuse_strangers: false,
        external_relay: None,
        relay_transport: None,
        supernode: None,
        // Each on the next free port from the default one.
        ui: ui.then(crate::ui::UiOptions::default),
    };
    let (tx, mine) = watch::channel(false);
    let all = all.clone();
    let (fwd_tx, fwd) = watch::channel(false);
    tokio::spawn(async move {
        // A stop is a `true` sent; a dropped sender (a finished step of the demo) is none.
        let stopped = |mut rx: watch::Receiver<bool>| async move {
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            _ = stopped(mine) => {}
            _ = stopped(all) => {}
        }
        let _ = fwd_tx.send(true);
    });
    let name = name.to_string();
    tokio::spawn(async move {
        if let Err(e) = node::run(opts, fwd).await {
            eprintln!("node {name} failed: {e:#}");
        }
    });
    Ok((control, tx))
}

/// One control request's first answer line.
async fn ask(control: &Path, req: Request) -> Result<Value> {
    let lines = ctl::request(control, &req, |_| {}).await?;
    lines.into_iter().next().context("no answer from the node")
}

/// The social part: alice and bob become contacts; bob signs out; alice
/// sends two messages (stored in bob's mailbox on the supernodes); bob signs
/// in through the other supernode and prints them; alice sees them
/// delivered, then read.
async fn offline_chat(
    root: &Path,
    sns: &[std::net::SocketAddr],
    controls: &[std::path::PathBuf],
    mut stops: Vec<watch::Sender<bool>>,
    all: &watch::Receiver<bool>,
    json_out: bool,
    ui: bool,
) -> Result<Value> {
    let say = |s: String| {
        if !json_out {
            println!("{s}");
        }
    };
    let (alice, bob) = (&controls[0], &controls[1]);
    let contact = |name: &str| Request::Contacts {
        action: Some(crate::control::ContactAction::Add),
        name: Some(name.into()),
        message: Some("hi, it's alice".into()),
    };
    ask(alice, contact("bob")).await?;
    say("alice asks bob to be a contact".into());
    wait_until(|| async {
        let lines =
            ctl::request(bob, &Request::Contacts { action: None, name: None, message: None }, |_| {}).await.ok()?;
        lines.iter().any(|c| c["name"] == "alice" && c["state"] == "incoming").then_some(())
    })
    .await
    .context("bob got no contact request")?;
    let accept = Request::Contacts {
        action: Some(crate::control::ContactAction::Accept),
        name: Some("alice".into()),
        message: None,
    };
    ask(bob, accept).await?;
    say("bob accepts; bob signs out".into());
    let _ = stops[1].send(true);
    wait_until(|| async {
        let lines =
            ctl::request(alice, &Request::Contacts { action: None, name: None, message: None }, |_| {}).await.ok()?;
        lines.iter().any(|c| c["name"] == "bob" && c["state"] == "accepted" && c["presence"] == "offline").then_some(())
    })
    .await
    .context("alice does not see bob offline")?;
    let mut ids = Vec::new();
    for text in ["are you there?", "call me when you are back"] {
        let v = ask(alice, Request::Send { name: "bob".into(), text: text.into() }).await?;
        if v["event"] != "message" {
            bail!("alice's message was not taken: {v}");
        }
        say(format!("alice -> bob: {text:?} ({})", v["status"].as_str().unwrap_or("?")));
        ids.push(v["id"].as_str().unwrap_or_default().to_string());
    }
    // Bob comes back through the other supernode (a fresh host cache, seeded with it).
    let _ = std::fs::remove_file(root.join("bob").join("hostcache"));
    wait_until(|| async { (!bob.exists()).then_some(()) }).await.context("bob's node did not stop")?;
    let (_, stop) = spawn_node(root, "bob", sns[0], SinkSpec::Null, all, ui)?;
    stops[1] = stop;
    let sn = wait_signed_in(bob).await.context("bob did not sign in again")?;
    say(format!("bob signs in again, via supernode {sn}"));
    let got = wait_until(|| async {
        let lines = ctl::request(bob, &Request::Messages { name: "alice".into() }, |_| {}).await.ok()?;
        let got: Vec<String> = lines
            .iter()
            .filter(|m| m["direction"] == "in")
            .filter_map(|m| m["text"].as_str().map(String::from))
            .collect();
        (got.len() >= 2).then_some(got)
    })
    .await
    .context("bob did not get alice's messages")?;
    for t in &got {
        say(format!("bob reads from alice: {t:?}"));
    }
    ask(bob, Request::Read { name: "alice".into() }).await?;
    let statuses = wait_until(|| async {
        let lines = ctl::request(alice, &Request::Messages { name: "bob".into() }, |_| {}).await.ok()?;
        let st: Vec<String> = lines
            .iter()
            .filter(|m| ids.iter().any(|i| m["id"] == i.as_str()))
            .filter_map(|m| m["status"].as_str().map(String::from))
            .collect();
        (st.len() == 2 && st.iter().all(|s| s == "read")).then_some(st)
    })
    .await
    .context("alice did not see her messages read")?;
    say(format!("alice sees both messages {}", statuses[0]));
    Ok(json!({"result": "2 stored while bob was offline, delivered via the other supernode, read",
              "received": got, "bob_supernode": sn}))
}

/// `demo --ui`: print a login link to each node's web app and keep the
/// network up until Ctrl-C (new links with `supervox ui --control PATH`).
async fn keep_open_for_the_browser(controls: &[std::path::PathBuf]) -> Result<()> {
    println!("\nthe network stays up; open each web app (links work once, within a minute):");
    for (c, name) in controls.iter().zip(["alice", "bob"]) {
        let v = ask(c, Request::UiLogin).await?;
        let url = v["url"].as_str().with_context(|| format!("{name} has no web app: {v}"))?;
        println!("  {name}: {url}");
        println!("         (a new link: supervox ui --print --control {})", c.display());
    }
    println!("alice and bob are contacts: call or chat from either window. Ctrl-C ends the demo.");
    let _ = tokio::signal::ctrl_c().await;
    Ok(())
}

/// Poll `f` every 50 ms for up to 15 s.
async fn wait_until<T, F, Fut>(mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(15) {
        if let Some(v) = f().await {
            return Ok(v);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("timed out after 15 s")
}

/// Check the call: connected, ended normally, ≥95% of frames arrived, and
/// bob's recording holds alice's tone.
fn judge(events: &[Value], recording: &Path) -> Result<Value> {
    if !ctl::call_succeeded(events) {
        bail!("the call did not connect and end normally");
    }
    let connected = events.iter().find(|e| e["event"] == "call_connected").context("no call_connected")?;
    let ended = events.iter().find(|e| e["event"] == "call_ended").context("no call_ended")?;
    let sent = ended["frames_sent"].as_u64().unwrap_or(0);
    let received = ended["frames_received"].as_u64().unwrap_or(0);
    if sent == 0 || (received as f64) < 0.95 * sent as f64 {
        bail!("alice received {received} of {sent} frames from bob (< 95%)");
    }
    let samples = read_wav(recording)?;
    let hz = supervox_media::analysis::dominant_frequency(&samples, supervox_media::SAMPLE_RATE)
        .context("bob's recording is silent")?;
    if (hz - TONE_HZ).abs() > 5.0 {
        bail!("bob heard {hz:.1} Hz, expected {TONE_HZ} Hz");
    }
    Ok(json!({"event": "demo_result", "ok": true, "path": connected["path"], "setup_ms": connected["setup_ms"],
              "frames_sent": sent, "frames_received": received, "heard_hz": (hz * 10.0).round() / 10.0,
              "recorded_s": samples.len() as f64 / supervox_media::SAMPLE_RATE as f64}))
}

fn read_wav(path: &Path) -> Result<Vec<i16>> {
    let mut src =
        supervox_media::source::open_source(&SourceSpec::Wav(path.to_path_buf()), &supervox_media::device::NoDevices)
            .with_context(|| format!("cannot read bob's recording {}", path.display()))?;
    // The source pads with silence after the end: read the file's length.
    let len = std::fs::metadata(path)?.len().saturating_sub(44) / 2;
    let frames = len.div_ceil(supervox_media::FRAME_SAMPLES as u64);
    Ok((0..frames).flat_map(|_| src.next_frame()).collect())
}

/// Poll a node's status until it is signed in; returns its supernode.
pub async fn wait_signed_in(control: &Path) -> Result<String> {
    wait_until(|| async {
        let lines = ctl::request(control, &Request::Status, |_| {}).await.ok()?;
        lines.first().and_then(|v| v["supernode"].as_str()).map(String::from)
    })
    .await
    .context("not signed in")
}
