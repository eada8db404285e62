//! `hookwarden storage`: what the store keeps per source (`GET /v1/storage`), and
//! `hookwarden storage compact`, the offline rewrite of an old SQLite file so the pages
//! retention frees go back to the file system.

use std::path::Path;

use serde_json::Value;

use super::table::Table;
use super::{Api, CliError, print_json};
use crate::config::Config;
use crate::store::{Store, format_bytes};

/// Prints the storage table: one line per source, then the database and the last purge.
pub async fn storage(api: &Api, json_out: bool) -> Result<(), CliError> {
    let report = api.get("/v1/storage").await?;
    if json_out {
        print_json(&report);
        return Ok(());
    }
    let mut table = Table::new(&[
        "SOURCE",
        "EVENTS",
        "PAYLOADS",
        "BYTES",
        "PURGED",
        "OLDEST GAP",
        "RETENTION (payloads/events/unsettled)",
    ]);
    for s in report["sources"].as_array().into_iter().flatten() {
        let r = &s["retention"];
        table.row(vec![
            s["source"].as_str().unwrap_or("").to_string(),
            s["events"].to_string(),
            s["payloads"].to_string(),
            format_bytes(s["payload_bytes"].as_i64().unwrap_or(0)),
            s["payloads_purged"].to_string(),
            s["oldest_unsettled_at"].as_str().unwrap_or("-").to_string(),
            format!(
                "{}/{}/{}",
                r["payloads"].as_str().unwrap_or(""),
                r["events"].as_str().unwrap_or(""),
                r["unsettled"].as_str().unwrap_or("")
            ),
        ]);
    }
    print!("{table}");
    if let Some(db) = report.get("database") {
        let free = db["free_bytes"].as_i64().map(|f| format!(", {} free", format_bytes(f))).unwrap_or_default();
        println!(
            "database: {} {}{free}",
            db["backend"].as_str().unwrap_or(""),
            format_bytes(db["bytes"].as_i64().unwrap_or(0))
        );
        match &report["last_purge"] {
            Value::Null => println!("last purge: none yet on this gateway"),
            last => println!(
                "last purge: {}: {} payloads, {} events, {} body hashes ({} rows)",
                last["at"].as_str().unwrap_or(""),
                last["removed"]["payloads"],
                last["removed"]["events"],
                last["removed"]["body_hashes"],
                last["removed"]["rows"]
            ),
        }
    }
    Ok(())
}

/// Rewrites the SQLite database of the config at `path` with `auto_vacuum = INCREMENTAL`
/// (see `Store::compact`); refused while a gateway runs on it.
pub async fn compact(path: &Path) -> Result<(), CliError> {
    let config = Config::load(path).map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))?;
    if !config.database_url.starts_with("sqlite:") {
        println!("PostgreSQL reuses and returns space by itself (autovacuum): nothing to do");
        return Ok(());
    }
    let store = Store::connect(&config.database_url).await.map_err(|e| CliError::Failed(e.to_string()))?;
    let _sole = store.lock_sole_gateway().map_err(|e| CliError::Failed(e.to_string()))?;
    let before = store.database_storage().await.map_err(|e| CliError::Failed(e.to_string()))?;
    store.compact().await.map_err(|e| CliError::Failed(e.to_string()))?;
    let after = store.database_storage().await.map_err(|e| CliError::Failed(e.to_string()))?;
    let mode = store.auto_vacuum().await.map_err(|e| CliError::Failed(e.to_string()))?;
    store.close().await;
    if mode != Some(2) {
        return Err(CliError::Failed(format!("auto_vacuum is {mode:?} after the rewrite, not incremental (2)")));
    }
    println!(
        "compacted: {} -> {}; auto_vacuum = incremental, so retention's freed pages now go back to the file system",
        format_bytes(before.bytes),
        format_bytes(after.bytes)
    );
    Ok(())
}
