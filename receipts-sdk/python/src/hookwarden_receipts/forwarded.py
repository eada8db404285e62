"""Verifying the gateway's forwards (SPEC.md "Forwarding to the handler").

The gateway signs every forward with the source's ``whsec_`` secret the Standard Webhooks way,
with its event id as ``webhook-id``, and adds ``idempotency-key``, ``hookwarden-attempt``,
``hookwarden-source`` and, on replays, ``hookwarden-replay-id``. Only the event id, the
timestamp and the body are covered by the signature; the other headers are informational.
Key idempotency on :attr:`Forwarded.event_id` (as :func:`outbox.already_processed` does): it
is authenticated and the same on every retry and replay of an event.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, Union

from standardwebhooks import Webhook

from .webhook import SignatureError, lower_case_headers, required_header, verify_signed_message

HEADER_IDEMPOTENCY_KEY = "idempotency-key"
HEADER_ATTEMPT = "hookwarden-attempt"
HEADER_SOURCE = "hookwarden-source"
HEADER_REPLAY_ID = "hookwarden-replay-id"

_MAX_ATTEMPT = 2**32 - 1


class ForwardedError(Exception):
    """Why a forward was refused: answer 401 to all of them."""


@dataclass(frozen=True)
class Forwarded:
    """A verified forward: which delivery of which event it is."""

    #: The gateway's event id (``webhook-id``, ``evt_…``): what a receipt confirms.
    event_id: str
    #: Stable per event, the same on every retry and replay.
    idempotency_key: str
    #: 1 for the first forward, counting retries and replays.
    attempt: int
    #: The source's name, e.g. ``stripe``.
    source: str
    #: Set when an operator's replay sent this forward.
    replay_id: Optional[str] = None

    @property
    def is_replay(self) -> bool:
        return self.replay_id is not None


def verify_forwarded(
    secret: Union[str, bytes, Webhook],
    headers: Mapping[str, str],
    body: bytes,
    now: Optional[float] = None,
) -> Forwarded:
    """Checks a forward's signature with the source's secret (5 minutes around ``now``,
    default the current time) and reads the hookwarden headers; raises :class:`ForwardedError`.

    ``headers`` is any mapping of the request's headers (Starlette's, Flask's, a dict); names
    are matched case-insensitively. ``body`` is the raw body, exactly as received.
    """
    lower = lower_case_headers(headers)
    try:
        event_id = verify_signed_message(secret, lower, body, now)
        attempt_text = required_header(lower, HEADER_ATTEMPT)
        idempotency_key = required_header(lower, HEADER_IDEMPOTENCY_KEY)
        source = required_header(lower, HEADER_SOURCE)
    except SignatureError as e:
        raise ForwardedError(str(e)) from None
    if not (attempt_text.isascii() and attempt_text.isdigit() and 1 <= int(attempt_text) <= _MAX_ATTEMPT):
        raise ForwardedError(f"the `{HEADER_ATTEMPT}` header is not valid")
    replay_id = lower.get(HEADER_REPLAY_ID, "").strip() or None
    return Forwarded(
        event_id=event_id,
        idempotency_key=idempotency_key,
        attempt=int(attempt_text),
        source=source,
        replay_id=replay_id,
    )
