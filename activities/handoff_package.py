"""Activities of the handoff's first stretch: the package, the CSM, the won-deal learning
event and the mirror row (messages: ``activities/handoff.py``; the plan and the renewal:
``activities/onboarding.py``).

Each is safe to retry: what it writes is keyed by the deal (the mirror row, the learning event,
the CS lead's task), so a second run finds the first one's rows.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from db import deals as deals_db
from db import handoff as handoff_db
from db.models import Deal
from dealflow.faults import CrashPoints
from dealflow.settings import Settings
from domain import handoff as rules
from domain.approval_policy import load_policy, to_reference
from domain.money import plain_decimal
from messages.handoff import (
    DEAL_NOT_FOUND,
    NOT_A_CSM,
    AssignInput,
    AssignResult,
    Contact,
    CsmChoiceOut,
    LearningInput,
    LoadPackageInput,
    MirrorInput,
    PackageResult,
)


class HandoffPackageActivities:
    """Package, CSM, learning, mirror. Built once in worker.py; tests build it the same way."""

    def __init__(
        self, *, settings: Settings, sessions: async_sessionmaker, crash_points: CrashPoints
    ) -> None:
        self._settings = settings
        self._sessions = sessions
        self._crash = crash_points

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
    async def assign_csm(self, input: AssignInput) -> AssignResult:
        """Match (or, on reassignment, check) the CSM; nobody fits: a task for the CS lead."""
        self._crash.failures.check("assign_csm", input.deal_id)
        lead = rules.CustomerSuccess.load(self._settings.org_directory_path).lead
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
    async def record_won(self, input: LearningInput) -> None:
        self._crash.failures.check("record_won", input.deal_id)
        async with self._sessions.begin() as session:
            deal = await deals_db.get_deal(session, deal_id=input.deal_id)
            if deal is not None:
                await handoff_db.record_learning(session, deal, kind="won", at=input.at)

    @activity.defn
    async def mirror(self, input: MirrorInput) -> None:
        self._crash.failures.check("mirror", input.deal_id)
        values = input.model_dump(exclude={"deal_id"}, exclude_none=True)
        values["status_reason"] = input.status_reason  # cleared when the handoff goes on
        async with self._sessions.begin() as session:
            await handoff_db.upsert_handoff(session, input.deal_id, **values)
