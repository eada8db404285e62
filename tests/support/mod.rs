//! The test harness.

pub mod db;
pub mod gateway;
pub mod pg_cluster;
pub mod receiver;
pub mod sign;

use std::future::Future;
use std::time::Duration;

pub use db::TestDb;
pub use gateway::{Gateway, GatewaySpec, SourceSpec, free_port};
pub use receiver::Receiver;

pub const ADMIN_TOKEN: &str = "test-admin-token";

/// An HTTP client (reqwest is built without a default TLS provider; the gateway installs one).
/// It keeps no idle connections: a test that makes the gateway close one (a 413 before the
/// body was read) must not see the next request fail on it.
pub fn client() -> reqwest::Client {
    hookwarden::tls::install_crypto_provider();
    reqwest::Client::builder().pool_max_idle_per_host(0).build().expect("client")
}

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether the backends to run a test on: both, always (PostgreSQL must be there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// Runs the test `$name(kind: Db)` on both backends, as `$name::sqlite` and `$name::postgres`.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                super::$name($crate::support::Db::Sqlite).await;
            }

            #[tokio::test]
            async fn postgres() {
                super::$name($crate::support::Db::Postgres).await;
            }
        }
    )*};
}
pub(crate) use on_both_backends;

/// The value of a counter in a gateway's `/metrics` text, for one label set (`name{labels}`);
/// 0 when it was never counted.
pub async fn metric(gateway: &Gateway, series: &str) -> f64 {
    let text = client().get(gateway.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
    text.lines()
        .find_map(|line| line.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .map(|value| value.trim().parse().expect("a number"))
        .unwrap_or(0.0)
}
