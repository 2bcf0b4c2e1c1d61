//! The long-running daemon: loads the configuration, keeps it live through
//! watch/SIGHUP/API reloads, serves the admin and public listeners, and shuts
//! down gracefully.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};

use crate::api::{self, AppState};
use crate::config::LoadOptions;
use crate::metrics::Metrics;

pub mod git;
pub mod reload;
pub mod watcher;

use reload::{Reloader, Snapshot};

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

/// A request for a reload; `reply` receives the resulting snapshot.
#[derive(Debug)]
pub struct ReloadRequest {
    /// What asked (`watch`, `sighup`, `api`), for logs.
    pub cause: &'static str,
    /// Where to send the new snapshot, if anyone waits for it.
    pub reply: Option<oneshot::Sender<Arc<Snapshot>>>,
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

fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

/// Runs the daemon until SIGTERM/SIGINT (or `shutdown` flips to true).
pub async fn run(
    settings: Settings,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), StartError> {
    if !is_loopback(&settings.listen_admin) && settings.admin_token.is_none() {
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

    let admin = TcpListener::bind(settings.listen_admin)
        .await
        .with_context(|| format!("binding admin listener {}", settings.listen_admin))?;
    let public = TcpListener::bind(settings.listen_public)
        .await
        .with_context(|| format!("binding public listener {}", settings.listen_public))?;
    let admin_addr = admin.local_addr().context("admin address")?;
    let public_addr = public.local_addr().context("public address")?;
    let public_url = settings
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{public_addr}"));

    let (reload_tx, reload_rx) = mpsc::channel::<ReloadRequest>(16);
    let state = Arc::new(AppState {
        snapshot: snapshot.clone(),
        metrics: metrics.clone(),
        reload: reload_tx.clone(),
        admin_token: settings.admin_token.clone(),
        public_url,
        ready: false.into(),
        list_cache: std::sync::Mutex::new(None),
        outcomes: std::sync::Mutex::new(Default::default()),
    });

    let reload_task = tokio::spawn(reload_loop(
        reloader,
        reload_rx,
        snapshot.clone(),
        metrics.clone(),
        shutdown.clone(),
    ));
    let (watch_tx, mut watch_rx) = mpsc::channel::<()>(1);
    let _watcher = watcher::spawn(
        &settings.config_dir,
        settings.debounce,
        watch_tx,
        shutdown.clone(),
    )
    .with_context(|| format!("watching {}", settings.config_dir.display()))?;
    let forward = reload_tx.clone();
    tokio::spawn(async move {
        while watch_rx.recv().await.is_some() {
            if forward
                .send(ReloadRequest {
                    cause: "watch",
                    reply: None,
                })
                .await
                .is_err()
            {
                break;
            }
        }
    });
    spawn_signal_handlers(reload_tx.clone());

    let admin_server = serve(admin, api::admin_router(state.clone()), shutdown.clone());
    let public_server = serve(public, api::public_router(state.clone()), shutdown.clone());
    state.ready.store(true, Ordering::Release);
    tracing::info!(%admin_addr, %public_addr, config = %settings.config_dir.display(), "mailplug is serving");
    // A stable line on stdout that scripts and tests can wait for.
    println!("mailplug ready admin=http://{admin_addr} public=http://{public_addr}");

    let _ = shutdown.wait_for(|stop| *stop).await;
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
    let _ = tokio::time::timeout(Duration::from_secs(5), reload_task).await;
    tracing::info!("stopped");
    Ok(())
}

fn serve(
    listener: TcpListener,
    router: axum::Router,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<std::io::Result<()>> {
    tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = shutdown.wait_for(|stop| *stop).await;
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

async fn reload_loop(
    mut reloader: Reloader,
    mut requests: mpsc::Receiver<ReloadRequest>,
    live: Arc<ArcSwap<Snapshot>>,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let first = tokio::select! {
            request = requests.recv() => request,
            _ = shutdown.wait_for(|stop| *stop) => None,
        };
        let Some(first) = first else { return };
        // Requests that queued up while we were busy are served by one reload.
        let mut batch = vec![first];
        while let Ok(more) = requests.try_recv() {
            batch.push(more);
        }
        let cause = batch[0].cause;
        let result = tokio::task::spawn_blocking(move || {
            let snapshot = reloader.reload();
            (reloader, snapshot)
        })
        .await;
        let Ok((back, snapshot)) = result else {
            tracing::error!("reload task panicked; keeping the previous configuration");
            return;
        };
        reloader = back;
        report(&snapshot, &metrics, cause);
        let snapshot = Arc::new(snapshot);
        live.store(snapshot.clone());
        for request in batch {
            if let Some(reply) = request.reply {
                let _ = reply.send(snapshot.clone());
            }
        }
    }
}

fn spawn_signal_handlers(reload: mpsc::Sender<ReloadRequest>) {
    use tokio::signal::unix::{SignalKind, signal};
    tokio::spawn(async move {
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot install SIGHUP handler");
            return;
        };
        while hup.recv().await.is_some() {
            if reload
                .send(ReloadRequest {
                    cause: "sighup",
                    reply: None,
                })
                .await
                .is_err()
            {
                break;
            }
        }
    });
}

/// Flips `tx` to true on SIGTERM or SIGINT.
pub fn shutdown_on_signals(tx: watch::Sender<bool>) {
    use tokio::signal::unix::{SignalKind, signal};
    tokio::spawn(async move {
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
        let _ = tx.send(true);
    });
}
