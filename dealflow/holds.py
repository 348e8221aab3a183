"""Hold points: a test holds an activity at a named point until it releases it (sandbox only).

A race is pinned down, not hoped for: the test arms a hold for (activity, key); the activity,
reaching ``wait(activity, key)``, marks that it arrived and waits while the hold is armed. The
test sees the arrival, does what must happen meanwhile (send a signal), then releases. Points
are files under the state dir (like ``FailurePoints``), so a worker subprocess sees them too.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

# Between two looks at the hold file while held: a release is noticed within this.
POLL_SECONDS = 0.05


class HoldPoints:
    def __init__(self, state_dir: Path, *, enabled: bool) -> None:
        self._dir = state_dir / "hold-points"
        self._enabled = enabled

    def _path(self, activity: str, key: str, suffix: str) -> Path:
        digest = hashlib.sha256(f"{activity}\0{key}".encode()).hexdigest()[:32]
        return self._dir / f"{digest}.{suffix}"

    def arm(self, activity: str, key: str) -> None:
        self._dir.mkdir(parents=True, exist_ok=True)
        self._path(activity, key, "reached").unlink(missing_ok=True)
        self._path(activity, key, "held").touch()

    def reached(self, activity: str, key: str) -> bool:
        return self._path(activity, key, "reached").exists()

    def release(self, activity: str, key: str) -> None:
        self._path(activity, key, "held").unlink(missing_ok=True)

    async def wait(self, activity: str, key: str) -> None:
        """Hold here while (activity, key) is armed. Costs one stat() when enabled, not armed."""
        if not self._enabled or not self._path(activity, key, "held").exists():
            return
        self._path(activity, key, "reached").touch()
        # The release comes from another process (a file), so no asyncio.Event can carry it.
        while self._path(activity, key, "held").exists():  # noqa: ASYNC110
            await asyncio.sleep(POLL_SECONDS)
