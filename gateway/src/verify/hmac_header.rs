//! A generic HMAC-SHA256 of the body in a configured header, hex or base64, with an optional
//! prefix (such as `sha256=`), for providers without a kind of their own.

use axum::http::HeaderMap;
use base64::Engine;
use hmac::{KeyInit, Mac};

use super::{HmacEncoding, VerifyError, header};

pub(super) fn verify(
    secret: &[u8],
    name: &str,
    encoding: HmacEncoding,
    prefix: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), VerifyError> {
    let value = header(headers, name)?.trim();
    let encoded = value.strip_prefix(prefix).ok_or_else(|| VerifyError::MalformedHeader(name.to_string()))?;
    let sig = match encoding {
        HmacEncoding::Hex => hex::decode(encoded).ok(),
        HmacEncoding::Base64 => base64::engine::general_purpose::STANDARD.decode(encoded).ok(),
    }
    .ok_or_else(|| VerifyError::MalformedHeader(name.to_string()))?;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).expect("any key length");
    mac.update(body);
    mac.verify_slice(&sig).map_err(|_| VerifyError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_with_prefix() {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"k").unwrap();
        mac.update(b"body");
        let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        let mut headers = HeaderMap::new();
        headers.insert("x-sig", format!("sha256={sig}").parse().unwrap());
        assert_eq!(verify(b"k", "x-sig", HmacEncoding::Base64, "sha256=", &headers, b"body"), Ok(()));
        assert_eq!(
            verify(b"k", "x-sig", HmacEncoding::Base64, "sha256=", &headers, b"other"),
            Err(VerifyError::Mismatch)
        );
        assert!(matches!(
            verify(b"k", "x-sig", HmacEncoding::Hex, "sha256=", &headers, b"body"),
            Err(VerifyError::MalformedHeader(_))
        ));
    }
}
