-- Tokens scoped to sources, with an optional expiry; the body hashes of the sources that
-- dedup on them (providers that sign no timestamp); a row `/readyz` writes to find out
-- whether a store that failed a write takes writes again.
ALTER TABLE tokens ADD COLUMN sources TEXT;        -- a JSON array of source names; NULL: every source
ALTER TABLE tokens ADD COLUMN expires_at INTEGER;  -- unix ms; NULL: never

CREATE TABLE body_hashes (
    source      TEXT NOT NULL,
    body_sha256 TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (source, body_sha256)
);

CREATE TABLE write_probe (
    id INTEGER PRIMARY KEY,
    at INTEGER NOT NULL
);
