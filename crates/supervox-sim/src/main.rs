//! `supervox-sim SCENARIO --supernodes N --clients M --seed S [--duration SECS] [--json]`
//!
//! Runs one scenario and prints its summary table (or, with `--json`, the
//! summary as one JSON object). See the crate README.

use clap::Parser;
use supervox_sim::{CrashMode, Scenario, Sim, SimConfig};

/// Deterministic supervox network simulator.
#[derive(Debug, Parser)]
#[command(name = "supervox-sim", version, about)]
struct Args {
    /// steady, mass-crash or flash-crowd.
    scenario: Scenario,
    /// Supernodes at the start.
    #[arg(long)]
    supernodes: usize,
    /// Clients.
    #[arg(long)]
    clients: usize,
    /// Seed of every random choice: the same seed prints the same figures.
    #[arg(long)]
    seed: u64,
    /// Virtual run length, seconds (default per scenario).
    #[arg(long)]
    duration: Option<u64>,
    /// Warm-up, seconds (default 60): nothing is measured before it ends.
    #[arg(long)]
    warmup: Option<u64>,
    /// Clients per supernode before it redirects (default 3× the average).
    #[arg(long)]
    max_clients: Option<usize>,
    /// Lookups per second over the whole network (default clients/50, 1-20).
    #[arg(long)]
    lookup_rate: Option<f64>,
    /// Share of client messages that need a TCP retransmission, and of overlay datagrams lost (0-1, default 0).
    #[arg(long)]
    loss: Option<f64>,
    /// Steady: churn this many times faster than the real network (default
    /// 10: median supernode session 33 min instead of 5.5 h); 0 disables churn.
    #[arg(long)]
    churn_speedup: Option<f64>,
    /// How the supernodes start: cold (one by one over the first seconds,
    /// joining through seeds) or warm (all at once, each holding the member
    /// list its Join would fetch). Default: warm from 2000 supernodes on.
    #[arg(long, value_enum)]
    start: Option<Start>,
    /// How dead nodes disappear: process (connections reset) or silent
    /// (host gone: keepalive timeout).
    #[arg(long, default_value = "process")]
    crash_mode: CrashMode,
    /// Print a progress line to stderr every SECS virtual seconds.
    #[arg(long, value_name = "SECS")]
    progress: Option<u64>,
    /// Stop after SECS of wall time and report what was measured so far
    /// (such a run is not reproducible; the table says it stopped early).
    #[arg(long, value_name = "SECS")]
    max_wall: Option<u64>,
    /// Stop when resident memory exceeds MIB (0: no limit), to protect a
    /// shared machine; the table says it stopped early.
    #[arg(long, value_name = "MIB", default_value_t = 8192)]
    max_rss_mib: u64,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
    /// Also leave offline mail for signed-out users and send peer messages
    /// between signed-in ones, and report their figures (crate README).
    #[arg(long)]
    mail: bool,
    /// With --mail: items left per second over the network (default clients/100, 1-50).
    #[arg(long, requires = "mail")]
    mail_rate: Option<f64>,
    /// With --mail: peer messages per second over the network (default as --mail-rate).
    #[arg(long, requires = "mail")]
    peer_rate: Option<f64>,
    /// With --mail, mass crash / steady without churn: share of clients that
    /// sign out after the warm-up and back in after the event (default 0.1).
    #[arg(long, requires = "mail")]
    mail_away: Option<f64>,
    /// With --mail: a sender puts an undelivered item again every SECS
    /// (default 60; 0: only failed or unanswered puts are put again).
    #[arg(long, value_name = "SECS", requires = "mail")]
    mail_reput: Option<u64>,
    /// Share of the supernodes (0-0.5) that are Byzantine: they forge
    /// lookup answers, lie about claims, censor, falsely accuse members and
    /// try to hijack the names they hold (crate README).
    #[arg(long, value_name = "SHARE")]
    byzantine: Option<f64>,
}

/// How supernodes start (see `--start`).
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Start {
    Cold,
    Warm,
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("supervox-sim: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

fn run() -> Result<(), String> {
    let a = Args::parse();
    // The core logs through `tracing`; RUST_LOG=supervox_core=info shows it
    // (with wall-clock timestamps, not virtual ones).
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .without_time()
            .with_writer(std::io::stderr)
            .init();
    }
    let mut cfg = SimConfig::new(a.scenario, a.supernodes, a.clients, a.seed);
    if let Some(w) = a.warmup {
        let shift = (w * 1000) as i64 - cfg.warmup_ms as i64;
        cfg.warmup_ms = w * 1000;
        cfg.duration_ms = (cfg.duration_ms as i64 + shift).max(0) as u64;
    }
    if let Some(d) = a.duration {
        cfg.duration_ms = d * 1000;
    }
    if let Some(m) = a.max_clients {
        cfg.max_clients = m;
    }
    if let Some(r) = a.lookup_rate {
        cfg.lookup_rate = r;
    }
    if let Some(l) = a.loss {
        cfg.loss = l;
    }
    if let Some(s) = a.start {
        cfg.warm_start = matches!(s, Start::Warm);
    }
    if let Some(s) = a.churn_speedup {
        cfg.churn_speedup = s;
    }
    if a.mail {
        let mut m = supervox_sim::MailConfig::new(a.clients);
        if let Some(r) = a.mail_rate {
            m.rate = r;
        }
        if let Some(r) = a.peer_rate {
            m.peer_rate = r;
        }
        if let Some(s) = a.mail_away {
            m.away_share = s;
        }
        if let Some(s) = a.mail_reput {
            m.reput_ms = (s > 0).then_some(s * 1000);
        }
        cfg.mail = Some(m);
    }
    if let Some(b) = a.byzantine {
        cfg.byzantine = b;
    }
    cfg.crash_mode = a.crash_mode;
    cfg.progress_s = a.progress;
    cfg.max_wall_s = a.max_wall;
    cfg.max_rss_mib = (a.max_rss_mib > 0).then_some(a.max_rss_mib);
    let sim = Sim::new(cfg)?;
    let report = sim.run();
    if let Some(why) = report.stopped {
        eprintln!("warning: stopped early ({why}) at virtual {:.1} s; figures cover only that part", report.virtual_s);
    }
    if a.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.table());
    }
    Ok(())
}
