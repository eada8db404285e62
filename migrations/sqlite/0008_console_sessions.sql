-- Operator console sessions: the browser holds a random session id in a cookie; the database
-- holds only its sha256, the hash of the token signed in with (re-checked on every request, so
-- revoking a token ends its sessions at once) and the session's CSRF token.
CREATE TABLE console_sessions (
    id_hash      TEXT PRIMARY KEY,
    token_hash   TEXT NOT NULL,
    csrf         TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL
);
CREATE INDEX console_sessions_last_seen ON console_sessions (last_seen_at);
