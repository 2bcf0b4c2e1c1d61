//! The one integration test binary: drives the real `mailplug` binary (and
//! the library where a process boundary adds nothing) against real files,
//! servers and plugins.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed setup step should abort the test loudly"
)]
mod config_model;
mod daemon;
mod daemon_smtp;
mod forwarding;
mod guarded_files;
mod hardening_config;
mod hardening_http;
mod http_properties;
mod plugins;
mod providers;
mod reload_lifecycle;
mod replicas;
mod sending;
mod smtp;
mod store_admin;
mod support;
mod validate;
mod webhook_guests;
mod webhook_settings;
mod webhooks;
mod webhooks_providers;
mod webhooks_sns;
