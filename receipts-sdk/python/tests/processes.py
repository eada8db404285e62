"""Real processes for the end-to-end tests: a `hookwarden serve` (the binary named by
HOOKWARDEN_BIN, with a config written for the test, as tests/support/gateway.rs does) and
the example handler (examples/python/handler.py), restartable on the same port and database."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from hookwarden_receipts import ReceiptKey
from helpers import eventually, free_port

REPO_ROOT = Path(__file__).resolve().parents[3]
SRC = REPO_ROOT / "receipts-sdk" / "python" / "src"
ADMIN_TOKEN = "hw_admin_python_sdk_tests"
SIGNING_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def http(
    method: str, url: str, body: Optional[bytes] = None, headers: Optional[Dict[str, str]] = None
) -> Tuple[int, Any]:
    """One request; the status and the JSON answer (None when it is not JSON)."""
    request = urllib.request.Request(url, data=body, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, data = response.status, response.read()
    except urllib.error.HTTPError as e:
        status, data = e.code, e.read()
    try:
        return status, json.loads(data)
    except ValueError:
        return status, None


def wait_until_answering(what: str, process: subprocess.Popen[bytes], url: str, log: Callable[[], str]) -> None:
    """Waits until ``GET url`` answers 200; fails with the log if the process exits first."""

    def ready() -> Optional[bool]:
        if process.poll() is not None:
            raise AssertionError(f"{what} exited with {process.returncode}:\n{log()}")
        try:
            return True if http("GET", url)[0] == 200 else None
        except OSError:
            return None

    eventually(f"{what} ready", ready, timeout=30)


class Gateway:
    """A real gateway with one source, ``orders``, forwarding to ``forward_to`` and accepting
    ``key`` as its receipt key."""

    def __init__(self, forward_to: str, key: ReceiptKey, ladder: List[str], max_attempts: int) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="hookwarden-gw-")
        self.port = free_port()
        directory = Path(self._dir.name)
        self.config_path = directory / "hookwarden.toml"
        self.log_path = directory / "gateway.log"
        rungs = ", ".join(f'"{r}"' for r in ladder)
        self.config_path.write_text(
            f"""[server]
listen = "127.0.0.1:{self.port}"

[database]
url = "sqlite://{directory / "gateway.db"}"

[delivery]
poll_interval = "100ms"
lease = "30s"
timeout = "10s"

[admin]
token = "{ADMIN_TOKEN}"

[[sources]]
name = "orders"
verify = {{ kind = "none" }}
forward_to = "{forward_to}"
signing_secret = "{SIGNING_SECRET}"
retry_ladder = [{rungs}]
max_attempts = {max_attempts}
dedup = {{ json_pointer = "/id" }}
receipt_keys = [{{ id = "{key.key_id}", public_key = "{key.public_key_base64()}" }}]
"""
        )
        self.process: Optional[subprocess.Popen[bytes]] = None

    def start(self, binary: str) -> Gateway:
        env = {k: v for k, v in os.environ.items() if k != "HOOKWARDEN_ADMIN_TOKEN"}
        env["RUST_LOG"] = os.environ.get("TEST_LOG", "info,sqlx=warn")
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [binary, "serve", "--config", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                env=env,
            )
        wait_until_answering("the gateway", self.process, self.url("/readyz"), self.log)
        return self

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._dir.cleanup()

    def ingest(self, event: Dict[str, Any]) -> str:
        """Posts an event as the provider would; the gateway's event id."""
        status, answer = http(
            "POST", self.url("/ingest/orders"), json.dumps(event).encode(), {"content-type": "application/json"}
        )
        assert status == 200 and answer["duplicate"] is False, (status, answer)
        event_id: str = answer["event_id"]
        return event_id

    def event(self, event_id: str) -> Dict[str, Any]:
        """``GET /v1/events/{id}`` with the admin token."""
        status, answer = http(
            "GET", self.url(f"/v1/events/{event_id}"), headers={"authorization": f"Bearer {ADMIN_TOKEN}"}
        )
        assert status == 200, (status, answer)
        value: Dict[str, Any] = answer
        return value

    def wait_for_outcome(self, event_id: str, outcome: str, timeout: float = 20) -> Dict[str, Any]:
        return eventually(
            f"{event_id} {outcome}",
            lambda: (lambda e: e if e["outcome"] == outcome else None)(self.event(event_id)),
            timeout=timeout,
        )

    def post_receipt(self, headers: Dict[str, str], body: bytes) -> Tuple[int, Any]:
        """``POST /v1/receipts`` as a handler would."""
        return http("POST", self.url("/v1/receipts"), body, dict(headers, **{"content-type": "application/json"}))


class HandlerProcess:
    """examples/python/handler.py as a process, on a fixed port and database."""

    def __init__(self, database_url: str, gateway_url: str, key: ReceiptKey) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="hookwarden-handler-")
        self.port = free_port()
        self.log_path = Path(self._dir.name) / "handler.log"
        self.env = {
            "HANDLER_LISTEN": f"127.0.0.1:{self.port}",
            "HANDLER_DATABASE_URL": database_url,
            "HOOKWARDEN_URL": gateway_url,
            "SIGNING_SECRET": SIGNING_SECRET,
            "RECEIPT_KEY_ID": key.key_id,
            "RECEIPT_KEY_SEED": key.seed_base64(),
            "FLUSH_INTERVAL_MS": "200",
            # The SDK of this tree, whatever copy pip installed.
            "PYTHONPATH": os.pathsep.join([str(SRC)] + [p for p in [os.environ.get("PYTHONPATH")] if p]),
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        self.process: Optional[subprocess.Popen[bytes]] = None

    @property
    def forward_to(self) -> str:
        return f"http://127.0.0.1:{self.port}/webhooks/orders"

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self, **extra: str) -> HandlerProcess:
        assert self.process is None or self.process.poll() is not None, "the handler is running already"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SIGNING_SECRET_", "HANDLER_"))}
        env.update(self.env)
        env.update(extra)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-u", str(REPO_ROOT / "examples" / "python" / "handler.py")],
                cwd=REPO_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
            )
        wait_until_answering("the handler", self.process, self.url("/orders"), self.log)
        return self

    def kill9(self) -> None:
        """SIGKILL: no shutdown code runs."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def orders(self) -> List[Dict[str, Any]]:
        status, answer = http("GET", self.url("/orders"))
        assert status == 200, (status, answer)
        orders: List[Dict[str, Any]] = answer
        return orders

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        self.kill9()
        self._dir.cleanup()
