"""Items still open after the last renewal alert are still reminded and escalated.

Handoffs recorded before ``handoff-items-after-last-alert`` ended at the last renewal alert,
so an item due later never got its reminder or escalation. Here the alerts come within 1.5 s and
the items fall due after 2, 5 and 10 s: every item is reminded and escalated after the last
alert, then the workflow ends.
"""

from __future__ import annotations

from temporalio.client import WorkflowExecutionStatus

from messages.handoff import HandoffStatus, HandoffTiming
from tests.utils.deals import OPS, record_history
from tests.utils.handoff import handoff_where, primary_email, start_handoff_with
from tests.utils.parking import SHORT_BUDGET

TIMING = HandoffTiming(
    activity_timeout_seconds=5,
    business_day_seconds=1,
    reminder_before_seconds=0.5,
    renewal_spacing_seconds=0.5,
    retry=SHORT_BUDGET,
)


async def test_items_open_after_the_last_renewal_alert_get_reminder_and_escalation(
    http, auth, settings, temporal_client
):
    deal, handle = await start_handoff_with(http, auth, temporal_client, settings, TIMING)

    def all_escalated(b: dict) -> bool:
        return bool(b["items"]) and all(i["escalated_to"] for i in b["items"])

    body = await handoff_where(http, deal["id"], auth(OPS), all_escalated, "escalations", 60)
    last_alert = max(a["sent_at"] for a in body["renewal"]["alerts"])
    assert all(a["sent_at"] for a in body["renewal"]["alerts"])
    late = [i for i in body["items"] if i["remind_at"] > last_alert]
    assert late, "the plan has items due after the last alert"
    for item in late:
        assert item["reminded_at"] > last_alert and item["status"] == "overdue", item
    # The customer's item (admin_setup, due after 5 s): one reminder mail, after the alerts.
    mail = await http.get("/_sandbox/mail/messages", params={"to": primary_email(deal["id"])})
    reminders = [m for m in mail.json()["messages"] if m["subject"].startswith("Reminder:")]
    assert len(reminders) == 1
    # Nothing left to send: the workflow ends (still onboarding: the items are open).
    final: HandoffStatus = await handle.result()
    assert final.status == "onboarding"
    assert (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED
    await record_history(handle, "handoff_items_after_last_alert")
