//! Hostile input, generated: receipt headers and bodies, inline receipts and forwarded
//! requests as an attacker (or a broken peer) might send them. The SDK's parsers never panic
//! and refuse with one of their documented errors.

use proptest::prelude::*;
use receipts_sdk::forwarded::{ForwardedError, verify_forwarded};
use receipts_sdk::receipt::{Receipt, ReceiptError, ReceiptHeaders, ReceiptKey, decode_inline_body};
use receipts_sdk::webhook::{WebhookHeaders, WebhookSecret, WebhookVerifier, decode_public_key};

const SEED: &str = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=";
const PUBLIC_KEY: &str = "ebVWLo/mVPlAeLES6KmLp5AfhTrmlb7X4OORC60ElmQ=";
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// A header value as it might arrive: anything printable, numbers of any size, signature shapes.
fn header() -> impl Strategy<Value = Option<String>> {
    prop::option::weighted(
        0.9,
        prop_oneof![
            "[ -~]{0,80}",
            any::<i64>().prop_map(|n| n.to_string()),
            "(v1|v1a|v2),[A-Za-z0-9+/=]{0,100}( (v1|v1a),[A-Za-z0-9+/=]{0,100})?",
            "[0-9]{15,30}",
        ],
    )
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..300),
        "\\{(\"(event_id|status|error_code|detail|target_record_id|extra)\":(null|true|[0-9]{1,4}|\"[ -~]{0,30}\"|\\[\\]|\\{\\}),?){0,6}\\}"
            .prop_map(String::into_bytes),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn receipt_bodies_parse_or_are_receipt_malformed(body in body()) {
        match Receipt::parse(&body) {
            Ok(receipt) => {
                prop_assert!(!receipt.event_id.is_empty() && receipt.event_id.len() <= 200);
                let again = serde_json::to_vec(&receipt).unwrap();
                prop_assert_eq!(Receipt::parse(&again), Ok(receipt));
            }
            Err(err) => prop_assert_eq!(err.code(), "receipt_malformed"),
        }
    }

    #[test]
    fn receipt_headers_read_check_and_verify_without_panic(
        id in header(), timestamp in header(), key in header(), signature in header(),
        body in body(), now in any::<i64>(),
    ) {
        let headers = [("receipt-id", id), ("receipt-timestamp", timestamp), ("receipt-key", key), ("receipt-signature", signature)];
        let get = |name: &str| headers.iter().find(|(n, _)| *n == name).and_then(|(_, v)| v.as_deref());
        let public = decode_public_key(PUBLIC_KEY).unwrap();
        match ReceiptHeaders::read(get) {
            Err(err) => prop_assert!(matches!(err, ReceiptError::MissingHeader(_)), "{err:?}"),
            Ok(read) => {
                if let Err(err) = read.check_timestamp(now) {
                    prop_assert!(matches!(err, ReceiptError::InvalidTimestamp | ReceiptError::StaleTimestamp));
                }
                prop_assert_eq!(read.verify_signature(&body, &public), Err(ReceiptError::BadSignature));
            }
        }
    }

    #[test]
    fn signed_receipts_verify_at_any_time_only_within_the_tolerance(t in any::<i64>(), now in any::<i64>()) {
        let key = ReceiptKey::from_seed_base64("orders-1", SEED).unwrap();
        let signed = key.sign(&Receipt::applied("evt_01KDVDNA00M2GT58X4MPKAFA59"), t);
        let headers = signed.headers();
        let read = ReceiptHeaders::read(|name| headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())).unwrap();
        prop_assert_eq!(read.verify_signature(&signed.body, &decode_public_key(PUBLIC_KEY).unwrap()), Ok(()));
        let expected = if now.abs_diff(t) <= 300 { Ok(()) } else { Err(ReceiptError::StaleTimestamp) };
        prop_assert_eq!(read.check_timestamp(now), expected);
    }

    #[test]
    fn inline_receipt_bodies_decode_or_are_refused(value in "[ -~]{0,200}") {
        if let Err(err) = decode_inline_body(&value) {
            prop_assert_eq!(err.code(), "receipt_malformed");
        }
    }

    #[test]
    fn forwarded_requests_verify_or_are_refused(
        id in header(), timestamp in header(), signature in header(), attempt in header(),
        body in body(), now in any::<i64>(),
    ) {
        let secret = WebhookSecret::parse(SECRET).unwrap();
        let headers = [("webhook-id", id), ("webhook-timestamp", timestamp), ("webhook-signature", signature),
            ("hookwarden-attempt", attempt), ("idempotency-key", Some("idk_1".to_string())), ("hookwarden-source", Some("s".to_string()))];
        let get = |name: &str| headers.iter().find(|(n, _)| *n == name).and_then(|(_, v)| v.as_deref());
        let refused = verify_forwarded(&secret, get, &body, now).expect_err("nobody signed this");
        prop_assert!(matches!(refused, ForwardedError::MissingHeader(_) | ForwardedError::Signature(_)), "{refused:?}");
    }

    #[test]
    fn webhook_signatures_at_any_time_are_stale_or_valid(t in any::<i64>(), now in any::<i64>(), body in body()) {
        let secret = WebhookSecret::parse(SECRET).unwrap();
        let signature = secret.sign("msg_1", t, &body);
        let timestamp = t.to_string();
        let found = WebhookHeaders { id: "msg_1", timestamp: &timestamp, signature: &signature };
        let verdict = WebhookVerifier::with_secret(secret).verify(found, &body, now);
        prop_assert_eq!(verdict.is_ok(), now.abs_diff(t) <= 300, "{:?}", verdict);
    }
}
