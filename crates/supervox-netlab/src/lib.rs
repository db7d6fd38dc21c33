//! A small network lab for supervox's real-process tests and benchmarks.
//!
//! The kernel of the project's machines has no `netem` qdisc, so delay, jitter and loss cannot
//! be added with `tc`. This crate builds the same conditions in user space:
//!
//! * a [`Lab`] owns uniquely named network namespaces (`svl-<pid>-<n>-<name>`), runs commands
//!   and closures inside them, and removes everything when dropped;
//! * an [`ImpairedLink`] joins two namespaces with a point-to-point IPv4 link made of one TUN
//!   device in each, and a forwarder thread between them applies an [`Impairment`] per
//!   direction — fixed delay, uniform or normal jitter (with or without reordering),
//!   independent loss, Gilbert–Elliott bursty loss and a rate limit — from a seeded RNG;
//! * [`ImpairedLink::set`] changes the impairment while traffic flows.
//!
//! Everything needs root (or CAP_NET_ADMIN and CAP_SYS_ADMIN), iproute2 and `/dev/net/tun`;
//! without them the constructors return an error that says what is missing.
//!
//! ```no_run
//! use std::time::Duration;
//! use supervox_netlab::{Direction, Impairment, Lab, LinkConfig};
//!
//! let lab = Lab::new()?;
//! let a = lab.namespace("a")?;
//! let b = lab.namespace("b")?;
//! let imp: Impairment = "delay=25ms,jitter=5ms,loss=1%".parse()?;
//! let link = lab.link(&a, &b, LinkConfig::symmetric(imp).with_seed(7))?;
//! let server = b.spawn(b.shell("exec my-server --listen 0.0.0.0:4000"))?;
//! a.run(["my-client", &format!("{}:4000", link.addr_b())])?;
//! link.set(Direction::AtoB, Impairment::none().with_delay(Duration::from_millis(80)))?;
//! println!("{}", link.stats().a_to_b);
//! # drop(server);
//! # Ok::<(), supervox_netlab::Error>(())
//! ```

mod error;
mod impairment;
mod lab;
mod link;
mod shaper;
mod tun;

pub use error::{Error, Result};
pub use impairment::{
    parse_burst, parse_bytes, parse_duration, parse_probability, parse_rate, GilbertElliott, Impairment,
    JitterDistribution, DEFAULT_QUEUE_BYTES,
};
pub use lab::{list_namespaces, Lab, Namespace, NsProcess, NAMESPACE_PREFIX};
pub use link::{Captured, Direction, DirectionStats, ImpairedLink, LinkConfig, LinkStats};
pub use shaper::{DropReason, Shaper, Verdict};
