//! `supervox demo`: two supernodes and two clients on loopback, in one
//! process; alice calls bob, bob records, and the recording is checked.

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
pub async fn run(json_out: bool) -> Result<bool> {
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
            metrics: None,
            relay_kbps: supervox_turn::defaults::RELAY_KBPS,
            max_allocations: 100,
            relay_secret: None,
            relay_allow_loopback: false,
            relay_tls_listen: vec![],
            relay_tls_files: None,
            network_key: Some(network_key),
            step_back: None,
        })
        .await?;
        let addr = sn.advertise();
        say(&format!("supernode {} listening on {addr}", i + 1));
        tokio::spawn(sn.run(stop.clone()));
        sns.push(addr);
    }
    let recording = dir.path().join("bob.wav");
    let mut controls = Vec::new();
    for (i, name) in ["alice", "bob"].iter().enumerate() {
        let control = dir.path().join(format!("{name}.sock"));
        let opts = NodeOptions {
            name: name.to_string(),
            seeds: vec![sns[i].into()],
            data_dir: dir.path().join(name),
            control: control.clone(),
            auto_answer: true,
            input: SourceSpec::Silence,
            output: if i == 1 { SinkSpec::Wav(recording.clone()) } else { SinkSpec::Null },
            media_bind: "127.0.0.1:0".parse()?,
            media: node::media::MediaConfig::default(),
            force_relay: false,
            relaxed_privacy: false,
            read_receipts: true,
            refuse_strangers: false,
            external_relay: None,
            relay_transport: None,
            supernode: None,
        };
        let stop = stop.clone();
        tokio::spawn(async move {
            if let Err(e) = node::run(opts, stop).await {
                eprintln!("node failed: {e:#}");
            }
        });
        controls.push(control);
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
    let _ = stop_tx.send(true);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let verdict = judge(&events, &recording);
    match &verdict {
        Ok(summary) if json_out => println!("{summary}"),
        Ok(summary) => println!(
            "call worked: path {}, setup {} ms; alice sent {} frames and received {} from bob; bob heard {:.1} Hz",
            summary["path"],
            summary["setup_ms"],
            summary["frames_sent"],
            summary["frames_received"],
            summary["heard_hz"]
        ),
        Err(e) if json_out => println!("{}", json!({"event": "demo_result", "ok": false, "reason": e.to_string()})),
        Err(e) => println!("call did not work: {e:#}"),
    }
    Ok(verdict.is_ok())
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
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(15) {
        if let Ok(lines) = ctl::request(control, &Request::Status, |_| {}).await {
            if let Some(sn) = lines.first().and_then(|v| v["supernode"].as_str()) {
                return Ok(sn.to_string());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("not signed in after 15 s")
}
