"""The receipt body's rules (the Rust SDK's `Receipt::parse` and the gateway's
`receipt_malformed`), its exact serialisation, keys and the signing primitive."""

from __future__ import annotations

import base64
import re

import nacl.signing
import pytest

from hookwarden_receipts import (
    InvalidKeyError,
    Receipt,
    ReceiptError,
    ReceiptKey,
    ReceiptStatus,
    inline_receipt_headers,
    new_receipt_id,
    sign,
    unix_now,
)


@pytest.mark.parametrize(
    "body",
    [
        b'{"event_id":"e","status":"failed"}',  # failed without error_code
        b'{"event_id":"e","status":"applied","error_code":"E"}',  # applied with one
        b'{"event_id":"e","status":"done"}',
        b'{"event_id":"e","status":"applied","extra":1}',
        b'{"event_id":"","status":"applied"}',
        b'{"status":"applied"}',
        b'{"event_id":"e"}',
        b'{"event_id":null,"status":"applied"}',
        b'{"event_id":7,"status":"applied"}',
        b'{"event_id":"e","status":"applied","target_record_id":7}',
        b'{"event_id":"e","status":"failed","error_code":""}',
        b'{"event_id":"e","event_id":"f","status":"applied"}',  # a field twice
        b'{"event_id":"\\ud800","status":"applied"}',  # a lone surrogate is not Unicode
        b'["e","applied"]',
        b'{"event_id":"e","status":"applied"} x',
        b'\xef\xbb\xbf{"event_id":"e","status":"applied"}',  # a BOM
        b'{"event_id":"\xff","status":"applied"}',  # not UTF-8
        b"",
    ],
)
def test_malformed_bodies_are_refused(body: bytes) -> None:
    with pytest.raises(ReceiptError) as refused:
        Receipt.parse(body)
    assert refused.value.code == "receipt_malformed"


def test_valid_bodies_parse() -> None:
    assert Receipt.parse(b'{"event_id":"e","status":"failed","error_code":"E_DB"}') == Receipt.failed("e", "E_DB")
    assert Receipt.parse('{"status":"applied","event_id":"e","target_record_id":null}') == Receipt.applied("e")
    full = Receipt.parse(b' {"detail":"d","error_code":"E","status":"failed","event_id":"e","target_record_id":"r"} ')
    assert full == Receipt("e", ReceiptStatus.FAILED, target_record_id="r", error_code="E", detail="d")


def test_lengths_are_counted_in_utf8_bytes() -> None:
    assert Receipt.applied("e" * 200).event_id
    with pytest.raises(ReceiptError):
        Receipt.applied("e" * 201)
    with pytest.raises(ReceiptError):
        Receipt.applied("é" * 101)  # 202 bytes
    assert Receipt.failed("e", "E", detail="d" * 2000)
    with pytest.raises(ReceiptError):
        Receipt.failed("e", "E", detail="d" * 2001)
    with pytest.raises(ReceiptError):
        Receipt.failed("e", "E" * 201)
    assert Receipt.applied("e", target_record_id="") == Receipt.parse(
        b'{"event_id":"e","status":"applied","target_record_id":""}'
    )
    with pytest.raises(ReceiptError):
        Receipt.applied("e", target_record_id="r" * 201)


def test_constructors_check_like_parse() -> None:
    with pytest.raises(ReceiptError):
        Receipt("e", "done")  # type: ignore[arg-type]
    with pytest.raises(ReceiptError):
        Receipt("e", ReceiptStatus.FAILED)
    with pytest.raises(ReceiptError):
        Receipt("e", ReceiptStatus.APPLIED, error_code="E")
    assert Receipt("e", "applied") == Receipt.applied("e")  # type: ignore[arg-type]
    assert Receipt.applied("e").with_target_record("ord_1") == Receipt.applied("e", "ord_1")


def test_serialisation_is_the_rust_sdks() -> None:
    """serde_json's compact form: fields in declaration order, optional ones left out,
    non-ASCII as is, control characters escaped with lower-case hex."""
    receipt = Receipt(
        "evt_1", ReceiptStatus.FAILED, target_record_id="ord/é", error_code="E_X", detail='a"b\\c\n\x01\x7f😀'
    )
    expected = '{"event_id":"evt_1","status":"failed","target_record_id":"ord/é","error_code":"E_X","detail":"a\\"b\\\\c\\n\\u0001\x7f😀"}'
    assert receipt.to_json() == expected.encode("utf-8")
    assert Receipt.parse(receipt.to_json()) == receipt
    assert Receipt.applied("e").to_json() == b'{"event_id":"e","status":"applied"}'


def test_keys() -> None:
    seed = base64.b64encode(bytes(range(1, 33))).decode()
    key = ReceiptKey.from_seed_base64("k", f"  {seed}\n")
    assert key.seed_base64() == seed
    assert "AQID" not in repr(key)  # the seed never shows
    for bad in ["", "not base64!", base64.b64encode(b"short").decode(), seed[:-1]]:
        with pytest.raises(InvalidKeyError):
            ReceiptKey.from_seed_base64("k", bad)
    with pytest.raises(InvalidKeyError):
        sign("AAAA", "k", "rcp_1", 1, b"{}")
    assert re.fullmatch(r"rcp_[0-9a-f]{32}", new_receipt_id())
    assert new_receipt_id() != new_receipt_id()


def test_signatures_verify_and_inline_headers_carry_the_body() -> None:
    key = ReceiptKey.generate("orders-1")
    receipt = Receipt.applied("evt_1", "ord_1")
    headers = inline_receipt_headers(key, receipt)
    assert set(headers) == {"receipt-id", "receipt-timestamp", "receipt-key", "receipt-signature", "receipt-body"}
    assert re.fullmatch(r"rcp_[0-9a-f]{32}", headers["receipt-id"])
    assert abs(int(headers["receipt-timestamp"]) - unix_now()) <= 1
    body = base64.b64decode(headers["receipt-body"])
    assert Receipt.parse(body) == receipt
    verify = nacl.signing.VerifyKey(base64.b64decode(key.public_key_base64()))
    signature = base64.b64decode(headers["receipt-signature"].removeprefix("v1a,"))
    content = f"{headers['receipt-id']}.{headers['receipt-timestamp']}.".encode() + body
    verify.verify(content, signature)
    # The primitive signs exactly the bytes it is given, str as UTF-8.
    assert sign(key.seed_base64(), "k", "rcp_x", 5, "é") == sign(key.seed_base64(), "k", "rcp_x", 5, "é".encode())
