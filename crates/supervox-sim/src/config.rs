//! Scenario selection and every knob of a run, with the defaults each
//! scenario uses.

use std::fmt;
use std::str::FromStr;

/// Unix time (ms) at which virtual time starts: presence records carry
/// wall-clock expiry, so the clock must look like a real one.
pub const EPOCH_MS: u64 = 1_700_000_000_000;

/// Median supernode session of the real network (5.5 h), before speed-up.
pub const SN_SESSION_MEDIAN_MS: f64 = 5.5 * 3_600_000.0;
/// Median client session (1 h), before speed-up.
pub const CLIENT_SESSION_MEDIAN_MS: f64 = 3_600_000.0;
/// Median time a client stays away between sessions (30 min), before speed-up.
pub const CLIENT_OFFLINE_MEDIAN_MS: f64 = 1_800_000.0;
/// Length of the flash crowd's restart wave (the 2007 event: every client
/// restarts within 10 minutes).
pub const FLASH_WAVE_MS: u64 = 600_000;
/// Share of supernodes the mass crash kills (the 2010 event).
pub const MASS_CRASH_SHARE: f64 = 0.30;

/// The scenario to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// Steady state with churn of supernodes and clients.
    Steady,
    /// 30% of the supernodes die at once after warm-up.
    MassCrash,
    /// Every client restarts within 10 minutes.
    FlashCrowd,
}

impl Scenario {
    /// The name used on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Scenario::Steady => "steady",
            Scenario::MassCrash => "mass-crash",
            Scenario::FlashCrowd => "flash-crowd",
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scenario {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "steady" => Ok(Scenario::Steady),
            "mass-crash" => Ok(Scenario::MassCrash),
            "flash-crowd" => Ok(Scenario::FlashCrowd),
            other => Err(format!("unknown scenario {other:?}: use steady, mass-crash or flash-crowd")),
        }
    }
}

/// How a dying node's connections end, as seen by its peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashMode {
    /// The process dies, the host stays up: its kernel resets every
    /// connection (peers learn after one one-way delay) and refuses new ones.
    Process,
    /// The host vanishes: peers notice only when the link's keepalive gives
    /// up (`DEAD_AFTER_MS`), and dials to it time out.
    Silent,
}

impl FromStr for CrashMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "process" => Ok(CrashMode::Process),
            "silent" => Ok(CrashMode::Silent),
            other => Err(format!("unknown crash mode {other:?}: use process or silent")),
        }
    }
}

/// From this many supernodes on, runs start warm by default: a cold start
/// of 10 000 supernodes within seconds is a join storm no real network
/// sees, and its 10^8 member-list entries in flight outgrow the machine.
pub const WARM_START_FROM: usize = 2_000;

/// Everything that shapes a run. [`SimConfig::new`] fills in the defaults
/// of a scenario; every field can then be overridden.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The scenario.
    pub scenario: Scenario,
    /// Supernodes at the start (steady replaces each one that leaves).
    pub supernodes: usize,
    /// Clients.
    pub clients: usize,
    /// Seed of every random choice.
    pub seed: u64,
    /// Virtual run length, ms.
    pub duration_ms: u64,
    /// Warm-up, ms: supernodes start, clients arrive; nothing is measured.
    pub warmup_ms: u64,
    /// `max_clients` of every supernode.
    pub max_clients: usize,
    /// Copies of each record in the index.
    pub replicas: usize,
    /// Lookups per second over the whole network.
    pub lookup_rate: f64,
    /// Probability that a message needs a TCP retransmission.
    pub loss: f64,
    /// Churn is this many times faster than in the real network (steady).
    pub churn_speedup: f64,
    /// How crashed supernodes and clients disappear.
    pub crash_mode: CrashMode,
    /// Supernodes a new client has in its host cache (its installer's seed list).
    pub client_seeds: usize,
    /// Supernodes a new supernode is given as `--seed`.
    pub sn_seeds: usize,
    /// Supernode tick period, ms (the daemon uses 250).
    pub sn_tick_ms: u64,
    /// Start every supernode at once, each already holding the member list
    /// its Join would fetch (see the crate README); otherwise they come up
    /// one by one over the first seconds and join through seeds.
    pub warm_start: bool,
    /// Print a progress line to stderr every this many virtual seconds.
    pub progress_s: Option<u64>,
    /// Stop (and report what was measured so far) after this much wall
    /// time. A run cut short this way is not reproducible.
    pub max_wall_s: Option<u64>,
    /// Stop (like `max_wall_s`) when the process's resident memory exceeds
    /// this many MiB (Linux only), to protect a shared machine.
    pub max_rss_mib: Option<u64>,
    /// Offline mail and peer messages driven on top of the scenario
    /// (`--mail`); `None`: neither is sent.
    pub mail: Option<MailConfig>,
    /// Share of the supernodes at the start that are Byzantine (every
    /// attack of the core's test tool on); 0: none.
    pub byzantine: f64,
}

/// Offline mail and peer messages (`--mail`, see the crate README): senders
/// leave mail for signed-out users with the real `Client::leave_mail`, the
/// recipients fetch it when they sign in again, and online pairs exchange
/// peer messages (`lookup_peer` + `send_peer`), the path presence changes take.
#[derive(Debug, Clone, PartialEq)]
pub struct MailConfig {
    /// Mail items left per second over the whole network.
    pub rate: f64,
    /// Peer messages between online pairs per second over the whole network.
    pub peer_rate: f64,
    /// Mass crash and flash crowd (which have no client churn of their own):
    /// this share of the clients signs out after the warm-up and back in
    /// after the event, so there is someone to leave mail for.
    pub away_share: f64,
    /// A sender puts a stored, still undelivered item again this often, as a
    /// sender keeping its messages until delivered does (`None`: only items
    /// whose put failed or went unanswered are put again).
    pub reput_ms: Option<u64>,
}

impl MailConfig {
    /// Defaults for `clients` clients: a mail item per 100 clients a second
    /// and as many peer messages (each between 1 and 50 a second), a tenth
    /// of the clients away, re-puts every 60 s.
    pub fn new(clients: usize) -> Self {
        let rate = (clients as f64 / 100.0).clamp(1.0, 50.0);
        Self { rate, peer_rate: rate, away_share: 0.1, reput_ms: Some(60_000) }
    }
}

impl SimConfig {
    /// The defaults of `scenario` for `supernodes` and `clients`.
    pub fn new(scenario: Scenario, supernodes: usize, clients: usize, seed: u64) -> Self {
        let warmup_ms = 60_000;
        let duration_ms = match scenario {
            Scenario::Steady => 600_000,
            Scenario::MassCrash => warmup_ms + 60_000 + 180_000,
            Scenario::FlashCrowd => warmup_ms + 60_000 + FLASH_WAVE_MS + 180_000,
        };
        let per_sn = clients.div_ceil(supernodes.max(1));
        Self {
            scenario,
            supernodes,
            clients,
            seed,
            duration_ms,
            warmup_ms,
            max_clients: (3 * per_sn).max(10),
            replicas: supervox_core::supernode::DEFAULT_REPLICAS,
            lookup_rate: (clients as f64 / 50.0).clamp(1.0, 20.0),
            loss: 0.0,
            churn_speedup: 10.0,
            crash_mode: CrashMode::Process,
            client_seeds: 8,
            sn_seeds: 3,
            sn_tick_ms: 250,
            warm_start: supernodes >= WARM_START_FROM,
            progress_s: None,
            max_wall_s: None,
            max_rss_mib: None,
            mail: None,
            byzantine: 0.0,
        }
    }

    /// When the scenario's event happens (mass crash, start of the restart
    /// wave); `None` for steady.
    pub fn event_ms(&self) -> Option<u64> {
        match self.scenario {
            Scenario::Steady => None,
            Scenario::MassCrash | Scenario::FlashCrowd => Some(self.warmup_ms + 60_000),
        }
    }

    /// Check the settings make sense.
    pub fn validate(&self) -> Result<(), String> {
        if self.supernodes == 0 {
            return Err("--supernodes must be at least 1".into());
        }
        if self.clients < 2 {
            return Err("--clients must be at least 2 (lookups need a caller and a callee)".into());
        }
        if self.duration_ms <= self.warmup_ms + 10_000 {
            return Err(format!("--duration must exceed the warm-up ({} s) by at least 10 s", self.warmup_ms / 1000));
        }
        if let Some(e) = self.event_ms() {
            if self.duration_ms <= e {
                return Err(format!("--duration must exceed the event time ({} s)", e / 1000));
            }
        }
        if !(0.0..1.0).contains(&self.loss) {
            return Err("--loss must be in [0, 1)".into());
        }
        if !(self.lookup_rate.is_finite() && self.lookup_rate >= 0.0) {
            return Err("--lookup-rate must be a non-negative number".into());
        }
        if !(self.churn_speedup.is_finite() && self.churn_speedup >= 0.0) {
            return Err("--churn-speedup must be a non-negative number".into());
        }
        if let Some(m) = &self.mail {
            let rate_ok = |r: f64| r.is_finite() && r >= 0.0;
            if !rate_ok(m.rate) || !rate_ok(m.peer_rate) {
                return Err("--mail-rate and --peer-rate must be non-negative numbers".into());
            }
            if !(0.0..=1.0).contains(&m.away_share) {
                return Err("--mail-away must be in [0, 1]".into());
            }
            if m.reput_ms == Some(0) {
                return Err("--mail-reput must be positive (0 s would put again at once)".into());
            }
        }
        if !(0.0..=0.5).contains(&self.byzantine) {
            return Err("--byzantine must be in [0, 0.5]".into());
        }
        if self.max_clients == 0 || self.sn_tick_ms == 0 {
            return Err("--max-clients and the supernode tick period must be positive".into());
        }
        Ok(())
    }
}
