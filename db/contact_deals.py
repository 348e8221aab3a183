"""Campaign contact -> draft deal: the link that makes the bridge idempotent and both sides name
each other.

One row per (campaign, contact): its primary key is what makes a second call (or two at once)
find the first deal instead of making another. The contact's history gets a ``deal.created``
entry naming the deal, and the deal's timeline an entry naming the contact (read from this row,
so it shows before and after the closure starts).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import DateTime, ForeignKey, String, desc, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from db.base import Base
from db.campaign_models import Campaign, InboundMessage

ENGAGED_KINDS = ("meeting_request", "interested", "question", "referral", "objection")


class ContactDeal(Base):
    __tablename__ = "contact_deals"
    __mapper_args__ = {"eager_defaults": True}  # created_at comes back in the INSERT

    campaign_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    contact_email: Mapped[str] = mapped_column(String(320), primary_key=True)
    deal_id: Mapped[str] = mapped_column(ForeignKey("deals.id", ondelete="CASCADE"), unique=True)
    inbound_id: Mapped[str | None] = mapped_column(String(40))  # the reply it came from
    created_by: Mapped[str] = mapped_column(String(320))
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )


async def deal_for_contact(
    session: AsyncSession, *, campaign_id: str, contact_email: str
) -> ContactDeal | None:
    """The deal already made from this contact, if any."""
    return await session.get(ContactDeal, (campaign_id, contact_email))


async def origin_of(session: AsyncSession, *, deal_id: str) -> ContactDeal | None:
    """The campaign contact a deal was made from, if it was."""
    stmt = select(ContactDeal).where(ContactDeal.deal_id == deal_id)
    return (await session.execute(stmt)).scalar_one_or_none()


async def latest_reply(
    session: AsyncSession, *, campaign_id: str, contact_email: str
) -> InboundMessage | None:
    """The contact's newest engaged reply (interest, a meeting, a question...), else the newest."""
    base = select(InboundMessage).where(
        InboundMessage.campaign_id == campaign_id, InboundMessage.contact_email == contact_email
    )
    order = (desc(InboundMessage.received_at), desc(InboundMessage.id))
    engaged = base.where(InboundMessage.kind.in_(ENGAGED_KINDS)).order_by(*order).limit(1)
    found = (await session.execute(engaged)).scalar_one_or_none()
    if found is not None:
        return found
    return (await session.execute(base.order_by(*order).limit(1))).scalar_one_or_none()


def timeline_entry(link: ContactDeal, campaign_name: str | None) -> dict:
    """The deal's timeline entry naming the contact it came from."""
    name = f"“{campaign_name}” " if campaign_name else ""
    return {
        "at": link.created_at,
        "event": "deal.created_from_campaign",
        "detail": (
            f"from {link.contact_email} in campaign {name}({link.campaign_id}): "
            f"/v1/campaigns/{link.campaign_id}/contacts/{link.contact_email}"
        ),
    }


async def contact_deal_history(session: AsyncSession, *, campaign_id: str, email: str) -> list:
    """The contact's history entry naming the deal made from it (for the sequence's live view,
    which does not hold it; the table view reads the same entry from the contact's events)."""
    link = await deal_for_contact(session, campaign_id=campaign_id, contact_email=email.lower())
    if link is None:
        return []
    return [
        {
            "at": link.created_at,
            "event": "deal.created",
            "step": None,
            "detail": f"draft deal {link.deal_id}: /v1/deals/{link.deal_id}",
        }
    ]


async def origin_timeline(session: AsyncSession, *, deal_id: str) -> list[dict]:
    """The deal's timeline entry naming the campaign contact it was made from (if it was)."""
    link = await origin_of(session, deal_id=deal_id)
    if link is None:
        return []
    campaign = await session.get(Campaign, link.campaign_id)
    return [timeline_entry(link, campaign.name if campaign else None)]
