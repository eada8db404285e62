"""receipts-sdk/test-vectors.json, reproduced byte for byte: the receipt, the forward and the
status probe (request and answer). The Rust and TypeScript SDKs read the same file."""

from __future__ import annotations

import base64
import json
import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict

import pytest
from standardwebhooks import Webhook

from hookwarden_receipts import (
    Receipt,
    ReceiptKey,
    StatusProbe,
    already_processed,
    ensure_schema,
    probe_receipt_id,
    sign,
    verify_forwarded,
    verify_probe,
)
from hookwarden_receipts.forwarded import ForwardedError
from hookwarden_receipts.probe import ProbeError


def test_receipt_vector(vectors: Dict[str, Any]) -> None:
    v = vectors["receipt"]
    key = ReceiptKey.from_seed_base64(v["key_id"], v["seed"])
    assert key.public_key_base64() == v["public_key"]

    # The low-level primitive SPEC.md fixes: exact bytes in, the four headers out.
    headers = sign(v["seed"], v["key_id"], v["receipt_id"], v["timestamp"], v["body"].encode())
    assert headers == {
        "receipt-id": v["receipt_id"],
        "receipt-timestamp": str(v["timestamp"]),
        "receipt-key": v["key_id"],
        "receipt-signature": v["signature"],
    }

    # The typed path: the body is exactly how a Receipt serialises, and signs the same.
    receipt = Receipt.parse(v["body"])
    assert receipt == Receipt.applied("evt_01KDVDNA00M2GT58X4MPKAFA59", target_record_id="order_1001")
    assert receipt.to_json() == v["body"].encode()
    signed = key.sign_with_id(receipt, v["receipt_id"], v["timestamp"])
    assert signed.headers() == headers
    assert f"{signed.receipt_id}.{signed.timestamp}.".encode() + signed.body == v["signed_content"].encode()
    inline = signed.inline_headers()
    assert inline["receipt-body"] == v["inline_body"]
    assert base64.b64decode(inline["receipt-body"]) == v["body"].encode()


def test_the_readme_vector_is_the_files(vectors: Dict[str, Any]) -> None:
    """The top README shows the receipt vector; it must say what the file says."""
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text(encoding="utf-8")
    block = readme.split("## Receipts: the wire format", 1)[1].split("```text\n", 1)[1].split("```", 1)[0]
    lines = dict(line.split(": ", 1) for line in block.splitlines())
    v = vectors["receipt"]
    assert lines["seed (base64)"] == v["seed"]
    assert lines["receipt-signature"] == v["signature"]
    assert lines["body"] == v["body"]
    assert lines["signed content"] == v["signed_content"]


def test_forward_vector(vectors: Dict[str, Any]) -> None:
    v = vectors["forward"]
    at = datetime.fromtimestamp(v["timestamp"], tz=timezone.utc)
    body = v["body"].encode()
    assert Webhook(v["secret"]).sign(v["webhook_id"], at, v["body"]) == v["signature"]
    headers = {
        "Webhook-Id": v["webhook_id"],
        "Webhook-Timestamp": str(v["timestamp"]),
        "Webhook-Signature": v["signature"],
        "Idempotency-Key": "idk_vector",
        "Hookwarden-Attempt": "1",
        "Hookwarden-Source": "stripe",
    }
    forwarded = verify_forwarded(v["secret"], headers, body, now=v["timestamp"])
    assert forwarded.event_id == v["webhook_id"]
    assert (forwarded.idempotency_key, forwarded.attempt, forwarded.source) == ("idk_vector", 1, "stripe")
    # The same bytes one byte off, or signed content with another id, do not verify.
    with pytest.raises(ForwardedError):
        verify_forwarded(v["secret"], headers, body + b" ", now=v["timestamp"])
    with pytest.raises(ForwardedError):
        verify_forwarded(v["secret"], dict(headers, **{"Webhook-Id": "evt_other"}), body, now=v["timestamp"])


def probe_headers(v: Dict[str, Any]) -> Dict[str, str]:
    return {
        "webhook-id": v["webhook_id"],
        "webhook-timestamp": str(v["timestamp"]),
        "webhook-signature": v["signature"],
        "hookwarden-source": "stripe",
        "content-type": "application/json",
    }


def test_probe_request_vector(vectors: Dict[str, Any]) -> None:
    v = vectors["probe"]
    at = datetime.fromtimestamp(v["timestamp"], tz=timezone.utc)
    assert Webhook(v["secret"]).sign(v["webhook_id"], at, v["body"]) == v["signature"]
    request = verify_probe(v["secret"], probe_headers(v), v["body"].encode(), now=v["timestamp"])
    assert request.probe_id == v["webhook_id"]
    assert request.source == "stripe"
    assert request.event_ids == ("evt_01KDVDNA00M2GT58X4MPKAFA59", "evt_01KDVDNA01ZZZZZZZZZZZZZZZZ")
    with pytest.raises(ProbeError) as stale:
        verify_probe(v["secret"], probe_headers(v), v["body"].encode(), now=v["timestamp"] + 301)
    assert stale.value.status == 401


def test_probe_answer_vector(vectors: Dict[str, Any], tmp_path: Path) -> None:
    """The handler's inbox knows the first event (processed, no receipt left in the outbox)
    and not the second: the answer is exactly the vector's entry, and nothing else."""
    v, a = vectors["probe"], vectors["probe"]["answer"]
    assert probe_receipt_id(a["event_id"]) == a["receipt_id"]
    path = tmp_path / "handler.db"
    ensure_schema(lambda: sqlite3.connect(path))
    with sqlite3.connect(path) as conn:
        assert not already_processed(conn, a["event_id"])
    probe = StatusProbe(
        secret=v["secret"], key=ReceiptKey.from_seed_base64(a["key_id"], a["seed"]), db=lambda: sqlite3.connect(path)
    )
    response = probe.handle(v["body"].encode(), probe_headers(v), now=a["timestamp"])
    assert response.status == 200
    assert response.content_type == "application/json"
    assert json.loads(response.body) == {"receipts": [a["entry"]]}
    assert response.body == json.dumps({"receipts": [a["entry"]]}, separators=(",", ":")).encode()
    assert base64.b64decode(a["entry"]["receipt-body"]) == a["body"].encode()
    assert a["entry"]["receipt-signature"] == a["signature"]
    # Asking again answers the same receipt id with the same body: one receipt at the gateway.
    again = probe.handle(v["body"].encode(), probe_headers(v), now=a["timestamp"] + 60)
    (entry,) = json.loads(again.body)["receipts"]
    assert (entry["receipt-id"], entry["receipt-body"]) == (a["receipt_id"], a["entry"]["receipt-body"])
    assert entry["receipt-timestamp"] == str(a["timestamp"] + 60)
