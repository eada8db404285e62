//! The handler side of hookwarden, and the one definition of its wire formats.
//!
//! - [`receipt`]: the signed receipt format (shared with the gateway), keys, inline receipts.
//! - [`webhook`]: Standard Webhooks signatures (`v1` HMAC-SHA256, `v1a` ed25519). The gateway
//!   signs every forward with it and verifies `standard` sources with it; handlers verify the
//!   gateway's forwards with it.
//!
//! Architecture invariant: this crate does no I/O in its format modules, so the gateway can
//! use them on its hot path without pulling in a client.

pub mod receipt;
pub mod webhook;
