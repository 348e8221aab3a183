"""Activities of the onboarding: the plan (kickoff slot, items with due dates, renewal alerts)
and its tasks, the renewal alert tasks, a reassignment's or a cancel's task changes, and the
renewal opportunity in the CRM (everything up to the kickoff: ``activities/handoff.py``).

Each is safe to retry: a task row's id is derived from (deal, kind, key) and created once; the
CRM renewal is an upsert by a key of its own.
"""

from __future__ import annotations

import datetime as dt

import httpx
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from db import handoff as handoff_db
from dealflow.faults import CrashPoints
from dealflow.settings import Settings
from domain import handoff as rules
from domain.money import plain_decimal
from messages.handoff import (
    CRM_REJECTED,
    CancelTasksInput,
    MessageInput,
    MoveItemsInput,
    PlanInput,
    PlannedItem,
    PlanResult,
    RenewalInput,
    TaskUpdate,
)


class OnboardingActivities:
    """The plan, its tasks, the renewal. Built once in worker.py; tests build it the same way."""

    def __init__(
        self, *, settings: Settings, sessions: async_sessionmaker, crash_points: CrashPoints
    ) -> None:
        self._settings = settings
        self._sessions = sessions
        self._crash = crash_points

    @activity.defn
    async def plan_onboarding(self, input: PlanInput) -> PlanResult:
        """Kickoff slot, plan items (rows in handoff_tasks) with due dates, renewal alerts."""
        self._crash.failures.check("plan_onboarding", input.deal_id)
        cfg = rules.OnboardingConfig.load(self._settings.onboarding_config_path)
        support = rules.CustomerSuccess.load(self._settings.org_directory_path).support_team
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
            managers = await handoff_db.managers(session)
            for spec in cfg.plans.get(input.segment) or next(iter(cfg.plans.values())):
                owner = {
                    "csm": input.csm_email,
                    "rep": input.rep_email,
                    "support": support,
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
            await handoff_db.record_task_progress(
                session,
                input.task_id,
                reminded_at=input.reminded_at,
                escalated_to=input.escalated_to,
                status=input.status,
            )

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
            return await handoff_db.move_open_tasks(
                session, deal_id=input.deal_id, from_email=input.from_email, to_email=input.to_email
            )

    @activity.defn
    async def cancel_tasks(self, input: CancelTasksInput) -> list[str]:
        """A cancelled handoff closes every open task of the deal (items, renewal alerts, the CS
        lead's assignment task): ``cancelled`` in ``GET /v1/tasks``. Repeating changes nothing."""
        self._crash.failures.check("cancel_tasks", input.deal_id)
        async with self._sessions.begin() as session:
            return await handoff_db.cancel_open_tasks(
                session, deal_id=input.deal_id, reason=input.reason
            )

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
                f"CRM refused the renewal: {resp.status_code}", type=CRM_REJECTED,
                non_retryable=True,
            )  # fmt: skip
        resp.raise_for_status()
        crm_id = str(resp.json()["results"][0]["id"])
        self._crash.checkpoint("handoff.after_crm_renewal")
        return crm_id
