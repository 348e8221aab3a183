"""What the campaign reads answer: a campaign (counts, per-step and per-variant stats, the
preflight report, the live view) and a contact (step, sends, history), from the workflow's own
view when it answered, else from the tables.
"""

from __future__ import annotations

from typing import Any

from api.campaign_schemas import CampaignRead, ContactRead, StepRead, VariantRead
from api.deps import SessionDep
from db import campaigns as campaigns_db
from db import sequences as sequences_db
from db.campaign_models import Campaign, CampaignContact
from db.contact_deals import contact_deal_history
from dealflow.ids import campaign_workflow_id, sequence_workflow_id
from dealflow.settings import Settings
from domain.campaign_email import variant_names
from domain.variants import pick_winner
from messages.campaign import CampaignStatus, SequenceStatus


async def campaign_read(
    session: SessionDep, settings: Settings, campaign: Campaign, live: CampaignStatus | None
) -> CampaignRead:
    counts = await campaigns_db.counts(session, campaign_id=campaign.id)
    stats = await campaigns_db.step_stats(session, campaign_id=campaign.id)
    min_sample = (campaign.options or {}).get("ab_min_sample") or settings.campaign_ab_min_sample
    steps = []
    for i, step in enumerate(campaign.steps):
        names: list[str | None] = list(variant_names(step)) or [None]
        variants = []
        for name in names:
            s = stats.get((i, name), campaigns_db.VariantStats())
            variants.append(
                VariantRead(
                    name=name,
                    sent=s.sent,
                    replied=s.replied,
                    positive=s.positive,
                    reply_rate=round(s.replied / s.sent, 4) if s.sent else 0.0,
                    positive_rate=round(s.positive / s.sent, 4) if s.sent else 0.0,
                )
            )
        winner = winner_positive = None
        if len(variants) > 1:
            alpha = settings.campaign_ab_alpha
            winner = pick_winner(
                {v.name: (v.replied, v.sent) for v in variants if v.name},
                min_sample=min_sample,
                alpha=alpha,
            )
            winner_positive = pick_winner(
                {v.name: (v.positive, v.sent) for v in variants if v.name},
                min_sample=min_sample,
                alpha=alpha,
            )
        steps.append(
            StepRead(
                index=i,
                channel=step["channel"],
                wait_days=step.get("wait_days", 0),
                send_window={k: v for k, v in step["send_window"].items() if k != "days_index"},
                sent=sum(v.sent for v in variants),
                replied=sum(v.replied for v in variants),
                positive=sum(v.positive for v in variants),
                variants=variants,
                winner=winner,
                winner_positive=winner_positive,
            )
        )
    # The workflow's own view when it answers; else the copy it recorded on the row.
    if live is not None:
        attention = live.attention.model_dump(mode="json") if live.attention else None
    else:
        attention = campaign.attention
    parked = attention is not None and campaign.status in campaigns_db.RUNNING_STATUSES
    return CampaignRead(
        id=campaign.id,
        name=campaign.name,
        status="needs_attention" if parked else campaign.status,
        status_reason=_attention_reason(attention) if parked else campaign.status_reason,
        attention=attention,
        owner_email=campaign.owner_email,
        sender={
            "email": campaign.sender_email,
            "name": campaign.sender_name,
            "daily_limit": campaign.sender_daily_limit,
            "timezone": campaign.sender_timezone,
        },
        counts=counts,
        steps=steps,
        preflight=campaign.preflight,
        test_mode=(campaign.options or {}).get("test_mode"),
        workflow_id=campaign_workflow_id(campaign.id) if campaign.launched_at else None,
        live=(
            {
                "phase": live.phase,
                "enrolled_up_to": live.progress.cursor,
                "enrolment_done": live.progress.enrolment_done,
                "runs": live.progress.runs,
                "open_sequences": live.open_sequences,
            }
            if live
            else None
        ),
        created_at=campaign.created_at,
        launched_at=campaign.launched_at,
        finished_at=campaign.finished_at,
    )


def _attention_reason(attention: dict[str, Any]) -> str:
    return f"{attention.get('activity')} failed: {attention.get('error')}"


async def contact_read(
    session: SessionDep,
    campaign: Campaign,
    contact: CampaignContact,
    live: SequenceStatus | None,
) -> ContactRead:
    """The contact as its sequence sees it (``live``), else as its row and history record it."""
    workflow_id = sequence_workflow_id(campaign.id, contact.email)
    if live is not None:
        return ContactRead(
            campaign_id=campaign.id,
            email=contact.email,
            status=live.state,
            step=live.step,
            steps_total=live.steps_total,
            next_send_at=live.next_send_at,
            paused_until=live.paused_until,
            pause_reason=live.pause_reason,
            stop_reason=live.stop_reason,
            outcome=live.outcome or contact.outcome,
            excluded_reason=None,
            sent=[s.model_dump() for s in live.sent],
            # The deal made from this contact lives outside the sequence (lists branch, i9).
            history=[h.model_dump() for h in live.history]
            + await contact_deal_history(session, campaign_id=campaign.id, email=contact.email),
            workflow_id=workflow_id,
            live=True,
            attention=live.attention.model_dump(mode="json") if live.attention else None,
        )
    history = await sequences_db.contact_history(
        session, campaign_id=campaign.id, email=contact.email
    )
    sends = await sequences_db.contact_sends(session, campaign_id=campaign.id, email=contact.email)
    return ContactRead(
        campaign_id=campaign.id,
        email=contact.email,
        status="needs_attention" if contact.attention else contact.status,
        step=contact.current_step,
        steps_total=len(campaign.steps),
        next_send_at=contact.next_send_at,
        paused_until=contact.hold_until if contact.hold == "paused" else None,
        pause_reason=contact.hold_reason if contact.hold == "paused" else None,
        stop_reason=contact.hold_reason if contact.hold == "stopped" else None,
        outcome=contact.outcome,
        excluded_reason=contact.excluded_reason,
        sent=[
            {
                "step": s.step_index,
                "message_id": s.message_id,
                "subject": s.subject,
                "variant": s.variant,
                "at": s.sent_at,
                "unconfirmed": s.status == "unconfirmed",
            }
            for s in sends
            if s.status in campaigns_db.SENT_STATUSES
        ],
        history=[
            {"at": h.at, "event": h.event, "step": h.step_index, "detail": h.detail}
            for h in history
        ],
        workflow_id=workflow_id,
        live=False,
        attention=contact.attention,
    )
