//! Provider signature verification, one file per kind, and where each kind keeps its event id
//! and type.
//!
//! Architecture invariant: verification reads only the raw body bytes and headers and the
//! current time; it never parses the body before the signature has passed.

mod github;
mod hmac_header;
mod pointer;
mod stripe;

use axum::http::HeaderMap;
use receipts_sdk::webhook::{WebhookHeaders, WebhookVerifier};
use sha2::{Digest, Sha256};
use std::time::Duration;

/// One source's way of proving a request came from its provider.
#[derive(Clone)]
pub enum Verifier {
    /// `Stripe-Signature: t=…,v1=…` over `{t}.{body}`.
    Stripe { secret: Vec<u8>, tolerance: Duration },
    /// `X-Hub-Signature-256: sha256=…` over the body.
    Github { secret: Vec<u8> },
    /// Standard Webhooks / Svix, `v1` and `v1a`.
    Standard(WebhookVerifier),
    /// A plain HMAC-SHA256 of the body in a configured header.
    Hmac { secret: Vec<u8>, header: String, encoding: HmacEncoding, prefix: String },
    /// Explicitly unauthenticated.
    None,
}

/// The kind and its settings; never the secret (a config is printed by `config check`).
impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Stripe { tolerance, .. } => {
                f.debug_struct("Stripe").field("secret", &"<redacted>").field("tolerance", tolerance).finish()
            }
            Self::Github { .. } => f.debug_struct("Github").field("secret", &"<redacted>").finish(),
            Self::Standard(verifier) => f.debug_tuple("Standard").field(verifier).finish(),
            Self::Hmac { header, encoding, prefix, .. } => f
                .debug_struct("Hmac")
                .field("secret", &"<redacted>")
                .field("header", header)
                .field("encoding", encoding)
                .field("prefix", prefix)
                .finish(),
            Self::None => f.write_str("None"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HmacEncoding {
    Hex,
    Base64,
}

/// Where a value lives in a request, for configured dedup keys and event types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Extract {
    /// A header name, lower-cased.
    Header(String),
    /// An RFC 6901 JSON pointer into the body.
    JsonPointer(String),
}

/// Why a request was refused; every variant is a 401 to the provider.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("missing signature header `{0}`")]
    MissingHeader(String),
    #[error("malformed signature header `{0}`")]
    MalformedHeader(String),
    #[error("timestamp outside the tolerance")]
    StaleTimestamp,
    #[error("signature does not match")]
    Mismatch,
}

impl VerifyError {
    /// The stable error code in the JSON answer.
    pub fn code(&self) -> &'static str {
        match self {
            VerifyError::MissingHeader(_) => "signature_missing",
            VerifyError::MalformedHeader(_) => "signature_malformed",
            VerifyError::StaleTimestamp => "timestamp_stale",
            VerifyError::Mismatch => "signature_invalid",
        }
    }
}

pub(crate) fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a str, VerifyError> {
    let value = headers.get(name).ok_or_else(|| VerifyError::MissingHeader(name.to_string()))?;
    value.to_str().map_err(|_| VerifyError::MalformedHeader(name.to_string()))
}

impl Verifier {
    pub fn kind(&self) -> &'static str {
        match self {
            Verifier::Stripe { .. } => "stripe",
            Verifier::Github { .. } => "github",
            Verifier::Standard(_) => "standard",
            Verifier::Hmac { .. } => "hmac",
            Verifier::None => "none",
        }
    }

    /// Whether the provider's signature covers no timestamp, so a captured request can be
    /// sent again, with a fresh delivery id, and still verify.
    pub fn signs_no_timestamp(&self) -> bool {
        matches!(self, Verifier::Github { .. } | Verifier::Hmac { .. } | Verifier::None)
    }

    /// Checks the request's signature at `now_secs` (unix seconds).
    pub fn verify(&self, headers: &HeaderMap, body: &[u8], now_secs: i64) -> Result<(), VerifyError> {
        match self {
            Verifier::Stripe { secret, tolerance } => stripe::verify(secret, *tolerance, headers, body, now_secs),
            Verifier::Github { secret } => github::verify(secret, headers, body),
            Verifier::Standard(verifier) => {
                let found = WebhookHeaders {
                    id: header(headers, "webhook-id")?,
                    timestamp: header(headers, "webhook-timestamp")?,
                    signature: header(headers, "webhook-signature")?,
                };
                verifier.verify(found, body, now_secs).map_err(|e| match e {
                    receipts_sdk::webhook::WebhookError::StaleTimestamp => VerifyError::StaleTimestamp,
                    receipts_sdk::webhook::WebhookError::InvalidTimestamp => {
                        VerifyError::MalformedHeader("webhook-timestamp".into())
                    }
                    _ => VerifyError::Mismatch,
                })
            }
            Verifier::Hmac { secret, header: name, encoding, prefix } => {
                hmac_header::verify(secret, name, *encoding, prefix, headers, body)
            }
            Verifier::None => Ok(()),
        }
    }

    /// The provider's own event id: the configured place, else the kind's usual place, else a
    /// hash of the body, so a provider's retry of the same bytes is still recognised.
    pub fn dedup_key(&self, configured: Option<&Extract>, headers: &HeaderMap, body: &[u8]) -> String {
        self.provider_event_id(configured, headers, body).unwrap_or_else(|| body_hash(body))
    }

    /// The provider's own event id, from the configured place or the kind's usual one; `None`
    /// when the request carries none (the dedup key is then the body's hash).
    pub fn provider_event_id(&self, configured: Option<&Extract>, headers: &HeaderMap, body: &[u8]) -> Option<String> {
        let usual = match self {
            Verifier::Stripe { .. } => Extract::JsonPointer("/id".into()),
            Verifier::Github { .. } => Extract::Header("x-github-delivery".into()),
            Verifier::Standard(_) => Extract::Header("webhook-id".into()),
            Verifier::Hmac { .. } | Verifier::None => Extract::Header(String::new()),
        };
        configured.or(Some(&usual)).and_then(|e| extract(e, headers, body))
    }

    /// The event type, when the provider states one.
    pub fn event_type(&self, configured: Option<&Extract>, headers: &HeaderMap, body: &[u8]) -> Option<String> {
        let usual = match self {
            Verifier::Github { .. } => Extract::Header("x-github-event".into()),
            _ => Extract::JsonPointer("/type".into()),
        };
        extract(configured.unwrap_or(&usual), headers, body)
    }
}

/// `sha256:` and the body's digest in hex, the dedup key of a body without an id.
pub fn body_hash(body: &[u8]) -> String {
    body_key(&hex::encode(Sha256::digest(body)))
}

/// The dedup key of a body whose sha256 (hex) is `sha256`: what [`body_hash`] makes.
pub fn body_key(sha256: &str) -> String {
    format!("sha256:{sha256}")
}

fn extract(what: &Extract, headers: &HeaderMap, body: &[u8]) -> Option<String> {
    let value = match what {
        Extract::Header(name) if name.is_empty() => return None,
        Extract::Header(name) => headers.get(name.as_str())?.to_str().ok()?.trim().to_string(),
        Extract::JsonPointer(at) => pointer::scalar_at(body, at)?,
    };
    (!value.is_empty() && value.len() <= 512).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        map
    }

    #[test]
    fn dedup_key_falls_back_to_body_hash() {
        let body = br#"{"id":"evt_1","type":"charge.succeeded"}"#;
        let stripe = Verifier::Stripe { secret: b"s".to_vec(), tolerance: Duration::from_secs(300) };
        assert_eq!(stripe.dedup_key(None, &HeaderMap::new(), body), "evt_1");
        assert_eq!(stripe.event_type(None, &HeaderMap::new(), body).as_deref(), Some("charge.succeeded"));
        assert!(stripe.dedup_key(None, &HeaderMap::new(), b"not json").starts_with("sha256:"));
        let none = Verifier::None;
        assert!(none.dedup_key(None, &HeaderMap::new(), body).starts_with("sha256:"));
        // Stored keys depend on this exact form: the digest in lowercase hex.
        assert_eq!(
            none.dedup_key(None, &HeaderMap::new(), b"abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let by_header = Extract::Header("x-request-id".into());
        assert_eq!(none.dedup_key(Some(&by_header), &headers(&[("x-request-id", "r-9")]), body), "r-9");
    }
}
