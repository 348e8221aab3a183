"""Crash injection for the crash tests (sandbox profile only; Settings refuses it in production).

``DEALFLOW_CRASH_AT=render_documents.after_store`` makes the worker process exit abruptly the first
time it reaches that checkpoint: after the side effect, before Temporal hears the activity
finished. That is the worst moment for a crash, the one where a careless retry duplicates work.
A marker file under the state dir makes it fire once, so the restarted worker carries on.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from temporalio.exceptions import ApplicationError

log = logging.getLogger(__name__)


class CrashPoints:
    """The worker's test hooks, handed to every activity class: crash checkpoints, and
    ``failures`` (the poison tests' injected failures, see ``FailurePoints``)."""

    def __init__(
        self, names: str, state_dir: Path, *, failures: FailurePoints | None = None
    ) -> None:
        self._names = {n.strip() for n in names.split(",") if n.strip()}
        self._dir = state_dir / "crash-markers"
        self.failures = failures or FailurePoints(state_dir, enabled=False)

    def checkpoint(self, name: str) -> None:
        if name not in self._names:
            return
        self._dir.mkdir(parents=True, exist_ok=True)
        marker = self._dir / name
        if marker.exists():
            return
        marker.touch()
        log.warning("crash injection: exiting at %s", name)
        logging.shutdown()
        os._exit(86)


INJECTED_FAILURE = "InjectedFailure"


class InjectedTransientError(RuntimeError):
    """A failure a retry might fix (a plain exception): retried until the activity's budget ends."""


class FailurePoints:
    """Failure injection for the poison tests (sandbox profile only).

    A test arms a point for one activity and one business key (a deal id, a campaign id, a
    contact's workflow id): the activity, when it reaches ``check(activity, key)``, fails —
    ``permanent`` raises a non-retryable ``ApplicationError(type="InjectedFailure")``, ``transient``
    a plain exception that the retry policy retries until its budget is spent. The point stays
    armed until the test clears it (then an ops retry succeeds). Points are files under the state
    dir, so an in-process worker and a worker subprocess see the same ones; keyed by business key,
    so tests running beside each other never trip over each other's points.
    """

    def __init__(self, state_dir: Path, *, enabled: bool) -> None:
        self._dir = state_dir / "fail-points"
        self._enabled = enabled

    def _path(self, activity: str, key: str) -> Path:
        digest = hashlib.sha256(f"{activity}\0{key}".encode()).hexdigest()[:32]
        return self._dir / digest

    def arm(self, activity: str, key: str, *, mode: str = "permanent") -> None:
        if mode not in ("permanent", "transient"):
            raise ValueError(f"unknown failure mode {mode!r}")
        self._dir.mkdir(parents=True, exist_ok=True)
        self._path(activity, key).write_text(mode)

    def clear(self, activity: str, key: str) -> None:
        self._path(activity, key).unlink(missing_ok=True)

    def check(self, activity: str, key: str) -> None:
        """Raise the armed failure for (activity, key), if any. Costs one stat() when enabled."""
        if not self._enabled:
            return
        try:
            mode = self._path(activity, key).read_text()
        except FileNotFoundError:
            return
        message = f"injected {mode} failure in {activity} for {key}"
        if mode == "transient":
            raise InjectedTransientError(message)
        raise ApplicationError(message, type=INJECTED_FAILURE, non_retryable=True)
