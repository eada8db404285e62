"""Verifying the gateway's forwards: the Rust SDK's `forwarded` tests, in Python."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Dict, Optional

import pytest
from standardwebhooks import Webhook

from hookwarden_receipts import Forwarded, ForwardedError, verify_forwarded

NOW = 1_700_000_000
BODY = b'{"id":"ord_1"}'
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OTHER_SECRET = "whsec_ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8="


def forward(secret: str = SECRET, at: int = NOW) -> Dict[str, str]:
    """The headers the gateway sends, signed with ``secret`` at ``at``."""
    signature = Webhook(secret).sign("evt_01", datetime.fromtimestamp(at, tz=timezone.utc), BODY.decode())
    return {
        "webhook-id": "evt_01",
        "webhook-timestamp": str(at),
        "webhook-signature": signature,
        "idempotency-key": "idk_abc",
        "hookwarden-attempt": "2",
        "hookwarden-source": "stripe",
    }


def with_header(headers: Dict[str, str], name: str, value: Optional[str]) -> Dict[str, str]:
    out = {k: v for k, v in headers.items() if k != name}
    if value is not None:
        out[name] = value
    return out


def test_accepts_a_signed_forward_and_reads_its_headers() -> None:
    got = verify_forwarded(SECRET, forward(), BODY, now=NOW + 60)
    assert got == Forwarded(event_id="evt_01", idempotency_key="idk_abc", attempt=2, source="stripe")
    assert not got.is_replay
    replay = verify_forwarded(SECRET, with_header(forward(), "hookwarden-replay-id", "rpl_9"), BODY, now=NOW)
    assert (replay.replay_id, replay.is_replay) == ("rpl_9", True)
    # Header names in any case, several signatures of which one matches.
    mixed = {name.title(): value for name, value in forward().items()}
    mixed["Webhook-Signature"] = "v1,bm90IGl0 " + mixed["Webhook-Signature"]
    assert verify_forwarded(SECRET, mixed, BODY, now=NOW).event_id == "evt_01"


def test_verifies_against_the_wall_clock_by_default() -> None:
    import time

    now = int(time.time())
    assert verify_forwarded(SECRET, forward(at=now), BODY).event_id == "evt_01"
    with pytest.raises(ForwardedError, match="tolerance"):
        verify_forwarded(SECRET, forward(at=now - 301), BODY)


@pytest.mark.parametrize(
    "headers, body, now, reason",
    [
        (forward(), b'{"id":"ord_2"}', NOW, "matches"),  # another body
        (forward(OTHER_SECRET), BODY, NOW, "matches"),  # another secret
        (forward(), BODY, NOW + 301, "tolerance"),
        (forward(), BODY, NOW - 301, "tolerance"),
        (with_header(forward(), "webhook-id", "evt_02"), BODY, NOW, "matches"),  # moved to another event
        (with_header(forward(), "webhook-timestamp", "soon"), BODY, NOW, "unix time"),
        (with_header(forward(), "webhook-timestamp", "1_700_000_000"), BODY, NOW, "unix time"),
        (with_header(forward(), "webhook-signature", "v1a,AAAA"), BODY, NOW, "matches"),
    ],
)
def test_refuses_bad_signatures_and_stale_or_tampered_forwards(
    headers: Dict[str, str], body: bytes, now: int, reason: str
) -> None:
    with pytest.raises(ForwardedError, match=reason):
        verify_forwarded(SECRET, headers, body, now=now)


@pytest.mark.parametrize(
    "name",
    [
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "idempotency-key",
        "hookwarden-attempt",
        "hookwarden-source",
    ],
)
def test_refuses_missing_headers(name: str) -> None:
    with pytest.raises(ForwardedError, match=f"`{name}` header is missing"):
        verify_forwarded(SECRET, with_header(forward(), name, None), BODY, now=NOW)
    with pytest.raises(ForwardedError, match=f"`{name}` header is missing"):
        verify_forwarded(SECRET, with_header(forward(), name, "  "), BODY, now=NOW)


@pytest.mark.parametrize("attempt", ["0", "-1", "two", "99999999999", "١"])
def test_refuses_invalid_attempts(attempt: str) -> None:
    with pytest.raises(ForwardedError, match="hookwarden-attempt"):
        verify_forwarded(SECRET, with_header(forward(), "hookwarden-attempt", attempt), BODY, now=NOW)


def test_bodies_that_are_not_utf8() -> None:
    """Signed over the exact bytes: standardwebhooks 1.3+ verifies them; 1.1 (the last for
    Python 3.9) signs only text, so there they are refused, never accepted."""
    import base64
    import hashlib
    import hmac
    from importlib.metadata import version

    body = b'{"name":"\xe9t\xe9"}'  # Latin-1, as some providers send
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    mac = hmac.new(key, f"evt_01.{NOW}.".encode() + body, hashlib.sha256).digest()
    headers = with_header(forward(), "webhook-signature", "v1," + base64.b64encode(mac).decode())
    library = tuple(int(part) for part in version("standardwebhooks").split(".")[:2])
    if library >= (1, 3):
        assert verify_forwarded(SECRET, headers, body, now=NOW).event_id == "evt_01"
    else:
        with pytest.raises(ForwardedError):
            verify_forwarded(SECRET, headers, body, now=NOW)
