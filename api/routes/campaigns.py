"""``/v1/campaigns``: create, launch, pause, resume, cancel, read; contacts; tasks; suppressions.

Pause, resume and cancel write the campaign's status to PostgreSQL first and answer 202 only
once it has committed: the change takes the campaign's status lock exclusively, so it waits for
every in-flight send (each holds it shared until its SMTP hand-over is recorded), and every later
send sees the new status. The campaign workflow is then told, and fans the change out.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy.exc import IntegrityError
from temporalio.client import Client
from temporalio.service import RPCError

from api import idempotency
from api.access import campaign_or_404, contact_or_404, require_campaign_owner
from api.campaign_reads import campaign_read, contact_read
from api.campaign_schemas import (
    CampaignCreate,
    CampaignCreated,
    CampaignRead,
    ContactRead,
    RetryRead,
    SuppressionCreate,
    TaskDoneCreate,
)
from api.campaigns import (
    live_campaign,
    live_contact,
    parked_sequences,
    retry_parked,
    retry_sequence,
    start_campaign,
    tell_campaign,
    tell_task_done,
)
from api.deps import CurrentPerson, SessionDep, SettingsDep, TemporalDep, require_role
from api.errors import ApiError
from api.idempotency import IdempotencyKey
from db import campaigns as campaigns_db
from db.campaign_models import Campaign, CampaignContact
from db.models import Person
from dealflow.settings import Settings
from messages.campaign import CampaignState, CampaignStatus, SequenceStatus, TaskDone

log = logging.getLogger("dealflow.api")

router = APIRouter(prefix="/v1/campaigns", tags=["campaigns"])
suppressions_router = APIRouter(prefix="/v1/suppressions", tags=["campaigns"])
# --- routes -----------------------------------------------------------------------------------


@router.post("", status_code=201, response_model=CampaignCreated)
async def create_campaign(
    body: CampaignCreate,
    request: Request,
    person: CurrentPerson,
    session: SessionDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    """Create a draft campaign owned by the calling rep (contacts merged by address)."""
    require_role(person, "rep")
    if body.test_mode is not None and not settings.is_sandbox:
        raise ApiError(
            422, "invalid_request", "test_mode is only available in the sandbox profile."
        )
    create, replayed = await idempotency.open_create(
        session, person_email=person.email, key=idempotency_key, request=request, body=body
    )
    if replayed is not None:
        return replayed
    options: dict[str, Any] = {
        "pause_company_on_reply": (
            body.pause_company_on_reply
            if body.pause_company_on_reply is not None
            else settings.campaign_pause_company_on_reply
        ),
        "ab_min_sample": body.ab_min_sample or settings.campaign_ab_min_sample,
        "test_mode": body.test_mode.model_dump() if body.test_mode else None,
    }
    steps = []
    for step in body.steps:
        stored = step.model_dump(exclude={"send_window"}, exclude_none=True)
        stored["send_window"] = step.send_window.stored()
        steps.append(stored)
    try:
        campaign = await campaigns_db.create_campaign(
            session,
            owner_email=person.email,
            name=body.name,
            sender=body.sender.model_dump(),
            steps=steps,
            contacts=[c.model_dump() for c in body.contacts],
            fallbacks=body.fallbacks,
            options=options,
        )
        return await create.commit(201, CampaignCreated(id=campaign.id, status=campaign.status))
    except IntegrityError:
        if (replayed := await create.after_conflict()) is not None:
            return replayed
        raise


async def _watched_campaign(
    session: SessionDep, temporal: Client, person: Person, campaign_id: str
) -> tuple[Campaign, CampaignStatus | None]:
    """A campaign the caller owns (or ops, admin), and its workflow's live view once launched."""
    campaign = await campaign_or_404(session, campaign_id)
    require_campaign_owner(person, campaign, also=("ops", "admin"))
    return campaign, await live_campaign(temporal, campaign.id) if campaign.launched_at else None


@router.get("/{campaign_id}", response_model=CampaignRead)
async def get_campaign(
    campaign_id: str,
    person: CurrentPerson,
    session: SessionDep,
    settings: SettingsDep,
    temporal: TemporalDep,
) -> CampaignRead:
    """Counts, per-step and per-variant stats, the preflight report (owner, ops, admin)."""
    campaign, live = await _watched_campaign(session, temporal, person, campaign_id)
    return await campaign_read(session, settings, campaign, live)


@router.post("/{campaign_id}/launch", status_code=202, response_model=CampaignRead)
async def launch_campaign(
    campaign_id: str,
    person: CurrentPerson,
    session: SessionDep,
    settings: SettingsDep,
    temporal: TemporalDep,
) -> CampaignRead:
    """Run the preflight, then enrol every eligible contact (202; watch GET for progress).

    Launching again while it runs answers 202 with the same campaign workflow, never a second.
    """
    campaign = await campaign_or_404(session, campaign_id, lock="update")
    require_campaign_owner(person, campaign)
    if campaign.status == "draft":
        await campaigns_db.upsert_mailbox(
            session,
            email=campaign.sender_email,
            daily_limit=campaign.sender_daily_limit,
            timezone=campaign.sender_timezone,
        )
        campaign.status = "active"
        campaign.launched_at = campaigns_db.now_utc()
        campaign.preflight = {"state": "running"}
        await session.commit()
    elif campaign.status != "active" or campaign.launched_at is None:
        raise ApiError(
            409,
            "campaign_not_draft",
            f"This campaign cannot be launched (status {campaign.status}).",
            [{"status": campaign.status}],
        )
    else:
        await session.commit()
    # Committed first, so the workflow's first read sees the campaign active; the start is
    # idempotent (id from the campaign, reuse rejected), so launching again is safe.
    try:
        await start_campaign(temporal, settings, campaign)
    except RPCError as err:
        raise ApiError(
            503,
            "temporal_unavailable",
            f"The campaign is active but its workflow could not start ({err.message}); "
            "launch it again.",
        ) from None
    return await campaign_read(session, settings, campaign, None)


async def _change_status(
    *,
    campaign_id: str,
    person: Person,
    session: SessionDep,
    settings: Settings,
    temporal: Client,
    from_statuses: tuple[str, ...],
    to: str,
    verb: str,
    also: tuple[str, ...] = (),
) -> CampaignRead:
    campaign = await campaign_or_404(session, campaign_id)
    require_campaign_owner(person, campaign, also=also)
    changed = await campaigns_db.set_campaign_status(
        session,
        campaign_id=campaign.id,
        from_statuses=from_statuses,
        to=to,
        reason=f"{verb} by {person.email}",
        finished=to == "cancelled",
    )
    await session.commit()
    if changed is None:
        await session.refresh(campaign)
        raise ApiError(
            409,
            "campaign_state",
            f"A campaign in status {campaign.status!r} cannot be {verb}.",
            [{"status": campaign.status}],
        )
    # Committed: from here no send of this campaign can start (see the module docstring).
    await tell_campaign(
        temporal,
        campaign.id,
        CampaignState(status=changed[0], version=changed[1], reason=f"{verb} by {person.email}"),
    )
    await session.refresh(campaign)
    return await campaign_read(session, settings, campaign, None)


def _status_route(
    action: str, doc: str, *, from_statuses: tuple[str, ...], to: str, also: tuple[str, ...] = ()
) -> None:
    """``POST /{campaign_id}/<action>``: one status change (pause, resume, cancel), 202."""
    verb = {"pause": "paused", "resume": "resumed", "cancel": "cancelled"}[action]

    async def route(
        campaign_id: str,
        person: CurrentPerson,
        session: SessionDep,
        settings: SettingsDep,
        temporal: TemporalDep,
    ) -> CampaignRead:
        return await _change_status(
            campaign_id=campaign_id,
            person=person,
            session=session,
            settings=settings,
            temporal=temporal,
            from_statuses=from_statuses,
            to=to,
            verb=verb,
            also=also,
        )

    route.__name__ = route.__qualname__ = f"{action}_campaign"
    route.__doc__ = doc
    router.post(f"/{{campaign_id}}/{action}", status_code=202, response_model=CampaignRead)(route)


_status_route(
    "pause",
    "Pause every contact: once this answers 202, no email of the campaign is sent.",
    from_statuses=("active",),
    to="paused",
    also=("ops", "admin"),
)
_status_route(
    "resume",
    "Resume a paused campaign; due steps go at their window's next opening.",
    from_statuses=("paused",),
    to="active",
)
_status_route(
    "cancel",
    "Cancel the campaign: no further email, every sequence ends.",
    from_statuses=("draft", "active", "paused"),
    to="cancelled",
    also=("ops", "admin"),
)


async def _watched_contact(
    session: SessionDep, temporal: Client, person: Person, campaign_id: str, email: str
) -> tuple[Campaign, CampaignContact, SequenceStatus | None]:
    """A contact of a campaign the caller owns (or ops, admin), and its sequence's live view."""
    campaign = await campaign_or_404(session, campaign_id)
    require_campaign_owner(person, campaign, also=("ops", "admin"))
    contact = await contact_or_404(session, campaign, email)
    return campaign, contact, await live_contact(temporal, contact)


@router.get("/{campaign_id}/contacts/{email}", response_model=ContactRead)
async def get_contact(
    campaign_id: str,
    email: str,
    person: CurrentPerson,
    session: SessionDep,
    temporal: TemporalDep,
) -> ContactRead:
    """The contact's step, next send time and history with reasons (live when possible)."""
    campaign, contact, live = await _watched_contact(session, temporal, person, campaign_id, email)
    return await contact_read(session, campaign, contact, live)


@router.post("/{campaign_id}/retry", status_code=202, response_model=RetryRead)
async def retry_campaign(
    campaign_id: str, person: CurrentPerson, session: SessionDep, temporal: TemporalDep
) -> RetryRead:
    """Run the failed step again: of the campaign, if it is parked in needs_attention, and of
    every sequence of it that is parked (owner, ops, admin). 409 when nothing is parked."""
    campaign, live = await _watched_campaign(session, temporal, person, campaign_id)
    if live is not None:
        campaign_parked = live.attention is not None
    else:
        campaign_parked = campaign.attention is not None
    contacts = await parked_sequences(temporal, session, campaign.id)
    if not campaign_parked and not contacts:
        raise ApiError(
            409,
            "nothing_to_retry",
            "Neither the campaign nor any of its sequences is parked in needs_attention.",
            [{"status": campaign.status}],
        )
    retried_campaign, retried = await retry_parked(
        temporal, campaign.id, campaign=campaign_parked, contacts=contacts, by=person.email
    )
    return RetryRead(campaign_id=campaign.id, campaign=retried_campaign, contacts=retried)


@router.post("/{campaign_id}/contacts/{email}/retry", status_code=202, response_model=RetryRead)
async def retry_contact(
    campaign_id: str,
    email: str,
    person: CurrentPerson,
    session: SessionDep,
    temporal: TemporalDep,
) -> RetryRead:
    """Run the failed step of this contact's parked sequence again (owner, ops, admin)."""
    campaign, contact, live = await _watched_contact(session, temporal, person, campaign_id, email)
    parked = live.attention is not None if live is not None else contact.attention is not None
    if not parked or not await retry_sequence(temporal, campaign.id, contact.email, person.email):
        raise ApiError(
            409,
            "nothing_to_retry",
            "This contact's sequence is not parked in needs_attention.",
            [{"status": live.state if live else contact.status}],
        )
    return RetryRead(campaign_id=campaign.id, campaign=False, contacts=[contact.email])


@router.post("/{campaign_id}/contacts/{email}/tasks/{step}/done", status_code=202)
async def task_done(
    campaign_id: str,
    email: str,
    step: int,
    person: CurrentPerson,
    session: SessionDep,
    temporal: TemporalDep,
    body: TaskDoneCreate | None = None,
) -> dict[str, Any]:
    """The rep marks a LinkedIn or call task done; the sequence moves on."""
    campaign = await campaign_or_404(session, campaign_id)
    require_campaign_owner(person, campaign)
    if not 0 <= step < len(campaign.steps) or campaign.steps[step]["channel"] == "email":
        raise ApiError(404, "not_found", f"Step {step} of this campaign is not a task.")
    if not await tell_task_done(
        temporal, campaign.id, email, TaskDone(step_index=step, by=person.email)
    ):
        raise ApiError(409, "sequence_ended", "This contact's sequence has ended.")
    return {"campaign_id": campaign.id, "email": email.lower(), "step": step, "status": "done"}


@suppressions_router.post("", status_code=201)
async def add_suppression(
    body: SuppressionCreate, person: CurrentPerson, session: SessionDep
) -> dict[str, Any]:
    """Never mail an address or a domain (do-not-contact), for one sender or every sender."""
    require_role(person, "rep", "ops", "admin")
    kind, value = ("email", str(body.email)) if body.email else ("domain", str(body.domain))
    await campaigns_db.add_suppression(
        session,
        kind=kind,
        value=value,
        reason=body.reason,
        sender_email=str(body.sender_email) if body.sender_email else "*",
        source=f"api:{person.email}",
    )
    await session.commit()
    return {
        "kind": kind,
        "value": value.lower(),
        "reason": body.reason,
        "sender_email": body.sender_email or "*",
    }
