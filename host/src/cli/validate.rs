//! `mailplug validate`: checks connection files and prints every problem.

use std::path::PathBuf;

/// Flags of `mailplug validate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Files or directories (searched recursively for *.yaml / *.yml).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
}

/// Runs `mailplug validate`.
pub fn run(_args: Args) -> anyhow::Result<u8> {
    anyhow::bail!("not yet implemented")
}
