//! Body-hash dedup for sources whose provider signs no timestamp (`body_dedup_window`).
//!
//! A GitHub or plain-HMAC signature covers the body only, so whoever holds one captured
//! request can send it again with a fresh delivery id and it verifies. For such a source,
//! `body_hashes` keeps, per body sha256, the first event that carried it and when: the same
//! body again within the window is that event's repeat, not a new one. The claim is one
//! upsert in the group commit's transaction, so two copies arriving at once (on any gateway)
//! store one event.

/// Takes the body for the new event `$3` received at `$4`, unless the body was seen at or
/// after `$5` (the window's start): one row changed means the body is the new event's.
pub(super) const CLAIM: &str = "INSERT INTO body_hashes (source, body_sha256, event_id, received_at) \
     VALUES ($1, $2, $3, $4) ON CONFLICT (source, body_sha256) DO UPDATE \
     SET event_id = excluded.event_id, received_at = excluded.received_at WHERE body_hashes.received_at < $5";

/// The event that carried the body first.
pub(super) const FIRST: &str = "SELECT event_id FROM body_hashes WHERE source = $1 AND body_sha256 = $2";

/// Points a claimed body at the event its request turned out to repeat (same delivery id).
pub(super) const POINT_AT: &str = "UPDATE body_hashes SET event_id = $3 WHERE source = $1 AND body_sha256 = $2";
