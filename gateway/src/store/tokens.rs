//! Operator tokens, stored as sha256 hashes: the database never holds a usable token. A
//! token is created with its audit entry, in one transaction.

use super::audit::append_audit_in;
use super::{NewAuditEntry, Store, StoreError, with_pool, with_writer};

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
    /// Stores a new token with its audit entry, in one transaction; `false` when the name is
    /// taken (nothing written).
    pub async fn insert_token(
        &self,
        t: &TokenRecord,
        token_hash: &str,
        audit: &NewAuditEntry,
    ) -> Result<bool, StoreError> {
        with_writer!(self, pool => {
            let mut tx = pool.begin().await?;
            let inserted = sqlx::query(
                "INSERT INTO tokens (id, name, role, token_hash, created_at, created_by) VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (name) DO NOTHING",
            )
            .bind(&t.id)
            .bind(&t.name)
            .bind(&t.role)
            .bind(token_hash)
            .bind(t.created_at)
            .bind(&t.created_by)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted != 1 {
                return Ok(false);
            }
            append_audit_in!(self, tx, audit);
            tx.commit().await?;
            Ok(true)
        })
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
