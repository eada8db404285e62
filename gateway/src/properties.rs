//! Hostile input, generated: whatever a provider, a handler or an operator sends the gateway's
//! parsers (the filter language, every signature header, receipts, config values and
//! durations), they never panic and refuse with one of the documented error codes.
//! (The HTTP routes get a corpus of malformed requests in the end-to-end tests.)

use std::sync::LazyLock;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;

use crate::config::{Config, bounds};
use crate::replay::filter;
use crate::verify::{Extract, HmacEncoding, Verifier, VerifyError};

/// Any header value HTTP can carry: visible ASCII, spaces and tabs, and obs-text bytes.
fn header_value() -> impl Strategy<Value = HeaderValue> {
    prop_oneof![
        "[ -~]{0,120}".prop_map(|s| HeaderValue::from_str(&s).expect("visible ASCII")),
        prop::collection::vec(prop_oneof![0x20u8..0x7f, 0x80u8..=0xff, Just(b'\t')], 0..120)
            .prop_map(|b| HeaderValue::from_bytes(&b).expect("no control bytes")),
        // Shapes close to the real ones, where parsers do arithmetic.
        (any::<i64>(), "[0-9a-f]{0,70}")
            .prop_map(|(t, sig)| HeaderValue::from_str(&format!("t={t},v1={sig}")).unwrap()),
        "(v1|v1a|sha256|t),[A-Za-z0-9+/=]{0,100}".prop_map(|s| HeaderValue::from_str(&s).unwrap()),
        "sha256=[0-9a-fA-F]{0,70}".prop_map(|s| HeaderValue::from_str(&s).unwrap()),
        any::<i64>().prop_map(|n| HeaderValue::from_str(&n.to_string()).unwrap()),
    ]
}

/// The headers signature kinds read, each present or not, with any value.
fn signature_headers() -> impl Strategy<Value = HeaderMap> {
    const NAMES: [&str; 8] = [
        "stripe-signature",
        "x-hub-signature-256",
        "x-signature",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "x-github-delivery",
        "x-request-id",
    ];
    prop::collection::vec((0..NAMES.len(), header_value()), 0..8).prop_map(|pairs| {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(HeaderName::from_static(NAMES[name]), value);
        }
        headers
    })
}

fn verifiers() -> Vec<Verifier> {
    let standard = receipts_sdk::webhook::WebhookVerifier {
        secret: Some(receipts_sdk::webhook::WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap()),
        public_keys: vec![receipts_sdk::webhook::decode_public_key(PUBLIC_KEY).expect("the test vector's key")],
        tolerance_secs: 300,
    };
    vec![
        Verifier::Stripe { secret: b"whsec_test".to_vec(), tolerance: Duration::from_secs(300) },
        Verifier::Github { secret: b"secret".to_vec() },
        Verifier::Standard(standard),
        Verifier::Hmac {
            secret: b"k".to_vec(),
            header: "x-signature".into(),
            encoding: HmacEncoding::Hex,
            prefix: "sha256=".into(),
        },
        Verifier::Hmac {
            secret: b"k".to_vec(),
            header: "x-signature".into(),
            encoding: HmacEncoding::Base64,
            prefix: String::new(),
        },
        Verifier::None,
    ]
}

/// The test vector's key pair (README): the seed is the bytes 0x01 to 0x20.
const SEED: [u8; 32] = [
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31,
    32,
];
const PUBLIC_KEY: &str = "ebVWLo/mVPlAeLES6KmLp5AfhTrmlb7X4OORC60ElmQ=";

static VERIFIERS: LazyLock<Vec<Verifier>> = LazyLock::new(verifiers);

/// Words and symbols of the filter language, to build near-miss expressions from.
fn filter_token() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "source",
            "event_type",
            "outcome",
            "error_code",
            "attempts",
            "received_at",
            "AND",
            "and",
            "OR",
            "IN",
            "NOT",
            "=",
            "!=",
            ">",
            "<",
            ">=",
            "<=",
            "==",
            "<>",
            "(",
            ")",
            ",",
            "unknown",
            "failed",
            "confirmed",
            "2026-11-26T06:00:00Z",
            "2026-11-26",
            "9999-12-31T23:59:59.999999999+14:00",
            "-0001-01-01T00:00:00Z",
            "'",
            "\"",
            "\\",
            "'E_DB'",
            "\"x\\\"y\"",
            "99999999999999999999",
            "-1",
            "0",
            "1e9",
        ])
        .prop_map(str::to_string),
        "[a-z_]{1,12}",
        any::<i64>().prop_map(|n| n.to_string()),
        "'[^']{0,20}'",
        ".{1,3}",
    ]
}

/// A well-formed filter expression: the language's grammar with valid values.
fn valid_filter() -> impl Strategy<Value = String> {
    // A bare value is any word but the language's keywords (`OR`, say, must be quoted).
    let bare = "[A-Za-z0-9_.]{1,12}".prop_filter("a keyword is no bare value", |word: &String| {
        !["AND", "OR", "IN", "NOT"].iter().any(|k| word.eq_ignore_ascii_case(k))
    });
    let text_value = prop_oneof![bare, "'[^'\\\\]{0,12}'", "\"[^\"\\\\]{0,12}\""];
    let clause = prop_oneof![
        (
            prop::sample::select(vec!["source", "event_type", "error_code"]),
            prop::sample::select(vec!["=", "!="]),
            text_value.clone()
        )
            .prop_map(|(f, op, v)| format!("{f} {op} {v}")),
        (prop::sample::select(vec!["source", "event_type", "error_code"]), prop::collection::vec(text_value, 1..5))
            .prop_map(|(f, vs)| format!("{f} IN ({})", vs.join(", "))),
        (prop::sample::select(vec!["=", "!="]), prop::sample::select(vec!["unknown", "failed", "confirmed"]))
            .prop_map(|(op, v)| format!("outcome {op} {v}")),
        (prop::sample::select(vec!["=", "!=", ">", "<", ">=", "<="]), 0..i64::MAX)
            .prop_map(|(op, n)| format!("attempts {op} {n}")),
        (prop::sample::select(vec![">", "<", ">=", "<="]), 0i64..253_402_300_799)
            .prop_map(|(op, secs)| format!("received_at {op} {}", crate::timestamp::format_ms(secs * 1000))),
    ];
    prop::collection::vec(clause, 1..=filter::MAX_CLAUSES).prop_map(|clauses| clauses.join(" AND "))
}

/// A duration setting as someone might write it, or mistype it.
fn duration_text() -> impl Strategy<Value = String> {
    prop_oneof![
        (0u64..10_000, prop::sample::select(vec!["ns", "us", "ms", "s", "m", "h", "d", "w", "y", "", "x"]))
            .prop_map(|(n, unit)| format!("{n}{unit}")),
        any::<u64>().prop_map(|n| format!("{n}s")),
        any::<u64>().prop_map(|n| format!("{n}y")),
        "[0-9a-z .]{0,16}",
        Just("99999999999999999999999h".to_string()),
        Just("-5s".to_string()),
        Just("1h 30m".to_string()),
    ]
}

/// A count setting as TOML takes it: any integer.
fn count_value() -> impl Strategy<Value = i64> {
    prop_oneof![any::<i64>(), -2i64..2_000_000]
}

fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn any_text_is_a_filter_or_a_filter_invalid_with_its_column(text in ".{0,200}") {
        check_filter(&text);
    }

    #[test]
    fn near_miss_expressions_are_refused_with_a_column(tokens in prop::collection::vec(filter_token(), 0..30)) {
        check_filter(&tokens.join(" "));
    }

    #[test]
    fn valid_filters_parse_and_read_back_the_same(text in valid_filter()) {
        let parsed = filter::parse(&text).map_err(|e| TestCaseError::fail(format!("{text:?}: {e}")))?;
        let again = filter::parse(&parsed.to_string()).map_err(|e| TestCaseError::fail(format!("{parsed}: {e}")))?;
        prop_assert_eq!(&again, &parsed);
        let (sql, params) = parsed.to_sql(1);
        prop_assert_eq!(sql.matches('$').count(), params.len());
    }

    #[test]
    fn signature_headers_never_panic_and_refuse_with_a_documented_code(
        headers in signature_headers(),
        body in prop::collection::vec(any::<u8>(), 0..256),
        now in any::<i64>(),
    ) {
        for verifier in VERIFIERS.iter() {
            match verifier.verify(&headers, &body, now) {
                Ok(()) => prop_assert!(
                    matches!(verifier, Verifier::None),
                    "{} accepted a request nobody signed", verifier.kind()
                ),
                Err(err) => prop_assert!(
                    ["signature_missing", "signature_malformed", "signature_invalid", "timestamp_stale"]
                        .contains(&err.code()),
                    "{err:?}"
                ),
            }
            let key = verifier.dedup_key(None, &headers, &body);
            prop_assert!(!key.is_empty() && key.len() <= 512, "{key:?}");
            let _ = verifier.event_type(None, &headers, &body);
        }
    }

    #[test]
    fn a_stripe_signature_with_any_timestamp_is_checked_not_overflowed(t in any::<i64>(), now in any::<i64>()) {
        use hmac::{KeyInit, Mac};
        let body = br#"{"id":"evt_1"}"#;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"whsec_test").unwrap();
        mac.update(format!("{t}.").as_bytes());
        mac.update(body);
        let mut headers = HeaderMap::new();
        let value = format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()));
        headers.insert("stripe-signature", HeaderValue::from_str(&value).unwrap());
        let verdict = VERIFIERS[0].verify(&headers, body, now);
        let fresh = now.abs_diff(t) <= 300;
        prop_assert_eq!(verdict, if fresh { Ok(()) } else { Err(VerifyError::StaleTimestamp) });
    }

    #[test]
    fn configured_extraction_never_panics(
        pointer in prop_oneof!["(/[a-z0-9~]{0,4}){0,4}", ".{0,12}"],
        body in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..64),
            "[\\[\\]{}\":,a-z0-9 ]{0,64}".prop_map(String::into_bytes),
        ],
    ) {
        let extract = Extract::JsonPointer(pointer);
        let key = Verifier::None.dedup_key(Some(&extract), &HeaderMap::new(), &body);
        prop_assert!(!key.is_empty() && key.len() <= 512);
        let _ = Verifier::None.event_type(Some(&extract), &HeaderMap::new(), &body);
    }

    #[test]
    fn config_durations_and_counts_are_in_range_or_refused_by_name(
        poll in duration_text(), lease in duration_text(), timeout in duration_text(),
        rung in duration_text(), sla in duration_text(), tolerance in duration_text(),
        in_flight in count_value(), source_in_flight in count_value(), jitter in any::<f64>(),
    ) {
        let text = format!(
            "[database]\nurl = \"sqlite://x.db\"\n[delivery]\npoll_interval = {}\nlease = {}\ntimeout = {}\n\
             max_in_flight = {in_flight}\njitter = {}\n[[sources]]\nname = \"s\"\n\
             verify = {{ kind = \"stripe\", secret = \"k\", tolerance = {} }}\nforward_to = \"http://127.0.0.1:1/\"\n\
             signing_secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\nretry_ladder = [{}]\nreceipt_sla = {}\n\
             max_in_flight = {source_in_flight}\n",
            toml_string(&poll), toml_string(&lease), toml_string(&timeout),
            toml::Value::Float(jitter), toml_string(&tolerance), toml_string(&rung), toml_string(&sla),
        );
        match Config::parse(&text, &|_| None) {
            Ok(config) => {
                let within = |d: Duration, (min, max): (Duration, Duration)| d >= min && d <= max;
                prop_assert!(within(config.delivery.poll_interval, bounds::POLL_INTERVAL));
                prop_assert!(within(config.delivery.lease, bounds::LEASE));
                prop_assert!(within(config.delivery.timeout, bounds::TIMEOUT));
                prop_assert!((1..=1_000_000).contains(&config.delivery.max_in_flight));
                prop_assert!((0.0..1.0).contains(&config.delivery.jitter));
                let source = &config.sources[0];
                prop_assert!((1..=1_000_000).contains(&source.max_in_flight));
                prop_assert!(within(source.receipt_sla, bounds::RECEIPT_SLA));
            }
            Err(err) => {
                let message = err.to_string();
                let named = ["poll_interval", "lease", "timeout", "max_in_flight", "jitter", "tolerance",
                    "retry_ladder", "receipt_sla", "invalid config"];
                prop_assert!(named.iter().any(|n| message.contains(n)), "{message}");
            }
        }
    }
}

fn check_filter(text: &str) {
    match filter::parse(text) {
        Ok(parsed) => {
            assert!(!parsed.clauses.is_empty() && parsed.clauses.len() <= filter::MAX_CLAUSES, "{text:?}");
            assert_eq!(filter::parse(&parsed.to_string()).as_ref(), Ok(&parsed), "{text:?} read back");
        }
        Err(err) => {
            assert_eq!(err.code(), "filter_invalid");
            let chars = text.chars().count();
            assert!(err.column >= 1 && err.column <= chars.max(filter::MAX_CHARS) + 1, "{text:?}: {err}");
        }
    }
}

/// The receipt desk against a real store (SQLite in a temp dir): every refusal is one of the
/// contract's codes with its status, and nothing hostile is recorded.
mod receipt_desk {
    use super::*;
    use crate::receipts::{ReceiptDesk, ReceiptKeys, Refusal, Via};
    use crate::store::Store;
    use base64::Engine;
    use ed25519_dalek::Signer;
    use receipts_sdk::receipt::{Receipt, ReceiptHeaders};

    struct Desk {
        runtime: tokio::runtime::Runtime,
        desk: ReceiptDesk,
        _dir: tempfile::TempDir,
    }

    /// `v1a,` + the signature of `{id}.{timestamp}.{body}` with the test vector's key.
    fn sign(id: &str, timestamp: i64, body: &[u8]) -> String {
        let content = receipts_sdk::webhook::signed_content(id, &timestamp.to_string(), body);
        let signature = ed25519_dalek::SigningKey::from_bytes(&SEED).sign(&content);
        format!("v1a,{}", base64::engine::general_purpose::STANDARD.encode(signature.to_bytes()))
    }

    static DESK: LazyLock<Desk> = LazyLock::new(|| {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("desk.db").display());
        let config = format!(
            "[database]\nurl = \"{url}\"\n[[sources]]\nname = \"orders\"\nverify = {{ kind = \"none\" }}\n\
             forward_to = \"http://127.0.0.1:1/\"\nsigning_secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n\
             receipt_keys = [{{ id = \"orders-1\", public_key = \"{PUBLIC_KEY}\" }}]\n"
        );
        let config = Config::parse(&config, &|_| None).expect("config");
        let desk = runtime.block_on(async {
            let store = Store::connect(&url).await.expect("store");
            let keys = ReceiptKeys::from_sources(&config.sources).expect("keys");
            let (bus, _) = tokio::sync::broadcast::channel(16);
            ReceiptDesk::new(store, keys, bus)
        });
        Desk { runtime, desk, _dir: dir }
    });

    const CODES: [(&str, u16); 9] = [
        ("receipt_header_missing", 401),
        ("receipt_key_unknown", 401),
        ("receipt_key_revoked", 401),
        ("receipt_timestamp_invalid", 401),
        ("receipt_timestamp_stale", 401),
        ("receipt_signature_invalid", 401),
        ("receipt_malformed", 400),
        ("event_unknown", 404),
        ("receipt_key_forbidden", 403),
    ];

    fn accept(headers: &[(&'static str, String)], body: &[u8], now_ms: i64) -> Result<(), Refusal> {
        let get = |name: &'static str| headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str());
        let desk = &*DESK;
        desk.runtime.block_on(async {
            let read = ReceiptHeaders::read(get).map_err(Refusal::Format)?;
            desk.desk.accept(read, body, now_ms, Via::Post).await.map(|_| ())
        })
    }

    fn documented(refusal: &Refusal) -> bool {
        CODES.iter().any(|(code, status)| *code == refusal.code() && *status == refusal.status().as_u16())
    }

    fn receipt_header() -> impl Strategy<Value = Option<String>> {
        prop::option::weighted(
            0.9,
            prop_oneof![
                "[ -~]{0,60}",
                any::<i64>().prop_map(|n| n.to_string()),
                Just("orders-1".to_string()),
                "v1a,[A-Za-z0-9+/=]{0,90}",
            ],
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn hostile_receipt_headers_and_bodies_get_a_documented_refusal(
            id in receipt_header(), timestamp in receipt_header(), key in receipt_header(), signature in receipt_header(),
            body in prop::collection::vec(any::<u8>(), 0..300), now_ms in any::<i64>(),
        ) {
            let headers: Vec<(&'static str, String)> = [("receipt-id", id), ("receipt-timestamp", timestamp),
                ("receipt-key", key), ("receipt-signature", signature)]
                .into_iter()
                .filter_map(|(n, v)| Some((n, v?)))
                .collect();
            let refusal = accept(&headers, &body, now_ms).expect_err("a receipt nobody signed");
            prop_assert!(documented(&refusal), "{} {}: {refusal}", refusal.status(), refusal.code());
        }

        #[test]
        fn signed_but_malformed_bodies_are_receipt_malformed_or_event_unknown(
            body in prop_oneof![
                prop::collection::vec(any::<u8>(), 0..300),
                "\\{\"event_id\":\"[ -~]{0,40}\",\"status\":\"(applied|failed|[a-z]{0,8})\"(,\"[a-z_]{1,16}\":(null|\"[ -~]{0,20}\"|[0-9]{1,5}))?\\}"
                    .prop_map(String::into_bytes),
            ],
            skew in -400i64..400,
        ) {
            let now = crate::clock::Clock::now_ms(&crate::clock::SystemClock);
            let signed_at = now.div_euclid(1000) + skew;
            let signature = sign("rcp_prop", signed_at, &body);
            let headers = vec![
                ("receipt-id", "rcp_prop".to_string()),
                ("receipt-timestamp", signed_at.to_string()),
                ("receipt-key", "orders-1".to_string()),
                ("receipt-signature", signature),
            ];
            let refusal = accept(&headers, &body, now).expect_err("no such event exists");
            prop_assert!(documented(&refusal), "{} {}: {refusal}", refusal.status(), refusal.code());
            let expected = match Receipt::parse(&body) {
                _ if skew.abs() > 300 => "receipt_timestamp_stale",
                Ok(_) => "event_unknown",
                Err(_) => "receipt_malformed",
            };
            prop_assert_eq!(refusal.code(), expected, "{}", refusal);
        }
    }
}
