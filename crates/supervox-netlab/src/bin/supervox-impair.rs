//! `supervox-impair`: two network namespaces joined by a user-space impaired link, with a
//! command run in each.

use std::process::ExitCode;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use supervox_netlab::{
    parse_burst, parse_bytes, parse_duration, parse_probability, parse_rate, Direction, Impairment, JitterDistribution,
    Lab, LinkConfig, Namespace, NsProcess,
};

const LONG_ABOUT: &str = "\
Sets up two network namespaces, A and B, joined by a point-to-point IPv4 link (A = 10.77.0.1, \
B = 10.77.0.2, /30) whose packets pass through a user-space forwarder that adds delay, jitter, \
random and bursty loss and a rate limit. This replaces `tc qdisc ... netem`, which this kernel \
lacks.

The command given with --a runs in A and the one given with --b in B, each through `sh -c`, \
with these variables set: SVL_SELF and SVL_PEER (own and peer address), SVL_ADDR_A, SVL_ADDR_B, \
SVL_NS_A, SVL_NS_B (namespace names). The run ends when the command chosen by --wait ends \
(default: A's if given, else B's), after --duration, or on Ctrl-C / SIGTERM; every command still \
running is then killed, the namespaces are deleted and the link counters are printed on stderr. \
The exit code is that of the awaited command. Without commands the link stays up until Ctrl-C \
(or --duration); use `ip netns exec <name> ...` with the printed names meanwhile.

The symmetric options (--delay, --jitter, ...) set both directions; --ab and --ba then override \
one direction with a spec such as 'delay=40ms,jitter=10ms,loss=2%,burst=0.05:0.3,rate=1mbit,\
queue=64k,dist=normal,reorder'. --at '10s=jitter=40ms' changes both directions 10 s after the \
start (--at '10s:ab=...' only one direction); it can be repeated.

Example:
  supervox-impair --delay 25ms --jitter 20ms --loss 10% --burst 0.05,0.3 \\
      --b 'exec my-server --listen $SVL_SELF:4000' --a 'my-client $SVL_PEER:4000'

Needs root, iproute2 and /dev/net/tun.";

/// Two namespaces joined by a user-space impaired link (delay, jitter, loss, bursty loss, rate).
#[derive(Debug, Parser)]
#[command(name = "supervox-impair", version, about, long_about = LONG_ABOUT)]
struct Args {
    /// Fixed one-way delay, each direction (e.g. 25ms, 0.1s).
    #[arg(long, value_parser = parse_duration, default_value = "0ms")]
    delay: Duration,
    /// Jitter: half-width of a uniform distribution, or standard deviation with --dist normal.
    #[arg(long, value_parser = parse_duration, default_value = "0ms")]
    jitter: Duration,
    /// Jitter distribution.
    #[arg(long, value_enum, default_value_t = Dist::Uniform)]
    dist: Dist,
    /// Let jittered packets overtake each other (by default FIFO order is kept).
    #[arg(long)]
    reorder: bool,
    /// Independent random loss, e.g. 10% or 0.1.
    #[arg(long, value_parser = parse_probability, default_value = "0")]
    loss: f64,
    /// Gilbert-Elliott bursty loss: p,r[,loss_bad[,loss_good]] (good->bad and bad->good
    /// transition probabilities per packet; mean burst 1/r, loss p/(p+r)).
    #[arg(long, value_name = "P,R", value_parser = parse_burst)]
    burst: Option<supervox_netlab::GilbertElliott>,
    /// Rate limit in bits per second, e.g. 1mbit, 64kbit.
    #[arg(long, value_parser = parse_rate)]
    rate: Option<u64>,
    /// Rate limiter queue in bytes (e.g. 64k); packets beyond it are dropped.
    #[arg(long, value_parser = parse_bytes, default_value = "64k")]
    queue: usize,
    /// Impairment spec for A->B only, replacing the symmetric options for that direction.
    #[arg(long, value_name = "SPEC")]
    ab: Option<Impairment>,
    /// Impairment spec for B->A only, replacing the symmetric options for that direction.
    #[arg(long, value_name = "SPEC")]
    ba: Option<Impairment>,
    /// Change the impairment at a time after start: TIME=SPEC (both directions) or
    /// TIME:ab=SPEC / TIME:ba=SPEC. Repeatable.
    #[arg(long = "at", value_name = "TIME[:DIR]=SPEC", value_parser = parse_change)]
    changes: Vec<Change>,
    /// Random seed (the same seed gives the same losses and jitter for the same traffic).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// MTU of the link.
    #[arg(long)]
    mtu: Option<u32>,
    /// Do not ask for real-time (SCHED_FIFO) priority for the forwarder thread.
    #[arg(long)]
    no_realtime: bool,
    /// Shell command to run in namespace A.
    #[arg(long = "a", value_name = "CMD")]
    cmd_a: Option<String>,
    /// Shell command to run in namespace B.
    #[arg(long = "b", value_name = "CMD")]
    cmd_b: Option<String>,
    /// Which command's end ends the run.
    #[arg(long, value_enum)]
    wait: Option<Wait>,
    /// End the run after this long at the latest.
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Delay between starting B's command and A's (lets a server in B bind first).
    #[arg(long, value_parser = parse_duration, default_value = "100ms")]
    stagger: Duration,
    /// Print no banner, only the final counters.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Dist {
    Uniform,
    Normal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Wait {
    /// Until A's command ends.
    A,
    /// Until B's command ends.
    B,
    /// Until both end.
    All,
    /// Until either ends.
    Any,
}

#[derive(Debug, Clone)]
struct Change {
    at: Duration,
    direction: Option<Direction>,
    impairment: Impairment,
}

fn parse_change(s: &str) -> Result<Change, String> {
    let (head, spec) = s.split_once('=').ok_or_else(|| format!("{s:?}: expected TIME[:DIR]=SPEC"))?;
    let (time, direction) = match head.split_once(':') {
        Some((t, d)) => (t, Some(d.parse::<Direction>().map_err(|e| e.to_string())?)),
        None => (head, None),
    };
    let at = parse_duration(time).map_err(|e| e.to_string())?;
    let impairment = spec.parse::<Impairment>().map_err(|e| e.to_string())?;
    Ok(Change { at, direction, impairment })
}

/// Last signal received (SIGINT or SIGTERM), 0 if none.
static SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    SIGNAL.store(sig, Ordering::SeqCst);
}

fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe; the
        // sigaction struct is zero-initialised and then filled in.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as *const () as libc::sighandler_t;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(sig, &action, std::ptr::null_mut());
        }
    }
}

impl Args {
    fn impairments(&self) -> (Impairment, Impairment) {
        let distribution = match self.dist {
            Dist::Uniform => JitterDistribution::Uniform,
            Dist::Normal => JitterDistribution::Normal,
        };
        let symmetric = Impairment {
            delay: self.delay,
            jitter: self.jitter,
            jitter_distribution: distribution,
            reorder: self.reorder,
            loss: self.loss,
            burst: self.burst,
            rate_bps: self.rate,
            queue_bytes: self.queue,
        };
        (self.ab.clone().unwrap_or_else(|| symmetric.clone()), self.ba.clone().unwrap_or(symmetric))
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("supervox-impair: {e}");
            ExitCode::from(2)
        }
    }
}

fn spawn_in(
    ns: &Namespace,
    script: &str,
    me: &str,
    peer: &str,
    env: &[(&str, String)],
) -> supervox_netlab::Result<NsProcess> {
    let mut cmd = ns.shell(script);
    cmd.env("SVL_SELF", me).env("SVL_PEER", peer);
    for (k, v) in env {
        cmd.env(k, v);
    }
    ns.spawn(cmd)
}

fn run(args: Args) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let (ab, ba) = args.impairments();
    ab.validate()?;
    ba.validate()?;
    install_signal_handlers();

    let lab = Lab::new()?;
    let a = lab.namespace("a")?;
    let b = lab.namespace("b")?;
    let mut config = LinkConfig::new(ab.clone(), ba.clone()).with_seed(args.seed).with_realtime(!args.no_realtime);
    if let Some(mtu) = args.mtu {
        config = config.with_mtu(mtu);
    }
    let link = lab.link(&a, &b, config)?;
    let (addr_a, addr_b) = (link.addr_a().to_string(), link.addr_b().to_string());
    if !args.quiet {
        eprintln!(
            "supervox-impair: A = {} ({addr_a}), B = {} ({addr_b}), device {}",
            a.name(),
            b.name(),
            link.ifname()
        );
        eprintln!("supervox-impair: a->b {ab}");
        eprintln!("supervox-impair: b->a {ba}");
        if !args.no_realtime && !link.is_realtime() {
            eprintln!(
                "supervox-impair: warning: no real-time priority for the forwarder; delays may be late under load"
            );
        }
    }

    let env = [
        ("SVL_ADDR_A", addr_a.clone()),
        ("SVL_ADDR_B", addr_b.clone()),
        ("SVL_NS_A", a.name().to_string()),
        ("SVL_NS_B", b.name().to_string()),
    ];
    let start = Instant::now();
    let proc_b = args.cmd_b.as_deref().map(|c| spawn_in(&b, c, &addr_b, &addr_a, &env)).transpose()?;
    if proc_b.is_some() && args.cmd_a.is_some() {
        std::thread::sleep(args.stagger);
    }
    let proc_a = args.cmd_a.as_deref().map(|c| spawn_in(&a, c, &addr_a, &addr_b, &env)).transpose()?;
    let wait = args.wait.unwrap_or(if proc_a.is_some() { Wait::A } else { Wait::B });
    if !args.quiet && proc_a.is_none() && proc_b.is_none() {
        eprintln!("supervox-impair: link up; press Ctrl-C to stop");
    }

    let mut changes = args.changes.clone();
    changes.sort_by_key(|c| c.at);
    let mut changes = changes.into_iter().peekable();
    let mut status_a = None;
    let mut status_b = None;
    let outcome = loop {
        let elapsed = start.elapsed();
        while let Some(change) = changes.next_if(|c| c.at <= elapsed) {
            match change.direction {
                Some(dir) => link.set(dir, change.impairment.clone())?,
                None => link.set_both(change.impairment.clone())?,
            }
            if !args.quiet {
                let which = change.direction.map_or("both".to_string(), |d| d.to_string());
                eprintln!("supervox-impair: at {:?}: {which} now {}", change.at, change.impairment);
            }
        }
        if status_a.is_none() {
            if let Some(p) = &proc_a {
                status_a = p.try_wait()?;
            }
        }
        if status_b.is_none() {
            if let Some(p) = &proc_b {
                status_b = p.try_wait()?;
            }
        }
        let done_a = proc_a.is_none() || status_a.is_some();
        let done_b = proc_b.is_none() || status_b.is_some();
        let have_cmd = proc_a.is_some() || proc_b.is_some();
        let finished = have_cmd
            && match wait {
                Wait::A => proc_a.is_some() && done_a || proc_a.is_none() && done_b,
                Wait::B => proc_b.is_some() && done_b || proc_b.is_none() && done_a,
                Wait::All => done_a && done_b,
                Wait::Any => status_a.is_some() || status_b.is_some(),
            };
        if finished {
            break None;
        }
        let sig = SIGNAL.load(Ordering::SeqCst);
        if sig != 0 {
            break Some(format!("signal {sig}"));
        }
        if args.duration.is_some_and(|d| elapsed >= d) {
            break Some("duration reached".to_string());
        }
        if !link.is_running() {
            return Err(format!("the forwarder stopped: {}", link.error().unwrap_or_default()).into());
        }
        std::thread::sleep(Duration::from_millis(10));
    };

    for p in [&proc_a, &proc_b].into_iter().flatten() {
        if p.try_wait()?.is_none() {
            p.kill()?;
        }
    }
    let stats = link.stats();
    eprintln!("supervox-impair: a->b {}", stats.a_to_b);
    eprintln!("supervox-impair: b->a {}", stats.b_to_a);
    if let Some(reason) = &outcome {
        if !args.quiet {
            eprintln!("supervox-impair: stopped ({reason})");
        }
    }

    let awaited = match wait {
        Wait::A | Wait::Any if status_a.is_some() => status_a,
        Wait::B | Wait::Any => status_b.or(status_a),
        Wait::A => status_a.or(status_b),
        Wait::All => [status_a, status_b].into_iter().flatten().find(|s| !s.success()).or(status_a).or(status_b),
    };
    let code = match (outcome, awaited) {
        (None, Some(status)) => status.code().map_or(1, |c| c.clamp(0, 255)),
        // Ended by a signal, the duration, or with no command: success.
        _ => 0,
    };
    drop(link);
    drop(lab);
    Ok(ExitCode::from(code as u8))
}
