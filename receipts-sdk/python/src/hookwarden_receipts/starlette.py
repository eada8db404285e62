"""Mounting the status probe in a FastAPI or Starlette app (needs Starlette, nothing else).

::

    probe = StatusProbe(secret=SIGNING_SECRET, key=key, db=engine)
    app.add_route("/hookwarden/status", status_probe_endpoint(probe), methods=["POST"])

The probe's database work is blocking, so it runs in Starlette's thread pool.
"""

from __future__ import annotations

from typing import Awaitable, Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .probe import StatusProbe

__all__ = ["status_probe_endpoint", "status_probe_route"]


def status_probe_endpoint(probe: StatusProbe) -> Callable[[Request], Awaitable[Response]]:
    """A Starlette endpoint answering the gateway's status probes with ``probe``."""

    async def endpoint(request: Request) -> Response:
        body = await request.body()
        answer = await run_in_threadpool(probe.handle, body, dict(request.headers.items()))
        return Response(answer.body, status_code=answer.status, media_type=answer.content_type)

    return endpoint


def status_probe_route(probe: StatusProbe, path: str = "/hookwarden/status") -> Route:
    """The probe as a ``POST`` route, for ``Starlette(routes=[...])`` or ``app.router.routes``."""
    return Route(path, status_probe_endpoint(probe), methods=["POST"])
