//! GitHub: `X-Hub-Signature-256: sha256=<hex>`, HMAC-SHA256 over the body. GitHub sends no
//! timestamp, so replay protection rests on the `X-GitHub-Delivery` dedup key.

use axum::http::HeaderMap;

use super::{HmacEncoding, VerifyError, hmac_header};

const HEADER: &str = "x-hub-signature-256";

/// GitHub's scheme is the generic one with its header, prefix and hex.
pub(super) fn verify(secret: &[u8], headers: &HeaderMap, body: &[u8]) -> Result<(), VerifyError> {
    hmac_header::verify(secret, HEADER, HmacEncoding::Hex, "sha256=", headers, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn githubs_documented_example() {
        // The example in GitHub's "Validating webhook deliveries" guide.
        let mut headers = HeaderMap::new();
        let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        headers.insert(HEADER, sig.parse().unwrap());
        assert_eq!(verify(b"It's a Secret to Everybody", &headers, b"Hello, World!"), Ok(()));
        assert_eq!(verify(b"wrong", &headers, b"Hello, World!"), Err(VerifyError::Mismatch));
        headers.insert(HEADER, "sha1=abc".parse().unwrap());
        assert!(matches!(verify(b"x", &headers, b""), Err(VerifyError::MalformedHeader(_))));
    }
}
