//! mailplug: email delivery connections as code.
//!
//! The binary is a thin shell over this library so the integration tests and
//! benchmarks drive the same code paths an operator does.

pub mod cli;
pub mod config;
pub mod event;
pub mod runtime;
