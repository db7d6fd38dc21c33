//! supervox-sim: a deterministic, seeded, virtual-time simulator of a
//! supervox network.
//!
//! It runs the very state machines the daemon runs —
//! [`supervox_core::supernode::Supernode`] and
//! [`supervox_core::client::Client`] — thousands of them in one process, and
//! plays their driver: virtual TCP connections with per-pair delays drawn
//! from a realistic RTT distribution, optional loss (as TCP retransmission
//! delay), crashes, churn and restart waves. The Noise link layer is not run:
//! messages are handed over as an established link would hand them over,
//! with their wire size accounted. There is no second implementation of the
//! protocol here: everything a node decides, the core decides.
//!
//! Every random choice comes from one seed, every collection is iterated in
//! a deterministic order, and virtual time never reads a clock, so the same
//! seed gives the same [`Report`].
//!
//! ```no_run
//! use supervox_sim::{Scenario, Sim, SimConfig};
//! let cfg = SimConfig::new(Scenario::MassCrash, 10, 200, 7);
//! let report = Sim::new(cfg).unwrap().run();
//! println!("{}", report.to_json());
//! ```

mod byzantine;
pub mod config;
mod engine;
mod mail;
pub mod metrics;
pub mod net;
mod nodes;
mod scenario;

pub use byzantine::ByzantineSummary;
pub use config::{CrashMode, MailConfig, Scenario, SimConfig};
pub use engine::Sim;
pub use mail::MailSummary;
pub use metrics::{Report, Summary};
