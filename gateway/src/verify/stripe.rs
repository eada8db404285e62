//! Stripe: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>…]`, HMAC-SHA256 over `{t}.{body}`
//! keyed with the whole endpoint secret. Several `v1` entries appear during secret rotation.

use std::time::Duration;

use axum::http::HeaderMap;
use hmac::{KeyInit, Mac};

use super::{VerifyError, header};

const HEADER: &str = "stripe-signature";

pub(super) fn verify(
    secret: &[u8],
    tolerance: Duration,
    headers: &HeaderMap,
    body: &[u8],
    now_secs: i64,
) -> Result<(), VerifyError> {
    let value = header(headers, HEADER)?;
    let malformed = || VerifyError::MalformedHeader(HEADER.to_string());
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in value.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = Some(t),
            Some(("v1", sig)) => signatures.push(sig),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or_else(malformed)?;
    let t: i64 = timestamp.parse().map_err(|_| malformed())?;
    if signatures.is_empty() {
        return Err(malformed());
    }
    // `abs_diff`: a timestamp of any size is stale, never an overflow.
    if now_secs.abs_diff(t) > tolerance.as_secs() {
        return Err(VerifyError::StaleTimestamp);
    }
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).expect("any key length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    let ok = signatures.iter().any(|sig| hex::decode(sig).is_ok_and(|bytes| mac.clone().verify_slice(&bytes).is_ok()));
    if ok { Ok(()) } else { Err(VerifyError::Mismatch) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(header_value: &str, now: i64) -> Result<(), VerifyError> {
        let mut headers = HeaderMap::new();
        headers.insert(HEADER, header_value.parse().unwrap());
        verify(b"whsec_test", Duration::from_secs(300), &headers, b"{\"id\":\"evt_1\"}", now)
    }

    fn sign(t: i64) -> String {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"whsec_test").unwrap();
        mac.update(format!("{t}.{{\"id\":\"evt_1\"}}").as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    #[test]
    fn accepts_any_matching_v1_and_refuses_the_rest() {
        let sig = sign(1000);
        assert_eq!(check(&format!("t=1000,v1={sig}"), 1000), Ok(()));
        assert_eq!(check(&format!("t=1000,v1=00ff,v1={sig},v0=abc"), 1100), Ok(()));
        assert_eq!(check(&format!("t=1000,v1={sig}"), 1000 + 301), Err(VerifyError::StaleTimestamp));
        assert_eq!(check("t=1000,v1=00ff", 1000), Err(VerifyError::Mismatch));
        assert!(matches!(check(&format!("v1={sig}"), 1000), Err(VerifyError::MalformedHeader(_))));
    }
}
