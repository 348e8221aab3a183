"""Activities of the deal closure: the database, pricing, rendering and the approval plan.

Each activity is safe to retry. Rows are keyed by what the workflow decided (deal id + quote
version, or a key it made), so a retry after a crash finds the work already done and returns it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Awaitable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from db import deals as deals_db
from db.audit import append_audit
from db.org import OrgDirectory
from dealflow.faults import CrashPoints
from dealflow.holds import HoldPoints
from dealflow.ids import document_id
from dealflow.render_pool import RenderPool
from dealflow.rendering import contract_context
from dealflow.settings import Settings
from domain.approval_inputs import inputs_sha256
from domain.approval_policy import known_currencies, load_policy, plan_approvals
from domain.documents import select_documents
from domain.models import DealTerms, DocumentChoice, Quote
from domain.pricing import price_quote, verify_quote
from domain.tax import load_tax_table
from domain.validation import validate_deal
from messages.approval import PlannedRequest
from messages.closure import (
    LoadDealInput,
    LoadDealResult,
    PlanApprovalsInput,
    PlanApprovalsResult,
    PricedQuote,
    PriceQuoteInput,
    RecordStageInput,
    RenderDocumentsInput,
    RenderDocumentsResult,
)
from messages.signature import DocumentRef

log = logging.getLogger(__name__)

T = TypeVar("T")

# ApplicationError types the workflow matches on.
DEAL_NOT_FOUND = "DealNotFound"
QUOTE_VERIFICATION_FAILED = "QuoteVerificationFailed"
NO_APPROVER_FOR_ROLE = "NoApproverForRole"


def terms_sha256(terms: DealTerms) -> str:
    return hashlib.sha256(terms.model_dump_json().encode()).hexdigest()


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def renders_this_attempt(at_most: int | None, attempt: int) -> int | None:
    """How many documents an attempt of ``render_documents`` renders: as asked the first time,
    one after an attempt was lost (its worker died or missed its heartbeat). Each stored document
    stays stored, so the smallest step is the one most likely to finish before the next loss,
    and every attempt that finishes one makes progress: a retried call returns after one
    document with the rest ``remaining``, and the closure's next call has a budget of its own.
    (Measured in the chaos test, a worker killed every 3-6 s: two documents took 2.7 s median
    beside a starting worker and 14 of 20 calls were retried; the budget counts attempts, so
    steps that long could spend it without ever storing a document.)"""
    return 1 if attempt > 1 else at_most


class DealActivities:
    """Built once in worker.py with its collaborators; tests build it the same way."""

    def __init__(
        self,
        *,
        settings: Settings,
        sessions: async_sessionmaker,
        renderer: RenderPool,
        crash_points: CrashPoints,
    ) -> None:
        self._settings = settings
        self._sessions = sessions
        self._renderer = renderer
        self._crash = crash_points
        self._holds = HoldPoints(settings.state_dir, enabled=settings.is_sandbox)

    @activity.defn
    async def load_deal(self, input: LoadDealInput) -> LoadDealResult:
        """Read the deal and check it can be priced; problems are data, not failures."""
        self._crash.failures.check("load_deal", input.deal_id)
        async with self._sessions() as session:
            deal = await deals_db.get_deal(session, deal_id=input.deal_id)
            if deal is None:
                raise ApplicationError(
                    f"deal {input.deal_id} does not exist", type=DEAL_NOT_FOUND, non_retryable=True
                )
            terms = deals_db.deal_terms(deal)
            revision, close_by, external_id = deal.revision, deal.close_by, deal.external_id
        policy = load_policy(self._settings.approval_policy_path)
        problems = validate_deal(terms, known_currencies=known_currencies(policy))
        return LoadDealResult(
            revision=revision,
            terms=terms,
            problems=tuple(problems),
            close_by=close_by,
            external_id=external_id,
        )

    @activity.defn
    async def price_quote(self, input: PriceQuoteInput) -> PricedQuote:
        """Price the terms the workflow loaded and store them as quote version N (once)."""
        self._crash.failures.check("price_quote", input.deal_id)
        async with self._sessions.begin() as session:
            existing = await deals_db.get_quote_version(
                session, deal_id=input.deal_id, version=input.version
            )
            if existing is not None:
                return PricedQuote(
                    version=existing.version,
                    quote=Quote.model_validate(existing.quote),
                    terms_sha256=existing.terms_sha256,
                    tax_table_version=existing.tax_table_version,
                )
            table = load_tax_table(self._settings.tax_table_path)
            quote = price_quote(input.terms, table)
            # Arithmetic is re-checked independently before anything is stored or sent.
            problems = verify_quote(quote)
            if problems:
                raise ApplicationError(
                    "quote failed its own arithmetic check: " + "; ".join(problems),
                    type=QUOTE_VERIFICATION_FAILED,
                    non_retryable=True,
                )
            digest = terms_sha256(input.terms)
            await deals_db.insert_quote_version(
                session,
                deal_id=input.deal_id,
                version=input.version,
                deal_revision=input.revision,
                terms=json.loads(input.terms.model_dump_json()),
                terms_sha256=digest,
                quote=json.loads(quote.model_dump_json()),
                currency=quote.currency,
                subtotal=quote.subtotal,
                discount=quote.discount,
                tax=quote.tax.amount,
                total=quote.total,
                tax_table_version=table.version,
            )
        self._crash.checkpoint("price_quote.after_store")
        return PricedQuote(
            version=input.version, quote=quote, terms_sha256=digest, tax_table_version=table.version
        )

    @activity.defn
    async def render_documents(self, input: RenderDocumentsInput) -> RenderDocumentsResult:
        """Render the contract package of a quote version to HTML and PDF and store each once.

        The documents render side by side in the worker's renderer processes (RenderPool); one
        already stored (a retry after a crash) is not rendered again.
        """
        self._crash.failures.check("render_documents", input.deal_id)
        async with self._sessions() as session:
            qv = await deals_db.get_quote_version(
                session, deal_id=input.deal_id, version=input.version
            )
            if qv is None:
                raise ApplicationError(
                    f"quote version {input.version} of {input.deal_id} is not stored",
                    type=DEAL_NOT_FOUND,
                    non_retryable=True,
                )
            existing = {
                d.kind: d
                for d in await deals_db.list_documents(
                    session, deal_id=input.deal_id, version=input.version
                )
            }
            terms = DealTerms.model_validate(qv.terms)
            quote = Quote.model_validate(qv.quote)
            created = qv.created_at
        policy = load_policy(self._settings.approval_policy_path)
        choices = select_documents(terms, quote, policy)
        context = contract_context(
            deal=terms,
            quote=quote,
            version=input.version,
            seller={"name": self._settings.seller_name, "address": self._settings.seller_address},
            generated_at=created,
            choices=choices,
        )
        missing = [c for c in choices if c.kind not in existing]
        left = len(missing)
        at_most = renders_this_attempt(input.at_most, activity.info().attempt)
        if at_most is not None:
            missing = missing[:at_most]
        left -= len(missing)
        # Heartbeat while the renders run: a PDF may take longer than the heartbeat timeout when
        # many deals render at once; without a beat the attempt would time out and start over.
        stored = {
            c.kind: asyncio.ensure_future(
                self._render_and_store(input, c, context, terms.account.name, created)
            )
            for c in missing
        }
        try:
            await _beating(
                f"rendering {', '.join(stored)}" if stored else "stored",
                asyncio.gather(*stored.values()),
            )
        finally:
            for task in stored.values():  # one failed (its error is the activity's): stop the rest
                task.cancel()
        refs = tuple(
            DocumentRef(
                id=document_id(input.deal_id, c.kind, input.version),
                kind=c.kind,
                version=input.version,
                sha256=stored[c.kind].result() if c.kind in stored else existing[c.kind].sha256,
                template=c.template,
                reason=c.reason,
            )
            for c in choices
            if c.kind in stored or c.kind in existing
        )
        self._crash.checkpoint("render_documents.after_store")
        return RenderDocumentsResult(documents=refs, remaining=left)

    async def _render_and_store(
        self,
        input: RenderDocumentsInput,
        choice: DocumentChoice,
        context: Mapping[str, Any],
        customer: str,
        created: datetime,
    ) -> str:
        """Render one document, write its files, record its row (once); its PDF's sha256."""
        title = f"{choice.kind.replace('_', ' ').title()} — {customer}"
        rendered = await self._renderer.render(
            choice.template, context, title=title, created=created
        )
        # Tests: a render that lasts as long as the test holds it (longer than the heartbeat).
        await self._holds.wait("render_documents", input.deal_id)
        rel = Path(input.deal_id) / f"v{input.version}"
        pdf_ref, html_ref = rel / f"{choice.kind}.pdf", rel / f"{choice.kind}.html"
        _write_atomically(self._settings.document_dir / pdf_ref, rendered.pdf)
        _write_atomically(self._settings.document_dir / html_ref, rendered.html.encode("utf-8"))
        async with self._sessions.begin() as session:
            await deals_db.insert_document(
                session,
                id=document_id(input.deal_id, choice.kind, input.version),
                deal_id=input.deal_id,
                kind=choice.kind,
                version=input.version,
                template=choice.template,
                reason=choice.reason,
                sha256=rendered.pdf_sha256,
                size_bytes=len(rendered.pdf),
                storage_ref=str(pdf_ref),
                html_sha256=rendered.html_sha256,
                html_storage_ref=str(html_ref),
            )
        return rendered.pdf_sha256

    @activity.defn
    async def plan_approvals(self, input: PlanApprovalsInput) -> PlanApprovalsResult:
        """Work out who must approve this quote version and why; store the plan with it."""
        self._crash.failures.check("plan_approvals", input.deal_id)
        policy = load_policy(self._settings.approval_policy_path)
        org = OrgDirectory.load(self._settings.org_directory_path)
        async with self._sessions.begin() as session:
            qv = await deals_db.get_quote_version(
                session, deal_id=input.deal_id, version=input.version
            )
            if qv is None:
                raise ApplicationError(
                    f"quote version {input.version} of {input.deal_id} is not stored",
                    type=DEAL_NOT_FOUND,
                    non_retryable=True,
                )
            terms, quote = DealTerms.model_validate(qv.terms), Quote.model_validate(qv.quote)
            plan = plan_approvals(terms, quote, policy)
            assignees: dict[str, str] = {}
            requests: list[PlannedRequest] = []
            for stage in plan.stages:
                for approval in stage.approvals:
                    email = org.approver_of.get(approval.role)
                    if email is None:
                        raise ApplicationError(
                            f"the org directory names nobody for approval role {approval.role!r}",
                            type=NO_APPROVER_FOR_ROLE,
                            non_retryable=True,
                        )
                    assignees[approval.role] = email
                    role = policy.roles[approval.role]
                    requests.append(
                        PlannedRequest(
                            stage=stage.index,
                            role=approval.role,
                            role_label=role.label,
                            approver_email=email,
                            reason=" ".join(approval.reasons),
                            inputs_sha256=inputs_sha256(role.reviews, terms, quote),
                            sla_hours=float(role.sla_hours),
                            sla_business_hours=role.sla_business_hours,
                            reminder_at=float(role.reminder_at),
                            expected_hours=float(role.expected_hours),
                        )
                    )
            qv.approval_plan = {
                "plan": json.loads(plan.model_dump_json()),
                "assignees": assignees,
            }
        return PlanApprovalsResult(
            plan=plan,
            assignees=assignees,
            requests=requests,
            escalation_levels=policy.approvals.escalation_levels,
            link_ttl_hours=float(policy.approvals.link_ttl_hours),
            min_history=policy.approvals.min_history,
        )

    @activity.defn
    async def record_stage(self, input: RecordStageInput) -> None:
        """Mirror the stage onto the deal row and write it to the audit trail (once per key)."""
        self._crash.failures.check("record_stage", input.deal_id)
        # Tests: a stage held while it is being recorded (a cancel arriving just then).
        await self._holds.wait("record_stage", f"{input.deal_id}/{input.stage}")
        async with self._sessions.begin() as session:
            await deals_db.set_stage(session, deal_id=input.deal_id, stage=input.stage)
            await append_audit(
                session,
                deal_id=input.deal_id,
                actor="workflow",
                channel="workflow",
                event=f"stage.{input.stage}",
                detail={"reason": input.reason} if input.reason else {},
                at=input.at,
                idempotency_key=input.idempotency_key,
            )


class NoopActivities:
    """The benchmark baseline: a round trip through Temporal that does nothing."""

    @activity.defn
    async def noop(self) -> None:
        return None


# Without a heartbeat timeout on the activity (none is set): beat this often anyway.
DEFAULT_BEAT_SECONDS = 5.0


async def _beating(detail: str, work: Awaitable[T]) -> T:
    """Await ``work``, heartbeating ``detail`` every third of the heartbeat timeout meanwhile."""
    timeout = activity.info().heartbeat_timeout
    every = timeout.total_seconds() / 3 if timeout else DEFAULT_BEAT_SECONDS
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=every)
            if done:
                return task.result()
            activity.heartbeat(detail)
    finally:
        # Cancelled meanwhile (the activity was): the render thread finishes on its own.
        task.cancel()
