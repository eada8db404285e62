//! The handler side of hookwarden, and the one definition of its wire formats.
//!
//! - [`receipt`]: the signed receipt format (shared with the gateway), keys, inline receipts.
//! - [`webhook`]: Standard Webhooks signatures (`v1` HMAC-SHA256, `v1a` ed25519). The gateway
//!   signs every forward with it and verifies `standard` sources with it; handlers verify the
//!   gateway's forwards with it.
//! - [`forwarded`]: a handler's check of a forward: signature, event id, idempotency key.
//! - [`probe`]: the status probe (docs/status-probe.md): the gateway's question, the
//!   handler's answer of receipts.
//! - [`client`] (feature `client`): posts receipts to the gateway, retrying under one id.
//! - [`outbox`] (feature `outbox`): a transactional outbox for receipts and an "already
//!   processed?" check, on sqlx (SQLite, PostgreSQL).
//!
//! Architecture invariant: this crate does no I/O in its format modules, so the gateway can
//! use them on its hot path without pulling in a client; the default features are empty.

pub mod forwarded;
pub mod probe;
pub mod receipt;
pub mod webhook;

#[cfg(feature = "client")]
pub mod client;
#[cfg(feature = "outbox")]
pub mod outbox;

#[cfg(all(test, feature = "client"))]
mod test_support;

/// The current unix time in seconds: the clock receipts and forwards are signed with.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// The five headers that put `receipt` on a handler's 2xx response (for a handler that
/// commits before it answers), signed now under a fresh receipt id.
pub fn inline_receipt_headers(key: &receipt::ReceiptKey, receipt: &receipt::Receipt) -> [(&'static str, String); 5] {
    key.sign(receipt, unix_now()).inline_headers()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::receipt::{HEADER_BODY, Receipt, ReceiptHeaders, ReceiptKey, decode_inline_body};

    #[test]
    fn inline_headers_verify() {
        let key = ReceiptKey::generate("orders-1");
        let receipt = Receipt::applied("evt_1").with_target_record("ord_1");
        let headers = inline_receipt_headers(&key, &receipt);
        let get = |name: &str| headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str());
        let body = decode_inline_body(get(HEADER_BODY).unwrap()).unwrap();
        let read = ReceiptHeaders::read(get).unwrap();
        let public = webhook::decode_public_key(&key.public_key_base64()).unwrap();
        assert_eq!(read.verify_signature(&body, &public), Ok(()));
        assert_eq!(read.check_timestamp(unix_now()), Ok(()));
        assert_eq!(Receipt::parse(&body), Ok(receipt));
    }
}
