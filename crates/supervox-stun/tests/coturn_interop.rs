//! Interop: coturn's `turnutils_stunclient` (Debian package `coturn`) against our Binding
//! server on real UDP sockets. Fails, never skips, when the tool is missing.

use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use supervox_stun::{BindingServer, Reply};

/// A loopback "supernode": its main socket, an alternate port and a peer SN socket on
/// 127.0.0.2 that executes dial-backs, all served by one thread until `stop`.
struct Lab {
    main: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<(SocketAddr, &'static str)>>>,
}

impl Lab {
    fn start() -> Lab {
        let bind = |ip: &str| {
            let s = UdpSocket::bind((ip, 0)).expect("bind UDP socket");
            s.set_read_timeout(Some(Duration::from_millis(5))).expect("set timeout");
            s
        };
        let (main, alt, peer) = (bind("127.0.0.1"), bind("127.0.0.1"), bind("127.0.0.2"));
        let addr = |s: &UdpSocket| s.local_addr().expect("local addr");
        let (main_addr, alt_addr, peer_addr) = (addr(&main), addr(&alt), addr(&peer));
        let server = BindingServer { other: Some(peer_addr), alternate: Some(alt_addr), ..BindingServer::default() };
        let peer_server = BindingServer { other: Some(main_addr), ..BindingServer::default() };
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut answered = Vec::new();
            let mut buf = [0u8; 2048];
            while !flag.load(Ordering::Relaxed) {
                for (sock, srv) in [(&main, &server), (&alt, &server), (&peer, &peer_server)] {
                    let Ok((n, from)) = sock.recv_from(&mut buf) else { continue };
                    let local = addr(sock);
                    let how = match srv.handle(&buf[..n], from, local) {
                        Ok(Some(Reply::Direct { to, response })) => {
                            let _ = sock.send_to(&response, to);
                            "direct"
                        }
                        Ok(Some(Reply::FromAlternate { to, response, .. })) => {
                            let _ = alt.send_to(&response, to);
                            "alternate"
                        }
                        Ok(Some(Reply::ViaPeer { dial_back, .. })) => {
                            // In a real SN this order travels over the SN link to the peer.
                            let Ok(resp) = dial_back.response(peer_addr) else { continue };
                            let _ = peer.send_to(&resp, dial_back.to);
                            "dial-back"
                        }
                        _ => continue,
                    };
                    answered.push((from, how));
                }
            }
            answered
        });
        Lab { main: main_addr, stop, thread: Some(thread) }
    }

    fn stop(mut self) -> Vec<(SocketAddr, &'static str)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().map(|t| t.join().expect("server thread")).unwrap_or_default()
    }
}

/// Runs `turnutils_stunclient` with `args`, killing it after 20 s; returns (success, output).
fn stunclient(args: &[String]) -> (bool, String) {
    let mut child = Command::new("turnutils_stunclient")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run turnutils_stunclient ({e}): install the Debian package `coturn` \
                 (apt-get install -y coturn) for this interop test"
            )
        });
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().ok().flatten().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("collect turnutils_stunclient output");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("turnutils_stunclient {args:?} said:\n{text}");
    (out.status.success(), text)
}

#[test]
fn turnutils_stunclient_sees_our_mapped_address() {
    let lab = Lab::start();
    let (ok, text) = stunclient(&["-p".into(), lab.main.port().to_string(), "127.0.0.1".into()]);
    let answered = lab.stop();
    let (client, _) =
        *answered.first().unwrap_or_else(|| panic!("our server got no Binding request; client said:\n{text}"));
    assert!(ok, "turnutils_stunclient failed:\n{text}");
    assert!(
        text.contains(&format!("UDP reflexive addr: {client}")),
        "client output lacks our mapped address {client}:\n{text}"
    );
}

#[test]
fn turnutils_stunclient_rfc5780_mode_gets_dial_back_answers() {
    let lab = Lab::start();
    let (ok, text) = stunclient(&["-f".into(), "-p".into(), lab.main.port().to_string(), "127.0.0.1".into()]);
    let answered = lab.stop();
    let (client, _) =
        *answered.first().unwrap_or_else(|| panic!("our server got no Binding request; client said:\n{text}"));
    assert!(ok, "turnutils_stunclient -f failed:\n{text}");
    assert!(text.contains(&format!("UDP reflexive addr: {client}")), "no mapped address {client}:\n{text}");
    assert!(!text.contains("error"), "an RFC 5780 test got an error response:\n{text}");
    // Its change-IP+port tests were answered by the peer SN (dial-back), and all three
    // RFC 5780 requests got a mapped address back.
    let hows: Vec<&str> = answered.iter().map(|a| a.1).collect();
    assert_eq!(hows, ["direct", "dial-back", "dial-back"], "client said:\n{text}");
    assert!(text.matches("UDP reflexive addr").count() >= 3, "missing answers:\n{text}");
}
