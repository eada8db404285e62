"""Test helpers: a PostgreSQL database per test, a stand-in gateway, waiting for a condition."""

from __future__ import annotations

import base64
import json
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Dict, List, Optional, Tuple, TypeVar, Union

import nacl.exceptions
import nacl.signing
import psycopg

from hookwarden_receipts import Receipt, ReceiptError, ReceiptKey

T = TypeVar("T")

PG_ADMIN_URL = os.environ.get("HOOKWARDEN_TEST_PG", "postgres://postgres@127.0.0.1:5432/test")


def eventually(what: str, check: Callable[[], Optional[T]], timeout: float = 20.0, every: float = 0.05) -> T:
    """Polls ``check`` until it returns something other than None; fails after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for: {what}")
        time.sleep(every)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class PgDatabase:
    """A database of our own on the test PostgreSQL, dropped at the end."""

    name: str
    url: str

    @classmethod
    def create(cls) -> PgDatabase:
        name = f"pysdk_test_{secrets.token_hex(8)}"
        try:
            with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
                admin.execute(f"CREATE DATABASE {name}")
        except psycopg.OperationalError as e:
            raise AssertionError(f"PostgreSQL at {PG_ADMIN_URL} is required for this test: {e}") from e
        base = PG_ADMIN_URL.rsplit("/", 1)[0]
        return cls(name, f"{base}/{name}")

    def drop(self) -> None:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")


@dataclass(frozen=True)
class Post:
    """One receipt post the stand-in received."""

    receipt_id: str
    timestamp: str
    key_id: str
    signature_ok: bool
    content_type: str
    body: bytes
    receipt: Optional[Receipt]


#: A scripted answer: a status, or (status, extra headers, body); "drop" closes the
#: connection without an answer.
Answer = Union[int, str, Tuple[int, Dict[str, str], bytes]]


class StandIn:
    """A local HTTP server in the gateway's place: checks each receipt's signature with
    ``self.key`` (the key a client under test must use), records it and answers from a script
    (then 200 with the gateway's answer)."""

    def __init__(self, key_id: str = "stand-in-1") -> None:
        self.key = ReceiptKey.generate(key_id)
        self._posts: List[Post] = []
        self._script: List[Answer] = []
        self._lock = threading.Lock()
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                stand_in._receive(self)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.01,), daemon=True)

    @classmethod
    def start(cls, key_id: str = "stand-in-1") -> StandIn:
        stand_in = cls(key_id)
        stand_in._thread.start()
        return stand_in

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def script(self, *answers: Answer) -> None:
        with self._lock:
            self._script.extend(answers)

    def posts(self) -> List[Post]:
        with self._lock:
            return list(self._posts)

    def _receive(self, request: BaseHTTPRequestHandler) -> None:
        body = request.rfile.read(int(request.headers.get("content-length", "0")))
        header = lambda name: request.headers.get(name, "")  # noqa: E731
        receipt_id, timestamp, signature = (
            header("receipt-id"),
            header("receipt-timestamp"),
            header("receipt-signature"),
        )
        content = f"{receipt_id}.{timestamp}.".encode() + body
        try:
            raw = base64.b64decode(signature.removeprefix("v1a,"), validate=True)
            nacl.signing.VerifyKey(base64.b64decode(self.key.public_key_base64())).verify(content, raw)
            signature_ok = signature.startswith("v1a,") and header("receipt-key") == self.key.key_id
        except (ValueError, nacl.exceptions.BadSignatureError):
            signature_ok = False
        try:
            receipt: Optional[Receipt] = Receipt.parse(body)
        except ReceiptError:
            receipt = None
        with self._lock:
            self._posts.append(
                Post(receipt_id, timestamp, header("receipt-key"), signature_ok, header("content-type"), body, receipt)
            )
            answer = self._script.pop(0) if self._script else 200
        if answer == "drop":
            request.close_connection = True
            request.connection.shutdown(socket.SHUT_RDWR)
            return
        if isinstance(answer, tuple):
            status, extra, data = answer
        else:
            assert isinstance(answer, int)
            status, extra, data = answer, {}, b""
            if status == 200:
                outcome = "confirmed" if receipt is not None and receipt.status.value == "applied" else "failed"
                event_id = receipt.event_id if receipt is not None else None
                data = json.dumps(
                    {"event_id": event_id, "receipt_id": receipt_id, "outcome": outcome, "duplicate": False}
                ).encode()
            else:
                data = json.dumps({"error": {"code": f"stand_in_{status}", "message": "scripted answer"}}).encode()
        request.send_response(status)
        request.send_header("content-type", "application/json")
        request.send_header("content-length", str(len(data)))
        for name, value in extra.items():
            request.send_header(name, value)
        request.end_headers()
        request.wfile.write(data)
