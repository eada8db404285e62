//! The receipt test vector of the top-level README ("Receipts: the wire format"): this crate
//! must reproduce it byte for byte, and accept it, so the documentation cannot drift from
//! the code.

use std::collections::HashMap;

use receipts_sdk::receipt::{HEADER_BODY, Receipt, ReceiptHeaders, ReceiptKey, decode_inline_body};
use receipts_sdk::webhook::{decode_public_key, signed_content};

const LABELS: [&str; 8] = [
    "seed (base64)",
    "public key (base64)",
    "receipt-key",
    "receipt-id",
    "receipt-timestamp",
    "body",
    "signed content",
    "receipt-signature",
];

/// The `label: value` lines of the README's ```text block under the receipts section.
fn vector() -> HashMap<&'static str, String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
    let readme = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    let section = readme
        .split_once("## Receipts: the wire format")
        .map(|(_, rest)| rest)
        .expect("the README has a `## Receipts: the wire format` section");
    let block = section
        .split_once("```text\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .map(|(block, _)| block)
        .expect("the receipts section has a ```text block with the test vector");
    let mut out = HashMap::new();
    for line in block.lines() {
        let label = LABELS
            .iter()
            .find(|label| line.starts_with(&format!("{label}: ")))
            .unwrap_or_else(|| panic!("unexpected line in the test vector: {line:?}"));
        let value = line[label.len() + 2..].to_string();
        assert!(out.insert(*label, value).is_none(), "`{label}` twice in the test vector");
    }
    for label in LABELS {
        assert!(out.contains_key(label), "the test vector lacks `{label}`");
    }
    out
}

#[test]
fn the_readme_vector_is_what_the_sdk_signs_and_accepts() {
    let v = vector();
    let key = ReceiptKey::from_seed_base64(&v["receipt-key"], &v["seed (base64)"]).expect("the seed is a key");
    assert_eq!(key.public_key_base64(), v["public key (base64)"], "public key");

    // The body is exactly how `Receipt` serialises it.
    let receipt = Receipt::parse(v["body"].as_bytes()).expect("the body is a valid receipt");
    assert_eq!(serde_json::to_string(&receipt).unwrap(), v["body"], "body");

    let timestamp: i64 = v["receipt-timestamp"].parse().expect("the timestamp is unix seconds");
    let signed = key.sign_with_id(&receipt, &v["receipt-id"], timestamp);
    assert_eq!(signed.body, v["body"].as_bytes(), "signed body");
    let content = signed_content(&v["receipt-id"], &v["receipt-timestamp"], v["body"].as_bytes());
    assert_eq!(String::from_utf8(content).unwrap(), v["signed content"], "signed content");
    assert_eq!(signed.signature, v["receipt-signature"], "receipt-signature");
    let headers = signed.headers();
    let get = |name: &str| headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str());
    assert_eq!(get("receipt-key"), Some(v["receipt-key"].as_str()));
    assert_eq!(get("receipt-id"), Some(v["receipt-id"].as_str()));
    assert_eq!(get("receipt-timestamp"), Some(v["receipt-timestamp"].as_str()));
    assert_eq!(get("receipt-signature"), Some(v["receipt-signature"].as_str()));
}

#[test]
fn the_readme_vector_verifies_as_the_gateway_checks_it() {
    let v = vector();
    let public = decode_public_key(&v["public key (base64)"]).expect("the public key decodes");
    let lookup: HashMap<&str, &str> = [
        ("receipt-id", v["receipt-id"].as_str()),
        ("receipt-timestamp", v["receipt-timestamp"].as_str()),
        ("receipt-key", v["receipt-key"].as_str()),
        ("receipt-signature", v["receipt-signature"].as_str()),
    ]
    .into();
    let headers = ReceiptHeaders::read(|name| lookup.get(name).copied()).expect("all four headers");
    assert_eq!(headers.verify_signature(v["body"].as_bytes(), &public), Ok(()));
    let timestamp: i64 = v["receipt-timestamp"].parse().unwrap();
    assert_eq!(headers.check_timestamp(timestamp + 300), Ok(()));

    // Any change to the body, the id or the timestamp breaks the signature.
    let tampered = v["body"].replace("order_1001", "order_1002");
    assert!(headers.verify_signature(tampered.as_bytes(), &public).is_err());
    let other_id = ReceiptHeaders { id: "rcp_00000000000000000000000000000000", ..headers };
    assert!(other_id.verify_signature(v["body"].as_bytes(), &public).is_err());
    let other_time = ReceiptHeaders { timestamp: "1767225601", ..headers };
    assert!(other_time.verify_signature(v["body"].as_bytes(), &public).is_err());

    // The inline form carries the same body, base64, in `receipt-body`.
    let key = ReceiptKey::from_seed_base64(&v["receipt-key"], &v["seed (base64)"]).unwrap();
    let receipt = Receipt::parse(v["body"].as_bytes()).unwrap();
    let inline = key.sign_with_id(&receipt, &v["receipt-id"], timestamp).inline_headers();
    let body = inline.iter().find(|(n, _)| *n == HEADER_BODY).map(|(_, b)| b.as_str()).unwrap();
    assert_eq!(decode_inline_body(body).unwrap(), v["body"].as_bytes());
}

/// `receipts-sdk/test-vectors.json` (which the Python and TypeScript SDKs' tests read) holds
/// the same receipt vector as the README, and this crate reproduces its forward signature.
#[test]
fn the_shared_vector_file_matches_the_readme_and_the_sdk() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/test-vectors.json");
    let file: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let r = &file["receipt"];
    let v = vector();
    let text = |field: &str| r[field].as_str().unwrap_or_else(|| panic!("receipt.{field}")).to_string();
    assert_eq!(text("seed"), v["seed (base64)"]);
    assert_eq!(text("public_key"), v["public key (base64)"]);
    assert_eq!(text("key_id"), v["receipt-key"]);
    assert_eq!(text("receipt_id"), v["receipt-id"]);
    assert_eq!(r["timestamp"].as_i64().unwrap().to_string(), v["receipt-timestamp"]);
    assert_eq!(text("body"), v["body"]);
    assert_eq!(text("signed_content"), v["signed content"]);
    assert_eq!(text("signature"), v["receipt-signature"]);
    let key = ReceiptKey::from_seed_base64(&v["receipt-key"], &v["seed (base64)"]).unwrap();
    let receipt = Receipt::parse(v["body"].as_bytes()).unwrap();
    let inline = key.sign_with_id(&receipt, &v["receipt-id"], r["timestamp"].as_i64().unwrap()).inline_headers();
    assert_eq!(inline.iter().find(|(n, _)| *n == HEADER_BODY).unwrap().1, text("inline_body"));

    let f = &file["forward"];
    let secret = receipts_sdk::webhook::WebhookSecret::parse(f["secret"].as_str().unwrap()).unwrap();
    let (id, ts, body) =
        (f["webhook_id"].as_str().unwrap(), f["timestamp"].as_i64().unwrap(), f["body"].as_str().unwrap());
    assert_eq!(String::from_utf8(signed_content(id, &ts.to_string(), body.as_bytes())).unwrap(), f["signed_content"]);
    assert_eq!(secret.sign(id, ts, body.as_bytes()), f["signature"].as_str().unwrap());
}
