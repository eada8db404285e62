"""Standard Webhooks ``v1`` checks shared by forwards and status probes.

The HMAC is the ``standardwebhooks`` library's (``Webhook.sign``, the signed content
``{webhook-id}.{webhook-timestamp}.{body}``). The timestamp rule is ours, as in the Rust SDK:
whole unix seconds within 5 minutes of ``now``, where ``now`` can be given, so that tests and
the shared test vectors run at a fixed time instead of the wall clock the library reads.
"""

from __future__ import annotations

import hmac
import re
import time
from datetime import datetime, timezone
from typing import Mapping, Optional, Union

from standardwebhooks import Webhook

HEADER_WEBHOOK_ID = "webhook-id"
HEADER_WEBHOOK_TIMESTAMP = "webhook-timestamp"
HEADER_WEBHOOK_SIGNATURE = "webhook-signature"

#: How far a signed message's timestamp may be from now, either way, in seconds.
TOLERANCE_SECS = 5 * 60

# What Rust's `i64::from_str` takes: an optional sign and ASCII digits (Python's `int()`
# would also take `1_000` and non-ASCII digits).
_UNIX_SECONDS = re.compile(r"[+-]?[0-9]{1,18}")


def _library_signature(webhook: Webhook, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64>`` as the library signs the message. standardwebhooks 1.1 (the last for
    Python 3.9) signs only text, so a UTF-8 body goes in as text, which every version signs
    as its UTF-8 bytes; other bodies go in as bytes, which 1.3+ signs exactly and 1.1 signs
    wrongly, so that they are refused there (fail closed), never accepted."""
    at = datetime.fromtimestamp(timestamp, tz=timezone.utc)
    try:
        return webhook.sign(msg_id, at, body.decode("utf-8"))
    except UnicodeDecodeError:
        return webhook.sign(msg_id, at, body)  # type: ignore[arg-type, unused-ignore]


class SignatureError(Exception):
    """A message the gateway did not sign, or signed too long ago: answer 401."""


def lower_case_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Headers by lower-case name, whatever the framework's mapping does with case."""
    return {name.lower(): value for name, value in headers.items()}


def required_header(headers: Mapping[str, str], name: str) -> str:
    """The trimmed value of a lower-case-named header; missing or blank is a SignatureError."""
    value = headers.get(name, "").strip()
    if not value:
        raise SignatureError(f"the `{name}` header is missing")
    return value


def verify_signed_message(
    secret: Union[str, bytes, Webhook],
    headers: Mapping[str, str],
    body: bytes,
    now: Optional[float] = None,
) -> str:
    """Checks the ``webhook-*`` headers (lower-case names) over ``body``; the message id."""
    webhook = secret if isinstance(secret, Webhook) else Webhook(secret)
    msg_id = required_header(headers, HEADER_WEBHOOK_ID)
    stamp = required_header(headers, HEADER_WEBHOOK_TIMESTAMP)
    signature = required_header(headers, HEADER_WEBHOOK_SIGNATURE)
    if not _UNIX_SECONDS.fullmatch(stamp):
        raise SignatureError("the timestamp is not a unix time in seconds")
    timestamp = int(stamp)
    if abs((time.time() if now is None else now) - timestamp) > TOLERANCE_SECS:
        raise SignatureError("the timestamp is outside the tolerance")
    expected = _library_signature(webhook, msg_id, timestamp, body).encode()
    # Several space-separated `version,signature` entries may be given; one match is enough.
    if not any(hmac.compare_digest(expected, entry.encode()) for entry in signature.split()):
        raise SignatureError("no signature in the header matches")
    return msg_id
