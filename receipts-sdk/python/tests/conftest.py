"""Shared fixtures: the repository's test vectors, PostgreSQL databases of our own, a stand-in
gateway. The suite tests the package's source in this tree (src/ comes first on the path)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Dict, Iterator

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
REPO_ROOT = PACKAGE_ROOT.parents[1]
sys.path.insert(0, str(PACKAGE_ROOT / "src"))

from helpers import PgDatabase, StandIn  # noqa: E402


@pytest.fixture(scope="session")
def vectors() -> Dict[str, Any]:
    """receipts-sdk/test-vectors.json: every SDK reproduces these bytes."""
    with open(REPO_ROOT / "receipts-sdk" / "test-vectors.json", encoding="utf-8") as f:
        value: Dict[str, Any] = json.load(f)
    return value


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for one test, dropped after it. PostgreSQL is required:
    without it these tests fail, never skip."""
    db = PgDatabase.create()
    try:
        yield db.url
    finally:
        db.drop()


@pytest.fixture
def gateway_stand_in() -> Iterator[StandIn]:
    """A local HTTP server in the gateway's place that records the receipts posted to it."""
    stand_in = StandIn.start()
    try:
        yield stand_in
    finally:
        stand_in.stop()


def hookwarden_bin() -> str:
    """The gateway binary the end-to-end tests run (`cargo build -p hookwarden`)."""
    path = os.environ.get("HOOKWARDEN_BIN")
    if not path:
        pytest.fail("set HOOKWARDEN_BIN to the hookwarden binary (cargo build -p hookwarden; target/debug/hookwarden)")
    if not os.access(path, os.X_OK):
        pytest.fail(f"HOOKWARDEN_BIN={path} is not an executable")
    return path


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Keeps each phase's report on the test, so fixtures can show process logs on failure."""
    outcome = yield
    setattr(item, f"report_{call.when}", outcome.get_result())  # type: ignore[attr-defined]
