"""Wait on a condition: poll it with a short interval until a deadline (never a guessed sleep)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

# Between two looks at the condition; the deadline, not this, bounds the wait.
POLL_INTERVAL = 0.1


async def eventually(
    probe: Callable[[], Awaitable[Any]], *, timeout: float = 30, what: str = "condition"
) -> Any:
    """Poll ``probe`` until it returns something truthy; fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(POLL_INTERVAL)


async def hold_reached(holds: Any, activity: str, key: str, *, timeout: float = 60) -> None:
    """Wait until an activity held at its hold point (``dealflow.holds.HoldPoints``) got there."""

    async def probe() -> bool:
        return holds.reached(activity, key)

    await eventually(probe, timeout=timeout, what=f"{activity} held for {key}")
