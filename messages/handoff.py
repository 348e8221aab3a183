"""What the handoff exchanges: the workflow's input, status, signals and updates, and every
handoff activity's input and result.

Pure pydantic models (and the error type names the workflow matches), imported by
``workflows/handoff.py``, the handoff activities, the API and the tests alike.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from pydantic import BaseModel

from messages.parking import ParkedFailure, RetryBudget

# Error types no retry can fix (the workflow parks at once on them).
DEAL_NOT_FOUND = "HandoffDealNotFound"
NOT_A_CSM = "NotACsm"
CRM_REJECTED = "CrmRejected"


# --- the workflow: input, status, signals and updates -------------------------------------


class HandoffTiming(BaseModel):
    """Set from Settings when the handoff starts. ``business_day_seconds`` (tests, demos) makes
    every business day of the plan that many seconds from now; ``renewal_spacing_seconds``
    puts the renewal alerts that far apart from now instead of months before the term end."""

    activity_timeout_seconds: float = 30.0
    business_day_seconds: float | None = None
    reminder_before_seconds: float | None = None
    renewal_spacing_seconds: float | None = None
    # Continue-as-new past this many history events: a handoff waits for months.
    history_limit: int = 2000
    # Each activity's retry budget; spent (or a non-retryable error), the handoff parks in
    # needs_attention until a retry (workflows/parking.py). Tests shorten it.
    retry: RetryBudget = RetryBudget()


class TimelineEntry(BaseModel):
    at: dt.datetime
    event: str
    detail: str | None = None


class CsmView(BaseModel):
    email: str
    reason: str
    alternatives: list[dict[str, str]] = []
    manager_email: str | None = None


class KickoffView(BaseModel):
    at: dt.datetime
    end: dt.datetime
    attendees: list[str]
    invite_sent_at: dt.datetime | None = None
    timezone: str


class ItemView(BaseModel):
    id: str
    key: str
    title: str
    owner_email: str
    escalate_to: str | None = None
    due_at: dt.datetime
    remind_at: dt.datetime
    status: str = "open"  # open | done | overdue | cancelled
    reminded_at: dt.datetime | None = None
    escalated_to: str | None = None
    done_at: dt.datetime | None = None
    done_by: str | None = None


class AlertView(BaseModel):
    days_before: int
    due_at: dt.datetime
    sent_at: dt.datetime | None = None


class RenewalView(BaseModel):
    term_end: dt.date
    alerts: list[AlertView]
    crm_renewal_id: str | None = None


class HandoffStatus(BaseModel):
    deal_id: str
    status: str = "collecting"
    status_reason: str | None = None
    owner_email: str
    close_date: dt.date | None = None
    customer: str | None = None
    package: dict[str, Any] | None = None
    missing: list[dict[str, str]] = []
    csm: CsmView | None = None
    kickoff: KickoffView | None = None
    items: list[ItemView] = []
    renewal: RenewalView | None = None
    timeline: list[TimelineEntry] = []
    run: int = 1  # which run of the workflow (continue-as-new) this is
    parked: ParkedFailure | None = None  # while an activity that gave up waits for a retry
    cancelled_by: str | None = None


class HandoffInput(BaseModel):
    deal_id: str
    owner_email: str
    closure: dict[str, Any] = {}
    timing: HandoffTiming = HandoffTiming()
    state: HandoffStatus | None = None  # carried over by continue-as-new


class ItemDone(BaseModel):
    item_id: str
    by: str
    at: dt.datetime


class Reassign(BaseModel):
    csm_email: str
    reason: str
    by: str


class CancelHandoff(BaseModel):
    reason: str
    by: str


# --- the activities' inputs and results ---------------------------------------------------


class StartHandoffInput(BaseModel):
    deal_id: str
    owner_email: str
    closure: dict[str, Any]  # the closure's status at closed-won (quote, documents, approvals)


class LoadPackageInput(BaseModel):
    deal_id: str
    close_date: dt.date


class Contact(BaseModel):
    name: str
    email: str | None = None
    title: str | None = None
    role: str  # signer, primary, billing, technical, other


class PackageResult(BaseModel):
    package: dict[str, Any]
    missing: list[dict[str, str]]
    details_revision: int
    customer: str
    segment: str
    region: str
    industry: str | None
    timezone: str
    holiday_country: str
    term_start: dt.date
    term_end: dt.date
    term_months: int
    contacts: list[Contact]
    primary_contact: Contact | None


class AssignInput(BaseModel):
    deal_id: str
    segment: str
    region: str
    industry: str | None
    customer: str
    csm_email: str | None = None  # a reassignment names the CSM
    reason: str | None = None
    by: str | None = None


class CsmChoiceOut(BaseModel):
    email: str
    reason: str


class AssignResult(BaseModel):
    csm_email: str | None
    reason: str
    alternatives: list[CsmChoiceOut] = []
    lead_task_id: str | None = None
    manager_email: str | None = None


class MessageInput(BaseModel):
    key: str
    deal_id: str
    to: list[str]
    subject: str
    template: str
    context: dict[str, Any]


class KickoffInput(BaseModel):
    key: str
    deal_id: str
    customer: str
    organizer_email: str
    attendees: list[str]
    start: dt.datetime
    end: dt.datetime
    timezone: str


class WinInput(BaseModel):
    key: str
    deal_id: str
    text: str


class PlanInput(BaseModel):
    deal_id: str
    segment: str
    close_date: dt.date
    timezone: str
    holiday_country: str
    csm_email: str
    rep_email: str
    customer_email: str | None
    term_end: dt.date
    timing: HandoffTiming


class PlannedItem(BaseModel):
    id: str
    key: str
    title: str
    owner_email: str
    owner_kind: str
    escalate_to: str | None
    due_at: dt.datetime
    remind_at: dt.datetime
    status: str = "open"
    reminded_at: dt.datetime | None = None
    escalated_to: str | None = None
    done_at: dt.datetime | None = None
    done_by: str | None = None


class PlanResult(BaseModel):
    kickoff_start: dt.datetime
    kickoff_end: dt.datetime
    items: list[PlannedItem]
    alerts: list[tuple[int, dt.datetime]]


class TaskUpdate(BaseModel):
    task_id: str
    reminded_at: dt.datetime | None = None
    escalated_to: str | None = None
    status: str | None = None


class MirrorInput(BaseModel):
    deal_id: str
    status: str
    status_reason: str | None = None
    csm_email: str | None = None
    csm_reason: str | None = None
    kickoff_at: dt.datetime | None = None
    renewal_at: dt.datetime | None = None


class CancelTasksInput(BaseModel):
    deal_id: str
    reason: str
    by: str


class RenewalInput(BaseModel):
    deal_id: str
    name: str
    amount: Decimal
    currency: str
    term_end: dt.date


class MoveItemsInput(BaseModel):
    deal_id: str
    from_email: str
    to_email: str


class LearningInput(BaseModel):
    deal_id: str
    at: dt.datetime
