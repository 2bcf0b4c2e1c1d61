//! Command-line interface: flag parsing and dispatch to one module per subcommand.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod check;
pub mod plugin;
pub mod schema;
pub mod send;
pub mod serve;
pub mod store;
pub mod store_admin;
pub mod test_send;
pub mod validate;

/// Exit codes shared by every subcommand (sysexits.h where one fits).
pub mod exit {
    /// Success (warnings allowed unless `--deny-warnings`).
    pub const OK: u8 = 0;
    /// Bad flags or arguments (clap uses the same code).
    pub const USAGE: u8 = 2;
    /// EX_CONFIG: the configuration is invalid.
    pub const CONFIG: u8 = 78;
    /// EX_SOFTWARE: an internal error (a bug or an unexpected I/O failure).
    pub const SOFTWARE: u8 = 70;
    /// EX_UNAVAILABLE: `check`/`test-send` failed permanently (5xx, TLS,
    /// authentication, certificate: a change is needed).
    pub const UNAVAILABLE: u8 = 69;
    /// EX_TEMPFAIL: `check`/`test-send` failed temporarily (4xx, timeout,
    /// refused connection: retrying later may succeed).
    pub const TEMPFAIL: u8 = 75;
    /// `store status`: the store is not current (migrations pending, or no
    /// store yet): `store migrate` (or `serve`) brings it to this binary's
    /// version.
    pub const NOT_CURRENT: u8 = 1;
    /// EX_CANTCREAT: the daemon cannot open its store (I/O, or a schema
    /// newer than this binary).
    pub const CANTCREAT: u8 = 73;
}

/// Output format of commands that report results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Human-readable lines.
    Text,
    /// JSON for machines (CI annotations, scripts).
    Json,
}

/// mailplug: email delivery connections as code.
#[derive(Debug, Parser)]
#[command(name = "mailplug", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate connection files (schema + semantic checks); exit 78 when invalid.
    Validate(validate::Args),
    /// Write the JSON Schemas generated from the configuration types.
    Schema(schema::Args),
    /// Run the daemon: hot-reloaded configuration, admin API, webhook listener.
    Serve(serve::Args),
    /// Probe a connection's SMTP server stage by stage (no message is sent).
    Check(check::Args),
    /// Send a test email through a connection and classify the outcome.
    TestSend(test_send::Args),
    /// Inspect and test provider plugins (author tools).
    Plugin(plugin::Args),
    /// List or follow the delivery events a running daemon stored.
    Events(store::EventsArgs),
    /// List, add or remove suppressed addresses of a running daemon.
    Suppressions(store::SuppressionsArgs),
    /// Queue a message on a running daemon (`POST /v1/messages`).
    Send(send::Args),
    /// Show or migrate the store's schema (the daemon need not run).
    Store(store_admin::Args),
}

/// Parses the command line, runs the subcommand and returns its exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Validate(args) => validate::run(args),
        Command::Schema(args) => schema::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Check(args) => check::run(args),
        Command::TestSend(args) => test_send::run(args),
        Command::Plugin(args) => plugin::run(args),
        Command::Events(args) => store::run_events(args),
        Command::Suppressions(args) => store::run_suppressions(args),
        Command::Send(args) => send::run(args),
        Command::Store(args) => store_admin::run(args),
    };
    match code {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("mailplug: error: {err:#}");
            ExitCode::from(exit::SOFTWARE)
        }
    }
}
