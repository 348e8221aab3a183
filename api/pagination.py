"""Keyset (cursor) pagination for the lists: opaque cursors, checked filters, one error shape.

A page is "the next ``limit`` rows after this position in a fixed total order" (for deals:
``created_at`` then ``id``, descending), never an OFFSET. So a page costs one index range scan
however deep it is, and rows added while a client pages land before its position (they are
newer) and never push a row it has not seen onto a page it already read: no row twice, none
lost.

The cursor is base64url JSON ``{"l": list, "f": filters hash, "k": [sort key values]}``. It is
not signed on purpose: it only says where to resume, and every page is still filtered by the
caller's visibility, so a hand-made cursor can skip rows but never reveal one. It is bound to
its list and its filters (a cursor of ``/v1/deals?stage=draft`` is refused on
``/v1/deals?stage=closed_won``), and anything that does not decode is a 422 with the error body.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Annotated, Any

from fastapi import Query, Request

from api.errors import ApiError
from dealflow.limits import LIST_DEFAULT_LIMIT, LIST_MAX_LIMIT, MAX_CURSOR_LENGTH

LimitQuery = Annotated[
    int,
    Query(
        ge=1,
        le=LIST_MAX_LIMIT,
        description=f"Rows per page (default {LIST_DEFAULT_LIMIT}, at most {LIST_MAX_LIMIT}).",
    ),
]
CursorQuery = Annotated[
    str | None,
    Query(
        max_length=MAX_CURSOR_LENGTH,
        description="The `next_cursor` of the previous page; omit for the first page.",
    ),
]


def bad_filter(field: str, message: str) -> ApiError:
    return ApiError(
        422,
        "invalid_request",
        "The request is not valid; see details.",
        [{"field": field, "message": message}],
    )


def check_query_params(request: Request, allowed: Iterable[str]) -> None:
    """Refuse unknown query parameters: a misspelt filter (``stages=``) must not list everything."""
    allowed = set(allowed)
    unknown = sorted(set(request.query_params) - allowed)
    if unknown:
        raise ApiError(
            422,
            "invalid_request",
            f"Unknown query parameter(s): {', '.join(unknown)}.",
            [
                {"field": name, "message": f"not one of {', '.join(sorted(allowed))}"}
                for name in unknown
            ],
        )


def check_choice(field: str, value: str | None, choices: Iterable[str]) -> None:
    if value is not None and value not in set(choices):
        raise bad_filter(field, f"must be one of {', '.join(sorted(choices))}")


def _filters_hash(filters: Mapping[str, Any]) -> str:
    canon = json.dumps({k: v for k, v in filters.items() if v is not None}, sort_keys=True)
    return hashlib.sha256(canon.encode()).hexdigest()[:16]


def _encode_value(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return {"t": value.astimezone(dt.UTC).isoformat()}
    return value


def _decode_value(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"t"} and isinstance(value["t"], str):
        parsed = dt.datetime.fromisoformat(value["t"])
        if parsed.tzinfo is None:
            raise ValueError("naive time")
        return parsed
    if value is None or isinstance(value, str | int):
        return value
    raise ValueError("unexpected value")


def encode_cursor(list_name: str, filters: Mapping[str, Any], key: Iterable[Any]) -> str:
    payload = {"l": list_name, "f": _filters_hash(filters), "k": [_encode_value(v) for v in key]}
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(
    cursor: str | None, list_name: str, filters: Mapping[str, Any], *, arity: int
) -> list[Any] | None:
    """The sort key a cursor resumes after (None for the first page); 422 when it is not ours."""
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        payload = json.loads(raw)
        if not isinstance(payload, dict) or payload.get("l") != list_name:
            raise ValueError("another list's cursor")
        key = payload.get("k")
        if not isinstance(key, list) or len(key) != arity:
            raise ValueError("wrong shape")
        values = [_decode_value(v) for v in key]
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise bad_filter("cursor", "not a cursor of this list; start again without one") from None
    if payload.get("f") != _filters_hash(filters):
        raise bad_filter("cursor", "this cursor was made for other filters; keep them unchanged")
    return values


def page(
    rows: list[Any], limit: int, list_name: str, filters: Mapping[str, Any], key_of: Any
) -> tuple[list[Any], str | None]:
    """Split a ``limit + 1`` fetch into the page and the next cursor (None on the last page)."""
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, encode_cursor(list_name, filters, key_of(rows[-1]))
