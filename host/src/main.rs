//! The `mailplug` binary: parse flags, run, map the outcome to an exit code.

use std::process::ExitCode;

fn main() -> ExitCode {
    mailplug::cli::main()
}
