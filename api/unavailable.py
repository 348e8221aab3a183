"""503 with Retry-After while the Temporal server cannot be reached, for every route at once.

The API's Temporal client gives up within about two seconds (``dealflow.temporal.API_RETRY``);
what it raises then is answered here: ``RPCError`` UNAVAILABLE (connection refused or lost) or
DEADLINE_EXCEEDED, an update call that timed out, and the lazy client's failure to open its
connection at all. A route that handles some statuses itself (NOT_FOUND as a 404 or 409)
re-raises the rest, which end here. Anything else is a bug and stays a logged 500.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from temporalio.client import WorkflowUpdateRPCTimeoutOrCancelledError
from temporalio.service import RPCError, RPCStatusCode

from api.errors import error_body
from dealflow.temporal import RETRY_AFTER_SECONDS

log = logging.getLogger("dealflow.api")

UNAVAILABLE_STATUSES = frozenset({RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED})
# What temporalio raises when a lazy client cannot open its first connection.
_CONNECT_FAILED = "Failed client connect"


class TemporalUnavailable(Exception):
    """Raised by a route that has decided Temporal cannot take its call now."""


def is_unavailable(exc: BaseException) -> bool:
    """True when ``exc`` means the Temporal server cannot be reached (retrying later may work)."""
    if isinstance(exc, TemporalUnavailable | WorkflowUpdateRPCTimeoutOrCancelledError):
        return True
    if isinstance(exc, RPCError):
        # A connection that drops mid-call (the server stopping) surfaces as UNKNOWN with the
        # transport's message rather than UNAVAILABLE; other UNKNOWNs are real errors.
        transport = exc.status == RPCStatusCode.UNKNOWN and "transport error" in str(exc).lower()
        return exc.status in UNAVAILABLE_STATUSES or transport
    return isinstance(exc, RuntimeError) and str(exc).startswith(_CONNECT_FAILED)


def unavailable_response() -> JSONResponse:
    return JSONResponse(
        error_body(
            "temporal_unavailable",
            "The workflow service cannot be reached right now; retry in "
            f"{RETRY_AFTER_SECONDS} seconds.",
        ),
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def install_unavailable_handlers(app: FastAPI) -> None:
    async def _handle(request: Request, exc: Exception) -> JSONResponse:
        if is_unavailable(exc):
            # The route and the status, never the message's details beyond the first line.
            log.warning(
                "temporal unavailable on %s %s: %s",
                request.method,
                request.url.path,
                str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__,
            )
            return unavailable_response()
        # Not an outage: a bug. Same answer as api/errors.py's handler for the unexpected.
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(
            error_body("internal_error", "Something went wrong on our side."), status_code=500
        )

    for exc_class in (
        TemporalUnavailable,
        RPCError,
        WorkflowUpdateRPCTimeoutOrCancelledError,
        RuntimeError,
    ):
        app.add_exception_handler(exc_class, _handle)
