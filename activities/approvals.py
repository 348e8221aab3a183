"""Activities of the approval chain: the directory, Slack, email, signed links, the audit trail.

Every delivery is keyed by (step, recipient, channel, purpose) in ``approval_deliveries``: a
retried activity finds the message already sent and does not send it again. The one window no
key can close is a crash between Slack accepting a post and our row recording it (Slack's API
has no idempotency key); the row is written as ``sending`` first so that case is visible.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import statistics
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from pydantic import BaseModel
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from db.audit import append_audit
from db.models import ApprovalDelivery, ApprovalLink, ApprovalRequest, Person
from dealflow.faults import CrashPoints
from dealflow.links import make_token
from dealflow.mailer import Mailer
from dealflow.settings import Settings
from domain.approval_models import ApprovalStep, DealSummary
from domain.money import format_pct

log = logging.getLogger(__name__)

UNKNOWN_PERSON = "UnknownPerson"


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


def delivery_key(step_id: str, recipient: str, purpose: str) -> str:
    return hashlib.sha256(f"{step_id}|{recipient}|{purpose}".encode()).hexdigest()[:32]


OUTCOME_TEXT = {
    "approved": "Approved",
    "rejected": "Rejected",
    "changes_requested": "Changes requested",
    "withdrawn": "Withdrawn",
}


class ApprovalActivities:
    """Built in worker.py with the Slack client and mailer injected."""

    def __init__(
        self,
        *,
        settings: Settings,
        sessions: async_sessionmaker,
        slack: AsyncWebClient,
        mailer: Mailer,
        crash_points: CrashPoints,
    ) -> None:
        self._settings = settings
        self._sessions = sessions
        self._slack = slack
        self._mailer = mailer
        self._crash = crash_points
        self._templates = Environment(
            loader=FileSystemLoader(settings.templates_dir),
            undefined=StrictUndefined,
            # HTML templates escape; text and JSON templates do not (JSON uses |tojson).
            autoescape=select_autoescape(enabled_extensions=("html.j2",), default=False),
        )
        # Percentages as text, never "1E+1%" (the summary's discount may be a normalized string).
        self._templates.filters["pct"] = format_pct
        self._slack_ids: dict[str, str] = {}

    # --- the directory ----------------------------------------------------------------------

    @activity.defn
    async def resolve_person(self, input: ResolvePersonInput) -> PersonInfo:
        """The person as the org directory has them now (timezone, backup, out of office)."""
        self._crash.failures.check("resolve_person", input.deal_id or input.email)
        async with self._sessions() as session:
            person = await session.get(Person, input.email)
        if person is None:
            raise ApplicationError(
                f"{input.email} is not in the org directory",
                type=UNKNOWN_PERSON,
                non_retryable=True,
            )
        return PersonInfo(
            email=person.email,
            name=person.name,
            title=person.title,
            timezone=person.timezone,
            slack_user_id=person.slack_user_id,
            manager_email=person.manager_email,
            backup_email=person.backup_email,
            ooo_until=person.ooo_until,
            ooo_delegate_email=person.ooo_delegate_email,
        )

    @activity.defn
    async def decision_stats(self, input: DecisionStatsInput) -> DecisionStats:
        """Median and 90th-percentile decision time per approver, from their past decisions."""
        self._crash.failures.check("decision_stats", input.deal_id or "")
        async with self._sessions() as session:
            rows = (
                await session.execute(
                    select(
                        ApprovalRequest.decided_by,
                        ApprovalRequest.requested_at,
                        ApprovalRequest.decided_at,
                    ).where(
                        ApprovalRequest.decided_by.in_(input.emails),
                        ApprovalRequest.decided_at.is_not(None),
                    )
                )
            ).all()
        hours: dict[str, list[float]] = {}
        for who, requested, decided in rows:
            hours.setdefault(who, []).append((decided - requested).total_seconds() / 3600)
        out = {}
        for who, values in hours.items():
            values.sort()
            p90 = values[min(len(values) - 1, int(round(0.9 * (len(values) - 1))))]
            out[who] = ApproverStats(
                count=len(values), median_hours=statistics.median(values), p90_hours=p90
            )
        return DecisionStats(by_email=out)

    # --- the request row and the audit trail ------------------------------------------------

    @activity.defn
    async def open_request(self, input: OpenRequestInput) -> None:
        """Write the request row (once) and audit it."""
        self._crash.failures.check("open_request", input.deal_id)
        step = input.step
        async with self._sessions.begin() as session:
            stmt = insert(ApprovalRequest).values(
                step_id=step.step_id,
                deal_id=input.deal_id,
                quote_version=input.quote_version,
                workflow_id=input.workflow_id,
                stage=step.stage,
                role=step.role,
                approver_email=step.approver_email,
                holder_email=step.holder_email,
                delegate_email=step.delegate_email,
                reason=step.reason,
                inputs_sha256=step.inputs_sha256,
                status="pending",
                requested_at=step.requested_at,
                due_at=step.due_at,
                escalation_level=0,
            )
            await session.execute(stmt.on_conflict_do_nothing())
            await append_audit(
                session,
                deal_id=input.deal_id,
                actor="workflow",
                channel="workflow",
                event="approval.requested",
                detail={
                    "step_id": step.step_id,
                    "role": step.role,
                    "approver": step.approver_email,
                    "delegate": step.delegate_email,
                    "due_at": step.due_at,
                    "reason": step.reason,
                },
                at=step.requested_at,
                idempotency_key=f"{step.step_id}/requested",
            )

    @activity.defn
    async def record_event(self, input: RequestEventInput) -> None:
        """Mirror a reminder, escalation or delegation onto the row and audit it (once)."""
        self._crash.failures.check("record_event", input.deal_id)
        step = input.step
        async with self._sessions.begin() as session:
            await session.execute(
                update(ApprovalRequest)
                .where(ApprovalRequest.step_id == step.step_id)
                .values(
                    holder_email=step.holder_email,
                    delegate_email=step.delegate_email,
                    due_at=step.due_at,
                    reminded_at=step.reminded_at,
                    escalated_to=step.escalated_to,
                    escalation_level=step.escalation_level,
                )
            )
            await append_audit(
                session,
                deal_id=input.deal_id,
                actor=input.actor,
                channel="workflow",
                event=input.event,
                detail={"step_id": step.step_id, **input.detail},
                at=input.at,
                idempotency_key=input.idempotency_key,
            )

    @activity.defn
    async def record_decision(self, input: RecordDecisionInput) -> None:
        """Store the decision, kill the step's links, audit it, and show it in Slack."""
        self._crash.failures.check("record_decision", input.deal_id)
        step = input.step
        step_id = step.step_id
        async with self._sessions.begin() as session:
            await session.execute(
                update(ApprovalRequest)
                .where(ApprovalRequest.step_id == step_id)
                .values(
                    status=step.status,
                    decided_by=step.decided_by,
                    decision=step.decision,
                    comment=step.comment,
                    decided_at=step.decided_at,
                    channel=step.channel,
                )
            )
            await self._revoke_links(session, step_id, step.decided_at)
            await append_audit(
                session,
                deal_id=input.deal_id,
                actor=step.decided_by,
                channel=step.channel,
                event="approval.decided",
                detail={
                    "step_id": step_id,
                    "decision": step.decision,
                    "comment": step.comment,
                },
                at=step.decided_at,
                idempotency_key=f"{step_id}/decided",
            )
        by = step.decided_by
        await self._show_outcome(step_id, f"{OUTCOME_TEXT[step.status]} by {by}")

    @activity.defn
    async def withdraw_request(self, input: WithdrawInput) -> None:
        """Withdraw a pending request: row, links dead, Slack messages updated, audited."""
        self._crash.failures.check("withdraw_request", input.deal_id)
        step_id = input.step.step_id
        async with self._sessions.begin() as session:
            await session.execute(
                update(ApprovalRequest)
                .where(ApprovalRequest.step_id == step_id, ApprovalRequest.status == "pending")
                .values(status="withdrawn", comment=input.reason)
            )
            await self._revoke_links(session, step_id, input.at)
            await append_audit(
                session,
                deal_id=input.deal_id,
                actor="workflow",
                channel="workflow",
                event="approval.withdrawn",
                detail={"step_id": step_id, "reason": input.reason},
                at=input.at,
                idempotency_key=f"{step_id}/withdrawn",
            )
        await self._show_outcome(step_id, f"Withdrawn: {input.reason}")

    # --- delivery ---------------------------------------------------------------------------

    @activity.defn
    async def deliver(self, input: DeliverInput) -> None:
        """Send the request (or reminder, escalation, delegation) by Slack and by email, once."""
        self._crash.failures.check("deliver", input.summary.deal_id)
        step_id = input.step.step_id
        token = await self._link_token(
            step_id, input.recipient_email, input.purpose, input.link_ttl_hours
        )
        link = f"{self._settings.public_base_url}/v1/approvals/links/{token}"
        context = {
            "step": input.step,
            "summary": input.summary,
            "role_label": input.role_label,
            "purpose": input.purpose.split(".")[0],
            "link": link,
        }
        await self._deliver_slack(step_id, input.recipient_email, input.purpose, context)
        await self._deliver_email(step_id, input.recipient_email, input.purpose, context)
        self._crash.checkpoint(f"deliver.after_send.{input.purpose.split('.')[0]}")

    @activity.defn
    async def notify(self, input: NotifyInput) -> None:
        """A Slack DM to a person (the rep), once per key."""
        self._crash.failures.check("notify", input.deal_id or input.key)
        if await self._already_sent(input.key, input.recipient_email, "slack", "notify"):
            return
        await self._mark(input.key, input.recipient_email, "slack", "notify", "sending")
        channel = await self._slack_user(input.recipient_email)
        resp = await self._slack.chat_postMessage(channel=channel, text=input.text)
        await self._mark(
            input.key, input.recipient_email, "slack", "notify", "sent", resp["ts"], resp["channel"]
        )

    async def _deliver_slack(
        self, step_id: str, recipient: str, purpose: str, context: dict[str, Any]
    ) -> None:
        if await self._already_sent(step_id, recipient, "slack", purpose):
            return
        await self._mark(step_id, recipient, "slack", purpose, "sending")
        blocks = json.loads(
            self._templates.get_template("slack/approval_request.json.j2").render(**context)
        )
        channel = await self._slack_user(recipient)
        text = f"Approval needed: {context['summary'].name}"
        resp = await self._slack.chat_postMessage(channel=channel, text=text, blocks=blocks)
        await self._mark(step_id, recipient, "slack", purpose, "sent", resp["ts"], resp["channel"])
        self._crash.checkpoint("deliver.after_slack")

    async def _deliver_email(
        self, step_id: str, recipient: str, purpose: str, context: dict[str, Any]
    ) -> None:
        if await self._already_sent(step_id, recipient, "email", purpose):
            return
        message_id = f"<approval.{delivery_key(step_id, recipient, purpose)}@dealflow.example>"
        await self._mark(step_id, recipient, "email", purpose, "sending", message_id)
        subject_prefix = {
            "request": "Approval needed",
            "reminder": "Reminder: approval needed",
            "escalation": "Escalated: approval needed",
            "delegation": "Delegated to you: approval needed",
        }
        msg = self._mailer.build(
            to=recipient,
            subject=f"{subject_prefix.get(context['purpose'], 'Approval needed')}: "
            f"{context['summary'].name}",
            text=self._templates.get_template("email/approval_request.txt.j2").render(**context),
            html=self._templates.get_template("email/approval_request.html.j2").render(**context),
            message_id=message_id,
        )
        await self._mailer.send(msg)
        await self._mark(step_id, recipient, "email", purpose, "sent", message_id)

    async def _slack_user(self, email: str) -> str:
        if email not in self._slack_ids:
            resp = await self._slack.users_lookupByEmail(email=email)
            self._slack_ids[email] = resp["user"]["id"]
        return self._slack_ids[email]

    async def _already_sent(self, step_id: str, recipient: str, channel: str, purpose: str) -> bool:
        async with self._sessions() as session:
            status = await session.scalar(
                select(ApprovalDelivery.status).where(
                    ApprovalDelivery.step_id == step_id,
                    ApprovalDelivery.recipient_email == recipient,
                    ApprovalDelivery.channel == channel,
                    ApprovalDelivery.purpose == purpose,
                )
            )
        return status == "sent"

    async def _mark(
        self,
        step_id: str,
        recipient: str,
        channel: str,
        purpose: str,
        status: str,
        external_ref: str | None = None,
        slack_channel: str | None = None,
    ) -> None:
        async with self._sessions.begin() as session:
            values = {
                "status": status,
                "external_ref": external_ref,
                "slack_channel": slack_channel,
            }
            stmt = insert(ApprovalDelivery).values(
                step_id=step_id,
                recipient_email=recipient,
                channel=channel,
                purpose=purpose,
                **values,
            )
            await session.execute(
                stmt.on_conflict_do_update(
                    index_elements=["step_id", "recipient_email", "channel", "purpose"],
                    set_=values,
                )
            )
            if status == "sent":
                await append_audit(
                    session,
                    deal_id=step_id.split(".")[0] if step_id.startswith("deal_") else None,
                    actor="workflow",
                    channel=channel,
                    event="approval.delivered" if purpose != "notify" else "notification.sent",
                    detail={
                        "step_id": step_id,
                        "to": recipient,
                        "purpose": purpose,
                        "ref": external_ref,
                    },
                    idempotency_key=f"{step_id}/{recipient}/{channel}/{purpose}/sent",
                )

    async def _link_token(
        self, step_id: str, recipient: str, purpose: str, ttl_hours: float
    ) -> str:
        """One token per (step, recipient, purpose): a retried delivery reuses it."""
        token_id = delivery_key(step_id, recipient, purpose)
        async with self._sessions.begin() as session:
            row = await session.get(ApprovalLink, token_id)
            if row is None:
                expires = dt.datetime.now(dt.UTC) + dt.timedelta(hours=ttl_hours)
                row = ApprovalLink(
                    token_id=token_id, step_id=step_id, approver_email=recipient, expires_at=expires
                )
                session.add(row)
                await session.flush()
            expires_unix = int(row.expires_at.timestamp())
        return make_token(self._settings.secret("link_signing_key"), token_id, expires_unix)

    async def _revoke_links(self, session: Any, step_id: str, at: dt.datetime) -> None:
        await session.execute(
            update(ApprovalLink)
            .where(ApprovalLink.step_id == step_id, ApprovalLink.revoked_at.is_(None))
            .values(revoked_at=at)
        )

    async def _show_outcome(self, step_id: str, text: str) -> None:
        """Replace the buttons of every Slack message about this step with the outcome."""
        async with self._sessions() as session:
            rows = (
                await session.execute(
                    select(ApprovalDelivery.slack_channel, ApprovalDelivery.external_ref).where(
                        ApprovalDelivery.step_id == step_id,
                        ApprovalDelivery.channel == "slack",
                        ApprovalDelivery.status == "sent",
                    )
                )
            ).all()
        for channel, ts in rows:
            blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": f"*{text}*"}}]
            await self._slack.chat_update(channel=channel, ts=ts, text=text, blocks=blocks)
