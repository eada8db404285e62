//! The status probe's wire format (docs/status-probe.md): the gateway asks a handler which of
//! some events it applied or failed; the handler answers with receipts.
//!
//! One definition for both sides: the gateway builds and signs a [`ProbeRequest`] and reads a
//! [`ProbeAnswer`]; a handler checks the request with [`verify_probe`] and answers entries
//! made by [`AnswerEntry::from_signed`] (the outbox does it from its tables,
//! `outbox::answer_probe`). Like the other format modules this one does no I/O.
//!
//! A probe is signed like a forward (Standard Webhooks `v1`, the source's secret). What keeps
//! the two apart, although one secret signs both: a probe's `webhook-id` starts with `prb_`
//! and its body's `type` is [`PROBE_TYPE`]; a forward's `webhook-id` is an `evt_…` id, which
//! `forwarded::verify_forwarded` insists on.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::receipt::{HEADER_BODY, HEADER_ID, HEADER_KEY, HEADER_SIGNATURE, HEADER_TIMESTAMP, SignedReceipt};
use crate::webhook::{WebhookError, WebhookHeaders, WebhookSecret, WebhookVerifier};

/// The body's `type`.
pub const PROBE_TYPE: &str = "hookwarden.status_probe";
/// The one version of the probe this crate speaks.
pub const PROBE_VERSION: u64 = 1;
/// Most event ids one probe asks about.
pub const MAX_EVENT_IDS: usize = 100;
/// Largest answer the gateway reads.
pub const MAX_ANSWER_BYTES: usize = 1 << 20;
/// Every probe's `webhook-id` starts with this; no forward's does.
pub const PROBE_ID_PREFIX: &str = "prb_";

/// What the gateway asks: which of `event_ids` (of `source`) the handler applied or failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeRequest {
    #[serde(rename = "type")]
    pub kind: String,
    pub version: u64,
    pub source: String,
    pub event_ids: Vec<String>,
}

/// A probe ready to send: its three Standard Webhooks headers and its exact body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedProbe {
    pub probe_id: String,
    pub timestamp: i64,
    pub signature: String,
    pub body: Vec<u8>,
}

/// Why a probe request was refused; [`ProbeError::status`] is the answer to give.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    #[error("the `{0}` header is missing")]
    MissingHeader(&'static str),
    #[error("`webhook-id` does not start with `prb_`: this is not a status probe")]
    NotAProbe,
    #[error("the gateway's signature does not verify: {0}")]
    Signature(WebhookError),
    #[error("the probe body is malformed: {0}")]
    Malformed(String),
    #[error("probe version {0} is not supported (this handler speaks version 1)")]
    UnsupportedVersion(u64),
}

impl ProbeError {
    /// 401 for anything about who sent it, 400 for what it says.
    pub fn status(&self) -> u16 {
        match self {
            ProbeError::MissingHeader(_) | ProbeError::NotAProbe | ProbeError::Signature(_) => 401,
            ProbeError::Malformed(_) | ProbeError::UnsupportedVersion(_) => 400,
        }
    }
}

impl ProbeRequest {
    pub fn new(source: impl Into<String>, event_ids: Vec<String>) -> Self {
        Self { kind: PROBE_TYPE.to_string(), version: PROBE_VERSION, source: source.into(), event_ids }
    }

    /// Signs the probe under `probe_id` (which must start with `prb_`) at `timestamp`.
    pub fn sign(&self, secret: &WebhookSecret, probe_id: &str, timestamp: i64) -> SignedProbe {
        debug_assert!(probe_id.starts_with(PROBE_ID_PREFIX));
        let body = serde_json::to_vec(self).expect("probes serialise");
        let signature = secret.sign(probe_id, timestamp, &body);
        SignedProbe { probe_id: probe_id.to_string(), timestamp, signature, body }
    }

    /// Checks what a well-formed probe says, beyond its signature.
    fn check(self) -> Result<Self, ProbeError> {
        if self.kind != PROBE_TYPE {
            return Err(ProbeError::Malformed(format!("`type` is `{}`, not `{PROBE_TYPE}`", self.kind)));
        }
        if self.version != PROBE_VERSION {
            return Err(ProbeError::UnsupportedVersion(self.version));
        }
        if self.event_ids.is_empty() || self.event_ids.len() > MAX_EVENT_IDS {
            return Err(ProbeError::Malformed(format!("`event_ids` takes 1 to {MAX_EVENT_IDS} ids")));
        }
        if let Some(bad) = self.event_ids.iter().find(|id| !id.starts_with("evt_") || id.len() > 200) {
            return Err(ProbeError::Malformed(format!("`{bad}` is not an event id")));
        }
        Ok(self)
    }
}

impl SignedProbe {
    /// `webhook-id`, `webhook-timestamp`, `webhook-signature` (the body is `self.body`).
    pub fn headers(&self) -> [(&'static str, String); 3] {
        [
            (crate::forwarded::HEADER_WEBHOOK_ID, self.probe_id.clone()),
            (crate::forwarded::HEADER_WEBHOOK_TIMESTAMP, self.timestamp.to_string()),
            (crate::forwarded::HEADER_WEBHOOK_SIGNATURE, self.signature.clone()),
        ]
    }
}

/// A handler's check of a probe: the gateway's signature with the source's secret (5 minutes
/// around `now_secs`), the `prb_` id, and the body. `get_header` looks a header up by its
/// lower-case name.
pub fn verify_probe<'h>(
    secret: &WebhookSecret,
    get_header: impl Fn(&str) -> Option<&'h str>,
    body: &[u8],
    now_secs: i64,
) -> Result<ProbeRequest, ProbeError> {
    let need = |name: &'static str| {
        get_header(name).map(str::trim).filter(|v| !v.is_empty()).ok_or(ProbeError::MissingHeader(name))
    };
    let headers = WebhookHeaders {
        id: need(crate::forwarded::HEADER_WEBHOOK_ID)?,
        timestamp: need(crate::forwarded::HEADER_WEBHOOK_TIMESTAMP)?,
        signature: need(crate::forwarded::HEADER_WEBHOOK_SIGNATURE)?,
    };
    if !headers.id.starts_with(PROBE_ID_PREFIX) {
        return Err(ProbeError::NotAProbe);
    }
    WebhookVerifier::with_secret(secret.clone()).verify(headers, body, now_secs).map_err(ProbeError::Signature)?;
    let request: ProbeRequest = serde_json::from_slice(body).map_err(|e| ProbeError::Malformed(e.to_string()))?;
    request.check()
}

/// The receipt id a handler answers with when it knows only that it applied an event (an
/// inbox of processed ids, no stored receipt): derived from the event id, so asking twice
/// records one receipt.
pub fn probe_receipt_id(event_id: &str) -> String {
    let digest = Sha256::digest(format!("hookwarden-probe:{event_id}").as_bytes());
    format!("rcp_{}", hex_lower(&digest[..16]))
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One receipt of an answer, in the inline form: the four `receipt-*` headers and the base64
/// body, as JSON fields named like the headers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnswerEntry {
    #[serde(rename = "receipt-id", default)]
    pub receipt_id: String,
    #[serde(rename = "receipt-timestamp", default)]
    pub timestamp: String,
    #[serde(rename = "receipt-key", default)]
    pub key_id: String,
    #[serde(rename = "receipt-signature", default)]
    pub signature: String,
    #[serde(rename = "receipt-body", default)]
    pub body: String,
}

impl AnswerEntry {
    pub fn from_signed(signed: &SignedReceipt) -> Self {
        let [(_, receipt_id), (_, timestamp), (_, key_id), (_, signature), (_, body)] = signed.inline_headers();
        Self { receipt_id, timestamp, key_id, signature, body }
    }

    /// A field by its header name, for `receipt::ReceiptHeaders::read`; empty counts as missing.
    pub fn get(&self, name: &str) -> Option<&str> {
        let value = match name {
            HEADER_ID => &self.receipt_id,
            HEADER_TIMESTAMP => &self.timestamp,
            HEADER_KEY => &self.key_id,
            HEADER_SIGNATURE => &self.signature,
            HEADER_BODY => &self.body,
            _ => return None,
        };
        Some(value.as_str()).filter(|v| !v.trim().is_empty())
    }
}

/// A handler's answer: receipts for the asked events it knows; the rest left out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeAnswer {
    pub receipts: Vec<AnswerEntry>,
}

impl ProbeAnswer {
    /// Reads an answer body (at most [`MAX_ANSWER_BYTES`]). Entries are checked one by one by
    /// the gateway later; this only insists on the shape.
    pub fn parse(body: &[u8]) -> Result<Self, ProbeError> {
        if body.len() > MAX_ANSWER_BYTES {
            return Err(ProbeError::Malformed(format!("the answer is over {MAX_ANSWER_BYTES} bytes")));
        }
        serde_json::from_slice(body).map_err(|e| ProbeError::Malformed(e.to_string()))
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("answers serialise")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::receipt::{Receipt, ReceiptHeaders, ReceiptKey, decode_inline_body};
    use crate::webhook::decode_public_key;

    fn vectors() -> serde_json::Value {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/test-vectors.json");
        serde_json::from_str(&std::fs::read_to_string(path).expect("the shared test vectors")).expect("JSON")
    }

    fn header<'a>(headers: &'a [(&'static str, String)]) -> impl Fn(&str) -> Option<&'a str> {
        move |name| headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn the_shared_probe_vector_signs_and_verifies() {
        let v = &vectors()["probe"];
        let secret = WebhookSecret::parse(v["secret"].as_str().unwrap()).unwrap();
        let body = v["body"].as_str().unwrap();
        let request: ProbeRequest = serde_json::from_str(body).unwrap();
        let timestamp = v["timestamp"].as_i64().unwrap();
        let signed = request.sign(&secret, v["webhook_id"].as_str().unwrap(), timestamp);
        assert_eq!(String::from_utf8(signed.body.clone()).unwrap(), body, "the gateway writes these bytes");
        assert_eq!(signed.signature, v["signature"].as_str().unwrap());
        let headers = signed.headers();
        let got = verify_probe(&secret, header(&headers), &signed.body, timestamp + 299).unwrap();
        assert_eq!(got, request);
    }

    #[test]
    fn the_shared_answer_vector_is_a_receipt_under_the_probe_receipt_id() {
        let v = &vectors()["probe"]["answer"];
        let event = v["event_id"].as_str().unwrap();
        assert_eq!(probe_receipt_id(event), v["receipt_id"].as_str().unwrap());
        let key = ReceiptKey::from_seed_base64(v["key_id"].as_str().unwrap(), v["seed"].as_str().unwrap()).unwrap();
        let signed =
            key.sign_with_id(&Receipt::applied(event), &probe_receipt_id(event), v["timestamp"].as_i64().unwrap());
        assert_eq!(String::from_utf8(signed.body.clone()).unwrap(), v["body"].as_str().unwrap());
        assert_eq!(signed.signature, v["signature"].as_str().unwrap());
        let entry = AnswerEntry::from_signed(&signed);
        assert_eq!(serde_json::to_value(&entry).unwrap(), v["entry"]);

        // The gateway reads an entry with the same code as a posted receipt.
        let read = ReceiptHeaders::read(|n| entry.get(n)).unwrap();
        let body = decode_inline_body(entry.get(HEADER_BODY).unwrap()).unwrap();
        let public = decode_public_key(&key.public_key_base64()).unwrap();
        assert_eq!(read.verify_signature(&body, &public), Ok(()));
        let answer = ProbeAnswer { receipts: vec![entry] };
        assert_eq!(ProbeAnswer::parse(&answer.to_json()).unwrap(), answer);
    }

    #[test]
    fn refuses_what_is_not_a_fresh_signed_probe() {
        let secret = WebhookSecret::generate();
        let request = ProbeRequest::new("stripe", vec!["evt_01".into()]);
        let signed = request.sign(&secret, "prb_1", 1_700_000_000);
        let ok = signed.headers();
        let check =
            |headers: &[(&'static str, String)], body: &[u8], now| verify_probe(&secret, header(headers), body, now);
        assert!(check(&ok, &signed.body, 1_700_000_000).is_ok());
        assert_eq!(check(&ok, &signed.body, 1_700_000_301), Err(ProbeError::Signature(WebhookError::StaleTimestamp)));
        let other = request.sign(&WebhookSecret::generate(), "prb_1", 1_700_000_000);
        assert_eq!(
            check(&other.headers(), &other.body, 1_700_000_000),
            Err(ProbeError::Signature(WebhookError::NoMatchingSignature))
        );
        // A forward's id (or anything but `prb_…`) is not a probe, even correctly signed.
        let forward_like = ProbeRequest::new("stripe", vec!["evt_01".into()]);
        let body = serde_json::to_vec(&forward_like).unwrap();
        let as_event = [
            ("webhook-id", "evt_01".to_string()),
            ("webhook-timestamp", "1700000000".to_string()),
            ("webhook-signature", secret.sign("evt_01", 1_700_000_000, &body)),
        ];
        assert_eq!(check(&as_event, &body, 1_700_000_000), Err(ProbeError::NotAProbe));
        assert_eq!(ProbeError::NotAProbe.status(), 401);

        let signed_body = |body: &[u8]| {
            let headers = [
                ("webhook-id", "prb_2".to_string()),
                ("webhook-timestamp", "1700000000".to_string()),
                ("webhook-signature", secret.sign("prb_2", 1_700_000_000, body)),
            ];
            check(&headers, body, 1_700_000_000)
        };
        let v2 = br#"{"type":"hookwarden.status_probe","version":2,"source":"s","event_ids":["evt_1"]}"#;
        assert_eq!(signed_body(v2), Err(ProbeError::UnsupportedVersion(2)));
        let none = br#"{"type":"hookwarden.status_probe","version":1,"source":"s","event_ids":[]}"#;
        assert_eq!(signed_body(none).unwrap_err().status(), 400);
        let not_events = br#"{"type":"hookwarden.status_probe","version":1,"source":"s","event_ids":["ord_1"]}"#;
        assert!(matches!(signed_body(not_events), Err(ProbeError::Malformed(_))));
        let other_type = br#"{"type":"order.created","version":1,"source":"s","event_ids":["evt_1"]}"#;
        assert!(matches!(signed_body(other_type), Err(ProbeError::Malformed(_))));
        let many: Vec<String> = (0..=MAX_EVENT_IDS).map(|i| format!("evt_{i}")).collect();
        let too_many = serde_json::to_vec(&ProbeRequest::new("s", many)).unwrap();
        assert!(matches!(signed_body(&too_many), Err(ProbeError::Malformed(_))));
    }

    #[test]
    fn an_answer_over_the_limit_or_of_another_shape_is_refused() {
        assert!(ProbeAnswer::parse(&vec![b' '; MAX_ANSWER_BYTES + 1]).is_err());
        assert!(ProbeAnswer::parse(b"[]").is_err());
        assert_eq!(ProbeAnswer::parse(br#"{"receipts":[]}"#).unwrap(), ProbeAnswer::default());
        // A missing field reads as empty, which the gateway then refuses as a missing header.
        let partial = ProbeAnswer::parse(br#"{"receipts":[{"receipt-id":"rcp_1"}]}"#).unwrap();
        assert_eq!(partial.receipts[0].get(HEADER_KEY), None);
    }
}
