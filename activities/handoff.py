"""Activities of the handoff: the package, CSM matching, messages, the plan, the CRM renewal.

Each is safe to retry: rows are keyed by what they are (the deal, a task key, a delivery key),
and every outbound message goes out at most once, by the approval deliveries' protocol
(activities/approvals.py): the ``handoff_deliveries`` row is set to ``sending`` and committed
immediately before the hand-over (the Slack post; for email right before SMTP DATA), ``sent``
after. A failure that proves nothing left (Slack's error answer, a refused connection, an SMTP
refusal) sets ``failed`` and the retry sends; a retry that finds ``sending`` cannot know whether
the message left, records it ``unconfirmed`` and never sends a second copy. A message to several
recipients takes the mark before the first one's DATA (a crash between two recipients leaves
the rest unsent, never doubled). The handoff's reminders cover a message that never left.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import tomllib
from decimal import Decimal
from typing import Any

import httpx
from icalendar import Calendar, Event, vCalAddress, vText
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from pydantic import BaseModel
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio import activity
from temporalio.client import WorkflowHandle
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError

from activities.approvals import NOT_TAKEN
from db import deals as deals_db
from db import handoff as handoff_db
from db.handoff_models import HandoffTask
from db.models import Deal, Person
from dealflow.faults import CrashPoints
from dealflow.ids import (
    SA_CUSTOMER,
    SA_DEAL_ID,
    SA_DEAL_STAGE,
    SA_HANDOFF_STATUS,
    SA_OWNER_EMAIL,
    handoff_workflow_id,
)
from dealflow.mailer import Mailer
from dealflow.settings import Settings
from domain import handoff as rules
from domain.approval_policy import load_policy, to_reference
from domain.money import plain_decimal
from integrations.slack import HandOverTaken
from workflows.parking import RetryBudget

log = logging.getLogger(__name__)

DEAL_NOT_FOUND = "HandoffDealNotFound"
NOT_A_CSM = "NotACsm"


# --- shapes ---------------------------------------------------------------------------------


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


# --- the activities -------------------------------------------------------------------------


def handoff_timing(settings: Settings) -> HandoffTiming:
    """From Settings; ``handoff_timing_override`` ("day=1,remind=0.5,renewal=2") in seconds."""
    timing = HandoffTiming(activity_timeout_seconds=settings.activity_timeout_seconds)
    if settings.handoff_timing_override:
        names = {
            "day": "business_day_seconds",
            "remind": "reminder_before_seconds",
            "renewal": "renewal_spacing_seconds",
        }
        parts = dict(p.split("=") for p in settings.handoff_timing_override.split(","))
        timing = timing.model_copy(update={names[k.strip()]: float(v) for k, v in parts.items()})
    return timing


class HandoffActivities:
    """Built once in worker.py; tests build it the same way."""

    def __init__(
        self,
        *,
        settings: Settings,
        sessions: async_sessionmaker,
        mailer: Mailer,
        slack: AsyncWebClient,
        crash_points: CrashPoints,
    ) -> None:
        self._settings = settings
        self._sessions = sessions
        self._mailer = mailer
        self._slack = slack
        self._crash = crash_points
        self._templates = Environment(
            loader=FileSystemLoader(settings.templates_dir),
            undefined=StrictUndefined,
            # Plain-text mail only (*.txt.j2); an HTML template would be escaped.
            autoescape=select_autoescape(enabled_extensions=("html.j2",), default=False),
            keep_trailing_newline=True,
        )

    # configuration, read per call: a change to the files applies to the next handoff step
    def _cs(self) -> dict[str, Any]:
        with self._settings.org_directory_path.open("rb") as fh:
            return tomllib.load(fh).get("customer_success", {})

    def _onboarding(self) -> rules.OnboardingConfig:
        return rules.OnboardingConfig.load(self._settings.onboarding_config_path)

    @activity.defn
    async def start_handoff(self, input: StartHandoffInput) -> str:
        """Start the deal's handoff workflow (the closure calls this once closed-won is
        recorded); a second start finds it running or done and changes nothing."""
        from workflows.handoff import HandoffInput, HandoffWorkflow  # the worker imports both

        client = activity.client()
        workflow_id = handoff_workflow_id(input.deal_id)
        async with self._sessions() as session:
            deal = await deals_db.get_deal(session, deal_id=input.deal_id)
            customer = deal.account_name if deal else ""
        try:
            handle: WorkflowHandle = await client.start_workflow(
                HandoffWorkflow.run,
                HandoffInput(
                    deal_id=input.deal_id,
                    owner_email=input.owner_email,
                    closure=input.closure,
                    timing=handoff_timing(self._settings),
                ),
                id=workflow_id,
                task_queue=activity.info().task_queue,
                # One handoff per won deal, ever: a retried start must not begin a second one.
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                search_attributes=TypedSearchAttributes(
                    [
                        SearchAttributePair(SA_DEAL_ID, input.deal_id),
                        SearchAttributePair(SA_CUSTOMER, customer),
                        SearchAttributePair(SA_DEAL_STAGE, "handoff"),
                        SearchAttributePair(SA_OWNER_EMAIL, input.owner_email),
                        SearchAttributePair(SA_HANDOFF_STATUS, "collecting"),
                    ]
                ),
            )
            return handle.id
        except WorkflowAlreadyStartedError:
            return workflow_id

    @activity.defn
    async def load_package(self, input: LoadPackageInput) -> PackageResult:
        """The package from the deal, its latest quote and what the rep or CSM supplied."""
        self._crash.failures.check("load_package", input.deal_id)
        cfg = self._onboarding()
        deal_id = input.deal_id
        async with self._sessions() as session:
            deal = await deals_db.get_deal(session, deal_id=deal_id)
            if deal is None:
                raise ApplicationError(
                    f"deal {deal_id} does not exist", type=DEAL_NOT_FOUND, non_retryable=True
                )
            qv = await deals_db.latest_quote_version(session, deal_id=deal_id)
            details = await handoff_db.get_details(session, deal_id)
            return self._package(deal, qv, details, cfg, input.close_date)

    def _package(
        self, deal: Deal, qv: Any, details: Any, cfg: rules.OnboardingConfig, start: dt.date
    ) -> PackageResult:
        """The term starts on the close date (the day closed-won was recorded)."""
        contacts = [
            Contact(name=s.name, email=s.email, title=s.title, role="signer") for s in deal.signers
        ]
        supplied = [Contact(**c) for c in (details.contacts if details else [])]
        contacts += supplied
        goals = list(details.success_goals if details else [])
        missing = rules.missing_fields(cfg.required, [c.model_dump() for c in contacts], goals)
        total = Decimal(qv.total) if qv else Decimal(0)
        currency = qv.currency if qv else deal.currency
        try:
            total_usd = to_reference(
                total, currency, load_policy(self._settings.approval_policy_path)
            )
        except ValueError:
            total_usd = total
        segment = rules.segment_of(deal.account_employees, total_usd)
        end = rules.term_end(start, deal.term_months)
        quote = qv.quote if qv else {}
        risks = []
        if deal.discount_pct > Decimal(20):
            risks.append(f"discount {plain_decimal(deal.discount_pct)} % is above the 20 % policy")
        for t in deal.custom_terms:
            risks.append(f"custom {t.kind} term: {t.text[:80]}")
        if deal.payment_terms_days > 45:
            risks.append(f"payment terms of {deal.payment_terms_days} days")
        package = {
            "customer": {
                "name": deal.account_name,
                "domain": deal.account_domain,
                "country": deal.account_country,
                "region": deal.account_region,
                "employees": deal.account_employees,
                "industry": deal.account_industry,
                "segment": segment,
            },
            "contacts": [c.model_dump() for c in contacts],
            "success_goals": goals,
            "products": [
                {
                    "sku": li.sku,
                    "description": li.description,
                    "quantity": plain_decimal(Decimal(li.quantity)),
                    "unit_price": plain_decimal(Decimal(li.unit_price), trim=False),
                }
                for li in deal.line_items
            ],
            "term": {
                "start": start.isoformat(),
                "end": end.isoformat(),
                "months": deal.term_months,
            },
            "billing": {
                "frequency": deal.billing_frequency,
                "payment_terms_days": deal.payment_terms_days,
                "total": plain_decimal(total, trim=False),
                "currency": currency,
                "schedule": quote.get("payment_schedule", []),
            },
            "custom_terms": [{"kind": t.kind, "text": t.text} for t in deal.custom_terms],
            "competitor": deal.competitor,
            "notes": "\n".join(filter(None, [deal.notes, details.notes if details else None])),
            "risks": risks,
        }
        primary = next((c for c in contacts if c.role == "primary" and c.email), None)
        return PackageResult(
            package=package,
            missing=missing,
            details_revision=details.revision if details else 0,
            customer=deal.account_name,
            segment=segment,
            region=rules.region_of(deal.account_country),
            industry=rules.industry_key(deal.account_industry),
            timezone=rules.customer_timezone(
                deal.account_country, deal.account_region, details.timezone if details else None
            ),
            holiday_country=rules.holiday_calendar(deal.account_country, deal.account_region),
            term_start=start,
            term_end=end,
            term_months=deal.term_months,
            contacts=contacts,
            primary_contact=primary,
        )

    @activity.defn
    async def assign_csm(self, input: AssignInput) -> AssignResult:
        """Match (or, on reassignment, check) the CSM; nobody fits: a task for the CS lead."""
        self._crash.failures.check("assign_csm", input.deal_id)
        cs = self._cs()
        lead = cs.get("lead")
        async with self._sessions.begin() as session:
            people = (
                await session.execute(select(Person).where(Person.roles.contains(["csm"])))
            ).scalars()
            people = list(people)
            if input.csm_email is not None:
                chosen = next((p for p in people if p.email == input.csm_email), None)
                if chosen is None:
                    raise ApplicationError(
                        f"{input.csm_email} is not a CSM", type=NOT_A_CSM, non_retryable=True
                    )
                reason = f"reassigned by {input.by}: {input.reason or 'no reason given'}"
                # The status stays what the workflow last mirrored; it mirrors again next.
                current = await handoff_db.get_handoff(session, input.deal_id)
                await handoff_db.upsert_handoff(
                    session,
                    input.deal_id,
                    status=current.status if current else "collecting",
                    csm_email=chosen.email,
                    csm_reason=reason,
                )
                await self._close_lead_task(session, input.deal_id, input.by)
                return AssignResult(
                    csm_email=chosen.email, reason=reason, manager_email=chosen.manager_email
                )
            load = await handoff_db.open_handoffs_by_csm(session, except_deal=input.deal_id)
            match = rules.match_csm(
                [
                    rules.CsmCandidate(
                        email=p.email,
                        specialties=frozenset(s.lower() for s in p.specialties or []),
                        capacity=p.capacity,
                        open_handoffs=load.get(p.email, 0),
                    )
                    for p in people
                ],
                segment=input.segment,
                region=input.region,
                industry=input.industry,
            )
            alternatives = [
                CsmChoiceOut(email=c.email, reason=c.reason) for c in match.alternatives
            ]
            if match.chosen is None:
                task = await handoff_db.ensure_task(
                    session,
                    deal_id=input.deal_id,
                    kind="csm_assignment",
                    item_key="csm",
                    title=f"Assign a CSM to {input.customer}",
                    detail=match.reason,
                    owner_email=lead,
                    due_at=None,
                )
                await handoff_db.upsert_handoff(session, input.deal_id, status="needs_attention")
                return AssignResult(
                    csm_email=None,
                    reason=match.reason,
                    alternatives=alternatives,
                    lead_task_id=task.id,
                )
            manager = next(p.manager_email for p in people if p.email == match.chosen.email)
            await handoff_db.upsert_handoff(
                session, input.deal_id, status="collecting", csm_email=match.chosen.email,
                csm_reason=match.chosen.reason,
            )  # fmt: skip
            return AssignResult(
                csm_email=match.chosen.email,
                reason=match.chosen.reason,
                alternatives=alternatives,
                manager_email=manager,
            )

    async def _close_lead_task(self, session: Any, deal_id: str, by: str | None) -> None:
        task = await handoff_db.lock_task(
            session, handoff_db.task_id(deal_id, "csm_assignment", "csm")
        )
        if task is not None and task.status == "open":
            task.status, task.done_at, task.done_by = "done", dt.datetime.now(dt.UTC), by

    @activity.defn
    async def send_message(self, input: MessageInput) -> bool:
        """One email (the package, a part of it, a reminder, an alert) once per key."""
        self._crash.failures.check("send_message", input.deal_id)
        if await self._sent(input.key):
            return False
        text = self._templates.get_template(input.template).render(**input.context)
        cs = self._cs()
        teams = {"finance": cs.get("finance_team"), "support": cs.get("support_team")}
        to = [teams.get(t) or t for t in input.to]
        msg = self._mailer.build(
            to=", ".join(to),
            subject=input.subject,
            text=text,
            html=None,
            message_id=f"<handoff.{handoff_db.task_id(input.deal_id, 'mail', input.key)[4:]}"
            "@dealflow.example>",
        )
        if not await self._email_once(input.key, input.deal_id, ",".join(input.to), msg):
            return False
        await self._mark(input, "email", "sent", msg["Message-ID"])
        return True

    @activity.defn
    async def send_kickoff(self, input: KickoffInput) -> bool:
        """The kickoff invite: an iCalendar REQUEST (RFC 5546) to every attendee, once."""
        self._crash.failures.check("send_kickoff", input.deal_id)
        if await self._sent(input.key):
            return False
        cal = Calendar()
        cal.add("prodid", "-//dealflow//handoff//EN")
        cal.add("version", "2.0")
        cal.add("method", "REQUEST")
        event = Event()
        event.add("uid", f"kickoff-{input.deal_id}@dealflow.example")
        event.add("summary", f"Kickoff: {input.customer} and dealflow")
        event.add("dtstart", input.start)
        event.add("dtend", input.end)
        event.add("dtstamp", activity.info().started_time.replace(microsecond=0))
        event.add("sequence", 0)
        event.add("description", f"Onboarding kickoff (customer time zone {input.timezone}).")
        organizer = vCalAddress(f"mailto:{input.organizer_email}")
        organizer.params["cn"] = vText("dealflow Customer Success")
        event["organizer"] = organizer
        for email in input.attendees:
            attendee = vCalAddress(f"mailto:{email}")
            attendee.params["role"] = vText("REQ-PARTICIPANT")
            attendee.params["partstat"] = vText("NEEDS-ACTION")
            attendee.params["rsvp"] = vText("TRUE")
            event.add("attendee", attendee, encode=0)
        cal.add_component(event)
        ics = cal.to_ical().decode()
        local = input.start.astimezone(_zone(input.timezone))
        msg = self._mailer.build(
            to=", ".join(input.attendees),
            subject=f"Invitation: {input.customer} kickoff, {local:%a %d %b %Y %H:%M} "
            f"({input.timezone})",
            text=self._templates.get_template("handoff/kickoff.txt.j2").render(
                customer=input.customer, local=local, timezone=input.timezone
            ),
            html=None,
            message_id=f"<kickoff.{input.deal_id}@dealflow.example>",
        )
        msg.add_alternative(ics, subtype="calendar", params={"method": "REQUEST"})
        if not await self._email_once(input.key, input.deal_id, ",".join(input.attendees), msg):
            return False
        # The worst moment to die: the server has the invite, our row does not say so yet.
        self._crash.checkpoint("handoff.after_invite_data")
        await self._mark_raw(
            input.key, input.deal_id, "email", ",".join(input.attendees), "sent", msg["Message-ID"]
        )
        self._crash.checkpoint("handoff.after_invite")
        return True

    @activity.defn
    async def post_win(self, input: WinInput) -> bool:
        """The win announcement in the wins channel, once."""
        self._crash.failures.check("post_win", input.deal_id)
        if await self._sent(input.key):
            return False
        channel = self._cs().get("wins_channel", "#wins")
        try:
            await self._hand_over(input.key, input.deal_id, "slack", channel)
            resp = await self._slack.chat_postMessage(channel=channel, text=input.text)
        except HandOverTaken:
            return False
        except NOT_TAKEN:
            await self._mark_raw(input.key, input.deal_id, "slack", channel, "failed")
            raise
        await self._mark_raw(input.key, input.deal_id, "slack", channel, "sent", resp["ts"])
        return True

    @activity.defn
    async def record_won(self, input: LearningInput) -> None:
        self._crash.failures.check("record_won", input.deal_id)
        async with self._sessions.begin() as session:
            deal = await deals_db.get_deal(session, deal_id=input.deal_id)
            if deal is not None:
                await handoff_db.record_learning(session, deal, kind="won", at=input.at)

    @activity.defn
    async def plan_onboarding(self, input: PlanInput) -> PlanResult:
        """Kickoff slot, plan items (rows in handoff_tasks) with due dates, renewal alerts."""
        self._crash.failures.check("plan_onboarding", input.deal_id)
        cfg = self._onboarding()
        cs = self._cs()
        t = input.timing
        now = activity.info().started_time
        start, end = rules.kickoff_slot(
            input.close_date,
            tz=input.timezone,
            holiday_country=input.holiday_country,
            local=cfg.kickoff_local_time,
            minutes=cfg.kickoff_minutes,
        )
        items: list[PlannedItem] = []
        async with self._sessions.begin() as session:
            managers = {
                p.email: p.manager_email for p in (await session.execute(select(Person))).scalars()
            }
            for spec in cfg.plans.get(input.segment) or next(iter(cfg.plans.values())):
                owner = {
                    "csm": input.csm_email,
                    "rep": input.rep_email,
                    "support": cs.get("support_team"),
                    "customer": input.customer_email,
                }.get(spec.owner) or input.csm_email
                escalate = input.csm_email if spec.owner == "customer" else managers.get(owner)
                if t.business_day_seconds is not None:
                    due = now + dt.timedelta(
                        seconds=t.business_day_seconds * spec.due_business_days
                    )
                    remind = due - dt.timedelta(
                        seconds=t.reminder_before_seconds or t.business_day_seconds / 2
                    )
                else:
                    due = rules.due_at(
                        input.close_date,
                        spec.due_business_days,
                        tz=input.timezone,
                        holiday_country=input.holiday_country,
                        local=cfg.due_local_time,
                    )
                    remind_day = max(spec.due_business_days - cfg.reminder_before_business_days, 0)
                    remind = rules.due_at(
                        input.close_date,
                        remind_day,
                        tz=input.timezone,
                        holiday_country=input.holiday_country,
                        local=cfg.due_local_time,
                    ) if remind_day else due - dt.timedelta(hours=4)  # fmt: skip
                row = await handoff_db.ensure_task(
                    session,
                    deal_id=input.deal_id,
                    kind="onboarding_item",
                    item_key=spec.key,
                    title=spec.title,
                    detail=f"onboarding item ({spec.owner})",
                    owner_email=owner,
                    due_at=due,
                )
                items.append(
                    PlannedItem(
                        id=row.id,
                        key=spec.key,
                        title=row.title,
                        owner_email=row.owner_email,
                        owner_kind=spec.owner,
                        escalate_to=escalate,
                        due_at=row.due_at or due,
                        remind_at=remind,
                        status=row.status,
                    )
                )
        if t.renewal_spacing_seconds is not None:
            alerts = [
                (days, now + dt.timedelta(seconds=t.renewal_spacing_seconds * (i + 1)))
                for i, days in enumerate(sorted(cfg.renewal_alert_days, reverse=True))
            ]
        else:
            alerts = rules.renewal_alert_times(input.term_end, cfg.renewal_alert_days)
        return PlanResult(kickoff_start=start, kickoff_end=end, items=items, alerts=alerts)

    @activity.defn
    async def update_task(self, input: TaskUpdate) -> None:
        async with self._sessions.begin() as session:
            row = await handoff_db.lock_task(session, input.task_id)
            if row is None:
                return
            if input.reminded_at is not None and row.reminded_at is None:
                row.reminded_at = input.reminded_at
            if input.escalated_to is not None:
                row.escalated_to = input.escalated_to
            if input.status is not None and row.status == "open":
                row.status = input.status

    @activity.defn
    async def renewal_alert_task(self, input: MessageInput) -> str:
        """The renewal alert as a task for each recipient (the CSM and the rep)."""
        self._crash.failures.check("renewal_alert_task", input.deal_id)
        async with self._sessions.begin() as session:
            for who in input.to:
                await handoff_db.ensure_task(
                    session,
                    deal_id=input.deal_id,
                    kind="renewal_alert",
                    item_key=f"{input.key}/{who}"[:64],
                    title=input.subject,
                    detail=input.context.get("detail"),
                    owner_email=who,
                    due_at=input.context.get("term_end_at"),
                )
        return input.key

    @activity.defn
    async def move_items(self, input: MoveItemsInput) -> list[str]:
        """A reassignment moves every open item and alert of the old CSM to the new one."""
        self._crash.failures.check("move_items", input.deal_id)
        async with self._sessions.begin() as session:
            rows = (
                await session.execute(
                    select(HandoffTask)
                    .where(
                        HandoffTask.deal_id == input.deal_id,
                        HandoffTask.owner_email == input.from_email,
                        HandoffTask.status == "open",
                    )
                    .with_for_update()
                )
            ).scalars()
            moved = []
            for row in rows:
                row.owner_email = input.to_email
                moved.append(row.id)
            return moved

    @activity.defn
    async def cancel_tasks(self, input: CancelTasksInput) -> list[str]:
        """A cancelled handoff closes every open task of the deal (items, renewal alerts, the CS
        lead's assignment task): ``cancelled`` in ``GET /v1/tasks``. Repeating changes nothing."""
        self._crash.failures.check("cancel_tasks", input.deal_id)
        async with self._sessions.begin() as session:
            rows = (
                await session.execute(
                    select(HandoffTask)
                    .where(HandoffTask.deal_id == input.deal_id, HandoffTask.status == "open")
                    .with_for_update()
                )
            ).scalars()
            closed = []
            for row in rows:
                row.status = "cancelled"
                row.detail = f"{row.detail or ''} (cancelled: {input.reason})".strip()[:2000]
                closed.append(row.id)
            return closed

    @activity.defn
    async def mirror(self, input: MirrorInput) -> None:
        self._crash.failures.check("mirror", input.deal_id)
        values = input.model_dump(exclude={"deal_id"}, exclude_none=True)
        values["status_reason"] = input.status_reason  # cleared when the handoff goes on
        async with self._sessions.begin() as session:
            await handoff_db.upsert_handoff(session, input.deal_id, **values)

    @activity.defn
    async def open_crm_renewal(self, input: RenewalInput) -> str:
        """The renewal opportunity in the CRM, upserted by a key of its own (safe to repeat)."""
        self._crash.failures.check("open_crm_renewal", input.deal_id)
        body = {
            "inputs": [
                {
                    "idProperty": "dealflow_deal_id",
                    "id": f"{input.deal_id}-renewal",
                    "properties": {
                        "dealname": f"Renewal: {input.name}",
                        "pipeline": "default",
                        "dealstage": "appointmentscheduled",
                        "amount": plain_decimal(input.amount, trim=False),
                        "deal_currency_code": input.currency,
                        "closedate": input.term_end.isoformat(),
                    },
                }
            ]
        }
        headers = {"Authorization": f"Bearer {self._settings.secret('crm_api_token')}"}
        async with httpx.AsyncClient(
            base_url=self._settings.crm_api_url, timeout=self._settings.crm_timeout_seconds
        ) as http:
            resp = await http.post("/crm/v3/objects/deals/batch/upsert", json=body, headers=headers)
        if 400 <= resp.status_code < 500 and resp.status_code != 429:
            raise ApplicationError(
                f"CRM refused the renewal: {resp.status_code}", type="CrmRejected",
                non_retryable=True,
            )  # fmt: skip
        resp.raise_for_status()
        crm_id = str(resp.json()["results"][0]["id"])
        self._crash.checkpoint("handoff.after_crm_renewal")
        return crm_id

    # --- the delivery ledger -----------------------------------------------------------------

    async def _sent(self, key: str) -> bool:
        """True if the message went out, or may have (a hand-over left mid-way is recorded
        ``unconfirmed`` here and never resent)."""
        async with self._sessions.begin() as session:
            status = await handoff_db.settle_delivery(session, key)
        if status == "unconfirmed":
            log.warning("handoff delivery %s left mid-hand-over: unconfirmed, not resent", key)
        return status in handoff_db.HANDED_OVER

    async def _hand_over(self, key: str, deal_id: str, channel: str, recipient: str) -> None:
        async with self._sessions.begin() as session:
            taken = await handoff_db.hand_over_delivery(
                session, key, deal_id=deal_id, channel=channel, recipient=recipient[:320]
            )
        if not taken:
            raise HandOverTaken(f"handoff delivery {key}")

    async def _email_once(self, key: str, deal_id: str, recipient: str, msg: Any) -> bool:
        """Send ``msg``, the hand-over mark committed before the first DATA. False: another
        attempt holds the mark (sent, or may have)."""
        loop = asyncio.get_running_loop()
        transactions = 0  # recipients whose DATA was about to start

        def handing_over() -> None:  # in the SMTP thread, before each recipient's DATA
            nonlocal transactions
            if not transactions:
                asyncio.run_coroutine_threadsafe(
                    self._hand_over(key, deal_id, "email", recipient), loop
                ).result(timeout=30)
            transactions += 1

        try:
            await self._mailer.send(msg, before_data=handing_over)
        except HandOverTaken:
            return False
        except NOT_TAKEN:
            # Refused in the first recipient's transaction: nobody has it, a retry may send.
            # Refused for a later one: the earlier ones have it, so the mark stays (unconfirmed).
            if transactions <= 1:
                await self._mark_raw(key, deal_id, "email", recipient, "failed")
            raise
        return True

    async def _mark(self, input: MessageInput, channel: str, status: str, ref: str | None = None):
        await self._mark_raw(input.key, input.deal_id, channel, ",".join(input.to), status, ref)

    async def _mark_raw(
        self,
        key: str,
        deal_id: str,
        channel: str,
        recipient: str,
        status: str,
        ref: str | None = None,
    ) -> None:
        async with self._sessions.begin() as session:
            await handoff_db.mark_delivery(
                session, key, deal_id=deal_id, channel=channel, recipient=recipient[:320],
                status=status, ref=ref,
            )  # fmt: skip


def _zone(tz: str) -> Any:
    from zoneinfo import ZoneInfo

    return ZoneInfo(tz)
