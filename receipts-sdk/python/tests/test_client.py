"""The client's retry rules, against a real local HTTP server in the gateway's place:
network errors, 5xx, 408 and 429 are retried under the SAME receipt id (429/503 honouring
Retry-After, capped); any other 4xx is final. Waits go through an injected sleep."""

from __future__ import annotations

from email.utils import format_datetime
from datetime import datetime, timedelta, timezone
from typing import List

import pytest

from hookwarden_receipts import (
    BadAnswer,
    GatewayUnavailable,
    GatewayUnreachable,
    Receipt,
    ReceiptClient,
    ReceiptKey,
    ReceiptRejected,
    RetryPolicy,
)
from helpers import StandIn, free_port


class Sleeps:
    """Records the waits instead of sleeping them."""

    def __init__(self) -> None:
        self.waits: List[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


FAST = RetryPolicy(max_attempts=5, base_delay=0.1, max_delay=2.0)


def client_for(stand_in: StandIn, sleeps: Sleeps, retry: RetryPolicy = FAST) -> ReceiptClient:
    return ReceiptClient(stand_in.url + "/", stand_in.key, retry=retry, sleep=sleeps)


def test_retries_5xx_408_and_429_under_one_receipt_id_then_succeeds(gateway_stand_in: StandIn) -> None:
    gateway_stand_in.script(503, 500, 408, 429, 200)
    sleeps = Sleeps()
    stamps = iter(range(1_700_000_000, 1_700_000_010))
    client = ReceiptClient(
        gateway_stand_in.url, gateway_stand_in.key, retry=FAST, sleep=sleeps, clock=lambda: next(stamps)
    )
    receipt = Receipt.applied("evt_1", "ord_1")
    answer = client.post(receipt)
    assert (answer.outcome, answer.duplicate) == ("confirmed", False)
    posts = gateway_stand_in.posts()
    assert len(posts) == 5
    assert len({p.receipt_id for p in posts}) == 1 and posts[0].receipt_id.startswith("rcp_")
    assert all(p.signature_ok and p.receipt == receipt and p.content_type == "application/json" for p in posts)
    # Each try is signed afresh.
    assert [p.timestamp for p in posts] == [str(1_700_000_000 + i) for i in range(5)]
    assert len(sleeps.waits) == 4
    for attempt, wait in enumerate(sleeps.waits, start=1):
        full = min(0.1 * 2 ** (attempt - 1), 2.0)
        assert full / 2 <= wait <= full, (attempt, wait)


def test_a_4xx_is_final_and_carries_the_gateway_error(gateway_stand_in: StandIn) -> None:
    gateway_stand_in.script(403, 200)
    sleeps = Sleeps()
    with pytest.raises(ReceiptRejected) as refused:
        client_for(gateway_stand_in, sleeps).post_with_id(Receipt.applied("evt_1"), "rcp_fixed")
    assert (refused.value.status, refused.value.code, refused.value.message) == (403, "stand_in_403", "scripted answer")
    assert refused.value.is_rejected and not refused.value.was_accepted
    assert [p.receipt_id for p in gateway_stand_in.posts()] == ["rcp_fixed"]
    assert sleeps.waits == []


@pytest.mark.parametrize("status", [400, 401, 404, 409, 413])
def test_every_other_4xx_is_final(gateway_stand_in: StandIn, status: int) -> None:
    gateway_stand_in.script(status)
    with pytest.raises(ReceiptRejected):
        client_for(gateway_stand_in, Sleeps()).post(Receipt.applied("evt_1"))
    assert len(gateway_stand_in.posts()) == 1


def test_retry_after_is_honoured_and_capped(gateway_stand_in: StandIn) -> None:
    in_90s = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=90), usegmt=True)
    gateway_stand_in.script(
        (429, {"retry-after": "1"}, b"{}"),
        (503, {"retry-after": "30"}, b"{}"),
        (503, {"retry-after": in_90s}, b"{}"),
        200,
    )
    sleeps = Sleeps()
    client_for(gateway_stand_in, sleeps, RetryPolicy(max_attempts=5, base_delay=0.01, max_delay=5.0)).post(
        Receipt.applied("evt_1")
    )
    assert sleeps.waits[0] == 1.0  # longer than the backoff: the server's word
    assert sleeps.waits[1:] == [5.0, 5.0]  # capped at max_delay, seconds or an HTTP date


def test_gives_up_after_max_attempts(gateway_stand_in: StandIn) -> None:
    gateway_stand_in.script(500, 502, 503, 200)
    with pytest.raises(GatewayUnavailable) as error:
        client_for(gateway_stand_in, Sleeps(), RetryPolicy(3, 0.01, 0.1)).post(Receipt.applied("evt_1"))
    assert (error.value.status, error.value.attempts) == (503, 3)
    assert not error.value.is_rejected
    assert len(gateway_stand_in.posts()) == 3


def test_retries_network_errors() -> None:
    port = free_port()  # nobody listens there
    sleeps = Sleeps()
    client = ReceiptClient(
        f"http://127.0.0.1:{port}/", ReceiptKey.generate("k"), retry=RetryPolicy(3, 0.01, 0.1), sleep=sleeps
    )
    assert client.url == f"http://127.0.0.1:{port}/v1/receipts"
    with pytest.raises(GatewayUnreachable) as error:
        client.post(Receipt.applied("evt_1"))
    assert error.value.attempts == 3
    assert len(sleeps.waits) == 2


def test_a_dropped_connection_is_retried_under_the_same_id(gateway_stand_in: StandIn) -> None:
    gateway_stand_in.script("drop", 200)
    client_for(gateway_stand_in, Sleeps()).post_with_id(Receipt.applied("evt_1"), "rcp_same")
    assert [p.receipt_id for p in gateway_stand_in.posts()] == ["rcp_same", "rcp_same"]


def test_an_odd_2xx_answer_counts_as_accepted(gateway_stand_in: StandIn) -> None:
    gateway_stand_in.script((200, {}, b"<html>ok</html>"))
    with pytest.raises(BadAnswer) as odd:
        client_for(gateway_stand_in, Sleeps()).post(Receipt.applied("evt_1"))
    assert odd.value.was_accepted
    assert len(gateway_stand_in.posts()) == 1


def test_backoff_doubles_and_is_capped() -> None:
    policy = RetryPolicy(max_attempts=10, base_delay=0.1, max_delay=1.0)
    for attempt, full in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.0), (40, 1.0)]:
        assert policy.delay(attempt, jitter=1.0) == pytest.approx(full)
        assert policy.delay(attempt, jitter=0.0) == pytest.approx(full / 2)
        assert full / 2 <= policy.delay(attempt) <= full
