//! The client daemon: the supernode link, the media socket and clock, the
//! control socket. One actor task owns the [`Client`] state machine and all
//! call media; connection and control tasks only move bytes.

mod control_server;
pub mod media;
mod social;
mod spares;
mod tcp_media;

pub use tcp_media::take_frames;

use crate::control::Request;
use crate::links::{now_ms, LinkSet, NetEvent};
use crate::relay_stream::{self, RelayStreamEvent};
use crate::store::DataDir;
use anyhow::{bail, Result};
use media::{CallFigures, CallMedia};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;
use supervox_core::client::{Client, ClientConfig, ClientEvent, ClientOutput};
use supervox_core::identity::fingerprint;
use supervox_core::link::LinkEvent;
use supervox_core::media_path::MAX_DATAGRAM;
use supervox_core::reason::{CallEnd, CallFailure, Reason};
use supervox_media::sink::SinkSpec;
use supervox_media::source::SourceSpec;
use supervox_proto::CallId;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

pub use control_server::ControlMsg;

/// Node settings from the command line.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// Name to claim.
    pub name: String,
    /// Supernodes to start from (added to the host cache, with their keys
    /// pinned when given).
    pub seeds: Vec<supervox_core::host_cache::Seed>,
    /// Supernodes given by host name, resolved at every connection round.
    pub named_seeds: Vec<supervox_core::host_cache::NamedSeed>,
    /// Identity, host cache.
    pub data_dir: PathBuf,
    /// Control socket path.
    pub control: PathBuf,
    /// Answer calls automatically.
    pub auto_answer: bool,
    /// Default audio source.
    pub input: SourceSpec,
    /// Default audio sink.
    pub output: SinkSpec,
    /// UDP address for media (port 0: any).
    pub media_bind: SocketAddr,
    /// Jitter buffer and FEC settings.
    pub media: media::MediaConfig,
    /// Media through relays only.
    pub force_relay: bool,
    /// Offer every candidate to strangers at once (`--privacy relaxed`).
    pub relaxed_privacy: bool,
    /// A TURN server to use instead of the supernode's relay.
    pub external_relay: Option<supervox_core::client::ExternalRelay>,
    /// Reach the relay only this way (`None`: auto, UDP and TCP raced, TLS if TCP fails).
    pub relay_transport: Option<supervox_core::client::RelayTransport>,
    /// May become a supernode (`--supernode auto`).
    pub supernode: Option<PromotionOptions>,
    /// Send read receipts (`--read-receipts off` turns them off).
    pub read_receipts: bool,
    /// Refuse calls and messages from non-contacts (`--strangers refuse`).
    pub refuse_strangers: bool,
    /// Serve the web app and its API (`--ui`; `None`: `--ui off`).
    pub ui: Option<crate::ui::UiOptions>,
}

/// How a node may become a supernode.
#[derive(Debug, Clone)]
pub struct PromotionOptions {
    /// Where its supernode listens (TCP and UDP), bound at start so the
    /// promoting supernode can check it.
    pub listen: SocketAddr,
    /// Signed in at least this long before volunteering.
    pub after_ms: u64,
    /// Clients its supernode serves before redirecting.
    pub max_clients: usize,
    /// Once promoted, step back after this long not needed (`--step-back-after`).
    pub step_back_after_ms: u64,
}

/// Bind the listeners of the supernode this node would run if promoted.
async fn bind_standby(p: &PromotionOptions, data_dir: &std::path::Path) -> Result<crate::sn::BoundSupernode> {
    crate::sn::BoundSupernode::bind(crate::sn::SnOptions {
        listen: vec![p.listen],
        seeds: Vec::new(),
        data_dir: data_dir.join("supernode"),
        advertise: None,
        max_clients: p.max_clients,
        max_connections: crate::defaults::MAX_CONNECTIONS,
        max_connections_per_host: crate::defaults::MAX_CONNECTIONS_PER_HOST,
        metrics: None,
        relay_kbps: supervox_turn::defaults::RELAY_KBPS,
        max_allocations: supervox_turn::defaults::MAX_ALLOCATIONS,
        relay_secret: None,
        relay_allow_loopback: false,
        relay_allow_private: false,
        network_key: None,
        // Learnt from the promoting supernode (`BoundSupernode::joining`).
        member_difficulty: supervox_core::overlay::admission::DEFAULT_DIFFICULTY,
        max_members_per_prefix: supervox_core::overlay::admission::DEFAULT_MAX_MEMBERS_PER_PREFIX,
        relay_tls_listen: vec![],
        relay_tls_files: None,
        step_back: Some(supervox_core::supernode::StepBackConfig {
            after_ms: p.step_back_after_ms,
            ..Default::default()
        }),
    })
    .await
}

/// The promoted supernode stepped back: why, and its listeners bound again
/// for a later promotion (if that worked).
type SteppedBack = (String, Option<crate::sn::BoundSupernode>);

/// A named seed's resolution: host, port, and its addresses or why not.
type Resolved = (String, u16, Result<Vec<SocketAddr>, String>);

/// A seed name's lookup may take this long (then the round goes on without it).
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// A placed call's settings, and the `ctl call` waiting for its events
/// (none for a call placed from the web app, which follows the event stream).
struct Watcher {
    tx: Option<mpsc::Sender<String>>,
    duration_ms: Option<u64>,
    input: SourceSpec,
    output: SinkSpec,
}

struct ActiveMedia {
    media: CallMedia,
    end_at_ms: Option<u64>,
    /// Last measured round trip of the media path's checks.
    path_rtt_ms: Option<f64>,
    next_log_ms: u64,
    /// When the next `call_stats` event is due.
    next_stats_ms: u64,
    /// The path the call is on now (for `call_stats`).
    path: &'static str,
}

impl ActiveMedia {
    /// Round trip: receiver reports first, path checks as a fallback.
    fn rtt_ms(&self, f: &CallFigures) -> Option<f64> {
        f.rtt_ms.or(self.path_rtt_ms)
    }
}

/// Live call figures are logged this often.
const STATS_LOG_MS: u64 = 5_000;
/// A `call_stats` event goes to the event streams this often (the web app's live chart).
const STATS_EVENT_MS: u64 = 1_000;

/// The figures of a call as JSON fields (for `call_ended` and `status`).
fn figures_json(f: &CallFigures, rtt: Option<f64>, mos: Option<f64>) -> Value {
    json!({
        "frames_sent": f.frames_sent, "frames_received": f.frames_received,
        "loss_pct": round2(f.loss_pct), "loss_before_fec_pct": round2(f.loss_before_fec_pct),
        "loss_after_fec_pct": round2(f.loss_after_fec_pct), "jitter_ms": round2(f.jitter_ms),
        "rtt_ms": rtt.map(round2), "mos": mos.map(round2),
        "frames_concealed": f.frames_concealed, "frames_recovered_fec": f.frames_recovered_fec,
        "frames_recovered_redundancy": f.frames_recovered_redundancy, "redundancy": f.redundancy,
        "playout_delay_ms": round2(f.mean_playout_delay_ms), "target_delay_ms": round2(f.target_delay_ms),
        "fec_expected_loss_pct": f.fec_expected_loss_pct,
    })
}

/// The `call_failed` line: the reason's text and its stable code.
fn call_failed_json(reason: &CallFailure) -> Value {
    json!({"event": "call_failed", "reason": reason.to_string(), "code": reason.code(), "normal": false})
}

struct Node {
    opts: NodeOptions,
    client: Client,
    links: LinkSet,
    udp: UdpSocket,
    data: DataDir,
    /// The database: pinned peer keys.
    db: crate::db::Db,
    watchers: HashMap<CallId, Watcher>,
    media: HashMap<CallId, ActiveMedia>,
    fatal: Option<String>,
    /// The TURN-over-TCP (or -TLS) stream to our relay (when UDP is blocked), and its generation.
    relay_stream: Option<(u64, mpsc::Sender<Vec<u8>>)>,
    relay_generation: u64,
    relay_events: mpsc::Sender<RelayStreamEvent>,
    /// The supernode this node would run if promoted (listeners bound).
    standby: Option<crate::sn::BoundSupernode>,
    shutdown: watch::Receiver<bool>,
    /// Port prediction's spare sockets.
    spares: spares::Spares,
    /// TCP media streams and their listener.
    tcp: tcp_media::TcpMedia,
    /// Where the promoted supernode's task reports that it stepped back.
    stepped_back: mpsc::Sender<SteppedBack>,
    /// Where the resolutions of named seeds report.
    resolved: mpsc::Sender<Resolved>,
    /// Contacts, presence, chat, missed calls (sans-IO).
    social: supervox_core::social::Social,
    /// The node's side of it: event streams, waiting sends, call history.
    glue: social::SocialGlue,
    /// The web app's server (login codes), when it runs.
    ui: Option<crate::ui::UiHandle>,
}

/// Run the node daemon until `shutdown` or a fatal error (e.g. the name is
/// taken by another key).
pub async fn run(opts: NodeOptions, mut shutdown: watch::Receiver<bool>) -> Result<()> {
    let data = DataDir::open(&opts.data_dir)?;
    let identity = data.identity()?;
    let db = crate::db::Db::open(&data.path(crate::db::DB_FILE))?;
    let pins = db.pins()?;
    let mut host_cache = data.host_cache();
    for s in opts.seeds.iter().rev() {
        host_cache.add_seed(s);
    }
    if host_cache.is_empty() && opts.named_seeds.is_empty() {
        bail!("no supernode to connect to: give --seed IP:PORT or HOST:PORT");
    }
    let udp = UdpSocket::bind(opts.media_bind).await?;
    let (ctl_tx, mut ctl_rx) = mpsc::channel::<ControlMsg>(64);
    control_server::listen(&opts.control, ctl_tx.clone())?;
    let ui = match &opts.ui {
        Some(u) => {
            let me = crate::ui::Me { name: opts.name.clone(), fingerprint: identity.fingerprint() };
            Some(crate::ui::start(u, &opts.data_dir, me, ctl_tx, shutdown.clone()).await?)
        }
        None => None,
    };
    info!(
        "node {:?} user {} media {} control {}",
        opts.name,
        identity.fingerprint(),
        udp.local_addr()?,
        opts.control.display()
    );
    let standby = match &opts.supernode {
        Some(p) => {
            let sn = bind_standby(p, &opts.data_dir).await?;
            info!("may become a supernode at {}", sn.advertise());
            Some(sn)
        }
        None => None,
    };
    let volunteer = match (&opts.supernode, &standby) {
        (Some(p), Some(sn)) => {
            Some(supervox_core::client::VolunteerConfig { advertise: sn.advertise(), after_ms: p.after_ms })
        }
        _ => None,
    };
    let cfg = ClientConfig {
        volunteer,
        name: opts.name.clone(),
        auto_answer: opts.auto_answer,
        agent: concat!("supervox/", env!("CARGO_PKG_VERSION")).into(),
        force_relay: opts.force_relay,
        relaxed_privacy: opts.relaxed_privacy,
        external_relay: opts.external_relay.clone(),
        relay_transport: opts.relay_transport,
        refuse_strangers: opts.refuse_strangers,
    };
    let social_cfg = supervox_core::social::SocialConfig {
        read_receipts: opts.read_receipts,
        refuse_strangers: opts.refuse_strangers,
    };
    let mut social_layer = supervox_core::social::Social::new(identity.clone(), &opts.name, social_cfg, rand::random());
    social::restore(&mut social_layer, &db)?;
    let (ev_tx, mut ev_rx) = mpsc::channel(1024);
    let links = LinkSet::new(identity.clone(), ev_tx);
    let ready = links.ready();
    let mut client = Client::new(identity, cfg, host_cache, rand::random());
    client.set_named_seeds(opts.named_seeds.clone());
    if !pins.is_empty() {
        info!("{} pinned peer keys loaded", pins.len());
    }
    client.set_trust_store(supervox_core::trust::TrustStore::from_pins(pins));
    let (relay_events, mut relay_rx) = mpsc::channel(1024);
    let (spare_tx, mut spare_rx) = mpsc::channel(spares::QUEUE);
    let (tcp_tx, mut tcp_rx) = mpsc::channel(tcp_media::EVENT_QUEUE);
    // TCP media listens where UDP media does (the same port when it is free).
    let (tcp, tcp_port) = tcp_media::TcpMedia::listen(udp.local_addr()?, tcp_tx);
    let (stepped_tx, mut stepped_rx) = mpsc::channel::<SteppedBack>(1);
    let (resolved_tx, mut resolved_rx) = mpsc::channel::<Resolved>(16);
    let mut node = Node {
        opts,
        client,
        links,
        udp,
        data,
        db,
        watchers: HashMap::new(),
        media: HashMap::new(),
        fatal: None,
        relay_stream: None,
        relay_generation: 0,
        relay_events,
        standby,
        shutdown: shutdown.clone(),
        spares: spares::Spares::new(spare_tx),
        tcp,
        stepped_back: stepped_tx,
        resolved: resolved_tx,
        social: social_layer,
        glue: social::SocialGlue::default(),
        ui,
    };
    node.client.set_tcp_media_port(tcp_port);
    // The host candidate and probe source must be known before sign-in starts the NAT probe.
    if let Some(first) = node.client.host_cache().ordered(now_ms(), 0).first().copied() {
        node.update_candidates(first);
    }
    // The media clock runs only while a call is up (or being placed from
    // `ctl`); otherwise the node sleeps until its machines' next deadline.
    let mut clock = tokio::time::interval(Duration::from_millis(supervox_media::FRAME_MS));
    let mut clock_running = false;
    let mut buf = vec![0u8; 2048];
    loop {
        let in_call = node.in_call();
        if in_call && !clock_running {
            // No burst of the ticks missed while idle: the first frame is one period away.
            clock.reset();
        }
        clock_running = in_call;
        let deadline = node.poll_timeout();
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = clock.tick(), if in_call => node.on_clock(),
            _ = crate::links::sleep_until_ms(deadline) => node.on_timeout(),
            r = node.udp.recv_from(&mut buf) => match r {
                Ok((n, from)) if n <= MAX_DATAGRAM => node.on_datagram(from, &buf[..n]),
                Ok(_) => {}
                Err(e) => warn!("media socket: {e}"),
            },
            Some(ev) = ev_rx.recv() => node.on_net(ev),
            _ = ready.wait() => {
                for ev in node.links.poll_ready() {
                    node.on_net(ev);
                }
            }
            Some(ev) = relay_rx.recv() => node.on_relay_stream(ev),
            Some(d) = spare_rx.recv() => node.on_spare_datagram(d),
            Some(ev) = tcp_rx.recv() => node.on_tcp_media(ev),
            Some(msg) = ctl_rx.recv() => node.on_control(msg),
            Some((reason, standby)) = stepped_rx.recv() => node.on_stepped_back(&reason, standby),
            Some((host, port, result)) = resolved_rx.recv() => node.client.handle_resolved(&host, port, result, now_ms()),
        }
        node.drain();
        if let Some(reason) = node.fatal.take() {
            let _ = std::fs::remove_file(&node.opts.control);
            bail!("{reason}");
        }
    }
    let ids: Vec<CallId> = node.media.keys().copied().collect();
    for id in ids {
        node.client.hangup(id, CallEnd::ShuttingDown, now_ms());
    }
    // A clean sign-out shows offline to contacts at once; give the link a moment to carry it.
    node.social.sign_out(now_ms());
    node.drain();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = std::fs::remove_file(&node.opts.control);
    Ok(())
}

impl Node {
    /// A call needs the 20 ms media clock: media flowing, or a `ctl call`
    /// waiting on its call (whose going away ends the call).
    fn in_call(&self) -> bool {
        !self.media.is_empty() || !self.watchers.is_empty()
    }

    /// The earliest deadline of the client and of the links' keepalive.
    fn poll_timeout(&self) -> Option<u64> {
        supervox_core::timer::earliest([
            self.client.poll_timeout(),
            self.links.poll_timeout(),
            self.social.poll_timeout(),
            self.sends_timeout(),
        ])
    }

    /// Run the client's and the links' timers that are due.
    fn on_timeout(&mut self) {
        let now = now_ms();
        if self.client.poll_timeout().is_some_and(|t| t <= now) {
            self.client.handle_timeout(now);
        }
        if self.social.poll_timeout().is_some_and(|t| t <= now) {
            self.social.handle_timeout(now);
        }
        self.expire_sends(now);
        self.tick_links(now);
    }

    /// The links' keepalive sweep, when due; failed links are reported to the client.
    fn tick_links(&mut self, now: u64) {
        if self.links.poll_timeout().is_some_and(|t| t <= now) {
            for (conn, reason) in self.links.tick() {
                self.client.on_closed(conn, &reason, now);
            }
        }
    }

    /// One 20 ms media frame for every call, then the timers.
    fn on_clock(&mut self) {
        let now = now_ms();
        // A `ctl call` that went away (Ctrl-C) takes its call with it.
        let orphaned: Vec<CallId> = self
            .watchers
            .iter()
            .filter(|(_, w)| w.tx.as_ref().is_some_and(|tx| tx.is_closed()))
            .map(|(id, _)| *id)
            .collect();
        for id in orphaned {
            self.watchers.remove(&id);
            self.client.hangup(id, CallEnd::ControlClientLeft, now);
        }
        let ids: Vec<CallId> = self.media.keys().copied().collect();
        for id in ids {
            let Some(m) = self.media.get_mut(&id) else {
                continue;
            };
            if m.end_at_ms.is_some_and(|t| now >= t) {
                m.end_at_ms = None;
                self.client.hangup(id, CallEnd::DurationReached, now);
                continue;
            }
            let pkt = m.media.next_packet();
            let report = m.media.next_report(now);
            for p in pkt.iter().chain(report.iter()) {
                self.client.send_media(id, p, now);
            }
            let path_rtt = self.client.call_rtt_ms(&id);
            if let Some(m) = self.media.get_mut(&id) {
                m.media.play(now);
                m.path_rtt_ms = path_rtt.or(m.path_rtt_ms);
                if now >= m.next_stats_ms {
                    m.next_stats_ms = now + STATS_EVENT_MS;
                    let f = m.media.figures();
                    let rtt = m.rtt_ms(&f);
                    let mos = rtt.map(|r| round2(m.media.mos(r)));
                    let v = json!({"event": "call_stats", "call_id": id.to_string(), "path": m.path,
                                   "mos": mos, "loss_before_fec_pct": round2(f.loss_before_fec_pct),
                                   "loss_after_fec_pct": round2(f.loss_after_fec_pct),
                                   "jitter_ms": round2(f.jitter_ms), "rtt_ms": rtt.map(round2),
                                   "playout_delay_ms": round2(f.playout_delay_ms),
                                   "target_delay_ms": round2(f.target_delay_ms),
                                   "frames_received": f.frames_received, "muted": m.media.muted()});
                    self.broadcast(v);
                }
                let Some(m) = self.media.get_mut(&id) else { continue };
                if now >= m.next_log_ms {
                    m.next_log_ms = now + STATS_LOG_MS;
                    let f = m.media.figures();
                    let rtt = m.rtt_ms(&f);
                    info!(
                        "call {id}: received {} frames, loss {:.1}% ({:.1}% after FEC), jitter {:.1} ms, rtt {}, \
                         playout {:.0} ms (target {:.0}), MOS {}",
                        f.frames_received,
                        f.loss_before_fec_pct,
                        f.loss_after_fec_pct,
                        f.jitter_ms,
                        rtt.map_or("?".into(), |r| format!("{r:.0} ms")),
                        f.playout_delay_ms,
                        f.target_delay_ms,
                        rtt.map_or("?".into(), |r| format!("{:.2}", m.media.mos(r))),
                    );
                }
            }
        }
        // During a call the client's checks and timeouts run at the media pace, as they always did.
        self.client.handle_timeout(now);
        self.tick_links(now);
    }

    fn on_datagram(&mut self, from: SocketAddr, bytes: &[u8]) {
        let now = now_ms();
        let got = self.client.handle_datagram(from, bytes, now);
        self.on_media(got, now);
    }

    fn on_spare_datagram(&mut self, d: spares::SpareDatagram) {
        if self.spares.is_current(d.generation) {
            let now = now_ms();
            let got = self.client.handle_spare_datagram(d.index, d.from, &d.bytes, now);
            self.on_media(got, now);
        }
    }

    fn on_tcp_media(&mut self, ev: tcp_media::TcpMediaEvent) {
        use tcp_media::TcpMediaEvent as E;
        let now = now_ms();
        match ev {
            E::Accepted(stream, from) => {
                // Dropping the stream closes it: refused ones go at once.
                if self.tcp.has_room() {
                    if let Some(id) = self.client.on_tcp_accepted(from, now) {
                        self.tcp.adopt(id, stream);
                    }
                }
            }
            E::Connected(id) => self.client.on_tcp_connected(id, now),
            E::Frame(id, bytes) => {
                let got = self.client.on_tcp_frame(id, &bytes, now);
                self.on_media(got, now);
            }
            E::Closed(id, reason, refused) => {
                if self.tcp.forget(id) {
                    tracing::debug!("TCP media stream {id}: {reason}");
                    if refused {
                        self.client.on_tcp_refused(id, now);
                    } else {
                        self.client.on_tcp_closed(id, now);
                    }
                }
            }
        }
    }

    /// A media packet the client took from the network (directly or via the relay).
    fn on_media(&mut self, got: Option<(CallId, Vec<u8>)>, now: u64) {
        if let Some((id, plain)) = got {
            if let Some(m) = self.media.get_mut(&id) {
                m.media.on_packet(&plain, now);
            }
        }
    }

    fn on_relay_stream(&mut self, ev: RelayStreamEvent) {
        let now = now_ms();
        let current = self.relay_stream.as_ref().map(|(g, _)| *g);
        match ev {
            RelayStreamEvent::Frame(g, bytes) if Some(g) == current => {
                let got = self.client.on_relay_frame(&bytes, now);
                self.on_media(got, now);
            }
            RelayStreamEvent::Closed(g, reason) if Some(g) == current => {
                warn!("relay stream: {reason}");
                self.relay_stream = None;
                self.client.on_relay_stream_closed(now);
            }
            _ => {}
        }
    }

    fn on_net(&mut self, ev: NetEvent) {
        let now = now_ms();
        match ev {
            NetEvent::Bytes(conn, bytes) => match self.links.handle_bytes(conn, &bytes) {
                Ok(events) => {
                    for e in events {
                        match e {
                            LinkEvent::Established { role, identity, .. } => {
                                self.client.on_established(conn, role, identity, now)
                            }
                            LinkEvent::Message(m) => self.client.on_message(conn, m, now),
                        }
                    }
                }
                Err(e) => self.client.on_closed(conn, &e.to_string(), now),
            },
            NetEvent::Closed(conn, reason) => {
                self.links.close(conn, &reason);
                self.client.on_closed(conn, &reason, now);
            }
            NetEvent::Dialed(addr, Ok(stream)) => match self.links.adopt(stream, true, self.client.hello()) {
                Ok(conn) => self.client.on_connected(conn, addr),
                Err(e) => self.client.on_connect_failed(addr, &e.to_string(), now),
            },
            NetEvent::Dialed(addr, Err(e)) => self.client.on_connect_failed(addr, &e, now),
        }
    }

    fn on_control(&mut self, msg: ControlMsg) {
        let now = now_ms();
        let reply = |tx: &mpsc::Sender<String>, v: Value| {
            let _ = tx.try_send(v.to_string());
        };
        let req = match self.social_control(msg.req, msg.reply.clone(), now) {
            Ok(()) => return,
            Err(req) => req,
        };
        match req {
            Request::Status => reply(&msg.reply, self.status()),
            Request::Hangup => match self.client.active_call() {
                Some(id) => {
                    self.client.hangup(id, CallEnd::LocalHangup, now);
                    reply(&msg.reply, json!({"ok": true, "call_id": id.to_string()}))
                }
                None => reply(&msg.reply, json!({"ok": false, "error": "no call in progress", "code": "no-call"})),
            },
            Request::Answer => match self.client.active_call() {
                Some(id) if self.client.call_info(&id).is_some_and(|(_, p)| p == "incoming") => {
                    self.client.answer(id, now);
                    reply(&msg.reply, json!({"ok": true, "call_id": id.to_string()}))
                }
                _ => reply(&msg.reply, json!({"ok": false, "error": "no incoming call is ringing", "code": "no-call"})),
            },
            Request::Trust { name } => match self.client.trust_accept(&name, now) {
                Ok((old, new)) => reply(
                    &msg.reply,
                    json!({"ok": true, "peer": name, "user_id": new.to_string(), "fingerprint": fingerprint(&new),
                           "old_user_id": old.to_string(), "old_fingerprint": fingerprint(&old)}),
                ),
                Err(e) => reply(&msg.reply, json!({"ok": false, "error": e.to_string()})),
            },
            Request::Pins => {
                let pins: Vec<Value> = self
                    .client
                    .trust_store()
                    .pins()
                    .into_iter()
                    .map(|p| {
                        json!({"name": p.name, "user_id": p.user_id.to_string(), "fingerprint": fingerprint(&p.user_id),
                               "first_seen_ms": p.first_seen_ms, "last_seen_ms": p.last_seen_ms,
                               "pending_user_id": p.pending.map(|k| k.to_string()),
                               "pending_fingerprint": p.pending.map(|k| fingerprint(&k))})
                    })
                    .collect();
                reply(&msg.reply, json!({"ok": true, "pins": pins}))
            }
            Request::Call { name, duration, input, output, detach } => {
                let fail = |reason: CallFailure| call_failed_json(&reason);
                let bad = |text: String| fail(CallFailure::BadRequest(text));
                let input = match input.map(|s| s.parse::<SourceSpec>()).transpose() {
                    Ok(i) => i.unwrap_or_else(|| self.opts.input.clone()),
                    Err(e) => return reply(&msg.reply, bad(format!("bad --input: {e}"))),
                };
                let output = match output.map(|s| s.parse::<SinkSpec>()).transpose() {
                    Ok(o) => o.unwrap_or_else(|| self.opts.output.clone()),
                    Err(e) => return reply(&msg.reply, bad(format!("bad --output: {e}"))),
                };
                let duration_ms = match duration {
                    Some(d) if !(d.is_finite() && d > 0.0) => {
                        return reply(&msg.reply, bad("--duration must be a positive number of seconds".into()))
                    }
                    d => d.map(|d| (d * 1000.0) as u64),
                };
                match self.client.place_call(&name, now) {
                    Ok(id) => {
                        self.log_outgoing(id, &name, now);
                        if detach {
                            reply(&msg.reply, json!({"ok": true, "call_id": id.to_string()}));
                        }
                        let tx = (!detach).then_some(msg.reply);
                        self.watchers.insert(id, Watcher { tx, duration_ms, input, output });
                    }
                    Err(e) => reply(&msg.reply, fail(e)),
                }
            }
            Request::Mute { muted } => {
                match self.client.active_call().and_then(|id| Some((id, self.media.get_mut(&id)?))) {
                    Some((id, m)) => {
                        m.media.set_muted(muted);
                        info!("call {id}: {}", if muted { "muted" } else { "unmuted" });
                        reply(&msg.reply, json!({"ok": true, "muted": muted, "call_id": id.to_string()}))
                    }
                    None => reply(&msg.reply, json!({"ok": false, "error": "no call is connected", "code": "no-call"})),
                }
            }
            Request::Devices { input, output } => {
                let bad = |what: &str, e: String| json!({"ok": false, "error": format!("bad {what}: {e}"), "code": "bad-request"});
                let input = match input.map(|s| s.parse::<SourceSpec>()).transpose() {
                    Ok(i) => i,
                    Err(e) => return reply(&msg.reply, bad("input", e.to_string())),
                };
                let output = match output.map(|s| s.parse::<SinkSpec>()).transpose() {
                    Ok(o) => o,
                    Err(e) => return reply(&msg.reply, bad("output", e.to_string())),
                };
                if let Some(i) = input {
                    self.opts.input = i;
                }
                if let Some(o) = output {
                    self.opts.output = o;
                }
                reply(&msg.reply, self.devices())
            }
            Request::UiLogin => match &self.ui {
                Some(ui) => reply(&msg.reply, json!({"ok": true, "url": ui.login_url(now)})),
                None => reply(
                    &msg.reply,
                    json!({"ok": false, "error": "this node runs without its web app (--ui off)",
                                                 "code": "ui-off"}),
                ),
            },
            // The social requests were answered by social_control.
            other => reply(&msg.reply, json!({"ok": false, "error": format!("unhandled request {other:?}")})),
        }
    }

    fn status(&self) -> Value {
        let id = self.client.identity().user_id();
        let call = self.client.active_call().and_then(|c| {
            let (peer, phase) = self.client.call_info(&c)?;
            let mut v = json!({"call_id": c.to_string(), "peer": peer, "state": phase,
                               "muted": self.media.get(&c).is_some_and(|m| m.media.muted())});
            if let (Value::Object(v), Some((user_id, verified))) = (&mut v, self.client.call_peer(&c)) {
                v.insert("user_id".into(), json!(user_id.to_string()));
                v.insert("fingerprint".into(), json!(fingerprint(&user_id)));
                // Still being checked (an incoming call before it rings): null.
                v.insert("verified".into(), json!(verified.map(|x| x.as_str())));
            }
            if let Some(m) = self.media.get(&c) {
                let f = m.media.figures();
                let rtt = m.rtt_ms(&f);
                if let (Value::Object(v), Value::Object(fig)) =
                    (&mut v, figures_json(&f, rtt, rtt.map(|r| m.media.mos(r))))
                {
                    v.extend(fig);
                }
                if let Value::Object(v) = &mut v {
                    v.insert("path".into(), json!(m.path));
                }
            }
            Some(v)
        });
        let (presence, status_text) = self.social.presence();
        json!({
            "name": self.client.name(),
            "user_id": id.to_string(),
            "fingerprint": fingerprint(&id),
            "role": if self.client.promoted() { "supernode" } else { "client" },
            "supernode": self.client.supernode().map(|s| s.to_string()),
            "host_cache": self.client.host_cache().len(),
            "presence": presence.as_str(),
            "status_text": status_text,
            "ui": self.ui.as_ref().map(|u| u.url()),
            "relay": {
                "servers": self.client.relay_credentials().map(|r| r.relays.iter().map(|a| a.to_string()).collect::<Vec<_>>()),
                "tls_servers": self.client.relay_credentials().and_then(|r| r.tls.as_ref())
                    .map(|t| t.relays.iter().map(|a| a.to_string()).collect::<Vec<_>>()),
                "allocated": self.client.relayed_addr().map(|a| a.to_string()),
                "transport": self.client.relay_transport().as_str(),
            },
            "media": self.udp.local_addr().ok().map(|a| a.to_string()),
            // Until the STUN probe has finished, say "unknown" rather than guess.
            "reachability": match self.client.reachability() {
                Some(r) => json!({"udp": r.udp, "public": r.public, "mapping": r.mapping.as_str(),
                                  "filtering": r.filtering.as_str(),
                                  "mapped": r.mapped.map(|m| m.to_string()),
                                  "summary": reachability_words(r, self.client.relay_transport().as_str())}),
                None => json!({"udp": Value::Null, "public": Value::Null, "mapping": "unknown", "filtering": "unknown",
                               "summary": "finding out how this network reaches the Internet…"}),
            },
            "call": call,
        })
    }

    /// The audio devices this machine lists and the specs the next call uses.
    fn devices(&self) -> Value {
        let specs = |fixed: &[&str], devices: Vec<String>, kind: &str| -> Vec<String> {
            let mut v: Vec<String> = fixed.iter().map(|s| s.to_string()).collect();
            v.extend(devices.into_iter().map(|d| format!("{kind}:{d}")));
            v
        };
        json!({
            "ok": true,
            "inputs": specs(&["mic", "silence", "tone:440"], supervox_audio::input_devices(), "mic"),
            "outputs": specs(&["speaker", "null"], supervox_audio::output_devices(), "speaker"),
            "input": self.opts.input.to_string(),
            "output": self.opts.output.to_string(),
        })
    }

    /// Carry out everything the client and the social layer asked for
    /// (each may give the other more to do).
    fn drain(&mut self) {
        loop {
            self.drain_client();
            if !self.drain_social() {
                break;
            }
        }
    }

    /// Carry out everything the client asked for.
    fn drain_client(&mut self) {
        while let Some(out) = self.client.poll_output() {
            let now = now_ms();
            match out {
                ClientOutput::Connect(addr) => self.links.dial(addr),
                ClientOutput::Send(conn, msg) => {
                    if let Err(e) = self.links.send(conn, &msg) {
                        self.client.on_closed(conn, &e.to_string(), now);
                    }
                }
                ClientOutput::Close(conn, reason) => {
                    self.links.close(conn, &reason);
                    self.client.on_closed(conn, &reason, now);
                }
                ClientOutput::Datagram(to, bytes) => {
                    // Media is real-time: a full socket buffer drops the packet.
                    if let Err(e) = crate::udp_send::send_now(&self.udp, &bytes, to) {
                        tracing::debug!("media send to {to}: {e}");
                    }
                }
                ClientOutput::OpenSpares(n) => {
                    // On the media socket's address, so they leave by the same route.
                    let ip = self.udp.local_addr().map(|a| a.ip());
                    let opened = ip.map_or(0, |ip| self.spares.open(ip, n));
                    self.client.on_spares_opened(opened, now);
                }
                ClientOutput::SpareDatagram(i, to, bytes) => self.spares.send(i, to, &bytes),
                ClientOutput::CloseSpares { keep } => self.spares.close(&keep),
                ClientOutput::RelayConnect { server, tls } => {
                    self.relay_generation += 1;
                    let g = self.relay_generation;
                    self.relay_stream = Some((g, relay_stream::open(server, tls, g, self.relay_events.clone())));
                }
                ClientOutput::RelayStream(bytes) => {
                    // Queued until connected; a full queue drops (media is real-time).
                    if let Some((_, tx)) = &self.relay_stream {
                        let _ = tx.try_send(bytes);
                    }
                }
                ClientOutput::RelayDisconnect => self.relay_stream = None,
                ClientOutput::TcpConnect { stream, to, simultaneous } => {
                    if !self.tcp.connect(stream, to, simultaneous) {
                        warn!("too many TCP media streams: not connecting to {to}");
                        self.client.on_tcp_closed(stream, now);
                    }
                }
                ClientOutput::TcpSend(stream, bytes) => self.tcp.send(stream, bytes),
                ClientOutput::TcpClose(stream) => self.tcp.close(stream),
                ClientOutput::Resolve { host, port } => {
                    // The system resolver (getaddrinfo: /etc/hosts, DNS, A and AAAA) on a blocking thread.
                    let tx = self.resolved.clone();
                    tokio::spawn(async move {
                        let lookup = tokio::net::lookup_host((host.as_str(), port));
                        let result = match tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
                            Ok(Ok(addrs)) => Ok(addrs.collect()),
                            Ok(Err(e)) => Err(e.to_string()),
                            Err(_) => Err(format!("no answer within {RESOLVE_TIMEOUT:?}")),
                        };
                        let _ = tx.send((host, port, result)).await;
                    });
                }
                ClientOutput::HostCacheChanged => {
                    if let Err(e) = self.data.save_host_cache(self.client.host_cache()) {
                        warn!("cannot save host cache: {e:#}");
                    }
                }
                ClientOutput::Trust(change) => {
                    // Committed before the outputs after it (a Connected event) are acted on.
                    if let Err(e) = self.db.apply(&change) {
                        warn!("cannot save a pinned key: {e:#}");
                    }
                }
                ClientOutput::Event(e) => self.on_event(e, now),
            }
        }
    }

    fn on_event(&mut self, e: ClientEvent, now: u64) {
        self.log_call(&e, now);
        let Some(e) = self.social_client_event(e, now) else { return };
        match e {
            ClientEvent::SignedIn { supernode } => {
                info!("signed in via {supernode}; callable as {:?}", self.client.name());
                self.update_candidates(supernode);
                self.broadcast(json!({"event": "signed_in", "supernode": supernode.to_string()}));
            }
            ClientEvent::LostSupernode { supernode, reason } => {
                warn!("lost supernode {supernode} ({reason}); reconnecting");
                self.broadcast(json!({"event": "lost_supernode", "supernode": supernode.to_string(),
                                      "reason": reason.to_string()}));
            }
            ClientEvent::Promoted { network_key, seeds, difficulty } => {
                if let Some(sn) = self.standby.take() {
                    info!("promoted: serving as a supernode at {}", sn.advertise());
                    let stop = self.shutdown.clone();
                    let done = self.stepped_back.clone();
                    let (promotion, data_dir) = (self.opts.supernode.clone(), self.opts.data_dir.clone());
                    tokio::spawn(async move {
                        match sn.joining(network_key, seeds, difficulty).run(stop).await {
                            Ok(Some(reason)) => {
                                let standby = match promotion {
                                    Some(p) => rebind_standby(&p, &data_dir).await,
                                    None => None,
                                };
                                let _ = done.send((reason, standby)).await;
                            }
                            Ok(None) => {}
                            Err(e) => warn!("supernode stopped: {e:#}"),
                        }
                    });
                }
            }
            ClientEvent::NameRefused { reason } => {
                self.fatal = Some(format!("cannot sign in as {:?}: {reason}", self.client.name()));
            }
            ClientEvent::Incoming { call_id, from, user_id, verified } => {
                // Only a contact or a directory-confirmed caller is auto-answered.
                let auto = self.opts.auto_answer && verified.is_confirmed();
                info!(
                    "incoming call {call_id} from {} [user_id {user_id}, fingerprint {}, verified {}]{}",
                    verified.label(&from),
                    fingerprint(&user_id),
                    verified.as_str(),
                    if auto { " (auto-answer)" } else { "" }
                )
            }
            ClientEvent::Ringing { call_id } => {
                info!("call {call_id}: ringing");
                self.notify(call_id, json!({"event": "ringing"}));
            }
            ClientEvent::Connected { call_id, peer, user_id, verified, path, setup_ms } => {
                info!(
                    "call {call_id} with {} [fingerprint {}] connected over {} in {setup_ms} ms",
                    verified.label(&peer),
                    fingerprint(&user_id),
                    path.as_str()
                );
                let (input, output, dur) = match self.watchers.get(&call_id) {
                    Some(w) => (w.input.clone(), w.output.clone(), w.duration_ms),
                    None => (self.opts.input.clone(), self.opts.output.clone(), None),
                };
                match CallMedia::open(&input, &output, self.opts.media, now) {
                    Ok(media) => {
                        self.media.insert(
                            call_id,
                            ActiveMedia {
                                media,
                                end_at_ms: dur.map(|d| now + d),
                                path_rtt_ms: None,
                                next_log_ms: now + STATS_LOG_MS,
                                next_stats_ms: now + STATS_EVENT_MS,
                                path: path.as_str(),
                            },
                        );
                        self.notify(
                            call_id,
                            json!({"event": "call_connected", "call_id": call_id.to_string(), "peer": peer,
                                   "user_id": user_id.to_string(), "verified": verified.as_str(),
                                   "fingerprint": fingerprint(&user_id),
                                   "path": path.as_str(), "setup_ms": setup_ms}),
                        );
                    }
                    Err(err) => {
                        warn!("call {call_id}: {err:#}");
                        self.client.hangup(call_id, CallEnd::AudioDevice(format!("{err:#}")), now);
                    }
                }
            }
            ClientEvent::PathChanged { call_id, path, reason } => {
                info!("call {call_id} moved to {} ({reason})", path.as_str());
                if let Some(m) = self.media.get_mut(&call_id) {
                    m.path = path.as_str();
                }
                self.notify(
                    call_id,
                    json!({"event": "path_changed", "path": path.as_str(), "reason": reason.to_string(),
                           "code": reason.code()}),
                )
            }
            ClientEvent::KeyChanged { call_id, name, old, new } => {
                warn!(
                    "call {call_id}: KEY CHANGED for {name:?}: pinned {} [fingerprint {}], now {} [fingerprint {}]: \
                     possible attack; `ctl trust {name}` accepts the new key",
                    old,
                    fingerprint(&old),
                    new,
                    fingerprint(&new)
                );
                self.notify(
                    call_id,
                    json!({"event": "key_changed", "call_id": call_id.to_string(), "peer": name,
                           "old_user_id": old.to_string(), "new_user_id": new.to_string(),
                           "old_fingerprint": fingerprint(&old), "new_fingerprint": fingerprint(&new)}),
                );
            }
            ClientEvent::Failed { call_id, reason } => {
                info!("call {call_id} failed: {reason}");
                self.media.remove(&call_id);
                self.notify(call_id, call_failed_json(&reason));
                self.watchers.remove(&call_id);
            }
            // Taken by the social layer (node/social.rs).
            ClientEvent::Mail { .. }
            | ClientEvent::Peer { .. }
            | ClientEvent::PeerUndeliverable { .. }
            | ClientEvent::PeerFound { .. }
            | ClientEvent::MailStored { .. } => {}
            ClientEvent::Ended { call_id, reason, duration_ms } => {
                let (f, rtt, mos) = match self.media.remove(&call_id) {
                    Some(mut m) => {
                        let f = m.media.finish();
                        let rtt = m.rtt_ms(&f);
                        (f, rtt, rtt.map(|r| m.media.mos(r)))
                    }
                    None => (CallFigures::default(), None, None),
                };
                info!(
                    "call {call_id} ended ({reason}) after {duration_ms} ms: sent {} frames, received {}, loss {:.1}%",
                    f.frames_sent, f.frames_received, f.loss_pct
                );
                self.log_ended(call_id, duration_ms, mos.map(round2));
                self.notify(call_id, {
                    let mut v = json!({"event": "call_ended", "reason": reason.to_string(), "code": reason.code(),
                                       "normal": reason.is_normal(), "duration_ms": duration_ms});
                    if let (Value::Object(v), Value::Object(fig)) = (&mut v, figures_json(&f, rtt, mos)) {
                        v.extend(fig);
                    }
                    v
                });
                self.watchers.remove(&call_id);
            }
        }
    }

    /// Our supernode stepped back: we are a client again (signed in
    /// elsewhere all along), and may volunteer later if the listeners were
    /// bound again.
    fn on_stepped_back(&mut self, reason: &str, standby: Option<crate::sn::BoundSupernode>) {
        info!("stepped back to the client role ({reason})");
        self.client.on_stepped_back(now_ms(), standby.as_ref().map(|s| s.advertise()));
        self.standby = standby;
    }

    /// A call's event line to its `ctl call` and to every `ctl events` stream.
    fn notify(&mut self, id: CallId, mut v: Value) {
        if let Some(tx) = self.watchers.get(&id).and_then(|w| w.tx.as_ref()) {
            let _ = tx.try_send(v.to_string());
        }
        if let Value::Object(o) = &mut v {
            o.entry("call_id").or_insert_with(|| json!(id.to_string()));
        }
        self.broadcast(v);
    }

    /// Tell the client the media socket's address on the interface that
    /// routes to the supernode (host candidate and NAT probe source).
    fn update_candidates(&mut self, supernode: SocketAddr) {
        let Ok(local) = self.udp.local_addr() else { return };
        let ip = Some(local.ip()).filter(|ip| !ip.is_unspecified()).or_else(|| route_ip(supernode));
        if let Some(ip) = ip {
            self.client.set_media_addr(SocketAddr::new(ip, local.port()));
        }
    }
}

/// Bind the standby listeners again after a step-back; the old ones are
/// released as the supernode stops, so retry for a few seconds.
async fn rebind_standby(p: &PromotionOptions, data_dir: &std::path::Path) -> Option<crate::sn::BoundSupernode> {
    for _ in 0..20 {
        match bind_standby(p, data_dir).await {
            Ok(sn) => return Some(sn),
            Err(e) => tracing::debug!("binding the standby supernode again: {e:#}"),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    warn!("cannot bind {} again: this node will not volunteer any more", p.listen);
    None
}

/// The local address the kernel would use to reach `to`.
fn route_ip(to: SocketAddr) -> Option<IpAddr> {
    let bind: SocketAddr = if to.is_ipv4() { "0.0.0.0:0".parse().ok()? } else { "[::]:0".parse().ok()? };
    let s = std::net::UdpSocket::bind(bind).ok()?;
    s.connect(to).ok()?;
    s.local_addr().ok().map(|a| a.ip())
}

/// How this network reaches others, in words (the web app's "me" card).
fn reachability_words(r: &supervox_stun::Reachability, relay_transport: &str) -> String {
    use supervox_stun::NatBehaviour as B;
    if !r.udp {
        return format!("UDP blocked: calls go through a relay over {}", relay_transport.to_uppercase());
    }
    if r.public {
        return "public address: direct calls possible with everyone".into();
    }
    match r.mapping {
        B::EndpointIndependent => "behind a home router: direct calls possible".into(),
        B::AddressDependent | B::AddressAndPortDependent => {
            "behind a strict (symmetric) NAT: direct calls need port prediction, else a relay".into()
        }
        B::Unknown => "behind a router: direct calls likely".into(),
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
