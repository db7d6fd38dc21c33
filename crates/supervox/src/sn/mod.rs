//! The supernode daemon: TCP listeners, the link actor, the UDP plane
//! (STUN and TURN), TURN over TLS listeners, persistence ([`db`]), metrics.

pub mod db;
mod tls;
mod udp;

use crate::links::{now_ms, LinkSet, NetEvent};
use crate::store::DataDir;
use anyhow::{Context, Result};
use std::net::SocketAddr;
use std::time::Duration;
use supervox_core::link::LinkEvent;
use supervox_core::overlay::admission;
use supervox_core::overlay::wire::NetworkKey;
use supervox_core::supernode::{SnOutput, StepBackConfig, Supernode, SupernodeConfig};
use supervox_core::ConnId;
use supervox_turn::TurnConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

/// Queued UDP events handled in one round of the actor, after the first
/// (their outputs are sent, and their changes committed, together).
const UDP_EVENTS_PER_ROUND: usize = 63;

/// Lifetime of the TURN credentials handed to signed-in clients.
const RELAY_CREDENTIAL_TTL_S: u64 = 3_600;

/// Supernode settings from the command line.
#[derive(Debug, Clone)]
pub struct SnOptions {
    /// Listen addresses (TCP; the first is advertised unless `advertise`).
    pub listen: Vec<SocketAddr>,
    /// Supernodes to join.
    pub seeds: Vec<SocketAddr>,
    /// Where the identity and the database (claims, mailboxes) live.
    pub data_dir: std::path::PathBuf,
    /// Address to advertise, if not the first listen address.
    pub advertise: Option<SocketAddr>,
    /// Clients served before redirecting.
    pub max_clients: usize,
    /// TCP connections held at most (clients and handshakes; TURN streams
    /// have their own limit); further accepts are dropped.
    pub max_connections: usize,
    /// TCP connections held at most from one host (IPv4 address or IPv6 /64; loopback
    /// is not limited).
    pub max_connections_per_host: usize,
    /// Where to serve Prometheus metrics, if anywhere.
    pub metrics: Option<SocketAddr>,
    /// Bandwidth each relay allocation may use, kbit/s (0: unlimited).
    pub relay_kbps: u32,
    /// Relay allocations this supernode serves at most.
    pub max_allocations: usize,
    /// Shared secret for TURN credentials (TURN REST API style); random if unset.
    pub relay_secret: Option<String>,
    /// Relay to loopback peers (tests on one machine only).
    pub relay_allow_loopback: bool,
    /// Let TURN relay to private (RFC 1918), CGNAT (100.64/10) and unique-local (fc00::/7)
    /// peers: for a network inside one organisation's address space.
    pub relay_allow_private: bool,
    /// Where to serve TURN over TLS (e.g. port 443); none: no TLS.
    pub relay_tls_listen: Vec<SocketAddr>,
    /// PEM certificate chain and key for TLS, instead of the self-signed pair kept in `data_dir`.
    pub relay_tls_files: Option<(std::path::PathBuf, std::path::PathBuf)>,
    /// The overlay's network key (only its holders are members); the open
    /// test network's key if unset.
    pub network_key: Option<[u8; 32]>,
    /// A promoted node's supernode steps back on these terms (`None`: never).
    pub step_back: Option<StepBackConfig>,
    /// Leading zero bits of every member's proof of work (a network
    /// parameter: every member of one network must use the same).
    pub member_difficulty: u8,
    /// Live members admitted per IPv4 /24 or IPv6 /48 (loopback exempt).
    pub max_members_per_prefix: usize,
}

/// The file beside the identity that keeps this supernode's member proof:
/// `supervox-member-proof-v1 NETWORK-ID-HEX DIFFICULTY NONCE`.
pub const MEMBER_PROOF_FILE: &str = "member-proof";

/// The stored nonce, if the file holds one for this network (a missing or
/// damaged file is no error: the proof is solved again).
fn read_member_proof(path: &std::path::Path, network: &[u8; 32]) -> Option<u32> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut f = text.split_whitespace();
    if f.next()? != "supervox-member-proof-v1" || f.next()? != hex::encode(network) {
        return None;
    }
    let _difficulty: u8 = f.next()?.parse().ok()?;
    f.next()?.parse().ok()
}

/// This supernode's member-proof nonce for `network` at `difficulty`: the
/// stored one if it still verifies, else solved off the event loop (about a
/// second at the default difficulty) and stored beside the identity.
async fn member_nonce(data: &DataDir, id: supervox_proto::UserId, network: [u8; 32], difficulty: u8) -> Result<u32> {
    let path = data.path(MEMBER_PROOF_FILE);
    if let Some(n) = read_member_proof(&path, &network) {
        if admission::verify(&network, &id, n, difficulty).is_some() {
            return Ok(n);
        }
        info!("stored member proof does not meet difficulty {difficulty}: solving again");
    }
    let started = std::time::Instant::now();
    let nonce = tokio::task::spawn_blocking(move || admission::solve(&network, &id, difficulty))
        .await
        .context("member proof solver")??;
    info!("member proof solved at difficulty {difficulty} in {:.2} s", started.elapsed().as_secs_f64());
    let tmp = data.path(&format!("{MEMBER_PROOF_FILE}.tmp"));
    let text = format!("supervox-member-proof-v1 {} {difficulty} {nonce}\n", hex::encode(network));
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(nonce)
}

/// A supernode whose listeners are bound; call [`BoundSupernode::run`].
#[derive(Debug)]
pub struct BoundSupernode {
    listeners: Vec<TcpListener>,
    /// STUN/TURN sockets on the same addresses as `listeners`.
    udp: Vec<std::net::UdpSocket>,
    /// TURN-over-TLS listeners.
    tls: Vec<TcpListener>,
    advertise: SocketAddr,
    opts: SnOptions,
}

impl BoundSupernode {
    /// Join the network with this key through these seeds when run (a
    /// promoted node learns both from the supernode that promoted it).
    pub fn joining(mut self, network_key: [u8; 32], seeds: Vec<SocketAddr>, difficulty: u8) -> Self {
        self.opts.network_key = Some(network_key);
        self.opts.seeds = seeds;
        self.opts.member_difficulty = difficulty;
        self
    }

    /// Bind every listen address (port 0 picks a free port).
    pub async fn bind(opts: SnOptions) -> Result<Self> {
        let mut listeners = Vec::new();
        for a in &opts.listen {
            listeners.push(TcpListener::bind(a).await.with_context(|| format!("cannot listen on {a}"))?);
        }
        let first = listeners.first().context("no --listen address given")?.local_addr()?;
        let advertise = opts.advertise.unwrap_or(first);
        if advertise.ip().is_unspecified() {
            anyhow::bail!(
                "listening on {first}: give --advertise IP:PORT so others know where to reach this supernode"
            );
        }
        // UDP on exactly the TCP ports (a `--listen IP:0` picked its TCP port already).
        let tcp_addrs = listeners.iter().map(|l| l.local_addr()).collect::<std::io::Result<Vec<_>>>()?;
        let udp = udp::bind_sockets(&tcp_addrs)?;
        let mut tls = Vec::new();
        for a in &opts.relay_tls_listen {
            tls.push(TcpListener::bind(a).await.with_context(|| format!("cannot listen for TURN over TLS on {a}"))?);
        }
        Ok(Self { listeners, udp, tls, advertise, opts })
    }

    /// Where clients reach the TURN-over-TLS listeners (as announced to them).
    pub fn relay_tls_addrs(&self) -> Vec<SocketAddr> {
        let first = self.listeners.first().and_then(|l| l.local_addr().ok()).map(|a| a.ip());
        let (Some(first), advertise) = (first, self.advertise) else { return Vec::new() };
        self.tls.iter().filter_map(|l| l.local_addr().ok()).map(|a| tls::public_addr(a, first, advertise)).collect()
    }

    /// This host's addresses as the relay must know them (advertised, listening, TLS;
    /// not the unspecified ones): relayed traffic may reach them only at relay ports.
    fn own_ips(&self) -> Vec<std::net::IpAddr> {
        let bound = self.listeners.iter().chain(&self.tls).filter_map(|l| l.local_addr().ok());
        let mut ips: Vec<_> =
            std::iter::once(self.advertise).chain(bound).map(|a| a.ip()).filter(|ip| !ip.is_unspecified()).collect();
        ips.sort_unstable();
        ips.dedup();
        ips
    }

    /// The address clients and peers use.
    pub fn advertise(&self) -> SocketAddr {
        self.advertise
    }

    /// Serve until `shutdown` becomes true (`Ok(None)`), or until this
    /// supernode steps back (`Ok(Some(reason))`, see [`StepBackConfig`]): its
    /// clients are redirected, its leave gossiped, its ports released.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) -> Result<Option<String>> {
        let data = DataDir::open(&self.opts.data_dir)?;
        let identity = data.identity()?;
        let mut db = db::SnDb::open(&data.path(db::SN_DB_FILE))?;
        import_claims_json(&data, &mut db)?;
        let claims = db.claims()?;
        let (mail, tombstones) = (db.mail_items()?, db.tombstones()?);
        info!(
            "supernode {} at {} ({} stored claims, {} mail items); pinned seed for clients: --seed {}@{}",
            identity.fingerprint(),
            self.advertise,
            claims.len(),
            mail.len(),
            identity.user_id(),
            self.advertise
        );
        let network_key = match self.opts.network_key {
            Some(k) => NetworkKey::new(k),
            None => {
                warn!("no --network-key: joining the open test network, where anyone may run a supernode");
                NetworkKey::open_network()
            }
        };
        let difficulty = self.opts.member_difficulty;
        if difficulty > admission::MAX_DIFFICULTY {
            anyhow::bail!("member difficulty {difficulty} is above the maximum {}", admission::MAX_DIFFICULTY);
        }
        let nonce = member_nonce(&data, identity.user_id(), network_key.bytes(), difficulty).await?;
        let cfg = SupernodeConfig {
            max_clients: self.opts.max_clients,
            agent: concat!("supervox/", env!("CARGO_PKG_VERSION")).into(),
            network_key,
            member_difficulty: difficulty,
            member_nonce: Some(nonce),
            max_members_per_prefix: self.opts.max_members_per_prefix,
            step_back: self.opts.step_back,
            ..SupernodeConfig::new(self.advertise, self.opts.seeds.clone())
        };
        let mut sn = Supernode::new(&identity, cfg, claims, rand::random(), now_ms());
        sn.restore_mail(mail, tombstones, now_ms());
        let secret = match &self.opts.relay_secret {
            Some(s) => s.as_bytes().to_vec(),
            None => rand::random::<[u8; 32]>().to_vec(),
        };
        sn.enable_relay_credentials(secret.clone(), RELAY_CREDENTIAL_TTL_S);
        let mut turn = TurnConfig::new("supervox", secret);
        turn.relay_kbps = self.opts.relay_kbps;
        turn.max_allocations = self.opts.max_allocations;
        turn.peers = supervox_turn::PeerPolicy {
            allow_loopback: self.opts.relay_allow_loopback,
            allow_private: self.opts.relay_allow_private,
        };
        turn.own_ips = self.own_ips();
        turn.software = Some(concat!("supervox/", env!("CARGO_PKG_VERSION")).into());
        let relay_tls = if self.tls.is_empty() {
            None
        } else {
            let cert = match &self.opts.relay_tls_files {
                Some((c, k)) => crate::tls::RelayCert::load(c, k)?,
                None => crate::tls::RelayCert::load_or_create(&self.opts.data_dir)?,
            };
            let relays = self.relay_tls_addrs();
            info!(
                "TURN over TLS on {} (certificate sha256 {})",
                relays.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", "),
                crate::tls::format_fingerprint(&cert.fingerprint)
            );
            sn.enable_relay_tls(supervox_proto::RelayTls { fingerprint: cert.fingerprint, relays });
            Some(tokio_rustls::TlsAcceptor::from(cert.server_config()?))
        };
        let (mut udp, mut udp_rx) = udp::UdpPlane::bind(self.udp, self.advertise, turn)?;
        if let Some(acceptor) = relay_tls {
            for l in self.tls {
                tls::spawn_listener(l, acceptor.clone(), udp.tcp_events());
            }
        }
        let (ev_tx, mut ev_rx) = mpsc::channel(4096);
        let mut links = LinkSet::new(identity, ev_tx);
        let ready = links.ready();
        let (acc_tx, mut acc_rx) = mpsc::channel::<(TcpStream, SocketAddr)>(256);
        // Aborted when we stop, so the ports are free again (a node that
        // stepped back binds them again for a later promotion).
        let mut accept_tasks = Vec::new();
        let sniffing = Sniffing::default();
        for l in self.listeners {
            let tx = acc_tx.clone();
            let turn_events = udp.tcp_events();
            let sniffing = sniffing.clone();
            accept_tasks.push(tokio::spawn(async move {
                loop {
                    match l.accept().await {
                        Ok((stream, remote)) => {
                            if tx.is_closed() {
                                return;
                            }
                            // A host that opens connections and stays silent holds a task
                            // for 2 s each: only a few at a time per host.
                            let Some(guard) = sniffing.enter(remote.ip()) else {
                                debug!("too many silent connections from the host of {remote}: dropped");
                                continue;
                            };
                            // TURN over TCP and our links share the port: look at the first bytes.
                            let (tx, turn_events) = (tx.clone(), turn_events.clone());
                            tokio::spawn(async move {
                                let turn = sniff_turn(&stream).await;
                                drop(guard);
                                if turn {
                                    udp::spawn_tcp_client(stream, remote, turn_events);
                                } else {
                                    let _ = tx.send((stream, remote)).await;
                                }
                            });
                        }
                        // e.g. EMFILE: pause instead of spinning.
                        Err(e) => {
                            warn!("accept failed: {e}");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            }));
        }
        let (metrics_tx, mut metrics_rx) = mpsc::channel::<crate::metrics::SnapshotRequest>(8);
        if let Some(addr) = self.opts.metrics {
            let at = crate::metrics::serve(addr, metrics_tx).await?;
            info!("metrics on http://{at}/metrics");
        }
        // Answers to promotion reachability checks: (conn, address, reachable).
        let (reach_tx, mut reach_rx) = mpsc::channel::<(ConnId, SocketAddr, bool)>(64);
        let mut link_errors: u64 = 0;
        let mut per_host_refused: u64 = 0;
        // The core's changes (claims, mail) not yet committed.
        let mut unsaved = db::Pending::default();
        // A commit that failed: we stop rather than acknowledge what is not stored.
        let mut db_failed = None;
        let mut stepped_back = None;
        while stepped_back.is_none() && db_failed.is_none() {
            // One timer: the earliest of the supernode's deadlines and the links' keepalive sweep.
            let deadline = supervox_core::timer::earliest([sn.poll_timeout(), links.poll_timeout()]);
            tokio::select! {
                _ = shutdown.changed() => break,
                Some((stream, remote)) = acc_rx.recv() => {
                    if links.len() >= self.opts.max_connections {
                        warn!("connection limit reached, refusing {remote}");
                        continue;
                    }
                    if !remote.ip().is_loopback() && links.from_host(remote.ip()) >= self.opts.max_connections_per_host {
                        debug!("{} connections from the host of {remote}: refused", self.opts.max_connections_per_host);
                        per_host_refused += 1;
                        continue;
                    }
                    match links.adopt(stream, false, sn.hello()) {
                        Ok(conn) => sn.on_connected(conn, remote),
                        Err(e) => warn!("cannot start link with {remote}: {e}"),
                    }
                }
                Some(ev) = ev_rx.recv() => on_net(&mut links, &mut sn, &mut link_errors, ev),
                _ = ready.wait() => {
                    for ev in links.poll_ready() {
                        on_net(&mut links, &mut sn, &mut link_errors, ev);
                    }
                }
                Some(ev) = udp_rx.recv() => {
                    udp.on_event(ev, &mut sn);
                    // What else has queued goes in the same round, so the
                    // changes it makes (a join's claim hand-off: 16 per
                    // datagram) share one commit (one fsync, ~4 ms: BENCHMARKS.md).
                    for _ in 0..UDP_EVENTS_PER_ROUND {
                        match udp_rx.try_recv() {
                            Some(ev) => udp.on_event(ev, &mut sn),
                            None => break,
                        }
                    }
                }
                Some((conn, addr, ok)) = reach_rx.recv() => sn.on_reachable(conn, addr, ok),
                Some(reply) = metrics_rx.recv() => {
                    let _ = reply.send(render_metrics(&sn, links.len(), (link_errors, per_host_refused), &udp));
                }
                _ = crate::links::sleep_until_ms(deadline) => {
                    let now = now_ms();
                    if sn.poll_timeout().is_some_and(|t| t <= now) {
                        sn.handle_timeout(now);
                    }
                    if links.poll_timeout().is_some_and(|t| t <= now) {
                        for (conn, reason) in links.tick() {
                            info!(conn, "link failed: {reason}");
                            sn.on_closed(conn, now_ms());
                        }
                    }
                }
            }
            while let Some(out) = sn.poll_output() {
                // Write-ahead: the changes queued so far are committed (one
                // transaction for the batch) before anything queued after
                // them leaves — an answer may acknowledge them.
                if !matches!(out, SnOutput::ClaimStored(_) | SnOutput::Mail(_)) {
                    if let Err(e) = db.commit(&mut unsaved) {
                        db_failed = Some(e);
                        break;
                    }
                }
                match out {
                    SnOutput::Send(conn, msg) => {
                        if let Err(e) = links.send(conn, &msg) {
                            warn!(conn, "send failed: {e}");
                            sn.on_closed(conn, now_ms());
                        }
                    }
                    SnOutput::Close(conn, reason) => {
                        links.close(conn, &reason);
                        sn.on_closed(conn, now_ms());
                    }
                    SnOutput::Datagram { to, bytes, .. } => udp.send_overlay(to, bytes),
                    SnOutput::CheckReachable { conn, addr } => {
                        let tx = reach_tx.clone();
                        tokio::spawn(async move {
                            let ok = matches!(
                                tokio::time::timeout(Duration::from_secs(3), TcpStream::connect(addr)).await,
                                Ok(Ok(_))
                            );
                            let _ = tx.send((conn, addr, ok)).await;
                        });
                    }
                    SnOutput::ClaimStored(claim) => unsaved.claim(claim),
                    SnOutput::Mail(change) => unsaved.mail(change),
                    SnOutput::StunDialBack { transaction_id, mapped, to, padding } => {
                        udp.dial_back(supervox_stun::DialBack { transaction_id, mapped, to, padding })
                    }
                    SnOutput::DialBackPartner(other) => udp.set_other(other),
                    SnOutput::SteppedBack { reason } => stepped_back = Some(reason),
                }
            }
            if db_failed.is_none() {
                if let Err(e) = db.commit(&mut unsaved) {
                    db_failed = Some(e);
                }
            }
        }
        for t in accept_tasks {
            t.abort();
        }
        // Dropping the plane stops its thread after it sent what is queued (the leave).
        drop(udp);
        if let Some(e) = db_failed {
            return Err(e.context("cannot write the supernode database: stopped rather than acknowledge what it lacks"));
        }
        match &stepped_back {
            Some(reason) => info!("supernode stepped back: {reason}"),
            None => info!("supernode stopped"),
        }
        Ok(stepped_back)
    }
}

/// A supernode from before the database kept its claims in `claims.json`:
/// imported in one transaction, then renamed `claims.json.migrated` (a crash
/// between the two imports it again, which changes nothing).
fn import_claims_json(data: &DataDir, db: &mut db::SnDb) -> Result<()> {
    let Some(claims) = data.legacy_claims()? else { return Ok(()) };
    db.import_claims(&claims)?;
    data.retire_legacy_claims()?;
    info!("imported {} claims from claims.json into {}", claims.len(), db::SN_DB_FILE);
    Ok(())
}

/// New connections per host whose first bytes are still awaited (shared by the accept
/// tasks of every listener).
#[derive(Debug, Clone, Default)]
struct Sniffing(std::sync::Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>);

/// One connection being sniffed; leaves its host's count when dropped.
#[derive(Debug)]
struct SniffGuard(Sniffing, std::net::IpAddr);

impl Sniffing {
    /// Count one more connection from the host of `ip`, unless it has
    /// [`crate::defaults::MAX_SNIFFING_PER_HOST`] already (loopback is not limited).
    fn enter(&self, ip: std::net::IpAddr) -> Option<SniffGuard> {
        let host = crate::defaults::host_key(ip);
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(host).or_default();
        if *n >= crate::defaults::MAX_SNIFFING_PER_HOST && !ip.is_loopback() {
            return None;
        }
        *n += 1;
        Some(SniffGuard(self.clone(), host))
    }
}

impl Drop for SniffGuard {
    fn drop(&mut self) {
        let mut m = (self.0).0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.1) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.1);
            }
        }
    }
}

/// Peek at a new connection's first bytes (a link's initiator speaks first,
/// as does a TURN client): true for TURN. A link frame starts with two zero
/// bytes (its u32 length is below 64 KiB), which no STUN message type has;
/// otherwise the magic cookie in bytes 4..8 decides. Silence or a short
/// first write is handed to the link, whose handshake then refuses it.
async fn sniff_turn(stream: &TcpStream) -> bool {
    let mut first = [0u8; 8];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        // (A timeout polls its future first: with bytes buffered, peek is always
        // ready, so the deadline is checked here.)
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        match tokio::time::timeout_at(deadline, stream.peek(&mut first)).await {
            Ok(Ok(n)) if n >= 2 && first[..2] == [0, 0] => return false,
            Ok(Ok(n)) if n >= 8 => return udp::is_turn_stream(&first),
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return false,
            // Fewer than 8 bytes so far: wait for more.
            Ok(Ok(_)) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

/// Bytes or a closed socket from a client connection.
fn on_net(links: &mut LinkSet, sn: &mut Supernode, link_errors: &mut u64, ev: NetEvent) {
    match ev {
        NetEvent::Bytes(conn, bytes) => match links.handle_bytes(conn, &bytes) {
            Ok(events) => {
                for e in events {
                    deliver(sn, conn, e)
                }
            }
            Err(e) => {
                *link_errors += 1;
                warn!(conn, "link closed: {e}");
                sn.on_closed(conn, now_ms());
            }
        },
        NetEvent::Closed(conn, reason) => {
            info!(conn, "connection closed: {reason}");
            links.close(conn, &reason);
            sn.on_closed(conn, now_ms());
        }
        // Supernodes do not dial: they talk in overlay datagrams.
        NetEvent::Dialed(..) => {}
    }
}

fn deliver(sn: &mut Supernode, conn: ConnId, e: LinkEvent) {
    match e {
        LinkEvent::Established { role, identity, .. } => sn.on_established(conn, role, identity, now_ms()),
        LinkEvent::Message(m) => sn.on_message(conn, m, now_ms()),
    }
}

/// `errors`: links closed for framing/Noise/decode errors, connections refused by the
/// per-host limit.
fn render_metrics(sn: &Supernode, connections: usize, errors: (u64, u64), udp: &udp::UdpPlane) -> String {
    let (link_errors, per_host_refused) = errors;
    let st = sn.stats();
    crate::metrics::render(&[
        ("clients", "Clients signed in.", sn.client_count() as u64),
        ("supernode_peers", "Other live supernodes in the membership.", sn.peer_addrs().len() as u64),
        (
            "overlay_refused_total",
            "Overlay datagrams refused (unauthenticated, replayed, malformed, strangers).",
            st.overlay_refused,
        ),
        (
            "overlay_amplification_refused_total",
            "Overlay answers not sent: larger than what came from an unvalidated address.",
            st.overlay_amplification_refused,
        ),
        ("handoffs_total", "Records handed to new holders.", st.handoffs),
        ("promotions_total", "Clients promoted to supernode.", st.promotions),
        ("connections", "Open TCP connections, including handshakes.", connections as u64),
        ("claims", "Name claims held.", sn.claim_count() as u64),
        ("claims_accepted_total", "Claims accepted from clients.", st.claims_accepted),
        ("claims_refused_total", "Claims refused.", st.claims_refused),
        ("presence_refused_total", "Presence records refused.", st.presence_refused),
        ("lookups_total", "Lookups from clients.", st.lookups),
        ("lookups_forwarded_total", "Lookups sent to holders (hedges included).", st.lookups_forwarded),
        ("signals_routed_total", "Call signals routed.", st.signals_routed),
        ("signals_failed_total", "Call signals not deliverable.", st.signals_failed),
        ("redirects_total", "Clients redirected because full.", st.redirects),
        ("violations_total", "Connections closed for protocol violations.", st.violations),
        ("rate_limited_total", "Client requests refused by the per-client rate limit.", st.rate_limited),
        ("answers_refused_total", "Overlay answers dropped: not from the member asked.", st.answers_refused),
        ("lookups_disputed_total", "Lookups answered unknown: the holders named different keys.", st.lookups_disputed),
        (
            "claims_rate_limited_total",
            "Claims sent renewal-only: the source was over its new-name budget.",
            st.claims_rate_limited,
        ),
        (
            "claims_renewed_unconfirmed_total",
            "Renewals accepted with the rest of the holders silent (no majority, no refusal).",
            st.claims_renewed_unconfirmed,
        ),
        (
            "members_refused_proof_total",
            "Supernodes not admitted to the member table: their proof of work did not verify.",
            st.members_refused_proof,
        ),
        (
            "members_refused_prefix_total",
            "Supernodes not admitted: their /24 (IPv4) or /48 (IPv6) had the most members already.",
            st.members_refused_prefix,
        ),
        ("link_errors_total", "Connections closed for framing, Noise or decode errors.", link_errors),
        ("connections_refused_per_host_total", "Connections refused by the per-host limit.", per_host_refused),
        ("relay_allocations", "TURN allocations.", udp.allocations() as u64),
        (
            "stun_answers_limited_total",
            "STUN Binding answers dropped by the per-prefix answer-rate limit.",
            udp.stun_answers_limited(),
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_member_proof_is_solved_once_kept_beside_the_identity_and_checked_when_read() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::open(dir.path()).unwrap();
        let id = data.identity().unwrap().user_id();
        let (net, other) = ([3u8; 32], [4u8; 32]);
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let n = rt.block_on(member_nonce(&data, id, net, 8)).unwrap();
        assert!(admission::verify(&net, &id, n, 8).is_some());
        let path = data.path(MEMBER_PROOF_FILE);
        assert_eq!(read_member_proof(&path, &net), Some(n));
        // Another network's id: not this file's proof.
        assert_eq!(read_member_proof(&path, &other), None);
        // Kept: the same nonce next time, without solving again.
        assert_eq!(rt.block_on(member_nonce(&data, id, net, 8)).unwrap(), n);
        // A damaged or forged file is solved again (and rewritten), never trusted.
        for junk in [
            "",
            "supervox-member-proof-v1",
            "garbage 1 2 3",
            &format!("supervox-member-proof-v1 {} 8 x", hex::encode(net)),
        ] {
            std::fs::write(&path, junk).unwrap();
            assert_eq!(read_member_proof(&path, &net), None, "{junk:?}");
        }
        let wrong = (0..).find(|k| admission::verify(&net, &id, *k, 8).is_none()).unwrap();
        std::fs::write(&path, format!("supervox-member-proof-v1 {} 8 {wrong}\n", hex::encode(net))).unwrap();
        assert_eq!(rt.block_on(member_nonce(&data, id, net, 8)).unwrap(), n);
        assert_eq!(read_member_proof(&path, &net), Some(n));
    }
}
