"""Request and response bodies of the handoff, lost-deal and learning routes (API.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, EmailStr, Field, StringConstraints, field_validator

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]
Short = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ContactIn(_In):
    name: Short
    email: EmailStr | None = None
    title: Short | None = None
    role: Literal["primary", "billing", "technical", "executive", "other"]


class HandoffPatch(_In):
    """What ``missing`` names; any subset. Contacts replace the ones supplied before."""

    contacts: Annotated[list[ContactIn], Field(max_length=50)] | None = None
    success_goals: Annotated[list[Text], Field(max_length=20)] | None = None
    timezone: Short | None = None  # IANA name; else from the customer's country and state
    notes: Text | None = None

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (use an IANA name)") from None
        return value


class ReassignCreate(_In):
    csm_email: EmailStr
    reason: Text


class HandoffCancelCreate(_In):
    reason: Text


class HandoffRetryRead(BaseModel):
    status: Literal["retry requested"]
    step: str
    error_type: str | None
    error: str


class LostCreate(_In):
    reason: Text
    competitor: Short | None = None
    notes: Text | None = None


class HandoffRead(BaseModel):
    deal_id: str
    status: str | None
    status_reason: str | None = None
    live: bool = True
    package: dict[str, Any] | None = None
    missing: list[dict[str, str]] = []
    csm: dict[str, Any] | None = None
    kickoff: dict[str, Any] | None = None
    items: list[dict[str, Any]] = []
    renewal: dict[str, Any] | None = None
    timeline: list[dict[str, Any]] = []
    workflow_id: str | None = None
    parked: dict[str, Any] | None = Field(
        default=None,
        description="While an activity that gave up waits for POST .../retry: the step, "
        "error_type, message, since.",
    )


class HandoffItemRead(BaseModel):
    id: str
    title: str
    owner_email: str
    due_at: datetime | None
    status: str
    reminded_at: datetime | None = None
    escalated_to: str | None = None
    done_at: datetime | None = None
    done_by: str | None = None


class LostRead(BaseModel):
    id: str
    stage: str
    reason: str
    competitor: str | None = None
    withdrawn: bool = Field(description="Whether a running closure was ended (as for cancel).")


class LearningEventRead(BaseModel):
    deal_id: str
    kind: str
    at: datetime
    cycle_days: str | None
    total: str | None
    currency: str | None
    discount_pct: str | None
    competitor: str | None
    reason: str | None
    approval_hours: str | None
    signature_hours: str | None


class LearningEventList(BaseModel):
    items: list[LearningEventRead]
    next_cursor: str | None = None
