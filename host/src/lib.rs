//! mailplug: email delivery connections as code.
//!
//! The binary is a thin shell over this library so the integration tests and
//! benchmarks drive the same code paths an operator does.

pub mod address;
pub mod api;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod digest;
pub mod event;
pub mod forward;
pub mod fsread;
pub mod ingest;
pub mod logging;
pub mod mail;
pub mod metrics;
pub mod providers;
pub mod runtime;
pub mod send;
pub mod smtp_status;
pub mod sns;
pub mod state;
pub mod store;
