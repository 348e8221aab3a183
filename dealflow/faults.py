"""Crash injection for the crash tests (sandbox profile only; Settings refuses it in production).

``DEALFLOW_CRASH_AT=render_documents.after_store`` makes the worker process exit abruptly the first
time it reaches that checkpoint: after the side effect, before Temporal hears the activity
finished. That is the worst moment for a crash, the one where a careless retry duplicates work.
A marker file under the state dir makes it fire once, so the restarted worker carries on.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


class CrashPoints:
    def __init__(self, names: str, state_dir: Path) -> None:
        self._names = {n.strip() for n in names.split(",") if n.strip()}
        self._dir = state_dir / "crash-markers"

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
