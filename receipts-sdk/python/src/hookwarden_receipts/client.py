"""Posting receipts to the gateway's ``POST /v1/receipts`` (README, "Receipts: the wire format").

Every try is signed afresh (a new ``receipt-timestamp``) under the SAME ``receipt-id``, so the
gateway sees one idempotent receipt however many tries it took. Network errors, 5xx, 408 and
429 are retried with capped exponential backoff and jitter (a ``Retry-After`` is honoured, up
to the cap); any other answer is final and raised as :class:`ReceiptRejected` with the
gateway's error code. Standard library HTTP only (``urllib``).
"""

from __future__ import annotations

import email.utils
import http.client
import json
import logging
import random
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Dict, Optional, Tuple, Union

from .receipt import Receipt, ReceiptKey, SignedReceipt, new_receipt_id, unix_now

__all__ = [
    "BadAnswer",
    "ClientError",
    "GatewayUnavailable",
    "GatewayUnreachable",
    "PostAnswer",
    "ReceiptClient",
    "ReceiptRejected",
    "RetryPolicy",
]

log = logging.getLogger("hookwarden_receipts.client")

_USER_AGENT = "hookwarden-receipts-python/0.1.0"


@dataclass(frozen=True)
class RetryPolicy:
    """How many tries and how long to wait between them (seconds)."""

    #: Tries in all, the first included (at least 1).
    max_attempts: int = 5
    #: The wait after the first failed try; it doubles after each further one.
    base_delay: float = 0.25
    #: The longest wait between two tries (it also caps a ``Retry-After``).
    max_delay: float = 10.0

    def delay(self, attempt: int, jitter: Optional[float] = None) -> float:
        """The wait after failed try number ``attempt`` (1-based): ``base * 2**(attempt-1)``,
        capped, then scaled by a factor in [0.5, 1] (``jitter`` in [0, 1], default random) so
        many clients do not retry in step."""
        full = min(self.base_delay * 2.0 ** min(max(attempt - 1, 0), 20), self.max_delay)
        return full * (0.5 + (random.random() if jitter is None else jitter) / 2)


@dataclass(frozen=True)
class PostAnswer:
    """The gateway's answer to an accepted receipt."""

    #: The event's outcome after the receipt: ``confirmed``, ``failed`` or ``unknown``.
    outcome: str
    #: True when the gateway already had this receipt id with this body.
    duplicate: bool
    #: The whole answer (``event_id``, ``receipt_id``, ...).
    raw: Dict[str, Any] = field(default_factory=dict)


class ClientError(Exception):
    """Why a receipt was not accepted."""

    #: Whether the receipt can never be accepted as it is (a final 4xx).
    is_rejected = False
    #: Whether the gateway stored the receipt after all (a 2xx with an odd answer).
    was_accepted = False


class ReceiptRejected(ClientError):
    """A final answer (a 4xx other than 408 and 429): trying again cannot help."""

    is_rejected = True

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"the gateway refused the receipt ({status} {code}): {message}")
        self.status, self.code, self.message = status, code, message


class GatewayUnavailable(ClientError):
    """5xx, 408 or 429 on the last try."""

    def __init__(self, status: int, code: str, message: str, attempts: int) -> None:
        super().__init__(f"the gateway answered {status} ({code}: {message}) after {attempts} tries")
        self.status, self.code, self.message, self.attempts = status, code, message, attempts


class GatewayUnreachable(ClientError):
    """No answer on the last try (connection refused or reset, timeout)."""

    def __init__(self, message: str, attempts: int) -> None:
        super().__init__(f"the gateway could not be reached after {attempts} tries: {message}")
        self.message, self.attempts = message, attempts


class BadAnswer(ClientError):
    """The gateway accepted the receipt (2xx) but its answer is not the expected JSON."""

    was_accepted = True


@dataclass(frozen=True)
class _Again:
    """A try worth repeating: why it failed, and the server's ``Retry-After`` in seconds."""

    error: ClientError
    retry_after: Optional[float] = None


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer, not a place to post the receipt again."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class ReceiptClient:
    """Posts signed receipts to one gateway; safe to share between threads."""

    def __init__(
        self,
        gateway_url: str,
        key: ReceiptKey,
        *,
        retry: RetryPolicy = RetryPolicy(),
        timeout: float = 10.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], int] = unix_now,
    ) -> None:
        """``gateway_url`` is the gateway's base URL, e.g. ``http://127.0.0.1:8080``.
        ``sleep`` and ``clock`` are there for tests: the wait between tries, the signing time."""
        self.url = gateway_url.rstrip("/") + "/v1/receipts"
        self.key = key
        self.retry = RetryPolicy(max(retry.max_attempts, 1), retry.base_delay, retry.max_delay)
        self.timeout = timeout
        self._sleep = sleep
        self._clock = clock
        self._opener = urllib.request.build_opener(_NoRedirects)

    def post(self, receipt: Receipt) -> PostAnswer:
        """Posts ``receipt`` under a fresh receipt id, retrying as the policy says."""
        return self.post_with_id(receipt, new_receipt_id())

    def post_with_id(self, receipt: Receipt, receipt_id: str) -> PostAnswer:
        """Posts ``receipt`` under a given receipt id (e.g. one stored in an outbox): a
        receipt posted twice under one id counts once."""
        attempt = 1
        while True:
            signed = self.key.sign_with_id(receipt, receipt_id, self._clock())
            outcome = self._try_once(signed, attempt)
            if isinstance(outcome, PostAnswer):
                return outcome
            if attempt >= self.retry.max_attempts:
                raise outcome.error
            wait = max(self.retry.delay(attempt), min(outcome.retry_after or 0.0, self.retry.max_delay))
            log.debug("receipt %s: try %d failed (%s); retrying in %.2fs", receipt_id, attempt, outcome.error, wait)
            self._sleep(wait)
            attempt += 1

    def _try_once(self, signed: SignedReceipt, attempt: int) -> Union[PostAnswer, _Again]:
        """The gateway's answer, or why to try again; final refusals are raised."""
        headers = dict(signed.headers(), **{"content-type": "application/json", "user-agent": _USER_AGENT})
        request = urllib.request.Request(self.url, data=signed.body, headers=headers, method="POST")
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                return _accepted(response.read())
        except urllib.error.HTTPError as e:
            status, retry_after = e.code, e.headers.get("retry-after")
            try:
                text = e.read().decode("utf-8", errors="replace")
            except (OSError, http.client.HTTPException) as read_error:
                # The connection broke while the answer was read; a repost under the same
                # id is safe whether or not the receipt was stored.
                return _Again(GatewayUnreachable(_describe(read_error), attempt))
        except (OSError, http.client.HTTPException) as e:
            return _Again(GatewayUnreachable(_describe(e), attempt))
        code, message = _error_body(status, text)
        if status >= 500 or status in (408, 429):
            return _Again(GatewayUnavailable(status, code, message, attempt), _retry_after(retry_after))
        raise ReceiptRejected(status, code, message)


def _accepted(data: bytes) -> PostAnswer:
    try:
        answer = json.loads(data)
        if isinstance(answer, dict) and isinstance(answer.get("outcome"), str):
            return PostAnswer(outcome=answer["outcome"], duplicate=answer.get("duplicate") is True, raw=answer)
    except ValueError:
        pass
    raise BadAnswer(f"the gateway accepted the receipt but answered unexpected JSON: {_excerpt(data)}")


def _error_body(status: int, text: str) -> Tuple[str, str]:
    """``{"error": {"code", "message"}}``, the gateway's error body, or a stand-in."""
    try:
        error = json.loads(text)["error"]
        if isinstance(error["code"], str) and isinstance(error["message"], str):
            return error["code"], error["message"]
    except (ValueError, KeyError, TypeError):
        pass
    return f"http_{status}", _excerpt(text.encode())


def _retry_after(header: Optional[str]) -> Optional[float]:
    """Seconds from a ``Retry-After`` header: delta seconds or an HTTP date."""
    value = (header or "").strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max((when - datetime.now(timezone.utc)).total_seconds(), 0.0)


def _describe(error: BaseException) -> str:
    if isinstance(error, urllib.error.URLError) and not isinstance(error, urllib.error.HTTPError):
        return str(error.reason)
    return f"{type(error).__name__}: {error}"


def _excerpt(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")[:200]
