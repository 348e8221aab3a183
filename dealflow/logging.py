"""Structured (key=value) logs on stderr. Secrets never go in: settings hold them as SecretStr.

Bearer tokens that travel in URL paths (signed approval links, unsubscribe links) would reach the
logs through uvicorn's access log, our own "error on <path>" lines and exception tracebacks.
``RedactTokens`` rewrites them to ``[redacted]`` while keeping the path recognisable
(``GET /v1/approvals/links/[redacted]``). ``configure_logging`` installs it on uvicorn's loggers
and on every handler of the root logger; every way the API starts (``make run``, the Dockerfile
and compose command, the tests) goes through ``api.app.create_app``, whose lifespan calls it, and
the worker calls it at start.
"""

from __future__ import annotations

import logging
import os
import re

REDACTED = "[redacted]"

# The paths whose last segment is a bearer token (API.md): whoever has the URL may act with it.
# A token runs to the next "/", "?", "#", whitespace or quote; the prefix stays, so the route is
# still readable in the log.
_TOKEN_IN_PATH = re.compile(r"(/v1/approvals/links/|/v1/unsubscribe/)[^/?#\s\"'<>]+")

# Loggers whose records carry request paths and do not propagate to the root logger's
# handlers (uvicorn's defaults): a filter on the logger itself sees every record they emit.
_UVICORN_LOGGERS = ("uvicorn.access", "uvicorn.error", "uvicorn")


def redact(text: str) -> str:
    """``text`` with every path token replaced by ``[redacted]``."""
    return _TOKEN_IN_PATH.sub(rf"\g<1>{REDACTED}", text)


def _redact_arg(value: object) -> object:
    # Only strings are rewritten: uvicorn's access formatter unpacks the args tuple by
    # position and formats the status code with %d, so the shape must not change.
    return redact(value) if isinstance(value, str) else value


class RedactTokens(logging.Filter):
    """Rewrites path tokens in a record's message, arguments and exception text, in place.

    In place, so every handler after this one (files, stderr, a capture) sees the redacted
    record. Never drops a record.
    """

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_redact_arg(a) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: _redact_arg(v) for k, v in record.args.items()}
        if record.exc_info and not record.exc_text:
            # Formatters use exc_text when it is set, so the traceback (whose exception
            # message may quote a URL) is printed redacted.
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


_FILTER = RedactTokens()


def _add_once(target: logging.Logger | logging.Handler) -> None:
    if not any(isinstance(f, RedactTokens) for f in target.filters):
        target.addFilter(_FILTER)


def install_token_redaction() -> None:
    """Idempotent: put the token filter on uvicorn's loggers and on the root handlers."""
    for name in _UVICORN_LOGGERS:
        _add_once(logging.getLogger(name))
    for handler in logging.getLogger().handlers:
        _add_once(handler)


def configure_logging(level: str | None = None) -> None:
    logging.basicConfig(
        level=(level or os.environ.get("DEALFLOW_LOG_LEVEL", "INFO")).upper(),
        format="%(asctime)s level=%(levelname)s logger=%(name)s %(message)s",
    )
    # Temporal's own activity/workflow loggers add workflow_id and run_id to each record.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # WeasyPrint's font subsetting logs every table it prunes at INFO.
    logging.getLogger("fontTools").setLevel(logging.WARNING)
    install_token_redaction()
