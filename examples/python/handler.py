#!/usr/bin/env python3
"""orders handler in Python: a hookwarden handler in one file, written to be copied.

For every event the gateway forwards to ``POST /webhooks/{source}`` it:

1. checks the gateway's Standard Webhooks ``v1`` signature (HMAC-SHA256 with the source's
   ``whsec_`` secret over ``{webhook-id}.{webhook-timestamp}.{body}``), by hand;
2. records one order per event in SQLite and commits (a retry or replay of an event is a
   no-op: the event id is the primary key);
3. answers 200, and then posts an ``applied`` receipt to ``{HOOKWARDEN_URL}/v1/receipts``,
   signed with the handler's ed25519 key (PyNaCl), retrying under the same receipt id.

The receipt id is derived from the receipt's body, so every post of the same receipt (a
retry, or the one sent again when the gateway replays an event already applied) counts once
at the gateway. Unlike the Rust example (examples/src/orders_handler.rs) there is no outbox:
a crash between the commit and the post loses the receipt, the gateway flags the event
overdue, and replaying it makes this handler send the receipt again.

Configuration (environment):
- HANDLER_LISTEN (default 127.0.0.1:3000)
- HANDLER_DATABASE_URL (default sqlite://orders-py.db; SQLite only)
- HOOKWARDEN_URL: the gateway, where receipts go (default http://127.0.0.1:8080)
- SIGNING_SECRET: the source's signing_secret from the gateway config;
  SIGNING_SECRET_<SOURCE> (e.g. SIGNING_SECRET_GITHUB) overrides it for one source
- RECEIPT_KEY_ID, RECEIPT_KEY_SEED (required): the handler's receipt key (the seed is 32
  bytes, base64, as `hookwarden keys generate` prints it); its public half goes into the
  source's receipt_keys

Test hook, as in the Rust example: an event whose body has "fail": true is refused; the
handler answers 422 and sends a `failed` receipt with error code E_REJECTED.

Needs PyNaCl: pip install -r examples/python/requirements.txt
"""

import base64
import hashlib
import hmac
import json
import os
import sqlite3
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

try:
    import nacl.signing
except ImportError:
    sys.exit("PyNaCl is missing: pip install -r examples/python/requirements.txt")

TOLERANCE_SECS = 5 * 60


# --- The wire formats --------------------------------------------------------------------


def verify_forward(secret, headers, body, now=None):
    """Checks the gateway's Standard Webhooks `v1` signature; returns the event id or None."""
    msg_id = headers.get("webhook-id", "")
    timestamp = headers.get("webhook-timestamp", "")
    signature = headers.get("webhook-signature", "")
    if not (msg_id and timestamp.isdigit() and signature):
        return None
    if abs((now or time.time()) - int(timestamp)) > TOLERANCE_SECS:
        return None  # stale, or from the future
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{msg_id}.{timestamp}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    # The header may hold several space-separated `version,signature` entries.
    for entry in signature.split():
        version, _, sig = entry.partition(",")
        if version == "v1" and hmac.compare_digest(sig, expected):
            return msg_id
    return None


def receipt_body(event_id, status, target_record_id=None, error_code=None, detail=None):
    """The receipt JSON, compact, fields in the documented order, optional ones left out."""
    fields = {
        "event_id": event_id,
        "status": status,
        "target_record_id": target_record_id,
        "error_code": error_code,
        "detail": detail,
    }
    return json.dumps({k: v for k, v in fields.items() if v is not None}, separators=(",", ":")).encode()


def sign_receipt(signing_key, key_id, receipt_id, timestamp, body):
    """The four receipt headers: ed25519 over `{receipt-id}.{receipt-timestamp}.{body}`."""
    content = f"{receipt_id}.{timestamp}.".encode() + body
    signature = base64.b64encode(signing_key.sign(content).signature).decode()
    return {
        "receipt-id": receipt_id,
        "receipt-timestamp": str(timestamp),
        "receipt-key": key_id,
        "receipt-signature": "v1a," + signature,
    }


def load_key(seed_b64):
    return nacl.signing.SigningKey(base64.b64decode(seed_b64))


# --- Sending receipts --------------------------------------------------------------------


def post_receipt(config, body, tries=6):
    """Posts one receipt, retrying network errors, 5xx, 408 and 429 under the same id."""
    receipt_id = "rcp_" + hashlib.sha256(body).hexdigest()[:32]  # same receipt, same id
    url = config["gateway_url"].rstrip("/") + "/v1/receipts"
    for attempt in range(1, tries + 1):
        # Signed afresh on every try: the timestamp must be within 5 minutes of the gateway's clock.
        headers = sign_receipt(config["key"], config["key_id"], receipt_id, int(time.time()), body)
        headers["content-type"] = "application/json"
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                answer = json.load(response)
                log(f"receipt {receipt_id} accepted: outcome {answer.get('outcome')}")
                return True
        except urllib.error.HTTPError as e:
            error = e.read().decode(errors="replace")[:200]
            if e.code < 500 and e.code not in (408, 429):
                log(f"receipt {receipt_id} refused for good ({e.code}): {error}")
                return False
            log(f"receipt {receipt_id}: gateway answered {e.code}; try {attempt} of {tries}")
        except (urllib.error.URLError, OSError) as e:
            log(f"receipt {receipt_id}: gateway unreachable ({e}); try {attempt} of {tries}")
        time.sleep(min(0.25 * 2 ** (attempt - 1), 10))
    return False


def send_later(config, body):
    """Posts a receipt after the response went out, without holding up the gateway."""
    threading.Thread(target=post_receipt, args=(config, body), daemon=True).start()


# --- The business: one order per event -----------------------------------------------------


def open_db(path):
    db = sqlite3.connect(path, timeout=10)
    db.execute(
        "CREATE TABLE IF NOT EXISTS orders (event_id TEXT PRIMARY KEY, order_id TEXT NOT NULL,"
        " source TEXT NOT NULL, amount INTEGER, received_at INTEGER NOT NULL)"
    )
    return db


def record_order(config, source, event_id, event):
    """Commits the order; returns (order_id, inserted) or raises ValueError if it is refused."""
    obj = (event.get("data") or {}).get("object") or event  # Stripe-style or plain
    order_id = obj.get("id") or event.get("id")
    if not isinstance(order_id, str):
        raise ValueError("the event has no order id")
    if event.get("fail") is True:
        raise ValueError("the order was refused (test hook `fail: true`)")
    db = open_db(config["db_path"])
    try:
        with db:  # one transaction: commits on success, rolls back on error
            cursor = db.execute(
                "INSERT INTO orders (event_id, order_id, source, amount, received_at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (event_id) DO NOTHING",
                (event_id, order_id, source, obj.get("amount"), int(time.time())),
            )
        return order_id, cursor.rowcount == 1
    finally:
        db.close()


class Handler(BaseHTTPRequestHandler):
    config = None  # set in main()

    def do_POST(self):
        parts = self.path.strip("/").split("/")
        if len(parts) != 2 or parts[0] != "webhooks":
            self.reply(404, {"error": "not found"})
            return
        source = parts[1]
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        secret = self.config["secrets"].get(source.lower(), self.config["default_secret"])
        headers = {name.lower(): value for name, value in self.headers.items()}
        event_id = verify_forward(secret, headers, body)
        if event_id is None:
            self.reply(401, {"error": "the gateway's signature does not verify"})
            return
        try:
            order_id, inserted = record_order(self.config, source, event_id, json.loads(body))
        except (ValueError, AttributeError) as e:  # not JSON, or refused by the business rules
            self.reply(422, {"status": "rejected", "error_code": "E_REJECTED", "detail": str(e)})
            send_later(self.config, receipt_body(event_id, "failed", error_code="E_REJECTED", detail=str(e)))
            return
        # Committed: answer, then send the receipt (again for a duplicate: it counts once).
        self.reply(200, {"status": "applied" if inserted else "duplicate", "order_id": order_id})
        send_later(self.config, receipt_body(event_id, "applied", target_record_id=order_id))

    def do_GET(self):
        if self.path != "/orders":
            self.reply(404, {"error": "not found"})
            return
        db = open_db(self.config["db_path"])
        try:
            rows = db.execute(
                "SELECT event_id, order_id, source, amount, received_at FROM orders ORDER BY received_at, event_id"
            ).fetchall()
        finally:
            db.close()
        names = ("event_id", "order_id", "source", "amount", "received_at")
        self.reply(200, [dict(zip(names, row)) for row in rows])

    def reply(self, status, value):
        data = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def log_message(self, format, *args):
        log(format % args)


def log(message):
    print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def main():
    env = os.environ.get
    for name in ("RECEIPT_KEY_ID", "RECEIPT_KEY_SEED"):
        if not env(name):
            sys.exit(f"{name} must be set")
    database_url = env("HANDLER_DATABASE_URL", "sqlite://orders-py.db")
    if not database_url.startswith("sqlite://"):
        sys.exit("HANDLER_DATABASE_URL must be a sqlite:// URL")
    Handler.config = {
        "db_path": database_url.removeprefix("sqlite://"),
        "gateway_url": env("HOOKWARDEN_URL", "http://127.0.0.1:8080"),
        "default_secret": env("SIGNING_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        "secrets": {
            name.removeprefix("SIGNING_SECRET_").lower(): value
            for name, value in os.environ.items()
            if name.startswith("SIGNING_SECRET_")
        },
        "key_id": env("RECEIPT_KEY_ID"),
        "key": load_key(env("RECEIPT_KEY_SEED")),
    }
    open_db(Handler.config["db_path"]).close()  # create the table before the first request
    host, _, port = env("HANDLER_LISTEN", "127.0.0.1:3000").rpartition(":")
    server = ThreadingHTTPServer((host, int(port)), Handler)
    log(f"python orders handler listening on {host}:{port}, receipts to {Handler.config['gateway_url']}")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
