//! Interop: coturn's `turnutils_uclient` against our sans-IO core driven over real UDP sockets.
//!
//! Fails (never skips) when `turnutils_uclient` is missing: install it with
//! `apt-get install -y coturn`.

#[path = "../examples/turn_udp_server.rs"]
#[allow(dead_code)]
mod turn_udp_server;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SECRET: &str = "interop-secret";
const UCLIENT: &str = "turnutils_uclient";

/// Start the example driver on an ephemeral loopback port in a background runtime.
fn start_server() -> u16 {
    let std_sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind server socket");
    std_sock.set_nonblocking(true).expect("nonblocking");
    let port = std_sock.local_addr().expect("local addr").port();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async move {
            let sock = tokio::net::UdpSocket::from_std(std_sock).expect("tokio socket");
            let _ = turn_udp_server::serve(sock, SECRET.as_bytes()).await;
        });
    });
    port
}

/// Run uclient with `extra` flags; returns (exit ok, combined output). Killed after `limit`.
fn run_uclient(port: u16, user_hex: &str, extra: &[&str], limit: Duration) -> (bool, String) {
    let mut args: Vec<String> = vec![
        "-y".into(), // client-to-client: each client is the other's peer through its relay
        "-c".into(), // no RTCP allocations (EVEN-PORT reservations are not supported: 508)
        "-W".into(), // TURN REST API secret: uclient mints "<expiry>:<user>" credentials itself
        SECRET.into(),
        "-u".into(),
        user_hex.into(),
        "-p".into(),
        port.to_string(),
        "-n".into(),
        "50".into(),
        "-m".into(),
        "2".into(),
        "-l".into(),
        "120".into(),
        "-e".into(),
        "127.0.0.1".into(),
        // A peer port of our own: the default (3480) is shared by every concurrent run.
        "-r".into(),
        std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .map(|a| a.port())
            .unwrap_or(3480)
            .to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push("127.0.0.1".into());
    let mut child = match Command::new(UCLIENT).args(&args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn() {
        Ok(c) => c,
        Err(e) => panic!(
            "{UCLIENT} could not be started ({e}). The TURN interop test needs coturn's test client: \
             install it with `apt-get install -y coturn`."
        ),
    };
    let start = Instant::now();
    loop {
        match child.try_wait().expect("wait for uclient") {
            Some(_) => break,
            None if start.elapsed() > limit => {
                let _ = child.kill();
                let out = child.wait_with_output().expect("uclient output");
                panic!(
                    "{UCLIENT} did not finish within {limit:?}:\n{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    let out = child.wait_with_output().expect("uclient output");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// Parse the final "tot_send_msgs=N, tot_recv_msgs=M" line.
fn totals(text: &str) -> Option<(u64, u64)> {
    let line = text.lines().rev().find(|l| l.contains("tot_send_msgs=") && !l.contains("msz="))?;
    let num = |key: &str| -> Option<u64> {
        let rest = &line[line.find(key)? + key.len()..];
        rest.chars().take_while(char::is_ascii_digit).collect::<String>().parse().ok()
    };
    Some((num("tot_send_msgs=")?, num("tot_recv_msgs=")?))
}

fn assert_clean_run(what: &str, ok: bool, text: &str) {
    let errors: Vec<&str> = text.lines().filter(|l| l.to_ascii_lowercase().contains("error")).collect();
    assert!(ok && errors.is_empty(), "{what}: uclient failed (exit ok={ok}), errors {errors:?}:\n{text}");
    let (sent, received) = totals(text).unwrap_or_else(|| panic!("{what}: no totals in output:\n{text}"));
    assert!(sent >= 100, "{what}: only {sent} messages sent:\n{text}");
    assert_eq!(received, sent, "{what}: lost packets:\n{text}");
    assert!(text.contains("Total lost packets 0 "), "{what}: losses reported:\n{text}");
}

#[test]
fn turnutils_uclient_completes_runs() {
    let port = start_server();
    let limit = Duration::from_secs(15);
    // Channels (ChannelBind + ChannelData) and Send/Data indications, in parallel.
    let channels = std::thread::spawn(move || run_uclient(port, "0a0b0c", &[], limit));
    let indications = std::thread::spawn(move || run_uclient(port, "0d0e0f", &["-s"], limit));
    let (ok, text) = channels.join().expect("channel run");
    assert_clean_run("ChannelData run", ok, &text);
    let (ok, text) = indications.join().expect("indication run");
    assert_clean_run("Send/Data indication run", ok, &text);
}
