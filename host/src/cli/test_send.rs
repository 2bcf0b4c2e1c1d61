//! `mailplug test-send`: sends a real multipart test email through a
//! connection and prints the classified outcome (and the queue id).

use std::io::Write as _;
use std::path::PathBuf;

use crate::cli::check::{exit_code, init_logging, load_target, runtime, write_outcome};
use crate::cli::exit;
use crate::mail;

/// Flags of `mailplug test-send`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Name of the connection to send through.
    pub connection: String,
    /// Recipient of the test email.
    #[arg(long, value_name = "ADDR")]
    pub to: String,
    /// Configuration directory (or file) holding the connection.
    #[arg(long, value_name = "DIR")]
    pub config: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: crate::cli::check::Format,
}

/// Runs `mailplug test-send`.
pub fn run(args: Args) -> anyhow::Result<u8> {
    init_logging();
    let target = match load_target(&args.config, &args.connection) {
        Ok(t) => t,
        Err(code) => return Ok(code),
    };
    let runtime = runtime()?;
    let report = match runtime.block_on(mail::test_send(&target, &args.to)) {
        Ok(r) => r,
        Err(mail::TestSendError::Message(mail::MessageError::To(..))) => {
            eprintln!("mailplug: --to {:?} is not a valid email address", args.to);
            return Ok(exit::USAGE);
        }
        Err(e) => {
            eprintln!("mailplug: {e}");
            return Ok(exit::CONFIG);
        }
    };
    let mut out = std::io::stdout().lock();
    match args.format {
        crate::cli::check::Format::Json => {
            serde_json::to_writer_pretty(&mut out, &report)?;
            writeln!(out)?;
        }
        crate::cli::check::Format::Text => {
            for w in &report.warnings {
                eprintln!("warning: {w}");
            }
            writeln!(
                out,
                "test-send {} to {} via {} (security: {})",
                report.connection,
                report.to,
                report.server,
                target.security.as_str()
            )?;
            if let Some(id) = &report.message_id {
                writeln!(out, "message-id: {id}")?;
            }
            write_outcome(&mut out, &report.classification)?;
            if let Some(q) = &report.queue_id {
                writeln!(out, "queue id: {q}")?;
            }
        }
    }
    out.flush()?;
    Ok(exit_code(&report.classification))
}
