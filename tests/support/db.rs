//! A database of its own for each test: a SQLite file in a temp dir, or a fresh PostgreSQL
//! database on 127.0.0.1:5432 that is dropped when the test ends. PostgreSQL is required:
//! a test of the PostgreSQL path fails, never skips, when the server is not there.

use sqlx::Connection;
use sqlx::postgres::PgConnection;

use super::Db;

const PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

fn pg_admin_url() -> String {
    std::env::var("HOOKWARDEN_TEST_PG").unwrap_or_else(|_| PG_ADMIN_URL.to_string())
}

pub struct TestDb {
    pub url: String,
    pg_name: Option<String>,
    _dir: tempfile::TempDir,
}

impl TestDb {
    pub async fn new(kind: Db) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        match kind {
            Db::Sqlite => {
                let url = format!("sqlite://{}", dir.path().join("hookwarden.db").display());
                Self { url, pg_name: None, _dir: dir }
            }
            Db::Postgres => {
                let name = format!("hw_test_{:016x}", rand::random::<u64>());
                let admin = pg_admin_url();
                let mut conn = PgConnection::connect(&admin)
                    .await
                    .unwrap_or_else(|e| panic!("PostgreSQL at {admin} is required for this test: {e}"));
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut conn)
                    .await
                    .expect("create test database");
                let base = admin.rsplit_once('/').map(|(b, _)| b).expect("url has a database");
                Self { url: format!("{base}/{name}"), pg_name: Some(name), _dir: dir }
            }
        }
    }
}

impl TestDb {
    /// Runs `statements` on a connection of the test's own, beside whatever gateway uses the
    /// database (to break it on purpose, say). SQLite waits for the gateway's writer.
    pub async fn execute(&self, statements: &[&str]) {
        for sql in statements {
            self.try_execute(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
    }

    /// Runs one statement as [`TestDb::execute`] does; the database's refusal as text.
    pub async fn try_execute(&self, sql: &str) -> Result<(), String> {
        let sql = sqlx::AssertSqlSafe(sql.to_string());
        if self.pg_name.is_some() {
            let mut conn = PgConnection::connect(&self.url).await.expect("connect to the test database");
            let done = sqlx::query(sql).execute(&mut conn).await.map(|_| ()).map_err(|e| e.to_string());
            conn.close().await.expect("close");
            done
        } else {
            let options = self
                .url
                .parse::<sqlx::sqlite::SqliteConnectOptions>()
                .expect("a SQLite url")
                .busy_timeout(std::time::Duration::from_secs(10));
            let mut conn = sqlx::SqliteConnection::connect_with(&options).await.expect("open the test database");
            let done = sqlx::query(sql).execute(&mut conn).await.map(|_| ()).map_err(|e| e.to_string());
            conn.close().await.expect("close");
            done
        }
    }

    /// Puts a trigger on `table` that refuses every `operation` (`INSERT`, `UPDATE`, …) with
    /// "refused by the test", behind the gateway's back: its next write there fails as a full
    /// disk or a broken database would. [`TestDb::allow`] takes it off.
    pub async fn refuse(&self, operation: &str, table: &str) {
        let name = format!("refuse_{}_{table}", operation.to_lowercase());
        if self.pg_name.is_some() {
            self.execute(&[
                &format!(
                    "CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS \
                     $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$"
                ),
                &format!("CREATE TRIGGER {name} BEFORE {operation} ON {table} FOR EACH ROW EXECUTE FUNCTION {name}()"),
            ])
            .await;
        } else {
            self.execute(&[&format!(
                "CREATE TRIGGER {name} BEFORE {operation} ON {table} BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
            )])
            .await;
        }
    }

    /// Takes off what [`TestDb::refuse`] put on.
    pub async fn allow(&self, operation: &str, table: &str) {
        let name = format!("refuse_{}_{table}", operation.to_lowercase());
        if self.pg_name.is_some() {
            self.execute(&[&format!("DROP TRIGGER {name} ON {table}"), &format!("DROP FUNCTION {name}()")]).await;
        } else {
            self.execute(&[&format!("DROP TRIGGER {name}")]).await;
        }
    }

    /// One number the database answers `sql` with (a count, say), read beside the gateway.
    pub async fn scalar(&self, sql: &str) -> i64 {
        let sql = sqlx::AssertSqlSafe(sql.to_string());
        if self.pg_name.is_some() {
            let mut conn = PgConnection::connect(&self.url).await.expect("connect to the test database");
            sqlx::query_scalar(sql).fetch_one(&mut conn).await.expect("a number")
        } else {
            let mut conn = sqlx::SqliteConnection::connect(&self.url).await.expect("open the test database");
            sqlx::query_scalar(sql).fetch_one(&mut conn).await.expect("a number")
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(name) = self.pg_name.take() else {
            return;
        };
        // Drop runs outside async; a small runtime on its own thread drops the database.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async move {
                if let Ok(mut conn) = PgConnection::connect(&pg_admin_url()).await {
                    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await;
                }
            });
        })
        .join();
    }
}
