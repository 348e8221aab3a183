"""What the approval process exchanges: the chain's input, status, update and signals, and the
approval activities' inputs and results.

Pure pydantic models, importable from workflow code (passed through the sandbox).
"""

from __future__ import annotations

import datetime as dt
from datetime import date, datetime
from typing import Any

from pydantic import BaseModel

# Parking models are part of what the workflows exchange (status, options); they live with the
# park-and-retry logic, pure and passed through the sandbox.
from messages.parking import ParkedFailure, RetryBudget


class DealSummary(BaseModel):
    deal_id: str
    name: str
    customer: str
    owner_email: str
    total: str
    currency: str
    discount_pct: str
    term_months: int
    close_by: date | None = None


class ApprovalStep(BaseModel):
    step_id: str
    stage: int
    mode: str
    role: str
    approver_email: str
    holder_email: str
    delegate_email: str | None = None
    reason: str
    inputs_sha256: str
    status: str
    requested_at: datetime | None = None
    due_at: datetime | None = None
    reminded_at: datetime | None = None
    escalated_to: str | None = None
    escalation_level: int = 0
    decided_by: str | None = None
    decision: str | None = None
    comment: str | None = None
    decided_at: datetime | None = None
    channel: str | None = None
    expected_median_hours: float | None = None
    expected_p90_hours: float | None = None
    expected_source: str | None = None
    carried_from_version: int | None = None


class PlannedRequest(BaseModel):
    """A planned approval with what the chain needs to run it (from the policy's role entry)."""

    stage: int
    role: str
    role_label: str
    approver_email: str
    reason: str
    inputs_sha256: str
    sla_hours: float
    sla_business_hours: bool
    reminder_at: float
    expected_hours: float


class PersonInfo(BaseModel):
    email: str
    name: str
    title: str | None = None
    timezone: str = "UTC"
    slack_user_id: str | None = None
    manager_email: str | None = None
    backup_email: str | None = None
    ooo_until: dt.datetime | None = None
    ooo_delegate_email: str | None = None


class ResolvePersonInput(BaseModel):
    email: str
    deal_id: str | None = None  # the deal asking (the failure points' key); None before it was sent


class OpenRequestInput(BaseModel):
    deal_id: str
    quote_version: int
    workflow_id: str
    step: ApprovalStep


class DeliverInput(BaseModel):
    step: ApprovalStep
    role_label: str
    recipient_email: str
    purpose: str  # request, reminder, escalation.N, delegation.<email>
    summary: DealSummary
    link_ttl_hours: float


class RecordDecisionInput(BaseModel):
    deal_id: str
    step: ApprovalStep
    summary: DealSummary


class RequestEventInput(BaseModel):
    deal_id: str
    step: ApprovalStep
    event: str
    actor: str
    detail: dict[str, Any]
    at: dt.datetime
    idempotency_key: str


class WithdrawInput(BaseModel):
    deal_id: str
    step: ApprovalStep
    reason: str
    at: dt.datetime


class NotifyInput(BaseModel):
    recipient_email: str
    key: str
    text: str
    deal_id: str | None = None  # the deal it is about (the failure points' key)


class DecisionStatsInput(BaseModel):
    emails: list[str]
    deal_id: str | None = None  # the deal asking (the failure points' key)


class ApproverStats(BaseModel):
    count: int
    median_hours: float
    p90_hours: float


class DecisionStats(BaseModel):
    by_email: dict[str, ApproverStats]


class ApprovalOptions(BaseModel):
    """Timing chosen by the caller from Settings (nothing in workflows/ reads the environment)."""

    activity_timeout_seconds: float = 30.0
    # When set, every SLA is this many wall-clock seconds (tests and demos); business hours apply
    # only to real SLAs.
    sla_override_seconds: float | None = None
    escalation_levels: int = 2
    link_ttl_hours: float = 72.0
    min_history: int = 3
    retry: RetryBudget = RetryBudget()


class RequestSpec(PlannedRequest):
    """A planned approval as the chain runs it: the plan's entry plus the step's id."""

    step_id: str


class StageSpec(BaseModel):
    index: int
    mode: str
    requests: list[RequestSpec]


class CarriedApproval(BaseModel):
    step_id: str
    stage: int
    role: str
    approver_email: str
    reason: str
    inputs_sha256: str
    decided_by: str
    decided_at: datetime
    from_version: int


class ApprovalChainInput(BaseModel):
    deal: DealSummary
    quote_version: int
    stages: list[StageSpec]
    carried: list[CarriedApproval] = []
    options: ApprovalOptions = ApprovalOptions()


class ApprovalChainStatus(BaseModel):
    outcome: str  # running, approved, rejected, changes_requested, withdrawn
    current_stage: int | None = None
    steps: list[ApprovalStep]
    predicted_finish: datetime | None = None
    decided_by: str | None = None
    comment: str | None = None
    parked: ParkedFailure | None = None


class DecisionRequest(BaseModel):
    step_id: str
    actor_email: str
    decision: str  # approve, reject, request_changes
    comment: str | None = None
    channel: str  # api, link, slack


class Reassignment(BaseModel):
    approver_email: str
    delegate_email: str
    reason: str


class Withdrawal(BaseModel):
    by: str
    reason: str | None = None
