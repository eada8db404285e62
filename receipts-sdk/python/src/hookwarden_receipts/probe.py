"""The handler's side of the status probe (docs/status-probe.md).

Before a replay the gateway asks the handler "which of these events have you applied or
failed?" in a request signed like a forward (Standard Webhooks ``v1`` with the source's
secret, ``webhook-id`` = ``prb_…``). The handler answers with receipts in the inline form:

- an event with a receipt in the outbox (sent or not) is answered with that receipt, under
  its stored receipt id, signed afresh with the current time (an ``applied`` one if there is
  one, else the latest ``failed`` one when the event is not marked processed);
- an event only the inbox knows (``already_processed`` marked it) is answered ``applied``
  under the *probe receipt id* ``rcp_`` + the first 32 hex digits of
  ``sha256("hookwarden-probe:" + event_id)``, so asking twice records one receipt;
- an event neither knows is left out: absence means "I do not know", never "failed".

:func:`handle_status_probe` (or :class:`StatusProbe`) is framework-neutral: body bytes and
headers in, status and JSON bytes out. :mod:`hookwarden_receipts.starlette` mounts it in a
FastAPI or Starlette app.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from .outbox import EventRecord, lookup_events
from .receipt import Receipt, ReceiptKey, ReceiptStatus, unix_now
from .webhook import SignatureError, lower_case_headers, verify_signed_message

__all__ = [
    "PROBE_TYPE",
    "PROBE_VERSION",
    "ProbeError",
    "ProbeRequest",
    "ProbeResponse",
    "StatusProbe",
    "answer_entries",
    "handle_status_probe",
    "probe_receipt_id",
    "verify_probe",
]

log = logging.getLogger("hookwarden_receipts.probe")

PROBE_TYPE = "hookwarden.status_probe"
PROBE_VERSION = 1
#: The most event ids one probe asks about.
MAX_EVENT_IDS = 100
PROBE_ID_PREFIX = "prb_"
HEADER_SOURCE = "hookwarden-source"

#: The source's signing secret, or a function from the ``hookwarden-source`` header (None
#: when absent) to that source's secret (None: no such source).
SecretLookup = Union[str, Callable[[Optional[str]], Optional[str]]]


class ProbeError(Exception):
    """A probe the handler does not answer: ``status`` 401 (not the gateway's, or stale) or
    400 (a probe it cannot read), with an error ``code``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass(frozen=True)
class ProbeRequest:
    """A verified probe: the gateway asks about these events of this source."""

    probe_id: str
    source: str
    event_ids: Tuple[str, ...]


@dataclass(frozen=True)
class ProbeResponse:
    """What to answer: status, ``content-type: application/json``, body."""

    status: int
    body: bytes
    content_type: str = "application/json"


def probe_receipt_id(event_id: str) -> str:
    """The receipt id of an ``applied`` answer from the inbox alone: the same on every probe."""
    return "rcp_" + hashlib.sha256(f"hookwarden-probe:{event_id}".encode()).hexdigest()[:32]


def verify_probe(
    secret: SecretLookup,
    headers: Mapping[str, str],
    body: bytes,
    now: Optional[float] = None,
) -> ProbeRequest:
    """Checks a probe as docs/status-probe.md says and reads it; raises :class:`ProbeError`.

    Signature with the source's secret and the timestamp within 5 minutes of ``now`` (401),
    ``webhook-id`` starting with ``prb_`` (401: an event forward is never a probe), then the
    body: ``type`` (400), ``version`` 1 (400), ``source`` and 1 to 100 ``event_ids`` (400).
    """
    lower = lower_case_headers(headers)
    header_source = lower.get(HEADER_SOURCE, "").strip() or None
    key = secret if isinstance(secret, str) else secret(header_source)
    if key is None:
        raise ProbeError(401, "probe_source_unknown", f"no signing secret for source {header_source!r}")
    try:
        probe_id = verify_signed_message(key, lower, body, now)
    except SignatureError as e:
        raise ProbeError(401, "probe_signature_invalid", str(e)) from None
    if not probe_id.startswith(PROBE_ID_PREFIX):
        raise ProbeError(401, "probe_signature_invalid", "`webhook-id` is not a probe id (`prb_…`)")
    try:
        value = json.loads(body)
    except ValueError:
        raise ProbeError(400, "probe_malformed", "the body is not JSON") from None
    if not isinstance(value, dict) or value.get("type") != PROBE_TYPE:
        raise ProbeError(400, "probe_malformed", f"`type` is not `{PROBE_TYPE}`")
    version = value.get("version")
    if type(version) is not int or version != PROBE_VERSION:
        raise ProbeError(400, "probe_version_unsupported", f"probe version {version!r} is not {PROBE_VERSION}")
    source = value.get("source")
    if not isinstance(source, str) or not source:
        raise ProbeError(400, "probe_malformed", "`source` must be the source's name")
    if header_source is not None and header_source != source:
        raise ProbeError(400, "probe_malformed", "`source` differs from the `hookwarden-source` header")
    event_ids = value.get("event_ids")
    if (
        not isinstance(event_ids, list)
        or not 1 <= len(event_ids) <= MAX_EVENT_IDS
        or not all(isinstance(e, str) and e for e in event_ids)
    ):
        raise ProbeError(400, "probe_malformed", f"`event_ids` must be 1 to {MAX_EVENT_IDS} event ids")
    return ProbeRequest(probe_id=probe_id, source=source, event_ids=tuple(event_ids))


def answer_entries(
    event_ids: Sequence[str],
    known: Mapping[str, EventRecord],
    key: ReceiptKey,
    now: Optional[int] = None,
) -> List[Dict[str, str]]:
    """The answer's receipts, in the order asked (each event once), signed at ``now``."""
    timestamp = unix_now() if now is None else now
    entries = []
    for event_id in dict.fromkeys(event_ids):
        record = known.get(event_id)
        answer = _answer(event_id, record) if record is not None else None
        if answer is not None:
            receipt_id, receipt = answer
            entries.append(key.sign_with_id(receipt, receipt_id, timestamp).inline_headers())
    return entries


def _answer(event_id: str, record: EventRecord) -> Optional[Tuple[str, Receipt]]:
    """Which receipt answers for one event: see the module's doc."""
    applied = [r for r in record.receipts if r.receipt.status is ReceiptStatus.APPLIED]
    failed = [r for r in record.receipts if r.receipt.status is ReceiptStatus.FAILED]
    if applied:
        return applied[-1].receipt_id, applied[-1].receipt
    if record.processed:
        return probe_receipt_id(event_id), Receipt.applied(event_id)
    if failed:
        return failed[-1].receipt_id, failed[-1].receipt
    return None


def _error(status: int, code: str, message: str) -> ProbeResponse:
    body = {"error": {"code": code, "message": message}}
    return ProbeResponse(status, json.dumps(body, separators=(",", ":")).encode())


class StatusProbe:
    """The status-probe endpoint of one handler: its secret(s), its receipt key, its tables.

    ``db`` is where the outbox and inbox live: a SQLAlchemy ``Engine`` or ``sessionmaker``,
    or a function opening a DB-API connection (each probe opens and closes one).
    """

    def __init__(self, *, secret: SecretLookup, key: ReceiptKey, db: object) -> None:
        self.secret = secret
        self.key = key
        self.db = db

    def handle(self, body: bytes, headers: Mapping[str, str], now: Optional[int] = None) -> ProbeResponse:
        """Answers one probe request: 200 with the receipts, or 401/400 with an error."""
        try:
            request = verify_probe(self.secret, headers, body, now)
        except ProbeError as e:
            log.warning("refused a status probe (%d %s): %s", e.status, e.code, e.message)
            return _error(e.status, e.code, e.message)
        known = lookup_events(self.db, request.event_ids)
        entries = answer_entries(request.event_ids, known, self.key, now)
        log.info(
            "status probe %s from %s: %d asked, %d answered",
            request.probe_id,
            request.source,
            len(request.event_ids),
            len(entries),
        )
        return ProbeResponse(200, json.dumps({"receipts": entries}, separators=(",", ":")).encode())


def handle_status_probe(
    body: bytes,
    headers: Mapping[str, str],
    *,
    secret: SecretLookup,
    key: ReceiptKey,
    db: object,
    now: Optional[int] = None,
) -> ProbeResponse:
    """Answers one probe request (see :class:`StatusProbe`), for any web framework."""
    return StatusProbe(secret=secret, key=key, db=db).handle(body, headers, now)
