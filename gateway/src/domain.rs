//! The words of the domain as types: ids, outcomes, delivery states, events and attempts.
//!
//! Times are unix milliseconds (`i64`) everywhere inside; RFC 3339 only at the HTTP edge.

use std::sync::Mutex;

use serde::Serialize;

/// `evt_` + a ULID that sorts in the order events were received, also within one millisecond.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct EventId(String);

static ULIDS: Mutex<Option<ulid::Generator>> = Mutex::new(None);

impl EventId {
    /// A new id, monotonic within this process.
    pub fn generate() -> Self {
        let mut guard = ULIDS.lock().expect("id generator lock");
        let generator = guard.get_or_insert_with(ulid::Generator::new);
        // Overflow needs 2^80 ids in one millisecond; fall back to a fresh random one.
        let id = generator.generate().unwrap_or_else(|_| ulid::Ulid::new());
        Self(format!("evt_{id}"))
    }

    /// A new id at `now_ms` from `ids`, a gateway's generator (see [`EventIds`]).
    fn at(ids: &mut ulid::Generator, now_ms: i64) -> Self {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(now_ms.max(0) as u64);
        // Overflow needs 2^80 ids in one millisecond; fall back to a fresh random one.
        let id = ids.generate_from_datetime(at).unwrap_or_else(|_| ulid::Ulid::from_datetime(at));
        Self(format!("evt_{id}"))
    }

    /// Accepts a stored or user-given id of the right shape.
    pub fn parse(text: &str) -> Option<Self> {
        let rest = text.strip_prefix("evt_")?;
        ulid::Ulid::from_string(rest).ok()?;
        Some(Self(text.to_string()))
    }

    pub fn from_stored(text: String) -> Self {
        Self(text)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for EventId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A gateway's maker of event ids: from the gateway's clock (time is a dependency: a test may
/// skew it), monotonic within the gateway, also within one millisecond. Ids of different
/// gateways follow their hosts' clocks; the order events were received is the database's
/// (`seq`, see `store`), not the ids'.
#[derive(Default)]
pub struct EventIds(Mutex<ulid::Generator>);

impl EventIds {
    pub fn next(&self, now_ms: i64) -> EventId {
        EventId::at(&mut self.0.lock().expect("id generator lock"), now_ms)
    }
}

/// What the application did with an event, as far as receipts tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Confirmed,
    Failed,
    Unknown,
    /// An operator closed the event with a note: settled, without claiming the application
    /// applied it (an `applied` receipt still makes it `confirmed`).
    Resolved,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Confirmed => "confirmed",
            Outcome::Failed => "failed",
            Outcome::Unknown => "unknown",
            Outcome::Resolved => "resolved",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "confirmed" => Some(Outcome::Confirmed),
            "failed" => Some(Outcome::Failed),
            "unknown" => Some(Outcome::Unknown),
            "resolved" => Some(Outcome::Resolved),
            _ => None,
        }
    }
}

/// Where the gateway stands in handing an event over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    /// An attempt is scheduled (`next_attempt_at`).
    Pending,
    /// The handler answered 2xx.
    Delivered,
    /// Every attempt the ladder allows failed.
    Exhausted,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Exhausted => "exhausted",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "pending" => Some(DeliveryState::Pending),
            "delivered" => Some(DeliveryState::Delivered),
            "exhausted" => Some(DeliveryState::Exhausted),
            _ => None,
        }
    }
}

/// The error code an event carries when the ladder ran out.
pub const EXHAUSTED_ERROR_CODE: &str = "delivery_exhausted";

/// A header value exactly as the provider sent it. HTTP allows bytes that are not UTF-8 in a
/// value (obs-text, 0x80-0xFF), and the contract keeps headers byte for byte, so the value is
/// bytes. Stored and shown in JSON as a string when the bytes are UTF-8 (nearly always), or
/// else as `{"base64": "…"}` (standard alphabet, padded) of the exact bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderBytes(pub Vec<u8>);

impl HeaderBytes {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl From<&str> for HeaderBytes {
    fn from(text: &str) -> Self {
        Self(text.as_bytes().to_vec())
    }
}

/// The key of the JSON object a value that is not UTF-8 is written as.
const BASE64_KEY: &str = "base64";

impl Serialize for HeaderBytes {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use base64::Engine;
        use serde::ser::SerializeMap;
        match std::str::from_utf8(&self.0) {
            Ok(text) => serializer.serialize_str(text),
            Err(_) => {
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry(BASE64_KEY, &base64::engine::general_purpose::STANDARD.encode(&self.0))?;
                map.end()
            }
        }
    }
}

impl<'de> serde::Deserialize<'de> for HeaderBytes {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = HeaderBytes;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(r#"a header value: a string, or {"base64": "…"}"#)
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<HeaderBytes, E> {
                Ok(HeaderBytes(text.as_bytes().to_vec()))
            }

            fn visit_string<E: serde::de::Error>(self, text: String) -> Result<HeaderBytes, E> {
                Ok(HeaderBytes(text.into_bytes()))
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<HeaderBytes, A::Error> {
                use base64::Engine;
                let (key, encoded): (String, String) =
                    map.next_entry()?.ok_or_else(|| serde::de::Error::missing_field(BASE64_KEY))?;
                if key != BASE64_KEY || map.next_key::<String>()?.is_some() {
                    return Err(serde::de::Error::custom(r#"a header value object is {"base64": "…"} alone"#));
                }
                base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .map(HeaderBytes)
                    .map_err(|e| serde::de::Error::custom(format!("header value base64: {e}")))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// Headers as received, in order, as `(name, value)` pairs: names as HTTP made them (lower
/// case), values byte for byte.
pub type ReceivedHeaders = Vec<(String, HeaderBytes)>;

/// An inbound webhook that passed verification, ready to be stored.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub id: EventId,
    pub source: String,
    pub dedup_key: String,
    pub event_type: Option<String>,
    pub received_at: i64,
    /// Headers as received, in order, values byte for byte.
    pub headers: ReceivedHeaders,
    pub body: Vec<u8>,
    /// For sources with a `body_dedup_window`: the same body since then is a repeat.
    pub body_dedup: Option<BodyDedup>,
}

/// A body seen since `since` (unix ms) with this sha256 (hex) makes the event a repeat of
/// the first one, whatever its delivery id: a captured request of a provider that signs no
/// timestamp, sent again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyDedup {
    pub sha256: String,
    pub since: i64,
}

/// What storing an inbound webhook did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    New(EventId),
    /// The provider sent this event before; here is the id it got then.
    Duplicate(EventId),
}

/// An event as the admin API shows it (without its body unless asked).
#[derive(Debug, Clone, Serialize)]
pub struct EventSummary {
    pub id: EventId,
    pub source: String,
    pub provider_event_id: String,
    pub event_type: Option<String>,
    pub received_at: i64,
    pub outcome: Outcome,
    pub error_code: Option<String>,
    pub delivery_state: DeliveryState,
    pub attempts: i64,
    pub next_attempt_at: Option<i64>,
    pub delivered_at: Option<i64>,
    /// Why the outcome is what it is, when no receipt made it so (an event type that needs
    /// no receipt, confirmed by its 2xx).
    pub outcome_reason: Option<String>,
    /// Set when an operator closed the event's gap by hand.
    pub resolution: Option<Resolution>,
    /// When retention purged the event's headers and body (unix ms); its row stays.
    pub payload_purged_at: Option<i64>,
}

/// An operator's resolution of an event without replay: who, why, when (unix ms).
#[derive(Debug, Clone, Serialize)]
pub struct Resolution {
    pub by: String,
    pub note: String,
    pub at: i64,
}

/// One forward of an event to its handler.
#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    pub number: i64,
    pub kind: AttemptKind,
    pub replay_id: Option<String>,
    pub started_at: i64,
    pub latency_ms: i64,
    pub status_code: Option<i64>,
    pub error: Option<String>,
    pub response_excerpt: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AttemptKind {
    /// The first forward or a retry on the ladder.
    Scheduled,
    /// An operator's replay; does not use up the ladder.
    Replay,
}

impl AttemptKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptKind::Scheduled => "scheduled",
            AttemptKind::Replay => "replay",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(value: &[u8], json: &str) {
        let headers: ReceivedHeaders = vec![("x-note".into(), HeaderBytes(value.to_vec()))];
        let written = serde_json::to_string(&headers).unwrap();
        assert_eq!(written, format!(r#"[["x-note",{json}]]"#));
        let read: ReceivedHeaders = serde_json::from_str(&written).unwrap();
        assert_eq!(read, headers, "round trip of {value:?}");
    }

    #[test]
    fn header_values_keep_their_bytes() {
        check(b"application/json", r#""application/json""#);
        check("café".as_bytes(), r#""café""#);
        // obs-text: Latin-1 "café", not UTF-8.
        check(b"caf\xe9", r#"{"base64":"Y2Fm6Q=="}"#);
        check(b"", r#""""#);
        let refused = serde_json::from_str::<ReceivedHeaders>(r#"[["x",{"base64":"Y2Fm6Q==","more":1}]]"#);
        assert!(refused.is_err());
        assert!(serde_json::from_str::<ReceivedHeaders>(r#"[["x",{"hex":"00"}]]"#).is_err());
    }
}
