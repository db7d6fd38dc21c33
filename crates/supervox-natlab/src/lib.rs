//! The NAT lab: real `supervox` processes in Linux network namespaces, behind
//! routers that NAT and filter like the ones users sit behind.
//!
//! The topology is built with [patchbay](https://crates.io/crates/patchbay)
//! (namespaces, veth pairs and nftables rules; see `docs/DEPENDENCIES.md`):
//!
//! ```text
//!                        "internet" router (no NAT)
//!             sn1 IP1:7000 + IP1:443  sn2 IP2:7000 + IP2:443
//!                               |
//!             IX bridge (198.18.0.0/24) — every site router's uplink
//!        /        |         |          |            |            \
//!     public  full-cone   home   strict/cloud   cgnat → home   hotel / corporate
//!       |         |         |          |            |            |
//!     node      node      node       node         node         node
//! ```
//!
//! Both supernodes know each other, so a client's STUN probe has the second
//! supernode (on another IP) for RFC 5780 "change IP" answers. Both also
//! listen on TCP 443, the only port a [`Site::Corporate`] client may reach: it
//! signs in through `sn2`'s and asks `sn1`'s for the second opinion on a
//! lookup (PROTOCOL.md §3.6), as a network that publishes its seeds on 443
//! lets a client behind such a firewall do.
//!
//! The lab needs `nft` and `ip` and either real root or an unprivileged user
//! namespace: call [`enter_user_namespace`] before the process starts any
//! thread (a `#[ctor]` in the test binary). Nothing here skips: a lab that
//! cannot start is an error.
//!
//! The crate is test support: it returns `anyhow` errors rather than panicking, and
//! kills every process it started when the handles are dropped.

use anyhow::{anyhow, bail, Context, Result};
use patchbay::{Device, Firewall, IpSupport, Lab, Nat, Router, RouterPreset};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub use patchbay;

/// Every supernode's main TCP+UDP port.
pub const SN_PORT: u16 = 7000;
/// The extra port `sn2` listens on (TCP and UDP), for clients behind a corporate firewall.
pub const SN_WEB_PORT: u16 = 443;
/// Supernodes serve Prometheus metrics here (used to see they are linked).
const METRICS_PORT: u16 = 9100;

static USERNS: OnceLock<std::result::Result<(), String>> = OnceLock::new();

/// Moves this process into a fresh user namespace where it is root, so the lab
/// can make network namespaces without touching the host's. Must run before
/// any other thread exists: call it from a `#[ctor::ctor]` in the test binary.
/// The outcome is remembered; [`NatLab::start`] reports it if it failed.
pub fn enter_user_namespace() {
    USERNS.get_or_init(|| patchbay::init_userns().map_err(|e| format!("{e:#}")));
}

/// Where a client sits: the router (or routers) between it and the internet.
/// The patchbay names are those of patchbay 0.7.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Site {
    /// `RouterPreset::Public`: no NAT, no firewall; the node has a public address.
    Public,
    /// `Nat::Open`, no firewall: endpoint-independent mapping and filtering ("full cone").
    FullCone,
    /// `RouterPreset::Home` (`Nat::Moderate`): endpoint-independent mapping,
    /// address-and-port-dependent filtering, inbound blocked ("port-restricted cone").
    Home,
    /// `RouterPreset::Cloud` (`Nat::Strict`): a fresh random port per destination,
    /// address-and-port-dependent filtering ("symmetric").
    Strict,
    /// `RouterPreset::Home` behind `RouterPreset::IspCgnat` (both `Nat::Moderate`).
    HomeBehindCgnat,
    /// `RouterPreset::Hotel`: `Nat::Strict` and `Firewall::CaptivePortal`: UDP out
    /// blocked (but DNS), TCP out on any port.
    CaptivePortal,
    /// `RouterPreset::Home` (`Nat::Moderate`) with `Firewall::CaptivePortal`: a home
    /// NAT, UDP out blocked, TCP out on any port.
    HomeUdpBlocked,
    /// `RouterPreset::Corporate`: `Nat::Strict` and `Firewall::Corporate`: only
    /// TCP 80/443 (and UDP 53) out.
    Corporate,
}

impl Site {
    /// Every site, in the order of the issue's matrix.
    pub const ALL: [Site; 8] = [
        Site::Public,
        Site::FullCone,
        Site::Home,
        Site::Strict,
        Site::HomeBehindCgnat,
        Site::CaptivePortal,
        Site::HomeUdpBlocked,
        Site::Corporate,
    ];

    /// A short name, used for router names.
    pub fn label(self) -> &'static str {
        match self {
            Site::Public => "public",
            Site::FullCone => "fullcone",
            Site::Home => "home",
            Site::Strict => "strict",
            Site::HomeBehindCgnat => "cgnat-home",
            Site::CaptivePortal => "captive",
            Site::HomeUdpBlocked => "home-noudp",
            Site::Corporate => "corporate",
        }
    }
}

/// A built site: the router clients attach to (the innermost one).
#[derive(Clone, Debug)]
pub struct SiteRouter {
    /// Which site this is.
    pub site: Site,
    /// The router clients attach to.
    pub router: Router,
    /// For [`Site::HomeBehindCgnat`], the carrier's router above the home router.
    pub upstream: Option<Router>,
}

/// A child process, killed when dropped.
#[derive(Debug)]
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A supernode process in its own namespace on the internet router.
#[derive(Debug)]
pub struct LabSupernode {
    _proc: Proc,
    /// Its namespace.
    pub device: Device,
    /// Its main address (IP:[`SN_PORT`]).
    pub addr: SocketAddr,
    metrics: SocketAddr,
    /// Its stderr log.
    pub log: PathBuf,
}

/// The lab: a patchbay [`Lab`] with an internet router hosting two linked
/// supernodes. Sites and nodes are added with [`NatLab::site`] and [`NatLab::node`].
pub struct NatLab {
    // Field order is drop order: processes first, then the namespaces.
    sns: Vec<LabSupernode>,
    lab: Lab,
    rt: tokio::runtime::Runtime,
    internet: Router,
    bin: PathBuf,
    dir: tempfile::TempDir,
}

// patchbay's `Lab` is not Debug; the supernodes and the lab directory say which lab this is.
impl std::fmt::Debug for NatLab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatLab")
            .field("sns", &self.sns)
            .field("internet", &self.internet)
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

impl NatLab {
    /// Builds the lab and starts `sn1` and `sn2` (the `supervox` binary at `bin`),
    /// returning once each supernode has linked to the other.
    pub fn start(bin: &Path) -> Result<NatLab> {
        preflight()?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .context("tokio runtime for the lab")?;
        let mut builder = Lab::builder().label_from_thread();
        let in_userns = matches!(USERNS.get(), Some(Ok(())));
        if !in_userns {
            // Real root without a user namespace: patchbay still gives every
            // namespace worker a private mount namespace, so nothing leaks to the host.
            if !is_root() {
                let why = match USERNS.get() {
                    Some(Err(e)) => format!("entering a user namespace failed: {e}"),
                    _ => "enter_user_namespace() was not called before threads started".into(),
                };
                bail!("the NAT lab needs root or an unprivileged user namespace; {why}");
            }
            builder = builder.allow_real_root();
        }
        let lab = rt.block_on(builder.build()).context("patchbay lab (needs nft, ip, CAP_NET_ADMIN)")?;
        let ix = lab.ix();
        pin_bridge_macs("the IX", |c| ix.spawn_command_sync(c))?;
        let internet = rt
            .block_on(lab.add_router("internet").preset(RouterPreset::Public).ip_support(IpSupport::V4Only).build())
            .context("internet router")?;
        pin_bridge_macs("internet", |c| internet.spawn_command_sync(c))?;
        // SUPERVOX_NATLAB_KEEP=1 keeps the data dirs and logs for a look after the test.
        let keep = std::env::var_os("SUPERVOX_NATLAB_KEEP").is_some();
        let dir = tempfile::Builder::new().prefix("natlab").disable_cleanup(keep).tempdir()?;
        if keep {
            eprintln!("NAT lab files kept in {}", dir.path().display());
        }
        let mut this = NatLab { sns: Vec::new(), lab, rt, internet, bin: bin.to_path_buf(), dir };
        let sn1 = this.start_sn("sn1", &[SN_PORT, SN_WEB_PORT], None)?;
        let sn1_addr = this.sns[sn1].addr;
        let sn2 = this.start_sn("sn2", &[SN_PORT, SN_WEB_PORT], Some(sn1_addr))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        for i in [sn1, sn2] {
            while this.sn_metric(i, "supernode_peers").unwrap_or(0) < 1 {
                if Instant::now() > deadline {
                    bail!("supernodes did not link within 10 s; {}", this.sn_logs());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        // A supernode learns its STUN "change IP" peer on its next 250 ms tick.
        std::thread::sleep(Duration::from_millis(300));
        Ok(this)
    }

    /// The supernodes: `sn1` (index 0) and `sn2` (index 1).
    pub fn supernodes(&self) -> &[LabSupernode] {
        &self.sns
    }

    /// The patchbay lab, for anything this wrapper does not offer.
    pub fn lab(&self) -> &Lab {
        &self.lab
    }

    /// The lab's working directory (data dirs, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs one of patchbay's async builders to completion.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    fn start_sn(&mut self, name: &str, ports: &[u16], seed: Option<SocketAddr>) -> Result<usize> {
        let device = self
            .rt
            .block_on(self.lab.add_device(name).iface("eth0", self.internet.id()).build())
            .with_context(|| format!("device {name}"))?;
        let ip = device_ip(&device)?;
        let log = self.dir.path().join(format!("{name}.log"));
        let mut cmd = Command::new(&self.bin);
        cmd.arg("supernode");
        for p in ports {
            cmd.args(["--listen", &SocketAddr::new(ip.into(), *p).to_string()]);
        }
        let metrics = SocketAddr::new(ip.into(), METRICS_PORT);
        cmd.args(["--metrics", &metrics.to_string(), "--data-dir"]).arg(self.dir.path().join(name));
        if let Some(s) = seed {
            cmd.args(["--seed", &s.to_string()]);
        }
        let child = spawn_in(&device, cmd, &log)?;
        self.sns.push(LabSupernode {
            _proc: Proc(child),
            device,
            addr: SocketAddr::new(ip.into(), SN_PORT),
            metrics,
            log,
        });
        Ok(self.sns.len() - 1)
    }

    /// One gauge from a supernode's metrics page, fetched inside its namespace.
    pub fn sn_metric(&self, i: usize, name: &str) -> Result<u64> {
        let sn = &self.sns[i];
        let addr = sn.metrics;
        let body = sn
            .device
            .spawn_thread(move || {
                let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
                s.set_read_timeout(Some(Duration::from_secs(2)))?;
                s.write_all(b"GET /metrics HTTP/1.1\r\nHost: sn\r\nConnection: close\r\n\r\n")?;
                let mut body = String::new();
                s.read_to_string(&mut body)?;
                Ok(body)
            })?
            .join()
            .map_err(|_| anyhow!("metrics thread panicked"))??;
        let key = format!("supervox_{name} ");
        body.lines()
            .find_map(|l| l.strip_prefix(&key))
            .ok_or_else(|| anyhow!("no metric {name}"))?
            .trim()
            .parse()
            .context("metric value")
    }

    fn sn_logs(&self) -> String {
        self.sns.iter().map(|s| format!("\n--- {}:\n{}", s.log.display(), tail(&s.log))).collect()
    }

    /// Builds the router(s) of `site`, named after `name`.
    pub fn site(&self, name: &str, site: Site) -> Result<SiteRouter> {
        let r = |n: &str, p: Option<RouterPreset>, nat: Option<Nat>, up: Option<&Router>| {
            let mut b = self.lab.add_router(n);
            if let Some(p) = p {
                b = b.preset(p);
            }
            if site == Site::HomeUdpBlocked {
                b = b.firewall(Firewall::CaptivePortal);
            }
            if let Some(nat) = nat {
                b = b.nat(nat);
            }
            if let Some(up) = up {
                b = b.upstream(up.id());
            }
            // IPv4 only: the supernodes listen on IPv4, and no IPv6 set-up time.
            let router =
                self.rt.block_on(b.ip_support(IpSupport::V4Only).build()).with_context(|| format!("router {n}"))?;
            pin_bridge_macs(n, |c| router.spawn_command_sync(c))?;
            if !matches!(p, Some(RouterPreset::Public)) {
                stealth(n, &router)?;
            }
            anyhow::Ok(router)
        };
        let (router, upstream) = match site {
            Site::Public => (r(name, Some(RouterPreset::Public), None, None)?, None),
            Site::FullCone => (r(name, None, Some(Nat::Open), None)?, None),
            Site::Home => (r(name, Some(RouterPreset::Home), None, None)?, None),
            Site::Strict => (r(name, Some(RouterPreset::Cloud), None, None)?, None),
            Site::HomeBehindCgnat => {
                let isp = r(&format!("{name}-isp"), Some(RouterPreset::IspCgnat), None, None)?;
                (r(name, Some(RouterPreset::Home), None, Some(&isp))?, Some(isp))
            }
            Site::CaptivePortal => (r(name, Some(RouterPreset::Hotel), None, None)?, None),
            Site::HomeUdpBlocked => (r(name, Some(RouterPreset::Home), None, None)?, None),
            Site::Corporate => (r(name, Some(RouterPreset::Corporate), None, None)?, None),
        };
        Ok(SiteRouter { site, router, upstream })
    }

    /// The supernode address a client at `site` is given as its seed: `sn1`,
    /// or `sn2`'s port 443 from behind a corporate firewall.
    pub fn seed_for(&self, site: Site) -> SocketAddr {
        match site {
            Site::Corporate => SocketAddr::new(self.sns[1].addr.ip(), SN_WEB_PORT),
            _ => self.sns[0].addr,
        }
    }

    /// All the seeds a client at `site` is given: [`NatLab::seed_for`] first,
    /// and behind a corporate firewall `sn1`'s port 443 too (the supernodes'
    /// advertised port is closed to it, so it learns no other reachable one).
    pub fn seeds_for(&self, site: Site) -> Vec<SocketAddr> {
        let mut v = vec![self.seed_for(site)];
        if site == Site::Corporate {
            v.push(SocketAddr::new(self.sns[0].addr.ip(), SN_WEB_PORT));
        }
        v
    }

    /// Starts `supervox node --name NAME` in a new device behind `site`, with
    /// `extra` flags (e.g. `--auto-answer`).
    pub fn node(&self, name: &str, site: &SiteRouter, extra: &[&str]) -> Result<LabNode> {
        let device = self
            .rt
            .block_on(self.lab.add_device(name).iface("eth0", site.router.id()).build())
            .with_context(|| format!("device {name}"))?;
        let data = self.dir.path().join(format!("{name}-data"));
        std::fs::create_dir_all(&data)?;
        let control = data.join("control.sock");
        let log = self.dir.path().join(format!("node-{name}.log"));
        let mut cmd = Command::new(&self.bin);
        cmd.arg("node").args(["--name", name]);
        for s in self.seeds_for(site.site) {
            cmd.args(["--seed", &s.to_string()]);
        }
        cmd.arg("--data-dir").arg(&data).arg("--control").arg(&control).args(extra);
        let child = spawn_in(&device, cmd, &log)?;
        Ok(LabNode {
            proc: Proc(child),
            name: name.to_string(),
            site: site.site,
            device,
            control,
            log,
            bin: self.bin.clone(),
        })
    }
}

/// A `supervox node` process in its own namespace behind a site router.
#[derive(Debug)]
pub struct LabNode {
    proc: Proc,
    /// Its name on the network.
    pub name: String,
    /// Where it sits.
    pub site: Site,
    /// Its namespace.
    pub device: Device,
    /// Its control socket (a file: `ctl` reaches it from outside the namespace).
    pub control: PathBuf,
    /// Its stderr log.
    pub log: PathBuf,
    bin: PathBuf,
}

impl LabNode {
    /// Runs `supervox ctl --control SOCKET ARGS…` (outside the namespaces: the
    /// control socket is a Unix socket in the file system).
    pub fn ctl(&self, args: &[&str]) -> Result<Output> {
        Command::new(&self.bin).arg("ctl").arg("--control").arg(&self.control).args(args).output().context("run ctl")
    }

    /// `ctl status --json`, if the node answers.
    pub fn status(&self) -> Option<Value> {
        let out = self.ctl(&["status", "--json"]).ok()?;
        out.status.success().then(|| serde_json::from_slice(&out.stdout).ok()).flatten()
    }

    /// Waits until the node is signed in; returns its supernode's address.
    pub fn wait_signed_in(&mut self, within: Duration) -> Result<String> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(sn) = self.status().and_then(|s| s["supernode"].as_str().map(String::from)) {
                return Ok(sn);
            }
            self.check_alive()?;
            if Instant::now() > deadline {
                bail!("{} ({:?}) not signed in within {within:?}\n{}", self.name, self.site, self.log_tail());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the node's NAT probe has finished; returns `reachability`.
    pub fn wait_reachability(&mut self, within: Duration) -> Result<Value> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(r) = self.status().map(|s| s["reachability"].clone()).filter(|r| r["udp"].is_boolean()) {
                return Ok(r);
            }
            self.check_alive()?;
            if Instant::now() > deadline {
                bail!("{} ({:?}): no reachability within {within:?}\n{}", self.name, self.site, self.log_tail());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `ctl call TO --json EXTRA…`: whether it exited 0, and its JSON events.
    pub fn call(&self, to: &str, extra: &[&str]) -> Result<(bool, Vec<Value>)> {
        let mut args = vec!["call", to, "--json"];
        args.extend_from_slice(extra);
        let out = self.ctl(&args)?;
        let events = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).with_context(|| format!("bad JSON line {l:?}")))
            .collect::<Result<Vec<Value>>>()?;
        Ok((out.status.success(), events))
    }

    /// The last lines of the node's log.
    pub fn log_tail(&self) -> String {
        format!("--- {}:\n{}", self.log.display(), tail(&self.log))
    }

    fn check_alive(&mut self) -> Result<()> {
        if let Some(st) = self.proc.0.try_wait()? {
            bail!("{} exited: {st}\n{}", self.name, self.log_tail());
        }
        Ok(())
    }
}

/// The first JSON event named `name`.
pub fn event<'a>(events: &'a [Value], name: &str) -> Option<&'a Value> {
    events.iter().find(|e| e["event"] == name)
}

/// Gives every bridge in a namespace a fixed MAC address (its current one).
///
/// A Linux bridge without an address of its own takes the lowest MAC of its
/// ports, so each router or device patchbay (0.7) plugs into a switch can
/// change the MAC behind the switch's gateway IP. Everyone who resolved the
/// gateway before then keeps sending to the old MAC, and their packets are
/// dropped until the ARP entry goes stale (tens of seconds): in the lab this
/// silently ate STUN probes of clients started while later routers were built.
/// An address set explicitly stays put.
fn pin_bridge_macs(what: &str, run: impl Fn(Command) -> Result<Child>) -> Result<()> {
    let mut list = Command::new("ip");
    list.args(["-o", "link", "show", "type", "bridge"]).stdout(Stdio::piped()).stderr(Stdio::piped());
    let out = run(list)?.wait_with_output()?;
    if !out.status.success() {
        bail!("{what}: ip link show: {}", String::from_utf8_lossy(&out.stderr));
    }
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // "7: br-lan: <BROADCAST,…> mtu 1500 … \    link/ether 6a:81:f0:06:bc:17 brd ff:ff:ff:ff:ff:ff"
        let name = line.split(": ").nth(1).map(|n| n.split('@').next().unwrap_or(n));
        let mac = line.split_whitespace().skip_while(|w| *w != "link/ether").nth(1);
        let (Some(name), Some(mac)) = (name, mac) else { bail!("{what}: cannot parse {line:?}") };
        let mut set = Command::new("ip");
        set.args(["link", "set", "dev", name, "address", mac]).stdout(Stdio::null()).stderr(Stdio::piped());
        let out = run(set)?.wait_with_output()?;
        if !out.status.success() {
            bail!("{what}: pin MAC of {name}: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    Ok(())
}

/// Make a NAT router drop connection attempts to its own WAN address instead of
/// answering them with a reset, as home and office routers commonly do
/// ("stealth"). patchbay's routers filter only what they forward, so their own
/// TCP stack resets an unsolicited SYN and conntrack keeps a closing entry for
/// the pair of addresses for 10 s — which would also move the router's next
/// outgoing connection to that peer to another port and defeat TCP
/// simultaneous open.
fn stealth(what: &str, router: &Router) -> Result<()> {
    let Some(wan) = router.uplink_ip() else { return Ok(()) };
    let rule = format!("ip daddr {wan} tcp flags & (syn | ack) == syn drop");
    for args in [
        vec!["add", "table", "ip", "supervox_stealth"],
        vec![
            "add",
            "chain",
            "ip",
            "supervox_stealth",
            "input",
            "{ type filter hook input priority -10 ; policy accept ; }",
        ],
        vec!["add", "rule", "ip", "supervox_stealth", "input", rule.as_str()],
    ] {
        let mut cmd = Command::new("nft");
        cmd.args(&args).stdout(Stdio::null()).stderr(Stdio::piped());
        let out = router.spawn_command_sync(cmd)?.wait_with_output()?;
        if !out.status.success() {
            bail!("{what}: nft {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
        }
    }
    Ok(())
}

fn device_ip(d: &Device) -> Result<Ipv4Addr> {
    d.ip().ok_or_else(|| anyhow!("device {} has no IPv4 address", d.name()))
}

/// Spawns `cmd` inside `device`'s network namespace, stderr to `log`.
fn spawn_in(device: &Device, mut cmd: Command, log: &Path) -> Result<Child> {
    let log = std::fs::File::create(log).with_context(|| format!("create {}", log.display()))?;
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
    device.spawn_command_sync(cmd).with_context(|| format!("spawn in {}", device.name()))
}

fn tail(path: &Path) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Uid:")).map(|u| u.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}

/// The lab's tools must be there: a missing one is an error, not a skip.
fn preflight() -> Result<()> {
    for (tool, flag) in [("nft", "--version"), ("ip", "-V")] {
        let ok = Command::new(tool).arg(flag).stdout(Stdio::null()).stderr(Stdio::null()).status();
        if !ok.is_ok_and(|s| s.success()) {
            bail!("the NAT lab needs `{tool}` (Debian: apt-get install nftables iproute2; scripts/setup does it)");
        }
    }
    Ok(())
}
