"""Cursors: what they carry, and that anything else is a 422 (api/pagination.py)."""

from __future__ import annotations

import base64
import datetime as dt
import json

import pytest

from api.errors import ApiError
from api.pagination import decode_cursor, encode_cursor, page

AT = dt.datetime(2026, 12, 1, 9, 30, 15, 123456, tzinfo=dt.UTC)


def _raw(payload: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


def _refused(cursor: str, list_name: str = "deals", filters: dict | None = None) -> ApiError:
    with pytest.raises(ApiError) as err:
        decode_cursor(cursor, list_name, filters or {}, arity=2)
    assert err.value.status == 422 and err.value.details[0]["field"] == "cursor"
    return err.value


def test_a_cursor_round_trips_its_sort_key_to_the_microsecond():
    cursor = encode_cursor("deals", {"stage": "draft", "owner": None}, (AT, "deal_1"))
    assert decode_cursor(cursor, "deals", {"stage": "draft"}, arity=2) == [AT, "deal_1"]
    assert "=" not in cursor and "/" not in cursor and "+" not in cursor  # URL-safe as is
    assert decode_cursor(None, "deals", {}, arity=2) is None
    nulls = encode_cursor("approvals", {}, (None, "s1"))  # a step without a due time
    assert decode_cursor(nulls, "approvals", {}, arity=2) == [None, "s1"]


def test_a_cursor_of_another_list_or_other_filters_is_refused():
    cursor = encode_cursor("deals", {"stage": "draft"}, (AT, "deal_1"))
    _refused(cursor, "campaigns", {"stage": "draft"})
    assert (
        "other filters" in _refused(cursor, "deals", {"stage": "closed_won"}).details[0]["message"]
    )


@pytest.mark.parametrize(
    "cursor",
    [
        "not-a-cursor",
        "%%%",
        _raw([1, 2]),
        _raw({"l": "deals", "k": [1]}),  # wrong arity
        _raw({"l": "deals", "k": [{"t": "yesterday"}, "x"]}),
        _raw({"l": "deals", "k": [{"t": "2026-12-01T09:30:15"}, "x"]}),  # naive time
        _raw({"l": "deals", "k": [[1], "x"]}),
    ],
)
def test_anything_that_is_not_our_cursor_is_a_422(cursor):
    _refused(cursor)


def test_a_page_has_a_next_cursor_only_when_a_row_is_left():
    rows = [(AT - dt.timedelta(seconds=i), f"d{i}") for i in range(4)]
    items, nxt = page(rows, 3, "deals", {}, lambda r: r)
    assert items == rows[:3] and decode_cursor(nxt, "deals", {}, arity=2) == list(rows[2])
    assert page(rows[:3], 3, "deals", {}, lambda r: r) == (rows[:3], None)
