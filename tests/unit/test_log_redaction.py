"""Link and unsubscribe tokens never reach a log line, a traceback or an exception message."""

from __future__ import annotations

import io
import logging

import pytest

from dealflow.logging import (
    REDACTED,
    RedactTokens,
    configure_logging,
    install_token_redaction,
    redact,
)

TOKEN = "tok_3f2a9c1e7b6d.1767225600.Yx3q8ZkP1vN7mR2tW9bL4cF6hJ0sD5gA-eQuK8iO1M"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"/v1/approvals/links/{TOKEN}", f"/v1/approvals/links/{REDACTED}"),
        (f"/v1/unsubscribe/{TOKEN}?x=1", f"/v1/unsubscribe/{REDACTED}?x=1"),
        (
            f'127.0.0.1:5 - "GET https://api.example/v1/approvals/links/{TOKEN} HTTP/1.1" 200',
            f'127.0.0.1:5 - "GET https://api.example/v1/approvals/links/{REDACTED} HTTP/1.1" 200',
        ),
        ("/v1/deals/deal_123", "/v1/deals/deal_123"),
    ],
)
def test_redact(text, expected):
    assert redact(text) == expected


def _capture(name: str) -> tuple[logging.Logger, io.StringIO, logging.Handler]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(RedactTokens())
    logger = logging.getLogger(name)
    logger.addHandler(handler)
    logger.propagate = False
    return logger, stream, handler


def test_our_own_lines_and_tracebacks_are_redacted():
    logger, stream, handler = _capture("tests.redaction")
    try:
        logger.warning("unhandled error on %s %s", "GET", f"/v1/approvals/links/{TOKEN}")
        try:
            raise ValueError(f"cannot fetch /v1/unsubscribe/{TOKEN}")
        except ValueError:
            logger.exception("failed for %(path)s", {"path": f"/v1/unsubscribe/{TOKEN}"})
    finally:
        logger.removeHandler(handler)
    out = stream.getvalue()
    assert TOKEN not in out
    assert f"GET /v1/approvals/links/{REDACTED}" in out
    assert f"ValueError: cannot fetch /v1/unsubscribe/{REDACTED}" in out
    assert f"failed for /v1/unsubscribe/{REDACTED}" in out


def test_installed_on_uvicorn_access_once_and_keeps_its_args_shape():
    install_token_redaction()
    install_token_redaction()
    access = logging.getLogger("uvicorn.access")
    assert sum(isinstance(f, RedactTokens) for f in access.filters) == 1
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5", "GET", f"/v1/unsubscribe/{TOKEN}", "1.1", 200),
        None,
    )
    assert access.filter(record)
    # uvicorn's AccessFormatter unpacks these five by position; the status stays an int.
    assert record.args == ("127.0.0.1:5", "GET", f"/v1/unsubscribe/{REDACTED}", "1.1", 200)


def test_configure_logging_redacts_our_own_lines_on_the_root_handlers(caplog):
    caplog.set_level(logging.INFO)
    configure_logging()  # what the API's lifespan and the worker call
    # The API's own "unhandled error" line (api/errors.py) names the request path.
    logging.getLogger("dealflow.api").error(
        "unhandled error on %s %s", "POST", f"/v1/unsubscribe/{TOKEN}"
    )
    assert TOKEN not in caplog.text
    assert f"unhandled error on POST /v1/unsubscribe/{REDACTED}" in caplog.text
