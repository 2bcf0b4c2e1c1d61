//! Watches the config directory and turns bursts of filesystem events
//! (editor atomic saves, `git pull`, ConfigMap `..data` swaps) into single
//! debounced reload requests.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher as _};
use tokio::sync::{mpsc, watch};

/// Whether an event can change what a reload would load. Reads (`Access`)
/// are ignored, or every reload would trigger the next one, and so is `.git`
/// internals' churn (the work tree files change too when it matters).
fn relevant(event: &notify::Event) -> bool {
    if matches!(event.kind, EventKind::Access(_)) {
        return false;
    }
    event.paths.is_empty()
        || event.paths.iter().any(|p| {
            !p.components()
                .any(|c| c == Component::Normal(".git".as_ref()))
        })
}

/// Starts watching `dir` recursively. Every burst of relevant events, once
/// quiet for `debounce`, sends one `()` on `reload`. Stops at shutdown.
/// Returns the watcher, which must be kept alive.
pub fn spawn(
    dir: &Path,
    debounce: Duration,
    reload: mpsc::Sender<()>,
    mut shutdown: watch::Receiver<bool>,
) -> notify::Result<notify::RecommendedWatcher> {
    let (tx, mut rx) = mpsc::unbounded_channel::<PathBuf>();
    let mut watcher =
        notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
            Ok(event) if relevant(&event) => {
                let _ = tx.send(event.paths.into_iter().next().unwrap_or_default());
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "config watcher error; forcing a reload");
                let _ = tx.send(PathBuf::new());
            }
        })?;
    watcher.watch(dir, RecursiveMode::Recursive)?;
    tokio::spawn(async move {
        loop {
            let first = tokio::select! {
                ev = rx.recv() => ev,
                _ = shutdown.changed() => return,
            };
            let Some(first) = first else { return };
            let mut events = 1usize;
            // Quiet period: a `git checkout` of hundreds of files is one reload.
            loop {
                tokio::select! {
                    ev = tokio::time::timeout(debounce, rx.recv()) => match ev {
                        Ok(Some(_)) => events += 1,
                        Ok(None) => return,
                        Err(_) => break,
                    },
                    _ = shutdown.changed() => return,
                }
            }
            tracing::debug!(events, first = %first.display(), "config change detected");
            if reload.send(()).await.is_err() {
                return;
            }
        }
    });
    Ok(watcher)
}
