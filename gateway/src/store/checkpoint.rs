//! The SQLite WAL checkpoint, on a thread and a connection of its own.
//!
//! SQLite's automatic checkpoint runs inside the commit that crosses its threshold, so every
//! request waiting on that group commit waits for the copy as well, and so does every request
//! queued behind it. Here a WAL hook on the writer connection ([`WalHook`], called by SQLite
//! after every commit on it, whoever made it: the ingest group commit, receipts, replays, the
//! audit log) reads and resets the connection's count of pages written (so, near enough, the
//! pages that commit put in the WAL) and, once [`CHECKPOINT_PAGES`] are pending,
//! wakes a thread that runs `PASSIVE` checkpoints on its own connection while the writer goes
//! on committing (WAL mode allows both at once). A pass copies the frames that were in the WAL
//! when it began; if the writer added more meanwhile, the thread runs another (a few at most).
//!
//! A WAL hook replaces SQLite's automatic checkpoint, so the hook keeps a backstop of its own:
//! past [`WRITER_BACKSTOP_FRAMES`] frames in the WAL it checkpoints inside the commit, as
//! SQLite's would. SQLite starts the WAL over from its beginning only when a write transaction
//! begins with every frame copied and no reader still on the WAL; under load that is mostly
//! right after the backstop, so the WAL cycles through about that many frames, and the
//! backstop, finding the thread's work done, has little left to copy (measured: 896 of 906
//! passes of the thread copied the whole WAL).
//!
//! Durability is unchanged: SQLite syncs the WAL before a checkpoint copies from it, and
//! syncs the database file before the WAL may start over.

use std::ffi::{c_char, c_int, c_void};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;

use rusqlite::{Connection, OpenFlags, ffi};
use sqlx::sqlite::SqliteConnection;

use super::StoreError;

/// WAL pages written since the last checkpoint that wake the checkpointer. Measured for this
/// thread (BENCHMARKS.md): 1,000 or 2,000 pages take less of its CPU, but each checkpoint then
/// syncs more of the database file, and the writer's fsyncs queue behind it (p99 at 128
/// connections 17.5-19.8 ms at 2,000 against 11.5-13.3 ms at 400).
const CHECKPOINT_PAGES: u64 = 400;

/// Frames in the WAL after a commit at which the writer checkpoints itself, inside that
/// commit: the backstop for a checkpointer that falls behind, and what lets the WAL start over.
const WRITER_BACKSTOP_FRAMES: c_int = 2000;

/// Passes per wake-up: the first copies most of the WAL, the next ones what the writer
/// added meanwhile.
const PASSES: usize = 4;

/// The name the hook's state is kept under on the writer connection, which frees it on close.
const HOOK_DATA: &std::ffi::CStr = c"hookwarden-wal-hook";

/// The checkpointer's handle. The thread ends on [`Checkpointer::stop`] or when the last
/// handle (the last clone of the store) is dropped.
#[derive(Clone)]
pub(super) struct Checkpointer {
    waker: Arc<Waker>,
    thread: Arc<Mutex<Thread>>,
}

/// What wakes the thread; the writer's hook holds it weakly.
struct Waker {
    shared: Arc<Shared>,
    wake: SyncSender<Wake>,
}

/// What the thread is told: pages are pending, or it is to end. A stop waits for room in the
/// channel, so it is never lost to a wake-up already queued.
enum Wake {
    Pages,
    Stop,
}

enum Thread {
    NotStarted(Receiver<Wake>),
    Running(JoinHandle<()>),
    Ended,
}

#[derive(Default)]
struct Shared {
    /// Pages written to the WAL and not yet checkpointed (as far as the hook counted).
    pending: AtomicU64,
    /// Checkpoint passes that found frames copied into the database file.
    checkpoints: AtomicU64,
}

impl Checkpointer {
    /// The handle, before the database exists: the writer's hook ([`Self::hook`]) is installed
    /// as its connection opens, the thread started once it is migrated ([`Self::start`]).
    pub(super) fn new() -> Self {
        let (wake, woken) = sync_channel::<Wake>(1);
        Self {
            waker: Arc::new(Waker { shared: Arc::default(), wake }),
            thread: Arc::new(Mutex::new(Thread::NotStarted(woken))),
        }
    }

    /// Opens a second connection to the (already migrated, WAL-mode) database `file` and
    /// starts the thread.
    pub(super) fn start(&self, file: &Path) -> Result<(), StoreError> {
        let db =
            Connection::open_with_flags(file, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
        db.pragma_update(None, "synchronous", "FULL")?;
        let mut thread = self.thread.lock().expect("checkpointer lock");
        let Thread::NotStarted(woken) = std::mem::replace(&mut *thread, Thread::Ended) else { return Ok(()) };
        let shared = self.waker.shared.clone();
        let running = std::thread::Builder::new()
            .name("hw-checkpoint".into())
            .spawn(move || {
                while let Ok(Wake::Pages) = woken.recv() {
                    shared.checkpoint(&db);
                }
            })
            .map_err(|e| StoreError::Thread("checkpoint", e))?;
        *thread = Thread::Running(running);
        Ok(())
    }

    /// The hook for the writer connection, to install on each one as it opens.
    pub(super) fn hook(&self) -> WalHook {
        WalHook { waker: Arc::downgrade(&self.waker) }
    }

    /// Ends the thread, closing its connection, once it has finished what it is doing.
    pub(super) async fn stop(&self) {
        let thread = std::mem::replace(&mut *self.thread.lock().expect("checkpointer lock"), Thread::Ended);
        if let Thread::Running(thread) = thread {
            let wake = self.waker.wake.clone();
            let _ = tokio::task::spawn_blocking(move || {
                // An error means the thread is gone already.
                let _ = wake.send(Wake::Stop);
                thread.join()
            })
            .await;
        }
    }

    /// Checkpoint passes of this thread that found frames copied into the database file.
    pub(super) fn checkpoints(&self) -> u64 {
        self.waker.shared.checkpoints.load(Ordering::Relaxed)
    }
}

impl Waker {
    fn written(&self, pages: u64) {
        if self.shared.pending.fetch_add(pages, Ordering::Relaxed) + pages >= CHECKPOINT_PAGES {
            // Full means a wake-up is already queued.
            let _ = self.wake.try_send(Wake::Pages);
        }
    }
}

/// The writer connection's WAL hook: counts each commit's pages for the checkpointer and
/// keeps the backstop. It holds the checkpointer weakly, so a connection that outlives the
/// store keeps nothing else alive.
#[derive(Clone)]
pub(super) struct WalHook {
    waker: Weak<Waker>,
}

impl WalHook {
    /// Installs the hook on `conn`. Its state is attached to the connection, which frees it
    /// when it closes.
    pub(super) async fn install(&self, conn: &mut SqliteConnection) -> Result<(), sqlx::Error> {
        let mut handle = conn.lock_handle().await?;
        let db = handle.as_raw_handle().as_ptr();
        let state = Box::into_raw(Box::new(Installed { hook: self.clone(), db })).cast::<c_void>();
        // SAFETY: sqlx makes no call on the handle while it is locked. `state` is a live
        // `Installed`; SQLite calls `release` on it once: when the connection closes, when a
        // second install replaces it, or at once if it cannot keep it (then the hook is not
        // installed).
        let kept = unsafe { ffi::sqlite3_set_clientdata(db, HOOK_DATA.as_ptr(), state, Some(release)) };
        if kept != ffi::SQLITE_OK {
            return Err(sqlx::Error::Configuration("cannot keep the WAL hook's state on the writer connection".into()));
        }
        // SAFETY: as above; `release` removes the hook before it frees `state`.
        unsafe { ffi::sqlite3_wal_hook(db, Some(on_commit), state) };
        Ok(())
    }
}

/// What the hook's argument points at.
struct Installed {
    hook: WalHook,
    db: *mut ffi::sqlite3,
}

/// Removes the hook and frees its state (SQLite's destructor for the connection's client data).
unsafe extern "C" fn release(state: *mut c_void) {
    // SAFETY: `state` came from `Box::into_raw` in `install`; SQLite calls this once.
    let installed = unsafe { Box::from_raw(state.cast::<Installed>()) };
    // SAFETY: SQLite runs client-data destructors while the connection is still open (on
    // close, before it is torn down). Unhooked first, a commit that could still come (a
    // statement finishing after `sqlite3_close_v2`) finds no hook rather than freed state.
    unsafe { ffi::sqlite3_wal_hook(installed.db, None, std::ptr::null_mut()) };
}

/// Called by SQLite after every commit on the writer, with the frames now in the WAL.
unsafe extern "C" fn on_commit(state: *mut c_void, db: *mut ffi::sqlite3, name: *const c_char, frames: c_int) -> c_int {
    // SAFETY: `state` is the `Installed` registered with this hook; `release` unhooks it
    // before freeing it.
    let installed = unsafe { &*state.cast::<Installed>() };
    if frames >= WRITER_BACKSTOP_FRAMES {
        // SAFETY: SQLite allows a WAL hook to checkpoint the connection that called it (its
        // own automatic checkpoint is such a hook). Busy (a checkpoint of the thread's under
        // way) is left for the next commit, as SQLite's hook leaves it.
        unsafe { ffi::sqlite3_wal_checkpoint(db, name) };
    }
    if let Some(waker) = installed.hook.waker.upgrade() {
        // SAFETY: `db` is the connection SQLite called the hook for, on its own thread.
        waker.written(unsafe { pages_written(db) });
    }
    ffi::SQLITE_OK
}

/// The pages `db` wrote since the last call: the count is read and reset.
///
/// # Safety
/// `db` is an open connection that no other thread uses during the call.
unsafe fn pages_written(db: *mut ffi::sqlite3) -> u64 {
    let (mut current, mut highest) = (0, 0);
    // SAFETY: the caller's promise; the out-pointers are valid.
    let rc = unsafe { ffi::sqlite3_db_status(db, ffi::SQLITE_DBSTATUS_CACHE_WRITE, &mut current, &mut highest, 1) };
    if rc == ffi::SQLITE_OK { current.max(0) as u64 } else { 0 }
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

#[cfg(test)]
mod tests {
    use sqlx::{Connection as _, Executor as _};

    use super::*;

    /// A WAL-mode database `file` with one table `t`, its connection hooked to a new
    /// checkpointer (not started).
    async fn hooked(file: &Path) -> (SqliteConnection, Checkpointer) {
        let mut conn = SqliteConnection::connect(&format!("sqlite://{}?mode=rwc", file.display())).await.unwrap();
        conn.execute("PRAGMA journal_mode = WAL").await.unwrap();
        conn.execute("CREATE TABLE t (b BLOB NOT NULL)").await.unwrap();
        let checkpointer = Checkpointer::new();
        checkpointer.hook().install(&mut conn).await.unwrap();
        (conn, checkpointer)
    }

    /// Commits `commits` transactions of `rows` rows of 1 KiB (three to a page).
    async fn write(conn: &mut SqliteConnection, commits: usize, rows: usize) {
        let insert = format!(
            "INSERT INTO t (b) WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows}) \
             SELECT zeroblob(1024) FROM n"
        );
        for _ in 0..commits {
            sqlx::query(sqlx::AssertSqlSafe(insert.as_str())).execute(&mut *conn).await.unwrap();
        }
    }

    /// With the thread never started, the hook alone counts the pages and keeps the WAL
    /// bounded by its backstop (without it, nothing would checkpoint this connection).
    #[tokio::test]
    async fn the_hook_counts_pages_and_keeps_the_backstop() {
        let dir = tempfile::tempdir().unwrap();
        let (mut conn, checkpointer) = hooked(&dir.path().join("hook.db")).await;
        write(&mut conn, 120, 100).await;
        let pending = checkpointer.waker.shared.pending.load(Ordering::Relaxed);
        assert!(pending > 4000, "the hook counted {pending} pages of ~4,400");
        let wal = std::fs::metadata(dir.path().join("hook.db-wal")).unwrap().len();
        // The backstop's 2,000 frames and one commit's worth past them, of 4 KiB pages.
        assert!(wal <= 2_100 * (4096 + 24), "the WAL grew to {wal} bytes");
        conn.close().await.unwrap();
    }

    /// A stop with a wake-up already queued still reaches the thread, which ends after the
    /// passes it was asked for.
    #[tokio::test]
    async fn a_stop_behind_a_queued_wake_up_ends_the_thread() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("stop.db");
        let (mut conn, checkpointer) = hooked(&file).await;
        checkpointer.start(&file).unwrap();
        write(&mut conn, 20, 150).await;
        let _ = checkpointer.waker.wake.try_send(Wake::Pages);
        tokio::time::timeout(std::time::Duration::from_secs(10), checkpointer.stop()).await.expect("the thread ended");
        assert!(checkpointer.checkpoints() > 0, "the thread ran before it stopped");
        conn.close().await.unwrap();
    }
}
