"""Activities of the approval chain: the directory, Slack, email, signed links, the audit trail.

Every delivery is keyed by (step, recipient, channel, purpose) in ``approval_deliveries`` and
goes out at most once. Neither Slack's chat.postMessage nor SMTP has an idempotency key, so a
worker killed after the hand-over and before our ``sent`` row cannot know whether the message
left; resending would give the approver a second copy (seen under SIGKILL: one Message-ID three
times). The protocol, the campaign send path's (activities/campaigns.py, ``handing_over``):

1. Everything that can fail without a side effect happens first: the link token, the rendering,
   the Slack user lookup, for email the SMTP connection up to an accepted RCPT TO.
2. The hand-over mark: the row is set to ``sending`` and committed immediately before the
   post (for email in the SMTP thread right before DATA), and only if no attempt took it
   already (a conditional upsert; an attempt that finds it taken sends nothing).
3. The post / DATA, then the row is set to ``sent`` (audited ``approval.delivered``).
4. A failure that proves nothing left (Slack answered an error, the connection was refused,
   SMTP refused or deferred the message) sets the row to ``failed``: the retry sends.
   A failure that proves nothing (a timeout, a connection lost mid-transfer) leaves ``sending``.
5. A retry that finds ``sending`` records ``unconfirmed`` (audited
   ``approval.delivery_unconfirmed``) and sends nothing: at most once, never twice.

A delivery that truly never left (a worker killed in the milliseconds between the mark and the
request) is covered by the chain's reminder and escalation timers, which send under their own
purpose, and by the approval page and the deal read, which show the pending request.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import statistics
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from db import approvals as approvals_db
from db.audit import append_audit
from db.org import get_person
from dealflow.faults import CrashPoints
from dealflow.holds import HoldPoints
from dealflow.ids import approval_delivery_key
from dealflow.links import make_token
from dealflow.settings import Settings
from domain.money import format_pct
from integrations.slack import SLACK_NOT_TAKEN, HandOverTaken, Slack
from integrations.smtp import Mailer, SmtpRejected, SmtpTransient
from messages.approval import (
    ApproverStats,
    DecisionStats,
    DecisionStatsInput,
    DeliverInput,
    NotifyInput,
    OpenRequestInput,
    PersonInfo,
    RecordDecisionInput,
    RequestEventInput,
    ResolvePersonInput,
    WithdrawInput,
)

log = logging.getLogger(__name__)

UNKNOWN_PERSON = "UnknownPerson"

# Failures that prove the message was not taken: the row goes back to ``failed``, a retry sends.
NOT_TAKEN = (*SLACK_NOT_TAKEN, SmtpRejected, SmtpTransient)


class Delivery:
    """One row of ``approval_deliveries`` (the ledger ``Slack.dm_once`` and the email path use).

    Each call is its own transaction, committed at once: the hand-over mark must be durable
    before the message is handed over.
    """

    def __init__(
        self, sessions: async_sessionmaker, step_id: str, recipient: str, channel: str, purpose: str
    ) -> None:
        self._sessions = sessions
        self._key = {
            "step_id": step_id,
            "recipient": recipient,
            "channel": channel,
            "purpose": purpose,
        }

    async def may_send(self) -> bool:
        async with self._sessions.begin() as session:
            return await approvals_db.delivery_may_send(session, **self._key)

    async def hand_over(self, external_ref: str | None = None) -> None:
        async with self._sessions.begin() as session:
            taken = await approvals_db.take_hand_over(
                session, **self._key, external_ref=external_ref
            )
        if not taken:
            k = self._key
            raise HandOverTaken(f"{k['channel']} {k['step_id']}/{k['recipient']}/{k['purpose']}")

    async def mark(
        self, status: str, external_ref: str | None = None, slack_channel: str | None = None
    ) -> None:
        async with self._sessions.begin() as session:
            await approvals_db.mark_delivery(
                session,
                **self._key,
                status=status,
                external_ref=external_ref,
                slack_channel=slack_channel,
            )


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
        slack: Slack,
        mailer: Mailer,
        crash_points: CrashPoints,
    ) -> None:
        self._settings = settings
        self._sessions = sessions
        self._slack = slack
        self._mailer = mailer
        self._crash = crash_points
        self._holds = HoldPoints(settings.state_dir, enabled=settings.is_sandbox)
        self._templates = Environment(
            loader=FileSystemLoader(settings.templates_dir),
            undefined=StrictUndefined,
            # HTML templates escape; text and JSON templates do not (JSON uses |tojson).
            autoescape=select_autoescape(enabled_extensions=("html.j2",), default=False),
        )
        # Percentages as text, never "1E+1%" (the summary's discount may be a normalized string).
        self._templates.filters["pct"] = format_pct

    # --- the directory ----------------------------------------------------------------------

    @activity.defn
    async def resolve_person(self, input: ResolvePersonInput) -> PersonInfo:
        """The person as the org directory has them now (timezone, backup, out of office)."""
        self._crash.failures.check("resolve_person", input.deal_id or input.email)
        async with self._sessions() as session:
            person = await get_person(session, email=input.email)
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
            rows = await approvals_db.decision_times(session, emails=input.emails)
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
        await self._holds.wait("open_request", input.deal_id)  # tests pin races here
        step = input.step
        async with self._sessions.begin() as session:
            await approvals_db.insert_request(
                session,
                deal_id=input.deal_id,
                quote_version=input.quote_version,
                workflow_id=input.workflow_id,
                step=step,
            )
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
            await approvals_db.mirror_request(session, step=step)
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
            await approvals_db.record_decision(session, step=step)
            await approvals_db.revoke_links(session, step_id=step_id, at=step.decided_at)
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
            await approvals_db.withdraw_pending(session, step_id=step_id, reason=input.reason)
            await approvals_db.revoke_links(session, step_id=step_id, at=input.at)
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
        delivery = Delivery(self._sessions, input.key, input.recipient_email, "slack", "notify")
        await self._slack.dm_once(
            delivery,
            input.recipient_email,
            input.text,
            after_post=lambda: self._crash.checkpoint("notify.after_post"),
        )

    async def _deliver_slack(
        self, step_id: str, recipient: str, purpose: str, context: dict[str, Any]
    ) -> None:
        blocks = json.loads(
            self._templates.get_template("slack/approval_request.json.j2").render(**context)
        )
        text = f"Approval needed: {context['summary'].name}"
        delivery = Delivery(self._sessions, step_id, recipient, "slack", purpose)
        posted = await self._slack.dm_once(
            delivery,
            recipient,
            text,
            blocks=blocks,
            # The worst moment to die: Slack has the post, our row does not say so yet.
            after_post=lambda: self._crash.checkpoint("deliver.after_slack_post"),
        )
        if posted:
            self._crash.checkpoint("deliver.after_slack")

    async def _deliver_email(
        self, step_id: str, recipient: str, purpose: str, context: dict[str, Any]
    ) -> None:
        delivery = Delivery(self._sessions, step_id, recipient, "email", purpose)
        if not await delivery.may_send():
            return
        message_id = (
            f"<approval.{approval_delivery_key(step_id, recipient, purpose)}@dealflow.example>"
        )
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
        loop = asyncio.get_running_loop()

        def handing_over() -> None:  # in the SMTP thread, after RCPT TO, right before DATA
            asyncio.run_coroutine_threadsafe(delivery.hand_over(message_id), loop).result(
                timeout=30
            )

        try:
            await self._mailer.send(msg, before_data=handing_over)
        except HandOverTaken:
            return
        except NOT_TAKEN:
            await delivery.mark("failed", message_id)
            raise
        # The worst moment to die: the server has the message, our row does not say so yet.
        self._crash.checkpoint("deliver.after_email_data")
        await delivery.mark("sent", message_id)

    async def _link_token(
        self, step_id: str, recipient: str, purpose: str, ttl_hours: float
    ) -> str:
        """One token per (step, recipient, purpose): a retried delivery reuses it."""
        token_id = approval_delivery_key(step_id, recipient, purpose)
        async with self._sessions.begin() as session:
            expires_at = await approvals_db.link_expiry(
                session,
                token_id=token_id,
                step_id=step_id,
                recipient=recipient,
                expires=dt.datetime.now(dt.UTC) + dt.timedelta(hours=ttl_hours),
            )
            expires_unix = int(expires_at.timestamp())
        return make_token(self._settings.secret("link_signing_key"), token_id, expires_unix)

    async def _show_outcome(self, step_id: str, text: str) -> None:
        """Replace the buttons of every Slack message about this step with the outcome."""
        async with self._sessions() as session:
            rows = await approvals_db.sent_slack_messages(session, step_id=step_id)
        for channel, ts in rows:
            blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": f"*{text}*"}}]
            await self._slack.update(channel, ts, text, blocks)
