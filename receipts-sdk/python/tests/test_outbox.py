"""The outbox's whole contract (the Rust SDK's outbox scenario), on every connection kind it
takes: sqlite3 and psycopg (DB-API), SQLAlchemy Connection and Session, each on SQLite and
PostgreSQL. Real databases, a real HTTP stand-in for the gateway."""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, List

import psycopg
import pytest
import sqlalchemy
from sqlalchemy.orm import sessionmaker

from hookwarden_receipts import (
    FlushReport,
    Flusher,
    OutboxStats,
    Receipt,
    ReceiptClient,
    ReceiptError,
    ReceiptStatus,
    RetryPolicy,
    already_processed,
    enqueue,
    ensure_schema,
    flush_once,
)
from hookwarden_receipts.outbox import SCHEMA, UnsupportedConnection, stats
from conftest import REPO_ROOT
from helpers import StandIn, eventually


class Backend:
    """One way of talking to one database: how to open a transaction, and the ``source``
    (a function opening a connection, an Engine, a sessionmaker) the flusher gets."""

    def __init__(self, source: Any, begin: Callable[[], Any], close: Callable[[], None] = lambda: None) -> None:
        self.source = source
        self._begin = begin
        self.close = close

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        """A connection in a transaction: committed at the end, unless the body rolled back."""
        conn = self._begin()
        try:
            yield conn
            conn.commit()
        finally:
            conn.close()

    def begin(self) -> Any:
        return self._begin()


def sqlalchemy_url(url: str) -> str:
    return url.replace("postgres://", "postgresql+psycopg://", 1)


@pytest.fixture(
    params=["sqlite3", "psycopg", "sqlalchemy-sqlite", "sqlalchemy-postgres", "session-sqlite", "session-postgres"]
)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    kind: str = request.param
    if kind.endswith("postgres") or kind == "psycopg":
        url = request.getfixturevalue("pg_url")
    else:
        url = f"sqlite:///{tmp_path / 'handler.db'}"
    if kind == "sqlite3":
        path = str(tmp_path / "handler.db")
        connect = lambda: sqlite3.connect(path, timeout=10)  # noqa: E731
        yield Backend(connect, connect)
    elif kind == "psycopg":
        connect_pg = lambda: psycopg.connect(url)  # noqa: E731
        yield Backend(connect_pg, connect_pg)
    else:
        engine = sqlalchemy.create_engine(sqlalchemy_url(url))
        if kind.startswith("session"):
            sessions = sessionmaker(engine)
            yield Backend(sessions, sessions, engine.dispose)
        else:
            yield Backend(engine, engine.connect, engine.dispose)
        engine.dispose()


def no_sleep(_: float) -> None:
    pass


def test_the_outbox_contract(backend: Backend, gateway_stand_in: StandIn) -> None:
    gateway = gateway_stand_in
    ensure_schema(backend.source)
    ensure_schema(backend.source)  # idempotent
    client = ReceiptClient(gateway.url, gateway.key, retry=RetryPolicy(2, 0.01, 0.01), sleep=no_sleep)

    # Rolled back: the receipt and the processed mark go with the transaction.
    tx = backend.begin()
    assert not already_processed(tx, "evt_a")
    enqueue(tx, Receipt.applied("evt_a"))
    tx.rollback()
    tx.close()
    assert flush_once(backend.source, client) == FlushReport()
    assert gateway.posts() == []

    # Committed: sent exactly once, under the id `enqueue` returned.
    receipt = Receipt.applied("evt_a", "ord_a")
    with backend.transaction() as tx:
        assert not already_processed(tx, "evt_a"), "the rollback un-marked evt_a"
        receipt_id = enqueue(tx, receipt)
    assert flush_once(backend.source, client) == FlushReport(sent=1)
    assert flush_once(backend.source, client) == FlushReport()
    (post,) = gateway.posts()
    assert (post.receipt_id, post.receipt, post.signature_ok) == (receipt_id, receipt, True)
    assert stats(backend.source) == OutboxStats(unsent=0, sent=1, rejected=0)

    # A replay of a committed event is a duplicate, in every later transaction.
    for _ in range(2):
        with backend.transaction() as tx:
            assert already_processed(tx, "evt_a")

    # Gateway down (503 on both client tries): queued, then sent under the same id.
    gateway.script(503, 503)
    with backend.transaction() as tx:
        id_b = enqueue(tx, Receipt.failed("evt_b", "E_DB", "deadlock"))
    report = flush_once(backend.source, client)
    assert report.sent == 0 and report.error is not None and "503" in report.error, report
    assert stats(backend.source).unsent == 1
    assert flush_once(backend.source, client).sent == 1
    posts = gateway.posts()[1:]
    assert len(posts) == 3
    assert all(
        p.receipt_id == id_b and p.receipt is not None and p.receipt.status is ReceiptStatus.FAILED for p in posts
    )

    # A 401 (the key is not accepted) is not the receipt's fault: it stays queued.
    gateway.script(401)
    with backend.transaction() as tx:
        enqueue(tx, Receipt.applied("evt_k"))
    report = flush_once(backend.source, client)
    assert (report.sent, report.rejected) == (0, 0) and report.error is not None and "401" in report.error, report
    assert flush_once(backend.source, client).sent == 1
    assert len(gateway.posts()) == 6

    # A receipt the gateway refuses for good is put aside; the next one still goes; oldest first.
    gateway.script(403)
    for event in ["evt_poison_1", "evt_c"]:
        with backend.transaction() as tx:
            enqueue(tx, Receipt.applied(event))
        time.sleep(0.003)
    assert flush_once(backend.source, client) == FlushReport(sent=1, rejected=1)
    assert [p.receipt.event_id for p in gateway.posts()[6:] if p.receipt] == ["evt_poison_1", "evt_c"]
    assert stats(backend.source) == OutboxStats(unsent=0, sent=4, rejected=1)
    assert flush_once(backend.source, client) == FlushReport()

    # A malformed receipt never reaches the outbox; a malformed row (written by hand) is put
    # aside without a post.
    with pytest.raises(ReceiptError):
        Receipt.failed("evt_d", "")
    with backend.transaction() as tx:
        with pytest.raises(TypeError):
            enqueue(tx, {"event_id": "evt_d", "status": "applied"})  # type: ignore[arg-type]
        execute(
            tx,
            "INSERT INTO hookwarden_receipt_outbox (receipt_id, event_id, body, created_at, attempts)"
            ' VALUES (\'rcp_hand\', \'evt_d\', \'{"event_id":"evt_d","status":"done"}\', 1, 0)',
        )
    assert flush_once(backend.source, client) == FlushReport(rejected=1)
    assert len(gateway.posts()) == 8

    # Two transactions marking one event: the second waits for the first; after the first
    # rolls back it marks the event itself.
    first = backend.begin()
    assert not already_processed(first, "evt_e")
    second: List[Any] = []

    def mark_in_second() -> None:
        started = time.monotonic()
        with backend.transaction() as tx:
            second.append(already_processed(tx, "evt_e"))
            second.append(time.monotonic() - started)

    thread = threading.Thread(target=mark_in_second)
    thread.start()
    time.sleep(0.3)
    first.rollback()
    first.close()
    thread.join(10)
    assert second[0] is False, "the first transaction rolled back"
    assert second[1] >= 0.25, f"the second did not wait: {second[1]:.3f}s"
    with backend.transaction() as tx:
        assert already_processed(tx, "evt_e")

    # The background flusher sends a committed receipt when woken, well before its interval.
    reports: List[FlushReport] = []
    flusher = Flusher(backend.source, client, interval=3600, on_report=reports.append).start()
    try:
        eventually("the flusher's first pass", lambda: reports or None, timeout=10)
        with backend.transaction() as tx:
            id_f = enqueue(tx, Receipt.applied("evt_f"))
        flusher.wake()
        eventually(
            "the woken flusher sent the receipt",
            lambda: any(p.receipt_id == id_f for p in gateway.posts()) or None,
            timeout=5,
        )
    finally:
        flusher.stop(10)
    assert stats(backend.source).unsent == 0


def execute(conn: Any, sql: str) -> None:
    if isinstance(conn, (sqlite3.Connection, psycopg.Connection)):
        conn.execute(sql)
    else:
        conn.execute(sqlalchemy.text(sql))


def test_the_flusher_posts_what_a_previous_run_committed(tmp_path: Path, gateway_stand_in: StandIn) -> None:
    """Its first pass runs at once: the receipt committed before a crash goes out on start."""
    path = tmp_path / "handler.db"
    connect = lambda: sqlite3.connect(path)  # noqa: E731
    ensure_schema(connect)
    with connect() as conn:
        receipt_id = enqueue(conn, Receipt.applied("evt_before_crash"))
    client = ReceiptClient(gateway_stand_in.url, gateway_stand_in.key, sleep=no_sleep)
    with Flusher(connect, client, interval=3600):
        eventually("the receipt posted on start", lambda: gateway_stand_in.posts() or None, timeout=5)
    assert [p.receipt_id for p in gateway_stand_in.posts()] == [receipt_id]


def test_unsupported_connections_are_refused(tmp_path: Path) -> None:
    engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with pytest.raises(UnsupportedConnection, match="not the Engine"):
        enqueue(engine, Receipt.applied("e"))
    with pytest.raises(UnsupportedConnection):
        already_processed(object(), "e")
    engine.dispose()


def test_the_tables_are_the_rust_sdks() -> None:
    """The same CREATE statements as receipts-sdk/src/outbox.rs, so a handler can move
    between the languages on one database."""
    source = (REPO_ROOT / "receipts-sdk" / "src" / "outbox.rs").read_text(encoding="utf-8")
    block = source.split("const SCHEMA: &[&str] = &[", 1)[1].split("];", 1)[0]
    rust = [" ".join(s.split()) for s in re.findall(r'"((?:[^"\\]|\\.)*)"', block, re.S)]
    python = [" ".join(s.split()) for s in SCHEMA]
    assert rust == python
    assert "pg_advisory_xact_lock(7261937401)" in source
