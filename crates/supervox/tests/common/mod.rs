//! Real-process test network: supernodes and nodes as child processes of
//! the `supervox` binary on loopback, killed when dropped.

#![allow(dead_code)]

use serde_json::Value;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_supervox");

/// A free loopback port (bound and released; the race is harmless here).
pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// A child process killed on drop.
pub struct Proc {
    pub child: Child,
    pub name: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Sn {
    pub proc: Proc,
    pub addr: SocketAddr,
    pub dir: PathBuf,
}

pub fn start_sn(root: &Path, name: &str, seeds: &[SocketAddr]) -> Sn {
    start_sn_at(root, name, free_addr(), seeds)
}

pub fn start_sn_at(root: &Path, name: &str, addr: SocketAddr, seeds: &[SocketAddr]) -> Sn {
    start_sn_with(root, name, addr, seeds, &[])
}

/// Start a supernode with extra flags.
pub fn start_sn_with(root: &Path, name: &str, addr: SocketAddr, seeds: &[SocketAddr], extra: &[&str]) -> Sn {
    start_sn_bin(BIN, root, name, addr, seeds, extra)
}

/// Start a supernode of another build of `supervox` (a bench's anchor).
pub fn start_sn_bin(bin: &str, root: &Path, name: &str, addr: SocketAddr, seeds: &[SocketAddr], extra: &[&str]) -> Sn {
    start_sn_env(bin, root, name, addr, seeds, extra, &[])
}

/// Start a supernode with extra flags and environment variables.
pub fn start_sn_env(
    bin: &str,
    root: &Path,
    name: &str,
    addr: SocketAddr,
    seeds: &[SocketAddr],
    extra: &[&str],
    env: &[(&str, &str)],
) -> Sn {
    let dir = root.join(name);
    let mut cmd = Command::new(bin);
    cmd.args(["supernode", "--listen", &addr.to_string(), "--data-dir"]).arg(&dir).args(extra);
    // Member proofs of a few hashes (the default costs a second each);
    // `env` may say otherwise.
    cmd.env("SUPERVOX_MEMBER_DIFFICULTY", "4");
    cmd.envs(env.iter().copied());
    for s in seeds {
        cmd.args(["--seed", &s.to_string()]);
    }
    let mut child = cmd.stdout(Stdio::null()).stderr(log_file(root, name)).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    // Ours is listening once its identity exists and the port answers: a
    // port that answers while ours has exited (or not yet written its key)
    // is another test's process that took the free port first.
    while TcpStream::connect(addr).is_err() || !dir.join("identity").exists() {
        if let Ok(Some(st)) = child.try_wait() {
            panic!("supernode {name} exited at start ({st}): port {addr} taken?");
        }
        assert!(Instant::now() < deadline, "supernode {name} did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Sn { proc: Proc { child, name: name.into() }, addr, dir }
}

/// The log of node `name` started under `root` (empty if there is none yet).
pub fn node_log(root: &Path, name: &str) -> String {
    std::fs::read_to_string(root.join(format!("node-{name}.log"))).unwrap_or_default()
}

fn log_file(root: &Path, name: &str) -> Stdio {
    std::fs::File::create(root.join(format!("{name}.log"))).unwrap().into()
}

pub struct Node {
    pub proc: Proc,
    pub control: PathBuf,
    pub dir: PathBuf,
    pub name: String,
}

/// Start a node; `extra` are more flags (e.g. --auto-answer, --output).
pub fn start_node(root: &Path, name: &str, seeds: &[SocketAddr], extra: &[&str]) -> Node {
    start_node_in(root, name, &root.join(format!("{name}-data")), seeds, extra)
}

pub fn start_node_in(root: &Path, name: &str, dir: &Path, seeds: &[SocketAddr], extra: &[&str]) -> Node {
    start_node_bin(BIN, root, name, dir, seeds, extra)
}

/// Start a node of another build of `supervox` (a bench's anchor).
pub fn start_node_bin(bin: &str, root: &Path, name: &str, dir: &Path, seeds: &[SocketAddr], extra: &[&str]) -> Node {
    let control = dir.join("control.sock");
    let mut cmd = Command::new(bin);
    cmd.args(["node", "--name", name, "--media", "127.0.0.1:0", "--data-dir"]).arg(dir).arg("--control").arg(&control);
    for s in seeds {
        cmd.args(["--seed", &s.to_string()]);
    }
    cmd.args(extra);
    let child = cmd.stdout(Stdio::null()).stderr(log_file(root, &format!("node-{name}"))).spawn().unwrap();
    Node { proc: Proc { child, name: name.into() }, control, dir: dir.to_path_buf(), name: name.into() }
}

impl Node {
    /// Stop the node cleanly (SIGTERM: it signs out), and wait for it.
    pub fn stop(mut self) {
        // SAFETY: kill(2) on our own child's pid has no memory effects.
        unsafe { libc::kill(self.proc.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.proc.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

pub fn ctl(control: &Path, args: &[&str]) -> Output {
    Command::new(BIN).arg("ctl").arg("--control").arg(control).args(args).output().unwrap()
}

pub fn status(node: &Node) -> Option<Value> {
    let out = ctl(&node.control, &["status", "--json"]);
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// Wait until the node is signed in; returns its supernode address.
pub fn wait_signed_in(node: &Node, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        if let Some(sn) = status(node).and_then(|s| s["supernode"].as_str().map(String::from)) {
            return sn;
        }
        assert!(Instant::now() < deadline, "{} not signed in within {within:?}", node.name);
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Run `ctl call` and parse its JSON lines.
pub fn call(from: &Node, to: &str, extra: &[&str]) -> (bool, Vec<Value>) {
    let mut args = vec!["call", to, "--json"];
    args.extend_from_slice(extra);
    let out = ctl(&from.control, &args);
    let events = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect();
    (out.status.success(), events)
}

pub fn event<'a>(events: &'a [Value], name: &str) -> Option<&'a Value> {
    events.iter().find(|e| e["event"] == name)
}

/// Read a mono 16-bit WAV written by the node.
pub fn read_wav(path: &Path) -> Vec<i16> {
    let mut r = hound::WavReader::open(path).unwrap();
    assert_eq!(r.spec().sample_rate, 48_000);
    r.samples::<i16>().map(|s| s.unwrap()).collect()
}

/// Fetch a supernode's metrics page and return one gauge's value.
pub fn metric(addr: SocketAddr, name: &str) -> u64 {
    metric_opt(addr, name).unwrap_or_else(|| panic!("no metric {name} at {addr}"))
}

/// A supernode metric, or None while the endpoint is not up or has not published yet.
pub fn metric_opt(addr: SocketAddr, name: &str) -> Option<u64> {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(addr).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    let key = format!("supervox_{name} ");
    body.lines().find_map(|l| l.strip_prefix(&key))?.trim().parse().ok()
}

/// What a process has cost so far, from `/proc`: context switches summed
/// over all its threads (each one a wakeup of a thread that slept or was
/// preempted) and user+system CPU in clock ticks (USER_HZ = 100).
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcCost {
    pub switches: u64,
    pub cpu_ticks: u64,
}

impl ProcCost {
    pub fn of(pid: u32) -> ProcCost {
        let mut switches = 0;
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
            for t in tasks.flatten() {
                let status = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
                for l in status.lines() {
                    if let Some(v) = l
                        .strip_prefix("voluntary_ctxt_switches:")
                        .or_else(|| l.strip_prefix("nonvoluntary_ctxt_switches:"))
                    {
                        switches += v.trim().parse::<u64>().unwrap_or(0);
                    }
                }
            }
        }
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Fields after the command name (which may hold spaces) start after ')';
        // utime and stime are the 12th and 13th of those.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<&str> = rest.split_whitespace().collect();
        let tick = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        ProcCost { switches, cpu_ticks: tick(11) + tick(12) }
    }

    /// (wakeups per second, % of one core) from `self` to `later` over `secs`.
    pub fn rate(&self, later: &ProcCost, secs: f64) -> (f64, f64) {
        let w = later.switches.saturating_sub(self.switches) as f64 / secs;
        let cpu = later.cpu_ticks.saturating_sub(self.cpu_ticks) as f64 / 100.0 / secs * 100.0;
        (w, cpu)
    }
}

/// Run `ctl ARGS` and parse its JSON lines: (exit ok, lines).
pub fn ctl_json(node: &Node, args: &[&str]) -> (bool, Vec<Value>) {
    let out = ctl(&node.control, args);
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect();
    (out.status.success(), lines)
}

/// Poll `f` until it returns `Some`, or panic with `what` after `within`.
#[track_caller]
pub fn wait_for<T>(within: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A `ctl events --json` stream of a node, read on a thread.
pub struct Events {
    _proc: Proc,
    rx: std::sync::mpsc::Receiver<(Instant, Value)>,
}

impl Events {
    /// Subscribe (returns once the node confirmed the subscription).
    pub fn of(node: &Node) -> Events {
        use std::io::BufRead;
        let mut child = Command::new(BIN)
            .arg("ctl")
            .arg("--control")
            .arg(&node.control)
            .args(["events", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&l) {
                    if tx.send((Instant::now(), v)).is_err() {
                        return;
                    }
                }
            }
        });
        let ev = Events { _proc: Proc { child, name: format!("events-{}", node.name) }, rx };
        ev.wait(Duration::from_secs(5), |v| v["event"] == "subscribed");
        ev
    }

    /// The next event matching `f` within `within` (others are skipped), with when it arrived.
    #[track_caller]
    pub fn wait(&self, within: Duration, f: impl Fn(&Value) -> bool) -> (Instant, Value) {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok((t, v)) if f(&v) => return (t, v),
                Ok(_) => {}
                Err(_) => panic!("no matching event within {within:?}"),
            }
        }
    }
}
