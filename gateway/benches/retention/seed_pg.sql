-- Seeds a migrated PostgreSQL database for purge_throughput.sh (psql -v n=… -v t0=…).
-- N settled events received 2 h ago, each with a 1 KiB payload and one attempt.
INSERT INTO events (id, source, dedup_key, event_type, received_at, delivery_state, outcome, attempts, ladder_attempts, delivered_at)
SELECT 'evt_' || lpad(upper(to_hex(g)), 26, '0'), 'orders', 'k' || g, 't', :t0 + g, 'delivered', 'confirmed', 1, 1, :t0 + g
FROM generate_series(1, :n) g;
INSERT INTO event_payloads (event_id, headers, body)
SELECT 'evt_' || lpad(upper(to_hex(g)), 26, '0'), '[]', convert_to(repeat('x', 1024), 'UTF8') FROM generate_series(1, :n) g;
INSERT INTO attempts (event_id, number, kind, gateway, started_at, latency_ms, status_code)
SELECT 'evt_' || lpad(upper(to_hex(g)), 26, '0'), 1, 'scheduled', 'seed', :t0 + g, 3, 200 FROM generate_series(1, :n) g;
