//! The long-running daemon: loads the configuration, keeps it live through
//! watch/SIGHUP/API reloads, serves already-bound admin and public listeners
//! with the routers it is given, and shuts down gracefully.
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
    /// How long in-flight requests may take to finish at shutdown.
    pub shutdown_timeout: Duration,
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
    std::fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("creating data dir {}", settings.data_dir.display()))?;

    let metrics = Arc::new(Metrics::new());
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
    let state = Arc::new(AppState {
        snapshot: snapshot.clone(),
        metrics: metrics.clone(),
        reload: reload_tx.clone(),
        admin_token: settings.admin_token.clone(),
        public_url,
        ready: false.into(),
        outcomes: Mutex::default(),
    });

    let mut tasks: Vec<(&'static str, JoinHandle<()>)> = Vec::new();
    tasks.push((
        "reload",
        tokio::spawn(reload_loop(
            Arc::new(Mutex::new(reloader)),
            reload_rx,
            snapshot.clone(),
            metrics.clone(),
            stop.clone(),
        )),
    ));
    let (watch_tx, watch_rx) = mpsc::channel::<()>(1);
    tasks.push((
        "watch-fs",
        watcher::spawn(
            &settings.config_dir,
            settings.debounce,
            watch_tx,
            stop.clone(),
        )
        .await,
    ));
    tasks.push((
        "watch",
        tokio::spawn(forward_watch(watch_rx, reload_tx.clone(), stop.clone())),
    ));
    tasks.push(("sighup", tokio::spawn(sighup(reload_tx, stop.clone()))));

    let routers = routes(state.clone());
    let admin_server = serve(listeners.admin, routers.admin, stop.clone());
    let public_server = serve(listeners.public, routers.public, stop.clone());
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

fn serve(
    listener: TcpListener,
    router: axum::Router,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<std::io::Result<()>> {
    tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await
    })
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
