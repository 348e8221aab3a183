"""Activities of the handoff up to the kickoff: the start, the package, the win post and the
won-deal learning event, the CSM, the package mails, the kickoff invite, the mirror row (the
plan, its tasks and the renewal: ``activities/onboarding.py``).

Each is safe to retry: rows are keyed by what they are (the deal, a task key, a delivery key).

Every outbound message goes out at most once, by the approval deliveries' protocol
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
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from icalendar import Calendar, Event, vCalAddress, vText
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio import activity
from temporalio.client import WorkflowHandle
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError

from activities.approvals import NOT_TAKEN
from db import deals as deals_db
from db import handoff as handoff_db
from db.models import Deal
from dealflow.faults import CrashPoints
from dealflow.ids import (
    HANDOFF_WORKFLOW,
    SA_CUSTOMER,
    SA_DEAL_ID,
    SA_DEAL_STAGE,
    SA_HANDOFF_STATUS,
    SA_OWNER_EMAIL,
    handoff_message_id,
    handoff_workflow_id,
    kickoff_message_id,
)
from dealflow.settings import Settings
from domain import handoff as rules
from domain.approval_policy import load_policy, to_reference
from domain.money import plain_decimal
from integrations.slack import HandOverTaken
from integrations.smtp import Mailer
from messages.handoff import (
    DEAL_NOT_FOUND,
    NOT_A_CSM,
    AssignInput,
    AssignResult,
    Contact,
    CsmChoiceOut,
    HandoffInput,
    HandoffTiming,
    KickoffInput,
    LearningInput,
    LoadPackageInput,
    MessageInput,
    MirrorInput,
    PackageResult,
    StartHandoffInput,
    WinInput,
)

log = logging.getLogger(__name__)


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

    def _cs(self) -> rules.CustomerSuccess:
        """Read per call: an edit to org.toml applies to the next message."""
        return rules.CustomerSuccess.load(self._settings.org_directory_path)

    @activity.defn
    async def start_handoff(self, input: StartHandoffInput) -> str:
        """Start the deal's handoff workflow (the closure calls this once closed-won is
        recorded); a second start finds it running or done and changes nothing."""
        client = activity.client()
        workflow_id = handoff_workflow_id(input.deal_id)
        async with self._sessions() as session:
            deal = await deals_db.get_deal(session, deal_id=input.deal_id)
            customer = deal.account_name if deal else ""
        try:
            # By its type name: activities never import the workflows that call them.
            handle: WorkflowHandle = await client.start_workflow(
                HANDOFF_WORKFLOW,
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
        cfg = rules.OnboardingConfig.load(self._settings.onboarding_config_path)
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
    async def post_win(self, input: WinInput) -> bool:
        """The win announcement in the wins channel, once."""
        self._crash.failures.check("post_win", input.deal_id)
        if await self._sent(input.key):
            return False
        channel = self._cs().wins_channel
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
    async def assign_csm(self, input: AssignInput) -> AssignResult:
        """Match (or, on reassignment, check) the CSM; nobody fits: a task for the CS lead."""
        self._crash.failures.check("assign_csm", input.deal_id)
        lead = self._cs().lead
        async with self._sessions.begin() as session:
            people = await handoff_db.csms(session)
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
                await handoff_db.close_csm_assignment_task(session, input.deal_id, input.by)
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
                task = await handoff_db.ensure_csm_assignment_task(
                    session,
                    deal_id=input.deal_id,
                    customer=input.customer,
                    why=match.reason,
                    lead=lead,
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

    @activity.defn
    async def send_message(self, input: MessageInput) -> bool:
        """One email (the package, a part of it, a reminder, an alert) once per key."""
        self._crash.failures.check("send_message", input.deal_id)
        if await self._sent(input.key):
            return False
        text = self._templates.get_template(input.template).render(**input.context)
        cs = self._cs()
        teams = {"finance": cs.finance_team, "support": cs.support_team}
        to = [teams.get(t) or t for t in input.to]
        msg = self._mailer.build(
            to=", ".join(to),
            subject=input.subject,
            text=text,
            html=None,
            message_id=handoff_message_id(input.deal_id, input.key),
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
        local = input.start.astimezone(ZoneInfo(input.timezone))
        msg = self._mailer.build(
            to=", ".join(input.attendees),
            subject=f"Invitation: {input.customer} kickoff, {local:%a %d %b %Y %H:%M} "
            f"({input.timezone})",
            text=self._templates.get_template("handoff/kickoff.txt.j2").render(
                customer=input.customer, local=local, timezone=input.timezone
            ),
            html=None,
            message_id=kickoff_message_id(input.deal_id),
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
    async def mirror(self, input: MirrorInput) -> None:
        self._crash.failures.check("mirror", input.deal_id)
        values = input.model_dump(exclude={"deal_id"}, exclude_none=True)
        values["status_reason"] = input.status_reason  # cleared when the handoff goes on
        async with self._sessions.begin() as session:
            await handoff_db.upsert_handoff(session, input.deal_id, **values)

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
