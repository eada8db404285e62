#!/usr/bin/env python3
"""orders handler in Python: a hookwarden handler (FastAPI, SQLAlchemy, hookwarden-receipts),
written to be copied. The Rust twin is examples/src/orders_handler.rs.

For every event the gateway forwards to ``POST /webhooks/{source}`` it:

1. verifies the forward (``verify_forwarded``: the gateway's Standard Webhooks signature with
   the source's secret; the event id is the forward's ``webhook-id``);
2. in ONE transaction: ``already_processed(event_id)`` (a retry or replay is a no-op), the
   order row, and an ``applied`` receipt queued in the outbox (``enqueue``);
3. commits, then wakes the outbox flusher, which posts the receipt to the gateway.

The receipt commits with the order, so the gateway hears "applied" if and only if the order
was committed, also when the handler dies between the commit and the post (the flusher sends
it on the next start). ``POST /hookwarden/status`` answers the gateway's status probe from the
same tables (docs/status-probe.md). ``GET /orders`` lists the orders.

Configuration (environment):
- ``HANDLER_LISTEN`` (default ``127.0.0.1:3000``)
- ``HANDLER_DATABASE_URL``: ``sqlite://PATH`` (default ``sqlite://orders-py.db``) or a
  ``postgres://`` URL
- ``HOOKWARDEN_URL``: the gateway, where receipts go (default ``http://127.0.0.1:8080``)
- ``SIGNING_SECRET``: the source's ``signing_secret`` from the gateway config;
  ``SIGNING_SECRET_<SOURCE>`` (e.g. ``SIGNING_SECRET_GITHUB``) overrides it for one source
- ``RECEIPT_KEY_ID``, ``RECEIPT_KEY_SEED`` (required): the handler's receipt key as
  ``hookwarden keys generate`` prints it; its public half goes into the source's receipt_keys
- ``FLUSH_INTERVAL_MS`` (default 500): how often the outbox is flushed besides after commits

Telling it to fail (for tests and demos):
- an event whose body has ``"fail": true`` is refused by the business rules after the order
  was written: the transaction rolls back, a ``failed`` receipt (``E_REJECTED``) is queued in
  a transaction of its own, and the handler answers 422;
- ``"db_error": true`` simulates a database failure after the order AND its ``applied``
  receipt were written: the transaction rolls back, taking the receipt with it, the handler
  answers 500 and the gateway retries later (no receipt is ever sent for it);
- ``HANDLER_KILL_AFTER_COMMIT=<order id>``: the process kills itself (SIGKILL) right after
  committing that order, before it answers and before the flusher is woken;
- ``HANDLER_PAUSE_FLUSH=1``: receipts are queued but never posted.

Install (from the repository root): ``python3 -m pip install -r examples/python/requirements.txt``
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, AsyncIterator, Dict, List, Optional, Tuple

import sqlalchemy
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import event, text
from sqlalchemy.engine import Connection, Engine
from starlette.concurrency import run_in_threadpool

from hookwarden_receipts import (
    Flusher,
    ForwardedError,
    Receipt,
    ReceiptClient,
    ReceiptKey,
    StatusProbe,
    already_processed,
    enqueue,
    ensure_schema,
    start_flusher,
    unix_now,
    verify_forwarded,
)
from hookwarden_receipts.starlette import status_probe_endpoint

log = logging.getLogger("orders-handler")

DEFAULT_SIGNING_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

# The business table, as in the Rust example. One row per event: already_processed sees to it.
CREATE_ORDERS = """CREATE TABLE IF NOT EXISTS orders (
    event_id TEXT PRIMARY KEY,
    order_id TEXT NOT NULL,
    source TEXT NOT NULL,
    amount BIGINT NULL,
    received_at BIGINT NOT NULL
)"""


@dataclass
class Config:
    listen: str
    database_url: str
    gateway_url: str
    default_secret: str
    secrets: Dict[str, str]
    key: ReceiptKey
    flush_interval: float
    pause_flush: bool
    kill_after_commit: Optional[str]

    @classmethod
    def from_env(cls) -> Config:
        env = os.environ.get
        for name in ("RECEIPT_KEY_ID", "RECEIPT_KEY_SEED"):
            if not env(name):
                sys.exit(f"{name} must be set")
        return cls(
            listen=env("HANDLER_LISTEN", "127.0.0.1:3000"),
            database_url=env("HANDLER_DATABASE_URL", "sqlite://orders-py.db"),
            gateway_url=env("HOOKWARDEN_URL", "http://127.0.0.1:8080"),
            default_secret=env("SIGNING_SECRET", DEFAULT_SIGNING_SECRET),
            secrets={
                name[len("SIGNING_SECRET_") :].lower(): value
                for name, value in os.environ.items()
                if name.startswith("SIGNING_SECRET_")
            },
            key=ReceiptKey.from_seed_base64(env("RECEIPT_KEY_ID", ""), env("RECEIPT_KEY_SEED", "")),
            flush_interval=int(env("FLUSH_INTERVAL_MS", "500")) / 1000,
            pause_flush=env("HANDLER_PAUSE_FLUSH") == "1",
            kill_after_commit=env("HANDLER_KILL_AFTER_COMMIT") or None,
        )

    def secret_for(self, source: Optional[str]) -> str:
        return self.secrets.get((source or "").lower(), self.default_secret)


def open_engine(url: str) -> Engine:
    """SQLite (``sqlite://PATH``, as the Rust example takes it) or PostgreSQL."""
    if url.startswith("sqlite://"):
        path = url[len("sqlite://") :].split("?", 1)[0]
        engine = sqlalchemy.create_engine(f"sqlite:///{path}", connect_args={"timeout": 10})

        @event.listens_for(engine, "connect")
        def wal(dbapi_connection: Any, _: Any) -> None:
            # Readers (GET /orders, the flusher, probes) then do not hold up writers.
            dbapi_connection.execute("PRAGMA journal_mode = WAL")

        return engine
    for scheme in ("postgres://", "postgresql://"):
        if url.startswith(scheme):
            return sqlalchemy.create_engine("postgresql+psycopg://" + url[len(scheme) :])
    sys.exit("HANDLER_DATABASE_URL must be a sqlite:// or postgres:// URL")


class Rejected(Exception):
    """The business rules refused the event: a permanent failure, reported by receipt."""


class SimulatedDbError(Exception):
    """The ``"db_error": true`` test hook: a database failure before the commit."""


def record_order(conn: Connection, source: str, event_id: str, event_body: Dict[str, Any]) -> str:
    """The business write: one order per event. Stripe-style events carry the object under
    ``data.object``; others are the object."""
    data = event_body.get("data")
    obj = data.get("object") if isinstance(data, dict) and isinstance(data.get("object"), dict) else event_body
    order_id = obj.get("id") or event_body.get("id")
    if not isinstance(order_id, str):
        raise Rejected("the event has no order id")
    amount = obj.get("amount", event_body.get("amount"))
    conn.execute(
        text(
            "INSERT INTO orders (event_id, order_id, source, amount, received_at)"
            " VALUES (:event_id, :order_id, :source, :amount, :received_at)"
        ),
        {
            "event_id": event_id,
            "order_id": order_id,
            "source": source,
            "amount": amount if isinstance(amount, int) and not isinstance(amount, bool) else None,
            "received_at": unix_now(),
        },
    )
    # Test hook: a rule that refuses the order after it was written; the rollback undoes it.
    if event_body.get("fail") is True:
        raise Rejected("the order was refused (test hook `fail: true`)")
    return order_id


class Handler:
    """What the routes share: the config, the database, the flusher."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.engine = open_engine(config.database_url)
        ensure_schema(self.engine)  # the outbox and processed-events tables
        with self.engine.begin() as conn:
            conn.execute(text(CREATE_ORDERS))
        self.flusher: Optional[Flusher] = None

    def start(self) -> None:
        """The flusher posts committed receipts: at once when woken, else every interval. Its
        first pass sends whatever a previous run committed but did not post."""
        if self.config.pause_flush:
            log.warning("HANDLER_PAUSE_FLUSH=1: receipts are queued but never posted")
            return
        client = ReceiptClient(self.config.gateway_url, self.config.key)
        self.flusher = start_flusher(self.engine, client, self.config.flush_interval)

    def stop(self) -> None:
        if self.flusher is not None:
            self.flusher.stop(10)
        self.engine.dispose()

    def wake_flusher(self) -> None:
        if self.flusher is not None:
            self.flusher.wake()

    def receive(self, source: str, headers: Dict[str, str], body: bytes) -> Tuple[int, Dict[str, Any]]:
        """One forwarded event: the status and JSON to answer."""
        # 1. Is it really the gateway? Also gives the event id, the key to be idempotent on.
        try:
            forwarded = verify_forwarded(self.config.secret_for(source), headers, body)
        except ForwardedError as e:
            log.warning("refused a forward for %s: %s", source, e)
            return 401, {"error": str(e)}
        event_id = forwarded.event_id
        try:
            event_body = json.loads(body)
        except ValueError:
            event_body = None
        if not isinstance(event_body, dict):
            return self.reject(event_id, "E_MALFORMED", "the body is not a JSON object")

        # 2. One transaction: the "already processed?" mark, the order and its receipt.
        try:
            with self.engine.begin() as conn:
                if already_processed(conn, event_id):
                    log.info("%s: duplicate (attempt %d), already processed", event_id, forwarded.attempt)
                    return 200, {"status": "duplicate"}
                order_id = record_order(conn, source, event_id, event_body)
                enqueue(conn, Receipt.applied(event_id, target_record_id=order_id))
                if event_body.get("db_error") is True:
                    raise SimulatedDbError("simulated database failure before the commit (test hook `db_error: true`)")
        except Rejected as e:
            # Rolled back: the order AND the processed mark, so a later replay may try again.
            return self.reject(event_id, "E_REJECTED", str(e))
        except (SimulatedDbError, sqlalchemy.exc.SQLAlchemyError) as e:
            # Rolled back, receipt included: answer 500 and let the gateway retry.
            log.error("%s: not committed: %s", event_id, e)
            return 500, {"error": "the order was not committed"}

        # 3. Committed: now the receipt may go.
        if self.config.kill_after_commit == order_id:
            log.warning("%s: committed %s; HANDLER_KILL_AFTER_COMMIT: kill -9 before the flush", event_id, order_id)
            os.kill(os.getpid(), signal.SIGKILL)
        self.wake_flusher()
        log.info("%s: order %s recorded (attempt %d)", event_id, order_id, forwarded.attempt)
        return 200, {"status": "applied", "order_id": order_id}

    def reject(self, event_id: str, code: str, detail: str) -> Tuple[int, Dict[str, Any]]:
        """Answers 422 and sends a ``failed`` receipt, committed in a transaction of its own.
        The event is not marked processed."""
        with self.engine.begin() as conn:
            enqueue(conn, Receipt.failed(event_id, code, detail))
        self.wake_flusher()
        log.warning("%s: rejected (%s): %s", event_id, code, detail)
        return 422, {"status": "rejected", "error_code": code, "detail": detail}

    def orders(self) -> List[Dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT event_id, order_id, source, amount, received_at FROM orders ORDER BY received_at, event_id"
                )
            ).all()
        return [dict(row._mapping) for row in rows]


def create_app(config: Config) -> FastAPI:
    handler = Handler(config)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        handler.start()
        yield
        handler.stop()

    app = FastAPI(title="orders handler", lifespan=lifespan)

    @app.post("/webhooks/{source}")
    async def receive(source: str, request: Request) -> JSONResponse:
        body = await request.body()  # the raw bytes: the signature covers them exactly
        headers = dict(request.headers.items())
        status, answer = await run_in_threadpool(handler.receive, source, headers, body)
        return JSONResponse(answer, status_code=status)

    @app.get("/orders")
    async def orders() -> JSONResponse:
        return JSONResponse(await run_in_threadpool(handler.orders))

    # The gateway's status probe, answered from the outbox and the processed-events table.
    probe = StatusProbe(secret=config.secret_for, key=config.key, db=handler.engine)
    app.add_route("/hookwarden/status", status_probe_endpoint(probe), methods=["POST"])
    return app


def main() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = Config.from_env()
    host, _, port = config.listen.rpartition(":")
    app = create_app(config)
    log.info("python orders handler on %s, receipts to %s", config.listen, config.gateway_url)
    uvicorn.run(app, host=host, port=int(port), access_log=False, log_level="info")


if __name__ == "__main__":
    main()
