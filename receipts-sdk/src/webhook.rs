//! Standard Webhooks (<https://www.standardwebhooks.com>) signing and verification.
//!
//! The signed content is `{id}.{timestamp}.{body}`; a `webhook-signature` header holds one or
//! more space-separated `version,base64` entries, and a message is valid when any entry
//! verifies. `v1` is HMAC-SHA256 with a shared `whsec_` secret, `v1a` is ed25519.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use hmac::{KeyInit, Mac};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// How far a timestamp may be from now, either way, before a message is refused as stale.
pub const DEFAULT_TOLERANCE_SECS: i64 = 5 * 60;

/// Why a webhook signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("the secret is not a valid `whsec_` base64 secret")]
    InvalidSecret,
    #[error("the `{0}` header is missing")]
    MissingHeader(&'static str),
    #[error("the timestamp is not a unix time in seconds")]
    InvalidTimestamp,
    #[error("the timestamp is outside the tolerance")]
    StaleTimestamp,
    #[error("no signature in the header matches")]
    NoMatchingSignature,
}

/// A shared Standard Webhooks secret: raw key bytes, written as `whsec_<base64>`.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(Vec<u8>);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

impl WebhookSecret {
    /// Parses `whsec_<base64>`; a bare base64 string is accepted too, as other libraries do.
    pub fn parse(text: &str) -> Result<Self, WebhookError> {
        let encoded = text.strip_prefix("whsec_").unwrap_or(text);
        let bytes = B64.decode(encoded.trim()).map_err(|_| WebhookError::InvalidSecret)?;
        if bytes.is_empty() {
            return Err(WebhookError::InvalidSecret);
        }
        Ok(Self(bytes))
    }

    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// A fresh random 24-byte secret.
    pub fn generate() -> Self {
        let mut bytes = vec![0u8; 24];
        rand::fill(&mut bytes[..]);
        Self(bytes)
    }

    /// The `whsec_…` form, for config files.
    pub fn to_whsec(&self) -> String {
        format!("whsec_{}", B64.encode(&self.0))
    }

    /// The `v1,<base64>` signature entry for one message.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = self.mac();
        feed_signed_content(&mut mac, id, timestamp, body);
        format!("v1,{}", B64.encode(mac.finalize().into_bytes()))
    }

    fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(&self.0).expect("HMAC takes keys of any length")
    }

    /// Whether a base64 `v1` signature matches, compared in constant time.
    fn matches_v1(&self, id: &str, timestamp: i64, body: &[u8], sig_b64: &str) -> bool {
        let Ok(sig) = B64.decode(sig_b64) else {
            return false;
        };
        let mut mac = self.mac();
        feed_signed_content(&mut mac, id, timestamp, body);
        mac.verify_slice(&sig).is_ok()
    }
}

fn feed_signed_content(mac: &mut HmacSha256, id: &str, timestamp: i64, body: &[u8]) {
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
}

/// `{id}.{timestamp}.{body}`: the bytes every Standard Webhooks signature covers.
pub fn signed_content(id: &str, timestamp: &str, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(id.len() + timestamp.len() + body.len() + 2);
    out.extend_from_slice(id.as_bytes());
    out.push(b'.');
    out.extend_from_slice(timestamp.as_bytes());
    out.push(b'.');
    out.extend_from_slice(body);
    out
}

/// The three Standard Webhooks headers of one message, as received.
#[derive(Debug, Clone, Copy)]
pub struct WebhookHeaders<'a> {
    pub id: &'a str,
    pub timestamp: &'a str,
    pub signature: &'a str,
}

/// The keys a receiver accepts: a shared secret for `v1`, public keys for `v1a`.
#[derive(Debug, Clone, Default)]
pub struct WebhookVerifier {
    pub secret: Option<WebhookSecret>,
    pub public_keys: Vec<VerifyingKey>,
    pub tolerance_secs: i64,
}

impl WebhookVerifier {
    pub fn with_secret(secret: WebhookSecret) -> Self {
        Self { secret: Some(secret), public_keys: Vec::new(), tolerance_secs: DEFAULT_TOLERANCE_SECS }
    }

    /// Checks the timestamp against `now_secs` and then the signatures.
    pub fn verify(&self, headers: WebhookHeaders<'_>, body: &[u8], now_secs: i64) -> Result<(), WebhookError> {
        let timestamp: i64 = headers.timestamp.trim().parse().map_err(|_| WebhookError::InvalidTimestamp)?;
        // `abs_diff`: a timestamp of any size is stale, never an overflow.
        if now_secs.abs_diff(timestamp) > self.tolerance_secs.unsigned_abs() {
            return Err(WebhookError::StaleTimestamp);
        }
        self.verify_ignoring_timestamp(headers, body)
    }

    /// Checks only the signatures: for replays of messages whose timestamp has long passed.
    pub fn verify_ignoring_timestamp(&self, headers: WebhookHeaders<'_>, body: &[u8]) -> Result<(), WebhookError> {
        let timestamp: i64 = headers.timestamp.trim().parse().map_err(|_| WebhookError::InvalidTimestamp)?;
        for entry in headers.signature.split_whitespace() {
            let Some((version, sig)) = entry.split_once(',') else {
                continue;
            };
            let ok = match version {
                "v1" => self.secret.as_ref().is_some_and(|s| s.matches_v1(headers.id, timestamp, body, sig)),
                "v1a" => self.matches_v1a(headers, body, sig),
                _ => false,
            };
            if ok {
                return Ok(());
            }
        }
        Err(WebhookError::NoMatchingSignature)
    }

    fn matches_v1a(&self, headers: WebhookHeaders<'_>, body: &[u8], sig_b64: &str) -> bool {
        if self.public_keys.is_empty() {
            return false;
        }
        let Some(signature) = decode_ed25519_signature(sig_b64) else {
            return false;
        };
        let content = signed_content(headers.id, headers.timestamp.trim(), body);
        self.public_keys.iter().any(|key| key.verify(&content, &signature).is_ok())
    }
}

/// Decodes a base64 ed25519 signature; `None` when it is not 64 bytes of base64.
pub fn decode_ed25519_signature(sig_b64: &str) -> Option<Signature> {
    let bytes = B64.decode(sig_b64).ok()?;
    let bytes: [u8; 64] = bytes.try_into().ok()?;
    Some(Signature::from_bytes(&bytes))
}

/// Decodes a base64 ed25519 public key.
pub fn decode_public_key(key_b64: &str) -> Option<VerifyingKey> {
    let bytes = B64.decode(key_b64.trim()).ok()?;
    let bytes: [u8; 32] = bytes.try_into().ok()?;
    VerifyingKey::from_bytes(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    fn check(verifier: &WebhookVerifier, sig: &str, now: i64) -> Result<(), WebhookError> {
        let headers = WebhookHeaders { id: "msg_1", timestamp: "1700000000", signature: sig };
        verifier.verify(headers, b"{\"a\":1}", now)
    }

    #[test]
    fn v1_round_trip_and_refusals() {
        let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = secret.sign("msg_1", 1_700_000_000, b"{\"a\":1}");
        let verifier = WebhookVerifier::with_secret(secret);
        assert_eq!(check(&verifier, &sig, 1_700_000_000), Ok(()));
        assert_eq!(check(&verifier, &format!("v1,bad {sig}"), 1_700_000_100), Ok(()));
        assert_eq!(check(&verifier, &sig, 1_700_000_000 + 301), Err(WebhookError::StaleTimestamp));
        assert_eq!(check(&verifier, "v1,AAAA", 1_700_000_000), Err(WebhookError::NoMatchingSignature));
        let other = WebhookVerifier::with_secret(WebhookSecret::generate());
        assert_eq!(check(&other, &sig, 1_700_000_000), Err(WebhookError::NoMatchingSignature));
    }

    #[test]
    fn v1a_ed25519() {
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let content = signed_content("msg_1", "1700000000", b"{\"a\":1}");
        let sig = format!("v1a,{}", B64.encode(key.sign(&content).to_bytes()));
        let verifier = WebhookVerifier {
            secret: None,
            public_keys: vec![key.verifying_key()],
            tolerance_secs: DEFAULT_TOLERANCE_SECS,
        };
        assert_eq!(check(&verifier, &sig, 1_700_000_000), Ok(()));
        let wrong = SigningKey::from_bytes(&[8u8; 32]);
        let bad = format!("v1a,{}", B64.encode(wrong.sign(&content).to_bytes()));
        assert_eq!(check(&verifier, &bad, 1_700_000_000), Err(WebhookError::NoMatchingSignature));
    }
}
