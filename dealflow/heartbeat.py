"""Every running activity heartbeats, so a killed worker is noticed in seconds, not minutes.

Without heartbeats, Temporal learns that the worker running an activity died only when the
attempt's start-to-close timeout (30 s by default, longer for the long steps) runs out; only then
is the activity retried on another worker. With a heartbeat timeout of ``WORKER_LOSS_SECONDS``
(set by the workflows on every activity) and this interceptor heartbeating while any activity
runs, the retry starts a few seconds after the kill.

The pulse repeats the details the activity itself last sent (a campaign's cursor, a render's
progress), so an activity that checkpoints through its heartbeat keeps its checkpoint.

A heartbeat is also how an activity hears that it was cancelled. Activities that never heartbeat
themselves (a Slack post, an email, a database write) were written to run to completion once
started: their at-most-once bookkeeping (a ``sending`` row, then the send, then ``sent``) must
not be cut in the middle, and a delivery the workflow no longer waits for (a request decided
meanwhile) still completes, as it did before the pulse. So for those the pulse only keeps the
attempt alive: a cancellation is held until the activity finishes. An activity that heartbeats on
its own (a render, a campaign's paging) takes cancellations as it always did. The SDK
throttles heartbeats to at most one per 80 % of the heartbeat timeout, so a pulse every third of
it costs one small RPC per few seconds per running activity. The start-to-close timeout still
bounds an activity that is alive but stuck (its pulse keeps beating while, say, a call hangs).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from dataclasses import dataclass, field
from typing import Any

from temporalio import activity
from temporalio.worker import (
    ActivityInboundInterceptor,
    ActivityOutboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)


@dataclass
class _Beat:
    details: tuple[Any, ...] = field(default_factory=tuple)
    own: bool = False  # the activity heartbeats itself (and so handles its cancellation)
    pulsing: bool = False  # the pulse's own heartbeat is under way


_CURRENT: contextvars.ContextVar[_Beat | None] = contextvars.ContextVar("beat", default=None)


class PulseInterceptor(Interceptor):
    """Worker interceptor: heartbeat every running activity that has a heartbeat timeout."""

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _PulseInbound(next)


class _PulseInbound(ActivityInboundInterceptor):
    def init(self, outbound: ActivityOutboundInterceptor) -> None:
        super().init(_RecordingOutbound(outbound))

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        timeout = activity.info().heartbeat_timeout
        if timeout is None or not asyncio.iscoroutinefunction(input.fn):
            # No heartbeat timeout: nothing watches for one. A sync activity runs in a thread
            # pool; its own heartbeats (if any) are its business.
            return await self.next.execute_activity(input)
        beat = _Beat(tuple(activity.info().heartbeat_details))
        token = _CURRENT.set(beat)
        pulse = asyncio.create_task(_pulse(beat, timeout.total_seconds() / 3))
        work = asyncio.ensure_future(self.next.execute_activity(input))
        try:
            while True:
                try:
                    return await asyncio.shield(work)
                except asyncio.CancelledError:
                    if beat.own:
                        work.cancel()
                        raise
                    # Run to completion (see the module docstring), then report as usual.
                    current = asyncio.current_task()
                    if current is not None:
                        current.uncancel()
        finally:
            pulse.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pulse
            _CURRENT.reset(token)


class _RecordingOutbound(ActivityOutboundInterceptor):
    def heartbeat(self, *details: Any) -> None:
        beat = _CURRENT.get()
        if beat is not None:
            beat.details = details
            beat.own = beat.own or not beat.pulsing
        super().heartbeat(*details)


async def _pulse(beat: _Beat, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        beat.pulsing = True
        try:
            activity.heartbeat(*beat.details)
        finally:
            beat.pulsing = False
