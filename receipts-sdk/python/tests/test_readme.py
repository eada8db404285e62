"""The top README's "Wiring a handler — Python" snippet, run as written: it must verify a
forward, commit once, and have its receipt posted."""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict

import pytest
import sqlalchemy
from standardwebhooks import Webhook

from conftest import REPO_ROOT
from helpers import StandIn, eventually

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def snippet() -> str:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Wiring a handler — Python", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert len(code.splitlines()) <= 12, "the snippet is meant to be about ten lines"
    return code


def test_the_readme_python_snippet_works(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gateway = StandIn.start(key_id="orders-1")
    engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'orders.db'}")
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text("CREATE TABLE orders (event_id TEXT PRIMARY KEY)"))

    def record_order(conn: Any, body: bytes) -> str:
        conn.execute(sqlalchemy.text("INSERT INTO orders VALUES (:id)"), {"id": json.loads(body)["id"]})
        return "ord_1"

    monkeypatch.setenv("RECEIPT_KEY_SEED", gateway.key.seed_base64())
    scope: Dict[str, Any] = {
        "os": os,
        "engine": engine,
        "HOOKWARDEN_URL": gateway.url,
        "SIGNING_SECRET": SECRET,
        "record_order": record_order,
    }
    try:
        exec(compile(snippet(), "README.md", "exec"), scope)
        body = b'{"id":"evt_provider_1"}'
        now = int(time.time())
        headers = {
            "webhook-id": "evt_01KDVDNA00M2GT58X4MPKAFA59",
            "webhook-timestamp": str(now),
            "webhook-signature": Webhook(SECRET).sign(
                "evt_01KDVDNA00M2GT58X4MPKAFA59", datetime.fromtimestamp(now, tz=timezone.utc), body.decode()
            ),
            "idempotency-key": "idk_1",
            "hookwarden-attempt": "1",
            "hookwarden-source": "stripe",
        }
        scope["receive"](headers, body)
        scope["receive"](headers, body)  # a retry: no second order, no second receipt
        (post,) = eventually("the receipt posted", lambda: gateway.posts() or None, timeout=10)
        assert post.signature_ok and post.receipt is not None
        assert (post.receipt.event_id, post.receipt.target_record_id) == ("evt_01KDVDNA00M2GT58X4MPKAFA59", "ord_1")
        time.sleep(0.3)
        assert len(gateway.posts()) == 1
        with engine.connect() as conn:
            assert conn.execute(sqlalchemy.text("SELECT COUNT(*) FROM orders")).scalar() == 1
    finally:
        if "flusher" in scope:
            scope["flusher"].stop(10)
        gateway.stop()
        engine.dispose()
