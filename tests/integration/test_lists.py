"""GET /v1/deals and GET /v1/campaigns: keyset pages, filters, visibility, bad input.

Rows for the paging tests are inserted through the db layer (hundreds of deals through the API
would only test the create route again); every read goes through the API.
"""

from __future__ import annotations

import base64
import datetime as dt
import json

from api.schemas import DealCreate
from db import deals as deals_db
from tests.utils.campaigns import campaign_payload, contact, unique
from tests.utils.deals import FINANCE, OPS, OTHER_REP, REP, deal_payload


async def _insert_deals(sessions, owner: str, customer: str, n: int, **overrides) -> list[str]:
    """``n`` deals in one transaction: they share created_at (now()), so only the id orders
    them, which is what the cursor's tie-break must get right."""
    data = DealCreate(**deal_payload(account={"name": customer}, **overrides)).model_dump()
    async with sessions.begin() as s:
        return [(await deals_db.create_deal(s, owner_email=owner, data=data)).id for _ in range(n)]


async def _pages(http, path, headers, params) -> list[list[dict]]:
    pages, cursor = [], None
    while True:
        q = dict(params, **({"cursor": cursor} if cursor else {}))
        resp = await http.get(path, params=q, headers=headers)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        pages.append(body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages


def _assert_newest_first(items: list[dict]) -> None:
    keys = [(dt.datetime.fromisoformat(i["created_at"]), i["id"]) for i in items]
    assert keys == sorted(keys, reverse=True)


async def test_deal_pages_return_every_row_once_while_rows_are_added(http, auth, sessions):
    customer = f"Pager {unique()}"
    existing: list[str] = []
    for _ in range(3):  # three transactions: three created_at values, 100 ties in each
        existing += await _insert_deals(sessions, REP, customer, 100)
    seen: list[dict] = []
    added: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"customer": customer, "limit": 37, **({"cursor": cursor} if cursor else {})}
        resp = await http.get("/v1/deals", params=params, headers=auth(REP))
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert len(body["items"]) <= 37
        seen += body["items"]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
        # New deals arrive between two pages (newer than everything being paged).
        added += await _insert_deals(sessions, REP, customer, 5)
    ids = [i["id"] for i in seen]
    assert len(ids) == len(set(ids)), "a row came twice"
    assert set(ids) == set(existing), "a row was lost, or a newer row slipped into a later page"
    assert pages == 9  # 300 rows / 37 per page
    _assert_newest_first(seen)
    # A fresh walk sees everything, the added rows first.
    again = [
        i["id"]
        for p in await _pages(http, "/v1/deals", auth(REP), {"customer": customer})
        for i in p
    ]
    assert set(again) == set(existing) | set(added) and set(again[: len(added)]) == set(added)
    item = seen[0]
    assert set(item) >= {
        "id",
        "name",
        "stage",
        "owner_email",
        "customer",
        "total",
        "currency",
        "updated_at",
    }
    assert item["customer"] == customer and item["owner_email"] == REP
    assert item["stage"] == "draft" and item["total"] is None  # never priced


async def test_deal_filters_default_limit_and_bad_input(http, auth, sessions):
    customer = f"Filter {unique()}"
    drafts = await _insert_deals(sessions, REP, customer, 52)
    staged = await _insert_deals(sessions, REP, customer, 3)
    async with sessions.begin() as s:
        for deal_id in staged:
            await deals_db.set_stage(s, deal_id=deal_id, stage="needs_attention")

    first = (await http.get("/v1/deals", params={"customer": customer}, headers=auth(REP))).json()
    assert len(first["items"]) == 50 and first["next_cursor"]  # the default limit
    by_stage = await _pages(
        http, "/v1/deals", auth(REP), {"customer": customer, "stage": "needs_attention"}
    )
    assert sorted(i["id"] for p in by_stage for i in p) == sorted(staged)
    any_case = await _pages(http, "/v1/deals", auth(REP), {"customer": customer.upper()})
    assert {i["id"] for p in any_case for i in p} == set(drafts) | set(staged)

    def error(resp, field):
        assert resp.status_code == 422, resp.text
        body = resp.json()["error"]
        assert body["code"] == "invalid_request" and body["message"]
        assert any(d["field"].endswith(field) for d in body["details"]), body
        return body

    get = http.get
    error(await get("/v1/deals", params={"stage": "won"}, headers=auth(REP)), "stage")
    error(await get("/v1/deals", params={"limit": 0}, headers=auth(REP)), "limit")
    error(await get("/v1/deals", params={"limit": 201}, headers=auth(REP)), "limit")
    error(await get("/v1/deals", params={"stages": "draft"}, headers=auth(REP)), "stages")
    error(await get("/v1/deals", params={"cursor": "not-a-cursor"}, headers=auth(REP)), "cursor")
    forged = base64.urlsafe_b64encode(json.dumps({"l": "deals", "k": [1]}).encode()).decode()
    error(await get("/v1/deals", params={"cursor": forged}, headers=auth(REP)), "cursor")
    # A cursor belongs to its list and its filters.
    other_filter = await get(
        "/v1/deals",
        params={"customer": customer, "stage": "draft", "cursor": first["next_cursor"]},
        headers=auth(REP),
    )
    error(other_filter, "cursor")
    wrong_list = await get(
        "/v1/campaigns", params={"cursor": first["next_cursor"]}, headers=auth(REP)
    )
    error(wrong_list, "cursor")
    assert (await get("/v1/deals")).status_code == 401


async def test_a_rep_lists_only_their_own_deals_and_ops_list_everyones(http, auth, sessions):
    customer = f"Shared {unique()}"
    mayas = await _insert_deals(sessions, REP, customer, 4)
    diegos = await _insert_deals(sessions, OTHER_REP, customer, 3)

    async def ids(who, **params):
        pages = await _pages(http, "/v1/deals", auth(who), {"customer": customer, **params})
        return {i["id"] for p in pages for i in p}

    assert await ids(REP) == set(mayas)
    assert await ids(OTHER_REP) == set(diegos)
    assert await ids(OPS) == set(mayas) | set(diegos)
    assert await ids(OPS, owner_email=OTHER_REP) == set(diegos)
    assert await ids(FINANCE) == set()  # an approver owns no deals
    peek = await http.get("/v1/deals", params={"owner_email": OTHER_REP}, headers=auth(REP))
    assert peek.status_code == 403 and peek.json()["error"]["code"] == "forbidden"
    assert await ids(REP, owner_email=REP) == set(mayas)


async def test_campaigns_list_pages_filters_and_visibility(http, auth):
    tag = unique()
    mine = []
    for i in range(5):
        payload = campaign_payload([contact(f"c{i}.{tag}@acme.example")])
        resp = await http.post("/v1/campaigns", json=payload, headers=auth(REP))
        assert resp.status_code == 201, resp.text
        mine.append(resp.json()["id"])
    theirs = await http.post(
        "/v1/campaigns",
        json=campaign_payload(
            [contact(f"d.{tag}@acme.example")],
            sender_email=f"diego.alvarez+{tag}@dealflow.example",
        ),
        headers=auth(OTHER_REP),
    )
    assert theirs.status_code == 201, theirs.text

    pages = await _pages(http, "/v1/campaigns", auth(REP), {"status": "draft", "limit": 2})
    listed = [i for p in pages for i in p]
    ids = [i["id"] for i in listed]
    assert len(ids) == len(set(ids)) and set(mine) <= set(ids)
    assert theirs.json()["id"] not in ids and {i["owner_email"] for i in listed} == {REP}
    assert all(len(p) <= 2 for p in pages)
    _assert_newest_first(listed)
    assert ids.index(mine[-1]) < ids.index(mine[0])  # newest first
    ops = [
        i["id"] for p in await _pages(http, "/v1/campaigns", auth(OPS), {"limit": 200}) for i in p
    ]
    assert set(mine) | {theirs.json()["id"]} <= set(ops)
    active = await _pages(http, "/v1/campaigns", auth(REP), {"status": "active"})
    assert not set(mine) & {i["id"] for p in active for i in p}
    bad = await http.get("/v1/campaigns", params={"status": "running"}, headers=auth(REP))
    assert bad.status_code == 422 and bad.json()["error"]["details"][0]["field"] == "status"
