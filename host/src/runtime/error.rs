//! Typed errors of the plugin runtime: loading a plugin, and a failed call
//! (naming the plugin, the export and the cause).

use std::fmt;
use std::path::PathBuf;

/// A plugin export (or the instantiation that precedes a call to it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Export {
    /// `describe`
    Describe,
    /// `adapt-connection`
    AdaptConnection,
    /// `verify-webhook`
    VerifyWebhook,
    /// `parse-webhook`
    ParseWebhook,
}

impl Export {
    /// Every export, in WIT order.
    pub const ALL: [Export; 4] = [
        Self::Describe,
        Self::AdaptConnection,
        Self::VerifyWebhook,
        Self::ParseWebhook,
    ];

    /// The WIT name of the export.
    pub fn name(self) -> &'static str {
        match self {
            Self::Describe => "describe",
            Self::AdaptConnection => "adapt-connection",
            Self::VerifyWebhook => "verify-webhook",
            Self::ParseWebhook => "parse-webhook",
        }
    }
}

impl fmt::Display for Export {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a call failed on the host's side of the contract.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FailureCause {
    /// The epoch deadline interrupted the guest.
    #[error("did not finish within its {deadline_ms} ms deadline")]
    Deadline {
        /// The plugin's deadline.
        deadline_ms: u32,
    },
    /// The guest tried to grow its memory past the cap.
    #[error("exceeded its {cap_mib} MiB memory cap")]
    MemoryCap {
        /// The plugin's memory cap.
        cap_mib: u32,
    },
    /// The guest trapped (a panic, `unreachable`, an out-of-bounds access...).
    #[error("trapped: {message}{}{}", guest_output_suffix(.guest_output), backtrace_suffix(.backtrace))]
    Trap {
        /// The trap (e.g. "wasm trap: wasm `unreachable` instruction executed").
        message: String,
        /// What the guest wrote to stderr during the call (e.g. its panic message).
        guest_output: String,
        /// The guest's stack at the trap, innermost frame first.
        backtrace: String,
    },
    /// A fresh instance could not be created.
    #[error("could not be instantiated: {0}")]
    Instantiate(String),
    /// The guest returned values outside the contract.
    #[error("returned invalid output: {0}")]
    InvalidOutput(String),
}

fn guest_output_suffix(output: &str) -> String {
    if output.trim().is_empty() {
        String::new()
    } else {
        format!("\nguest stderr: {}", output.trim_end())
    }
}

fn backtrace_suffix(backtrace: &str) -> String {
    if backtrace.is_empty() {
        String::new()
    } else {
        format!("\n{}", backtrace.trim_end())
    }
}

/// A call that failed: only that call; the plugin and the host keep serving.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("plugin `{plugin}` failed in `{export}`: {cause}")]
pub struct PluginError {
    /// Plugin id.
    pub plugin: String,
    /// The export being called.
    pub export: Export,
    /// What went wrong.
    pub cause: FailureCause,
}

/// Why a plugin could not be registered.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The wasm file cannot be read.
    #[error("plugin `{id}`: cannot read {}: {error}", path.display())]
    Read {
        /// Plugin id from the registration.
        id: String,
        /// The configured path.
        path: PathBuf,
        /// Why (in the message, so not also a `source`): the filesystem's
        /// error, not a regular file, or too large.
        error: crate::fsread::Error,
    },
    /// The file's sha256 differs from the pinned one.
    #[error(
        "plugin `{id}`: sha256 mismatch: the registration pins {expected} but the file has {actual}; refusing to load it"
    )]
    HashMismatch {
        /// Plugin id.
        id: String,
        /// The pinned hash.
        expected: String,
        /// The file's hash.
        actual: String,
    },
    /// Not a component implementing `mailplug:provider/provider@0.1.0`, or it
    /// needs imports the sandbox does not offer.
    #[error("plugin `{id}`: not a usable provider component: {detail}")]
    Invalid {
        /// Plugin id.
        id: String,
        /// Compiler / linker message.
        detail: String,
    },
    /// `describe` failed.
    #[error(transparent)]
    Describe(#[from] PluginError),
    /// `describe` returned something unusable (bad id, bad schema).
    #[error("plugin `{id}`: {detail}")]
    BadDescription {
        /// Plugin id.
        id: String,
        /// What is wrong.
        detail: String,
    },
    /// Another plugin already has this id.
    #[error("plugin id `{0}` is registered twice")]
    Duplicate(String),
}
