//! The `supervox` command line: see `supervox --help`.

use anyhow::{bail, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use supervox::control::Request;
use supervox::node::media::{JitterBufferMode, MediaConfig};
use supervox::node::NodeOptions;
use supervox::secrets::SecretSource;
use supervox::sn::{BoundSupernode, SnOptions};
use supervox::store::DataDir;
use supervox::{ctl, demo, node};
use supervox_media::sink::SinkSpec;
use supervox_media::source::SourceSpec;
use tokio::sync::watch;

/// supervox: a peer-to-peer voice network. Clients keep one TCP link to a
/// supernode; calls are signalled through supernodes and the voice goes
/// straight between the callers, end-to-end encrypted.
#[derive(Parser)]
#[command(name = "supervox", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a supernode: serve clients, keep the directory, route calls.
    Supernode(SupernodeArgs),
    /// Run the client daemon: sign in with a name, place and take calls.
    Node(NodeArgs),
    /// Talk to a running node through its control socket.
    Ctl(CtlArgs),
    /// Open a running node's web app (softphone) in the browser with a one-time login link.
    Ui(UiArgs),
    /// Run a whole network on loopback (2 supernodes, 2 clients) and place a call.
    Demo {
        /// Print JSON lines instead of words.
        #[arg(long)]
        json: bool,
        /// Then keep the network up and print login links to alice's and bob's web apps.
        #[arg(long)]
        ui: bool,
    },
}

#[derive(Args)]
struct UiArgs {
    /// The node's control socket [default: that of the node called --name].
    #[arg(long, value_name = "PATH", required_unless_present = "name")]
    control: Option<PathBuf>,
    /// The node's name (finds its control socket in the default data dir).
    #[arg(long)]
    name: Option<String>,
    /// Only print the link; do not start a browser.
    #[arg(long)]
    print: bool,
}

#[derive(Args)]
struct SupernodeArgs {
    /// TCP address to listen on (repeatable, e.g. a high port and 443).
    #[arg(long, required = true, value_name = "IP:PORT")]
    listen: Vec<SocketAddr>,
    /// Another supernode to join (repeatable).
    #[arg(long, value_name = "IP:PORT")]
    seed: Vec<SocketAddr>,
    /// Directory for the identity key and stored name claims
    /// [default: <user data dir>/supervox/supernode].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Address others should use, when it differs from the first --listen.
    #[arg(long, value_name = "IP:PORT")]
    advertise: Option<SocketAddr>,
    /// Clients served before new ones are redirected to other supernodes.
    #[arg(long, default_value_t = supervox_core::defaults::MAX_CLIENTS, value_name = "N")]
    max_clients: usize,
    /// TCP connections (clients and handshakes in progress) held at most;
    /// further connections are dropped at accept.
    #[arg(long, default_value_t = supervox::defaults::MAX_CONNECTIONS, value_name = "N")]
    max_connections: usize,
    /// TCP connections held at most from one host (an IPv4 address or an IPv6 /64;
    /// loopback is not limited); more from it are dropped at accept.
    #[arg(long, default_value_t = supervox::defaults::MAX_CONNECTIONS_PER_HOST, value_name = "N")]
    max_connections_per_host: usize,
    /// Serve Prometheus metrics over HTTP at this address (GET /metrics).
    #[arg(long, value_name = "IP:PORT")]
    metrics: Option<SocketAddr>,
    /// Bandwidth each TURN relay allocation may use, in kbit/s (0: unlimited).
    #[arg(long, default_value_t = supervox_turn::defaults::RELAY_KBPS, value_name = "N")]
    relay_kbps: u32,
    /// TURN relay allocations this supernode serves at most.
    #[arg(long, default_value_t = supervox_turn::defaults::MAX_ALLOCATIONS, value_name = "N")]
    max_allocations: usize,
    /// Shared secret for TURN REST-API-style credentials (default: random per run,
    /// so only this supernode can mint them). Visible to every local user in `ps`:
    /// prefer --relay-secret-file or SUPERVOX_RELAY_SECRET.
    #[arg(long, value_name = "SECRET", conflicts_with = "relay_secret_file")]
    relay_secret: Option<String>,
    /// File holding the TURN relay secret (mode 0600; group- or world-readable files
    /// are refused). The environment variable SUPERVOX_RELAY_SECRET is read when
    /// neither this nor --relay-secret is given.
    #[arg(long, value_name = "PATH")]
    relay_secret_file: Option<PathBuf>,
    /// Also serve TURN over TLS (RFC 8656 §3.1) on this TCP address (repeatable, e.g.
    /// 0.0.0.0:443), for clients whose firewall lets only TLS or port 443 out. The
    /// certificate is self-signed (made on first start in the data dir); clients pin its
    /// SHA-256, which they get with their relay credentials.
    #[arg(long, value_name = "IP:PORT")]
    relay_tls_listen: Vec<SocketAddr>,
    /// PEM certificate chain for --relay-tls-listen instead of the self-signed one
    /// (e.g. a CA-issued one for other TURN clients). Needs --relay-tls-key.
    #[arg(long, value_name = "PATH", requires = "relay_tls_key")]
    relay_tls_cert: Option<PathBuf>,
    /// PEM private key of --relay-tls-cert (mode 0600).
    #[arg(long, value_name = "PATH", requires = "relay_tls_cert")]
    relay_tls_key: Option<PathBuf>,
    /// Let TURN relay to loopback peers (single-machine tests only: in production it would
    /// let clients reach services on the supernode's own host).
    #[arg(long, hide = true)]
    relay_allow_loopback: bool,
    /// Let TURN relay to private (10/8, 172.16/12, 192.168/16), CGNAT (100.64/10) and
    /// unique-local (fc00::/7) addresses, for a network inside one organisation: by
    /// default a relay reaches only public addresses, so it cannot be used as a proxy into
    /// the operator's network.
    #[arg(long)]
    relay_allow_private: bool,
    /// The network's key, 64 hex digits: supernodes seal their overlay
    /// datagrams with it, so only holders can join the network (default: the
    /// open test network's well-known key). Visible to every local user in `ps`:
    /// prefer --network-key-file or SUPERVOX_NETWORK_KEY.
    #[arg(long, value_name = "HEX", conflicts_with = "network_key_file")]
    network_key: Option<String>,
    /// File holding the network key as 64 hex digits (mode 0600; group- or
    /// world-readable files are refused). The environment variable
    /// SUPERVOX_NETWORK_KEY is read when neither this nor --network-key is given.
    #[arg(long, value_name = "PATH")]
    network_key_file: Option<PathBuf>,
    /// Leading zero bits of every supernode's proof of work, which places it in the index
    /// (a network parameter: all supernodes of a network must agree; promoted nodes learn it).
    /// Solved once (about a second at the default) and kept in the data dir.
    #[arg(long, value_name = "BITS", env = "SUPERVOX_MEMBER_DIFFICULTY",
          default_value_t = supervox_core::overlay::admission::DEFAULT_DIFFICULTY)]
    member_difficulty: u8,
    /// Supernodes admitted per IPv4 /24 or IPv6 /48 into the membership (loopback is
    /// never limited).
    #[arg(long, value_name = "N", default_value_t = supervox_core::overlay::admission::DEFAULT_MAX_MEMBERS_PER_PREFIX)]
    max_members_per_prefix: usize,
}

#[derive(Clone, Copy, ValueEnum)]
enum SupernodeMode {
    /// Stay a client.
    Never,
    /// Volunteer once signed in with a public address; serve as a supernode
    /// when the network promotes this node (needs --supernode-listen).
    Auto,
}

#[derive(Args)]
struct NodeArgs {
    /// The name to claim and be called by (a-z 0-9 . _ -, at most 32).
    #[arg(long)]
    name: String,
    /// A supernode to sign in through (repeatable; more are learnt later).
    /// `KEY@IP:PORT` pins its key (KEY = the 64 hex digits of its user id):
    /// a supernode there with another key is refused. A bare `IP:PORT` is
    /// trusted on first use. `HOST:PORT` names it by host name, resolved (A and
    /// AAAA) at every reconnect, so its operator may move it.
    #[arg(long, required = true, value_name = "[KEY@]IP:PORT|HOST:PORT")]
    seed: Vec<supervox_core::host_cache::SeedSpec>,
    /// Directory for the identity key and host cache
    /// [default: <user data dir>/supervox/node-NAME].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Control socket for `supervox ctl` [default: DATA_DIR/control.sock].
    #[arg(long, value_name = "PATH")]
    control: Option<PathBuf>,
    /// Whether this node may become a supernode when the network needs one.
    #[arg(long, value_enum, default_value = "never")]
    supernode: SupernodeMode,
    /// With --supernode auto: where the supernode would listen (TCP and UDP;
    /// bound at start so the promoting supernode can check it) [default: the
    /// address this host reaches its first seed from, any free port].
    #[arg(long, value_name = "IP:PORT")]
    supernode_listen: Option<SocketAddr>,
    /// With --supernode auto: seconds signed in before volunteering.
    #[arg(long, value_name = "SECS", default_value_t = supervox::defaults::PROMOTE_AFTER_S)]
    promote_after: u64,
    /// With --supernode auto: clients served as a supernode before redirecting.
    #[arg(long, value_name = "N", default_value_t = supervox::defaults::PROMOTED_MAX_CLIENTS)]
    supernode_max_clients: usize,
    /// With --supernode auto: once promoted, step back to the client role
    /// after this many seconds with its own load and the members' mean load
    /// below 20 % and at least 2 other supernodes alive.
    #[arg(long, value_name = "SECS", default_value_t = supervox::defaults::STEP_BACK_AFTER_S)]
    step_back_after: u64,
    /// Answer incoming calls automatically (only callers whose name the directory confirmed).
    #[arg(long)]
    auto_answer: bool,
    /// Audio source: tone:HZ, wav:PATH, silence or mic.
    #[arg(long, default_value = "silence", value_name = "SRC")]
    input: SourceSpec,
    /// Audio sink: wav:PATH, null or speaker.
    #[arg(long, default_value = "null", value_name = "SINK")]
    output: SinkSpec,
    /// Local UDP address for media.
    #[arg(long, default_value = "0.0.0.0:0", value_name = "IP:PORT")]
    media: SocketAddr,
    /// Jitter buffer: `adaptive` (default) or `tox`, a fixed 3-packet buffer kept as the
    /// quality bench's baseline.
    #[arg(long, value_enum, default_value = "adaptive")]
    jitter_buffer: JitterBufferMode,
    /// Opus in-band FEC, driven by the loss the far end reports.
    #[arg(long, value_enum, default_value = "on")]
    fec: OnOff,
    /// Send media only through relays (our supernode's TURN relay or the peer's): the peer
    /// never learns this machine's addresses. Costs relay bandwidth and a little delay.
    #[arg(long)]
    force_relay: bool,
    /// `strict` (default): a peer that is not a contact is offered only our relay
    /// addresses until the call is up, so a stranger who calls (or is called) cannot
    /// learn where this machine is without an answer; the call then moves to a direct
    /// path. `relaxed`: offer every address at once (a little faster call setup).
    #[arg(long, value_enum, default_value = "strict")]
    privacy: Privacy,
    /// `allow` (default): calls and messages from people not on the contact list come
    /// through, marked; `refuse`: they are declined (contact requests still arrive).
    #[arg(long, value_enum, default_value = "allow")]
    strangers: Strangers,
    /// Tell senders when their messages have been read.
    #[arg(long, value_enum, default_value = "on")]
    read_receipts: OnOff,
    /// A TURN server (e.g. coturn) to take the relay candidate from instead of the
    /// supernode's relay: `IP:PORT` or `turn:IP:PORT` (UDP, or TCP when UDP is blocked),
    /// `turns:IP:PORT` (TURN over TLS; needs --turn-tls-fingerprint). Needs
    /// --turn-username and --turn-password.
    #[arg(long, value_name = "[turn:|turns:]IP:PORT", requires_all = ["turn_username", "turn_password"])]
    turn_server: Option<TurnServerSpec>,
    /// SHA-256 of the DER certificate a `turns:` --turn-server must present (hex, colons
    /// allowed; `openssl x509 -noout -fingerprint -sha256 -in cert.pem` prints it). The
    /// certificate is pinned, not checked against CAs.
    #[arg(long, value_name = "SHA256", value_parser = parse_fingerprint)]
    turn_tls_fingerprint: Option<[u8; 32]>,
    /// How to reach the relay: `auto` (UDP and TCP raced at sign-in, UDP kept when it works;
    /// TLS instead of TCP once plain TCP fails and the supernode serves TLS), `tcp` (always TURN over TCP, for networks
    /// that pass only TCP) or `tls` (always TURN over TLS to the supernode's
    /// --relay-tls-listen port, for networks that pass only TLS or only port 443).
    #[arg(long, value_enum, default_value = "auto")]
    relay_transport: RelayTransport,
    /// Username on --turn-server (long-term credential).
    #[arg(long, value_name = "USER")]
    turn_username: Option<String>,
    /// Password on --turn-server.
    #[arg(long, value_name = "PASS")]
    turn_password: Option<String>,
    /// Serve the web app (softphone) and its API here, or `off`. Open it with `supervox
    /// ui` [default: 127.0.0.1:8790, or the next free port].
    #[arg(long, value_name = "IP:PORT|off", value_parser = parse_ui)]
    ui: Option<UiFlag>,
    /// Let --ui listen on a non-loopback address (then over HTTPS with a self-signed
    /// certificate in the data dir). Anyone who can reach it can try to log in.
    #[arg(long)]
    ui_allow_remote: bool,
}

#[derive(Clone, Copy, Debug)]
enum UiFlag {
    Off,
    At(SocketAddr),
}

fn parse_ui(s: &str) -> Result<UiFlag, String> {
    if s == "off" {
        return Ok(UiFlag::Off);
    }
    s.parse().map(UiFlag::At).map_err(|_| format!("{s:?} is neither IP:PORT nor off"))
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Strangers {
    Allow,
    Refuse,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Privacy {
    Strict,
    Relaxed,
}

#[derive(Clone, Copy, ValueEnum)]
enum RelayTransport {
    Auto,
    Tcp,
    Tls,
}

/// `--turn-server`: an address, with `turn:` or `turns:` (TLS) in front or not.
#[derive(Clone, Copy, Debug)]
struct TurnServerSpec {
    addr: SocketAddr,
    tls: bool,
}

impl std::str::FromStr for TurnServerSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (tls, rest) = match (s.strip_prefix("turns:"), s.strip_prefix("turn:")) {
            (Some(r), _) => (true, r),
            (_, Some(r)) => (false, r),
            _ => (false, s),
        };
        let addr = rest.parse().map_err(|_| format!("{rest:?} is not IP:PORT (host names are not resolved)"))?;
        Ok(Self { addr, tls })
    }
}

fn parse_fingerprint(s: &str) -> Result<[u8; 32], String> {
    supervox::tls::parse_fingerprint(s)
}

#[derive(Clone, Copy, ValueEnum)]
enum OnOff {
    On,
    Off,
}

#[derive(Args)]
struct CtlArgs {
    /// The node's control socket.
    #[arg(long, value_name = "PATH")]
    control: PathBuf,
    #[command(subcommand)]
    cmd: CtlCmd,
}

#[derive(Subcommand)]
enum CtlCmd {
    /// Show name, user id, role, supernode and reachability.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Call NAME; prints events and exits 0 only if the call connected and ended normally.
    Call {
        /// Who to call.
        name: String,
        /// Hang up after SECS seconds (default: talk until `ctl hangup`).
        #[arg(long, value_name = "SECS")]
        duration: Option<f64>,
        /// Audio source for this call: tone:HZ, wav:PATH, silence or mic.
        #[arg(long, value_name = "SRC")]
        input: Option<SourceSpec>,
        /// Audio sink for this call: wav:PATH, null or speaker.
        #[arg(long, value_name = "SINK")]
        output: Option<SinkSpec>,
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// End the current call.
    Hangup,
    /// Answer the ringing incoming call.
    Answer,
    /// The contact list, or `add NAME [--message TEXT]`, `accept NAME`, `decline NAME`,
    /// `remove NAME` (also unblocks), `block NAME`.
    Contacts {
        /// What to do (none: list).
        #[arg(value_enum)]
        action: Option<supervox::control::ContactAction>,
        /// Whom.
        name: Option<String>,
        /// A note with the request (add).
        #[arg(long)]
        message: Option<String>,
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Set your presence as your contacts see it: online, away, busy or invisible.
    Presence {
        /// The state.
        state: String,
        /// A status text.
        #[arg(long)]
        text: Option<String>,
    },
    /// Send NAME a message; exits 0 once it is delivered or stored in NAME's mailbox.
    Send {
        /// Recipient.
        name: String,
        /// The text (up to 16 KiB).
        text: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The conversation with NAME, oldest first.
    Messages {
        /// The peer.
        name: String,
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Mark the conversation with NAME read (sends read receipts unless they are off).
    Read {
        /// The peer.
        name: String,
    },
    /// Calls made, received and missed, newest first.
    History {
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Print events as they happen (contact requests, presence, messages, calls) until interrupted.
    Events {
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Accept NAME's new key after a `key_changed` (compare fingerprints first); without NAME,
    /// list the pinned peer keys.
    Trust {
        /// The pinned peer whose pending new key to accept.
        name: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let daemon = matches!(cli.cmd, Cmd::Supernode(_) | Cmd::Node(_));
    if matches!(cli.cmd, Cmd::Supernode(_)) {
        supervox::sys::single_malloc_arena();
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(if daemon { "info" } else { "warn" }));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli.cmd)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A channel that turns true on Ctrl-C or SIGTERM.
fn shutdown_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(t) => t,
            Err(_) => return,
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        let _ = tx.send(true);
    });
    rx
}

/// The local address the host would use to reach `seed` (no packet is sent),
/// with port 0: where a promoted supernode listens by default.
/// The first seed's address (a named one resolved now), for `route_to`.
fn first_seed_addr(seeds: &[supervox_core::host_cache::SeedSpec]) -> Option<SocketAddr> {
    use std::net::ToSocketAddrs;
    use supervox_core::host_cache::SeedSpec;
    match seeds.first()? {
        SeedSpec::Addr(s) => Some(s.addr),
        SeedSpec::Name(n) => (n.host.as_str(), n.port).to_socket_addrs().ok()?.next(),
    }
}

fn route_to(seed: Option<SocketAddr>) -> Result<SocketAddr> {
    let Some(seed) = seed else { bail!("--supernode auto needs a --seed (or --supernode-listen IP:PORT)") };
    let any: SocketAddr = if seed.is_ipv4() { "0.0.0.0:0".parse()? } else { "[::]:0".parse()? };
    let probe = std::net::UdpSocket::bind(any)?;
    probe.connect(seed)?;
    Ok(SocketAddr::new(probe.local_addr()?.ip(), 0))
}

fn parse_network_key(s: &str) -> Result<[u8; 32], String> {
    let v = hex::decode(s.trim()).map_err(|e| format!("not hex: {e}"))?;
    v.try_into().map_err(|v: Vec<u8>| format!("{} bytes; a network key is 32 bytes (64 hex digits)", v.len()))
}

async fn run(cmd: Cmd) -> Result<bool> {
    match cmd {
        Cmd::Supernode(a) => {
            match supervox::sys::raise_nofile_limit() {
                Ok(n) if (n as usize) < a.max_connections => {
                    tracing::warn!("open-file limit {n} is below --max-connections {}", a.max_connections)
                }
                Ok(_) => {}
                Err(e) => tracing::warn!("cannot raise the open-file limit: {e}"),
            }
            let network_key = SecretSource {
                what: "network key",
                flag: "--network-key",
                arg: a.network_key,
                file: a.network_key_file,
                env: "SUPERVOX_NETWORK_KEY",
            }
            .read()?
            .map(|(v, origin)| parse_network_key(&v).map_err(|e| anyhow::anyhow!("network key ({origin:?}): {e}")))
            .transpose()?;
            let relay_secret = SecretSource {
                what: "relay secret",
                flag: "--relay-secret",
                arg: a.relay_secret,
                file: a.relay_secret_file,
                env: "SUPERVOX_RELAY_SECRET",
            }
            .read()?
            .map(|(v, _)| v);
            let opts = SnOptions {
                listen: a.listen,
                seeds: a.seed,
                data_dir: a.data_dir.unwrap_or_else(|| DataDir::default_path("supernode")),
                advertise: a.advertise,
                max_clients: a.max_clients,
                max_connections: a.max_connections,
                max_connections_per_host: a.max_connections_per_host,
                metrics: a.metrics,
                relay_kbps: a.relay_kbps,
                max_allocations: a.max_allocations,
                relay_secret,
                relay_allow_loopback: a.relay_allow_loopback,
                relay_allow_private: a.relay_allow_private,
                relay_tls_listen: a.relay_tls_listen,
                relay_tls_files: a.relay_tls_cert.zip(a.relay_tls_key),
                network_key,
                step_back: None,
                member_difficulty: a.member_difficulty,
                max_members_per_prefix: a.max_members_per_prefix,
            };
            BoundSupernode::bind(opts).await?.run(shutdown_signal()).await?;
            Ok(true)
        }
        Cmd::Node(a) => {
            supervox_proto::record::validate_name(&a.name)?;
            let (relay_transport, external_relay) = relay_settings(&a)?;
            let data_dir = a.data_dir.unwrap_or_else(|| DataDir::default_path(&format!("node-{}", a.name)));
            let control = a.control.unwrap_or_else(|| data_dir.join("control.sock"));
            let supernode = match a.supernode {
                SupernodeMode::Auto => Some(node::PromotionOptions {
                    listen: match a.supernode_listen {
                        Some(l) => l,
                        None => route_to(first_seed_addr(&a.seed))?,
                    },
                    after_ms: a.promote_after * 1000,
                    max_clients: a.supernode_max_clients,
                    step_back_after_ms: a.step_back_after.saturating_mul(1000),
                }),
                SupernodeMode::Never => None,
            };
            use supervox_core::host_cache::SeedSpec;
            let seeds = a.seed.iter().filter_map(|s| if let SeedSpec::Addr(x) = s { Some(*x) } else { None }).collect();
            let named_seeds =
                a.seed.iter().filter_map(|s| if let SeedSpec::Name(n) = s { Some(n.clone()) } else { None }).collect();
            let opts = NodeOptions {
                supernode,
                name: a.name,
                seeds,
                named_seeds,
                data_dir,
                control,
                auto_answer: a.auto_answer,
                input: a.input,
                output: a.output,
                media_bind: a.media,
                media: MediaConfig { jitter_buffer: a.jitter_buffer, fec: matches!(a.fec, OnOff::On) },
                force_relay: a.force_relay,
                relaxed_privacy: a.privacy == Privacy::Relaxed,
                read_receipts: matches!(a.read_receipts, OnOff::On),
                refuse_strangers: a.strangers == Strangers::Refuse,
                relay_transport,
                external_relay,
                ui: match a.ui {
                    None => Some(supervox::ui::UiOptions { allow_remote: a.ui_allow_remote, ..Default::default() }),
                    Some(UiFlag::Off) => None,
                    Some(UiFlag::At(listen)) => {
                        Some(supervox::ui::UiOptions { listen, scan: false, allow_remote: a.ui_allow_remote })
                    }
                },
            };
            node::run(opts, shutdown_signal()).await?;
            Ok(true)
        }
        Cmd::Ctl(c) => run_ctl(c).await,
        Cmd::Ui(u) => open_ui(u).await,
        Cmd::Demo { json, ui } => demo::run(json, ui).await,
    }
}

/// The relay transport and external TURN server a node's flags ask for, checked for conflicts.
fn relay_settings(
    a: &NodeArgs,
) -> Result<(Option<supervox_core::client::RelayTransport>, Option<supervox_core::client::ExternalRelay>)> {
    use supervox_core::client::{ExternalRelay, RelayTransport as Via};
    let tls_server = a.turn_server.is_some_and(|t| t.tls);
    let transport = match a.relay_transport {
        RelayTransport::Auto => None,
        RelayTransport::Tcp if tls_server => {
            anyhow::bail!("--relay-transport tcp conflicts with a turns: --turn-server")
        }
        RelayTransport::Tcp => Some(Via::Tcp),
        RelayTransport::Tls if a.turn_server.is_some() && !tls_server => {
            anyhow::bail!("--relay-transport tls with an external relay: give --turn-server turns:IP:PORT")
        }
        RelayTransport::Tls => Some(Via::Tls),
    };
    match (tls_server, a.turn_tls_fingerprint) {
        (true, None) => anyhow::bail!(
            "a turns: --turn-server needs --turn-tls-fingerprint (the SHA-256 of its certificate: it is pinned)"
        ),
        (false, Some(_)) => anyhow::bail!("--turn-tls-fingerprint is for a turns: --turn-server"),
        _ => {}
    }
    let external = match (a.turn_server, &a.turn_username, &a.turn_password) {
        (Some(t), Some(username), Some(password)) => Some(ExternalRelay {
            server: t.addr,
            username: username.clone(),
            password: password.clone(),
            tls: a.turn_tls_fingerprint.filter(|_| t.tls),
        }),
        _ => None,
    };
    Ok((transport, external))
}

/// `supervox ui`: a one-time login link from the node, opened in the browser.
async fn open_ui(u: UiArgs) -> Result<bool> {
    let control = match (u.control, u.name) {
        (Some(c), _) => c,
        (None, Some(n)) => DataDir::default_path(&format!("node-{n}")).join("control.sock"),
        (None, None) => bail!("give --control PATH or --name NAME"),
    };
    let lines = ctl::request(&control, &Request::UiLogin, |_| {}).await?;
    let v = lines.first().cloned().unwrap_or_default();
    let Some(url) = v["url"].as_str() else {
        bail!("{}", v["error"].as_str().unwrap_or("no answer from the node"));
    };
    println!("{url}");
    if !u.print {
        // The link works once, within a minute; a failed browser start leaves it printed.
        let opened = std::process::Command::new("xdg-open")
            .arg(url)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        if !opened.is_ok_and(|s| s.success()) {
            eprintln!("(no browser started: open the link above within a minute)");
        }
    }
    Ok(true)
}

async fn run_ctl(c: CtlArgs) -> Result<bool> {
    match c.cmd {
        CtlCmd::Status { json } => {
            let lines = ctl::request(&c.control, &Request::Status, |_| {}).await?;
            let v = lines.first().cloned().unwrap_or_default();
            if json {
                println!("{v}");
            } else {
                println!("name:        {}", v["name"].as_str().unwrap_or("?"));
                println!("user id:     {}", v["user_id"].as_str().unwrap_or("?"));
                println!("fingerprint: {}", v["fingerprint"].as_str().unwrap_or("?"));
                println!("role:        {}", v["role"].as_str().unwrap_or("?"));
                println!("supernode:   {}", v["supernode"].as_str().unwrap_or("(not signed in)"));
                if let Some(call) = v["call"].as_object() {
                    let confirmed = call["verified"] == "directory" || call["verified"] == "contact";
                    let mark = if confirmed { "" } else { " (unverified)" };
                    println!("call:        {} with {}{mark}", call["state"], call["peer"]);
                    if let Some(fp) = call["fingerprint"].as_str() {
                        println!("peer fingerprint: {fp}");
                    }
                }
            }
            Ok(true)
        }
        CtlCmd::Call { name, duration, input, output, json } => {
            let req = Request::Call {
                name,
                duration,
                input: input.map(|s| s.to_string()),
                output: output.map(|s| s.to_string()),
                detach: false,
            };
            let events = ctl::request(&c.control, &req, |v| {
                if json {
                    println!("{v}");
                } else {
                    println!("{}", ctl::describe(v));
                }
            })
            .await?;
            Ok(ctl::call_succeeded(&events))
        }
        CtlCmd::Trust { name, json } => {
            let req = match name {
                Some(name) => Request::Trust { name },
                None => Request::Pins,
            };
            let lines = ctl::request(&c.control, &req, |_| {}).await?;
            let v = lines.first().cloned().unwrap_or_default();
            if json {
                println!("{v}");
            } else if let Some(pins) = v["pins"].as_array() {
                for p in pins {
                    let pending = p["pending_fingerprint"].as_str().map(|f| format!(" (changed key pending: {f})"));
                    println!(
                        "{:<24} {}{}",
                        p["name"].as_str().unwrap_or("?"),
                        p["fingerprint"].as_str().unwrap_or("?"),
                        pending.unwrap_or_default()
                    );
                }
            } else if v["ok"] == true {
                println!(
                    "{} is now pinned to {} (was {})",
                    v["peer"].as_str().unwrap_or("?"),
                    v["fingerprint"].as_str().unwrap_or("?"),
                    v["old_fingerprint"].as_str().unwrap_or("?")
                );
            }
            if v["ok"] == false {
                eprintln!("error: {}", v["error"].as_str().unwrap_or("no answer from node"));
            }
            Ok(v["ok"] == true)
        }
        CtlCmd::Contacts { action, name, message, json } => {
            let listing = action.is_none();
            let lines = ctl::request(&c.control, &Request::Contacts { action, name, message }, |_| {}).await?;
            Ok(print_lines(&lines, json, listing, |v| {
                format!(
                    "{:<24} {:<9} {:<8} {}{}",
                    v["name"].as_str().unwrap_or("?"),
                    v["state"].as_str().unwrap_or("?"),
                    v["presence"].as_str().unwrap_or("?"),
                    v["fingerprint"].as_str().unwrap_or("?"),
                    v["status_text"]
                        .as_str()
                        .filter(|t| !t.is_empty())
                        .map(|t| format!("  \"{t}\""))
                        .unwrap_or_default()
                )
            }))
        }
        CtlCmd::Presence { state, text } => {
            let lines = ctl::request(&c.control, &Request::Presence { state, text }, |_| {}).await?;
            Ok(print_lines(&lines, false, false, |_| String::new()))
        }
        CtlCmd::Read { name } => {
            let lines = ctl::request(&c.control, &Request::Read { name }, |_| {}).await?;
            Ok(print_lines(&lines, false, false, |_| String::new()))
        }
        CtlCmd::Send { name, text, json } => {
            let lines = ctl::request(&c.control, &Request::Send { name, text }, |_| {}).await?;
            let v = lines.first().cloned().unwrap_or_default();
            let ok = v["event"] == "message";
            if json {
                println!("{v}");
            } else if ok {
                println!("message {} {}", v["id"].as_str().unwrap_or("?"), v["status"].as_str().unwrap_or("?"));
            } else {
                eprintln!("error: {}", v["error"].as_str().unwrap_or("no answer from node"));
            }
            Ok(ok)
        }
        CtlCmd::Messages { name, json } => {
            let lines = ctl::request(&c.control, &Request::Messages { name }, |_| {}).await?;
            Ok(print_lines(&lines, json, true, |v| {
                format!(
                    "[{}] {}: {} ({})",
                    v["sent_ms"],
                    v["from"].as_str().unwrap_or("?"),
                    v["text"].as_str().unwrap_or(""),
                    v["status"].as_str().unwrap_or("?")
                )
            }))
        }
        CtlCmd::History { json } => {
            let lines = ctl::request(&c.control, &Request::History, |_| {}).await?;
            Ok(print_lines(&lines, json, true, |v| {
                format!(
                    "[{}] {} {} {} ms over {} (MOS {}){}",
                    v["start_ms"],
                    v["direction"].as_str().unwrap_or("?"),
                    v["peer"].as_str().unwrap_or("?"),
                    v["duration_ms"],
                    v["path"].as_str().unwrap_or("-"),
                    v["mos"],
                    if v["missed"] == true { " MISSED" } else { "" }
                )
            }))
        }
        CtlCmd::Events { json } => {
            ctl::request(&c.control, &Request::Events, |v| {
                if json {
                    println!("{v}");
                } else {
                    println!("{}", ctl::describe(v));
                }
            })
            .await?;
            Ok(true)
        }
        CtlCmd::Hangup | CtlCmd::Answer => {
            let req = if matches!(c.cmd, CtlCmd::Hangup) { Request::Hangup } else { Request::Answer };
            let lines = ctl::request(&c.control, &req, |_| {}).await?;
            let v = lines.first().cloned().unwrap_or_default();
            if v["ok"] == true {
                println!("ok");
                Ok(true)
            } else {
                eprintln!("error: {}", v["error"].as_str().unwrap_or("no answer from node"));
                Ok(false)
            }
        }
    }
}

/// Print a control answer: an error line fails; a listing prints each line
/// (`human` renders one), an action prints "ok".
fn print_lines(
    lines: &[serde_json::Value],
    json: bool,
    listing: bool,
    human: impl Fn(&serde_json::Value) -> String,
) -> bool {
    if let Some(e) = lines.iter().find(|v| v["ok"] == false) {
        if json {
            println!("{e}");
        } else {
            eprintln!("error: {}", e["error"].as_str().unwrap_or("?"));
        }
        return false;
    }
    for v in lines {
        match (json, listing) {
            (true, _) => println!("{v}"),
            (false, true) => println!("{}", human(v)),
            (false, false) => println!("ok"),
        }
    }
    true
}
