//! Operator console sessions, kept server-side: a row per signed-in browser, found by the
//! sha256 of the id in its cookie (the database never holds a usable session id or token).
//! A session ends when signed out, or when idle longer than the console's `session_idle`.

use super::{Store, StoreError, with_pool, with_writer};

/// A signed-in console session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleSession {
    pub id_hash: String,
    /// The sha256 of the token signed in with: who the session acts as, re-checked each time.
    pub token_hash: String,
    /// What every state-changing form of this session must carry.
    pub csrf: String,
    pub created_at: i64,
    pub last_seen_at: i64,
}

const INSERT: &str = "INSERT INTO console_sessions (id_hash, token_hash, csrf, created_at, last_seen_at) \
     VALUES ($1, $2, $3, $4, $5)";
const FIND: &str = "SELECT id_hash, token_hash, csrf, created_at, last_seen_at FROM console_sessions \
     WHERE id_hash = $1 AND last_seen_at >= $2";
const TOUCH: &str = "UPDATE console_sessions SET last_seen_at = $2 WHERE id_hash = $1 AND last_seen_at < $2";
const DELETE: &str = "DELETE FROM console_sessions WHERE id_hash = $1";
const EXPIRE: &str = "DELETE FROM console_sessions WHERE last_seen_at < $1";

impl Store {
    /// Starts a session; sessions idle since before `idle_before` are dropped on the way.
    pub async fn create_session(&self, session: &ConsoleSession, idle_before: i64) -> Result<(), StoreError> {
        with_writer!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query(EXPIRE).bind(idle_before).execute(&mut *tx).await?;
            sqlx::query(INSERT)
                .bind(&session.id_hash)
                .bind(&session.token_hash)
                .bind(&session.csrf)
                .bind(session.created_at)
                .bind(session.last_seen_at)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// The session with this id hash, unless idle since before `idle_before`.
    pub async fn find_session(&self, id_hash: &str, idle_before: i64) -> Result<Option<ConsoleSession>, StoreError> {
        let row: Option<(String, String, String, i64, i64)> = with_pool!(self, pool => {
            sqlx::query_as(FIND).bind(id_hash).bind(idle_before).fetch_optional(pool).await?
        });
        Ok(row.map(|(id_hash, token_hash, csrf, created_at, last_seen_at)| ConsoleSession {
            id_hash,
            token_hash,
            csrf,
            created_at,
            last_seen_at,
        }))
    }

    /// Marks the session used at `at` (what its idle time counts from).
    pub async fn touch_session(&self, id_hash: &str, at: i64) -> Result<(), StoreError> {
        with_writer!(self, pool => { sqlx::query(TOUCH).bind(id_hash).bind(at).execute(pool).await?; });
        Ok(())
    }

    /// Ends a session (sign-out); `false` when there was none.
    pub async fn delete_session(&self, id_hash: &str) -> Result<bool, StoreError> {
        let deleted = with_writer!(self, pool => {
            sqlx::query(DELETE).bind(id_hash).execute(pool).await?.rows_affected()
        });
        Ok(deleted == 1)
    }
}
