//! The TOML config file (SPEC.md "Config file"), resolved into checked values at load.
//!
//! Secrets may be inline or named by an environment variable (`*_env`); both are resolved
//! here, once, so nothing downstream reads the environment. Secrets never print in `Debug`.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use receipts_sdk::webhook::WebhookSecret;
use serde::Deserialize;

use crate::delivery::RetryLadder;
use crate::verify::{Extract, HmacEncoding, Verifier};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("invalid config: {0}")]
    Parse(#[from] toml::de::Error),
    #[error("source `{source_name}`: {message}")]
    Source { source_name: String, message: String },
    #[error("{0}")]
    Invalid(String),
}

/// The whole, checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// Where the admin API listens, apart from ingest (`None`: on `listen` with the rest).
    pub admin_listen: Option<SocketAddr>,
    /// Connections each listener keeps open at once; more wait in the kernel's queue.
    pub max_connections: usize,
    pub max_body_bytes: usize,
    pub database_url: String,
    pub delivery: DeliveryConfig,
    pub sources: Vec<SourceConfig>,
    /// The bootstrap admin token (`HOOKWARDEN_ADMIN_TOKEN` or `[admin] token`).
    pub admin_token: Option<Secret>,
    /// `[retention]` as written, the defaults of every source's [`Retention`].
    pub retention: Retention,
    pub console: ConsoleConfig,
    pub telemetry: TelemetryConfig,
}

/// Trace export (`[telemetry]`, see `telemetry.rs`).
#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    /// Where spans go, over OTLP/HTTP (protobuf); `None`: no export at all.
    pub otlp_endpoint: Option<reqwest::Url>,
    /// `service.name` on every span.
    pub service_name: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self { otlp_endpoint: None, service_name: "hookwarden".into() }
    }
}

/// How long a source's events are kept (SPEC.md "Retention"); `[retention]` with the
/// source's `retention = { … }` over it. Ages count from when an event was received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    /// Headers and body of a settled event (`confirmed`, or resolved); its row stays.
    pub payloads: Duration,
    /// The whole settled event: row, attempts, receipts, replay items, and its dedup key.
    pub events: Duration,
    /// Events still `unknown` or `failed` and unresolved (gaps): kept at least this long.
    pub unsettled: Duration,
    /// How often the purge runs.
    pub run_every: Duration,
    /// Where settled events are written (gzip JSON Lines per day) before they are purged.
    pub archive_dir: Option<std::path::PathBuf>,
}

impl Default for Retention {
    fn default() -> Self {
        const DAY: u64 = 86_400;
        Self {
            payloads: Duration::from_secs(30 * DAY),
            events: Duration::from_secs(90 * DAY),
            unsettled: Duration::from_secs(180 * DAY),
            run_every: Duration::from_secs(600),
            archive_dir: None,
        }
    }
}

impl Retention {
    /// How long a dedup key lives at the least: an event's key goes with its row, after
    /// `events` when settled, after `unsettled` when not.
    pub fn dedup_lifetime(&self) -> Duration {
        self.events.min(self.unsettled)
    }
}

/// How long a provider of each kind may send the same event again (its retries, or a
/// redelivery asked for by hand), as its documentation states: a dedup key must outlive it,
/// or the late copy becomes a new event and is forwarded a second time. `None`: the kind is
/// no one provider (`hmac`, `none`), so no window is known; the operator's choice stands.
pub fn redelivery_window(kind: &str) -> Option<(Duration, &'static str)> {
    const HOUR: u64 = 3600;
    match kind {
        "stripe" => Some((Duration::from_secs(72 * HOUR), "Stripe retries a live-mode event for up to 3 days")),
        "github" => Some((
            Duration::from_secs(72 * HOUR),
            "GitHub redelivers (by hand or through its API) deliveries of the past 3 days",
        )),
        "standard" => Some((
            Duration::from_secs(28 * HOUR),
            "Standard Webhooks senders on Svix's schedule retry for about 27.6 hours (5s, 5m, 30m, 2h, 5h, 10h, 10h)",
        )),
        _ => None,
    }
}

/// The operator console's sessions (`[console]`).
#[derive(Debug, Clone)]
pub struct ConsoleConfig {
    /// A session unused for this long is over (sign in again).
    pub session_idle: Duration,
    /// Mark the session cookie `Secure` even when no proxy says the request came over TLS
    /// (`X-Forwarded-Proto: https` always does).
    pub secure_cookie: bool,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self { session_idle: Duration::from_secs(30 * 60), secure_cookie: false }
    }
}

/// A string that must not appear in logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// How the dispatcher drives deliveries; defaults suit production, tests shorten them.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// How often the dispatcher looks for due deliveries when nothing wakes it.
    pub poll_interval: Duration,
    /// How long a claimed delivery stays ours; a crashed gateway's claims expire after it.
    pub lease: Duration,
    /// Per-request timeout towards a handler.
    pub timeout: Duration,
    /// Deliveries in flight at once, over all sources.
    pub max_in_flight: usize,
    /// Largest jitter, as a fraction of the rung (0.2 = ±20%).
    pub jitter: f64,
}

/// How much longer than `delivery.timeout` a delivery's lease must be. A delivery's lease is
/// renewed just before its forward goes out (when less than `timeout` plus this is left), so
/// it must outlast the forward (at most `timeout`, connecting included), then the group commit
/// of the attempt's result (milliseconds; hundreds under overload), and the clock skew
/// between gateways, which compare the lease's end with their own clocks (milliseconds under
/// NTP). A second covers both with room to spare; were it ever exceeded, the cost is a second
/// attempt of the same event, not a lost one.
pub const LEASE_MARGIN: Duration = Duration::from_secs(1);

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_millis(500),
            lease: Duration::from_secs(60),
            timeout: Duration::from_secs(30),
            max_in_flight: 256,
            jitter: 0.2,
        }
    }
}

#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub name: String,
    pub verifier: Verifier,
    pub forward_to: String,
    /// `forward_to`, parsed once here for every forward.
    pub forward_url: reqwest::Url,
    pub signing_secret: WebhookSecret,
    pub receipt_keys: Vec<ReceiptKeyConfig>,
    pub ladder: RetryLadder,
    pub receipt_sla: Duration,
    /// Where the provider's event id is, when not the kind's usual place.
    pub dedup: Option<Extract>,
    /// Where the event type is, when not the kind's usual place.
    pub event_type: Option<Extract>,
    /// Deliveries in flight at once for this source.
    pub max_in_flight: usize,
    /// Ingests accepted per second (and in a burst) before this source gets 429s.
    pub ingest_limit: Option<IngestLimit>,
    /// How long an identical body (sha256) is taken as a repeat of the first, whatever its
    /// delivery id: for providers that sign no timestamp (`github`, `hmac`, `none`).
    pub body_dedup_window: Option<Duration>,
    /// How long this source's events are kept (`[retention]`, overridden per source).
    pub retention: Retention,
    /// Where the handler answers the status probe (docs/status-probe.md); `None`: never asked.
    pub status_url: Option<reqwest::Url>,
    /// How long one probe request may take, connecting included.
    pub status_timeout: Duration,
    /// Event types whose 2xx is enough: such events are `confirmed` on delivery.
    pub no_receipt_types: NoReceiptTypes,
}

/// A source's `no_receipt_types`: exact event types, or patterns where `*` stands for any
/// run of characters (`ping`, `*.updated`, `invoice.*`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NoReceiptTypes(Vec<String>);

impl NoReceiptTypes {
    /// Longest pattern accepted (event types are short).
    const MAX_LEN: usize = 200;

    pub fn parse(patterns: Vec<String>) -> Result<Self, String> {
        for p in &patterns {
            if p.trim().is_empty() || p.len() > Self::MAX_LEN || p.chars().any(char::is_control) {
                return Err(format!("no_receipt_types: `{p}` is not an event type or pattern (1 to 200 characters)"));
            }
        }
        Ok(Self(patterns))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The patterns as configured.
    pub fn patterns(&self) -> &[String] {
        &self.0
    }

    /// The first pattern `event_type` matches, if any.
    pub fn matching(&self, event_type: &str) -> Option<&str> {
        self.0.iter().find(|p| glob_matches(p, event_type)).map(String::as_str)
    }
}

/// Whether `text` matches `pattern`, where `*` is any run of characters (none included).
fn glob_matches(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if text.len() < first.len() + last.len() || !text.starts_with(first) || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    true
}

/// A probe request's timeout when the source sets none.
pub const DEFAULT_STATUS_TIMEOUT: Duration = Duration::from_secs(10);

impl SourceConfig {
    /// Why an event of `event_type` is confirmed by a 2xx alone, when its type is one of the
    /// source's `no_receipt_types` (what the event then shows as its `outcome_reason`).
    pub fn no_receipt_reason(&self, event_type: Option<&str>) -> Option<String> {
        let event_type = event_type?;
        let pattern = self.no_receipt_types.matching(event_type)?;
        Some(format!(
            "no receipt needed: event type `{event_type}` matches `{pattern}` in no_receipt_types; a 2xx confirms it"
        ))
    }
}

/// A source's ingest rate limit: `per_second` on average, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IngestLimit {
    pub per_second: u32,
    pub burst: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptKeyConfig {
    pub id: String,
    pub public_key: String,
    #[serde(default)]
    pub revoked: bool,
}

// ---- the file as written ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    database: RawDatabase,
    #[serde(default)]
    delivery: RawDelivery,
    #[serde(default)]
    admin: RawAdmin,
    #[serde(default)]
    console: RawConsole,
    #[serde(default)]
    telemetry: RawTelemetry,
    #[serde(default)]
    sources: Vec<RawSource>,
    #[serde(default)]
    retention: RawRetention,
}

#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct RawRetention {
    payloads: Option<String>,
    events: Option<String>,
    unsettled: Option<String>,
    run_every: Option<String>,
    archive_dir: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTelemetry {
    otlp_endpoint: Option<String>,
    service_name: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConsole {
    session_idle: Option<String>,
    secure_cookie: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    #[serde(default = "default_listen")]
    listen: SocketAddr,
    admin_listen: Option<SocketAddr>,
    max_connections: Option<u64>,
    #[serde(default = "default_max_body")]
    max_body_bytes: usize,
}

impl Default for RawServer {
    fn default() -> Self {
        Self { listen: default_listen(), admin_listen: None, max_connections: None, max_body_bytes: default_max_body() }
    }
}

/// Connections each listener keeps open by default.
const DEFAULT_MAX_CONNECTIONS: usize = 4096;

fn default_listen() -> SocketAddr {
    "127.0.0.1:8080".parse().expect("valid address")
}

fn default_max_body() -> usize {
    1024 * 1024
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDatabase {
    url: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDelivery {
    poll_interval: Option<String>,
    lease: Option<String>,
    timeout: Option<String>,
    max_in_flight: Option<u64>,
    jitter: Option<f64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    token: Option<String>,
    token_env: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    name: String,
    verify: RawVerify,
    forward_to: String,
    signing_secret: Option<String>,
    signing_secret_env: Option<String>,
    #[serde(default)]
    receipt_keys: Vec<ReceiptKeyConfig>,
    retry_ladder: Option<Vec<String>>,
    max_attempts: Option<u32>,
    receipt_sla: Option<String>,
    dedup: Option<RawExtract>,
    event_type: Option<RawExtract>,
    max_in_flight: Option<u64>,
    ingest_limit: Option<RawIngestLimit>,
    body_dedup_window: Option<String>,
    status_url: Option<String>,
    status_timeout: Option<String>,
    #[serde(default)]
    no_receipt_types: Vec<String>,
    retention: Option<RawRetention>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIngestLimit {
    per_second: u64,
    burst: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVerify {
    kind: String,
    secret: Option<String>,
    secret_env: Option<String>,
    /// `standard`: ed25519 public keys (base64) for `v1a`.
    #[serde(default)]
    public_keys: Vec<String>,
    /// `hmac`: the header carrying the signature.
    header: Option<String>,
    /// `hmac`: `hex` (default) or `base64`.
    encoding: Option<String>,
    /// `hmac`: a prefix before the signature, e.g. `sha256=`.
    prefix: Option<String>,
    tolerance: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExtract {
    header: Option<String>,
    json_pointer: Option<String>,
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        Self::parse(&text, &|name| std::env::var(name).ok())
    }

    /// Parses config text; `env` resolves `*_env` names (injectable for tests).
    pub fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text)?;
        let retention = resolve_retention(&raw.retention, &Retention::default(), "retention")?;
        let mut names = HashSet::new();
        let mut sources = Vec::with_capacity(raw.sources.len());
        for s in raw.sources {
            if !names.insert(s.name.clone()) {
                return Err(ConfigError::Invalid(format!("source `{}` is declared twice", s.name)));
            }
            sources.push(resolve_source(s, &retention, env)?);
        }
        let admin_token = match env("HOOKWARDEN_ADMIN_TOKEN").filter(|t| !t.is_empty()) {
            Some(token) => Some(Secret(token)),
            None => secret_from(raw.admin.token, raw.admin.token_env, env)
                .map_err(|m| ConfigError::Invalid(format!("[admin]: {m}")))?
                .map(Secret),
        };
        let d = raw.delivery;
        let defaults = DeliveryConfig::default();
        let delivery = DeliveryConfig {
            poll_interval: opt_duration(d.poll_interval, "delivery.poll_interval", bounds::POLL_INTERVAL)?
                .unwrap_or(defaults.poll_interval),
            lease: opt_duration(d.lease, "delivery.lease", bounds::LEASE)?.unwrap_or(defaults.lease),
            timeout: opt_duration(d.timeout, "delivery.timeout", bounds::TIMEOUT)?.unwrap_or(defaults.timeout),
            max_in_flight: count(d.max_in_flight, "delivery.max_in_flight")?.unwrap_or(defaults.max_in_flight),
            jitter: d.jitter.unwrap_or(defaults.jitter),
        };
        if !(0.0..1.0).contains(&delivery.jitter) {
            return Err(ConfigError::Invalid("delivery.jitter must be in [0, 1)".into()));
        }
        let url = &raw.database.url;
        if !(url.starts_with("sqlite:") || url.starts_with("postgres:") || url.starts_with("postgresql:")) {
            return Err(ConfigError::Invalid(format!(
                "database.url `{}` is neither sqlite:… (e.g. sqlite://hookwarden.db) nor postgres://…",
                if url.contains('@') { "<withheld: it holds credentials>" } else { url }
            )));
        }
        if raw.server.admin_listen == Some(raw.server.listen) {
            return Err(ConfigError::Invalid("server.admin_listen must differ from server.listen".into()));
        }
        if delivery.lease < delivery.timeout + LEASE_MARGIN {
            return Err(ConfigError::Invalid(format!(
                "delivery.lease ({}) must exceed delivery.timeout ({}) by at least {}: a delivery is leased to one \
                 gateway while it is out, and the lease must outlast the forward and the write of its result, or \
                 another gateway may send the same attempt again",
                humantime::format_duration(delivery.lease),
                humantime::format_duration(delivery.timeout),
                humantime::format_duration(LEASE_MARGIN)
            )));
        }
        Ok(Self {
            listen: raw.server.listen,
            admin_listen: raw.server.admin_listen,
            max_connections: count(raw.server.max_connections, "server.max_connections")?
                .unwrap_or(DEFAULT_MAX_CONNECTIONS),
            max_body_bytes: raw.server.max_body_bytes,
            database_url: raw.database.url,
            delivery,
            sources,
            admin_token,
            retention,
            console: ConsoleConfig {
                session_idle: opt_duration(raw.console.session_idle, "console.session_idle", bounds::SESSION_IDLE)?
                    .unwrap_or(ConsoleConfig::default().session_idle),
                secure_cookie: raw.console.secure_cookie.unwrap_or(false),
            },
            telemetry: telemetry(raw.telemetry)?,
        })
    }

    pub fn source(&self, name: &str) -> Option<&SourceConfig> {
        self.sources.iter().find(|s| s.name == name)
    }
}

fn telemetry(raw: RawTelemetry) -> Result<TelemetryConfig, ConfigError> {
    let otlp_endpoint = match raw.otlp_endpoint.filter(|e| !e.trim().is_empty()) {
        None => None,
        Some(text) => {
            let url = reqwest::Url::parse(text.trim())
                .map_err(|e| ConfigError::Invalid(format!("telemetry.otlp_endpoint `{text}`: {e}")))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(ConfigError::Invalid(format!(
                    "telemetry.otlp_endpoint `{text}`: OTLP/HTTP needs an http or https URL"
                )));
            }
            Some(url)
        }
    };
    let service_name = match raw.service_name {
        None => TelemetryConfig::default().service_name,
        Some(name) if name.trim().is_empty() => {
            return Err(ConfigError::Invalid("telemetry.service_name must not be empty".into()));
        }
        Some(name) => name.trim().to_string(),
    };
    Ok(TelemetryConfig { otlp_endpoint, service_name })
}

/// The range each duration setting must fall in: past these a value is a typo (`"60000s"`
/// meant as milliseconds), and the bounds keep every sum with "now" far from overflowing.
pub mod bounds {
    use std::time::Duration;

    const DAY: u64 = 86_400;
    pub const POLL_INTERVAL: (Duration, Duration) = (Duration::from_millis(1), Duration::from_secs(3600));
    pub const LEASE: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(DAY));
    pub const TIMEOUT: (Duration, Duration) = (Duration::from_millis(1), Duration::from_secs(3600));
    pub const RETRY_RUNG: (Duration, Duration) = (Duration::ZERO, Duration::from_secs(30 * DAY));
    pub const RECEIPT_SLA: (Duration, Duration) = (Duration::ZERO, Duration::from_secs(365 * DAY));
    pub const TOLERANCE: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(30 * DAY));
    pub const BODY_DEDUP_WINDOW: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(30 * DAY));
    /// One status probe: a replay waits for it before a batch, so minutes would be a stall.
    pub const STATUS_TIMEOUT: (Duration, Duration) = (Duration::from_millis(1), Duration::from_secs(300));
    /// `retention.payloads`, `events`, `unsettled`: a second (tests) to ten years.
    pub const RETENTION: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(3650 * DAY));
    pub const RUN_EVERY: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(DAY));
    pub const SESSION_IDLE: (Duration, Duration) = (Duration::from_secs(60), Duration::from_secs(30 * DAY));
    /// Forwards in flight (overall or per source), ingests per second, open connections.
    pub const COUNT: (u64, u64) = (1, 1_000_000);
}

/// A duration setting: humantime text (`500ms`, `2m`, `1h 30m`) within `range`.
fn parse_duration(text: &str, what: &str, range: (Duration, Duration)) -> Result<Duration, ConfigError> {
    let parsed = humantime::parse_duration(text.trim())
        .map_err(|e| ConfigError::Invalid(format!("{what}: `{text}` is not a duration ({e})")))?;
    let (min, max) = range;
    if parsed < min || parsed > max {
        return Err(ConfigError::Invalid(format!(
            "{what}: `{text}` is outside {} to {}",
            humantime::format_duration(min),
            humantime::format_duration(max)
        )));
    }
    Ok(parsed)
}

fn opt_duration(
    text: Option<String>,
    what: &str,
    range: (Duration, Duration),
) -> Result<Option<Duration>, ConfigError> {
    text.map(|t| parse_duration(&t, what, range)).transpose()
}

/// A count setting within [`bounds::COUNT`].
fn count(value: Option<u64>, what: &str) -> Result<Option<usize>, ConfigError> {
    match value {
        None => Ok(None),
        Some(n) if (bounds::COUNT.0..=bounds::COUNT.1).contains(&n) => Ok(Some(n as usize)),
        Some(n) => {
            Err(ConfigError::Invalid(format!("{what}: {n} is outside {} to {}", bounds::COUNT.0, bounds::COUNT.1)))
        }
    }
}

/// Inline or from the environment; naming both, or an unset variable, is an error.
fn secret_from(
    inline: Option<String>,
    env_name: Option<String>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<String>, String> {
    match (inline, env_name) {
        (Some(_), Some(_)) => Err("give the secret inline or as *_env, not both".into()),
        (Some(v), None) => Ok(Some(v)),
        (None, Some(name)) => env(&name)
            .filter(|v| !v.is_empty())
            .map(Some)
            .ok_or_else(|| format!("environment variable {name} is not set")),
        (None, None) => Ok(None),
    }
}

/// `text` as an http(s) URL, the form every forward destination takes (a source's
/// `forward_to`, a replay's `to`); the error names the text.
pub fn http_url(text: &str) -> Result<reqwest::Url, String> {
    if !(text.starts_with("http://") || text.starts_with("https://")) {
        return Err(format!("`{text}` is not an http(s) URL"));
    }
    reqwest::Url::parse(text).map_err(|e| format!("`{text}` is not a valid URL: {e}"))
}

/// `raw` over `base`, each value checked against its range; `what` names the table in errors.
fn resolve_retention(raw: &RawRetention, base: &Retention, what: &str) -> Result<Retention, ConfigError> {
    let age = |text: &Option<String>, name: &str, default: Duration| {
        opt_duration(text.clone(), &format!("{what}.{name}"), bounds::RETENTION).map(|d| d.unwrap_or(default))
    };
    let archive_dir = match &raw.archive_dir {
        Some(dir) if dir.trim().is_empty() => {
            return Err(ConfigError::Invalid(format!("{what}.archive_dir: give a directory")));
        }
        Some(dir) => Some(std::path::PathBuf::from(dir)),
        None => base.archive_dir.clone(),
    };
    Ok(Retention {
        payloads: age(&raw.payloads, "payloads", base.payloads)?,
        events: age(&raw.events, "events", base.events)?,
        unsettled: age(&raw.unsettled, "unsettled", base.unsettled)?,
        run_every: opt_duration(raw.run_every.clone(), &format!("{what}.run_every"), bounds::RUN_EVERY)?
            .unwrap_or(base.run_every),
        archive_dir,
    })
}

/// Refuses a retention whose dedup keys would go before the source's provider may still send
/// the same event again (or before its `body_dedup_window` ends): the late copy would be
/// taken as new and forwarded a second time.
fn check_dedup_outlives_redelivery(
    retention: &Retention,
    kind: &str,
    body_dedup_window: Option<Duration>,
) -> Result<(), String> {
    let lifetime = retention.dedup_lifetime();
    let which = if retention.events <= retention.unsettled { "events" } else { "unsettled" };
    let show = |d: Duration| humantime::format_duration(d).to_string();
    if let Some((window, why)) = redelivery_window(kind)
        && lifetime < window
    {
        return Err(format!(
            "retention.{which} ({}) ends inside the `{kind}` provider's redelivery window ({}: {why}); an event's \
             dedup key goes with its row, so a copy sent after that would be stored and forwarded again as a new \
             event. Keep retention.events and retention.unsettled at least {}",
            show(lifetime),
            show(window),
            show(window)
        ));
    }
    if let Some(window) = body_dedup_window
        && lifetime < window
    {
        return Err(format!(
            "retention.{which} ({}) is shorter than body_dedup_window ({}): a body seen within the window must \
             still find the event it repeats",
            show(lifetime),
            show(window)
        ));
    }
    Ok(())
}

fn resolve_source(
    s: RawSource,
    retention: &Retention,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<SourceConfig, ConfigError> {
    let name = s.name.clone();
    let err = |message: String| ConfigError::Source { source_name: name.clone(), message };
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(err("name must be letters, digits, `-` or `_`".into()));
    }
    let verifier = resolve_verifier(s.verify, env).map_err(&err)?;
    let signing_text = secret_from(s.signing_secret, s.signing_secret_env, env)
        .map_err(&err)?
        .ok_or_else(|| err("signing_secret (the gateway's whsec_ secret) is required".into()))?;
    let signing_secret = WebhookSecret::parse(&signing_text).map_err(|e| err(format!("signing_secret: {e}")))?;
    let forward_to = s.forward_to;
    let forward_url = http_url(&forward_to).map_err(|e| err(format!("forward_to {e}")))?;
    let rungs = match s.retry_ladder {
        Some(rungs) => rungs
            .iter()
            .map(|r| parse_duration(r, "retry_ladder", bounds::RETRY_RUNG))
            .collect::<Result<Vec<_>, _>>()?,
        None => RetryLadder::default_rungs(),
    };
    let max_attempts = s.max_attempts.unwrap_or(rungs.len() as u32 + 1);
    if max_attempts == 0 {
        return Err(err("max_attempts must be at least 1".into()));
    }
    let ladder = RetryLadder::new(rungs, max_attempts);
    let mut key_ids = HashSet::new();
    for key in &s.receipt_keys {
        if !key_ids.insert(key.id.clone()) {
            return Err(err(format!("receipt key `{}` is listed twice", key.id)));
        }
        if receipts_sdk::webhook::decode_public_key(&key.public_key).is_none() {
            return Err(err(format!("receipt key `{}` is not a base64 ed25519 public key", key.id)));
        }
    }
    let ingest_limit = match s.ingest_limit {
        None => None,
        Some(limit) => {
            let per_second =
                count(Some(limit.per_second), "ingest_limit.per_second").map_err(|e| err(e.to_string()))?;
            let burst = count(limit.burst, "ingest_limit.burst").map_err(|e| err(e.to_string()))?;
            let per_second = per_second.expect("given") as u32;
            Some(IngestLimit { per_second, burst: burst.map_or(per_second, |b| b as u32) })
        }
    };
    let body_dedup_window = opt_duration(s.body_dedup_window, "body_dedup_window", bounds::BODY_DEDUP_WINDOW)
        .map_err(|e| err(e.to_string()))?;
    if body_dedup_window.is_some() && !verifier.signs_no_timestamp() {
        return Err(err(format!(
            "body_dedup_window is for kinds whose provider signs no timestamp (github, hmac, none), not `{}`",
            verifier.kind()
        )));
    }
    let retention = match &s.retention {
        Some(raw) => resolve_retention(raw, retention, "retention").map_err(|e| err(e.to_string()))?,
        None => retention.clone(),
    };
    check_dedup_outlives_redelivery(&retention, verifier.kind(), body_dedup_window).map_err(&err)?;
    let status_url = s.status_url.as_deref().map(http_url).transpose().map_err(|e| err(format!("status_url {e}")))?;
    let status_timeout = opt_duration(s.status_timeout, "status_timeout", bounds::STATUS_TIMEOUT)
        .map_err(|e| err(e.to_string()))?
        .unwrap_or(DEFAULT_STATUS_TIMEOUT);
    if status_url.is_some() && s.receipt_keys.iter().all(|k| k.revoked) {
        return Err(
            err("status_url needs a receipt key that is not revoked: a probe is answered with receipts".into()),
        );
    }
    let no_receipt_types = NoReceiptTypes::parse(s.no_receipt_types).map_err(&err)?;
    Ok(SourceConfig {
        retention,
        status_url,
        status_timeout,
        no_receipt_types,
        ingest_limit,
        body_dedup_window,
        verifier,
        forward_to,
        forward_url,
        signing_secret,
        receipt_keys: s.receipt_keys,
        ladder,
        receipt_sla: opt_duration(s.receipt_sla, "receipt_sla", bounds::RECEIPT_SLA)?
            .unwrap_or(Duration::from_secs(300)),
        dedup: s.dedup.map(resolve_extract).transpose().map_err(&err)?,
        event_type: s.event_type.map(resolve_extract).transpose().map_err(&err)?,
        max_in_flight: count(s.max_in_flight, "max_in_flight").map_err(|e| err(e.to_string()))?.unwrap_or(64),
        name: s.name,
    })
}

fn resolve_extract(raw: RawExtract) -> Result<Extract, String> {
    match (raw.header, raw.json_pointer) {
        (Some(h), None) => Ok(Extract::Header(h.to_ascii_lowercase())),
        (None, Some(p)) if p.is_empty() || p.starts_with('/') => Ok(Extract::JsonPointer(p)),
        (None, Some(p)) => Err(format!("json_pointer `{p}` must start with `/`")),
        _ => Err("give exactly one of header or json_pointer".into()),
    }
}

fn resolve_verifier(v: RawVerify, env: &dyn Fn(&str) -> Option<String>) -> Result<Verifier, String> {
    let tolerance = opt_duration(v.tolerance, "verify.tolerance", bounds::TOLERANCE)
        .map_err(|e| e.to_string())?
        .unwrap_or(Duration::from_secs(300));
    let secret = secret_from(v.secret, v.secret_env, env)?;
    let need_secret = |kind: &str| secret.clone().ok_or_else(|| format!("verify kind `{kind}` needs a secret"));
    Ok(match v.kind.as_str() {
        "stripe" => Verifier::Stripe { secret: need_secret("stripe")?.into_bytes(), tolerance },
        "github" => Verifier::Github { secret: need_secret("github")?.into_bytes() },
        "standard" => {
            let secret = secret.as_deref().map(WebhookSecret::parse).transpose().map_err(|e| e.to_string())?;
            let public_keys = v
                .public_keys
                .iter()
                .map(|k| {
                    receipts_sdk::webhook::decode_public_key(k).ok_or_else(|| format!("public key `{k}` is invalid"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            if secret.is_none() && public_keys.is_empty() {
                return Err("verify kind `standard` needs a secret or public_keys".into());
            }
            Verifier::Standard(receipts_sdk::webhook::WebhookVerifier {
                secret,
                public_keys,
                tolerance_secs: tolerance.as_secs() as i64,
            })
        }
        "hmac" => Verifier::Hmac {
            secret: need_secret("hmac")?.into_bytes(),
            header: v.header.ok_or("verify kind `hmac` needs a header")?.to_ascii_lowercase(),
            encoding: match v.encoding.as_deref() {
                None | Some("hex") => HmacEncoding::Hex,
                Some("base64") => HmacEncoding::Base64,
                Some(other) => return Err(format!("encoding `{other}` is not hex or base64")),
            },
            prefix: v.prefix.unwrap_or_default(),
        },
        "none" => Verifier::None,
        other => {
            return Err(format!("verify kind `{other}` is not one of stripe, github, standard, hmac, none"));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[database]
url = "sqlite://x.db"
[[sources]]
name = "stripe"
verify = { kind = "stripe", secret_env = "STRIPE_SECRET" }
forward_to = "http://127.0.0.1:3000/hook"
signing_secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
"#;

    fn check(extra: &str, env: &[(&str, &str)]) -> Result<Config, String> {
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let lookup = move |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        Config::parse(&format!("{BASE}{extra}"), &lookup).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_env_secrets() {
        let config = check("", &[("STRIPE_SECRET", "sk"), ("HOOKWARDEN_ADMIN_TOKEN", "tok")]).unwrap();
        let source = config.source("stripe").unwrap();
        assert_eq!(source.ladder.max_attempts(), 8);
        assert_eq!(config.admin_token, Some(Secret("tok".into())));
        assert_eq!(format!("{:?}", config.admin_token), "Some(<redacted>)");
        assert_eq!((config.admin_listen, config.max_connections), (None, DEFAULT_MAX_CONNECTIONS));
        assert_eq!((source.ingest_limit, source.body_dedup_window), (None, None));
        let limited = check("ingest_limit = { per_second = 20 }\n", &[("STRIPE_SECRET", "s")]).unwrap();
        assert_eq!(limited.sources[0].ingest_limit, Some(IngestLimit { per_second: 20, burst: 20 }));
    }

    #[test]
    fn no_receipt_types_match_exactly_or_by_glob() {
        let types = NoReceiptTypes::parse(vec!["ping".into(), "*.updated".into(), "invoice.*.sent".into()]).unwrap();
        assert_eq!(types.matching("ping"), Some("ping"));
        assert_eq!(types.matching("pings"), None);
        assert_eq!(types.matching("customer.updated"), Some("*.updated"));
        assert_eq!(types.matching(".updated"), Some("*.updated"));
        assert_eq!(types.matching("customer.updated.v2"), None);
        assert_eq!(types.matching("invoice.final.sent"), Some("invoice.*.sent"));
        assert_eq!(types.matching("invoice.sent"), None, "the dots around `*` are in the pattern");
        assert_eq!(NoReceiptTypes::parse(vec!["*".into()]).unwrap().matching("anything"), Some("*"));
        assert!(glob_matches("a*b*c", "axxbyyc") && !glob_matches("a*b*c", "acb") && !glob_matches("ab*ba", "aba"));
        let config = check("no_receipt_types = [\"ping\", \"*.updated\"]\n", &[("STRIPE_SECRET", "s")]).unwrap();
        assert_eq!(config.sources[0].no_receipt_types.matching("charge.updated"), Some("*.updated"));
        let err = check("no_receipt_types = [\"\"]\n", &[("STRIPE_SECRET", "s")]).unwrap_err();
        assert!(err.contains("no_receipt_types: `` is not an event type"), "{err}");
    }

    #[test]
    fn retention_defaults_overrides_and_the_redelivery_window() {
        let env = [("STRIPE_SECRET", "s")];
        let config = check("", &env).unwrap();
        assert_eq!(config.sources[0].retention, Retention::default());
        assert_eq!(config.retention.events, Duration::from_secs(90 * 86_400));
        let global = "[retention]\npayloads = \"10d\"\nevents = \"20d\"\nrun_every = \"1m\"\n";
        let over = "retention = { payloads = \"1d\", archive_dir = \"/tmp/a\" }\n";
        let config = check(&format!("{over}{global}"), &env).unwrap();
        let r = &config.sources[0].retention;
        assert_eq!((r.payloads, r.events), (Duration::from_secs(86_400), Duration::from_secs(20 * 86_400)));
        assert_eq!((r.run_every, r.archive_dir.as_deref()), (Duration::from_secs(60), Some(Path::new("/tmp/a"))));
        assert_eq!(config.retention.payloads, Duration::from_secs(10 * 86_400));
        // Stripe retries for up to 3 days: a dedup key must outlive that.
        let short = check("retention = { events = \"2d\" }\n", &env).unwrap_err();
        assert!(
            short.contains("retention.events (2days) ends inside the `stripe` provider's redelivery window (3days"),
            "{short}"
        );
        let gaps = check("[retention]\nunsettled = \"1d\"\n", &env).unwrap_err();
        assert!(gaps.contains("retention.unsettled (1day)"), "{gaps}");
        assert!(check("retention = { events = \"3d\", payloads = \"1h\" }\n", &env).is_ok());
        // No provider window for `none`; the body dedup window still bounds it from below.
        let none = BASE.replace("kind = \"stripe\", secret_env = \"STRIPE_SECRET\"", "kind = \"none\"");
        let parse = |extra: &str| Config::parse(&format!("{none}{extra}"), &|_| None).map_err(|e| e.to_string());
        assert!(parse("retention = { events = \"2s\", unsettled = \"2s\" }\n").is_ok());
        let err = parse("body_dedup_window = \"1h\"\nretention = { events = \"10m\" }\n").unwrap_err();
        assert!(err.contains("shorter than body_dedup_window (1h)"), "{err}");
        let err = parse("[retention]\nrun_every = \"10ms\"\n").unwrap_err();
        assert!(err.contains("retention.run_every: `10ms` is outside 100ms to 1day"), "{err}");
        let err = parse("retention = { keep = \"1d\" }\n").unwrap_err();
        assert!(err.contains("keep"), "{err}");
    }

    #[test]
    fn the_example_config_is_valid() {
        let config = Config::parse(include_str!("../../examples/hookwarden.toml"), &|_| None).unwrap();
        assert_eq!(config.retention, Retention::default());
    }

    #[test]
    fn refusals_name_the_problem() {
        assert!(check("", &[]).unwrap_err().contains("STRIPE_SECRET is not set"));
        let dup = "[[sources]]\nname = \"stripe\"\nverify = { kind = \"none\" }\nforward_to = \"http://x\"\nsigning_secret = \"whsec_AAAA\"\n";
        assert!(check(dup, &[("STRIPE_SECRET", "s")]).unwrap_err().contains("declared twice"));
        let bad_kind = BASE.replace("kind = \"stripe\"", "kind = \"paypal\"");
        let err = Config::parse(&bad_kind, &|_| Some("s".into())).unwrap_err().to_string();
        assert!(err.contains("paypal"), "{err}");
        let stripe_window = check("body_dedup_window = \"1h\"\n", &[("STRIPE_SECRET", "s")]).unwrap_err();
        assert!(stripe_window.contains("signs no timestamp"), "{stripe_window}");
        let same = format!("[server]\nlisten = \"127.0.0.1:9\"\nadmin_listen = \"127.0.0.1:9\"\n{BASE}");
        let err = Config::parse(&same, &|_| Some("s".into())).unwrap_err().to_string();
        assert!(err.contains("admin_listen"), "{err}");
        let limit = check("ingest_limit = { per_second = 0 }\n", &[("STRIPE_SECRET", "s")]).unwrap_err();
        assert!(limit.contains("ingest_limit.per_second"), "{limit}");
        let lease = "[delivery]\nlease = \"30s\"\ntimeout = \"30s\"\n";
        let err = check(lease, &[("STRIPE_SECRET", "s")]).unwrap_err();
        assert!(err.contains("delivery.lease (30s) must exceed delivery.timeout (30s) by at least 1s"), "{err}");
        assert!(check("[delivery]\nlease = \"31s\"\ntimeout = \"30s\"\n", &[("STRIPE_SECRET", "s")]).is_ok());
        let key = "receipt_keys = [{ id = \"k\", public_key = \"ebVWLo/mVPlAeLES6KmLp5AfhTrmlb7X4OORC60ElmQ=\" }]\n";
        let probed = check(
            &format!("{key}status_url = \"http://127.0.0.1:3000/status\"\nstatus_timeout = \"2s\"\n"),
            &[("STRIPE_SECRET", "s")],
        )
        .unwrap();
        assert_eq!(probed.sources[0].status_url.as_ref().map(|u| u.as_str()), Some("http://127.0.0.1:3000/status"));
        assert_eq!(probed.sources[0].status_timeout, Duration::from_secs(2));
        assert_eq!(check("", &[("STRIPE_SECRET", "s")]).unwrap().sources[0].status_timeout, DEFAULT_STATUS_TIMEOUT);
        let err = check(&format!("{key}status_url = \"ftp://x/status\"\n"), &[("STRIPE_SECRET", "s")]).unwrap_err();
        assert!(err.contains("status_url `ftp://x/status` is not an http(s) URL"), "{err}");
        let err =
            check(&format!("{key}status_url = \"http://x/s\"\nstatus_timeout = \"1h\"\n"), &[("STRIPE_SECRET", "s")])
                .unwrap_err();
        assert!(err.contains("status_timeout: `1h` is outside"), "{err}");
        let err = check("status_url = \"http://x/s\"\n", &[("STRIPE_SECRET", "s")]).unwrap_err();
        assert!(err.contains("status_url needs a receipt key"), "{err}");
        let bad_url = BASE.replace("http://127.0.0.1:3000/hook", "http://127.0.0.1:99999/hook");
        let err = Config::parse(&bad_url, &|_| Some("s".into())).unwrap_err().to_string();
        assert!(err.contains("not a valid URL"), "{err}");
    }

    #[test]
    fn telemetry_is_off_unless_an_endpoint_is_given() {
        let env = [("STRIPE_SECRET", "s")];
        let off = check("", &env).unwrap().telemetry;
        assert_eq!((off.otlp_endpoint, off.service_name.as_str()), (None, "hookwarden"));
        let on = check("[telemetry]\notlp_endpoint = \"http://collector:4318\"\nservice_name = \"edge-gw\"\n", &env)
            .unwrap()
            .telemetry;
        assert_eq!(on.otlp_endpoint.map(|u| u.to_string()).as_deref(), Some("http://collector:4318/"));
        assert_eq!(on.service_name, "edge-gw");
        for (bad, says) in [
            ("otlp_endpoint = \"collector:4318\"", "otlp_endpoint"),
            ("otlp_endpoint = \"grpc://collector:4317\"", "http or https"),
            ("service_name = \" \"", "service_name"),
            ("otlp = \"http://x\"", "unknown field"),
        ] {
            let err = check(&format!("[telemetry]\n{bad}\n"), &env).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
