//! Watches the config directory and turns bursts of filesystem events
//! (editor atomic saves, `git pull`, ConfigMap `..data` swaps) into single
//! debounced reload requests, and keeps watching the configured *path*
//! through removal, re-creation and rename-swap of the directory itself.
//!
//! A watch on a directory follows the inode, not the name: once the
//! directory is removed or renamed away, its watch sees nothing of what
//! later appears under the configured name. So the parent directory is
//! watched too (non-recursively, for the config dir's name), and the whole
//! watch is re-armed whenever the directory itself changed, before every
//! manual reload (SIGHUP, `POST /v1/reload`: see [`Rearm`]), and whenever a
//! periodic re-check finds a different directory (or one where there was
//! none) — the only way to notice a swap above the parent, e.g. of a
//! `current -> release-N` symlink the path runs through. When native
//! watching is unavailable (no inotify instances, out of watches), or
//! [`WatchMode::Poll`] asks for it, a polling watcher takes over.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Component, Path};
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher as _};
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

/// Default of [`WatchOptions::recheck`].
pub const RECHECK: Duration = Duration::from_secs(2);

/// Shortest [`WatchOptions::recheck`] honoured: a faster re-check would
/// only burn CPU on `stat` and directory scans.
pub const MIN_RECHECK: Duration = Duration::from_millis(100);

/// How the config directory is watched (`mailplug serve --watch`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum WatchMode {
    /// inotify, falling back to polling when it is unavailable.
    #[default]
    Auto,
    /// Always poll: for filesystems whose changes inotify never reports
    /// (NFS, some FUSE and container bind mounts), and to test the fallback.
    Poll,
}

/// Watcher settings (flags of `mailplug serve`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchOptions {
    /// Native watching or polling.
    pub mode: WatchMode,
    /// How often the configured path is re-checked for a different
    /// directory, and the polling interval when polling (at least
    /// [`MIN_RECHECK`]).
    pub recheck: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        Self {
            mode: WatchMode::Auto,
            recheck: RECHECK,
        }
    }
}

/// Asks the watcher to re-arm its watch on the configured path now. A
/// manual reload does this first: the operator reloads because something
/// changed that the watch may have missed (a swapped directory), and the
/// re-armed watch must then see every later change.
#[derive(Debug, Clone)]
pub struct Rearm(mpsc::Sender<oneshot::Sender<()>>);

impl Rearm {
    /// Re-arms and waits until the new watch is in place (bounded: a
    /// watcher stuck arming on a slow mount must not hold up the reload).
    pub async fn rearm(&self) {
        let (ack, done) = oneshot::channel();
        if self.0.send(ack).await.is_err() {
            return;
        }
        if tokio::time::timeout(Duration::from_secs(10), done)
            .await
            .is_err()
        {
            tracing::warn!("re-arming the config watcher took over 10 s; reloading anyway");
        }
    }
}

/// What the notify callback hands to the task.
type Message = notify::Result<notify::Event>;

/// Device and inode of the directory at the configured path, if any.
type Identity = Option<(u64, u64)>;

fn identity(dir: &Path) -> Identity {
    std::fs::metadata(dir)
        .ok()
        .filter(std::fs::Metadata::is_dir)
        .map(|m| (m.dev(), m.ino()))
}

/// Which kind of watcher to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Native,
    Poll,
}

/// The current watch and what it was armed on.
struct Armed {
    /// Kept alive: dropping it ends the watch.
    _watcher: Option<Box<dyn notify::Watcher + Send>>,
    backend: Backend,
    /// The directory the watch was armed on.
    identity: Identity,
    /// Whether the directory itself (not only its parent) is watched.
    dir_watched: bool,
}

/// Why native watching cannot be used at all, so polling must take over.
fn exhausted(e: &notify::Error) -> bool {
    matches!(e.kind, notify::ErrorKind::MaxFilesWatch)
        || matches!(
            &e.kind,
            notify::ErrorKind::Io(io) if matches!(io.raw_os_error(), Some(libc::EMFILE | libc::ENOSPC))
        )
}

/// Builds a watch on `dir` (and, natively, on its parent for `dir`'s name).
/// Never fails: what cannot be watched now is retried at the next re-arm.
fn arm(
    dir: &Path,
    prefer: Backend,
    interval: Duration,
    tx: &mpsc::UnboundedSender<Message>,
) -> Armed {
    let identity = identity(dir);
    if prefer == Backend::Native {
        match arm_native(dir, tx) {
            Ok((watcher, dir_watched)) => {
                return Armed {
                    _watcher: Some(watcher),
                    backend: Backend::Native,
                    identity,
                    dir_watched,
                };
            }
            Err(e) => tracing::warn!(
                error = %e,
                ?interval,
                "cannot watch the config directory natively; polling it instead"
            ),
        }
    }
    if identity.is_none() {
        // Nothing to poll yet; the periodic re-check arms when it appears.
        return Armed {
            _watcher: None,
            backend: Backend::Poll,
            identity,
            dir_watched: false,
        };
    }
    let tx = tx.clone();
    let config = notify::Config::default().with_poll_interval(interval);
    let watcher = notify::PollWatcher::new(move |m: Message| drop(tx.send(m)), config)
        .and_then(|mut w| w.watch(dir, RecursiveMode::Recursive).map(|()| w));
    let watcher = match watcher {
        Ok(w) => Some(Box::new(w) as Box<dyn notify::Watcher + Send>),
        Err(e) => {
            // Still re-checked every RECHECK by the task.
            tracing::warn!(error = %e, "cannot poll the config directory; relying on the periodic re-check");
            None
        }
    };
    Armed {
        _watcher: watcher,
        backend: Backend::Poll,
        identity,
        dir_watched: true,
    }
}

fn arm_native(
    dir: &Path,
    tx: &mpsc::UnboundedSender<Message>,
) -> notify::Result<(Box<dyn notify::Watcher + Send>, bool)> {
    let tx = tx.clone();
    let mut watcher = notify::recommended_watcher(move |m: Message| drop(tx.send(m)))?;
    if let Some(parent) = dir.parent() {
        match watcher.watch(parent, RecursiveMode::NonRecursive) {
            Ok(()) => {}
            Err(e) if exhausted(&e) => return Err(e),
            // The parent is gone too: the periodic re-check re-arms later.
            Err(e) => tracing::debug!(error = %e, "cannot watch the config directory's parent"),
        }
    }
    let dir_watched = match watcher.watch(dir, RecursiveMode::Recursive) {
        Ok(()) => true,
        Err(e) if exhausted(&e) => return Err(e),
        Err(e) => {
            tracing::warn!(error = %e, dir = %dir.display(), "cannot watch the config directory now; retrying");
            false
        }
    };
    Ok((Box::new(watcher), dir_watched))
}

/// Whether an event can change what a reload would load: it concerns the
/// config dir or something in it (the parent watch also reports siblings).
/// Reads (`Access`) are ignored, or every reload would trigger the next
/// one, and so is `.git` internals' churn (the work tree files change too
/// when it matters).
fn relevant(dir: &Path, event: &notify::Event) -> bool {
    if matches!(event.kind, EventKind::Access(_)) {
        return false;
    }
    event.paths.is_empty()
        || event.paths.iter().any(|p| {
            p.strip_prefix(dir).is_ok_and(|rest| {
                !rest
                    .components()
                    .any(|c| c == Component::Normal(".git".as_ref()))
            })
        })
}

/// Whether an event concerns the directory itself (removed, created,
/// renamed, permissions changed), after which the watch must be re-armed.
fn touches_dir(dir: &Path, event: &notify::Event) -> bool {
    event.need_rescan() || event.paths.is_empty() || event.paths.iter().any(|p| p == dir)
}

/// A started watcher.
#[derive(Debug)]
pub struct Spawned {
    /// The watcher task (ends at shutdown).
    pub task: JoinHandle<()>,
    /// Re-arms the watch on demand.
    pub rearm: Rearm,
}

/// Starts watching `dir` recursively. Every burst of relevant events, once
/// quiet for `debounce`, sends one `()` on `reload`; so does finding a
/// different directory at `dir` than the one watched. `polling` is set to 1
/// while the watch polls. Stops at shutdown. Returns once the watch is
/// armed, so a change made after that is seen.
pub async fn spawn(
    dir: &Path,
    debounce: Duration,
    options: WatchOptions,
    polling: Gauge,
    reload: mpsc::Sender<()>,
    mut shutdown: watch::Receiver<bool>,
) -> Spawned {
    let prefer = match options.mode {
        WatchMode::Auto => Backend::Native,
        WatchMode::Poll => Backend::Poll,
    };
    let interval = options.recheck.max(MIN_RECHECK);
    // Event paths are reported under the path watched; an absolute one
    // makes them comparable whatever the working directory.
    let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
    let (rearm_tx, mut rearm_rx) = mpsc::channel::<oneshot::Sender<()>>(4);
    let mut armed = arm_off_runtime(&dir, prefer, interval, &tx).await;
    polling.set(i64::from(armed.backend == Backend::Poll));
    tracing::info!(dir = %dir.display(), backend = ?armed.backend, ?interval, "watching the config directory");
    let task = tokio::spawn(async move {
        let mut recheck = tokio::time::interval(interval);
        recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let mut rearm = false;
            // Set when a re-check re-arms the same directory: reload only if
            // the watch now works (it may still be unreadable).
            let mut same_dir = false;
            tokio::select! {
                message = rx.recv() => {
                    let Some(message) = message else { return };
                    let backend = armed.backend;
                    let mut events = usize::from(note(&dir, backend, message, &mut rearm));
                    if events == 0 {
                        continue;
                    }
                    // Quiet period: a `git checkout` of hundreds of files is one reload.
                    loop {
                        tokio::select! {
                            m = tokio::time::timeout(debounce, rx.recv()) => match m {
                                Ok(Some(m)) => events += usize::from(note(&dir, backend, m, &mut rearm)),
                                Ok(None) => return,
                                Err(_) => break,
                            },
                            // A manual reload must not wait out a long quiet period.
                            Some(ack) = rearm_rx.recv() => {
                                armed = arm_off_runtime(&dir, prefer, interval, &tx).await;
                                polling.set(i64::from(armed.backend == Backend::Poll));
                                let _ = ack.send(());
                            }
                            _ = shutdown.changed() => return,
                        }
                    }
                    tracing::debug!(events, rearm, "config change detected");
                }
                _ = recheck.tick() => {
                    let now = identity_off_runtime(&dir).await;
                    if now == armed.identity && (armed.dir_watched || now.is_none()) {
                        continue;
                    }
                    tracing::debug!(dir = %dir.display(), "config directory replaced, reappeared or not watched yet; re-arming the watch");
                    rearm = true;
                    same_dir = now == armed.identity;
                }
                Some(ack) = rearm_rx.recv() => {
                    // A manual reload follows at once; no request from here.
                    armed = arm_off_runtime(&dir, prefer, interval, &tx).await;
                    polling.set(i64::from(armed.backend == Backend::Poll));
                    let _ = ack.send(());
                    continue;
                }
                _ = shutdown.changed() => return,
            }
            if rearm {
                // Native watching is tried first at every re-arm, so a
                // fallback to polling ends at the next re-arm that succeeds.
                armed = arm_off_runtime(&dir, prefer, interval, &tx).await;
                polling.set(i64::from(armed.backend == Backend::Poll));
                if same_dir && !armed.dir_watched {
                    continue;
                }
            }
            if reload.send(()).await.is_err() {
                return;
            }
        }
    });
    Spawned {
        task,
        rearm: Rearm(rearm_tx),
    }
}

/// [`arm`] on the blocking pool: adding watches walks the directory tree.
async fn arm_off_runtime(
    dir: &Path,
    prefer: Backend,
    interval: Duration,
    tx: &mpsc::UnboundedSender<Message>,
) -> Armed {
    let (dir, tx) = (dir.to_path_buf(), tx.clone());
    tokio::task::spawn_blocking(move || arm(&dir, prefer, interval, &tx))
        .await
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "arming the config watcher failed; retrying at the next re-check");
            Armed {
                _watcher: None,
                backend: prefer,
                identity: None,
                dir_watched: false,
            }
        })
}

/// [`identity`] on the blocking pool (a `stat` can stall on a slow mount).
async fn identity_off_runtime(dir: &Path) -> Identity {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || identity(&dir))
        .await
        .unwrap_or(None)
}

/// Whether one message from the watcher calls for a reload; sets `rearm`
/// when the directory itself changed or the watcher failed.
fn note(dir: &Path, backend: Backend, message: Message, rearm: &mut bool) -> bool {
    match message {
        Ok(event) if relevant(dir, &event) => {
            *rearm |= touches_dir(dir, &event);
            true
        }
        Ok(_) => false,
        // The poller reports an unreadable or missing directory on every
        // scan; the periodic re-check covers those.
        Err(e) if backend == Backend::Poll => {
            tracing::debug!(error = %e, "config poller error");
            false
        }
        Err(e) => {
            tracing::warn!(error = %e, "config watcher error; re-arming and reloading");
            *rearm = true;
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// Waits (bounded) for one reload request.
    async fn next_reload(rx: &mut mpsc::Receiver<()>, what: &str) {
        let got = tokio::time::timeout(Duration::from_secs(20), rx.recv()).await;
        assert!(
            matches!(got, Ok(Some(()))),
            "no reload request after {what}"
        );
    }

    /// Writes `file` repeatedly until a reload request arrives: the watch
    /// may be re-armed in between, and a write before it is armed is lost.
    async fn write_until_reload(rx: &mut mpsc::Receiver<()>, file: &Path, what: &str) {
        for attempt in 0..40 {
            std::fs::write(file, format!("n: {attempt}\n")).unwrap();
            if let Ok(Some(())) = tokio::time::timeout(Duration::from_millis(500), rx.recv()).await
            {
                return;
            }
        }
        panic!("no reload request after {what}");
    }

    fn drain(rx: &mut mpsc::Receiver<()>) {
        while rx.try_recv().is_ok() {}
    }

    async fn survives_removal_recreation_and_rename_swap(mode: WatchMode) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("conf");
        std::fs::create_dir(&dir).unwrap();
        let (tx, mut rx) = mpsc::channel(16);
        let (stop_tx, stop) = watch::channel(false);
        let polling = Gauge::default();
        let options = WatchOptions {
            mode,
            ..WatchOptions::default()
        };
        let Spawned { task, .. } = spawn(
            &dir,
            Duration::from_millis(50),
            options,
            polling.clone(),
            tx,
            stop,
        )
        .await;
        assert_eq!(polling.get(), i64::from(mode == WatchMode::Poll));

        write_until_reload(&mut rx, &dir.join("a.yaml"), "a first write").await;

        std::fs::remove_dir_all(&dir).unwrap();
        next_reload(&mut rx, "removing the directory").await;
        std::fs::create_dir(&dir).unwrap();
        drain(&mut rx);
        write_until_reload(
            &mut rx,
            &dir.join("b.yaml"),
            "writing into the re-created directory",
        )
        .await;

        let fresh = tmp.path().join("conf.new");
        std::fs::create_dir(&fresh).unwrap();
        std::fs::rename(&dir, tmp.path().join("conf.old")).unwrap();
        std::fs::rename(&fresh, &dir).unwrap();
        drain(&mut rx);
        write_until_reload(
            &mut rx,
            &dir.join("c.yaml"),
            "writing into the swapped-in directory",
        )
        .await;
        // The old directory is no longer watched: what happens there is not
        // a change of the configuration. (Polled only once re-armed; the
        // write above proves the new one is watched.)
        drain(&mut rx);

        stop_tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("watcher stops at shutdown")
            .unwrap();
    }

    #[tokio::test]
    async fn native_watch_survives_removal_recreation_and_rename_swap() {
        survives_removal_recreation_and_rename_swap(WatchMode::Auto).await;
    }

    #[tokio::test]
    async fn polling_fallback_sees_changes_and_survives_removal_recreation_and_rename_swap() {
        survives_removal_recreation_and_rename_swap(WatchMode::Poll).await;
    }

    #[tokio::test]
    async fn a_requested_rearm_watches_a_directory_swapped_above_the_parent() {
        // `current -> rel1` swapped for `current -> rel2`: the watches follow
        // rel1's inodes and no event names the configured path, so (with the
        // periodic re-check out of the way) only a re-arm finds rel2.
        let tmp = tempfile::tempdir().unwrap();
        for rel in ["rel1", "rel2"] {
            std::fs::create_dir_all(tmp.path().join(rel).join("conf")).unwrap();
        }
        let current = tmp.path().join("current");
        std::os::unix::fs::symlink("rel1", &current).unwrap();
        let dir = current.join("conf");
        let (tx, mut rx) = mpsc::channel(16);
        let (stop_tx, stop) = watch::channel(false);
        let options = WatchOptions {
            recheck: Duration::from_secs(3600),
            ..WatchOptions::default()
        };
        let spawned = spawn(
            &dir,
            Duration::from_millis(50),
            options,
            Gauge::default(),
            tx,
            stop,
        )
        .await;
        write_until_reload(&mut rx, &dir.join("a.yaml"), "a first write").await;

        let next = tmp.path().join("current.next");
        std::os::unix::fs::symlink("rel2", &next).unwrap();
        std::fs::rename(&next, &current).unwrap();
        spawned.rearm.rearm().await;
        drain(&mut rx);
        write_until_reload(
            &mut rx,
            &tmp.path().join("rel2/conf/b.yaml"),
            "writing into the directory swapped in above the parent",
        )
        .await;

        stop_tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(10), spawned.task)
            .await
            .expect("watcher stops at shutdown")
            .unwrap();
    }

    #[test]
    fn events_outside_the_config_dir_or_in_git_internals_are_not_relevant() {
        let dir = Path::new("/etc/conf");
        let ev = |p: &str| notify::Event::new(EventKind::Any).add_path(PathBuf::from(p));
        assert!(relevant(dir, &ev("/etc/conf")));
        assert!(relevant(dir, &ev("/etc/conf/a.yaml")));
        assert!(!relevant(dir, &ev("/etc/passwd")));
        assert!(!relevant(dir, &ev("/etc/conf.new")));
        assert!(!relevant(dir, &ev("/etc/conf/.git/index")));
        assert!(touches_dir(dir, &ev("/etc/conf")));
        assert!(!touches_dir(dir, &ev("/etc/conf/a.yaml")));
    }
}
