//! Guardrailed replay: the filter language, the planner (the dry run) and the executor; and
//! closing gaps without replay, a selection at a time (`resolve`); listing jobs (`jobs`).
//!
//! Architecture invariants: a replay never sends an event outside its mandatory scope; a
//! `confirmed` event is only eligible under an override that carries its own note; every
//! send is decided by `Store::check_before_send`, so nothing is sent after its receipt was
//! recorded.

pub mod executor;
pub mod filter;
pub mod jobs;
pub mod pace;
pub mod plan;
pub mod rate;
pub mod resolve;
