"""What cancels a handoff: ops or admin, with a reason (``POST /v1/handoffs/{deal}/cancel`` or
the workflow's ``cancel`` update from the Temporal UI). The workflow stops every timer, closes
the open items and renewal alerts (``cancelled`` in ``GET /v1/tasks``), records the reason in
the timeline and ends ``cancelled``; a second cancel is 409. A parked handoff cancels too.
"""

from __future__ import annotations

from sqlalchemy import select
from temporalio.client import WorkflowExecutionStatus

from db.handoff_models import Handoff
from messages.handoff import HandoffStatus, HandoffTiming
from tests.utils.deals import OPS, REP, record_history
from tests.utils.handoff import handoff_where, start_handoff_with
from tests.utils.parking import SHORT_BUDGET, failure_points
from tests.utils.polling import eventually

CSM = "ben.carter@dealflow.example"  # the mid-market CSM (config/org.toml)
ADMIN = "alex.morgan@dealflow.example"
# Items fall due in minutes (so they are still open, their timers pending, when cancelled).
TIMING = HandoffTiming(
    activity_timeout_seconds=5,
    business_day_seconds=60,
    reminder_before_seconds=30,
    renewal_spacing_seconds=1,
    retry=SHORT_BUDGET,
)


async def _tasks(http, who: dict, deal_id: str, **params) -> list[dict]:  # noqa: ANN001
    """Every task of the caller for this deal, all pages."""
    found, cursor = [], None
    while True:
        query = {**params, "limit": 100, **({"cursor": cursor} if cursor else {})}
        r = await http.get("/v1/tasks", params=query, headers=who)
        assert r.status_code == 200, r.text
        body = r.json()
        found += [t for t in body["items"] if t.get("deal_id") == deal_id]
        cursor = body["next_cursor"]
        if not cursor:
            return found


async def test_cancel_stops_the_timers_closes_items_and_alerts_and_ends_cancelled(
    http, auth, sessions, settings, temporal_client
):
    timing = TIMING.model_copy(update={"renewal_spacing_seconds": 3})
    deal, handle = await start_handoff_with(http, auth, temporal_client, settings, timing)
    deal_id = deal["id"]
    # Onboarding, the first renewal alert sent (a task for the CSM and the rep), items open.
    body = await handoff_where(
        http,
        deal_id,
        auth(REP),
        lambda b: b["status"] == "onboarding" and b["renewal"]["alerts"][0]["sent_at"],
        "onboarding with the first renewal alert",
    )
    assert all(i["status"] == "open" for i in body["items"])
    open_items = {t["id"] for t in await _tasks(http, auth(CSM), deal_id, kind="onboarding_item")}
    assert open_items and open_items <= {i["id"] for i in body["items"]}
    assert await _tasks(http, auth(CSM), deal_id, kind="renewal_alert")

    url = f"/v1/handoffs/{deal_id}/cancel"
    assert (await http.post(url, json={"reason": "x"}, headers=auth(REP))).status_code == 403
    missing = await http.post(url, json={}, headers=auth(OPS))
    assert missing.status_code == 422 and missing.json()["error"]["code"]
    reason = "Contract rescinded by the customer's board"
    r = await http.post(url, json={"reason": reason}, headers=auth(OPS))
    assert r.status_code == 200, r.text
    done = r.json()
    assert done["status"] == "cancelled" and done["status_reason"] == reason
    assert {i["status"] for i in done["items"]} == {"cancelled"}
    (entry,) = [t for t in done["timeline"] if t["event"] == "handoff.cancelled"]
    assert reason in entry["detail"] and OPS in entry["detail"]

    # The workflow ended: no timer is left; nothing was reminded or alerted after the cancel.
    final: HandoffStatus = await handle.result()
    assert final.status == "cancelled"
    assert [a.model_dump(mode="json") for a in final.renewal.alerts] == done["renewal"]["alerts"]
    assert all(i.reminded_at is None and i.escalated_to is None for i in final.items)
    assert (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED
    # Nothing open in anybody's task list; the items and alerts show cancelled.
    for who in (CSM, REP):
        assert await _tasks(http, auth(who), deal_id) == []
        closed = await _tasks(http, auth(who), deal_id, status="cancelled")
        assert "renewal_alert" in {t["kind"] for t in closed}, who
    cancelled = await _tasks(http, auth(CSM), deal_id, status="cancelled", kind="onboarding_item")
    assert open_items <= {t["id"] for t in cancelled}
    # The mirror row (the deal's summary and CSM capacity read it).
    async with sessions() as s:
        row = await s.scalar(select(Handoff).where(Handoff.deal_id == deal_id))
        assert row.status == "cancelled" and row.status_reason == reason
    read = (await http.get(f"/v1/deals/{deal_id}", headers=auth(REP))).json()
    assert read["handoff"]["status"] == "cancelled"
    # Reads still work; a second cancel is 409.
    got = await http.get(f"/v1/handoffs/{deal_id}", headers=auth(REP))
    assert got.status_code == 200 and got.json()["status"] == "cancelled"
    again = await http.post(url, json={"reason": "again"}, headers=auth(ADMIN))
    assert again.status_code == 409 and again.json()["error"]["code"] == "handoff_ended"
    await record_history(handle, "handoff_cancelled")


async def test_a_parked_handoff_can_be_cancelled(http, auth, settings, temporal_client):
    points = failure_points(settings)
    armed: list[str] = []
    try:
        deal, handle = await start_handoff_with(
            http,
            auth,
            temporal_client,
            settings,
            TIMING,
            before_start=lambda d: (armed.append(d), points.arm("send_kickoff", d)),
        )
        await handoff_where(
            http, deal["id"], auth(OPS), lambda b: b["parked"] is not None, "parked"
        )
        r = await http.post(
            f"/v1/handoffs/{deal['id']}/cancel",
            json={"reason": "Won in error"},
            headers=auth(ADMIN),
        )
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "cancelled" and r.json()["parked"] is None
        assert (await handle.result()).status == "cancelled"

        async def retry_refused() -> bool:
            retry = await http.post(f"/v1/handoffs/{deal['id']}/retry", headers=auth(OPS))
            return retry.status_code == 409

        assert await eventually(retry_refused, what="retry refused after the cancel")
    finally:
        for d in armed:
            points.clear("send_kickoff", d)
