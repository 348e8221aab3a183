"""Schemas of the lists, the tasks and the campaign-to-deal bridge (``XxxRead`` / ``XxxCreate``)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from api.fields import Currency, RequiredText
from api.schemas import Country, PaymentTermsDays, Region, TermMonths
from dealflow import limits

# API.md's deal stages: the values `GET /v1/deals?stage=` accepts.
DEAL_STAGES = frozenset(
    {
        "draft",
        "quoting",
        "awaiting_approval",
        "changes_requested",
        "awaiting_signature",
        "closing",
        "closed_won",
        "handoff",
        "rejected",
        "declined",
        "cancelled",
        "closed_lost",
        "needs_attention",
    }
)
CAMPAIGN_STATUSES = frozenset({"draft", "active", "paused", "completed", "cancelled", "failed"})
INBOX_STATUSES = frozenset({"pending"})


class DealListItem(BaseModel):
    id: str
    name: str
    stage: str
    owner_email: str
    customer: str
    total: str | None = Field(None, description="The latest quote's total; null before pricing.")
    currency: str
    updated_at: datetime
    created_at: datetime


class DealList(BaseModel):
    items: list[DealListItem]
    next_cursor: str | None


class InboxItem(BaseModel):
    step_id: str
    deal_id: str
    deal_name: str
    customer: str
    role: str
    reason: str
    status: str
    due_at: datetime | None
    total: str | None
    currency: str | None
    approver_email: str
    holder_email: str
    delegate_email: str | None
    escalated_to: str | None
    escalation_level: int
    may_decide_as: Literal["approver", "escalation_target", "delegate"] = Field(
        description="Why the caller sees it: the step's approver, the holder after an "
        "escalation, or the out-of-office holder's delegate."
    )
    requested_at: datetime
    decision_url: str


class InboxList(BaseModel):
    items: list[InboxItem]
    next_cursor: str | None


class CampaignListItem(BaseModel):
    id: str
    name: str
    status: str
    owner_email: str
    sender_email: str
    contact_count: int
    created_at: datetime
    updated_at: datetime
    launched_at: datetime | None
    finished_at: datetime | None


class CampaignList(BaseModel):
    items: list[CampaignListItem]
    next_cursor: str | None


class TaskRead(BaseModel):
    id: str
    kind: str
    title: str
    detail: str | None = None
    due_at: datetime | None
    status: str
    owner_email: str
    deal_id: str | None = None
    campaign_id: str | None = None
    contact_email: str | None = None
    step_index: int | None = None
    created_at: datetime
    done_at: datetime | None = None
    done_by: str | None = None


class TaskList(BaseModel):
    items: list[TaskRead]
    next_cursor: str | None


class WorkflowTold(BaseModel):
    workflow_id: str
    told: bool
    detail: str


class TaskDoneRead(TaskRead):
    workflow: WorkflowTold | None = Field(
        None, description="The workflow waiting on this task, and whether it was told."
    )


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ContactDealCreate(_In):
    """Optional: what the contact's record cannot say. Everything else comes from the contact."""

    name: RequiredText(limits.DEAL_NAME) | None = None
    currency: Currency = "USD"
    term_months: TermMonths = 12
    billing_frequency: Literal["annual", "quarterly", "monthly"] = "annual"
    payment_terms_days: PaymentTermsDays = 30
    country: Country | None = Field(None, description="When the contact has no country.")
    region: Region | None = None
