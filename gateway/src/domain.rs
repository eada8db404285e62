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

/// What the application did with an event, as far as receipts tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Confirmed,
    Failed,
    Unknown,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Confirmed => "confirmed",
            Outcome::Failed => "failed",
            Outcome::Unknown => "unknown",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "confirmed" => Some(Outcome::Confirmed),
            "failed" => Some(Outcome::Failed),
            "unknown" => Some(Outcome::Unknown),
            _ => None,
        }
    }
}

/// Where the gateway stands in handing an event over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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

/// An inbound webhook that passed verification, ready to be stored.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub id: EventId,
    pub source: String,
    pub dedup_key: String,
    pub event_type: Option<String>,
    pub received_at: i64,
    /// Headers as received, in order, as `[name, value]` pairs.
    pub headers: Vec<(String, String)>,
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
    /// Set when an operator closed the event's gap by hand.
    pub resolution: Option<Resolution>,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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
