"""Who may touch what: the lookups that answer 404 and the ownership checks that answer 403.

Every route that works on a deal or a campaign goes through these, so the rules (and their
messages) are written once: the owner is the rep who owns the row; ``also`` names the roles
(e.g. ops, admin) that may act on anyone's.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from api.errors import ApiError
from db import campaigns as campaigns_db
from db import deals as deals_db
from db.campaign_models import Campaign, CampaignContact
from db.models import Deal, Person
from messages.approval import ApprovalStep
from messages.closure import DealClosureStatus


def _require_owner(person: Person, owner_email: str, what: str, also: tuple[str, ...]) -> None:
    if owner_email == person.email and "rep" in person.roles:
        return
    if also and set(also) & set(person.roles):
        return
    raise ApiError(403, "forbidden", f"Only the {what}'s owner may do this.")


async def deal_or_404(session: AsyncSession, deal_id: str, *, for_update: bool = False) -> Deal:
    """The deal, or 404; ``for_update`` locks its row for the transaction."""
    deal = await deals_db.get_deal(session, deal_id=deal_id, for_update=for_update)
    if deal is None:
        raise ApiError(404, "not_found", f"Deal {deal_id} does not exist.")
    return deal


def require_deal_owner(person: Person, deal: Deal, *, also: tuple[str, ...] = ()) -> None:
    """403 unless the caller is the deal's owning rep (or holds one of the roles ``also``)."""
    _require_owner(person, deal.owner_email, "deal", also)


def owns_or_operates(person: Person, deal: Deal) -> bool:
    """The deal's owner, or ops/admin: they may read any part of it."""
    return deal.owner_email == person.email or bool({"ops", "admin"} & set(person.roles))


async def approvers_of(
    session: AsyncSession,
    deal_id: str,
    live: DealClosureStatus | None,
    steps: list[ApprovalStep] | None = None,
) -> set[str]:
    """Everyone who approves (or holds, or stands in for) a step of the deal: they may read it.

    From the live closure when it answers, else from the latest quote's approval plan.
    """
    if live is not None:
        people: set[str | None] = {a.approver_email for a in live.approvals}
        for s in steps or []:
            people |= {s.approver_email, s.holder_email, s.delegate_email}
        return {p for p in people if p is not None}
    qv = await deals_db.latest_quote_version(session, deal_id=deal_id)
    if qv is None or not qv.approval_plan:
        return set()
    return set(qv.approval_plan.get("assignees", {}).values())


async def campaign_or_404(
    session: AsyncSession, campaign_id: str, *, lock: str | None = None
) -> Campaign:
    """The campaign, or 404; ``lock`` as ``db.campaigns.get_campaign`` (None, share, update)."""
    campaign = await campaigns_db.get_campaign(session, campaign_id=campaign_id, lock=lock)
    if campaign is None:
        raise ApiError(404, "not_found", f"Campaign {campaign_id} does not exist.")
    return campaign


def require_campaign_owner(
    person: Person, campaign: Campaign, *, also: tuple[str, ...] = ()
) -> None:
    """403 unless the caller is the campaign's owning rep (or holds one of the roles ``also``)."""
    _require_owner(person, campaign.owner_email, "campaign", also)


async def contact_or_404(session: AsyncSession, campaign: Campaign, email: str) -> CampaignContact:
    """A contact of the campaign, or 404."""
    contact = await campaigns_db.get_contact(session, campaign_id=campaign.id, email=email)
    if contact is None:
        raise ApiError(404, "not_found", f"{email} is not a contact of campaign {campaign.id}.")
    return contact


def is_deal_owner(person: Person, deal: Deal) -> bool:
    """The deal's owning rep (a check that combines with others, e.g. the handoff's CSM)."""
    return deal.owner_email == person.email and "rep" in person.roles
