//! WAL checkpoints off the commit path.
//!
//! SQLite's automatic checkpoint runs inside the commit that crosses its
//! threshold, so every few commits one request waited for the copy of the
//! whole WAL into the database file. Here the writer turns that off and a
//! thread with its own connection runs `PASSIVE` checkpoints whenever the
//! writer has committed, concurrently with the next commits. Durability does
//! not depend on it: a commit is durable in the WAL (`synchronous = FULL`)
//! before the writer answers.
//!
//! Under continuous load a passive checkpoint may never catch the last
//! frames, so the WAL would never restart from its beginning and would grow.
//! The writer bounds it: once the file passes [`WAL_LIMIT`] it runs one
//! `TRUNCATE` checkpoint itself, which only has the frames the background
//! thread has not yet copied left to do.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

use crate::store::StoreError;

/// The WAL size at which the writer checkpoints (and truncates) itself.
pub const WAL_LIMIT: u64 = 64 << 20;

/// How long the thread sleeps when nothing was committed.
const IDLE: Duration = Duration::from_secs(1);

/// The least time between two background checkpoints, so that one copies
/// the pages of many commits (each page once) and costs one fsync.
const GAP: Duration = Duration::from_millis(100);

/// The background checkpoint thread of one database.
#[derive(Debug)]
pub struct Checkpointer {
    wake: SyncSender<()>,
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<()>>>,
    wal: PathBuf,
}

impl Checkpointer {
    /// Starts the thread on its own connection to `db`.
    pub fn start(db: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(db)
            .map_err(|e| StoreError::Backend(format!("opening {}: {e}", db.display())))?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(|e| super::backend_error(&e))?;
        let (wake, rx) = std::sync::mpsc::sync_channel(1);
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("store-checkpoint".into())
            .spawn(move || run(&conn, &rx, &flag))
            .map_err(|e| StoreError::Backend(format!("starting the checkpoint thread: {e}")))?;
        let mut wal = db.as_os_str().to_owned();
        wal.push("-wal");
        Ok(Self {
            wake,
            stop,
            thread: Mutex::new(Some(thread)),
            wal: PathBuf::from(wal),
        })
    }

    /// Called by the writer after each commit: wakes the thread, and
    /// checkpoints on `writer` itself when the WAL has grown past the limit.
    pub fn committed(&self, writer: &Connection) {
        match self.wake.try_send(()) {
            Ok(()) | Err(TrySendError::Full(())) | Err(TrySendError::Disconnected(())) => {}
        }
        let size = std::fs::metadata(&self.wal).map_or(0, |m| m.len());
        if size > WAL_LIMIT
            && let Err(e) = writer.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        {
            tracing::warn!(error = %e, wal_bytes = size, "checkpointing the oversized WAL failed; retrying after the next commit");
        }
    }

    /// Stops the thread; the writer's final checkpoint follows.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.wake.try_send(());
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(conn: &Connection, wake: &Receiver<()>, stop: &AtomicBool) {
    loop {
        match wake.recv_timeout(IDLE) {
            Ok(()) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        if stop.load(Ordering::SeqCst) {
            return;
        }
        // (busy, frames in the WAL, frames copied); a busy result only
        // means a reader or the writer held it, and the next wake retries.
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::debug!(error = %e, "background checkpoint did not run");
        }
        std::thread::sleep(GAP);
    }
}
