//! The one place that makes "nothing is sent after its receipt was recorded" hold.
//!
//! Before a retry or a replay goes out, the sender takes a hold on the event and reads its
//! receipt count under that hold; recording a receipt needs the same hold. So a receipt is
//! either recorded before the check (and the send is dropped) or only after the send ended.
//! In one process the hold is an async lock per event; on PostgreSQL it is also a row lock
//! (`FOR SHARE`) held across the send, which makes it hold across gateways.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;

use crate::domain::{EventId, Outcome};
use crate::store::{EventHold, Store, StoreError};

/// Per-event async locks, created on demand and dropped when nobody holds them.
#[derive(Default)]
pub struct EventLocks {
    map: Mutex<HashMap<EventId, Arc<tokio::sync::Mutex<()>>>>,
}

/// A held per-event lock; releases (and forgets the lock when unused) on drop.
pub struct EventLock<'a> {
    locks: &'a EventLocks,
    id: EventId,
    guard: Option<OwnedMutexGuard<()>>,
}

impl EventLocks {
    pub async fn lock(&self, id: &EventId) -> EventLock<'_> {
        let mutex = self.map.lock().expect("lock map").entry(id.clone()).or_default().clone();
        let guard = mutex.lock_owned().await;
        EventLock { locks: self, id: id.clone(), guard: Some(guard) }
    }
}

impl Drop for EventLock<'_> {
    fn drop(&mut self) {
        self.guard.take();
        let mut map = self.locks.map.lock().expect("lock map");
        if map.get(&self.id).is_some_and(|m| Arc::strong_count(m) == 1) {
            map.remove(&self.id);
        }
    }
}

/// Holds events against receipts while they are being sent.
pub struct SendGuard {
    store: Store,
    locks: EventLocks,
}

/// An event held for sending, with what was read under the hold.
pub struct Hold<'a> {
    pub receipts: i64,
    pub outcome: Outcome,
    _lock: EventLock<'a>,
    _db: EventHold,
}

impl SendGuard {
    pub fn new(store: Store) -> Self {
        Self { store, locks: EventLocks::default() }
    }

    /// Takes the hold for sending `id`; drop it when the send has ended.
    pub async fn hold(&self, id: &EventId) -> Result<Hold<'_>, StoreError> {
        let lock = self.locks.lock(id).await;
        let (db, receipts, outcome) = self.store.hold_event(id).await?;
        Ok(Hold { receipts, outcome, _lock: lock, _db: db })
    }

    /// Takes the in-process side of the hold, for recording a receipt.
    pub async fn for_receipt(&self, id: &EventId) -> EventLock<'_> {
        self.locks.lock(id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_lock_excludes_and_is_forgotten_after_use() {
        let locks = Arc::new(EventLocks::default());
        let id = EventId::generate();
        let first = locks.lock(&id).await;
        let (l2, id2) = (locks.clone(), id.clone());
        let waiter = tokio::spawn(async move {
            let _second = l2.lock(&id2).await;
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "the second holder got in while the first held the lock");
        drop(first);
        waiter.await.unwrap();
        assert!(locks.map.lock().unwrap().is_empty());
    }
}
