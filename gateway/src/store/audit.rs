//! Appending to and reading the audit log. An audited change commits with its entry, in one
//! transaction ([`append_audit_in!`]); appends are serialised (an advisory lock on PostgreSQL,
//! the one writer connection on SQLite) so the hash chain has no forks.

use sqlx::Row;

use super::{Store, StoreError, with_pool, with_writer};
use crate::audit::AuditEntry;

/// An entry to append; the store gives it its sequence number and hashes.
#[derive(Debug, Clone)]
pub struct NewAuditEntry {
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub subject: Option<String>,
    pub details: serde_json::Value,
}

pub(super) const LAST: &str = "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1";
pub(super) const INSERT: &str = "INSERT INTO audit_log (seq, at, actor, action, subject, details, prev_hash, hash) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

/// Appends `$entry` (a `&NewAuditEntry`) inside `$tx`, an open transaction on either backend,
/// and evaluates to the [`AuditEntry`] written. An audited change runs its statements and
/// this in one transaction, so the change and its entry commit together or not at all. The
/// chain has no forks: on PostgreSQL appends are serialised by an advisory lock held to the
/// end of the transaction (taken here, after the change's own statements, so it is held
/// only for the append and the commit); on SQLite by the one writer connection.
macro_rules! append_audit_in {
    ($store:expr, $tx:expr, $entry:expr) => {{
        let entry: &$crate::store::NewAuditEntry = $entry;
        if $store.backend() == $crate::store::Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock(4242002)").execute(&mut *$tx).await?;
        }
        let details = serde_json::to_string(&entry.details).expect("serialises");
        let last: Option<(i64, String)> = sqlx::query_as(super::audit::LAST).fetch_optional(&mut *$tx).await?;
        let (prev_seq, prev_hash) = last.unwrap_or((0, $crate::audit::GENESIS.to_string()));
        let seq = prev_seq + 1;
        let hash = $crate::audit::entry_hash(
            &prev_hash,
            seq,
            entry.at,
            &entry.actor,
            &entry.action,
            entry.subject.as_deref(),
            &details,
        );
        sqlx::query(super::audit::INSERT)
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
        $crate::audit::AuditEntry {
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
pub(crate) use append_audit_in;

impl Store {
    /// Appends an entry that goes with no other change (a dry run). An audited change
    /// appends its entry in its own transaction instead ([`append_audit_in!`]).
    pub async fn append_audit(&self, entry: NewAuditEntry) -> Result<AuditEntry, StoreError> {
        with_writer!(self, pool => {
            let mut tx = pool.begin().await?;
            let written = append_audit_in!(self, tx, &entry);
            tx.commit().await?;
            Ok(written)
        })
    }

    /// Entries with `seq > after`, oldest first, optionally within `[since, until)` and about
    /// one `subject` (an event, a replay, a token).
    pub async fn list_audit(
        &self,
        after: i64,
        since: Option<i64>,
        until: Option<i64>,
        subject: Option<&str>,
        limit: i64,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        const ALL: &str = "SELECT seq, at, actor, action, subject, details, prev_hash, hash FROM audit_log \
             WHERE seq > $1 AND at >= $2 AND at < $3 ORDER BY seq LIMIT $4";
        const ABOUT: &str = "SELECT seq, at, actor, action, subject, details, prev_hash, hash FROM audit_log \
             WHERE seq > $1 AND at >= $2 AND at < $3 AND subject = $5 ORDER BY seq LIMIT $4";
        with_pool!(self, pool => {
            let rows = sqlx::query(if subject.is_some() { ABOUT } else { ALL })
                .bind(after)
                .bind(since.unwrap_or(i64::MIN))
                .bind(until.unwrap_or(i64::MAX))
                .bind(limit);
            let rows = match subject {
                Some(subject) => rows.bind(subject),
                None => rows,
            };
            let rows = rows.fetch_all(pool).await?;
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
