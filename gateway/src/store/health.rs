//! Whether the store takes writes, for `/readyz`: a read that answers is not enough (SQLite
//! reads a full disk fine, and a restarted PostgreSQL answers before the pool reconnected).
//!
//! The group commit notes whether its last transaction failed and why. While it did,
//! [`Store::readiness`] writes one row of its own (`write_probe`) to find out whether writes
//! go through again: without it a gateway that a load balancer took out of rotation (no more
//! traffic, no more commits) would stay "not ready" for good.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::path::Path;

use super::{Pool, Store, StoreError, with_pool, with_writer};

/// The last write's failure, cleared by the next write that commits.
#[derive(Clone, Default)]
pub(crate) struct WriteHealth(Arc<Mutex<Option<String>>>);

impl WriteHealth {
    pub(crate) fn note<T>(&self, written: &Result<T, StoreError>) {
        let mut last = self.0.lock().expect("write health lock");
        match written {
            Ok(_) => *last = None,
            Err(err) => *last = Some(err.to_string()),
        }
    }

    fn failing(&self) -> Option<String> {
        self.0.lock().expect("write health lock").clone()
    }
}

/// How long `/readyz` waits for the database before it says it did not answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Below this much free space beside a SQLite database the gateway is not ready: a write
/// that fails for room rolls back, and SQLite can then reuse what the failed one had taken,
/// so a small probe write may succeed where events fail.
const MIN_FREE_BYTES: u64 = 1024 * 1024;

/// Why the store is not ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotReady {
    /// `database_unreachable`, `disk_full` or `writes_failing`.
    pub code: &'static str,
    pub reason: String,
}

impl Store {
    /// `Ok` when the store answers a read and takes writes; otherwise why not. `now` stamps
    /// the probe row.
    pub async fn readiness(&self, now: i64) -> Result<(), NotReady> {
        let unreachable = |reason: String| NotReady { code: "database_unreachable", reason };
        match tokio::time::timeout(PROBE_TIMEOUT, self.ping()).await {
            Err(_) => return Err(unreachable(format!("the database did not answer within {PROBE_TIMEOUT:?}"))),
            Ok(Err(err)) => return Err(unreachable(err.to_string())),
            Ok(Ok(())) => {}
        }
        if let Some(free) = self.free_disk_bytes()
            && free < MIN_FREE_BYTES
        {
            return Err(NotReady {
                code: "disk_full",
                reason: format!("the database's disk is full: {free} bytes free, under {MIN_FREE_BYTES}"),
            });
        }
        if self.health.failing().is_none() {
            return Ok(());
        }
        let probed = match tokio::time::timeout(PROBE_TIMEOUT, self.probe_write(now)).await {
            Err(_) => Err(StoreError::Batch(format!("a write did not commit within {PROBE_TIMEOUT:?}"))),
            Ok(result) => result,
        };
        self.health.note(&probed);
        match probed {
            Ok(()) => Ok(()),
            Err(err) => {
                let reason = format!("writes fail: {err}");
                let code = if err.is_disk_full() { "disk_full" } else { "writes_failing" };
                Err(NotReady { code, reason })
            }
        }
    }

    /// A cheap round trip.
    pub async fn ping(&self) -> Result<(), StoreError> {
        with_pool!(self, pool => sqlx::query("SELECT 1").execute(pool).await.map(|_| ()))?;
        Ok(())
    }

    /// The space left on a SQLite database's filesystem (`None` on PostgreSQL, or when the
    /// system does not say).
    fn free_disk_bytes(&self) -> Option<u64> {
        let Pool::Sqlite { file, .. } = &self.pool else {
            return None;
        };
        free_bytes(file.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new(".")))
    }

    /// Writes (and commits) the probe row.
    async fn probe_write(&self, now: i64) -> Result<(), StoreError> {
        with_writer!(self, pool => sqlx::query(
            "INSERT INTO write_probe (id, at) VALUES (1, $1) ON CONFLICT (id) DO UPDATE SET at = excluded.at",
        )
        .bind(now)
        .execute(pool)
        .await
        .map(|_| ()))?;
        Ok(())
    }
}

/// Bytes an unprivileged writer may still use on the filesystem holding `dir`.
#[cfg(unix)]
fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a NUL-terminated string and `stat` is written by statvfs on success.
    let done = unsafe { libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) };
    if done != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled `stat`.
    let stat = unsafe { stat.assume_init() };
    // The fields' types differ by platform (u32 on some, u64 on Linux).
    #[allow(clippy::unnecessary_cast)]
    Some((stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64))
}

#[cfg(not(unix))]
fn free_bytes(_dir: &Path) -> Option<u64> {
    None
}
