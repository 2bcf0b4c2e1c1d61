//! `mailplug serve`: binds the listeners and runs the daemon with the API
//! routes until SIGTERM/SIGINT.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::api;
use crate::cli::exit;
use crate::daemon::{self, HttpLimits, Listeners, Settings, StartError, StoreSettings};
use crate::logging::{self, LogFormat};
use crate::store::SoftBouncePolicy;
use crate::store::postgres::PostgresUrl;

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
    /// How the config directory is watched: `auto` (inotify, polling when
    /// it is unavailable) or `poll` (always poll, every --watch-recheck;
    /// for network and FUSE mounts inotify does not see changes on).
    #[arg(long, env = "MAILPLUG_WATCH", value_enum, default_value = "auto")]
    pub watch: daemon::watcher::WatchMode,
    /// How often the config path is re-checked for a replaced directory,
    /// and the polling interval when polling (at least 100ms), e.g. `2s`.
    #[arg(long, env = "MAILPLUG_WATCH_RECHECK", default_value = "2s", value_parser = humantime::parse_duration)]
    pub watch_recheck: Duration,
    /// Seconds in-flight requests get to finish at shutdown.
    #[arg(long, env = "MAILPLUG_SHUTDOWN_TIMEOUT", default_value_t = 30)]
    pub shutdown_timeout: u64,
    /// Connections the admin listener serves at once; more are answered 503
    /// and closed (kept apart from the public cap, so health checks answer
    /// while the public port is flooded).
    #[arg(long, env = "MAILPLUG_MAX_CONNECTIONS_ADMIN", default_value_t = 64)]
    pub max_connections_admin: usize,
    /// Connections the public listener serves at once; more are answered 503
    /// and closed.
    #[arg(long, env = "MAILPLUG_MAX_CONNECTIONS_PUBLIC", default_value_t = 1024)]
    pub max_connections_public: usize,
    /// Time a connection gets to send a complete request head after it opens
    /// or after its previous response (also the keep-alive idle timeout),
    /// e.g. `10s`, `500ms`.
    #[arg(long, env = "MAILPLUG_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_read_timeout: Duration,
    /// Time one request gets from its head to its response (408 after that).
    #[arg(long, env = "MAILPLUG_REQUEST_TIMEOUT", default_value = "120s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,
    /// The event store: a PostgreSQL database shared by several mailplug
    /// processes, `postgres://user:password@host:port/database` (or
    /// `postgresql://`). TLS with `?sslmode=verify-full` (or `require`,
    /// `verify-ca`: the certificate is always verified, against the webpki
    /// roots or `&sslrootcert=FILE`); `disable`/`prefer` connect in clear.
    /// Default: SQLite in the data dir (`<data dir>/mailplug.db`).
    #[arg(long = "store", env = "MAILPLUG_STORE_URL", value_name = "URL", hide_env_values = true, value_parser = raw_store_url)]
    pub store: Option<RawStoreUrl>,
    /// Largest size of the SQLite store (`<data dir>/mailplug.db`), e.g.
    /// `10GiB`; past it webhooks get 503 with `Retry-After` (providers retry)
    /// until space is made. Default: no limit but the disk.
    #[arg(long, env = "MAILPLUG_STORE_MAX_SIZE", value_parser = parse_size)]
    pub store_max_size: Option<u64>,
    /// Soft bounces of one address (per workspace) within
    /// `--soft-bounce-window` that suppress it.
    #[arg(long, env = "MAILPLUG_SOFT_BOUNCE_THRESHOLD", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub soft_bounce_threshold: u32,
    /// Window of `--soft-bounce-threshold`, by the events' `occurred_at`.
    #[arg(long, env = "MAILPLUG_SOFT_BOUNCE_WINDOW", default_value = "7days", value_parser = humantime::parse_duration)]
    pub soft_bounce_window: Duration,
    /// Accept and queue messages but send nothing (maintenance; the queue
    /// drains once the daemon runs without it).
    #[arg(long, env = "MAILPLUG_HOLD_QUEUE")]
    pub hold_queue: bool,
    /// Wait before the first retry of a temporary send failure; doubled per
    /// attempt (with jitter) up to --send-retry-max.
    #[arg(long, env = "MAILPLUG_SEND_RETRY_INITIAL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub send_retry_initial: Duration,
    /// Longest wait between two attempts of one recipient.
    #[arg(long, env = "MAILPLUG_SEND_RETRY_MAX", default_value = "1h", value_parser = humantime::parse_duration)]
    pub send_retry_max: Duration,
    /// A recipient still failing temporarily this long after it was queued fails for good.
    #[arg(long, env = "MAILPLUG_SEND_MAX_AGE", default_value = "3days", value_parser = humantime::parse_duration)]
    pub send_max_age: Duration,
    /// Consecutive connection-level failures that open a connection's circuit.
    #[arg(long, env = "MAILPLUG_CIRCUIT_FAILURES", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub circuit_failures: u32,
    /// First pause of an open circuit (doubled after each failed probe, up to 10 minutes or this pause if longer).
    #[arg(long, env = "MAILPLUG_CIRCUIT_PAUSE", default_value = "30s", value_parser = humantime::parse_duration)]
    pub circuit_pause: Duration,
    /// Largest message accepted by POST /v1/messages (attachments included).
    #[arg(long, env = "MAILPLUG_MAX_MESSAGE_SIZE", default_value = "10MiB", value_parser = parse_size)]
    pub max_message_size: u64,
    /// How long a delivery claimed for an attempt stays leased to this
    /// process (default: 12 × the connection's `limits.timeout`, at least
    /// 10 minutes). When a process dies mid-attempt, another one (or this
    /// one after a restart on a shared store) attempts the delivery again
    /// once the lease has lapsed. Shorter than an attempt can take, it
    /// lets a second process send a delivery still in flight.
    #[arg(long, env = "MAILPLUG_DELIVERY_LEASE", value_parser = parse_lease)]
    pub delivery_lease: Option<Duration>,
}

fn parse_lease(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d < Duration::from_secs(1) {
        return Err(format!("`{s}` is shorter than 1s"));
    }
    Ok(d)
}

/// `--store` as given: checked after parsing (so a bad URL exits 78 like
/// other configuration errors), and never shown by `Debug`.
#[derive(Clone)]
pub struct RawStoreUrl(String);

impl std::fmt::Debug for RawStoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", crate::store::postgres::redact(&self.0))
    }
}

pub(crate) fn raw_store_url(s: &str) -> Result<RawStoreUrl, String> {
    Ok(RawStoreUrl(s.to_owned()))
}

/// The PostgreSQL store `--store` names; `None` (absent or empty) is the
/// SQLite store in the data dir.
pub(crate) fn store_url(raw: Option<&RawStoreUrl>) -> Result<Option<PostgresUrl>, String> {
    match raw.map(|s| s.0.trim()).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(raw) => PostgresUrl::parse(raw).map(Some),
    }
}

/// `512KiB`, `10MiB`, `2GiB` or plain bytes.
fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{s}` is not a size such as 512KiB, 10MiB or 2GiB"))?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" | "KB" => 1 << 10,
        "MiB" | "M" | "MB" => 1 << 20,
        "GiB" | "G" | "GB" => 1 << 30,
        _ => return Err(format!("unknown size unit in `{s}` (use KiB, MiB or GiB)")),
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("`{s}` is too large"))
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn send_settings(args: &Args) -> crate::send::SendSettings {
    use crate::send::breaker::BreakerSettings;
    use crate::send::retry::RetryPolicy;
    crate::send::SendSettings {
        retry: RetryPolicy {
            initial_delay_ms: ms(args.send_retry_initial).max(1),
            max_delay_ms: ms(args.send_retry_max)
                .max(ms(args.send_retry_initial))
                .max(1),
            max_age_ms: ms(args.send_max_age).max(1),
        },
        breaker: BreakerSettings {
            failures_to_open: args.circuit_failures,
            initial_pause_ms: ms(args.circuit_pause).max(1),
            max_pause_ms: ms(args.circuit_pause).max(600_000),
        },
        hold: args.hold_queue,
        delivery_lease: args.delivery_lease,
        ..crate::send::SendSettings::default()
    }
}

fn mailplug_compose(max: u64) -> crate::send::ComposeLimits {
    crate::send::ComposeLimits {
        max_message_bytes: usize::try_from(max).unwrap_or(usize::MAX),
    }
}

/// Runs `mailplug serve`.
pub fn run(args: Args) -> anyhow::Result<u8> {
    logging::init(args.log_format);
    let store_url = match store_url(args.store.as_ref()) {
        Ok(url) => url,
        Err(message) => {
            eprintln!("mailplug serve: --store / MAILPLUG_STORE_URL: {message}");
            return Ok(exit::CONFIG);
        }
    };
    let send = send_settings(&args);
    let settings = Settings {
        config_dir: args.config,
        listen_admin: args.listen_admin,
        listen_public: args.listen_public,
        data_dir: args.data_dir,
        public_url: args.public_url,
        admin_token: args.admin_token.filter(|t| !t.is_empty()),
        strict: args.strict,
        debounce: Duration::from_millis(args.debounce_ms),
        watch: daemon::watcher::WatchOptions {
            mode: args.watch,
            recheck: args.watch_recheck,
        },
        shutdown_timeout: Duration::from_secs(args.shutdown_timeout),
        http: HttpLimits {
            max_connections_admin: args.max_connections_admin,
            max_connections_public: args.max_connections_public,
            header_read_timeout: args.header_read_timeout,
            request_timeout: args.request_timeout,
        },
        store: StoreSettings {
            url: store_url,
            max_size: args.store_max_size,
            soft_bounces: SoftBouncePolicy {
                threshold: args.soft_bounce_threshold,
                window: args.soft_bounce_window,
            },
        },
        send,
        compose: mailplug_compose(args.max_message_size),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(async {
        daemon::check_settings(&settings)?;
        let listeners = Listeners::bind(&settings).await?;
        daemon::run(settings, listeners, api::routers, daemon::shutdown_signal()).await
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
        Err(StartError::Store(message)) => {
            eprintln!("mailplug serve: cannot open the store: {message}");
            Ok(exit::CANTCREAT)
        }
        Err(StartError::Other(e)) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    //! The daemon wired as `serve` wires it, in process on port 0.

    use std::path::Path;
    use std::time::Duration;

    use super::*;
    use crate::daemon::reload::test_hooks;

    fn connection(host: &str) -> String {
        format!(
            "api_version: mailplug/v1\nkind: Connection\nname: a\nsmtp: {{ host: {host} }}\nfrom: {{ email: a@example.com }}\n"
        )
    }

    fn settings(dir: &Path, data: &Path) -> Settings {
        Settings {
            config_dir: dir.to_path_buf(),
            listen_admin: "127.0.0.1:0".parse().unwrap(),
            listen_public: "127.0.0.1:0".parse().unwrap(),
            data_dir: data.to_path_buf(),
            public_url: None,
            admin_token: None,
            strict: false,
            // Long enough that only the API triggers reloads in this test.
            debounce: Duration::from_secs(30),
            watch: daemon::watcher::WatchOptions::default(),
            shutdown_timeout: Duration::from_secs(5),
            http: HttpLimits::default(),
            store: StoreSettings::default(),
            send: crate::send::SendSettings::default(),
            compose: crate::send::ComposeLimits::default(),
        }
    }

    /// `(status, body)` of a request to the admin listener.
    async fn call(admin: std::net::SocketAddr, method: &str, path: &str) -> (u16, String) {
        let url = format!("http://{admin}{path}");
        let method = method.to_owned();
        tokio::task::spawn_blocking(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into();
            let response = if method == "POST" {
                agent.post(&url).send_empty()
            } else {
                agent.get(&url).call()
            };
            let mut response = response.unwrap();
            let status = response.status().as_u16();
            (status, response.body_mut().read_to_string().unwrap())
        })
        .await
        .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_reload_is_counted_and_the_next_reload_applies() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("conf");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("a.yaml"), connection("one.example.com")).unwrap();
        let settings = settings(&dir, &tmp.path().join("data"));
        let listeners = Listeners::bind(&settings).await.unwrap();
        let admin = listeners.admin.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let daemon = tokio::spawn(daemon::run(settings, listeners, api::routers, async {
            let _ = stopped.await;
        }));
        for _ in 0..200 {
            if call(admin, "GET", "/readyz").await.0 == 200 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        test_hooks::panic_next_reload(&dir);
        std::fs::write(dir.join("a.yaml"), connection("two.example.com")).unwrap();
        let (status, body) = call(admin, "POST", "/v1/reload").await;
        assert_eq!(status, 500, "{body}");
        assert!(body.contains("previous configuration stays live"), "{body}");
        let (_, live) = call(admin, "GET", "/v1/connections/a").await;
        assert!(live.contains("one.example.com"), "{live}");
        let (_, metrics) = call(admin, "GET", "/metrics").await;
        assert!(
            metrics.contains("mailplug_config_reloads_total{result=\"panic\"} 1"),
            "{metrics}"
        );

        // The reload task survived: the next reload applies the edit.
        let (status, body) = call(admin, "POST", "/v1/reload").await;
        assert_eq!(status, 200, "{body}");
        let (_, live) = call(admin, "GET", "/v1/connections/a").await;
        assert!(live.contains("two.example.com"), "{live}");

        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), daemon)
            .await
            .expect("daemon stops")
            .unwrap()
            .unwrap();
    }

    #[test]
    fn store_urls_other_than_postgres_are_configuration_errors() {
        let raw = |s: &str| RawStoreUrl(s.to_owned());
        assert!(store_url(None).unwrap().is_none());
        assert!(
            store_url(Some(&raw("  "))).unwrap().is_none(),
            "empty is SQLite"
        );
        let url = store_url(Some(&raw("postgresql://u:pw@db:5433/m")))
            .unwrap()
            .unwrap();
        assert_eq!(url.redacted(), "postgresql://u:***@db:5433/m");
        assert_eq!(
            format!("{:?}", raw("postgres://u:pw@db/m")),
            "postgres://u:***@db/m"
        );
        let err = store_url(Some(&raw("mysql://u:pw@db/m"))).unwrap_err();
        assert!(err.contains("`mysql` is not supported"), "{err}");
        assert!(!err.contains("pw"), "{err}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unreachable_postgres_store_stops_the_start_naming_it_without_the_password() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("conf");
        std::fs::create_dir(&dir).unwrap();
        let (_reserved, port) = crate::store::postgres::testdb::refused_port();
        let mut settings = settings(&dir, &tmp.path().join("data"));
        settings.store.url = Some(
            PostgresUrl::parse(&format!(
                "postgres://app:hunter2@127.0.0.1:{port}/mail?connect_timeout=2"
            ))
            .unwrap(),
        );
        let listeners = Listeners::bind(&settings).await.unwrap();
        let err = daemon::run(settings, listeners, api::routers, std::future::pending())
            .await
            .unwrap_err();
        let StartError::Store(message) = err else {
            panic!("{err}")
        };
        assert!(
            message.contains(&format!("127.0.0.1:{port}/mail")),
            "{message}"
        );
        assert!(!message.contains("hunter2"), "{message}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_daemon_stores_in_postgres_when_given_a_store_url() {
        // The test server's client blocks: off the async threads.
        let database = tokio::task::spawn_blocking(crate::store::postgres::testdb::database);
        let Some(url) = database.await.unwrap() else {
            return;
        };
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("conf");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("a.yaml"), connection("one.example.com")).unwrap();
        let mut settings = settings(&dir, &tmp.path().join("data"));
        settings.store.url = Some(PostgresUrl::parse(&url).unwrap());
        let listeners = Listeners::bind(&settings).await.unwrap();
        let admin = listeners.admin.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let daemon = tokio::spawn(daemon::run(settings, listeners, api::routers, async {
            let _ = stopped.await;
        }));
        for _ in 0..200 {
            if call(admin, "GET", "/readyz").await.0 == 200 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (status, body) = call(admin, "GET", "/v1/status").await;
        assert_eq!(status, 200, "{body}");
        let status: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(status["store"]["backend"], "postgres", "{body}");
        assert_eq!(status["store"]["ok"], true, "{body}");
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), daemon)
            .await
            .expect("daemon stops")
            .unwrap()
            .unwrap();
        // Nothing was stored in the data dir: the store is the database.
        assert!(!tmp.path().join("data/mailplug.db").exists());
    }
}
