//! `mailplug validate`: checks configuration files and prints every problem,
//! one per line (or as a JSON array), then a summary.

use std::io::Write as _;
use std::path::PathBuf;

use crate::cli::exit;
use crate::config::LoadOptions;
use crate::providers;

use crate::cli::Format;

/// Flags of `mailplug validate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Files or directories (searched recursively for *.yaml / *.yml;
    /// hidden entries such as `.git` are skipped).
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Output format: `text` prints `FILE:LINE:COL: severity: /pointer: message
    /// (hint: ...)` lines, exactly one per diagnostic (control characters
    /// escaped, e.g. ESC as `\x1b`); `json` a JSON array of `{file, line, column,
    /// severity, pointer, message, hint}`, with the summary on stderr so stdout
    /// stays parseable.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Treat warnings as errors (exit 78 when there are any).
    #[arg(long)]
    pub deny_warnings: bool,
    /// Resolve every `env`/`file` secret reference and CA file; values are never printed.
    #[arg(long)]
    pub check_secrets: bool,
}

/// Runs `mailplug validate`.
pub fn run(args: Args) -> anyhow::Result<u8> {
    for path in &args.paths {
        if let Err(e) = std::fs::symlink_metadata(path) {
            eprintln!("mailplug validate: {}: {e}", path.display());
            return Ok(exit::USAGE);
        }
    }
    let opts = LoadOptions {
        check_secrets: args.check_secrets,
        ..LoadOptions::default()
    };
    let (loaded, _catalog) =
        providers::load_config(&args.paths, &opts, providers::default_cache_dir())?;
    let diagnostics: Vec<_> = loaded.all_diagnostics().collect();
    let errors = diagnostics.iter().filter(|d| d.is_error()).count();
    let warnings = diagnostics.len() - errors;
    let connections: usize = loaded.files.iter().map(|f| f.connections.len()).sum();
    let documents: usize = loaded.files.iter().map(|f| f.documents).sum();
    let forwarders: usize = loaded.files.iter().map(|f| f.forwarders.len()).sum();
    // Only mentioned when there are any, so the summary of a directory of
    // connections reads as it always did.
    let forwarders = match forwarders {
        0 => String::new(),
        n => format!(" {n} valid forwarder{},", plural(n)),
    };
    let summary = format!(
        "{} file{}, {} document{}, {} valid connection{},{forwarders} {} error{}, {} warning{}",
        loaded.files.len(),
        plural(loaded.files.len()),
        documents,
        plural(documents),
        connections,
        plural(connections),
        errors,
        plural(errors),
        warnings,
        plural(warnings),
    );
    let mut stdout = std::io::stdout().lock();
    match args.format {
        Format::Text => {
            for d in &diagnostics {
                writeln!(stdout, "{d}")?;
            }
            writeln!(stdout, "{summary}")?;
        }
        Format::Json => {
            serde_json::to_writer_pretty(&mut stdout, &diagnostics)?;
            writeln!(stdout)?;
            eprintln!("{summary}");
        }
    }
    stdout.flush()?;
    let failed = errors > 0 || (args.deny_warnings && warnings > 0);
    Ok(if failed { exit::CONFIG } else { exit::OK })
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
