//! The long-running daemon: loads the configuration, keeps it live through
//! watch/SIGHUP/API reloads, serves already-bound admin and public listeners
//! with the routers it is given (each under its own connection cap and
//! timeouts), and shuts down gracefully.
//!
//! Binding ([`Listeners::bind`]), running ([`run`]) and the signals that end
//! it ([`shutdown_signal`]) are separate, so tests and benchmarks bind port
//! 0 and stop the daemon with any future.

use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::LoadOptions;
use crate::metrics::Metrics;
use crate::state::{AppState, ReloadFailure, ReloadRequest, Snapshot};

pub mod git;
pub mod reload;
pub mod watcher;

use reload::Reloader;

/// Daemon settings (from flags / environment).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Config directory.
    pub config_dir: PathBuf,
    /// Admin listener address.
    pub listen_admin: SocketAddr,
    /// Public (webhook) listener address.
    pub listen_public: SocketAddr,
    /// Data directory (stores, plugin compile cache).
    pub data_dir: PathBuf,
    /// Base URL providers use to reach the public listener.
    pub public_url: Option<String>,
    /// Bearer token for the admin API.
    pub admin_token: Option<String>,
    /// Refuse to start when any file is invalid.
    pub strict: bool,
    /// Quiet period before a burst of file events triggers a reload.
    pub debounce: Duration,
    /// How the config directory is watched.
    pub watch: watcher::WatchOptions,
    /// How long in-flight requests may take to finish at shutdown.
    pub shutdown_timeout: Duration,
    /// Connection caps and timeouts of both listeners.
    pub http: HttpLimits,
    /// The event store.
    pub store: StoreSettings,
    /// The sending queue's workers.
    pub send: crate::send::SendSettings,
    /// Size limits of submitted messages.
    pub compose: crate::send::ComposeLimits,
}

/// Where and how events are stored (flags of `mailplug serve`).
#[derive(Debug, Clone, Default)]
pub struct StoreSettings {
    /// A PostgreSQL database (`--store`); `None` is SQLite in the data dir.
    pub url: Option<crate::store::postgres::PostgresUrl>,
    /// Refuse writes (503) once the database would grow past this many
    /// bytes (SQLite only).
    pub max_size: Option<u64>,
    /// When soft bounces suppress an address.
    pub soft_bounces: crate::store::SoftBouncePolicy,
}

/// Opens the store (PostgreSQL if `--store` names one, else the embedded
/// SQLite in the data dir), group commit started.
pub fn open_store(
    settings: &Settings,
    metrics: &Arc<Metrics>,
) -> Result<Arc<crate::store::Store>, StartError> {
    use crate::store::Backend;
    let backend: Arc<dyn Backend> = match &settings.store.url {
        Some(url) => Arc::new(open_postgres(url, &settings.store)?),
        None => {
            use crate::store::sqlite::{Sqlite, SqliteOptions};
            let path = settings.data_dir.join(crate::store::sqlite::FILE_NAME);
            let backend = Sqlite::open(&SqliteOptions {
                path: path.clone(),
                max_size: settings.store.max_size,
                soft_bounces: settings.store.soft_bounces,
            })
            .map_err(|e| StartError::Store(format!("{}: {e}", path.display())))?;
            Arc::new(backend)
        }
    };
    let observer = metrics.clone();
    Ok(Arc::new(crate::store::Store::start(
        backend,
        Box::new(move |requests, events, _took, ok| observer.observe_commit(requests, events, ok)),
    )))
}

/// Connects to and migrates the PostgreSQL store. The client blocks on a
/// runtime of its own, which cannot start inside the daemon's: it opens on
/// a thread of its own.
fn open_postgres(
    url: &crate::store::postgres::PostgresUrl,
    store: &StoreSettings,
) -> Result<crate::store::postgres::Postgres, StartError> {
    use crate::store::StoreError;
    use crate::store::postgres::{DEFAULT_MAX_CONNECTIONS, Postgres, PostgresOptions};
    if store.max_size.is_some() {
        tracing::warn!("--store-max-size limits the SQLite store only; ignored with --store");
    }
    let options = PostgresOptions {
        url: url.clone(),
        max_connections: url.pool_size().unwrap_or(DEFAULT_MAX_CONNECTIONS),
        soft_bounces: store.soft_bounces,
    };
    let opened = std::thread::scope(|s| s.spawn(|| Postgres::open(&options)).join());
    match opened {
        Ok(Ok(backend)) => {
            tracing::info!(store = %url, "event store: PostgreSQL");
            Ok(backend)
        }
        // Connection and migration errors already name host:port/database.
        Ok(Err(StoreError::Backend(message))) => Err(StartError::Store(message)),
        Ok(Err(e)) => Err(StartError::Store(format!(
            "PostgreSQL at {}: {e}",
            url.target()
        ))),
        Err(_) => Err(StartError::Store(format!(
            "opening PostgreSQL at {} failed unexpectedly",
            url.target()
        ))),
    }
}

/// How the listeners bound what clients can hold open (flags of `mailplug serve`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Connections the admin listener serves at once; more are refused.
    pub max_connections_admin: usize,
    /// Connections the public listener serves at once; more are refused.
    pub max_connections_public: usize,
    /// Time a connection gets to deliver a complete request head, counted
    /// from accept and again from the end of each response: it is also the
    /// keep-alive idle timeout.
    pub header_read_timeout: Duration,
    /// Time one request gets from its head to its response.
    pub request_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_connections_admin: 64,
            max_connections_public: 1024,
            header_read_timeout: Duration::from_secs(10),
            // Above the 60 s a `POST /v1/reload` may wait for its reload.
            request_timeout: Duration::from_secs(120),
        }
    }
}

/// Why the daemon did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Unsafe or impossible settings.
    #[error("{0}")]
    Usage(String),
    /// `--strict` and invalid configuration.
    #[error("configuration is invalid ({0} errors) and --strict is set")]
    InvalidConfig(usize),
    /// The store cannot be opened (I/O, a schema newer than this binary).
    #[error("cannot open the store: {0}")]
    Store(String),
    /// Anything else (bind failures, I/O).
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// The two bound listeners.
#[derive(Debug)]
pub struct Listeners {
    /// Admin API.
    pub admin: TcpListener,
    /// Provider webhooks.
    pub public: TcpListener,
}

impl Listeners {
    /// Binds both addresses of `settings`.
    pub async fn bind(settings: &Settings) -> Result<Self, StartError> {
        let admin = TcpListener::bind(settings.listen_admin)
            .await
            .with_context(|| format!("binding admin listener {}", settings.listen_admin))?;
        let public = TcpListener::bind(settings.listen_public)
            .await
            .with_context(|| format!("binding public listener {}", settings.listen_public))?;
        Ok(Self { admin, public })
    }
}

/// What the daemon serves on each listener (built by the caller from the
/// shared state, so this module does not depend on the API's routes).
#[derive(Debug)]
pub struct Routers {
    /// Served on the admin listener.
    pub admin: axum::Router,
    /// Served on the public listener.
    pub public: axum::Router,
}

/// Refuses settings that are unsafe or cannot work, before anything is bound.
pub fn check_settings(settings: &Settings) -> Result<(), StartError> {
    if !settings.listen_admin.ip().is_loopback() && settings.admin_token.is_none() {
        return Err(StartError::Usage(format!(
            "the admin API would listen on {} (not loopback) without a token; set --admin-token or MAILPLUG_ADMIN_TOKEN",
            settings.listen_admin
        )));
    }
    if let Some(token) = &settings.admin_token
        && !token.bytes().all(|b| b.is_ascii_graphic())
    {
        // A header value carries visible ASCII only, and a blank or padded
        // token would be trimmed away by clients: such a token could never match.
        return Err(StartError::Usage(
            "--admin-token must be non-blank visible ASCII without spaces".to_owned(),
        ));
    }
    if settings.http.max_connections_admin == 0 || settings.http.max_connections_public == 0 {
        return Err(StartError::Usage(
            "--max-connections-admin and --max-connections-public must be at least 1".to_owned(),
        ));
    }
    if settings.http.header_read_timeout.is_zero() || settings.http.request_timeout.is_zero() {
        return Err(StartError::Usage(
            "--header-read-timeout and --request-timeout must be longer than 0".to_owned(),
        ));
    }
    if !settings.config_dir.is_dir() {
        return Err(StartError::Usage(format!(
            "--config {}: not a directory",
            settings.config_dir.display()
        )));
    }
    Ok(())
}

/// The base URL providers are told to post webhooks to. An explicit
/// `--public-url` wins. A wildcard listener (`0.0.0.0`, `[::]`) is not an
/// address anyone can reach, so the machine's host name stands in for it,
/// and the second value says the operator should be warned.
pub fn public_base_url(explicit: Option<&str>, addr: SocketAddr) -> (String, bool) {
    if let Some(url) = explicit {
        return (url.trim_end_matches('/').to_owned(), false);
    }
    if addr.ip().is_unspecified() {
        return (
            format!("http://{}:{}", crate::mail::machine_hostname(), addr.port()),
            true,
        );
    }
    (format!("http://{addr}"), false)
}

/// Resolves when SIGTERM or SIGINT arrives (or at once, logged, if the
/// handlers cannot be installed: a daemon that cannot be stopped is worse).
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install SIGTERM/SIGINT handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}

/// Runs the daemon on `listeners` until `shutdown` resolves, then drains
/// in-flight requests (up to `settings.shutdown_timeout`) and stops every task.
pub async fn run(
    settings: Settings,
    listeners: Listeners,
    routes: impl FnOnce(Arc<AppState>) -> Routers,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    check_settings(&settings)?;
    raise_fd_limit(&settings.http);
    std::fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("creating data dir {}", settings.data_dir.display()))?;

    let metrics = Arc::new(Metrics::new());
    if let crate::runtime::Clock::Fixed(now) =
        crate::runtime::Clock::from_env().map_err(StartError::Usage)?
    {
        tracing::warn!(
            now,
            "{} is set: plugins see a fixed clock (signature windows are checked against it). Test use only",
            crate::runtime::FIXED_NOW_ENV
        );
    }
    let store = open_store(&settings, &metrics)?;
    let config_dir = settings.config_dir.clone();
    let cache_dir = settings.data_dir.join("plugin-cache");
    let (reloader, snapshot) = tokio::task::spawn_blocking(move || {
        let mut reloader = Reloader::new(config_dir, LoadOptions::default(), Some(cache_dir))?;
        let snapshot = reloader.reload();
        anyhow::Ok((reloader, snapshot))
    })
    .await
    .context("initial load")??;
    report(&snapshot, &metrics, "startup");
    if settings.strict && snapshot.error_count() > 0 {
        for d in &snapshot.diagnostics {
            eprintln!("{d}");
        }
        return Err(StartError::InvalidConfig(snapshot.error_count()));
    }
    let snapshot = Arc::new(ArcSwap::from_pointee(snapshot));

    let admin_addr = listeners.admin.local_addr().context("admin address")?;
    let public_addr = listeners.public.local_addr().context("public address")?;
    let (public_url, guessed) = public_base_url(settings.public_url.as_deref(), public_addr);
    if guessed {
        tracing::warn!(
            %public_url,
            "the public listener is bound to a wildcard address; webhook URLs use this machine's host name. Set --public-url (MAILPLUG_PUBLIC_URL) to the URL providers reach"
        );
    }

    // Every task below observes this; `shutdown` only flips it.
    let (stop_tx, stop) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });

    let (reload_tx, reload_rx) = mpsc::channel::<ReloadRequest>(16);
    let sending = Arc::new(crate::send::Sending::new(settings.send));
    let state = Arc::new(AppState {
        snapshot: snapshot.clone(),
        metrics: metrics.clone(),
        reload: reload_tx.clone(),
        admin_token: settings.admin_token.clone(),
        public_url,
        ready: false.into(),
        outcomes: Mutex::default(),
        refusals: crate::state::Refusals::default(),
        store: store.clone(),
        plugin_slots: tokio::sync::Semaphore::new(
            std::thread::available_parallelism().map_or(2, std::num::NonZero::get),
        ),
        sns: Arc::new(crate::sns::SnsHost::from_env()),
        sending: sending.clone(),
        compose_limits: settings.compose,
    });

    let mut tasks: Vec<(&'static str, JoinHandle<()>)> = Vec::new();
    let (watch_tx, watch_rx) = mpsc::channel::<()>(1);
    let fs_watch = watcher::spawn(
        &settings.config_dir,
        settings.debounce,
        settings.watch,
        metrics.config_watch_polling.clone(),
        watch_tx,
        stop.clone(),
    )
    .await;
    tasks.push((
        "reload",
        tokio::spawn(reload_loop(
            Arc::new(Mutex::new(reloader)),
            reload_rx,
            snapshot.clone(),
            metrics.clone(),
            fs_watch.rearm,
            stop.clone(),
        )),
    ));
    tasks.push(("watch-fs", fs_watch.task));
    tasks.push((
        "watch",
        tokio::spawn(forward_watch(watch_rx, reload_tx.clone(), stop.clone())),
    ));
    tasks.push(("sighup", tokio::spawn(sighup(reload_tx, stop.clone()))));

    // Stops claiming when `stop` flips; awaited below before the store closes.
    let forwarding = crate::forward::Forwarding::start(
        store.clone(),
        snapshot.clone(),
        metrics.clone(),
        crate::forward::WorkerSettings::default(),
        stop.clone(),
    );

    // Deliveries a stopped process left in flight go back first; then one
    // lane per connection. Stops with `stop`; awaited before the store closes.
    let send_workers = crate::send::Workers::start(
        sending,
        store.clone(),
        snapshot.clone(),
        metrics.clone(),
        stop.clone(),
    )
    .await;
    if settings.send.hold {
        tracing::warn!("--hold-queue: messages are accepted and queued, nothing is sent");
    }

    let routers = routes(state.clone());
    let admin_server = serve(
        Listener {
            name: "admin",
            socket: listeners.admin,
            max_connections: settings.http.max_connections_admin,
        },
        routers.admin,
        settings.http,
        metrics.clone(),
        stop.clone(),
    );
    let public_server = serve(
        Listener {
            name: "public",
            socket: listeners.public,
            max_connections: settings.http.max_connections_public,
        },
        routers.public,
        settings.http,
        metrics.clone(),
        stop.clone(),
    );
    state.ready.store(true, Ordering::Release);
    tracing::info!(%admin_addr, %public_addr, config = %settings.config_dir.display(), "mailplug is serving");
    // A stable line on stdout that scripts and tests can wait for.
    println!("mailplug ready admin=http://{admin_addr} public=http://{public_addr}");

    let mut stopped = stop.clone();
    let _ = stopped.wait_for(|s| *s).await;
    state.ready.store(false, Ordering::Release);
    tracing::info!(timeout = ?settings.shutdown_timeout, "shutting down: draining in-flight requests");
    let drained = tokio::time::timeout(settings.shutdown_timeout, async {
        let _ = admin_server.await;
        let _ = public_server.await;
    })
    .await;
    if drained.is_err() {
        tracing::warn!("shutdown timeout reached with requests still in flight");
    }
    // Forwarding attempts in flight finish (within a short bound) and
    // their outcomes are recorded while the store is still open.
    forwarding.finished().await;
    send_workers.finished().await;
    // Every write queued before now is committed; later ones were refused.
    store.close().await;
    // A reload in progress finishes (it only reads files); nothing is left half-applied.
    for (name, task) in tasks {
        match tokio::time::timeout(Duration::from_secs(5), task).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(task = name, error = %e, "task ended abnormally"),
            Err(_) => tracing::warn!(task = name, "task did not stop within 5 s"),
        }
    }
    tracing::info!("stopped");
    Ok(())
}

/// The open-file limit of this process: `(soft, hard)`, `None` meaning unlimited.
pub fn fd_limit() -> (Option<u64>, Option<u64>) {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    (limit.current, limit.maximum)
}

/// Raises the open-file soft limit to the hard one (every connection is a
/// descriptor; the default soft limit is often 1024) and warns when the
/// connection caps do not fit in what remains.
fn raise_fd_limit(limits: &HttpLimits) {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if let Err(error) = setrlimit(Resource::Nofile, raised) {
            tracing::warn!(%error, soft = ?limit.current, hard = ?limit.maximum, "cannot raise the open-file limit");
        }
    }
    let (soft, hard) = fd_limit();
    // Config files, plugins, the watcher and SMTP sockets need some too.
    let needed = (limits.max_connections_admin + limits.max_connections_public + 256) as u64;
    if soft.is_some_and(|soft| soft < needed) {
        tracing::warn!(
            ?soft,
            ?hard,
            needed,
            "the open-file limit is below the connection caps; lower --max-connections-public or raise the limit"
        );
    } else {
        tracing::debug!(?soft, ?hard, "open-file limit");
    }
}

/// One bound listener and its connection cap.
struct Listener {
    name: &'static str,
    socket: TcpListener,
    max_connections: usize,
}

/// Sent, best effort, to a connection over the cap before it is closed.
const REFUSED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: 37\r\nconnection: close\r\n\r\n{\"error\":\"too many open connections\"}";

/// Serves `router` on `listener` until `stop`, then lets every open
/// connection finish its request in flight (idle ones close at once).
///
/// hyper serves each connection directly because `axum::serve` has no
/// header-read timeout and no cap: each connection holds a permit of the
/// listener's semaphore, and one accepted while none is left is answered
/// 503 and closed at once. Accepting and closing, rather than not
/// accepting, keeps the kernel's backlog empty, so excess clients learn
/// immediately instead of hanging in `connect`.
fn serve(
    listener: Listener,
    router: axum::Router,
    limits: HttpLimits,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    use hyper::server::conn::http1;
    use hyper_util::rt::{TokioIo, TokioTimer};

    let router = router.layer(axum::middleware::from_fn_with_state(
        limits.request_timeout,
        request_timeout,
    ));
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let label = vec![("listener", listener.name.to_owned())];
    let open = metrics.http_open_connections.get_or_create(&label).clone();
    let refused = metrics.http_refused.get_or_create(&label).clone();
    let permits = Arc::new(tokio::sync::Semaphore::new(listener.max_connections));
    tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let accepted = tokio::select! {
                accepted = listener.socket.accept() => accepted,
                Some(_) = connections.join_next(), if !connections.is_empty() => continue,
                _ = stop.wait_for(|s| *s) => break,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => {
                    // Responses are written whole; without this, Nagle's
                    // algorithm meets the client's delayed ACK and stalls
                    // keep-alive requests by ~40 ms.
                    let _ = accepted.0.set_nodelay(true);
                    accepted
                }
                Err(error) => {
                    tracing::warn!(listener = listener.name, %error, "accept failed");
                    // Out of descriptors (or similar): let connections close
                    // instead of spinning on the same error.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                refused.inc();
                // Never waits: a fresh socket's send buffer is empty.
                let _ = stream.try_write(REFUSED);
                drop(stream);
                continue;
            };
            let router = router.clone();
            let service = hyper::service::service_fn(move |mut request| {
                request
                    .extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                tower_service::Service::call(&mut router.clone(), request)
            });
            let builder = builder.clone();
            let open = open.clone();
            let mut stop = stop.clone();
            let name = listener.name;
            connections.spawn(async move {
                let _permit = permit;
                open.inc();
                let connection = builder.serve_connection(TokioIo::new(stream), service);
                tokio::pin!(connection);
                // The watch guard must not live across the drain below.
                let stopping = async move {
                    let _ = stop.wait_for(|s| *s).await;
                };
                let result = tokio::select! {
                    result = connection.as_mut() => result,
                    () = stopping => {
                        connection.as_mut().graceful_shutdown();
                        connection.await
                    }
                };
                if let Err(error) = result {
                    // Header-read timeouts and clients that go away are routine.
                    tracing::debug!(listener = name, %peer, %error, "connection ended with an error");
                }
                open.dec();
            });
        }
        drop(listener.socket);
        while connections.join_next().await.is_some() {}
    })
}

/// Answers 408 (JSON) when the request takes longer than the limit.
async fn request_timeout(
    axum::extract::State(limit): axum::extract::State<Duration>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => (
            axum::http::StatusCode::REQUEST_TIMEOUT,
            axum::Json(serde_json::json!({
                "error": format!("the request did not complete within {}", humantime::format_duration(limit)),
            })),
        )
            .into_response(),
    }
}

fn report(snapshot: &Snapshot, metrics: &Metrics, cause: &str) {
    metrics
        .reloads
        .get_or_create(&vec![("result", snapshot.result.as_str().to_owned())])
        .inc();
    for d in &snapshot.diagnostics {
        if d.is_error() {
            tracing::warn!(diagnostic = %d, "configuration error");
        } else {
            tracing::info!(diagnostic = %d, "configuration warning");
        }
    }
    tracing::info!(
        cause,
        generation = snapshot.generation,
        connections = snapshot.connections.len(),
        errors = snapshot.error_count(),
        result = snapshot.result.as_str(),
        duration_ms = snapshot.duration.as_secs_f64() * 1e3,
        "configuration loaded"
    );
}

/// One reload on the blocking pool. A panic is contained here: the reloader
/// stays (its cache is reset), the live snapshot stays, and the failure is
/// returned so the loop can count it and go on.
async fn reload_once(reloader: &Arc<Mutex<Reloader>>) -> Result<Snapshot, ReloadFailure> {
    let reloader = reloader.clone();
    let joined = tokio::task::spawn_blocking(move || {
        // A poisoned lock only means an earlier reload panicked; `recover`
        // below already made the reloader safe to use again.
        let mut guard = reloader
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| guard.reload()));
        if outcome.is_err() {
            guard.recover();
        }
        outcome.map_err(|payload| panic_message(payload.as_ref()))
    })
    .await;
    match joined {
        Ok(Ok(snapshot)) => Ok(snapshot),
        Ok(Err(message)) => Err(ReloadFailure::Panicked(message)),
        Err(e) => Err(ReloadFailure::Panicked(e.to_string())),
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".to_owned())
}

async fn reload_loop(
    reloader: Arc<Mutex<Reloader>>,
    mut requests: mpsc::Receiver<ReloadRequest>,
    live: Arc<ArcSwap<Snapshot>>,
    metrics: Arc<Metrics>,
    rearm: watcher::Rearm,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let first = tokio::select! {
            request = requests.recv() => request,
            _ = stop.wait_for(|s| *s) => None,
        };
        let Some(first) = first else { break };
        // Requests that queued up while we were busy are served by one reload.
        let mut batch = vec![first];
        while let Ok(more) = requests.try_recv() {
            batch.push(more);
        }
        let cause = batch[0].cause;
        // A manual reload (SIGHUP, the API) also re-arms the watch first, so
        // whatever made the operator reload (a swapped directory the watch
        // missed) does not also hide the changes after it.
        if batch.iter().any(|r| r.cause != "watch") {
            rearm.rearm().await;
        }
        let outcome = match reload_once(&reloader).await {
            Ok(snapshot) => {
                report(&snapshot, &metrics, cause);
                let snapshot = Arc::new(snapshot);
                live.store(snapshot.clone());
                Ok(snapshot)
            }
            Err(failure) => {
                metrics
                    .reloads
                    .get_or_create(&vec![("result", "panic".to_owned())])
                    .inc();
                tracing::error!(cause, error = %failure, "reload panicked; keeping the previous configuration");
                Err(failure)
            }
        };
        for request in batch {
            if let Some(reply) = request.reply {
                let _ = reply.send(outcome.clone());
            }
        }
    }
    // Whoever still waits learns why no reload comes.
    requests.close();
    while let Ok(request) = requests.try_recv() {
        if let Some(reply) = request.reply {
            let _ = reply.send(Err(ReloadFailure::ShuttingDown));
        }
    }
}

async fn forward_watch(
    mut changes: mpsc::Receiver<()>,
    reload: mpsc::Sender<ReloadRequest>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let change = tokio::select! {
            change = changes.recv() => change,
            _ = stop.wait_for(|s| *s) => None,
        };
        if change.is_none() {
            return;
        }
        let request = ReloadRequest {
            cause: "watch",
            reply: None,
        };
        if reload.send(request).await.is_err() {
            return;
        }
    }
}

async fn sighup(reload: mpsc::Sender<ReloadRequest>, mut stop: watch::Receiver<bool>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot install SIGHUP handler");
        return;
    };
    loop {
        let got = tokio::select! {
            got = hup.recv() => got,
            _ = stop.wait_for(|s| *s) => None,
        };
        if got.is_none() {
            return;
        }
        let request = ReloadRequest {
            cause: "sighup",
            reply: None,
        };
        if reload.send(request).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_sent_over_the_cap_is_a_complete_json_response() {
        let text = std::str::from_utf8(REFUSED).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 "), "{head}");
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["error"], "too many open connections");
    }

    fn settings_in(dir: &std::path::Path) -> Settings {
        Settings {
            config_dir: dir.to_path_buf(),
            listen_admin: "127.0.0.1:0".parse().unwrap(),
            listen_public: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.join("data"),
            public_url: None,
            admin_token: None,
            strict: false,
            debounce: Duration::from_millis(100),
            watch: watcher::WatchOptions::default(),
            shutdown_timeout: Duration::from_secs(1),
            http: HttpLimits::default(),
            store: StoreSettings::default(),
            send: crate::send::SendSettings::default(),
            compose: crate::send::ComposeLimits::default(),
        }
    }

    #[test]
    fn zero_connection_caps_or_timeouts_are_refused_at_startup() {
        let dir = tempfile::tempdir().unwrap();
        assert!(check_settings(&settings_in(dir.path())).is_ok());
        let broken = [
            HttpLimits {
                max_connections_admin: 0,
                ..HttpLimits::default()
            },
            HttpLimits {
                max_connections_public: 0,
                ..HttpLimits::default()
            },
            HttpLimits {
                header_read_timeout: Duration::ZERO,
                ..HttpLimits::default()
            },
            HttpLimits {
                request_timeout: Duration::ZERO,
                ..HttpLimits::default()
            },
        ];
        for http in broken {
            let settings = Settings {
                http,
                ..settings_in(dir.path())
            };
            assert!(
                matches!(check_settings(&settings), Err(StartError::Usage(_))),
                "{http:?}"
            );
        }
    }

    #[test]
    fn blank_or_padded_admin_tokens_are_refused_at_startup() {
        let dir = tempfile::tempdir().unwrap();
        let settings = |token: &str| Settings {
            admin_token: Some(token.to_owned()),
            ..settings_in(dir.path())
        };
        for token in ["   ", "\t", " secret", "se cret"] {
            assert!(
                matches!(check_settings(&settings(token)), Err(StartError::Usage(_))),
                "{token:?}"
            );
        }
        assert!(check_settings(&settings("s3cret-token")).is_ok());
    }

    #[test]
    fn webhook_base_urls_never_show_a_wildcard_address() {
        let (url, warn) = public_base_url(None, "0.0.0.0:8080".parse().unwrap());
        assert!(warn);
        assert!(!url.contains("0.0.0.0"), "{url}");
        assert!(url.ends_with(":8080"), "{url}");
        let (url, warn) = public_base_url(None, "[::]:9000".parse().unwrap());
        assert!(warn && !url.contains("[::]"), "{url}");
        assert_eq!(
            public_base_url(None, "127.0.0.1:8080".parse().unwrap()),
            ("http://127.0.0.1:8080".to_owned(), false)
        );
        assert_eq!(
            public_base_url(
                Some("https://hooks.example.com/"),
                "0.0.0.0:8080".parse().unwrap()
            ),
            ("https://hooks.example.com".to_owned(), false)
        );
    }
}
