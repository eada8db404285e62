"""End to end: a real gateway (HOOKWARDEN_BIN) and the example handler (examples/python,
FastAPI + SQLAlchemy + this SDK) as processes, the handler on SQLite and on PostgreSQL.

Forwards are verified, committed with their receipt in one transaction and confirmed
through the outbox; a kill -9 between the commit and the post delays the receipt until the
restart; a rolled-back transaction sends none; the status probe answers with receipts the
gateway accepts."""

from __future__ import annotations

import base64
import json
import sqlite3
import time
from contextlib import closing
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Tuple

import psycopg
import pytest
from standardwebhooks import Webhook

from conftest import hookwarden_bin
from hookwarden_receipts import Receipt, ReceiptKey, probe_receipt_id
from helpers import eventually
from processes import SIGNING_SECRET, Gateway, HandlerProcess, http

KEY = ReceiptKey.from_seed_base64("orders-handler-1", base64.b64encode(bytes([42] * 32)).decode())

Stack = Callable[..., Tuple[Gateway, HandlerProcess]]


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite://{tmp_path / 'orders.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
def stack(request: pytest.FixtureRequest, database_url: str) -> Iterator[Stack]:
    """Starts a gateway and the handler wired to each other; stops both, and shows their logs
    when the test failed."""
    started: List[Tuple[Gateway, HandlerProcess]] = []
    binary = hookwarden_bin()

    def start(ladder: List[str], max_attempts: int, **handler_env: str) -> Tuple[Gateway, HandlerProcess]:
        handler = HandlerProcess(database_url, "", KEY)
        gateway = Gateway(handler.forward_to, KEY, ladder, max_attempts).start(binary)
        handler.env["HOOKWARDEN_URL"] = gateway.url("")
        started.append((gateway, handler))
        return gateway, handler.start(**handler_env)

    yield start
    failed = getattr(request.node, "report_call", None) is not None and request.node.report_call.failed
    for gateway, handler in started:
        if failed:
            print(f"---- gateway log ----\n{gateway.log()}\n---- handler log ----\n{handler.log()}")
        handler.stop()
        gateway.stop()


def query(database_url: str, sql: str) -> List[Tuple[Any, ...]]:
    """Reads the handler's database directly."""
    if database_url.startswith("sqlite://"):
        with closing(sqlite3.connect(database_url[len("sqlite://") :])) as conn:
            return list(conn.execute(sql).fetchall())
    with psycopg.connect(database_url) as pg:
        return [tuple(row) for row in pg.execute(sql).fetchall()]  # type: ignore[arg-type]


def execute(database_url: str, sql: str) -> None:
    if database_url.startswith("sqlite://"):
        with closing(sqlite3.connect(database_url[len("sqlite://") :])) as conn, conn:
            conn.execute(sql)
        return
    with psycopg.connect(database_url) as pg:
        pg.execute(sql)  # type: ignore[arg-type]


def outbox(database_url: str) -> Dict[str, Tuple[str, Receipt, bool, Any]]:
    """The handler's outbox by event id: (receipt id, receipt, sent, last error)."""
    rows = query(database_url, "SELECT receipt_id, event_id, body, sent_at, last_error FROM hookwarden_receipt_outbox")
    return {event_id: (rid, Receipt.parse(body), sent is not None, error) for rid, event_id, body, sent, error in rows}


def receipts(event: Dict[str, Any]) -> List[Tuple[str, str, Any, Any]]:
    """The event's receipts at the gateway: (receipt id, status, error code, target record)."""
    out = []
    for r in event["receipts"]:
        assert r["key_id"] == KEY.key_id and r["via"] == "post", r
        out.append((r["receipt_id"], r["status"], r["error_code"], r["target_record_id"]))
    return out


def order_events(handler: HandlerProcess) -> List[str]:
    return sorted(o["event_id"] for o in handler.orders())


def probe(handler: HandlerProcess, event_ids: List[str]) -> Tuple[int, Any]:
    """A status probe signed as the gateway signs one."""
    body = json.dumps(
        {"type": "hookwarden.status_probe", "version": 1, "source": "orders", "event_ids": event_ids}
    ).encode()
    msg_id, now = "prb_01KDVDNA00M2GT58X4MPKAFA5A", datetime.now(timezone.utc)
    headers = {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(SIGNING_SECRET).sign(msg_id, now, body.decode()),
        "hookwarden-source": "orders",
    }
    return http("POST", handler.url("/hookwarden/status"), body, headers)


def repost(gateway: Gateway, entry: Dict[str, str]) -> Tuple[int, Any]:
    """A probe answer entry through the gateway's receipt checks (POST /v1/receipts): it is
    a receipt in the inline form, so the gateway must take it as one."""
    headers = {name: value for name, value in entry.items() if name != "receipt-body"}
    return gateway.post_receipt(headers, base64.b64decode(entry["receipt-body"]))


def test_forwards_are_committed_and_confirmed_through_the_outbox(stack: Stack, database_url: str) -> None:
    gateway, handler = stack(["300ms", "1s", "3s"], 4)
    events = []
    for n, body in enumerate(
        [
            {"id": "ord_1001", "type": "order.created", "amount": 1200},
            {"id": "ord_1002", "type": "order.created", "amount": 50},
            {
                "id": "evt_stripe_1",
                "type": "payment_intent.succeeded",
                "data": {"object": {"id": "ord_1003", "amount": 999}},
            },
        ]
    ):
        events.append((gateway.ingest(body), f"ord_100{n + 1}"))
    refused = gateway.ingest({"id": "ord_bad", "amount": 1, "fail": True})

    for event_id, order_id in events:
        event = gateway.wait_for_outcome(event_id, "confirmed")
        (receipt,) = receipts(event)
        assert receipt[1:] == ("applied", None, order_id), event
        assert event["attempts"] == 1, event
    event = gateway.wait_for_outcome(refused, "failed")
    assert event["error_code"] == "E_REJECTED"
    assert [r[1:3] for r in receipts(event)] == [("failed", "E_REJECTED")]

    # One order per event, under the event's id; the refused one rolled back.
    assert order_events(handler) == sorted(e for e, _ in events)
    # Every receipt the gateway has went out of the outbox, under its stored id.
    stored = eventually(
        "the outbox drained", lambda: (lambda o: o if all(r[2] for r in o.values()) else None)(outbox(database_url))
    )
    assert set(stored) == {e for e, _ in events} | {refused}
    for event_id in stored:
        (receipt,) = receipts(gateway.event(event_id))
        assert receipt[0] == stored[event_id][0] and stored[event_id][3] is None, (receipt, stored[event_id])

    # The provider retries the first event: the gateway has it already and does not forward
    # it again, so the handler records no second order.
    status, answer = http(
        "POST",
        gateway.url("/ingest/orders"),
        json.dumps({"id": "ord_1001", "type": "order.created", "amount": 1200}).encode(),
        {"content-type": "application/json"},
    )
    assert (status, answer["event_id"], answer["duplicate"]) == (200, events[0][0], True)
    time.sleep(0.5)
    assert order_events(handler) == sorted(e for e, _ in events)

    # The status probe answers each known event with its outbox receipt (same id, same
    # body: the gateway counts it as the receipt it has) and leaves the unknown one out.
    asked = [events[0][0], refused, "evt_01KDVDNA01ZZZZZZZZZZZZZZZZ", events[2][0]]
    status, answer = probe(handler, asked)
    assert status == 200, answer
    assert [e["receipt-id"] for e in answer["receipts"]] == [
        stored[events[0][0]][0],
        stored[refused][0],
        stored[events[2][0]][0],
    ]
    for entry in answer["receipts"]:
        status, accepted = repost(gateway, entry)
        assert status == 200 and accepted["duplicate"] is True, accepted


def test_a_kill_between_commit_and_post_only_delays_the_receipt(stack: Stack, database_url: str) -> None:
    gateway, handler = stack(["300ms", "1s", "3s"], 5, HANDLER_KILL_AFTER_COMMIT="ord_crash")
    crashed = gateway.ingest({"id": "ord_crash", "amount": 300})
    # The handler commits the order and its receipt, then kill -9s itself before the post.
    assert handler.process is not None
    assert handler.process.wait(timeout=20) == -9
    (stored_id, receipt, sent, _) = outbox(database_url)[crashed]
    assert (receipt, sent) == (Receipt.applied(crashed, "ord_crash"), False)
    assert [row[0] for row in query(database_url, "SELECT event_id FROM orders")] == [crashed]
    event = gateway.event(crashed)
    assert (event["outcome"], event["receipts"]) == ("unknown", []), event

    # The restart's first flush posts it, under the id stored before the crash.
    handler.start()
    event = gateway.wait_for_outcome(crashed, "confirmed")
    assert receipts(event) == [(stored_id, "applied", None, "ord_crash")], event
    # Only the outbox had that receipt id: the receipt is the one committed before the crash.
    assert order_events(handler) == [crashed]
    assert len(gateway.event(crashed)["receipts"]) == 1


def test_a_rolled_back_transaction_sends_no_receipt(stack: Stack, database_url: str) -> None:
    gateway, handler = stack(["200ms"], 2)
    rolled_back = gateway.ingest({"id": "ord_rollback", "amount": 7, "db_error": True})
    eventually(
        "the handler answered 500",
        lambda: gateway.event(rolled_back)["attempt_log"][:1] or None,
    )
    assert gateway.event(rolled_back)["attempt_log"][0]["status_code"] == 500
    # A later event goes through the same flusher and is confirmed: the flusher works, and
    # had every chance to send a receipt for the rolled-back one.
    later = gateway.ingest({"id": "ord_after", "amount": 8})
    gateway.wait_for_outcome(later, "confirmed")
    time.sleep(0.5)  # more than two flush intervals
    event = gateway.event(rolled_back)
    # No receipt at all (the outcome is the gateway's own verdict on an exhausted ladder).
    assert event["receipts"] == [] and event["outcome"] != "confirmed", event
    assert rolled_back not in outbox(database_url)
    assert order_events(handler) == [later]


def test_the_probe_settles_an_event_whose_receipt_was_lost(stack: Stack, database_url: str) -> None:
    """The handler applied the event but its receipt is gone (a handler from before receipts,
    a lost outbox): the inbox answers `applied` under the probe receipt id, and the gateway
    takes that answer as a receipt; asking twice records one receipt."""
    gateway, handler = stack(["300ms"], 2, HANDLER_PAUSE_FLUSH="1")
    applied = gateway.ingest({"id": "ord_lost", "amount": 5})
    eventually("the event delivered", lambda: gateway.event(applied)["delivery_state"] == "delivered" or None)
    execute(database_url, "DELETE FROM hookwarden_receipt_outbox")
    assert gateway.event(applied)["outcome"] == "unknown"

    for duplicate in (False, True):
        status, answer = probe(handler, [applied, "evt_01KDVDNA01ZZZZZZZZZZZZZZZZ"])
        assert status == 200, answer
        (entry,) = answer["receipts"]
        assert entry["receipt-id"] == probe_receipt_id(applied)
        assert Receipt.parse(base64.b64decode(entry["receipt-body"])) == Receipt.applied(applied)
        status, accepted = repost(gateway, entry)
        assert (status, accepted["outcome"], accepted["duplicate"]) == (200, "confirmed", duplicate), accepted
    assert [r["receipt_id"] for r in gateway.event(applied)["receipts"]] == [probe_receipt_id(applied)]

    # A probe the gateway did not sign gets 401 and no answer.
    status, answer = http("POST", handler.url("/hookwarden/status"), b"{}", {"content-type": "application/json"})
    assert (status, answer["error"]["code"]) == (401, "probe_signature_invalid")
