//! `mailplug schema`: writes the generated JSON Schemas.

use std::path::PathBuf;

/// Flags of `mailplug schema`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory to write `*.schema.json` into.
    #[arg(long, default_value = "schemas")]
    pub out: PathBuf,
}

/// Runs `mailplug schema`.
pub fn run(_args: Args) -> anyhow::Result<u8> {
    anyhow::bail!("not yet implemented")
}
