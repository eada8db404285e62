//! A real `hookwarden serve` process with a config written for the test.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::{ADMIN_TOKEN, eventually};

/// One source of the config.
#[derive(Debug, Clone)]
pub struct SourceSpec {
    pub name: String,
    /// The inline TOML table of `verify`, e.g. `{ kind = "none" }`.
    pub verify: String,
    pub forward_to: String,
    pub signing_secret: String,
    pub retry_ladder: Option<Vec<String>>,
    pub max_attempts: Option<u32>,
    /// More TOML lines for the source, e.g. `dedup = { header = "x-request-id" }`.
    pub extra: String,
}

pub const SIGNING_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

impl SourceSpec {
    pub fn new(name: &str, verify: &str, forward_to: &str) -> Self {
        Self {
            name: name.into(),
            verify: verify.into(),
            forward_to: forward_to.into(),
            signing_secret: SIGNING_SECRET.into(),
            retry_ladder: None,
            max_attempts: None,
            extra: String::new(),
        }
    }

    pub fn with(mut self, toml_line: &str) -> Self {
        self.extra.push_str(toml_line);
        self.extra.push('\n');
        self
    }

    pub fn ladder(mut self, rungs: &[&str], max_attempts: u32) -> Self {
        self.retry_ladder = Some(rungs.iter().map(|r| r.to_string()).collect());
        self.max_attempts = Some(max_attempts);
        self
    }
}

/// What to run a gateway with.
#[derive(Debug, Clone)]
pub struct GatewaySpec {
    pub database_url: String,
    pub sources: Vec<SourceSpec>,
    pub poll_interval: String,
    pub lease: String,
    pub timeout: String,
    pub max_body_bytes: usize,
    /// Run the admin API on a listener of its own (`server.admin_listen`).
    pub admin_listen: bool,
    /// More TOML lines for `[server]`, e.g. `max_connections = 8`.
    pub server_extra: String,
    /// More TOML lines for `[delivery]`, e.g. `max_in_flight = 400`.
    pub delivery_extra: String,
    /// TOML lines for `[telemetry]`, e.g. `otlp_endpoint = "http://…"`.
    pub telemetry: String,
    /// Environment variables for the process, e.g. `HOOKWARDEN_LOG_FORMAT=json`.
    pub env: Vec<(String, String)>,
    /// TOML lines for `[retention]`, e.g. `events = "5s"` (none: the defaults).
    pub retention: String,
}

impl GatewaySpec {
    pub fn new(database_url: &str, sources: Vec<SourceSpec>) -> Self {
        Self {
            database_url: database_url.into(),
            sources,
            poll_interval: "100ms".into(),
            lease: "30s".into(),
            timeout: "10s".into(),
            max_body_bytes: 64 * 1024,
            admin_listen: false,
            server_extra: String::new(),
            delivery_extra: String::new(),
            telemetry: String::new(),
            env: Vec::new(),
            retention: String::new(),
        }
    }

    fn toml(&self, listen: SocketAddr, admin: Option<SocketAddr>) -> String {
        let admin = admin.map(|a| format!("admin_listen = \"{a}\"\n")).unwrap_or_default();
        let mut out = format!(
            "[server]
listen = \"{listen}\"
{admin}{}max_body_bytes = {}

[database]
url = \"{}\"

\
             [delivery]
poll_interval = \"{}\"
lease = \"{}\"
timeout = \"{}\"
{}
[admin]
token = \"{ADMIN_TOKEN}\"
",
            self.server_extra,
            self.max_body_bytes,
            self.database_url,
            self.poll_interval,
            self.lease,
            self.timeout,
            self.delivery_extra
        );
        if !self.telemetry.is_empty() {
            out.push_str(&format!("\n[telemetry]\n{}\n", self.telemetry));
        }
        if !self.retention.is_empty() {
            out.push_str(&format!("\n[retention]\n{}\n", self.retention));
        }
        for s in &self.sources {
            out.push_str(&format!(
                "\n[[sources]]\nname = \"{}\"\nverify = {}\nforward_to = \"{}\"\nsigning_secret = \"{}\"\n",
                s.name, s.verify, s.forward_to, s.signing_secret
            ));
            if let Some(rungs) = &s.retry_ladder {
                let list: Vec<String> = rungs.iter().map(|r| format!("\"{r}\"")).collect();
                out.push_str(&format!("retry_ladder = [{}]\n", list.join(", ")));
            }
            if let Some(max) = s.max_attempts {
                out.push_str(&format!("max_attempts = {max}\n"));
            }
            out.push_str(&s.extra);
        }
        out
    }
}

/// A gateway run by `hookwarden::run` on a thread of the test process, for what a process
/// cannot be given from outside (its clock).
struct InProcess {
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

pub struct Gateway {
    child: Option<Child>,
    in_process: Option<InProcess>,
    pub addr: SocketAddr,
    /// The admin API's own address, when it listens apart.
    pub admin_addr: Option<SocketAddr>,
    config_path: PathBuf,
    log_path: PathBuf,
    env: Vec<(String, String)>,
    /// Holds the config and log files for the gateway's life.
    _dir: tempfile::TempDir,
    http: reqwest::Client,
}

/// A port nothing listens on now (taken and given back).
pub fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

impl Gateway {
    /// Writes the config, starts the process and waits until `/readyz` answers.
    pub async fn start(spec: &GatewaySpec) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let addr = free_port();
        let admin_addr = spec.admin_listen.then(free_port);
        let config_path = dir.path().join("hookwarden.toml");
        std::fs::write(&config_path, spec.toml(addr, admin_addr)).expect("write config");
        let mut gateway = Self::in_dir(dir, addr, admin_addr, None);
        gateway.env = spec.env.clone();
        gateway.spawn().await;
        gateway
    }

    /// A gateway whose config (`hookwarden.toml`) and log are in `dir`, not started yet.
    fn in_dir(
        dir: tempfile::TempDir,
        addr: SocketAddr,
        admin_addr: Option<SocketAddr>,
        in_process: Option<InProcess>,
    ) -> Self {
        Self {
            child: None,
            in_process,
            addr,
            admin_addr,
            config_path: dir.path().join("hookwarden.toml"),
            log_path: dir.path().join("gateway.log"),
            env: Vec::new(),
            _dir: dir,
            http: super::client(),
        }
    }

    /// Runs the gateway in this process (`hookwarden::run`, real HTTP and database) with
    /// `clock` as its time, e.g. a host's clock that is off, and waits until it is ready.
    pub async fn start_in_process(spec: &GatewaySpec, clock: hookwarden::clock::SharedClock) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let bind = || {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.set_nonblocking(true).expect("non-blocking listener");
            listener
        };
        let listener = bind();
        let addr = listener.local_addr().expect("addr");
        let admin_listener = spec.admin_listen.then(bind);
        let admin_addr = admin_listener.as_ref().map(|l| l.local_addr().expect("addr"));
        let config_path = dir.path().join("hookwarden.toml");
        std::fs::write(&config_path, spec.toml(addr, admin_addr)).expect("write config");
        let config = hookwarden::config::Config::load(&config_path).expect("a valid config");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
            runtime.block_on(async move {
                let tokio_listener = |l| tokio::net::TcpListener::from_std(l).expect("tokio listener");
                let listeners = hookwarden::Listeners {
                    public: tokio_listener(listener),
                    admin: admin_listener.map(tokio_listener),
                };
                let shutdown = async move {
                    let _ = stopped.await;
                };
                hookwarden::run(config, listeners, clock, shutdown).await.expect("the in-process gateway ran");
            });
        });
        let gateway = Self::in_dir(dir, addr, admin_addr, Some(InProcess { stop, thread }));
        let url = gateway.url("/readyz");
        eventually(Duration::from_secs(20), "in-process gateway ready", || {
            let (http, url) = (gateway.http.clone(), url.clone());
            async move { http.get(&url).send().await.ok().filter(|r| r.status().is_success()).map(|_| ()) }
        })
        .await;
        gateway
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log_path).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_hookwarden"))
            .arg("serve")
            .arg("--config")
            .arg(&self.config_path)
            .env("RUST_LOG", std::env::var("TEST_LOG").unwrap_or_else(|_| "info,sqlx=warn".into()))
            .env_remove("HOOKWARDEN_ADMIN_TOKEN")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start hookwarden");
        self.child = Some(child);
        let url = self.url("/readyz");
        let http = self.http.clone();
        let log_path = self.log_path.clone();
        let child = self.child.as_mut().expect("child");
        eventually(Duration::from_secs(20), "gateway ready", || {
            let exited = child.try_wait().ok().flatten();
            if let Some(status) = exited {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                panic!("gateway exited with {status} before it was ready:\n{log}");
            }
            let http = http.clone();
            let url = url.clone();
            async move { http.get(&url).send().await.ok().filter(|r| r.status().is_success()).map(|_| ()) }
        })
        .await;
    }

    /// The running process's id.
    /// The config file the gateway runs with (for the commands that take `--config`).
    pub fn config_path(&self) -> &std::path::Path {
        &self.config_path
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the gateway is running").id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// A URL on the admin API's listener (the public one when it does not listen apart).
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin_addr.unwrap_or(self.addr), path)
    }

    /// SIGKILL: no shutdown code runs. (A gateway in this process is stopped the ordinary way.)
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(InProcess { stop, thread }) = self.in_process.take() {
            let _ = stop.send(());
            let _ = thread.join();
        }
    }

    /// SIGTERM, then waits up to `within` for the process to exit; its exit status.
    pub async fn terminate(&mut self, within: std::time::Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// Starts a gateway that is expected to refuse to run: its exit status and log.
    pub async fn start_refused(spec: &GatewaySpec) -> (std::process::ExitStatus, String) {
        let dir = tempfile::tempdir().expect("temp dir");
        let config_path = dir.path().join("hookwarden.toml");
        std::fs::write(&config_path, spec.toml(free_port(), None)).expect("write config");
        let run = Command::new(env!("CARGO_BIN_EXE_hookwarden"))
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .env_remove("HOOKWARDEN_ADMIN_TOKEN")
            .stdin(Stdio::null())
            .output();
        let output = tokio::time::timeout(Duration::from_secs(20), tokio::task::spawn_blocking(move || run))
            .await
            .expect("the gateway kept running")
            .expect("join")
            .expect("start hookwarden");
        (output.status, String::from_utf8_lossy(&output.stderr).into_owned())
    }

    /// Starts the same config again (same port, same database).
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the gateway before restarting it");
        self.spawn().await;
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// `GET` an admin route with the test admin token.
    pub async fn admin_get(&self, path: &str) -> (u16, Value) {
        let response =
            self.http.get(self.admin_url(path)).bearer_auth(ADMIN_TOKEN).send().await.expect("admin request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// A request with `token` (the admin token when `None`) and an optional JSON body.
    pub async fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<&Value>) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self.http.request(method, self.admin_url(path)).bearer_auth(token.unwrap_or(ADMIN_TOKEN));
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.expect("admin request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// `POST` an admin route with the admin token.
    pub async fn admin_post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.call("POST", path, None, Some(body)).await
    }

    /// `POST /v1/receipts` with a signed receipt.
    pub async fn post_receipt(&self, signed: &receipts_sdk::receipt::SignedReceipt) -> (u16, Value) {
        self.post_receipt_with(signed, &[]).await
    }

    /// `POST /v1/receipts` with a signed receipt and more headers (e.g. `traceparent`).
    pub async fn post_receipt_with(
        &self,
        signed: &receipts_sdk::receipt::SignedReceipt,
        extra: &[(&str, &str)],
    ) -> (u16, Value) {
        let mut request = self.http.post(self.url("/v1/receipts")).body(signed.body.clone());
        for (name, value) in extra {
            request = request.header(*name, *value);
        }
        for (name, value) in signed.headers() {
            request = request.header(name, value);
        }
        let response = request.header("content-type", "application/json").send().await.expect("receipt request");
        (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
    }

    /// A new operator token with `role`.
    pub async fn token(&self, name: &str, role: &str) -> String {
        let (status, answer) = self.admin_post("/v1/tokens", &serde_json::json!({ "name": name, "role": role })).await;
        assert_eq!(status, 201, "{answer}");
        answer["token"].as_str().unwrap().to_string()
    }

    /// Every audit entry, oldest first.
    pub async fn audit(&self) -> Vec<Value> {
        let mut out = Vec::new();
        let mut after = 0;
        loop {
            let (status, page) = self.admin_get(&format!("/v1/audit?after={after}&limit=1000")).await;
            assert_eq!(status, 200, "{page}");
            out.extend(page["entries"].as_array().unwrap().iter().cloned());
            match page["next_after"].as_i64() {
                Some(next) => after = next,
                None => return out,
            }
        }
    }

    /// The event, with its attempt log, or `None` when unknown.
    pub async fn event(&self, id: &str) -> Option<Value> {
        let (status, body) = self.admin_get(&format!("/v1/events/{id}")).await;
        (status == 200).then_some(body)
    }

    /// All events of the log, newest first (follows the cursor).
    pub async fn all_events(&self) -> Vec<Value> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/v1/events?limit=1000&cursor={c}"),
                None => "/v1/events?limit=1000".to_string(),
            };
            let (status, body) = self.admin_get(&path).await;
            assert_eq!(status, 200, "{body}");
            out.extend(body["data"].as_array().expect("data").iter().cloned());
            match body["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_string()),
                None => return out,
            }
        }
    }

    /// `POST /ingest/{source}` with extra headers; answers status and JSON.
    pub async fn ingest(&self, source: &str, headers: &[(String, String)], body: &[u8]) -> (u16, Value) {
        let mut request = self.http.post(self.url(&format!("/ingest/{source}"))).body(body.to_vec());
        request = request.header("content-type", "application/json");
        for (name, value) in headers {
            request = request.header(name.as_str(), value.as_str());
        }
        let response = request.send().await.expect("ingest request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- gateway log ({}) ----\n{}", self.addr, self.log());
        }
        self.kill9();
    }
}
