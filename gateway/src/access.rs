//! Who may do what: the roles of the admin API and the console, and how tokens are made and
//! kept. Both front ends (`http/` and the console) and the domain (the replay planner) ask
//! this module; it knows nothing of HTTP.

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
