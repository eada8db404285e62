//! Verifying the gateway's forwards (SPEC.md "Forwarding to the handler").
//!
//! The gateway signs every forward with the source's `whsec_` secret the Standard Webhooks
//! way (`webhook-id`, `webhook-timestamp`, `webhook-signature`), with the hookwarden event id
//! as `webhook-id`, and adds `idempotency-key`, `hookwarden-attempt`, `hookwarden-source` and,
//! on replays, `hookwarden-replay-id`.
//!
//! Only the event id, the timestamp and the body are covered by the signature; the other
//! headers are informational. Key idempotency on [`Forwarded::event_id`] (as
//! `outbox::already_processed` does), which is both authenticated and stable across every
//! retry and replay of an event.

use crate::webhook::{WebhookError, WebhookHeaders, WebhookSecret, WebhookVerifier};

pub const HEADER_WEBHOOK_ID: &str = "webhook-id";
pub const HEADER_WEBHOOK_TIMESTAMP: &str = "webhook-timestamp";
pub const HEADER_WEBHOOK_SIGNATURE: &str = "webhook-signature";
pub const HEADER_IDEMPOTENCY_KEY: &str = "idempotency-key";
pub const HEADER_ATTEMPT: &str = "hookwarden-attempt";
pub const HEADER_SOURCE: &str = "hookwarden-source";
pub const HEADER_REPLAY_ID: &str = "hookwarden-replay-id";

/// A verified forward: who sent it and which delivery of which event it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarded {
    /// The gateway's event id (`webhook-id`, `evt_…`): what a receipt confirms.
    pub event_id: String,
    /// Stable per event, the same on every retry and replay.
    pub idempotency_key: String,
    /// 1 for the first forward, counting retries and replays.
    pub attempt: u32,
    /// The source's name, e.g. `stripe`.
    pub source: String,
    /// Set when an operator's replay sent this forward.
    pub replay_id: Option<String>,
}

impl Forwarded {
    pub fn is_replay(&self) -> bool {
        self.replay_id.is_some()
    }
}

/// Why a forward was refused (answer 401 to all of them).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForwardedError {
    #[error("the `{0}` header is missing")]
    MissingHeader(&'static str),
    #[error("the `{0}` header is not valid")]
    InvalidHeader(&'static str),
    #[error("the gateway's signature does not verify: {0}")]
    Signature(WebhookError),
}

/// Checks a forward's Standard Webhooks signature with the source's secret (5 min tolerance
/// around `now_secs`) and reads the hookwarden headers. `get_header` looks a header up by its
/// lower-case name, e.g. `|n| headers.get(n).and_then(|v| v.to_str().ok())` with axum.
pub fn verify_forwarded<'h>(
    secret: &WebhookSecret,
    get_header: impl Fn(&str) -> Option<&'h str>,
    body: &[u8],
    now_secs: i64,
) -> Result<Forwarded, ForwardedError> {
    let need = |name: &'static str| {
        get_header(name).map(str::trim).filter(|v| !v.is_empty()).ok_or(ForwardedError::MissingHeader(name))
    };
    let headers = WebhookHeaders {
        id: need(HEADER_WEBHOOK_ID)?,
        timestamp: need(HEADER_WEBHOOK_TIMESTAMP)?,
        signature: need(HEADER_WEBHOOK_SIGNATURE)?,
    };
    WebhookVerifier::with_secret(secret.clone()).verify(headers, body, now_secs).map_err(ForwardedError::Signature)?;
    // A status probe is signed with the same secret; its `prb_` id keeps it from passing as an event.
    if !headers.id.starts_with("evt_") {
        return Err(ForwardedError::InvalidHeader(HEADER_WEBHOOK_ID));
    }
    let attempt = need(HEADER_ATTEMPT)?
        .parse::<u32>()
        .ok()
        .filter(|n| *n >= 1)
        .ok_or(ForwardedError::InvalidHeader(HEADER_ATTEMPT))?;
    Ok(Forwarded {
        event_id: headers.id.to_string(),
        idempotency_key: need(HEADER_IDEMPOTENCY_KEY)?.to_string(),
        attempt,
        source: need(HEADER_SOURCE)?.to_string(),
        replay_id: need(HEADER_REPLAY_ID).ok().map(str::to_string),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000;
    const BODY: &[u8] = br#"{"id":"ord_1"}"#;

    fn secret() -> WebhookSecret {
        WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap()
    }

    /// The headers the gateway sends, signed with `secret` at `NOW`.
    fn forward(secret: &WebhookSecret) -> Vec<(&'static str, String)> {
        vec![
            (HEADER_WEBHOOK_ID, "evt_01".into()),
            (HEADER_WEBHOOK_TIMESTAMP, NOW.to_string()),
            (HEADER_WEBHOOK_SIGNATURE, secret.sign("evt_01", NOW, BODY)),
            (HEADER_IDEMPOTENCY_KEY, "idk_abc".into()),
            (HEADER_ATTEMPT, "2".into()),
            (HEADER_SOURCE, "stripe".into()),
        ]
    }

    fn verify(headers: &[(&'static str, String)], body: &[u8], now: i64) -> Result<Forwarded, ForwardedError> {
        let get = |name: &str| headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str());
        verify_forwarded(&secret(), get, body, now)
    }

    fn with(
        mut headers: Vec<(&'static str, String)>,
        name: &'static str,
        value: Option<&str>,
    ) -> Vec<(&'static str, String)> {
        headers.retain(|(n, _)| *n != name);
        if let Some(value) = value {
            headers.push((name, value.to_string()));
        }
        headers
    }

    #[test]
    fn accepts_a_signed_forward_and_reads_its_headers() {
        let got = verify(&forward(&secret()), BODY, NOW + 60).unwrap();
        assert_eq!(
            got,
            Forwarded {
                event_id: "evt_01".into(),
                idempotency_key: "idk_abc".into(),
                attempt: 2,
                source: "stripe".into(),
                replay_id: None,
            }
        );
        assert!(!got.is_replay());
        let replay = with(forward(&secret()), HEADER_REPLAY_ID, Some("rpl_9"));
        let got = verify(&replay, BODY, NOW).unwrap();
        assert_eq!(got.replay_id.as_deref(), Some("rpl_9"));
        assert!(got.is_replay());
    }

    #[test]
    fn refuses_bad_signatures_and_stale_or_tampered_forwards() {
        let sig = |e| Err(ForwardedError::Signature(e));
        assert_eq!(verify(&forward(&secret()), br#"{"id":"ord_2"}"#, NOW), sig(WebhookError::NoMatchingSignature));
        assert_eq!(verify(&forward(&WebhookSecret::generate()), BODY, NOW), sig(WebhookError::NoMatchingSignature));
        assert_eq!(verify(&forward(&secret()), BODY, NOW + 301), sig(WebhookError::StaleTimestamp));
        // Another event id under the same signature.
        let moved = with(forward(&secret()), HEADER_WEBHOOK_ID, Some("evt_02"));
        assert_eq!(verify(&moved, BODY, NOW), sig(WebhookError::NoMatchingSignature));
        let bad_ts = with(forward(&secret()), HEADER_WEBHOOK_TIMESTAMP, Some("soon"));
        assert_eq!(verify(&bad_ts, BODY, NOW), sig(WebhookError::InvalidTimestamp));
    }

    #[test]
    fn refuses_missing_or_invalid_headers() {
        for name in [
            HEADER_WEBHOOK_ID,
            HEADER_WEBHOOK_TIMESTAMP,
            HEADER_WEBHOOK_SIGNATURE,
            HEADER_IDEMPOTENCY_KEY,
            HEADER_ATTEMPT,
            HEADER_SOURCE,
        ] {
            let headers = with(forward(&secret()), name, None);
            assert_eq!(verify(&headers, BODY, NOW), Err(ForwardedError::MissingHeader(name)), "{name}");
        }
        // A correctly signed message whose id is not an event's (a status probe's `prb_…`).
        let probe_id = with(forward(&secret()), HEADER_WEBHOOK_ID, Some("prb_01"));
        let probe_id = with(probe_id, HEADER_WEBHOOK_SIGNATURE, Some(&secret().sign("prb_01", NOW, BODY)));
        assert_eq!(verify(&probe_id, BODY, NOW), Err(ForwardedError::InvalidHeader(HEADER_WEBHOOK_ID)));
        let empty = with(forward(&secret()), HEADER_SOURCE, Some("  "));
        assert_eq!(verify(&empty, BODY, NOW), Err(ForwardedError::MissingHeader(HEADER_SOURCE)));
        for attempt in ["0", "-1", "two", "99999999999"] {
            let headers = with(forward(&secret()), HEADER_ATTEMPT, Some(attempt));
            assert_eq!(verify(&headers, BODY, NOW), Err(ForwardedError::InvalidHeader(HEADER_ATTEMPT)), "{attempt}");
        }
    }
}
