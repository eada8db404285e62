//! Operator tokens, stored as sha256 hashes: the database never holds a usable token.

use super::{Store, StoreError, with_pool, with_writer};

#[derive(Debug, Clone)]
pub struct TokenRecord {
    pub id: String,
    pub name: String,
    pub role: String,
    pub created_at: i64,
    pub created_by: String,
    pub revoked_at: Option<i64>,
}

impl Store {
    /// Stores a new token; `false` when the name is taken.
    pub async fn insert_token(&self, t: &TokenRecord, token_hash: &str) -> Result<bool, StoreError> {
        let done = with_writer!(self, pool => sqlx::query(
            "INSERT INTO tokens (id, name, role, token_hash, created_at, created_by) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(&t.id)
        .bind(&t.name)
        .bind(&t.role)
        .bind(token_hash)
        .bind(t.created_at)
        .bind(&t.created_by)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(done == 1)
    }

    /// The live (not revoked) token with this hash: its name and role.
    pub async fn find_token(&self, token_hash: &str) -> Result<Option<(String, String)>, StoreError> {
        Ok(with_pool!(self, pool => sqlx::query_as(
            "SELECT name, role FROM tokens WHERE token_hash = $1 AND revoked_at IS NULL",
        )
        .bind(token_hash)
        .fetch_optional(pool)
        .await?))
    }
}
