//! Fresh events handed from the group commit straight to the dispatcher (SQLite).
//!
//! A new event is due the moment it commits, and the commit task still holds its headers
//! and body; claiming it back from the database cost a read of the row and its payload per
//! event. So the commit task leases a group's events to this gateway *before* the commit
//! (a concurrent claim skips a leased event) and, once it committed, queues them for the
//! dispatcher. The database still drives delivery: the event is due in its row until its
//! result commits, so an event the queue had no room for, or that a crash caught in the
//! queue, is claimed from the store like any other due delivery. Only the commit task
//! queues events, after their commit, so a provider that hangs up cannot skip one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, mpsc};

use super::{AttemptRecord, DueDelivery, Pool, Store, StoreError};
use crate::domain::{NewEvent, Stored};

/// The commit task's end.
pub struct Handoff {
    sender: mpsc::Sender<DueDelivery>,
    /// The gateway whose dispatcher takes the queue; fresh events are leased to it.
    pub(super) owner: String,
    missed: Arc<AtomicBool>,
    wake: Arc<Notify>,
}

/// The dispatcher's end.
pub struct FreshDeliveries {
    receiver: Mutex<mpsc::Receiver<DueDelivery>>,
    missed: Arc<AtomicBool>,
}

/// A queue of `capacity` fresh deliveries for `owner`, whose dispatcher `wake` nudges.
pub fn handoff(capacity: usize, owner: &str, wake: Arc<Notify>) -> (Handoff, FreshDeliveries) {
    let (sender, receiver) = mpsc::channel(capacity);
    let missed = Arc::new(AtomicBool::new(false));
    (
        Handoff { sender, owner: owner.to_string(), missed: missed.clone(), wake },
        FreshDeliveries { receiver: Mutex::new(receiver), missed },
    )
}

/// Room reserved for the first `len()` events of a group, taken before it commits.
pub(super) struct Reserved<'a> {
    permits: Option<mpsc::PermitIterator<'a, DueDelivery>>,
    handoff: &'a Handoff,
}

impl Handoff {
    /// Reserves room for up to `events` fresh deliveries; what does not fit is left to a
    /// claim from the store, which the dispatcher is told to make.
    pub(super) fn reserve(&self, events: usize) -> Reserved<'_> {
        let room = events.min(self.sender.capacity());
        let permits = (room > 0).then(|| self.sender.try_reserve_many(room).ok()).flatten();
        if permits.as_ref().map_or(0, ExactSizeIterator::len) < events {
            self.missed.store(true, Ordering::Release);
        }
        Reserved { permits, handoff: self }
    }
}

impl Reserved<'_> {
    /// How many of the group's first events have room.
    pub(super) fn len(&self) -> usize {
        self.permits.as_ref().map_or(0, |p| p.len())
    }

    /// Queues committed new events (in order, at most [`Self::len`] of them).
    pub(super) fn send(mut self, events: impl IntoIterator<Item = NewEvent>) {
        let Some(permits) = self.permits.take() else { return };
        let mut sent = false;
        for (permit, event) in permits.zip(events) {
            permit.send(DueDelivery {
                event_type: event.event_type,
                event_id: event.id,
                source: event.source,
                dedup_key: event.dedup_key,
                headers: event.headers,
                body: event.body,
                attempts: 0,
                ladder_attempts: 0,
            });
            sent = true;
        }
        if sent {
            self.handoff.wake.notify_one();
        }
    }
}

impl FreshDeliveries {
    /// Up to `limit` queued deliveries, without waiting.
    pub fn take(&self, limit: usize) -> Vec<DueDelivery> {
        let mut receiver = self.receiver.lock().expect("fresh queue");
        let mut taken = Vec::new();
        while taken.len() < limit {
            match receiver.try_recv() {
                Ok(delivery) => taken.push(delivery),
                Err(_) => break,
            }
        }
        taken
    }

    /// Whether the commit task found the queue full since the last call: the store then
    /// holds fresh events that only a claim will find.
    pub fn missed(&self) -> bool {
        self.missed.swap(false, Ordering::AcqRel)
    }
}

impl Store {
    /// [`Store::commit_group`], handing the group's new events to `handoff`'s dispatcher once
    /// they committed (those there is room for; the rest stay for a claim).
    pub(super) async fn commit_and_hand_off(
        &self,
        events: Vec<NewEvent>,
        attempts: &[AttemptRecord],
        handoff: Option<&Handoff>,
    ) -> Result<(Vec<Stored>, Vec<bool>), StoreError> {
        let leases = match (&self.pool, handoff) {
            (Pool::Sqlite { leases, .. }, Some(handoff)) => Some((leases, handoff)),
            _ => None,
        };
        let Some((leases, handoff)) = leases else {
            return self.commit_group(&events, attempts).await;
        };
        let reserved = handoff.reserve(events.len());
        let queued = reserved.len();
        // Leased before the commit: a claim that sees the rows skips them.
        leases.hold_fresh(events[..queued].iter().map(|e| e.id.as_str()), &handoff.owner);
        let committed = self.commit_group(&events, attempts).await;
        let new: Vec<bool> = match &committed {
            Ok((stored, _)) => stored.iter().map(|s| matches!(s, Stored::New(_))).collect(),
            Err(_) => vec![false; events.len()],
        };
        leases.release(
            events[..queued]
                .iter()
                .zip(&new)
                .filter(|(_, new)| !**new)
                .map(|(e, _)| (handoff.owner.as_str(), e.id.as_str())),
        );
        reserved.send(events.into_iter().take(queued).zip(new).filter(|(_, new)| *new).map(|(e, _)| e));
        committed
    }
}
