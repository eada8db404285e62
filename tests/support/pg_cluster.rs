//! A PostgreSQL server of the test's own (`initdb` + `pg_ctl` in a temp dir, on a free port),
//! for the tests that stop, restart or break the server: the shared one on 5432 serves other
//! tests at the same time. The binaries are looked up in `HOOKWARDEN_PG_BIN`, then in
//! `/usr/lib/postgresql/<newest>/bin`, then on `PATH`; a test that needs them fails (never
//! skips) when they are not there. As root, the server runs as the `postgres` user
//! (`initdb` refuses root).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sqlx::Connection;
use sqlx::postgres::PgConnection;

pub struct PgCluster {
    bin: PathBuf,
    data: PathBuf,
    pub port: u16,
    /// Runs the server's commands as this user (`postgres` when the tests run as root).
    run_as: Option<String>,
    _dir: tempfile::TempDir,
}

/// Where `initdb` and `pg_ctl` are.
fn pg_bin() -> PathBuf {
    if let Ok(dir) = std::env::var("HOOKWARDEN_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin): &(u32, PathBuf)| bin.join("initdb").exists())
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return bin;
    }
    let found = Command::new("sh").args(["-c", "command -v initdb"]).output().expect("sh");
    let path = String::from_utf8_lossy(&found.stdout).trim().to_string();
    assert!(
        !path.is_empty(),
        "this test runs a PostgreSQL server of its own and needs initdb and pg_ctl: \
         install PostgreSQL's server binaries or set HOOKWARDEN_PG_BIN"
    );
    Path::new(&path).parent().expect("a directory").to_path_buf()
}

fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().expect("id -u");
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

impl PgCluster {
    /// Creates and starts a fresh server (trust authentication, superuser `postgres`).
    pub async fn start() -> Self {
        let bin = pg_bin();
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        let run_as = is_root().then(|| "postgres".to_string());
        if let Some(user) = &run_as {
            let chown = Command::new("chown").arg(user).arg(dir.path()).status().expect("chown");
            assert!(chown.success(), "cannot give {} to {user}", dir.path().display());
        }
        let port = super::free_port().port();
        let cluster = Self { bin, data, port, run_as, _dir: dir };
        let init = cluster.pg(
            "initdb",
            &["-D", &cluster.data.display().to_string(), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"],
        );
        assert!(init.status.success(), "initdb failed: {}", String::from_utf8_lossy(&init.stderr));
        cluster.start_server();
        cluster
    }

    fn pg(&self, tool: &str, args: &[&str]) -> Output {
        let program = self.bin.join(tool);
        let mut command = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&program);
                c
            }
            None => Command::new(&program),
        };
        command.args(args).output().unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()))
    }

    /// `pg_ctl start`, waiting until the server accepts connections.
    pub fn start_server(&self) {
        let options = format!(
            "-p {} -h 127.0.0.1 -k {} -c max_connections=200 -c fsync=on",
            self.port,
            self.data.parent().expect("dir").display()
        );
        let log = self.data.parent().expect("dir").join("server.log").display().to_string();
        let started =
            self.pg("pg_ctl", &["-D", &self.data.display().to_string(), "-l", &log, "-o", &options, "-w", "start"]);
        assert!(
            started.status.success(),
            "pg_ctl start failed: {}{}",
            String::from_utf8_lossy(&started.stdout),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// `pg_ctl stop -m fast`: sessions are ended, the server exits cleanly.
    pub fn stop_server(&self) {
        let stopped = self.pg("pg_ctl", &["-D", &self.data.display().to_string(), "-m", "fast", "-w", "stop"]);
        assert!(stopped.status.success(), "pg_ctl stop failed: {}", String::from_utf8_lossy(&stopped.stderr));
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// A new, empty database on this server; its URL.
    pub async fn create_database(&self, name: &str) -> String {
        let mut conn = PgConnection::connect(&self.url("postgres")).await.expect("connect to the test's server");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut conn).await.expect("create");
        conn.close().await.expect("close");
        self.url(name)
    }

    /// Ends every session on `database` but the caller's (`pg_terminate_backend`): what a
    /// network cut or a failover does to the gateway's connections mid-transaction. How many.
    pub async fn terminate_sessions(&self, database: &str) -> i64 {
        let mut conn = PgConnection::connect(&self.url("postgres")).await.expect("connect to the test's server");
        let ended: i64 = sqlx::query_scalar(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(database)
        .fetch_one(&mut conn)
        .await
        .expect("terminate sessions");
        conn.close().await.expect("close");
        ended
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = self.pg("pg_ctl", &["-D", &self.data.display().to_string(), "-m", "immediate", "-w", "stop"]);
    }
}
