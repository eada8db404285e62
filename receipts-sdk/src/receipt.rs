//! The receipt format: the one definition the gateway and every Rust handler share.
//!
//! A receipt is a small JSON document signed with the handler's ed25519 key, the way
//! Standard Webhooks signs `v1a` messages: the signature covers `{receipt-id}.{receipt-timestamp}.{body}`
//! and travels in four headers, `receipt-id`, `receipt-timestamp`, `receipt-key` and
//! `receipt-signature: v1a,<base64>`. On a handler's 2xx response the same receipt may ride
//! inline, with the JSON in a fifth header, `receipt-body` (base64).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::webhook::{decode_ed25519_signature, signed_content};

pub const HEADER_ID: &str = "receipt-id";
pub const HEADER_TIMESTAMP: &str = "receipt-timestamp";
pub const HEADER_KEY: &str = "receipt-key";
pub const HEADER_SIGNATURE: &str = "receipt-signature";
pub const HEADER_BODY: &str = "receipt-body";

/// How far a receipt's timestamp may be from the gateway's clock.
pub const TOLERANCE_SECS: i64 = 5 * 60;

/// Longest `error_code`, `target_record_id` and ids; longest `detail`.
const MAX_CODE: usize = 200;
const MAX_DETAIL: usize = 2000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReceiptStatus {
    /// The handler committed the event's effects.
    Applied,
    /// The handler could not apply it (with an error code).
    Failed,
}

impl ReceiptStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ReceiptStatus::Applied => "applied",
            ReceiptStatus::Failed => "failed",
        }
    }
}

/// What a handler states about one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    pub event_id: String,
    pub status: ReceiptStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_record_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Receipt {
    pub fn applied(event_id: impl Into<String>) -> Self {
        Self {
            event_id: event_id.into(),
            status: ReceiptStatus::Applied,
            target_record_id: None,
            error_code: None,
            detail: None,
        }
    }

    pub fn failed(event_id: impl Into<String>, error_code: impl Into<String>, detail: Option<String>) -> Self {
        Self {
            event_id: event_id.into(),
            status: ReceiptStatus::Failed,
            target_record_id: None,
            error_code: Some(error_code.into()),
            detail,
        }
    }

    pub fn with_target_record(mut self, id: impl Into<String>) -> Self {
        self.target_record_id = Some(id.into());
        self
    }

    /// Parses and checks a receipt body: known fields only, `failed` carries an error code.
    pub fn parse(body: &[u8]) -> Result<Self, ReceiptError> {
        let receipt: Receipt = serde_json::from_slice(body).map_err(|e| ReceiptError::Malformed(e.to_string()))?;
        receipt.check()?;
        Ok(receipt)
    }

    fn check(&self) -> Result<(), ReceiptError> {
        let bad = |m: &str| Err(ReceiptError::Malformed(m.to_string()));
        if self.event_id.is_empty() || self.event_id.len() > MAX_CODE {
            return bad("`event_id` must be a non-empty id");
        }
        match (self.status, &self.error_code) {
            (ReceiptStatus::Failed, None) => return bad("a `failed` receipt needs an `error_code`"),
            (ReceiptStatus::Applied, Some(_)) => return bad("an `applied` receipt carries no `error_code`"),
            _ => {}
        }
        if self.error_code.as_ref().is_some_and(|c| c.is_empty() || c.len() > MAX_CODE)
            || self.target_record_id.as_ref().is_some_and(|t| t.len() > MAX_CODE)
            || self.detail.as_ref().is_some_and(|d| d.len() > MAX_DETAIL)
        {
            return bad("a field is empty or too long");
        }
        Ok(())
    }
}

/// Why a receipt was refused; `code()` is the stable error code the gateway answers with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    #[error("the `{0}` header is missing")]
    MissingHeader(&'static str),
    #[error("`receipt-timestamp` is not a unix time in seconds")]
    InvalidTimestamp,
    #[error("`receipt-timestamp` is more than 5 minutes from the gateway's clock")]
    StaleTimestamp,
    #[error("the signature does not verify with the key `receipt-key` names")]
    BadSignature,
    #[error("the receipt body is malformed: {0}")]
    Malformed(String),
    #[error("`receipt-body` is not base64")]
    BadInlineBody,
}

impl ReceiptError {
    pub fn code(&self) -> &'static str {
        match self {
            ReceiptError::MissingHeader(_) => "receipt_header_missing",
            ReceiptError::InvalidTimestamp => "receipt_timestamp_invalid",
            ReceiptError::StaleTimestamp => "receipt_timestamp_stale",
            ReceiptError::BadSignature => "receipt_signature_invalid",
            ReceiptError::Malformed(_) | ReceiptError::BadInlineBody => "receipt_malformed",
        }
    }
}

/// A handler's signing key and the id it is registered under at the gateway.
#[derive(Clone)]
pub struct ReceiptKey {
    pub id: String,
    signing: SigningKey,
}

impl std::fmt::Debug for ReceiptKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ReceiptKey({}, public {})", self.id, self.public_key_base64())
    }
}

impl ReceiptKey {
    /// A new random key.
    pub fn generate(id: impl Into<String>) -> Self {
        Self { id: id.into(), signing: SigningKey::generate(&mut rand::rng()) }
    }

    /// Loads a key from its 32-byte seed, base64 (as `hookwarden keys generate` prints it).
    pub fn from_seed_base64(id: impl Into<String>, seed: &str) -> Result<Self, KeyError> {
        let bytes = B64.decode(seed.trim()).map_err(|_| KeyError)?;
        let seed: [u8; 32] = bytes.try_into().map_err(|_| KeyError)?;
        Ok(Self { id: id.into(), signing: SigningKey::from_bytes(&seed) })
    }

    pub fn seed_base64(&self) -> String {
        B64.encode(self.signing.to_bytes())
    }

    /// The public half, base64: what goes into the gateway's `receipt_keys`.
    pub fn public_key_base64(&self) -> String {
        B64.encode(self.signing.verifying_key().to_bytes())
    }

    /// Signs `receipt` under a fresh receipt id at `timestamp` (unix seconds).
    pub fn sign(&self, receipt: &Receipt, timestamp: i64) -> SignedReceipt {
        self.sign_with_id(receipt, &new_receipt_id(), timestamp)
    }

    /// Signs under a given receipt id: a retried post must reuse its id.
    pub fn sign_with_id(&self, receipt: &Receipt, receipt_id: &str, timestamp: i64) -> SignedReceipt {
        let body = serde_json::to_vec(receipt).expect("receipts serialise");
        let timestamp = timestamp.to_string();
        let signature = self.signing.sign(&signed_content(receipt_id, &timestamp, &body));
        SignedReceipt {
            receipt_id: receipt_id.to_string(),
            timestamp,
            key_id: self.id.clone(),
            signature: format!("v1a,{}", B64.encode(signature.to_bytes())),
            body,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a receipt key seed is 32 bytes of base64")]
pub struct KeyError;

/// `rcp_` + 32 random hex digits.
pub fn new_receipt_id() -> String {
    let bytes: [u8; 16] = rand::random();
    let mut out = String::with_capacity(36);
    out.push_str("rcp_");
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// A receipt ready to send: its headers and its exact body bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedReceipt {
    pub receipt_id: String,
    pub timestamp: String,
    pub key_id: String,
    pub signature: String,
    pub body: Vec<u8>,
}

impl SignedReceipt {
    /// The four headers of `POST /v1/receipts` (the body is `self.body`).
    pub fn headers(&self) -> [(&'static str, String); 4] {
        [
            (HEADER_ID, self.receipt_id.clone()),
            (HEADER_TIMESTAMP, self.timestamp.clone()),
            (HEADER_KEY, self.key_id.clone()),
            (HEADER_SIGNATURE, self.signature.clone()),
        ]
    }

    /// The five headers that put this receipt on a handler's 2xx response.
    pub fn inline_headers(&self) -> [(&'static str, String); 5] {
        let [a, b, c, d] = self.headers();
        [a, b, c, d, (HEADER_BODY, B64.encode(&self.body))]
    }
}

/// The receipt headers of a request or response, as received.
#[derive(Debug, Clone, Copy)]
pub struct ReceiptHeaders<'a> {
    pub id: &'a str,
    pub timestamp: &'a str,
    pub key_id: &'a str,
    pub signature: &'a str,
}

impl<'a> ReceiptHeaders<'a> {
    /// Reads the four headers through `get` (a lookup by lower-case name).
    pub fn read(get: impl Fn(&'static str) -> Option<&'a str>) -> Result<Self, ReceiptError> {
        let need = |name: &'static str| {
            get(name).map(str::trim).filter(|v| !v.is_empty()).ok_or(ReceiptError::MissingHeader(name))
        };
        Ok(Self {
            id: need(HEADER_ID)?,
            timestamp: need(HEADER_TIMESTAMP)?,
            key_id: need(HEADER_KEY)?,
            signature: need(HEADER_SIGNATURE)?,
        })
    }

    /// Whether the timestamp is within the tolerance of `now_secs`.
    pub fn check_timestamp(&self, now_secs: i64) -> Result<(), ReceiptError> {
        let t: i64 = self.timestamp.parse().map_err(|_| ReceiptError::InvalidTimestamp)?;
        // `abs_diff`: a timestamp of any size is stale, never an overflow.
        if now_secs.abs_diff(t) > TOLERANCE_SECS.unsigned_abs() {
            return Err(ReceiptError::StaleTimestamp);
        }
        Ok(())
    }

    /// Whether any `v1a` entry of the signature verifies `body` with `key` (strict ed25519).
    pub fn verify_signature(&self, body: &[u8], key: &VerifyingKey) -> Result<(), ReceiptError> {
        let content = signed_content(self.id, self.timestamp, body);
        let ok = self.signature.split_whitespace().filter_map(|e| e.split_once(',')).any(|(version, sig)| {
            version == "v1a" && decode_ed25519_signature(sig).is_some_and(|s| key.verify_strict(&content, &s).is_ok())
        });
        if ok { Ok(()) } else { Err(ReceiptError::BadSignature) }
    }
}

/// Decodes an inline `receipt-body` header.
pub fn decode_inline_body(value: &str) -> Result<Vec<u8>, ReceiptError> {
    B64.decode(value.trim()).map_err(|_| ReceiptError::BadInlineBody)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_then_verify_and_refusals() {
        let key = ReceiptKey::from_seed_base64("orders-1", &B64.encode([1u8; 32])).unwrap();
        let signed = key.sign_with_id(&Receipt::applied("evt_1"), "rcp_1", 1_700_000_000);
        let headers = signed.headers();
        let get = |name: &str| headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str());
        let read = ReceiptHeaders::read(get).unwrap();
        let public = SigningKey::from_bytes(&[1u8; 32]).verifying_key();
        assert_eq!(read.verify_signature(&signed.body, &public), Ok(()));
        assert_eq!(read.check_timestamp(1_700_000_000 + 300), Ok(()));
        assert_eq!(read.check_timestamp(1_700_000_000 + 301), Err(ReceiptError::StaleTimestamp));
        let other = SigningKey::from_bytes(&[2u8; 32]).verifying_key();
        assert_eq!(read.verify_signature(&signed.body, &other), Err(ReceiptError::BadSignature));
        assert_eq!(read.verify_signature(b"{}", &public), Err(ReceiptError::BadSignature));
        assert_eq!(Receipt::parse(&signed.body), Ok(Receipt::applied("evt_1")));
    }

    #[test]
    fn body_rules() {
        assert!(Receipt::parse(br#"{"event_id":"e","status":"failed"}"#).is_err());
        assert!(Receipt::parse(br#"{"event_id":"e","status":"done"}"#).is_err());
        assert!(Receipt::parse(br#"{"event_id":"e","status":"applied","extra":1}"#).is_err());
        assert!(Receipt::parse(br#"{"event_id":"e","status":"failed","error_code":"E_DB"}"#).is_ok());
        let missing = ReceiptHeaders::read(|_| None).unwrap_err();
        assert_eq!(missing.code(), "receipt_header_missing");
    }
}
