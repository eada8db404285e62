//! Who may do what: the roles of the admin API and the console, the sources a token is
//! scoped to, and how tokens are made and kept. Both front ends (`http/` and the console) and
//! the domain (the replay planner) ask this module; it knows nothing of HTTP.

use std::collections::BTreeSet;

/// What a token may do; each role may do everything of the ones below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

impl Role {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

/// The sources a token may see and act on. A token scoped to `stripe` reads, resolves and
/// replays `stripe`'s events only; other sources' events, replays and the audit log (which
/// spans every source) are not there for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceScope {
    All,
    Only(BTreeSet<String>),
}

impl SourceScope {
    pub fn allows(&self, source: &str) -> bool {
        match self {
            SourceScope::All => true,
            SourceScope::Only(sources) => sources.contains(source),
        }
    }

    /// The sources, when limited.
    pub fn limited_to(&self) -> Option<&BTreeSet<String>> {
        match self {
            SourceScope::All => None,
            SourceScope::Only(sources) => Some(sources),
        }
    }
}

/// What the store keeps of a token: its sha256, hex.
pub fn token_hash(token: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

/// A new bearer token: `hwt_` + 64 hex digits of randomness.
pub fn new_token() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("hwt_{}", hex::encode(bytes))
}
