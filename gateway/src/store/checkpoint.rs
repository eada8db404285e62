//! The SQLite WAL checkpoint, on a thread and a connection of its own.
//!
//! SQLite's automatic checkpoint runs inside the commit that crosses its threshold, so every
//! request waiting on that group commit waits for the copy as well, and so does every request
//! queued behind it. Here the group commit and the receipts' commits count the pages the
//! writer connection wrote to the WAL (the count is the connection's, so it includes what
//! replays and the audit log wrote on it in between) and, once [`CHECKPOINT_PAGES`] are
//! pending, wake a thread that runs `PASSIVE` checkpoints on its own connection while the
//! writer goes on committing (WAL mode allows both at once). A pass copies the frames that
//! were in the WAL when it began; if the writer added more meanwhile, the thread runs another
//! (a few at most).
//!
//! The writer keeps SQLite's automatic checkpoint at a higher threshold
//! (`WRITER_BACKSTOP_PAGES` in `mod.rs`). SQLite starts the WAL over from its beginning only
//! when a write transaction begins with every frame copied and no reader still on the WAL;
//! under load that is mostly right after the writer's own checkpoint, so the WAL cycles
//! through about that many frames, and that checkpoint, inside a commit, finds little left
//! to copy (measured: 896 of 906 passes of the thread copied the whole WAL).
//!
//! Durability is unchanged: SQLite syncs the WAL before a checkpoint copies from it, and
//! syncs the database file before the WAL may start over.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rusqlite::{Connection, OpenFlags};

use super::StoreError;

/// WAL pages written since the last checkpoint that wake the checkpointer: the writer's own
/// threshold from when the checkpoint ran inside the commit (there, at 128 connections, p99
/// 15-19 ms against 19-21 ms at 1,000). Other values are not measured for this thread.
pub(super) const CHECKPOINT_PAGES: u64 = 400;

/// Passes per wake-up: the first copies most of the WAL, the next ones what the writer
/// added meanwhile.
const PASSES: usize = 4;

/// The checkpointer's handle: the writer reports pages through it. The thread ends on
/// [`Checkpointer::stop`] or when the last handle (the last clone of the store) is dropped.
#[derive(Clone)]
pub(super) struct Checkpointer {
    shared: Arc<Shared>,
    wake: SyncSender<()>,
    thread: Arc<Mutex<Option<JoinHandle<()>>>>,
}

#[derive(Default)]
struct Shared {
    /// Pages written to the WAL and not yet checkpointed (as far as the writer reported).
    pending: AtomicU64,
    /// Checkpoint passes that found frames copied into the database file.
    checkpoints: AtomicU64,
    stop: AtomicBool,
}

impl Checkpointer {
    /// Opens a second connection to the (already migrated, WAL-mode) database `file` and
    /// starts the thread.
    pub(super) fn spawn(file: &Path) -> Result<Self, StoreError> {
        let db =
            Connection::open_with_flags(file, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
        db.pragma_update(None, "synchronous", "FULL")?;
        let shared = Arc::new(Shared::default());
        let (wake, woken) = sync_channel::<()>(1);
        let theirs = shared.clone();
        let thread = std::thread::Builder::new()
            .name("hw-checkpoint".into())
            .spawn(move || {
                while woken.recv().is_ok() && !theirs.stop.load(Ordering::Relaxed) {
                    theirs.checkpoint(&db);
                }
            })
            .map_err(|e| StoreError::Thread("checkpoint", e))?;
        Ok(Self { shared, wake, thread: Arc::new(Mutex::new(Some(thread))) })
    }

    /// Counts the pages the writer connection `db` wrote (to the WAL) since it was last
    /// asked, and wakes the thread once enough are pending.
    ///
    /// # Safety
    /// `db` is an open connection that no other thread uses during the call.
    pub(super) unsafe fn count_written(&self, db: *mut rusqlite::ffi::sqlite3) {
        let (mut current, mut highest) = (0, 0);
        // SAFETY: the caller's promise; the out-pointers are valid. The last argument resets
        // the count, so each page is counted once.
        let rc = unsafe {
            rusqlite::ffi::sqlite3_db_status(
                db,
                rusqlite::ffi::SQLITE_DBSTATUS_CACHE_WRITE,
                &mut current,
                &mut highest,
                1,
            )
        };
        if rc == rusqlite::ffi::SQLITE_OK {
            self.written(current.max(0) as u64);
        }
    }

    fn written(&self, pages: u64) {
        if self.shared.pending.fetch_add(pages, Ordering::Relaxed) + pages >= CHECKPOINT_PAGES {
            // Full means a wake-up is already queued.
            let _ = self.wake.try_send(());
        }
    }

    /// Ends the thread, closing its connection, once it has finished what it is doing.
    pub(super) async fn stop(&self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        let _ = self.wake.try_send(());
        let thread = self.thread.lock().expect("checkpointer lock").take();
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }

    /// Checkpoint passes of this thread that found frames copied into the database file.
    pub(super) fn checkpoints(&self) -> u64 {
        self.shared.checkpoints.load(Ordering::Relaxed)
    }
}

impl Shared {
    /// Checkpoints until the WAL is copied whole or [`PASSES`] passes ran. What was pending
    /// stays pending unless a pass succeeded, so a failed one is tried again on the next
    /// wake-up; the writer's backstop covers a thread that keeps failing.
    fn checkpoint(&self, db: &Connection) {
        let pending = self.pending.load(Ordering::Relaxed);
        for _ in 0..PASSES {
            // (busy, frames in the WAL, frames of it copied by now); busy when the writer's backstop
            // checkpoint runs at the same moment.
            let pass = db.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?, row.get::<_, i64>(2)?))
            });
            match pass {
                Ok((0, frames, copied)) => {
                    if copied > 0 {
                        self.checkpoints.fetch_add(1, Ordering::Relaxed);
                        ::metrics::counter!("hookwarden_sqlite_checkpoints_total").increment(1);
                    }
                    if copied >= frames {
                        break;
                    }
                }
                Ok(_) => {
                    tracing::debug!("WAL checkpoint busy: the writer's own is running");
                    return;
                }
                Err(err) => {
                    tracing::warn!(error = %err, "WAL checkpoint failed; tried again on the next wake-up");
                    return;
                }
            }
        }
        self.pending.fetch_sub(pending, Ordering::Relaxed);
    }
}
