//! The audit log: append-only and hash-chained, so a changed or removed entry is detectable.
//!
//! Each entry's hash covers the previous entry's hash and the entry's own fields; the first
//! entry chains to [`GENESIS`]. The gateway appends (store::append_audit serialises appends);
//! `hookwarden audit verify` recomputes the chain from what the API returns.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The `prev_hash` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One entry of the audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub seq: i64,
    /// Unix ms.
    pub at: i64,
    /// The token name of whoever did it.
    pub actor: String,
    /// e.g. `replay.dry_run`, `replay.started`, `replay.finished`, `event.resolved`.
    pub action: String,
    /// What it was done to: a replay id, an event id, a token name.
    pub subject: Option<String>,
    pub details: serde_json::Value,
    pub prev_hash: String,
    pub hash: String,
}

/// The hash an entry must carry, from its fields and its predecessor's hash.
pub fn entry_hash(
    prev_hash: &str,
    seq: i64,
    at: i64,
    actor: &str,
    action: &str,
    subject: Option<&str>,
    details: &str,
) -> String {
    let canonical = serde_json::to_string(&(prev_hash, seq, at, actor, action, subject, details)).expect("serialises");
    hex::encode(Sha256::digest(canonical.as_bytes()))
}

/// Why a chain does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("entry {seq}: its hash does not match its contents (changed after it was written)")]
    HashMismatch { seq: i64 },
    #[error("entry {seq}: it does not chain to the entry before it (an entry was removed or reordered)")]
    Broken { seq: i64 },
}

/// Checks a contiguous run of entries, oldest first. `prev` is the hash the first entry must
/// chain to ([`GENESIS`] when the run starts at the beginning).
pub fn verify_chain(entries: &[AuditEntry], prev: &str) -> Result<(), ChainError> {
    let mut prev = prev.to_string();
    let mut expected_seq = entries.first().map(|e| e.seq);
    for e in entries {
        if e.prev_hash != prev || Some(e.seq) != expected_seq {
            return Err(ChainError::Broken { seq: e.seq });
        }
        let details = serde_json::to_string(&e.details).expect("serialises");
        if entry_hash(&e.prev_hash, e.seq, e.at, &e.actor, &e.action, e.subject.as_deref(), &details) != e.hash {
            return Err(ChainError::HashMismatch { seq: e.seq });
        }
        prev = e.hash.clone();
        expected_seq = Some(e.seq + 1);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chain(n: i64) -> Vec<AuditEntry> {
        let mut prev = GENESIS.to_string();
        (1..=n)
            .map(|seq| {
                let details = json!({ "n": seq, "note": "x" });
                let hash =
                    entry_hash(&prev, seq, seq * 10, "alice", "replay.started", Some("rpl_1"), &details.to_string());
                let e = AuditEntry {
                    seq,
                    at: seq * 10,
                    actor: "alice".into(),
                    action: "replay.started".into(),
                    subject: Some("rpl_1".into()),
                    details,
                    prev_hash: prev.clone(),
                    hash: hash.clone(),
                };
                prev = hash;
                e
            })
            .collect()
    }

    #[test]
    fn a_chain_verifies_and_tampering_is_found() {
        let good = chain(4);
        assert_eq!(verify_chain(&good, GENESIS), Ok(()));
        let mut edited = good.clone();
        edited[2].actor = "mallory".into();
        assert_eq!(verify_chain(&edited, GENESIS), Err(ChainError::HashMismatch { seq: 3 }));
        let mut removed = good.clone();
        removed.remove(1);
        assert_eq!(verify_chain(&removed, GENESIS), Err(ChainError::Broken { seq: 3 }));
        assert_eq!(verify_chain(&good[2..], &good[1].hash), Ok(()));
    }
}
