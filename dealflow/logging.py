"""Structured (key=value) logs on stderr. Secrets never go in: settings hold them as SecretStr."""

from __future__ import annotations

import logging
import os


def configure_logging(level: str | None = None) -> None:
    logging.basicConfig(
        level=(level or os.environ.get("DEALFLOW_LOG_LEVEL", "INFO")).upper(),
        format="%(asctime)s level=%(levelname)s logger=%(name)s %(message)s",
    )
    # Temporal's own activity/workflow loggers add workflow_id and run_id to each record.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # WeasyPrint's font subsetting logs every table it prunes at INFO.
    logging.getLogger("fontTools").setLevel(logging.WARNING)
