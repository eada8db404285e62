//! Appending to and reading the audit log. Appends are serialised (an advisory lock on
//! PostgreSQL, the single writer on SQLite) so the hash chain has no forks. An audited change
//! appends its entry in its own transaction ([`append_sqlite`], [`append_postgres`]), so the
//! change never commits without its entry.

use sqlx::Row;

use super::{Store, StoreError, with_pool};
use crate::audit::{AuditEntry, GENESIS, entry_hash};

/// An entry to append; the store gives it its sequence number and hashes.
#[derive(Debug, Clone)]
pub struct NewAuditEntry {
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub subject: Option<String>,
    pub details: serde_json::Value,
}

const LAST: &str = "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1";
const INSERT: &str = "INSERT INTO audit_log (seq, at, actor, action, subject, details, prev_hash, hash) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

/// Appends `entry` inside the caller's transaction `$tx` (a connection of either backend),
/// after the hash chain's last entry; evaluates to the entry as stored. On PostgreSQL the
/// caller has taken [`CHAIN_LOCK`] in the same transaction.
macro_rules! append_entry {
    ($tx:expr, $entry:expr) => {{
        let entry: &NewAuditEntry = $entry;
        let details = serde_json::to_string(&entry.details).expect("serialises");
        let last: Option<(i64, String)> = sqlx::query_as(LAST).fetch_optional(&mut *$tx).await?;
        let (prev_seq, prev_hash) = last.unwrap_or((0, GENESIS.to_string()));
        let seq = prev_seq + 1;
        let hash =
            entry_hash(&prev_hash, seq, entry.at, &entry.actor, &entry.action, entry.subject.as_deref(), &details);
        sqlx::query(INSERT)
            .bind(seq)
            .bind(entry.at)
            .bind(&entry.actor)
            .bind(&entry.action)
            .bind(entry.subject.as_deref())
            .bind(&details)
            .bind(&prev_hash)
            .bind(&hash)
            .execute(&mut *$tx)
            .await?;
        AuditEntry {
            seq,
            at: entry.at,
            actor: entry.actor.clone(),
            action: entry.action.clone(),
            subject: entry.subject.clone(),
            details: entry.details.clone(),
            prev_hash,
            hash,
        }
    }};
}

/// Serialises appends on PostgreSQL (`pg_advisory_xact_lock`), so the chain has no forks.
const CHAIN_LOCK: &str = "SELECT pg_advisory_xact_lock(4242002)";

/// Appends `entry` in the SQLite transaction `tx` (the single writer serialises appends).
pub(super) async fn append_sqlite(
    tx: &mut sqlx::SqliteConnection,
    entry: &NewAuditEntry,
) -> Result<AuditEntry, StoreError> {
    Ok(append_entry!(tx, entry))
}

/// Appends `entry` in the PostgreSQL transaction `tx`, taking the chain's lock first.
pub(super) async fn append_postgres(
    tx: &mut sqlx::PgConnection,
    entry: &NewAuditEntry,
) -> Result<AuditEntry, StoreError> {
    sqlx::query(CHAIN_LOCK).execute(&mut *tx).await?;
    Ok(append_entry!(tx, entry))
}

impl Store {
    pub async fn append_audit(&self, entry: NewAuditEntry) -> Result<AuditEntry, StoreError> {
        match &self.pool {
            super::Pool::Sqlite { write: pool, .. } => {
                let mut tx = pool.begin().await?;
                let appended = append_sqlite(&mut tx, &entry).await?;
                tx.commit().await?;
                Ok(appended)
            }
            super::Pool::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                let appended = append_postgres(&mut tx, &entry).await?;
                tx.commit().await?;
                Ok(appended)
            }
        }
    }

    /// Entries with `seq > after`, oldest first, optionally within `[since, until)`.
    pub async fn list_audit(
        &self,
        after: i64,
        since: Option<i64>,
        until: Option<i64>,
        limit: i64,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        with_pool!(self, pool => {
            let rows = sqlx::query(
                "SELECT seq, at, actor, action, subject, details, prev_hash, hash FROM audit_log \
                 WHERE seq > $1 AND at >= $2 AND at < $3 ORDER BY seq LIMIT $4",
            )
            .bind(after)
            .bind(since.unwrap_or(i64::MIN))
            .bind(until.unwrap_or(i64::MAX))
            .bind(limit)
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|row| {
                    let details: String = row.try_get("details")?;
                    Ok(AuditEntry {
                        seq: row.try_get("seq")?,
                        at: row.try_get("at")?,
                        actor: row.try_get("actor")?,
                        action: row.try_get("action")?,
                        subject: row.try_get("subject")?,
                        details: serde_json::from_str(&details).map_err(|e| StoreError::Corrupt(e.to_string()))?,
                        prev_hash: row.try_get("prev_hash")?,
                        hash: row.try_get("hash")?,
                    })
                })
                .collect()
        })
    }
}
