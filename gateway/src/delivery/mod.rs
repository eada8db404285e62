//! Handing events to their handlers: the signed forward, the retry ladder, and the
//! dispatcher that drives both from the database.
//!
//! Architecture invariant: nothing here is handed an event in memory by the ingest path; the
//! dispatcher only delivers what it claimed from the store, so an event that was committed is
//! delivered even if the request that brought it was dropped, or the gateway died.

mod dispatcher;
mod forwarder;
mod health;
mod ladder;

pub use dispatcher::{Dispatcher, DispatcherHandle};
pub use forwarder::{ForwardRequest, ForwardResult, Forwarder, InlineReceipt, idempotency_key};
pub use ladder::{NextStep, RetryLadder};
