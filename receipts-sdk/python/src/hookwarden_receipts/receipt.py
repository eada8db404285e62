"""The receipt format, as the gateway and the Rust SDK (``receipts_sdk::receipt``) define it.

A receipt is a small JSON document signed with the handler's ed25519 key the way Standard
Webhooks signs ``v1a`` messages: the signature covers ``{receipt-id}.{receipt-timestamp}.{body}``
and travels in four headers (``receipt-id``, ``receipt-timestamp``, ``receipt-key``,
``receipt-signature: v1a,<base64>``). Inline, on a handler's 2xx or in a status-probe answer,
a fifth header ``receipt-body`` carries the JSON, base64.

The body is serialised exactly as the Rust SDK serialises it (compact, fields in the order
below, optional ones left out), so a receipt re-signed by either SDK under one receipt id
has the same bytes, which the gateway requires of a repeated id.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import secrets
import time
from dataclasses import dataclass
from enum import Enum
from typing import Any, Dict, List, Optional, Tuple, Union

import nacl.signing

HEADER_ID = "receipt-id"
HEADER_TIMESTAMP = "receipt-timestamp"
HEADER_KEY = "receipt-key"
HEADER_SIGNATURE = "receipt-signature"
HEADER_BODY = "receipt-body"

#: How far a receipt's timestamp may be from the gateway's clock, in seconds.
TOLERANCE_SECS = 5 * 60

# The longest `event_id`, `error_code` and `target_record_id`, and the longest `detail`, in
# UTF-8 bytes (the gateway counts bytes).
_MAX_CODE = 200
_MAX_DETAIL = 2000

_FIELDS = ("event_id", "status", "target_record_id", "error_code", "detail")


def unix_now() -> int:
    """The current unix time in seconds: the clock receipts are signed with."""
    return int(time.time())


class ReceiptStatus(str, Enum):
    """What a handler states about an event."""

    #: The handler committed the event's effects.
    APPLIED = "applied"
    #: The handler could not apply it (with an error code).
    FAILED = "failed"


class ReceiptError(ValueError):
    """A receipt body the gateway would refuse; ``code`` is the gateway's error code."""

    code = "receipt_malformed"


class InvalidKeyError(ValueError):
    """A receipt key seed is 32 bytes, base64."""


def _utf8_len(name: str, value: str) -> int:
    try:
        return len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise ReceiptError(f"`{name}` is not valid Unicode") from None


@dataclass(frozen=True)
class Receipt:
    """What a handler states about one event. Always valid: the constructor checks it."""

    event_id: str
    status: ReceiptStatus
    target_record_id: Optional[str] = None
    error_code: Optional[str] = None
    detail: Optional[str] = None

    def __post_init__(self) -> None:
        try:
            status = ReceiptStatus(self.status)
        except ValueError:
            raise ReceiptError("`status` must be `applied` or `failed`") from None
        object.__setattr__(self, "status", status)
        for name in _FIELDS:
            value = getattr(self, name)
            if name != "status" and not (value is None or isinstance(value, str)):
                raise ReceiptError(f"`{name}` must be a string")
        if not isinstance(self.event_id, str) or not 0 < _utf8_len("event_id", self.event_id) <= _MAX_CODE:
            raise ReceiptError("`event_id` must be a non-empty id")
        if status is ReceiptStatus.FAILED and self.error_code is None:
            raise ReceiptError("a `failed` receipt needs an `error_code`")
        if status is ReceiptStatus.APPLIED and self.error_code is not None:
            raise ReceiptError("an `applied` receipt carries no `error_code`")
        too_long = (
            (self.error_code is not None and not 0 < _utf8_len("error_code", self.error_code) <= _MAX_CODE)
            or (self.target_record_id is not None and _utf8_len("target_record_id", self.target_record_id) > _MAX_CODE)
            or (self.detail is not None and _utf8_len("detail", self.detail) > _MAX_DETAIL)
        )
        if too_long:
            raise ReceiptError("a field is empty or too long")

    @classmethod
    def applied(cls, event_id: str, target_record_id: Optional[str] = None) -> Receipt:
        return cls(event_id, ReceiptStatus.APPLIED, target_record_id=target_record_id)

    @classmethod
    def failed(cls, event_id: str, error_code: str, detail: Optional[str] = None) -> Receipt:
        return cls(event_id, ReceiptStatus.FAILED, error_code=error_code, detail=detail)

    def with_target_record(self, target_record_id: str) -> Receipt:
        return dataclasses.replace(self, target_record_id=target_record_id)

    @classmethod
    def parse(cls, body: Union[bytes, str]) -> Receipt:
        """Parses a receipt body as the gateway does: a JSON object with known fields only."""
        if isinstance(body, (bytes, bytearray)):
            try:
                body = bytes(body).decode("utf-8")
            except UnicodeDecodeError:
                raise ReceiptError("the receipt body is not UTF-8") from None
        try:
            value = json.loads(body, object_pairs_hook=_object_without_duplicates)
        except ValueError as e:
            raise ReceiptError(f"the receipt body is not JSON: {e}") from None
        if not isinstance(value, dict):
            raise ReceiptError("the receipt body must be a JSON object")
        unknown = sorted(set(value) - set(_FIELDS))
        if unknown:
            raise ReceiptError(f"unknown field `{unknown[0]}`")
        for required in ("event_id", "status"):
            if not isinstance(value.get(required), str):
                raise ReceiptError(f"`{required}` must be a string")
        return cls(**value)

    def to_json(self) -> bytes:
        """The exact bytes that are signed and sent: compact JSON, as the Rust SDK writes it."""
        fields: Dict[str, str] = {"event_id": self.event_id, "status": self.status.value}
        for name in ("target_record_id", "error_code", "detail"):
            value = getattr(self, name)
            if value is not None:
                fields[name] = value
        return json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _object_without_duplicates(pairs: List[Tuple[str, Any]]) -> Dict[str, Any]:
    """A JSON object; a field given twice is malformed (serde refuses it as well)."""
    out: Dict[str, Any] = {}
    for name, value in pairs:
        if name in out:
            raise ReceiptError(f"duplicate field `{name}`")
        out[name] = value
    return out


def new_receipt_id() -> str:
    """``rcp_`` + 32 random hex digits."""
    return "rcp_" + secrets.token_hex(16)


def _signed_content(receipt_id: str, timestamp: str, body: bytes) -> bytes:
    return f"{receipt_id}.{timestamp}.".encode() + body


@dataclass(frozen=True)
class SignedReceipt:
    """A receipt ready to send: its headers and the exact body bytes that were signed."""

    receipt_id: str
    timestamp: str
    key_id: str
    signature: str
    body: bytes

    def headers(self) -> Dict[str, str]:
        """The four headers of ``POST /v1/receipts`` (the body is ``self.body``)."""
        return {
            HEADER_ID: self.receipt_id,
            HEADER_TIMESTAMP: self.timestamp,
            HEADER_KEY: self.key_id,
            HEADER_SIGNATURE: self.signature,
        }

    def inline_headers(self) -> Dict[str, str]:
        """The five headers of the inline form: on a 2xx, or as one status-probe answer entry."""
        headers = self.headers()
        headers[HEADER_BODY] = base64.b64encode(self.body).decode("ascii")
        return headers


class ReceiptKey:
    """A handler's ed25519 signing key and the id it is registered under at the gateway."""

    def __init__(self, key_id: str, signing_key: nacl.signing.SigningKey) -> None:
        if not key_id:
            raise InvalidKeyError("a receipt key needs an id")
        self.key_id = key_id
        self._signing = signing_key

    @classmethod
    def from_seed_base64(cls, key_id: str, seed: str) -> ReceiptKey:
        """Loads a key from its 32-byte seed, base64, as ``hookwarden keys generate`` prints it."""
        return cls(key_id, nacl.signing.SigningKey(_decode_seed(seed)))

    @classmethod
    def generate(cls, key_id: str) -> ReceiptKey:
        return cls(key_id, nacl.signing.SigningKey.generate())

    def seed_base64(self) -> str:
        return base64.b64encode(bytes(self._signing)).decode("ascii")

    def public_key_base64(self) -> str:
        """The public half, base64: what goes into the source's ``receipt_keys``."""
        return base64.b64encode(bytes(self._signing.verify_key)).decode("ascii")

    def sign_body(self, receipt_id: str, timestamp: int, body: bytes) -> SignedReceipt:
        """Signs exact body bytes: the primitive every SDK shares (see :func:`sign`)."""
        stamp = str(int(timestamp))
        signature = self._signing.sign(_signed_content(receipt_id, stamp, body)).signature
        return SignedReceipt(
            receipt_id=receipt_id,
            timestamp=stamp,
            key_id=self.key_id,
            signature="v1a," + base64.b64encode(signature).decode("ascii"),
            body=body,
        )

    def sign(self, receipt: Receipt, timestamp: Optional[int] = None) -> SignedReceipt:
        """Signs ``receipt`` under a fresh receipt id, at ``timestamp`` (default: now)."""
        return self.sign_with_id(receipt, new_receipt_id(), timestamp)

    def sign_with_id(self, receipt: Receipt, receipt_id: str, timestamp: Optional[int] = None) -> SignedReceipt:
        """Signs under a given receipt id: a retried post must reuse its id."""
        return self.sign_body(receipt_id, unix_now() if timestamp is None else timestamp, receipt.to_json())

    def __repr__(self) -> str:
        return f"ReceiptKey({self.key_id!r}, public {self.public_key_base64()})"


def _decode_seed(seed: str) -> bytes:
    try:
        raw = base64.b64decode(seed.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidKeyError("a receipt key seed is 32 bytes of base64") from None
    if len(raw) != 32:
        raise InvalidKeyError("a receipt key seed is 32 bytes of base64")
    return raw


def sign(seed: str, key_id: str, receipt_id: str, timestamp: int, body: Union[bytes, str]) -> Dict[str, str]:
    """The four ``receipt-*`` headers for ``body`` (SPEC.md, "Receipts SDKs").

    ``seed`` is the base64 32-byte ed25519 seed ``hookwarden keys generate`` prints,
    ``timestamp`` unix seconds, ``body`` the exact bytes to post (a str is sent as UTF-8).
    """
    data = body.encode("utf-8") if isinstance(body, str) else bytes(body)
    return ReceiptKey.from_seed_base64(key_id, seed).sign_body(receipt_id, timestamp, data).headers()


def inline_receipt_headers(key: ReceiptKey, receipt: Receipt, timestamp: Optional[int] = None) -> Dict[str, str]:
    """The five headers that put ``receipt`` on a handler's 2xx (for a handler that commits
    before it answers), signed now under a fresh receipt id."""
    return key.sign(receipt, timestamp).inline_headers()
