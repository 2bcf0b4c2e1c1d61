//! `mailplug serve`: runs the daemon.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::cli::exit;
use crate::daemon::{self, Settings, StartError};
use crate::logging::{self, LogFormat};

/// Flags of `mailplug serve`; each also reads an environment variable.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory of connection files (watched recursively).
    #[arg(long, env = "MAILPLUG_CONFIG", value_name = "DIR")]
    pub config: PathBuf,
    /// Admin API address. Binding beyond loopback requires --admin-token.
    #[arg(long, env = "MAILPLUG_LISTEN_ADMIN", default_value = "127.0.0.1:8025")]
    pub listen_admin: SocketAddr,
    /// Public listener for provider webhooks.
    #[arg(long, env = "MAILPLUG_LISTEN_PUBLIC", default_value = "0.0.0.0:8080")]
    pub listen_public: SocketAddr,
    /// Where mailplug keeps its stores and the plugin compile cache.
    #[arg(long, env = "MAILPLUG_DATA_DIR", default_value = "mailplug-data")]
    pub data_dir: PathBuf,
    /// Base URL providers reach the public listener at, used to print webhook
    /// endpoint URLs (default: http://<public listener address>).
    #[arg(long, env = "MAILPLUG_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Bearer token required on every admin API request.
    #[arg(long, env = "MAILPLUG_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Log format.
    #[arg(long, env = "MAILPLUG_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Refuse to start if any configuration file is invalid (default: start
    /// with the valid ones and report the rest).
    #[arg(long, env = "MAILPLUG_STRICT")]
    pub strict: bool,
    /// Quiet period (ms) after file changes before reloading.
    #[arg(long, env = "MAILPLUG_DEBOUNCE_MS", default_value_t = 200)]
    pub debounce_ms: u64,
    /// Seconds in-flight requests get to finish at shutdown.
    #[arg(long, env = "MAILPLUG_SHUTDOWN_TIMEOUT", default_value_t = 30)]
    pub shutdown_timeout: u64,
}

/// Runs `mailplug serve`.
pub fn run(args: Args) -> anyhow::Result<u8> {
    logging::init(args.log_format);
    let settings = Settings {
        config_dir: args.config,
        listen_admin: args.listen_admin,
        listen_public: args.listen_public,
        data_dir: args.data_dir,
        public_url: args.public_url,
        admin_token: args.admin_token.filter(|t| !t.is_empty()),
        strict: args.strict,
        debounce: Duration::from_millis(args.debounce_ms),
        shutdown_timeout: Duration::from_secs(args.shutdown_timeout),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(async {
        let (tx, rx) = tokio::sync::watch::channel(false);
        daemon::shutdown_on_signals(tx);
        daemon::run(settings, rx).await
    });
    // Background blocking work (a reload in progress) must not delay exit.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(()) => Ok(exit::OK),
        Err(StartError::Usage(message)) => {
            eprintln!("mailplug serve: {message}");
            Ok(exit::USAGE)
        }
        Err(StartError::InvalidConfig(_)) => {
            eprintln!(
                "mailplug serve: refusing to start: the configuration has errors (see above) and --strict is set"
            );
            Ok(exit::CONFIG)
        }
        Err(StartError::Other(e)) => Err(e),
    }
}
