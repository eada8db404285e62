"""A transactional outbox for receipts, and an "already processed?" inbox.

The handler writes its receipt into ``hookwarden_receipt_outbox`` in the SAME transaction as
its business write (:func:`enqueue`); a flusher posts it after the commit (:func:`flush_once`,
:class:`Flusher`). So a receipt is sent if and only if the commit happened, also across a
crash: a rolled-back transaction takes its receipt with it, and a receipt committed just
before a crash is posted by the next flusher. Posts are at least once, under the receipt's
stored id, which the gateway counts once. :func:`already_processed` marks an event processed
in the caller's transaction and says whether it already was.

The tables and columns are the Rust SDK's (``receipts_sdk::outbox``), so a handler can move
between the two languages, or run both, on one database (times are unix milliseconds)::

    hookwarden_receipt_outbox(receipt_id TEXT PRIMARY KEY, event_id TEXT, body TEXT,
        created_at BIGINT, sent_at BIGINT NULL, attempts BIGINT, last_error TEXT NULL)
    hookwarden_processed_events(event_id TEXT PRIMARY KEY, processed_at BIGINT)

A row with ``sent_at`` set and ``last_error`` NULL was accepted; with both set the gateway
refused it for good (a final 4xx other than 401) and it was put aside.

Connections: a DB-API connection (``sqlite3``, ``psycopg`` 3, ``psycopg2``) or SQLAlchemy's
``Connection`` or ``Session``, on SQLite or PostgreSQL. :func:`enqueue` and
:func:`already_processed` run in the caller's transaction and never commit; the functions
that work on their own (:func:`ensure_schema`, :func:`flush_once`, :func:`stats`) take a
connection they may commit on, a SQLAlchemy ``Engine``, or a function that opens a connection.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Set, Tuple

from .client import ClientError, ReceiptClient, ReceiptRejected
from .receipt import Receipt, ReceiptError, new_receipt_id

__all__ = [
    "Flusher",
    "FlushReport",
    "OutboxStats",
    "StoredReceipt",
    "UnsupportedConnection",
    "already_processed",
    "enqueue",
    "ensure_schema",
    "flush_once",
    "lookup_events",
    "start_flusher",
    "stats",
]

log = logging.getLogger("hookwarden_receipts.outbox")

#: How many unsent receipts one query picks up.
BATCH = 100

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS hookwarden_receipt_outbox (
        receipt_id TEXT PRIMARY KEY,
        event_id TEXT NOT NULL,
        body TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        sent_at BIGINT NULL,
        attempts BIGINT NOT NULL DEFAULT 0,
        last_error TEXT NULL
    )""",
    """CREATE INDEX IF NOT EXISTS hookwarden_receipt_outbox_unsent
        ON hookwarden_receipt_outbox (created_at) WHERE sent_at IS NULL""",
    """CREATE TABLE IF NOT EXISTS hookwarden_processed_events (
        event_id TEXT PRIMARY KEY,
        processed_at BIGINT NOT NULL
    )""",
)

# PostgreSQL: two processes creating the same tables at once may collide; this
# transaction-scoped lock (the Rust SDK's, same number) makes them take turns.
_PG_SCHEMA_LOCK = "SELECT pg_advisory_xact_lock(7261937401)"

_INSERT_RECEIPT = """INSERT INTO hookwarden_receipt_outbox (receipt_id, event_id, body, created_at, attempts)
    VALUES (:receipt_id, :event_id, :body, :now_ms, 0)"""
_MARK_PROCESSED = """INSERT INTO hookwarden_processed_events (event_id, processed_at) VALUES (:event_id, :now_ms)
    ON CONFLICT (event_id) DO NOTHING"""
_UNSENT = """SELECT receipt_id, body FROM hookwarden_receipt_outbox WHERE sent_at IS NULL
    ORDER BY created_at, receipt_id LIMIT :limit"""
# `sent_at IS NULL`: a receipt another flusher already sent stays sent.
_RECORD_TRY = """UPDATE hookwarden_receipt_outbox SET attempts = attempts + 1, sent_at = :sent_at,
    last_error = :error WHERE receipt_id = :receipt_id AND sent_at IS NULL"""
_STATS = """SELECT COUNT(CASE WHEN sent_at IS NULL THEN 1 END),
        COUNT(CASE WHEN sent_at IS NOT NULL AND last_error IS NULL THEN 1 END),
        COUNT(CASE WHEN sent_at IS NOT NULL AND last_error IS NOT NULL THEN 1 END)
    FROM hookwarden_receipt_outbox"""


class UnsupportedConnection(TypeError):
    """Not a connection the outbox knows how to talk to."""


@dataclass(frozen=True)
class FlushReport:
    """What one :func:`flush_once` pass did."""

    #: Receipts the gateway accepted.
    sent: int = 0
    #: Receipts the gateway refused for good (final 4xx), put aside with their error.
    rejected: int = 0
    #: Set when the pass stopped early because the gateway was unreachable, answered 5xx
    #: (after the client's own retries) or 401; the receipts stay queued for the next pass.
    error: Optional[str] = None


@dataclass(frozen=True)
class OutboxStats:
    """Counts of the outbox's rows."""

    unsent: int = 0
    sent: int = 0
    rejected: int = 0


@dataclass(frozen=True)
class StoredReceipt:
    """A receipt of the outbox, sent or not, under the id it was made with."""

    receipt_id: str
    receipt: Receipt


@dataclass(frozen=True)
class EventRecord:
    """What the handler's tables say about one event (for the status probe)."""

    #: Its receipts in the outbox, oldest first (rows that no longer parse left out).
    receipts: List[StoredReceipt] = field(default_factory=list)
    #: Whether :func:`already_processed` marked it.
    processed: bool = False


class _Db:
    """One connection as the outbox talks to it: SQL with ``:name`` parameters."""

    def __init__(self, conn: object) -> None:
        self._conn: Any = conn
        module = type(conn).__module__.split(".")[0]
        if module == "sqlalchemy":
            if type(conn).__name__ == "Engine":
                raise UnsupportedConnection("pass a SQLAlchemy Connection or Session, not the Engine")
            bind = conn.get_bind() if hasattr(conn, "get_bind") else conn
            self._style = "sqlalchemy"
            self.postgres = _dialect(getattr(getattr(bind, "dialect", None), "name", "")) == "postgres"
        elif isinstance(conn, sqlite3.Connection):
            self._style, self.postgres = "named", False
        elif module in ("psycopg", "psycopg2"):
            self._style, self.postgres = "pyformat", True
        else:
            raise UnsupportedConnection(
                f"{type(conn).__module__}.{type(conn).__name__} is not a sqlite3, psycopg or SQLAlchemy connection"
            )

    def _run(self, sql: str, params: Mapping[str, Any]) -> Any:
        if self._style == "sqlalchemy":
            from sqlalchemy import text

            return self._conn.execute(text(sql), dict(params))
        if self._style == "pyformat":
            sql = _to_pyformat(sql, params)
        cursor = self._conn.cursor()
        cursor.execute(sql, dict(params))
        return cursor

    def execute(self, sql: str, params: Mapping[str, Any] = {}) -> int:
        """Runs a statement; how many rows it changed."""
        result = self._run(sql, params)
        count = int(result.rowcount)
        if self._style != "sqlalchemy":
            result.close()
        return count

    def query(self, sql: str, params: Mapping[str, Any] = {}) -> List[Tuple[Any, ...]]:
        result = self._run(sql, params)
        rows = [tuple(row) for row in result.fetchall()]
        if self._style != "sqlalchemy":
            result.close()
        return rows

    def commit(self) -> None:
        self._conn.commit()

    def rollback(self) -> None:
        self._conn.rollback()


def _dialect(name: str) -> str:
    if name == "postgresql":
        return "postgres"
    if name == "sqlite":
        return "sqlite"
    raise UnsupportedConnection(f"the outbox runs on SQLite and PostgreSQL, not {name or 'this database'}")


def _to_pyformat(sql: str, params: Mapping[str, Any]) -> str:
    """``:name`` to ``%(name)s`` (the outbox's SQL has no other colons or percent signs)."""
    for name in sorted(params, key=len, reverse=True):
        sql = sql.replace(f":{name}", f"%({name})s")
    return sql


def _is_engine(source: object) -> bool:
    return type(source).__module__.startswith("sqlalchemy") and type(source).__name__ == "Engine"


def _connect(source: object) -> Tuple[object, bool]:
    """A connection from ``source`` and whether it was opened here (and is to be closed)."""
    if _is_engine(source):
        return source.connect(), True  # type: ignore[attr-defined]
    # A sqlite3 connection is callable (it compiles SQL), but it is no connection factory.
    if callable(source) and not isinstance(source, sqlite3.Connection):
        return source(), True
    return source, False


@contextmanager
def _opened(source: object) -> Iterator[_Db]:
    """``source`` as a :class:`_Db` for one call; closes what it opened, rolls back on error."""
    conn, owned = _connect(source)
    try:
        db = _Db(conn)
    except Exception:
        if owned:
            _close(conn)
        raise
    try:
        yield db
    except BaseException:
        _rollback_quietly(conn)
        raise
    finally:
        if owned:
            _close(conn)


def _rollback_quietly(conn: Any) -> None:
    try:
        conn.rollback()
    except Exception:  # the connection may be broken; the error that got us here matters more
        pass


def _close(conn: Any) -> None:
    try:
        conn.close()
    except Exception:
        pass


def _now_ms() -> int:
    return int(time.time() * 1000)


def ensure_schema(source: object) -> None:
    """Creates the outbox's tables if they are missing (and commits); safe on every start."""
    with _opened(source) as db:
        if db.postgres:
            db.query(_PG_SCHEMA_LOCK)
        for statement in SCHEMA:
            db.execute(statement)
        db.commit()


def enqueue(conn: object, receipt: Receipt) -> str:
    """Queues ``receipt`` in the caller's transaction and returns its receipt id. It is posted
    only once that transaction commits (wake the flusher then)."""
    if not isinstance(receipt, Receipt):
        raise TypeError("enqueue takes a hookwarden_receipts.Receipt")
    receipt_id = new_receipt_id()
    params = {
        "receipt_id": receipt_id,
        "event_id": receipt.event_id,
        "body": receipt.to_json().decode("utf-8"),
        "now_ms": _now_ms(),
    }
    _Db(conn).execute(_INSERT_RECEIPT, params)
    return receipt_id


def already_processed(conn: object, event_id: str) -> bool:
    """Marks ``event_id`` processed in the caller's transaction and tells whether it ALREADY
    was (True: a replay or retry; skip the business write). A rolled-back transaction takes
    the mark with it. Two transactions marking one event at once take turns: the second waits
    for the first, and sees True only if the first committed."""
    if not isinstance(event_id, str) or not event_id:
        raise ValueError("already_processed needs the event id")
    return _Db(conn).execute(_MARK_PROCESSED, {"event_id": event_id, "now_ms": _now_ms()}) != 1


def flush_once(source: object, client: ReceiptClient) -> FlushReport:
    """Posts every unsent receipt, oldest first, each under its stored receipt id.

    An accepted receipt is marked sent; one refused with a final 4xx (400, 403, 404, ...) is
    put aside with its error so it does not block the queue; on a network error, a 5xx (after
    the client's own retries) or a 401 the pass stops and the receipts stay queued. ``source``
    is committed on after each receipt.
    """
    sent = rejected = 0
    with _opened(source) as db:
        while True:
            batch = db.query(_UNSENT, {"limit": BATCH})
            db.commit()  # no read transaction held open across the posts
            for receipt_id, body in batch:
                try:
                    receipt = Receipt.parse(body)
                except ReceiptError as e:
                    log.warning("outbox receipt %s is malformed; put aside: %s", receipt_id, e)
                    _record_try(db, receipt_id, _now_ms(), str(e))
                    rejected += 1
                    continue
                try:
                    client.post_with_id(receipt, receipt_id)
                except ClientError as e:
                    if e.was_accepted:
                        _record_try(db, receipt_id, _now_ms(), None)
                        sent += 1
                    # A 401 is about the key or the clock (unknown or revoked key, bad
                    # signature), not this receipt: every receipt would fail alike, so they
                    # stay queued until the key is fixed rather than all being put aside.
                    elif isinstance(e, ReceiptRejected) and e.status != 401:
                        log.warning(
                            "the gateway refused receipt %s for %s; put aside: %s", receipt_id, receipt.event_id, e
                        )
                        _record_try(db, receipt_id, _now_ms(), str(e))
                        rejected += 1
                    else:
                        _record_try(db, receipt_id, None, str(e))
                        return FlushReport(sent, rejected, str(e))
                else:
                    _record_try(db, receipt_id, _now_ms(), None)
                    sent += 1
            if len(batch) < BATCH:
                return FlushReport(sent, rejected)


def _record_try(db: _Db, receipt_id: str, sent_at: Optional[int], error: Optional[str]) -> None:
    """Counts a try; ``sent_at`` set ends the receipt's life in the queue."""
    db.execute(_RECORD_TRY, {"receipt_id": receipt_id, "sent_at": sent_at, "error": error})
    db.commit()


def stats(source: object) -> OutboxStats:
    """How many receipts are queued, sent and put aside."""
    with _opened(source) as db:
        unsent, sent, rejected = db.query(_STATS)[0]
        db.commit()
    return OutboxStats(int(unsent), int(sent), int(rejected))


def lookup_events(source: object, event_ids: Sequence[str]) -> Dict[str, EventRecord]:
    """What the outbox and the inbox know of ``event_ids``; events they do not know are left out."""
    ids = list(dict.fromkeys(event_ids))
    if not ids:
        return {}
    params = {f"e{i}": event_id for i, event_id in enumerate(ids)}
    in_list = ", ".join(f":e{i}" for i in range(len(ids)))
    with _opened(source) as db:
        rows = db.query(
            "SELECT receipt_id, event_id, body FROM hookwarden_receipt_outbox"
            f" WHERE event_id IN ({in_list}) ORDER BY created_at, receipt_id",
            params,
        )
        processed: Set[str] = {
            row[0]
            for row in db.query(
                f"SELECT event_id FROM hookwarden_processed_events WHERE event_id IN ({in_list})", params
            )
        }
        db.commit()
    out: Dict[str, EventRecord] = {event_id: EventRecord(processed=True) for event_id in processed}
    for receipt_id, event_id, body in rows:
        try:
            receipt = Receipt.parse(body)
        except ReceiptError:
            continue  # put aside by the flusher; nothing a probe answer could carry
        if receipt.event_id != event_id:
            continue
        out.setdefault(event_id, EventRecord(processed=event_id in processed)).receipts.append(
            StoredReceipt(receipt_id, receipt)
        )
    return out


class Flusher:
    """A background thread running :func:`flush_once` every ``interval`` seconds and whenever
    woken. Its first pass runs at once, so receipts committed before a crash go out on start.

    ``connect`` opens the flusher's own connection: a SQLAlchemy ``Engine`` or
    ``sessionmaker``, or a function such as ``lambda: sqlite3.connect(path)``. It is opened in
    the flusher's thread, kept, and opened again after a database error.
    """

    def __init__(
        self,
        connect: object,
        client: ReceiptClient,
        interval: float = 0.5,
        *,
        on_report: Optional[Callable[[FlushReport], None]] = None,
    ) -> None:
        self._connect = connect
        self._client = client
        self._interval = interval
        self._on_report = on_report
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hookwarden-receipts-flusher", daemon=True)

    def start(self) -> Flusher:
        self._thread.start()
        return self

    def wake(self) -> None:
        """Call after a commit that queued a receipt. Wakes during a pass cause one more pass."""
        self._wake.set()

    def stop(self, timeout: Optional[float] = None) -> None:
        """Stops after the pass under way, if any."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def __enter__(self) -> Flusher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        conn: Optional[object] = None
        while not self._stop.is_set():
            self._wake.clear()
            try:
                if conn is None:
                    conn, _ = _connect(self._connect)
                report = flush_once(conn, self._client)
            except Exception as e:  # the database: log, reconnect, try again
                log.warning("receipt outbox flush failed; will retry: %s", e)
                if conn is not None:
                    _close(conn)
                conn = None
            else:
                if report.error is not None:
                    log.warning("receipt outbox: gateway unavailable; will retry: %s", report.error)
                elif report.sent or report.rejected:
                    log.debug("receipt outbox flushed: %d sent, %d put aside", report.sent, report.rejected)
                if self._on_report is not None:
                    self._on_report(report)
            self._wake.wait(self._interval)
        if conn is not None:
            _close(conn)


def start_flusher(connect: object, client: ReceiptClient, interval: float = 0.5) -> Flusher:
    """Starts a :class:`Flusher` (see there)."""
    return Flusher(connect, client, interval).start()
