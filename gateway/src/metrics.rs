//! The Prometheus recorder, installed once per process (tests run several gateways in one).
//!
//! Histograms are bucketed, and a thread runs the recorder's upkeep: without it, every
//! recorded sample stays queued in memory until `/metrics` is scraped, so a gateway nobody
//! scrapes grows by each delivery attempt (the backlog benchmark found this).

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

const LATENCY_SECONDS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
const BATCH_SIZES: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

pub fn handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full("hookwarden_delivery_latency_seconds".into()), LATENCY_SECONDS)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full("hookwarden_ingest_batch_size".into()), BATCH_SIZES)
                })
                .expect("bucket lists are not empty")
                .build_recorder();
            let handle = recorder.handle();
            let _ = metrics::set_global_recorder(recorder);
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("hw-metrics".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(UPKEEP_EVERY);
                        upkeep.run_upkeep();
                    }
                })
                .expect("spawn the metrics upkeep thread");
            handle
        })
        .clone()
}
