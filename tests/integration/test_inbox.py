"""GET /v1/approvals?status=pending: the approver's inbox, read from the approval mirror, on real
approval chains (delegation by out-of-office, escalation by short SLAs)."""

from __future__ import annotations

import datetime as dt

from api.closure import start_closure
from db import deals as deals_db
from db.models import Person
from tests.utils.approvals import eventually
from tests.utils.campaigns import unique
from tests.utils.deals import CFO, FINANCE, LEGAL, OPS, REP, SALES_VP, create_deal, wait_for_stage

SENIOR_COUNSEL = "luis.romero@dealflow.example"  # Legal's backup
CEO = "elena.petrova@dealflow.example"
# 600 x 450 = 270,000: Finance Director and Legal (net 45) in stage 0, the CFO in stage 1.
BIG_DEAL = {
    "payment_terms_days": 45,
    "discount_pct": "0",
    "line_items": [
        {"sku": "PLAT-ENT", "description": "Platform", "quantity": "600", "unit_price": "450"}
    ],
}


def step(deal_id: str, stage: int, role: str) -> str:
    return f"{deal_id}.v1.s{stage}.{role}"


async def inbox(http, headers, limit: int = 200) -> list[dict]:
    """Every page of the caller's inbox."""
    items, cursor = [], None
    while True:
        params = {"status": "pending", "limit": limit, **({"cursor": cursor} if cursor else {})}
        resp = await http.get("/v1/approvals", params=params, headers=headers)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        items += body["items"]
        if not (cursor := body["next_cursor"]):
            return items


async def item_in(http, headers, step_id: str, **expect) -> dict:
    """Wait until the caller's inbox shows ``step_id`` with the ``expect``ed fields."""

    async def probe():
        found = [i for i in await inbox(http, headers) if i["step_id"] == step_id]
        return found[0] if found and all(found[0][k] == v for k, v in expect.items()) else None

    return await eventually(probe, what=f"{step_id} in the inbox with {expect}")


async def absent_from(http, headers, step_id: str) -> bool:
    async def probe():
        return all(i["step_id"] != step_id for i in await inbox(http, headers)) or None

    return await eventually(probe, what=f"{step_id} gone from the inbox")


async def test_each_approver_sees_the_steps_they_hold_and_a_delegate_sees_the_delegated_one(
    http, auth, sessions
):
    name = f"Inbox {unique()}"
    deal = await create_deal(http, auth(REP), name=name, **BIG_DEAL)
    resp = await http.post(f"/v1/deals/{deal['id']}/ready-to-close", headers=auth(REP))
    assert resp.status_code == 202, resp.text
    finance_step, legal_step = step(deal["id"], 0, "finance_director"), step(deal["id"], 0, "legal")
    try:
        finance = await item_in(http, auth(FINANCE), finance_step)
        live = (await http.get(f"/v1/deals/{deal['id']}", headers=auth(REP))).json()
        assert finance["deal_id"] == deal["id"] and finance["deal_name"] == name
        assert finance["customer"] == "Acme Robotics Inc." and finance["role"] == "finance_director"
        planned = {a["role"]: a for a in live["approvals"]}["finance_director"]
        assert finance["reason"] == planned["reason"] and finance["due_at"] == planned["due_at"]
        assert finance["status"] == "pending" and finance["due_at"] is not None
        assert finance["total"] == live["quote"]["total"] and finance["currency"] == "USD"
        assert finance["may_decide_as"] == "approver"
        assert finance["decision_url"].endswith(f"/v1/approvals/{finance_step}/decision")
        assert legal_step not in {i["step_id"] for i in await inbox(http, auth(FINANCE))}
        await item_in(http, auth(LEGAL), legal_step, may_decide_as="approver")
        for nobody in (REP, OPS, CFO):  # the owner, ops, a stage-1 approver not asked yet
            assert deal["id"] not in {i["deal_id"] for i in await inbox(http, auth(nobody))}
        # The list shows the deal priced and waiting (once its documents are stored: the
        # approvers are asked while they render).
        await wait_for_stage(http, deal["id"], auth(REP), "awaiting_approval")
        listed = (
            await http.get(
                "/v1/deals", params={"customer": "acme robotics inc."}, headers=auth(REP)
            )
        ).json()["items"]
        row = next(i for i in listed if i["id"] == deal["id"])
        assert row["stage"] == "awaiting_approval" and row["total"] == live["quote"]["total"]

        # Out of office: the delegate sees Legal's step too; Legal, still the holder, keeps it.
        until = (dt.datetime.now(dt.UTC) + dt.timedelta(days=7)).isoformat()
        ooo = await http.put(
            f"/v1/approvers/{LEGAL}/out-of-office",
            json={"until": until, "delegate_email": SENIOR_COUNSEL},
            headers=auth(LEGAL),
        )
        assert ooo.status_code == 200, ooo.text
        delegated = await item_in(http, auth(SENIOR_COUNSEL), legal_step, may_decide_as="delegate")
        assert delegated["holder_email"] == LEGAL and delegated["delegate_email"] == SENIOR_COUNSEL
        await item_in(http, auth(LEGAL), legal_step, may_decide_as="approver")
        decided = await http.post(
            f"/v1/approvals/{legal_step}/decision",
            json={"decision": "approve"},
            headers=auth(SENIOR_COUNSEL),
        )
        assert decided.status_code == 200, decided.text
        await absent_from(http, auth(SENIOR_COUNSEL), legal_step)
        await absent_from(http, auth(LEGAL), legal_step)
        await item_in(http, auth(FINANCE), finance_step)  # still waiting on Finance
    finally:
        async with sessions.begin() as s:  # the org directory is shared by the whole session
            person = await s.get(Person, LEGAL)
            person.ooo_until, person.ooo_delegate_email = None, None
        await http.post(f"/v1/deals/{deal['id']}/cancel", headers=auth(REP))
    await absent_from(http, auth(FINANCE), finance_step)  # withdrawn by the cancel


async def test_an_escalated_step_moves_to_the_escalation_targets_inbox(
    http, auth, temporal_client, settings, sessions
):
    # Sales VP (no backup) -> their manager, the CEO -> the CEO's backup, the CFO; two levels,
    # then the step waits with the CFO: the final state is stable, nothing to race.
    deal = await create_deal(
        http,
        auth(REP),
        name=f"Escalated {unique()}",
        discount_pct="15",
        line_items=[{"sku": "S", "description": "Seats", "quantity": "10", "unit_price": "100"}],
    )
    short = settings.model_copy(update={"approval_sla_override_seconds": 2})
    async with sessions() as s:
        await start_closure(temporal_client, short, await deals_db.get_deal(s, deal_id=deal["id"]))
    sid = step(deal["id"], 0, "sales_vp")
    held = await item_in(http, auth(CFO), sid, escalation_level=2)
    assert held["may_decide_as"] == "escalation_target" and held["holder_email"] == CFO
    assert held["approver_email"] == SALES_VP and held["escalated_to"] == CFO
    for earlier in (SALES_VP, CEO):
        assert sid not in {i["step_id"] for i in await inbox(http, auth(earlier))}
    resp = await http.post(
        f"/v1/approvals/{sid}/decision", json={"decision": "approve"}, headers=auth(CFO)
    )
    assert resp.status_code == 200, resp.text
    await absent_from(http, auth(CFO), sid)


async def test_inbox_pages_soonest_due_first_and_refuses_bad_input(http, auth):
    deals = [await create_deal(http, auth(REP), name=f"Due {unique()}") for _ in range(3)]
    for deal in deals:  # 49,400 each: the Finance Director only
        resp = await http.post(f"/v1/deals/{deal['id']}/ready-to-close", headers=auth(REP))
        assert resp.status_code == 202, resp.text
    steps = {step(d["id"], 0, "finance_director") for d in deals}

    async def all_there():
        return steps <= {i["step_id"] for i in await inbox(http, auth(FINANCE))} or None

    await eventually(all_there, what="three requests in the Finance Director's inbox")
    paged = await inbox(http, auth(FINANCE), limit=1)
    ids = [i["step_id"] for i in paged]
    assert len(ids) == len(set(ids)) and steps <= set(ids)
    far = dt.datetime.max.replace(tzinfo=dt.UTC)
    keys = [
        (dt.datetime.fromisoformat(i["due_at"]) if i["due_at"] else far, i["step_id"])
        for i in paged
    ]
    assert keys == sorted(keys)
    for params in ({"status": "decided"}, {"limit": 500}, {"cursor": "%%%"}, {"mine": "1"}):
        bad = await http.get("/v1/approvals", params=params, headers=auth(FINANCE))
        assert bad.status_code == 422, (params, bad.text)
        assert bad.json()["error"]["code"] == "invalid_request"
    for deal in deals:
        await http.post(f"/v1/deals/{deal['id']}/cancel", headers=auth(REP))
