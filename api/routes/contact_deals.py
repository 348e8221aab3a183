"""``POST /v1/campaigns/{id}/contacts/{email}/deal``: an engaged contact becomes a draft deal.

The account comes from the contact (company, else the email's domain; the domain; the country),
the contact is the first signer, and the notes say which campaign and which reply it came from.
Idempotent per campaign contact: the ``contact_deals`` row's primary key is written in the same
transaction as the deal, so a second call, or two at once, answer 200 with the first deal.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError

from api.access import campaign_or_404, contact_or_404, require_campaign_owner
from api.deal_read import deal_read
from api.deps import CurrentPerson, SessionDep, SettingsDep
from api.errors import ApiError
from api.list_schemas import ContactDealCreate
from api.schemas import DealCreate, DealRead, TimelineRead
from db import campaigns as campaigns_db
from db import deals as deals_db
from db.audit import append_audit
from db.campaign_models import Campaign, CampaignContact, InboundMessage
from db.contact_deals import (
    ContactDeal,
    deal_for_contact,
    latest_reply,
    timeline_entry,
)
from dealflow.limits import MAX_REPLY_IN_DEAL_NOTES

# Under /v1/campaigns, but its own router: the campaign routes module is not touched.
router = APIRouter(prefix="/v1/campaigns", tags=["campaigns"])


def _notes(campaign: Campaign, contact: CampaignContact, reply: InboundMessage | None) -> str:
    lines = [
        f"From campaign “{campaign.name}” ({campaign.id}), contact {contact.email}.",
        f"Contact: /v1/campaigns/{campaign.id}/contacts/{contact.email}",
    ]
    if reply is None:
        lines.append("No reply recorded.")
    else:
        text = (reply.text or "").strip()
        if len(text) > MAX_REPLY_IN_DEAL_NOTES:
            text = text[:MAX_REPLY_IN_DEAL_NOTES] + " […]"
        lines += [
            f"Reply ({reply.kind.replace('_', ' ')}, rule {reply.rule}) received "
            f"{reply.received_at:%Y-%m-%d %H:%M} UTC: “{reply.subject or ''}”",
            text,
        ]
    return "\n".join(lines)


def _deal_body(
    campaign: Campaign,
    contact: CampaignContact,
    reply: InboundMessage | None,
    body: ContactDealCreate,
) -> DealCreate:
    company = (contact.company or "").strip() or contact.domain
    country = body.country or (contact.country or "").strip().upper() or None
    if country is None:
        raise ApiError(
            422,
            "invalid_request",
            f"{contact.email} has no country; send it in the body.",
            [{"field": "country", "message": "the contact has none: required"}],
        )
    signer = " ".join(p for p in (contact.first_name, contact.last_name) if p) or contact.email
    try:
        return DealCreate(
            name=body.name or f"{company} — from {campaign.name}"[:300],
            currency=body.currency,
            term_months=body.term_months,
            billing_frequency=body.billing_frequency,
            payment_terms_days=body.payment_terms_days,
            account={
                "name": company[:300],
                "domain": contact.domain,
                "country": country,
                "region": body.region,
            },
            signers=[
                {
                    "name": signer[:300],
                    "email": contact.email,
                    "title": contact.title[:200] if contact.title else None,
                    "routing_order": 1,
                }
            ],
            notes=_notes(campaign, contact, reply),
        )
    except ValidationError as err:
        raise ApiError(
            422,
            "invalid_request",
            "The contact's record does not make a valid deal; see details.",
            [
                {"field": ".".join(map(str, e["loc"])), "message": e["msg"]}
                for e in err.errors(include_url=False)
            ],
        ) from None


async def _answer(
    session: SessionDep,
    settings: SettingsDep,
    link: ContactDeal,
    campaign_name: str,
    status: int,
) -> JSONResponse:
    deal = await deals_db.get_deal(session, deal_id=link.deal_id)
    assert deal is not None  # the link's foreign key cascades: no link without its deal
    read = await deal_read(session, settings, deal, None)
    read.timeline = [TimelineRead(**timeline_entry(link, campaign_name)), *read.timeline]
    return JSONResponse(jsonable_encoder(read), status_code=status)


@router.post(
    "/{campaign_id}/contacts/{email}/deal",
    status_code=201,
    response_model=DealRead,
    responses={200: {"model": DealRead, "description": "The deal made for this contact before."}},
)
async def contact_to_deal(
    campaign_id: str,
    email: str,
    person: CurrentPerson,
    session: SessionDep,
    settings: SettingsDep,
    body: ContactDealCreate | None = None,
) -> Any:
    """Turn a campaign contact into a draft deal (201); again for the same contact, 200."""
    campaign = await campaign_or_404(session, campaign_id)
    require_campaign_owner(person, campaign)
    contact = await contact_or_404(session, campaign, email)
    existing = await deal_for_contact(session, campaign_id=campaign.id, contact_email=contact.email)
    if existing is not None:
        return await _answer(session, settings, existing, campaign.name, 200)
    # Plain values: a rollback below expires the ORM objects.
    campaign_key, contact_key, campaign_name = campaign.id, contact.email, campaign.name
    reply = await latest_reply(session, campaign_id=campaign.id, contact_email=contact.email)
    create = _deal_body(campaign, contact, reply, body or ContactDealCreate())
    try:
        deal = await deals_db.create_deal(
            session, owner_email=person.email, data=create.model_dump(exclude_unset=False)
        )
        link = ContactDeal(
            campaign_id=campaign.id,
            contact_email=contact.email,
            deal_id=deal.id,
            inbound_id=reply.id if reply else None,
            created_by=person.email,
        )
        session.add(link)
        await session.flush()  # the primary key decides a race here, before anything else
        await append_audit(
            session,
            deal_id=deal.id,
            actor=person.email,
            channel="api",
            event="deal.created",
            detail={
                "name": deal.name,
                "revision": deal.revision,
                "from_campaign": campaign.id,
                "contact_email": contact.email,
                "reply_id": link.inbound_id,
            },
        )
        await campaigns_db.append_event(
            session,
            campaign_id=campaign.id,
            contact_email=contact.email,
            event="deal.created",
            detail=f"draft deal {deal.id} “{deal.name}”: /v1/deals/{deal.id}",
            idempotency_key=f"contact-deal/{campaign.id}/{contact.email}",
        )
        await session.commit()
    except IntegrityError:
        # Another call for the same contact committed first: answer with its deal.
        await session.rollback()
        existing = await deal_for_contact(
            session, campaign_id=campaign_key, contact_email=contact_key
        )
        if existing is None:
            raise
        return await _answer(session, settings, existing, campaign_name, 200)
    return await _answer(session, settings, link, campaign_name, 201)
