"""The handler's side of the status probe (docs/status-probe.md): which probes it answers,
and which receipt it answers for each event, from real outbox and inbox tables."""

from __future__ import annotations

import base64
import json
import sqlite3
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import nacl.signing
import psycopg
import pytest
from standardwebhooks import Webhook

from hookwarden_receipts import (
    Receipt,
    ReceiptKey,
    StatusProbe,
    already_processed,
    enqueue,
    ensure_schema,
    handle_status_probe,
    probe_receipt_id,
)

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OTHER_SECRET = "whsec_ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8="
NOW = 1_767_225_600
KEY = ReceiptKey.generate("orders-1")


def probe_body(event_ids: List[str], **changes: Any) -> bytes:
    value: Dict[str, Any] = {
        "type": "hookwarden.status_probe",
        "version": 1,
        "source": "orders",
        "event_ids": event_ids,
    }
    value.update(changes)
    return json.dumps(value).encode()


def signed(
    body: bytes, *, msg_id: str = "prb_01KDVDNA00M2GT58X4MPKAFA5A", secret: str = SECRET, at: int = NOW
) -> Dict[str, str]:
    signature = Webhook(secret).sign(msg_id, datetime.fromtimestamp(at, tz=timezone.utc), body.decode())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(at),
        "webhook-signature": signature,
        "hookwarden-source": "orders",
    }


@pytest.fixture(params=["sqlite", "postgres"])
def connect(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Any]:
    if request.param == "sqlite":
        path = tmp_path / "handler.db"
        connect_sqlite: Callable[[], Any] = lambda: sqlite3.connect(path)  # noqa: E731
        factory = connect_sqlite
    else:
        url = request.getfixturevalue("pg_url")
        factory = lambda: psycopg.connect(url)  # noqa: E731
    ensure_schema(factory)
    return factory


def commit(connect: Callable[[], Any], work: Callable[[Any], Optional[str]]) -> Optional[str]:
    conn = connect()
    try:
        out = work(conn)
        conn.commit()
        return out
    finally:
        conn.close()


def answer(probe: StatusProbe, event_ids: List[str], now: int = NOW) -> List[Dict[str, str]]:
    response = probe.handle(probe_body(event_ids), signed(probe_body(event_ids), at=now), now=now)
    assert response.status == 200, response.body
    entries: List[Dict[str, str]] = json.loads(response.body)["receipts"]
    return entries


def check_entry(entry: Dict[str, str], now: int) -> Receipt:
    """The checks the gateway makes of an answer entry; the receipt it carries."""
    assert set(entry) == {"receipt-id", "receipt-timestamp", "receipt-key", "receipt-signature", "receipt-body"}
    assert entry["receipt-key"] == KEY.key_id and entry["receipt-timestamp"] == str(now)
    body = base64.b64decode(entry["receipt-body"])
    content = f"{entry['receipt-id']}.{entry['receipt-timestamp']}.".encode() + body
    signature = base64.b64decode(entry["receipt-signature"].removeprefix("v1a,"))
    nacl.signing.VerifyKey(base64.b64decode(KEY.public_key_base64())).verify(content, signature)
    return Receipt.parse(body)


def test_each_event_is_answered_from_the_outbox_then_the_inbox(connect: Callable[[], Any]) -> None:
    probe = StatusProbe(secret=SECRET, key=KEY, db=connect)

    def applied_with_receipt(conn: Any) -> str:
        already_processed(conn, "evt_applied")
        return enqueue(conn, Receipt.applied("evt_applied", "ord_1"))

    applied_id = commit(connect, applied_with_receipt)
    failed_id = commit(connect, lambda conn: enqueue(conn, Receipt.failed("evt_failed", "E_REJECTED", "no stock")))
    commit(connect, lambda conn: str(already_processed(conn, "evt_inbox_only")))

    def failed_then_processed(conn: Any) -> None:
        enqueue(conn, Receipt.failed("evt_odd", "E_X"))
        already_processed(conn, "evt_odd")

    commit(connect, lambda conn: failed_then_processed(conn))  # type: ignore[func-returns-value]
    commit(connect, lambda conn: enqueue(conn, Receipt.failed("evt_retried", "E_DB")))
    time.sleep(0.003)
    retried_id = commit(connect, lambda conn: enqueue(conn, Receipt.applied("evt_retried", "ord_2")))

    asked = ["evt_unknown", "evt_failed", "evt_applied", "evt_inbox_only", "evt_odd", "evt_retried", "evt_applied"]
    entries = answer(probe, asked)
    got = [(e["receipt-id"], check_entry(e, NOW)) for e in entries]
    assert got == [
        (failed_id, Receipt.failed("evt_failed", "E_REJECTED", "no stock")),
        (applied_id, Receipt.applied("evt_applied", "ord_1")),
        (probe_receipt_id("evt_inbox_only"), Receipt.applied("evt_inbox_only")),
        (probe_receipt_id("evt_odd"), Receipt.applied("evt_odd")),
        (retried_id, Receipt.applied("evt_retried", "ord_2")),
    ]
    # Signed afresh at every probe; same ids and bodies.
    later = answer(probe, asked, now=NOW + 90)
    assert [(e["receipt-id"], e["receipt-body"]) for e in later] == [
        (e["receipt-id"], e["receipt-body"]) for e in entries
    ]
    assert {e["receipt-timestamp"] for e in later} == {str(NOW + 90)}
    assert answer(probe, ["evt_nobody_knows"]) == []


def refusal(body: bytes, headers: Dict[str, str], now: int = NOW, secret: Any = SECRET) -> tuple[int, str]:
    response = handle_status_probe(body, headers, secret=secret, key=KEY, db=lambda: None, now=now)
    assert response.content_type == "application/json"
    return response.status, json.loads(response.body)["error"]["code"]


def test_probes_not_signed_by_the_gateway_get_401() -> None:
    body = probe_body(["evt_1"])
    unsigned = {k: v for k, v in signed(body).items() if k != "webhook-signature"}
    assert refusal(body, unsigned) == (401, "probe_signature_invalid")
    assert refusal(body, signed(body, secret=OTHER_SECRET)) == (401, "probe_signature_invalid")
    assert refusal(body, signed(body), now=NOW + 301) == (401, "probe_signature_invalid")
    assert refusal(body, signed(body), now=NOW - 301) == (401, "probe_signature_invalid")
    assert refusal(body + b" ", signed(body)) == (401, "probe_signature_invalid")
    # An event forward, signed with the same secret, is never taken for a probe.
    assert refusal(body, signed(body, msg_id="evt_01KDVDNA00M2GT58X4MPKAFA59")) == (401, "probe_signature_invalid")
    # A source whose secret the handler does not have.
    assert refusal(body, signed(body), secret=lambda source: None) == (401, "probe_source_unknown")


@pytest.mark.parametrize(
    "body, code",
    [
        (b"not json", "probe_malformed"),
        (b'{"id":"evt_demo_1","type":"payment_intent.succeeded"}', "probe_malformed"),  # a forward's body
        (probe_body(["evt_1"], type="hookwarden.other"), "probe_malformed"),
        (probe_body(["evt_1"], version=2), "probe_version_unsupported"),
        (probe_body(["evt_1"], version="1"), "probe_version_unsupported"),
        (probe_body(["evt_1"], version=True), "probe_version_unsupported"),
        (probe_body([]), "probe_malformed"),
        (probe_body([f"evt_{i}" for i in range(101)]), "probe_malformed"),
        (probe_body(["evt_1", 7]), "probe_malformed"),  # type: ignore[list-item]
        (probe_body(["evt_1", ""]), "probe_malformed"),
        (probe_body(["evt_1"], source=""), "probe_malformed"),
        (probe_body(["evt_1"], source="github"), "probe_malformed"),  # not the header's source
    ],
)
def test_probes_the_handler_cannot_read_get_400(body: bytes, code: str) -> None:
    assert refusal(body, signed(body)) == (400, code)


def test_the_secret_is_chosen_by_source(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    ensure_schema(lambda: sqlite3.connect(path))
    secrets = {"orders": SECRET, "billing": OTHER_SECRET}
    probe = StatusProbe(secret=secrets.get, key=KEY, db=lambda: sqlite3.connect(path))  # type: ignore[arg-type]
    body = probe_body(["evt_1"])
    assert probe.handle(body, signed(body), now=NOW).status == 200
    assert probe.handle(body, signed(body, secret=OTHER_SECRET), now=NOW).status == 401
    billing = probe_body(["evt_1"], source="billing")
    headers = dict(signed(billing, secret=OTHER_SECRET), **{"hookwarden-source": "billing"})
    assert probe.handle(billing, headers, now=NOW).status == 200


def asgi_post(app: Any, path: str, body: bytes, headers: Dict[str, str]) -> tuple[int, Dict[str, str], bytes]:
    """One POST through an ASGI app, as a server would call it."""
    import asyncio

    sent: List[Dict[str, Any]] = []
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> Dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: Dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    data = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, data


def test_the_starlette_and_fastapi_helpers(tmp_path: Path) -> None:
    from fastapi import FastAPI
    from starlette.applications import Starlette

    from hookwarden_receipts.starlette import status_probe_endpoint, status_probe_route

    path = tmp_path / "h.db"
    ensure_schema(lambda: sqlite3.connect(path))
    with sqlite3.connect(path) as conn:
        already_processed(conn, "evt_1")
    probe = StatusProbe(secret=SECRET, key=KEY, db=lambda: sqlite3.connect(path))
    fastapi_app = FastAPI()
    fastapi_app.add_route("/hookwarden/status", status_probe_endpoint(probe), methods=["POST"])
    for app in [Starlette(routes=[status_probe_route(probe)]), fastapi_app]:
        now = int(time.time())
        body = probe_body(["evt_1", "evt_2"])
        status, headers, data = asgi_post(app, "/hookwarden/status", body, signed(body, at=now))
        assert status == 200 and headers["content-type"] == "application/json"
        (entry,) = json.loads(data)["receipts"]
        assert entry["receipt-id"] == probe_receipt_id("evt_1")
        assert abs(int(entry["receipt-timestamp"]) - now) <= 2
        status, _, data = asgi_post(app, "/hookwarden/status", body, signed(body, at=now - 600))
        assert (status, json.loads(data)["error"]["code"]) == (401, "probe_signature_invalid")
