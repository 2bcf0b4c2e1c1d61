//! `mailplug schema`: writes (or checks) the JSON Schemas generated from the
//! configuration types, so editors and CI use exactly what the daemon enforces.

use std::path::PathBuf;

use anyhow::Context as _;

use crate::cli::exit;
use crate::config::schema;

/// Flags of `mailplug schema`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory to write `*.schema.json` into.
    #[arg(long, default_value = "schemas")]
    pub out: PathBuf,
    /// Write nothing; exit 1 if any file in `--out` differs from the generated schema.
    #[arg(long)]
    pub check: bool,
}

/// Renders a schema the way it is checked in (pretty, trailing newline).
pub fn render(value: &serde_json::Value) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(value)? + "\n")
}

/// Runs `mailplug schema`.
pub fn run(args: Args) -> anyhow::Result<u8> {
    let mut drift = false;
    if !args.check {
        std::fs::create_dir_all(&args.out)
            .with_context(|| format!("creating {}", args.out.display()))?;
    }
    for (name, value) in schema::all() {
        let path = args.out.join(name);
        let text = render(&value)?;
        if args.check {
            let current = std::fs::read_to_string(&path).unwrap_or_default();
            if current != text {
                eprintln!(
                    "{}: differs from the schema generated from the code; run `mailplug schema --out {}`",
                    path.display(),
                    args.out.display()
                );
                drift = true;
            }
        } else {
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
            println!("wrote {}", path.display());
        }
    }
    Ok(if drift { 1 } else { exit::OK })
}
