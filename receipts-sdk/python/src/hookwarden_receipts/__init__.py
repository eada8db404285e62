"""hookwarden-receipts: the handler side of hookwarden, in Python.

- :func:`sign`, :class:`Receipt`, :class:`ReceiptKey`: the signed receipt format (the wire
  format of the top README, "Receipts: the wire format"), inline receipts.
- :func:`verify_forwarded`: a handler's check of the gateway's forwards.
- :class:`ReceiptClient`: posts receipts to the gateway, retrying under one receipt id.
- :mod:`hookwarden_receipts.outbox`: the transactional outbox and ``already_processed`` inbox
  (sqlite3, psycopg, SQLAlchemy; SQLite and PostgreSQL), and its flusher.
- :mod:`hookwarden_receipts.probe`: the handler's side of the status probe;
  :mod:`hookwarden_receipts.starlette` mounts it in FastAPI or Starlette.
"""

from .client import (
    BadAnswer,
    ClientError,
    GatewayUnavailable,
    GatewayUnreachable,
    PostAnswer,
    ReceiptClient,
    ReceiptRejected,
    RetryPolicy,
)
from .forwarded import Forwarded, ForwardedError, verify_forwarded
from .outbox import (
    Flusher,
    FlushReport,
    OutboxStats,
    already_processed,
    enqueue,
    ensure_schema,
    flush_once,
    start_flusher,
)
from .probe import ProbeResponse, StatusProbe, handle_status_probe, probe_receipt_id, verify_probe
from .receipt import (
    InvalidKeyError,
    Receipt,
    ReceiptError,
    ReceiptKey,
    ReceiptStatus,
    SignedReceipt,
    inline_receipt_headers,
    new_receipt_id,
    sign,
    unix_now,
)

__all__ = [
    "BadAnswer",
    "ClientError",
    "FlushReport",
    "Flusher",
    "Forwarded",
    "ForwardedError",
    "GatewayUnavailable",
    "GatewayUnreachable",
    "InvalidKeyError",
    "OutboxStats",
    "PostAnswer",
    "ProbeResponse",
    "Receipt",
    "ReceiptClient",
    "ReceiptError",
    "ReceiptKey",
    "ReceiptRejected",
    "ReceiptStatus",
    "RetryPolicy",
    "SignedReceipt",
    "StatusProbe",
    "already_processed",
    "enqueue",
    "ensure_schema",
    "flush_once",
    "handle_status_probe",
    "inline_receipt_headers",
    "new_receipt_id",
    "probe_receipt_id",
    "sign",
    "start_flusher",
    "unix_now",
    "verify_forwarded",
    "verify_probe",
]

__version__ = "0.1.0"
