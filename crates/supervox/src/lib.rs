//! supervox: the tokio driver, daemons, control API and CLI around the
//! sans-IO core. See `docs/ARCHITECTURE.md`.

pub mod control;
pub mod ctl;
pub mod db;
pub mod defaults;
pub mod demo;
pub mod links;
pub mod metrics;
pub mod node;
pub mod relay_stream;
pub mod secrets;
pub mod sn;
pub mod store;
pub mod sys;
pub mod tls;
pub mod udp_batch;
pub mod udp_send;
pub mod ui;
