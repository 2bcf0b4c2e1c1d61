//! `mailplug check`: the staged SMTP probe for one connection, one line per
//! stage, then the classification; no message is sent.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::cli::exit;
use crate::config::LoadOptions;
use crate::mail::{self, Classification, ProbeOptions, SmtpTarget, StageStatus};
use crate::providers;

pub use crate::cli::Format;

/// Flags of `mailplug check`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Name of the connection to check.
    pub connection: String,
    /// Configuration directory (or file) holding the connection.
    #[arg(long, value_name = "DIR")]
    pub config: PathBuf,
    /// Also try `RCPT TO` with this address (no message is sent).
    #[arg(long, value_name = "ADDR")]
    pub rcpt: Option<String>,
    /// Output format: `text` prints one line per stage with ✓/✗ and its
    /// duration, then the classification; `json` the whole report as one object.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

/// Runs `mailplug check`.
pub fn run(args: Args) -> anyhow::Result<u8> {
    init_logging();
    let target = match load_target(&args.config, &args.connection) {
        Ok(t) => t,
        Err(code) => return Ok(code),
    };
    if let Some(rcpt) = &args.rcpt
        && crate::address::parse(rcpt).is_err()
    {
        eprintln!("mailplug: --rcpt {rcpt:?} is not a valid email address");
        return Ok(exit::USAGE);
    }
    let runtime = runtime()?;
    let options = ProbeOptions {
        rcpt: args.rcpt.clone(),
    };
    let report = runtime.block_on(mail::probe(&target, options));
    let mut out = std::io::stdout().lock();
    match args.format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut out, &report)?;
            writeln!(out)?;
        }
        Format::Text => {
            for w in &report.warnings {
                eprintln!("warning: {w}");
            }
            writeln!(
                out,
                "check {} ({}, security: {})",
                report.connection,
                report.server,
                report.security.as_str()
            )?;
            for s in &report.stages {
                let (mark, time) = match s.status {
                    StageStatus::Ok => ("✓", format!("{:>9.1} ms", s.duration_ms)),
                    StageStatus::Failed => ("✗", format!("{:>9.1} ms", s.duration_ms)),
                    StageStatus::Skipped => ("-", "  skipped   ".to_owned()),
                };
                let detail = s.detail.as_deref().unwrap_or("");
                writeln!(out, "  {mark} {:<11} {time}  {detail}", s.stage.label())?;
            }
            write_outcome(&mut out, &report.classification)?;
        }
    }
    out.flush()?;
    Ok(exit_code(&report.classification))
}

/// Prints `result: class at stage (temporary|permanent): reply` and the hint.
pub(crate) fn write_outcome(
    out: &mut impl std::io::Write,
    c: &Classification,
) -> std::io::Result<()> {
    let kind = if c.is_success() {
        "ok"
    } else if c.temporary {
        "temporary"
    } else {
        "permanent"
    };
    let mut reply = String::new();
    if let Some(code) = c.reply_code {
        reply.push_str(&code.to_string());
        if let Some(e) = &c.enhanced_status {
            reply.push(' ');
            reply.push_str(e);
        }
    }
    if let Some(t) = &c.server_text {
        if !reply.is_empty() {
            reply.push(' ');
        }
        reply.push_str(t);
    }
    writeln!(out, "result: {} at {} ({kind}): {reply}", c.class, c.stage)?;
    if !c.is_success() {
        writeln!(out, "hint: {}", c.hint)?;
    }
    Ok(())
}

/// 0 accepted, 75 temporary failure, 69 permanent failure.
pub(crate) fn exit_code(c: &Classification) -> u8 {
    if c.is_success() {
        exit::OK
    } else if c.temporary {
        exit::TEMPFAIL
    } else {
        exit::UNAVAILABLE
    }
}

/// Logs go to stderr through the shared setup (`MAILPLUG_LOG`, e.g.
/// `mailplug::smtp=trace` for the SMTP dialogue with AUTH redacted).
pub(crate) fn init_logging() {
    crate::logging::init(crate::logging::LogFormat::Text);
}

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    use anyhow::Context as _;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Loads the configuration and builds the named connection's SMTP target;
/// on failure prints why and returns exit code 78.
pub(crate) fn load_target(config_path: &Path, name: &str) -> Result<SmtpTarget, u8> {
    if let Err(e) = std::fs::metadata(config_path) {
        eprintln!("mailplug: {}: {e}", config_path.display());
        return Err(exit::CONFIG);
    }
    let (loaded, _catalog) = match providers::load_config(
        &[config_path.to_path_buf()],
        &LoadOptions::default(),
        providers::default_cache_dir(),
    ) {
        Ok(pair) => pair,
        Err(e) => {
            eprintln!("mailplug: cannot load the provider plugins: {e:#}");
            return Err(exit::SOFTWARE);
        }
    };
    if let Some(conn) = loaded.connections().find(|c| c.name() == name) {
        for d in loaded
            .files
            .iter()
            .filter(|f| f.path == conn.source.file)
            .flat_map(|f| &f.diagnostics)
        {
            eprintln!("{d}");
        }
        let target = mail::target_for(conn).map_err(|e| {
            eprintln!("mailplug: {e}");
            exit::CONFIG
        })?;
        // Unusable settings (e.g. credentials over plaintext) are config
        // errors, not delivery failures.
        if let Err(e) = target.validate() {
            eprintln!("mailplug: {e}");
            return Err(exit::CONFIG);
        }
        return Ok(target);
    }
    for d in loaded.all_diagnostics().filter(|d| d.is_error()) {
        eprintln!("{d}");
    }
    let known: Vec<&str> = loaded.connections().map(|c| c.name()).collect();
    eprintln!(
        "mailplug: no valid connection named {name:?} in {} (valid: {})",
        config_path.display(),
        if known.is_empty() {
            "none".to_owned()
        } else {
            known.join(", ")
        }
    );
    Err(exit::CONFIG)
}
