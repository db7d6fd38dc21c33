//! `supervox ctl`: the client side of the control socket.

use crate::control::Request;
use anyhow::{Context, Result};
use serde_json::Value;
use std::path::Path;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// Send one request and collect every answer line, calling `on_line` as each
/// arrives (calls stream their events).
pub async fn request(control: &Path, req: &Request, mut on_line: impl FnMut(&Value)) -> Result<Vec<Value>> {
    let stream = UnixStream::connect(control).await.with_context(|| {
        format!("cannot reach the node's control socket {} (is `supervox node` running?)", control.display())
    })?;
    let (rd, mut wr) = stream.into_split();
    wr.write_all(format!("{}\n", serde_json::to_string(req)?).as_bytes()).await?;
    let mut lines = BufReader::new(rd).lines();
    let mut out = Vec::new();
    while let Some(l) = lines.next_line().await? {
        let v: Value = serde_json::from_str(&l).with_context(|| format!("bad line from node: {l}"))?;
        on_line(&v);
        out.push(v);
    }
    Ok(out)
}

/// True if the events describe a call that connected and ended normally.
pub fn call_succeeded(events: &[Value]) -> bool {
    let connected = events.iter().any(|e| e["event"] == "call_connected");
    let ended_ok = events.iter().any(|e| {
        e["event"] == "call_ended"
            && e["reason"]
                .as_str()
                .is_some_and(|r| r == "call duration reached" || r == "local hangup" || r.starts_with("remote hangup"))
    });
    connected && ended_ok
}

/// Human wording of one event line.
pub fn describe(v: &Value) -> String {
    let s = |k: &str| v[k].as_str().unwrap_or("?").to_string();
    let n = |k: &str| v[k].as_f64().map(|x| format!("{x}")).unwrap_or_else(|| "?".into());
    match v["event"].as_str() {
        Some("call_connected") => format!("connected to {} over {} in {} ms", s("peer"), s("path"), n("setup_ms")),
        Some("path_changed") => format!("path changed to {} ({})", s("path"), s("reason")),
        Some("call_ended") => format!(
            "call ended ({}) after {} ms: sent {} frames, received {} (loss {}%, jitter {} ms)",
            s("reason"),
            n("duration_ms"),
            n("frames_sent"),
            n("frames_received"),
            n("loss_pct"),
            n("jitter_ms")
        ),
        Some("call_failed") => format!("call failed: {}", s("reason")),
        _ => match v.get("error") {
            Some(e) => format!("error: {}", e.as_str().unwrap_or("?")),
            None => serde_json::to_string_pretty(v).unwrap_or_default(),
        },
    }
}
