"""Wait a bounded time for an accepted workflow update's result.

A cancel is accepted (validated, in the history) before the wait starts, so a result that does
not come in time still means the workflow goes on to it: the handler runs on without us, and
the route answers 202 with what stands instead of letting a client's read timeout answer.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TypeVar

from temporalio.client import WorkflowUpdateHandle, WorkflowUpdateRPCTimeoutOrCancelledError

T = TypeVar("T")


async def result_within(update: WorkflowUpdateHandle[T], seconds: float) -> T | None:
    """The update's result, or None if it has not finished within ``seconds``."""
    # Not asyncio.wait_for: the SDK turns the poll's cancellation into an "RPC timed out"
    # error, which would read as Temporal being unreachable (503) rather than our own bound.
    poll = asyncio.ensure_future(update.result())
    done, _ = await asyncio.wait({poll}, timeout=seconds)
    if poll in done:
        return poll.result()
    poll.cancel()
    with contextlib.suppress(asyncio.CancelledError, WorkflowUpdateRPCTimeoutOrCancelledError):
        await poll
    return None
