//! Signing requests as providers do, with code independent of the gateway's verifiers.

use hmac::{KeyInit, Mac};

pub fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// The wall clock in unix ms, as the gateway reads it (its `received_at`, `started_at`).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

fn hmac_hex(key: &[u8], parts: &[&[u8]]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    for part in parts {
        mac.update(part);
    }
    hex::encode(mac.finalize().into_bytes())
}

/// `Stripe-Signature` for `body` at time `t`.
pub fn stripe(secret: &str, t: i64, body: &[u8]) -> Vec<(String, String)> {
    let sig = hmac_hex(secret.as_bytes(), &[t.to_string().as_bytes(), b".", body]);
    vec![("stripe-signature".into(), format!("t={t},v1={sig}"))]
}

/// `X-Hub-Signature-256` and a delivery id.
pub fn github(secret: &str, delivery: &str, event: &str, body: &[u8]) -> Vec<(String, String)> {
    vec![
        ("x-hub-signature-256".into(), format!("sha256={}", hmac_hex(secret.as_bytes(), &[body]))),
        ("x-github-delivery".into(), delivery.into()),
        ("x-github-event".into(), event.into()),
    ]
}

/// Standard Webhooks `v1`, signed by the `standardwebhooks` crate.
pub fn standard(secret: &str, msg_id: &str, t: i64, body: &[u8]) -> Vec<(String, String)> {
    let signature = standardwebhooks::Webhook::new(secret).unwrap().sign(msg_id, t, body).unwrap();
    vec![
        ("webhook-id".into(), msg_id.into()),
        ("webhook-timestamp".into(), t.to_string()),
        ("webhook-signature".into(), signature),
    ]
}

/// Standard Webhooks `v1a`: ed25519 over `{id}.{t}.{body}`, signed with ed25519-dalek.
pub fn standard_v1a(key: &ed25519_dalek::SigningKey, msg_id: &str, t: i64, body: &[u8]) -> Vec<(String, String)> {
    use base64::Engine;
    use ed25519_dalek::Signer;
    let mut content = format!("{msg_id}.{t}.").into_bytes();
    content.extend_from_slice(body);
    let sig = base64::engine::general_purpose::STANDARD.encode(key.sign(&content).to_bytes());
    vec![
        ("webhook-id".into(), msg_id.into()),
        ("webhook-timestamp".into(), t.to_string()),
        ("webhook-signature".into(), format!("v1a,{sig}")),
    ]
}

/// A generic HMAC header, hex.
pub fn hmac_header(header: &str, secret: &str, body: &[u8]) -> Vec<(String, String)> {
    vec![(header.into(), hmac_hex(secret.as_bytes(), &[body]))]
}

/// A receipt key from a one-byte seed pattern (tests only).
pub fn receipt_key(id: &str, seed: u8) -> receipts_sdk::receipt::ReceiptKey {
    use base64::Engine;
    receipts_sdk::receipt::ReceiptKey::from_seed_base64(
        id,
        &base64::engine::general_purpose::STANDARD.encode([seed; 32]),
    )
    .unwrap()
}

/// The `receipt_keys = [...]` config line for some keys, each `(key, revoked)`.
pub fn receipt_keys_line(entries: &[(&receipts_sdk::receipt::ReceiptKey, bool)]) -> String {
    let list: Vec<String> = entries
        .iter()
        .map(|(k, revoked)| {
            format!("{{ id = \"{}\", public_key = \"{}\", revoked = {revoked} }}", k.id, k.public_key_base64())
        })
        .collect();
    format!("receipt_keys = [{}]", list.join(", "))
}

/// Headers signed by the provider's own library (`stripe`, `@octokit/webhooks-methods`), run
/// by Node.js from `tests/interop` (`npm ci --prefix tests/interop` installs them).
pub fn by_provider_library(kind: &str, secret: &str, body: &[u8]) -> Vec<(String, String)> {
    use std::io::Write;
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/interop");
    assert!(
        std::path::Path::new(dir).join("node_modules").exists(),
        "the providers' libraries are not installed: run `npm ci --prefix tests/interop`"
    );
    let mut child = std::process::Command::new("node")
        .arg("sign.mjs")
        .arg(kind)
        .arg(secret)
        .current_dir(dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("node is needed for the interop tests");
    child.stdin.take().unwrap().write_all(body).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "sign.mjs failed: {out:?}");
    let headers: std::collections::BTreeMap<String, String> = serde_json::from_slice(&out.stdout).unwrap();
    headers.into_iter().collect()
}
