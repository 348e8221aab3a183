"""Values shared by the approval chain workflow, its activities and the API."""

from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel


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
