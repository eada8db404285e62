//! Operator tokens, stored as sha256 hashes: the database never holds a usable token. Creating
//! and revoking one commits its audit entry in the same transaction.

use sqlx::Row;

use super::audit::append_audit_in;
use super::{NewAuditEntry, Store, StoreError, with_pool, with_writer};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: String,
    pub name: String,
    pub role: String,
    /// The sources it may act on; `None`: every source.
    pub sources: Option<Vec<String>>,
    pub created_at: i64,
    pub created_by: String,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// What revoking a token did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revoked {
    Now(TokenRecord),
    Before(TokenRecord),
    Unknown,
}

const COLUMNS: &str = "id, name, role, sources, created_at, created_by, expires_at, revoked_at";

fn record(row: &impl RowLike) -> Result<TokenRecord, StoreError> {
    let sources: Option<String> = row.text_opt("sources")?;
    Ok(TokenRecord {
        id: row.text("id")?,
        name: row.text("name")?,
        role: row.text("role")?,
        sources: sources
            .map(|s| serde_json::from_str(&s).map_err(|e| StoreError::Corrupt(format!("token sources: {e}"))))
            .transpose()?,
        created_at: row.int("created_at")?,
        created_by: row.text("created_by")?,
        expires_at: row.int_opt("expires_at")?,
        revoked_at: row.int_opt("revoked_at")?,
    })
}

/// The columns of a token row, read the same way from either backend's rows.
trait RowLike {
    fn text(&self, name: &str) -> Result<String, StoreError>;
    fn text_opt(&self, name: &str) -> Result<Option<String>, StoreError>;
    fn int(&self, name: &str) -> Result<i64, StoreError>;
    fn int_opt(&self, name: &str) -> Result<Option<i64>, StoreError>;
}

macro_rules! row_like {
    ($row:ty) => {
        impl RowLike for $row {
            fn text(&self, name: &str) -> Result<String, StoreError> {
                Ok(self.try_get(name)?)
            }
            fn text_opt(&self, name: &str) -> Result<Option<String>, StoreError> {
                Ok(self.try_get(name)?)
            }
            fn int(&self, name: &str) -> Result<i64, StoreError> {
                Ok(self.try_get(name)?)
            }
            fn int_opt(&self, name: &str) -> Result<Option<i64>, StoreError> {
                Ok(self.try_get(name)?)
            }
        }
    };
}
row_like!(sqlx::sqlite::SqliteRow);
row_like!(sqlx::postgres::PgRow);

const INSERT: &str = "INSERT INTO tokens (id, name, role, token_hash, created_at, created_by, sources, expires_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (name) DO NOTHING";
const REVOKE: &str = "UPDATE tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL";

impl Store {
    /// Stores a new token with its audit entry, in one transaction; `false` when the name is
    /// taken (nothing written).
    pub async fn insert_token(
        &self,
        t: &TokenRecord,
        token_hash: &str,
        audit: &NewAuditEntry,
    ) -> Result<bool, StoreError> {
        let sources = t.sources.as_ref().map(|s| serde_json::to_string(s).expect("serialises"));
        with_writer!(self, pool => {
            let mut tx = pool.begin().await?;
            let inserted = sqlx::query(INSERT)
                .bind(&t.id)
                .bind(&t.name)
                .bind(&t.role)
                .bind(token_hash)
                .bind(t.created_at)
                .bind(&t.created_by)
                .bind(sources.as_deref())
                .bind(t.expires_at)
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

    /// The token with this hash, revoked or expired ones too (the caller says which is which).
    pub async fn find_token(&self, token_hash: &str) -> Result<Option<TokenRecord>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM tokens WHERE token_hash = $1");
        with_pool!(self, pool => {
            match sqlx::query(sqlx::AssertSqlSafe(sql)).bind(token_hash).fetch_optional(pool).await? {
                Some(row) => Ok(Some(record(&row)?)),
                None => Ok(None),
            }
        })
    }

    /// Every token, oldest first.
    pub async fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM tokens ORDER BY created_at, id");
        with_pool!(self, pool => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(pool).await?;
            rows.iter().map(record).collect()
        })
    }

    /// Revokes a token at `at` and appends `audit` (given the token) in the same transaction;
    /// a token revoked before stays as it was and gets no entry.
    pub async fn revoke_token(
        &self,
        id: &str,
        at: i64,
        audit: impl FnOnce(&TokenRecord) -> NewAuditEntry,
    ) -> Result<Revoked, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM tokens WHERE id = $1");
        with_writer!(self, pool => {
            let mut tx = pool.begin().await?;
            let revoked = sqlx::query(REVOKE).bind(id).bind(at).execute(&mut *tx).await?.rows_affected() == 1;
            let outcome = match sqlx::query(sqlx::AssertSqlSafe(sql.clone())).bind(id).fetch_optional(&mut *tx).await? {
                None => Revoked::Unknown,
                Some(row) if revoked => {
                    let token = record(&row)?;
                    append_audit_in!(self, tx, &audit(&token));
                    Revoked::Now(token)
                }
                Some(row) => Revoked::Before(record(&row)?),
            };
            tx.commit().await?;
            Ok(outcome)
        })
    }
}
