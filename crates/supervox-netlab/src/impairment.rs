//! What an impaired link does to the packets of one direction, and how to write it down.
//!
//! An [`Impairment`] can be built in code or parsed from a compact spec string, the form the
//! `supervox-impair` tool and scripts use:
//!
//! ```
//! use supervox_netlab::Impairment;
//! use std::time::Duration;
//!
//! let imp: Impairment = "delay=25ms,jitter=20ms,loss=10%,burst=0.05:0.3,rate=2mbit,reorder".parse().unwrap();
//! assert_eq!(imp.delay, Duration::from_millis(25));
//! assert!((imp.loss - 0.10).abs() < 1e-9);
//! assert!(imp.reorder);
//! ```

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::error::{Error, Result};

/// Shape of the random jitter added to the fixed delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum JitterDistribution {
    /// Uniform in `[-jitter, +jitter]` (as `netem delay D J` does).
    #[default]
    Uniform,
    /// Normal with standard deviation `jitter`.
    Normal,
}

impl FromStr for JitterDistribution {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "uniform" => Ok(JitterDistribution::Uniform),
            "normal" | "gaussian" => Ok(JitterDistribution::Normal),
            other => Err(Error::InvalidArgument(format!("unknown jitter distribution {other:?} (uniform|normal)"))),
        }
    }
}

impl fmt::Display for JitterDistribution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            JitterDistribution::Uniform => "uniform",
            JitterDistribution::Normal => "normal",
        })
    }
}

/// Gilbert–Elliott two-state bursty loss model.
///
/// The model has a *good* and a *bad* state. Before each packet the state may change: from good
/// to bad with probability `p`, from bad to good with probability `r`. The packet is then lost
/// with probability `loss_good` or `loss_bad` depending on the state. With the classic Gilbert
/// settings (`loss_good = 0`, `loss_bad = 1`) the mean loss burst length is `1 / r` packets and
/// the long-run loss rate is `p / (p + r)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GilbertElliott {
    /// Probability of moving from the good to the bad state, per packet.
    pub p: f64,
    /// Probability of moving from the bad to the good state, per packet.
    pub r: f64,
    /// Loss probability in the good state (usually 0).
    pub loss_good: f64,
    /// Loss probability in the bad state (usually 1).
    pub loss_bad: f64,
}

impl GilbertElliott {
    /// Classic Gilbert model: no loss in the good state, every packet lost in the bad state.
    pub fn new(p: f64, r: f64) -> Self {
        GilbertElliott { p, r, loss_good: 0.0, loss_bad: 1.0 }
    }

    /// Long-run loss rate the model converges to.
    pub fn stationary_loss(&self) -> f64 {
        let total = self.p + self.r;
        if total <= 0.0 {
            return self.loss_good;
        }
        let bad = self.p / total;
        bad * self.loss_bad + (1.0 - bad) * self.loss_good
    }

    fn validate(&self) -> Result<()> {
        for (name, v) in [("p", self.p), ("r", self.r), ("loss_good", self.loss_good), ("loss_bad", self.loss_bad)] {
            check_probability(&format!("burst {name}"), v)?;
        }
        Ok(())
    }
}

/// What happens to the packets of one direction of an impaired link.
///
/// Packets go through these stages, in order:
/// 1. random loss (`loss`, independent per packet) and bursty loss (`burst`);
/// 2. the rate limit (`rate_bps`), a serialising FIFO that tail-drops beyond `queue_bytes`;
/// 3. the fixed `delay` plus a random `jitter`, clamped so the total added delay is never
///    negative;
/// 4. unless `reorder` is set, a packet is never released before the one that arrived before
///    it (FIFO order is kept, so jitter then also delays the packets behind a late one).
///
/// The default is a perfect link: nothing lost, nothing delayed.
#[derive(Debug, Clone, PartialEq)]
pub struct Impairment {
    /// Fixed one-way delay added to every packet.
    pub delay: Duration,
    /// Jitter amount: the half-width of the uniform distribution or the standard deviation of
    /// the normal one.
    pub jitter: Duration,
    /// Shape of the jitter.
    pub jitter_distribution: JitterDistribution,
    /// Allow packets to overtake each other when jitter makes a later one due earlier.
    pub reorder: bool,
    /// Independent random loss probability, `0.0..=1.0`.
    pub loss: f64,
    /// Optional bursty loss, applied in addition to `loss`.
    pub burst: Option<GilbertElliott>,
    /// Optional rate limit in bits per second (IP packet bytes counted).
    pub rate_bps: Option<u64>,
    /// Size of the rate limiter's queue in bytes; packets that would exceed it are dropped.
    pub queue_bytes: usize,
}

/// Default rate-limiter queue: 64 KiB.
pub const DEFAULT_QUEUE_BYTES: usize = 64 * 1024;

impl Default for Impairment {
    fn default() -> Self {
        Impairment {
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            jitter_distribution: JitterDistribution::Uniform,
            reorder: false,
            loss: 0.0,
            burst: None,
            rate_bps: None,
            queue_bytes: DEFAULT_QUEUE_BYTES,
        }
    }
}

impl Impairment {
    /// A perfect link (same as [`Default`]).
    pub fn none() -> Self {
        Self::default()
    }

    /// Sets the fixed delay.
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Sets the jitter amount and distribution.
    pub fn with_jitter(mut self, jitter: Duration, distribution: JitterDistribution) -> Self {
        self.jitter = jitter;
        self.jitter_distribution = distribution;
        self
    }

    /// Allows or forbids reordering.
    pub fn with_reorder(mut self, reorder: bool) -> Self {
        self.reorder = reorder;
        self
    }

    /// Sets the independent loss probability (`0.0..=1.0`).
    pub fn with_loss(mut self, loss: f64) -> Self {
        self.loss = loss;
        self
    }

    /// Sets the Gilbert–Elliott bursty loss model.
    pub fn with_burst(mut self, burst: GilbertElliott) -> Self {
        self.burst = Some(burst);
        self
    }

    /// Sets a rate limit in bits per second.
    pub fn with_rate(mut self, bits_per_second: u64) -> Self {
        self.rate_bps = Some(bits_per_second);
        self
    }

    /// Sets the rate limiter's queue size in bytes.
    pub fn with_queue_bytes(mut self, bytes: usize) -> Self {
        self.queue_bytes = bytes;
        self
    }

    /// Checks that every parameter is in range.
    pub fn validate(&self) -> Result<()> {
        check_probability("loss", self.loss)?;
        if let Some(burst) = &self.burst {
            burst.validate()?;
        }
        if self.rate_bps == Some(0) {
            return Err(Error::InvalidArgument("rate must be greater than zero".into()));
        }
        if self.rate_bps.is_some() && self.queue_bytes == 0 {
            return Err(Error::InvalidArgument("queue must be greater than zero when a rate is set".into()));
        }
        // Keep delays sane: an hour is far beyond any test and keeps Instant arithmetic safe.
        let limit = Duration::from_secs(3600);
        if self.delay > limit || self.jitter > limit {
            return Err(Error::InvalidArgument("delay and jitter must be below one hour".into()));
        }
        Ok(())
    }
}

impl FromStr for Impairment {
    type Err = Error;

    /// Parses a comma-separated list of `key=value` settings (all optional):
    ///
    /// | key | value | example |
    /// | --- | --- | --- |
    /// | `delay` | duration | `delay=25ms` |
    /// | `jitter` | duration | `jitter=20ms` |
    /// | `dist` | `uniform` or `normal` | `dist=normal` |
    /// | `reorder` | flag, or `true`/`false` | `reorder` |
    /// | `loss` | percent or fraction | `loss=10%`, `loss=0.1` |
    /// | `burst` | `p:r[:loss_bad[:loss_good]]` | `burst=0.05:0.3` |
    /// | `rate` | bits per second | `rate=2mbit` |
    /// | `queue` | bytes | `queue=64k` |
    ///
    /// `none` or an empty string is a perfect link.
    fn from_str(s: &str) -> Result<Self> {
        let mut imp = Impairment::default();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            if item.eq_ignore_ascii_case("none") {
                continue;
            }
            let (key, value) = match item.split_once('=') {
                Some((k, v)) => (k.trim(), Some(v.trim())),
                None => (item, None),
            };
            let need =
                || value.ok_or_else(|| Error::InvalidArgument(format!("setting {key:?} needs a value ({key}=...)")));
            match key.to_ascii_lowercase().as_str() {
                "delay" => imp.delay = parse_duration(need()?)?,
                "jitter" => imp.jitter = parse_duration(need()?)?,
                "dist" | "distribution" => imp.jitter_distribution = need()?.parse()?,
                "reorder" => imp.reorder = value.map(parse_bool).transpose()?.unwrap_or(true),
                "loss" => imp.loss = parse_probability(need()?)?,
                "burst" | "ge" => imp.burst = Some(parse_burst(need()?)?),
                "rate" => imp.rate_bps = Some(parse_rate(need()?)?),
                "queue" | "limit" => imp.queue_bytes = parse_bytes(need()?)?,
                other => {
                    return Err(Error::InvalidArgument(format!(
                        "unknown impairment setting {other:?} (delay, jitter, dist, reorder, loss, burst, rate, queue)"
                    )))
                }
            }
        }
        imp.validate()?;
        Ok(imp)
    }
}

impl fmt::Display for Impairment {
    /// Writes the impairment in the spec form [`FromStr`] reads.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "delay={:?},jitter={:?},dist={}", self.delay, self.jitter, self.jitter_distribution)?;
        if self.reorder {
            f.write_str(",reorder")?;
        }
        write!(f, ",loss={}", self.loss)?;
        if let Some(b) = &self.burst {
            write!(f, ",burst={}:{}:{}:{}", b.p, b.r, b.loss_bad, b.loss_good)?;
        }
        if let Some(rate) = self.rate_bps {
            write!(f, ",rate={rate},queue={}", self.queue_bytes)?;
        }
        Ok(())
    }
}

fn check_probability(name: &str, v: f64) -> Result<()> {
    if (0.0..=1.0).contains(&v) {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!("{name} must be between 0 and 1 (0% to 100%), got {v}")))
    }
}

fn parse_bool(s: &str) -> Result<bool> {
    match s.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        other => Err(Error::InvalidArgument(format!("expected true or false, got {other:?}"))),
    }
}

/// Splits `"25ms"` into `(25.0, "ms")`.
fn split_number(s: &str) -> Result<(f64, String)> {
    let s = s.trim();
    let end = s.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+')).unwrap_or(s.len());
    let (num, unit) = s.split_at(end);
    let value: f64 = num.parse().map_err(|_| Error::InvalidArgument(format!("{s:?} does not start with a number")))?;
    if !value.is_finite() || value < 0.0 {
        return Err(Error::InvalidArgument(format!("{s:?} must be a non-negative number")));
    }
    Ok((value, unit.trim().to_ascii_lowercase()))
}

/// Parses a duration such as `25ms`, `1.5s`, `500us`, `2m` or `0`. A bare number is in
/// milliseconds.
pub fn parse_duration(s: &str) -> Result<Duration> {
    let (value, unit) = split_number(s)?;
    let seconds = match unit.as_str() {
        "" | "ms" => value / 1e3,
        "s" | "sec" => value,
        "us" | "µs" => value / 1e6,
        "ns" => value / 1e9,
        "m" | "min" => value * 60.0,
        other => {
            return Err(Error::InvalidArgument(format!("unknown time unit {other:?} in {s:?} (ns, us, ms, s, m)")))
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| Error::InvalidArgument(format!("duration {s:?}: {e}")))
}

/// Parses a probability written as a percentage (`10%`) or a fraction (`0.1`).
pub fn parse_probability(s: &str) -> Result<f64> {
    let (value, unit) = split_number(s)?;
    let p = match unit.as_str() {
        "%" => value / 100.0,
        "" => value,
        other => return Err(Error::InvalidArgument(format!("unexpected {other:?} in probability {s:?}"))),
    };
    check_probability("probability", p)?;
    Ok(p)
}

/// Parses a rate in bits per second: `64kbit`, `2mbit`, `1gbit`, `500000` (plain bits per
/// second), also `k`/`m`/`g` and `kbps`/`mbps` (bits, as tc writes `bit`).
pub fn parse_rate(s: &str) -> Result<u64> {
    let (value, unit) = split_number(s)?;
    let mult = match unit.as_str() {
        "" | "bit" | "bps" => 1.0,
        "k" | "kbit" | "kbps" => 1e3,
        "m" | "mbit" | "mbps" => 1e6,
        "g" | "gbit" | "gbps" => 1e9,
        other => {
            return Err(Error::InvalidArgument(format!("unknown rate unit {other:?} in {s:?} (bit, kbit, mbit, gbit)")))
        }
    };
    let bps = value * mult;
    if !(1.0..=1e12).contains(&bps) {
        return Err(Error::InvalidArgument(format!("rate {s:?} out of range (1 bit/s to 1 Tbit/s)")));
    }
    Ok(bps.round() as u64)
}

/// Parses a size in bytes: `1500`, `64k`, `1m` (binary multiples: k = 1024).
pub fn parse_bytes(s: &str) -> Result<usize> {
    let (value, unit) = split_number(s)?;
    let mult = match unit.as_str() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        other => return Err(Error::InvalidArgument(format!("unknown size unit {other:?} in {s:?} (b, k, m)"))),
    };
    let bytes = value * mult;
    if bytes > 1e12 {
        return Err(Error::InvalidArgument(format!("size {s:?} too large")));
    }
    Ok(bytes.round() as usize)
}

/// Parses a Gilbert–Elliott spec `p,r[,loss_bad[,loss_good]]` (`:` also separates). Each value
/// is a fraction or a percentage.
pub fn parse_burst(s: &str) -> Result<GilbertElliott> {
    let parts: Vec<&str> = s.split([':', ',', '/']).map(str::trim).collect();
    if !(2..=4).contains(&parts.len()) {
        return Err(Error::InvalidArgument(format!("burst spec {s:?} must be p,r[,loss_bad[,loss_good]]")));
    }
    let mut ge = GilbertElliott::new(parse_probability(parts[0])?, parse_probability(parts[1])?);
    if let Some(v) = parts.get(2) {
        ge.loss_bad = parse_probability(v)?;
    }
    if let Some(v) = parts.get(3) {
        ge.loss_good = parse_probability(v)?;
    }
    ge.validate()?;
    Ok(ge)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("25ms").unwrap(), Duration::from_millis(25));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("500us").unwrap(), Duration::from_micros(500));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_millis(7));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_duration("-3ms").is_err());
        assert!(parse_duration("ms").is_err());
        assert!(parse_duration("3 parsecs").is_err());
    }

    #[test]
    fn probabilities_rates_sizes() {
        assert!((parse_probability("10%").unwrap() - 0.1).abs() < 1e-12);
        assert!((parse_probability("0.25").unwrap() - 0.25).abs() < 1e-12);
        assert!(parse_probability("150%").is_err());
        assert_eq!(parse_rate("2mbit").unwrap(), 2_000_000);
        assert_eq!(parse_rate("64kbit").unwrap(), 64_000);
        assert_eq!(parse_rate("1500").unwrap(), 1500);
        assert!(parse_rate("0").is_err());
        assert_eq!(parse_bytes("64k").unwrap(), 65536);
    }

    #[test]
    fn spec_round_trip() {
        let imp: Impairment =
            "delay=25ms, jitter=20ms, dist=normal, reorder, loss=10%, burst=0.05:0.3, rate=1mbit, queue=32k"
                .parse()
                .unwrap();
        assert_eq!(imp.delay, Duration::from_millis(25));
        assert_eq!(imp.jitter, Duration::from_millis(20));
        assert_eq!(imp.jitter_distribution, JitterDistribution::Normal);
        assert!(imp.reorder);
        assert_eq!(imp.burst, Some(GilbertElliott::new(0.05, 0.3)));
        assert_eq!(imp.rate_bps, Some(1_000_000));
        assert_eq!(imp.queue_bytes, 32 * 1024);
        let again: Impairment = imp.to_string().parse().unwrap();
        assert_eq!(again, imp);
        assert_eq!("none".parse::<Impairment>().unwrap(), Impairment::none());
        assert!("delay".parse::<Impairment>().is_err());
        assert!("wobble=3".parse::<Impairment>().is_err());
        assert!("loss=2".parse::<Impairment>().is_err());
    }

    #[test]
    fn gilbert_stationary_loss() {
        let ge = GilbertElliott::new(0.05, 0.3);
        assert!((ge.stationary_loss() - 0.05 / 0.35).abs() < 1e-12);
        assert!(parse_burst("0.1").is_err());
        let ge = parse_burst("5%,50%,0.9,0.01").unwrap();
        assert_eq!(ge, GilbertElliott { p: 0.05, r: 0.5, loss_bad: 0.9, loss_good: 0.01 });
    }
}
