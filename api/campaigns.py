"""The API's side of the campaign and sequence workflows: start them, read them, message them."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client, WorkflowHandle, WorkflowQueryFailedError
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.service import RPCError, RPCStatusCode

from api.errors import ApiError
from api.workflow_start import start_or_find
from db import campaigns as campaigns_db
from db.campaign_models import Campaign, CampaignContact
from dealflow.ids import (
    SA_CAMPAIGN_ID,
    SA_CAMPAIGN_STATUS,
    campaign_workflow_id,
    sequence_workflow_id,
)
from dealflow.settings import Settings
from messages.campaign import (
    BounceRecorded,
    CampaignInput,
    CampaignOptions,
    CampaignState,
    CampaignStatus,
    ContactHold,
    RetryRequest,
    SequenceStatus,
    SequenceTiming,
    TaskDone,
)
from workflows.campaign import CampaignWorkflow
from workflows.sequence import SequenceWorkflow

log = logging.getLogger("dealflow.api")

# A query needs a worker to answer; when none does in this time, reads fall back to the DB.
QUERY_TIMEOUT = timedelta(seconds=5)
# The campaign's live view is extra detail on a read the tables already answer: don't wait long.
CAMPAIGN_QUERY_TIMEOUT = timedelta(seconds=2)


def campaign_options(settings: Settings, campaign: Campaign) -> CampaignOptions:
    """The workflow's timing, from Settings and (sandbox only) the campaign's test mode."""
    test = (campaign.options or {}).get("test_mode")
    timing = SequenceTiming(
        activity_timeout_seconds=settings.activity_timeout_seconds,
        test_mode=test is not None,
        wait_day_seconds=float(test["wait_day_seconds"]) if test else 0.0,
        reply_window_seconds=(
            float(test["reply_window_seconds"])
            if test
            else settings.campaign_reply_window_days * 86400.0
        ),
        auto_reply_default_pause_days=settings.campaign_auto_reply_default_pause_days,
        auto_reply_max_pause_days=settings.campaign_auto_reply_max_pause_days,
        # Test mode: retries a tenth of a second apart (same attempt budget), so a failure
        # that outlasts the budget parks within seconds.
        retry_initial_seconds=0.1 if test else None,
        retry_max_interval_seconds=0.5 if test else None,
    )
    return CampaignOptions(
        task_queue=settings.task_queue,
        activity_timeout_seconds=settings.activity_timeout_seconds,
        batch_size=settings.campaign_enrol_batch_size,
        batches_per_run=settings.campaign_batches_per_run,
        progress_interval_seconds=1.0 if test else settings.campaign_progress_interval_seconds,
        hard_bounce_threshold=settings.campaign_hard_bounce_threshold,
        hard_bounce_min_sends=settings.campaign_hard_bounce_min_sends,
        timing=timing,
    )


async def start_campaign(
    client: Client, settings: Settings, campaign: Campaign
) -> tuple[WorkflowHandle, bool]:
    """Start the campaign workflow, or find the one already started. (handle, started_now)."""
    return await start_or_find(
        client,
        CampaignWorkflow.run,
        CampaignInput(
            campaign_id=campaign.id,
            owner_email=campaign.owner_email,
            state=CampaignState(status="active", version=campaign.state_version),
            options=campaign_options(settings, campaign),
        ),
        id=campaign_workflow_id(campaign.id),
        task_queue=settings.task_queue,
        search_attributes=TypedSearchAttributes([SearchAttributePair(SA_CAMPAIGN_ID, campaign.id)]),
    )


async def signal_or_log(client: Client, workflow_id: str, signal: Any, arg: Any) -> bool:
    """Signal a workflow; a closed or unknown one is logged (the database holds the truth)."""
    try:
        await client.get_workflow_handle(workflow_id).signal(signal, arg)
        return True
    except RPCError as err:
        log.info("could not signal %s: %s", workflow_id, err)
        return False


async def tell_bounce(client: Client, campaign_id: str, message_id: str) -> None:
    """A hard bounce of one of the campaign's sends is recorded: it re-checks its bounce rate."""
    await signal_or_log(
        client,
        campaign_workflow_id(campaign_id),
        CampaignWorkflow.bounce_recorded,
        BounceRecorded(message_id=message_id),
    )


async def tell_unsubscribed(
    client: Client, campaign_ids: list[str], email: str, *, how: str
) -> None:
    """The address unsubscribed (already recorded): each of these sequences of it stops."""
    for campaign_id in campaign_ids:
        await signal_or_log(
            client,
            sequence_workflow_id(campaign_id, email),
            SequenceWorkflow.contact_hold,
            ContactHold(kind="stop", reason=f"unsubscribed ({how})", outcome="unsubscribed"),
        )


async def tell_campaign(client: Client, campaign_id: str, state: CampaignState) -> None:
    """Signal the campaign workflow; the database already holds the truth, so failures log."""
    handle = client.get_workflow_handle(campaign_workflow_id(campaign_id))
    try:
        await handle.signal(CampaignWorkflow.state_changed, state)
    except RPCError as err:
        log.warning("campaign %s not told of %s: %s", campaign_id, state.status, err)


async def live_campaign(client: Client, campaign_id: str) -> CampaignStatus | None:
    """The campaign workflow's own view, when it answers in time; the tables answer the rest."""
    handle = client.get_workflow_handle_for(CampaignWorkflow.run, campaign_workflow_id(campaign_id))
    try:
        return await handle.query(CampaignWorkflow.status, rpc_timeout=CAMPAIGN_QUERY_TIMEOUT)
    except (RPCError, WorkflowQueryFailedError) as err:
        # No worker free to answer (a busy one times out as CANCELLED), or no workflow.
        log.info("campaign %s: no live status (%s)", campaign_id, err)
        return None


async def live_sequence(client: Client, campaign_id: str, email: str) -> SequenceStatus | None:
    """The sequence's status query; None when it cannot answer (the database view is used)."""
    handle = client.get_workflow_handle_for(
        SequenceWorkflow.run, sequence_workflow_id(campaign_id, email)
    )
    try:
        return await handle.query(SequenceWorkflow.status, rpc_timeout=QUERY_TIMEOUT)
    except (RPCError, WorkflowQueryFailedError) as err:
        if not (isinstance(err, RPCError) and err.status == RPCStatusCode.NOT_FOUND):
            log.info("sequence %s/%s: no live status (%s)", campaign_id, email, err)
        return None


async def live_contact(client: Client, contact: CampaignContact) -> SequenceStatus | None:
    """The contact's sequence's own view, if it has one (it was enrolled) and it answers."""
    if contact.status in ("pending", "excluded"):
        return None
    return await live_sequence(client, contact.campaign_id, contact.email)


async def parked_sequences(client: Client, session: AsyncSession, campaign_id: str) -> list[str]:
    """Contacts whose sequence is parked: as recorded on their rows, and as the search
    attribute says (a park whose database record failed is still found)."""
    emails = dict.fromkeys(await campaigns_db.parked_contacts(session, campaign_id=campaign_id))
    emails.update(dict.fromkeys(await parked_sequence_contacts(client, campaign_id)))
    return list(emails)


async def parked_sequence_contacts(client: Client, campaign_id: str) -> list[str]:
    """Contacts whose running sequence's search attribute says needs_attention (so a park whose
    database record failed is still found); empty, logged, when the list cannot be read."""
    prefix = sequence_workflow_id(campaign_id, "")
    query = (
        f'CampaignId = "{campaign_id}" AND {SA_CAMPAIGN_STATUS.name} = "needs_attention" '
        'AND ExecutionStatus = "Running"'
    )
    emails: list[str] = []
    try:
        async for execution in client.list_workflows(query):
            if execution.id.startswith(prefix):
                emails.append(execution.id.removeprefix(prefix))
    except RPCError as err:
        log.warning("campaign %s: parked sequences not listed (%s)", campaign_id, err)
    return emails


async def signal_retry(client: Client, workflow_id: str, by: str) -> bool:
    """Send ``retry`` to a parked campaign or sequence; False when there is no such workflow."""
    try:
        await client.get_workflow_handle(workflow_id).signal("retry", RetryRequest(by=by))
        return True
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return False
        raise ApiError(
            503, "temporal_unavailable", f"The retry could not be sent ({err.message})."
        ) from None


async def retry_sequence(client: Client, campaign_id: str, email: str, by: str) -> bool:
    """``retry`` to one contact's sequence; False when there is no such workflow."""
    return await signal_retry(client, sequence_workflow_id(campaign_id, email), by)


async def retry_parked(
    client: Client, campaign_id: str, *, campaign: bool, contacts: list[str], by: str
) -> tuple[bool, list[str]]:
    """``retry`` to the campaign (when ``campaign``, it is parked) and to each parked contact's
    sequence: (the campaign was told, the contacts whose sequence was)."""
    told_campaign = campaign and await signal_retry(client, campaign_workflow_id(campaign_id), by)
    told = [email for email in contacts if await retry_sequence(client, campaign_id, email, by)]
    log.info(
        "campaign %s: retry by %s (campaign %s, %d sequences)",
        campaign_id,
        by,
        told_campaign,
        len(told),
    )
    return told_campaign, told


async def tell_task_done(client: Client, campaign_id: str, email: str, done: TaskDone) -> bool:
    """Tell the contact's sequence a rep task is done; False when the sequence has ended."""
    handle = client.get_workflow_handle(sequence_workflow_id(campaign_id, email))
    try:
        await handle.signal(SequenceWorkflow.task_done, done)
        return True
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
