"""The handoff never silently stops: an activity that gave up parks it, ops retry it.

A failure injected into one handoff activity (``FailurePoints``, keyed by the deal) parks the
handoff in ``needs_attention`` with the reason — in ``GET /v1/handoffs/{deal}``, the mirror row
and the ``HandoffStatus`` search attribute; after the cause is cleared, one retry through the API
runs the failed activity again and the handoff goes on, with no message sent twice.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from db.handoff_models import Handoff
from dealflow.ids import kickoff_message_id
from messages.handoff import HandoffTiming
from tests.utils.deals import OPS, REP, record_history
from tests.utils.handoff import handoff_where, primary_email, start_handoff_with
from tests.utils.parking import SHORT_BUDGET, failure_points
from tests.utils.polling import eventually

# The plan in seconds, the renewal alerts far enough apart that the park comes first.
TIMING = HandoffTiming(
    activity_timeout_seconds=5,
    business_day_seconds=1,
    reminder_before_seconds=0.5,
    renewal_spacing_seconds=2,
    retry=SHORT_BUDGET,
)


async def _mail(http, to: str) -> list[dict]:
    r = await http.get("/_sandbox/mail/messages", params={"to": to})
    assert r.status_code == 200, r.text
    return r.json()["messages"]


async def _wins(http, deal_id: str) -> list[dict]:
    wins = (await http.get("/_sandbox/slack/messages", params={"channel": "wins"})).json()
    return [m for m in wins["messages"] if deal_id in m["text"]]


@pytest.mark.parametrize(
    ("activity", "mode", "error_type"),
    [
        ("send_kickoff", "permanent", "InjectedFailure"),  # non-retryable: parks at once
        ("post_win", "transient", "InjectedTransientError"),  # parks once its budget is spent
    ],
)
async def test_a_failing_handoff_activity_parks_and_one_retry_goes_on_without_doubles(
    http, auth, settings, sessions, temporal_client, activity, mode, error_type
):
    points = failure_points(settings)
    deal = None
    try:
        deal, handle = await start_handoff_with(
            http,
            auth,
            temporal_client,
            settings,
            TIMING,
            before_start=lambda deal_id: points.arm(activity, deal_id, mode=mode),
        )
        parked = await handoff_where(
            http,
            deal["id"],
            auth(REP),
            lambda b: b["status"] == "needs_attention" and b["parked"] is not None,
            f"parked on {activity}",
        )
        assert parked["parked"]["step"] == activity
        assert parked["parked"]["error_type"] == error_type
        assert parked["status_reason"].startswith(f"{activity} failed ({error_type})")
        assert "step.failed" in [t["event"] for t in parked["timeline"]]

        # The mirror row and the search attribute (what the Temporal UI lists) say so too. The
        # row is written by an activity right after the status changes: wait for it.
        async def mirrored() -> Handoff | None:
            async with sessions() as s:
                row = await s.scalar(select(Handoff).where(Handoff.deal_id == deal["id"]))
            return row if row is not None and row.status == "needs_attention" else None

        row = await eventually(mirrored, what="the mirror row in needs_attention")
        assert row.status_reason == parked["status_reason"]
        query = f'DealId = "{deal["id"]}" AND HandoffStatus = "needs_attention"'

        async def listed() -> bool:
            return bool([w async for w in temporal_client.list_workflows(query)])

        await eventually(listed, what="HandoffStatus needs_attention in the visibility store")
        # Only ops and admin retry.
        refused = await http.post(f"/v1/handoffs/{deal['id']}/retry", headers=auth(REP))
        assert refused.status_code == 403
    finally:
        if deal is not None:
            points.clear(activity, deal["id"])
    answer = await http.post(f"/v1/handoffs/{deal['id']}/retry", headers=auth(OPS))
    assert answer.status_code == 202, answer.text
    assert answer.json()["step"] == activity
    body = await handoff_where(
        http, deal["id"], auth(REP), lambda b: b["status"] == "onboarding", "onboarding"
    )
    assert body["parked"] is None and body["status_reason"] is None
    assert "step.retried" in [t["event"] for t in body["timeline"]]
    again = await http.post(f"/v1/handoffs/{deal['id']}/retry", headers=auth(OPS))
    assert again.status_code == 409 and again.json()["error"]["code"] == "not_parked"
    # No side effect twice: one invite, one win post.
    invites = [
        m
        for m in await _mail(http, primary_email(deal["id"]))
        if m["message_id"] == kickoff_message_id(deal["id"])
    ]
    assert len(invites) == 1
    assert len(await _wins(http, deal["id"])) == 1

    async def resumed() -> Handoff | None:
        async with sessions() as s:
            row = await s.scalar(select(Handoff).where(Handoff.deal_id == deal["id"]))
        return row if row is not None and row.status == "onboarding" else None

    row = await eventually(resumed, what="the mirror row back in onboarding")
    assert row.status_reason is None
    if activity == "send_kickoff":
        await record_history(handle, "handoff_parked_then_retried")
    await _cancel(http, auth, deal["id"])


async def _cancel(http, auth, deal_id: str) -> None:
    """End the test's handoff (its CSM's capacity is free again for later tests)."""
    r = await http.post(
        f"/v1/handoffs/{deal_id}/cancel", json={"reason": "test done"}, headers=auth(OPS)
    )
    assert r.status_code == 200, r.text
