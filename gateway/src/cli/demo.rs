//! `hookwarden demo`: the 2 AM story on a laptop in one command. A gateway on a temporary
//! SQLite file, the example orders handler (`orders-handler`, from `examples/`), and a
//! simulated provider that posts signed orders (Standard Webhooks) through a handler outage:
//! some processed before it (confirmed, two rejected with `E_REJECTED`), the ones sent while
//! the handler is down left `unknown` (their next retry is 30 minutes away), then the
//! handler back. It prints the console's URL and an admin token; the gap shows on the chart
//! within a minute and a replay from the console closes it. Ctrl-C ends it all and removes
//! the temporary files.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use receipts_sdk::receipt::ReceiptKey;
use receipts_sdk::webhook::WebhookSecret;

use super::CliError;
use crate::clock::SystemClock;
use crate::config::Config;

/// How long each phase of the simulated traffic lasts, and the provider's pace.
const BEFORE: Duration = Duration::from_secs(20);
const OUTAGE: Duration = Duration::from_secs(30);
const AFTER: Duration = Duration::from_secs(10);
const EVERY: Duration = Duration::from_millis(700);

/// Where `orders-handler` is: beside this binary (`cargo build -p hookwarden-examples`
/// puts it there), or `HOOKWARDEN_DEMO_HANDLER`.
fn handler_binary() -> Result<PathBuf, CliError> {
    if let Ok(path) = std::env::var("HOOKWARDEN_DEMO_HANDLER") {
        return Ok(PathBuf::from(path));
    }
    let me = std::env::current_exe().map_err(|e| CliError::Usage(format!("cannot find this binary: {e}")))?;
    let beside = me.with_file_name("orders-handler");
    if beside.exists() {
        return Ok(beside);
    }
    Err(CliError::Usage(format!(
        "the demo runs the example handler, which is not built: run `cargo build --release -p hookwarden-examples` \
         (it goes to {}), or set HOOKWARDEN_DEMO_HANDLER",
        beside.display()
    )))
}

/// The handler process, stopped and started again for the outage.
struct Handler {
    binary: PathBuf,
    /// Answers once the handler listens (its list of orders).
    ready_url: String,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
}

impl Handler {
    fn start(&mut self) -> Result<(), CliError> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| CliError::Usage(format!("cannot write {}: {e}", self.log.display())))?;
        let child = Command::new(&self.binary)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| CliError::Usage(format!("cannot start {}: {e}", self.binary.display())))?;
        self.child = Some(child);
        Ok(())
    }

    /// Starts the handler and waits until it answers, so that no order meets a handler still
    /// starting up (that would be an outage of its own).
    async fn start_ready(&mut self) -> Result<(), CliError> {
        self.start()?;
        let http = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while tokio::time::Instant::now() < deadline {
            if http.get(&self.ready_url).send().await.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(CliError::Usage(format!("the example handler did not start; see {}", self.log.display())))
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Handler {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> Result<u16, CliError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| CliError::Usage(e.to_string()))?;
    Ok(listener.local_addr().map_err(|e| CliError::Usage(e.to_string()))?.port())
}

/// The demo's config: one source, `orders`, verified as Standard Webhooks, forwarded to the
/// handler, confirmed by its key; a first retry 30 minutes after a failure, so the outage
/// stays a gap until someone replays it.
fn config_text(port: u16, handler_port: u16, dir: &Path, admin: &str, provider: &str, key: &ReceiptKey) -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:{port}"

[database]
url = "sqlite://{db}"

[delivery]
poll_interval = "200ms"

[admin]
token = "{admin}"

[[sources]]
name = "orders"
verify = {{ kind = "standard", secret = "{provider}" }}
forward_to = "http://127.0.0.1:{handler_port}/webhooks/orders"
signing_secret = "{signing}"
receipt_keys = [{{ id = "{key_id}", public_key = "{public}" }}]
retry_ladder = ["30m", "2h"]
max_attempts = 3
receipt_sla = "1m"
"#,
        db = dir.join("demo.db").display(),
        signing = SIGNING_SECRET,
        key_id = key.id,
        public = key.public_key_base64(),
    )
}

/// The gateway's secret for signing forwards to the handler (the example handler's default).
const SIGNING_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Runs the demo until Ctrl-C; `speed` plays the provider's traffic that many times faster.
pub async fn demo(port: u16, speed: f64) -> Result<(), CliError> {
    if !(speed > 0.0 && speed <= 100.0) {
        return Err(CliError::Usage("--speed must be above 0 and at most 100".into()));
    }
    let binary = handler_binary()?;
    let dir = std::env::temp_dir().join(format!("hookwarden-demo-{:08x}", rand::random::<u32>()));
    std::fs::create_dir_all(&dir).map_err(|e| CliError::Usage(format!("cannot create {}: {e}", dir.display())))?;
    let result = run_demo(port, speed, binary, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn run_demo(port: u16, speed: f64, binary: PathBuf, dir: &Path) -> Result<(), CliError> {
    let admin = crate::access::new_token();
    let provider = WebhookSecret::generate();
    let key = ReceiptKey::generate("orders-demo");
    let handler_port = free_port()?;
    let text = config_text(port, handler_port, dir, &admin, &provider.to_whsec(), &key);
    let config = Config::parse(&text, &|_| None).map_err(|e| CliError::Usage(format!("demo config: {e}")))?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .map_err(|e| CliError::Usage(format!("cannot listen on 127.0.0.1:{port}: {e} (try --port)")))?;
    let gateway_url = format!("http://127.0.0.1:{port}");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    // The gateway runs beside the story below (in this task: its future is not `Send`), on
    // a listener already bound, so the provider's first posts wait for it rather than fail.
    let gateway = crate::run(config, listener, Arc::new(SystemClock), async move {
        let _ = stopped.await;
    });
    let mut handler = Handler {
        binary,
        ready_url: format!("http://127.0.0.1:{handler_port}/orders"),
        env: vec![
            ("HANDLER_LISTEN".into(), format!("127.0.0.1:{handler_port}")),
            ("HANDLER_DATABASE_URL".into(), format!("sqlite://{}", dir.join("orders.db").display())),
            ("HOOKWARDEN_URL".into(), gateway_url.clone()),
            ("SIGNING_SECRET".into(), SIGNING_SECRET.into()),
            ("RECEIPT_KEY_ID".into(), key.id.clone()),
            ("RECEIPT_KEY_SEED".into(), key.seed_base64()),
            ("RUST_LOG".into(), "warn".into()),
        ],
        log: dir.join("handler.log"),
        child: None,
    };
    crate::tls::install_crypto_provider();
    handler.start_ready().await?;

    println!("hookwarden demo: a gateway, the example orders handler and a simulated provider.");
    println!();
    println!("  console   {gateway_url}/ui/?window=15m");
    println!("  token     {admin}");
    println!();
    let secs = |d: Duration| (d.as_secs_f64() / speed).round();
    println!(
        "Sign in with the token. Orders arrive every {:.1}s; in {}s the handler goes down",
        EVERY.as_secs_f64() / speed,
        secs(BEFORE)
    );
    println!("for {}s and the events sent meanwhile stay `unknown` (their retry is 30 minutes away):", secs(OUTAGE));
    println!("the gap on the chart. Select it, `Replay this span…`, preview, run it live with a reason,");
    println!("and watch it close. Files in {} (removed at the end). Ctrl-C to stop.", dir.display());
    println!();

    let provider_url = format!("{gateway_url}/ingest/orders");
    let story = async {
        let simulated = simulate(&provider_url, &provider, &mut handler, speed);
        let outcome = tokio::select! {
            result = simulated => match result {
                Ok(()) => {
                    println!("The provider has sent everything; the gateway keeps running. Ctrl-C to stop.");
                    crate::shutdown_signal().await;
                    Ok(())
                }
                Err(err) => Err(err),
            },
            _ = crate::shutdown_signal() => Ok(()),
        };
        println!("stopping");
        handler.stop();
        let _ = stop.send(());
        outcome
    };
    let (ran, told) = tokio::join!(gateway, story);
    told?;
    ran.map_err(|err| CliError::Usage(format!("the gateway stopped: {err}")))
}

/// The provider: orders signed with Standard Webhooks, before, during and after the outage.
async fn simulate(url: &str, secret: &WebhookSecret, handler: &mut Handler, speed: f64) -> Result<(), CliError> {
    let scaled = |d: Duration| d.div_f64(speed);
    let every = scaled(EVERY);
    crate::tls::install_crypto_provider();
    let http = reqwest::Client::new();
    let mut n = 0u32;
    let mut send = async |http: &reqwest::Client, fail: bool| {
        n += 1;
        let id = format!("msg_demo_{n:04}");
        let body = serde_json::json!({
            "id": format!("ord_{n:04}"),
            "type": "order.paid",
            "amount": 1000 + n * 7,
            "fail": fail,
        })
        .to_string();
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs() as i64;
        let posted = http
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", now.to_string())
            .header("webhook-signature", secret.sign(&id, now, body.as_bytes()))
            .body(body)
            .send()
            .await;
        if let Err(err) = posted {
            eprintln!("provider: {err}");
        }
    };
    let phase = |name: &str| println!("[{}] {name}", crate::timestamp::format_ms(SystemClock.now_ms()));
    use crate::clock::Clock;
    phase("handler up: orders are applied and confirmed (two are rejected: E_REJECTED)");
    let until = tokio::time::Instant::now() + scaled(BEFORE);
    let mut i = 0;
    while tokio::time::Instant::now() < until {
        i += 1;
        send(&http, i == 7 || i == 19).await;
        tokio::time::sleep(every).await;
    }
    phase("handler DOWN: forwards fail, these events stay unknown");
    handler.stop();
    let until = tokio::time::Instant::now() + scaled(OUTAGE);
    while tokio::time::Instant::now() < until {
        send(&http, false).await;
        tokio::time::sleep(every).await;
    }
    handler.start_ready().await?;
    phase("handler back up: new orders are confirmed again; the gap stays until you replay it");
    let until = tokio::time::Instant::now() + scaled(AFTER);
    while tokio::time::Instant::now() < until {
        send(&http, false).await;
        tokio::time::sleep(every).await;
    }
    Ok(())
}
