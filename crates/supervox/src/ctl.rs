//! `supervox ctl`: the client side of the control socket.

use crate::control::Request;
use anyhow::{Context, Result};
use serde_json::Value;
use std::path::Path;
use supervox_core::reason::NORMAL_END_CODES;
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

/// True if the events describe a call that connected and ended normally:
/// decided by the `call_ended` line's stable `code` (one of the core's
/// [`NORMAL_END_CODES`]), never by its human `reason` text.
pub fn call_succeeded(events: &[Value]) -> bool {
    let connected = events.iter().any(|e| e["event"] == "call_connected");
    let ended_ok = events
        .iter()
        .any(|e| e["event"] == "call_ended" && e["code"].as_str().is_some_and(|c| NORMAL_END_CODES.contains(&c)));
    connected && ended_ok
}

/// Human wording of one event line.
pub fn describe(v: &Value) -> String {
    let s = |k: &str| v[k].as_str().unwrap_or("?").to_string();
    let n = |k: &str| v[k].as_f64().map(|x| format!("{x}")).unwrap_or_else(|| "?".into());
    match v["event"].as_str() {
        Some("call_connected") => format!(
            "connected to {}{} [fingerprint {}] over {} in {} ms",
            s("peer"),
            // Anything but a pinned or directory-confirmed name is marked (older nodes send no field).
            if v["verified"] == "directory" || v["verified"] == "contact" { "" } else { " (unverified)" },
            s("fingerprint"),
            s("path"),
            n("setup_ms")
        ),
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
        Some("key_changed") => format!(
            "WARNING: the key of {} changed (pinned {}, now {}): possible attack; compare fingerprints, then \
             `ctl trust {}` to accept it",
            s("peer"),
            s("old_fingerprint"),
            s("new_fingerprint"),
            s("peer")
        ),
        Some("call_failed") => format!("call failed: {}", s("reason")),
        Some("subscribed") => "listening for events".into(),
        Some("ringing") => "ringing".into(),
        Some("signed_in") => format!("signed in via {}", s("supernode")),
        Some("lost_supernode") => format!("lost supernode {} ({}); reconnecting", s("supernode"), s("reason")),
        Some("call_stats") => format!(
            "call {}: {} MOS {} loss {}% ({}% after FEC) jitter {} ms rtt {} ms playout {} ms",
            s("call_id"),
            s("path"),
            n("mos"),
            n("loss_before_fec_pct"),
            n("loss_after_fec_pct"),
            n("jitter_ms"),
            n("rtt_ms"),
            n("playout_delay_ms")
        ),
        Some("incoming_call") => format!("incoming call from {} [fingerprint {}]", s("peer"), s("fingerprint")),
        Some("contact_request") => format!(
            "contact request from {} [fingerprint {}]: {:?} (`ctl contacts accept {}`)",
            s("name"),
            s("fingerprint"),
            s("message"),
            s("name")
        ),
        Some("contact") => format!("{}: {}", s("name"), v["state"].as_str().unwrap_or("removed")),
        Some("presence") => match v["status_text"].as_str().filter(|t| !t.is_empty()) {
            Some(t) => format!("{} is {} ({t})", s("name"), s("presence")),
            None => format!("{} is {}", s("name"), s("presence")),
        },
        Some("message") => format!("{} -> {}: {}", s("from"), s("to"), s("text")),
        Some("message_status") => format!("message {} to {}: {}", s("id"), s("to"), s("status")),
        Some("missed_call") => format!("missed call from {}", s("peer")),
        _ => match v.get("error") {
            Some(e) => format!("error: {}", e.as_str().unwrap_or("?")),
            None => serde_json::to_string_pretty(v).unwrap_or_default(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use supervox_core::reason::{CallEnd, CallFailure, Reason};

    fn ended(reason: &str, code: &str) -> Vec<Value> {
        vec![
            json!({"event": "call_connected", "call_id": "x", "peer": "bob", "path": "direct-udp", "setup_ms": 1}),
            json!({"event": "call_ended", "reason": reason, "code": code, "duration_ms": 5}),
        ]
    }

    #[test]
    fn success_follows_the_code_not_the_text() {
        for end in [CallEnd::LocalHangup, CallEnd::remote_hangup("whatever"), CallEnd::DurationReached] {
            assert!(call_succeeded(&ended(&end.to_string(), end.code())), "{end:?}");
        }
        for end in [CallEnd::MediaTimeout, CallEnd::ControlClientLeft, CallEnd::ShuttingDown] {
            assert!(!call_succeeded(&ended(&end.to_string(), end.code())), "{end:?}");
        }
        // A normal-looking text with an abnormal code fails, and the reverse succeeds.
        assert!(!call_succeeded(&ended("call duration reached", "media-timeout")));
        assert!(call_succeeded(&ended("something reworded", "duration-reached")));
        // No code (a node from before codes) is not taken as success.
        let mut no_code = ended("local hangup", "x");
        no_code[1].as_object_mut().unwrap().remove("code");
        assert!(!call_succeeded(&no_code));
    }

    #[test]
    fn a_call_that_never_connected_or_failed_is_no_success() {
        let only_end = vec![ended("local hangup", "local-hangup").remove(1)];
        assert!(!call_succeeded(&only_end));
        let f = CallFailure::Ended(CallEnd::LocalHangup);
        let failed = vec![json!({"event": "call_failed", "reason": f.to_string(), "code": f.code()})];
        assert!(!call_succeeded(&failed));
    }

    #[test]
    fn a_peer_the_directory_did_not_confirm_is_marked() {
        let mut c = json!({"event": "call_connected", "peer": "alice", "verified": "directory",
                           "fingerprint": "ab12-cd34-ef56-7890", "path": "direct-udp", "setup_ms": 3});
        assert_eq!(describe(&c), "connected to alice [fingerprint ab12-cd34-ef56-7890] over direct-udp in 3 ms");
        c["verified"] = json!("unverified");
        assert!(describe(&c).starts_with("connected to alice (unverified) ["), "{}", describe(&c));
        c["verified"] = json!("contact");
        assert!(describe(&c).starts_with("connected to alice ["), "{}", describe(&c));
        c.as_object_mut().unwrap().remove("verified");
        assert!(describe(&c).contains("(unverified)"));
    }
}
