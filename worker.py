"""The dealflow worker: runs every workflow and activity on the ``dealflow`` task queue.

    python worker.py            # reads Settings from the environment (see README)

Activities are methods of small classes built here with their clients injected, so tests build
them the same way against the sandbox and production builds them against the real services.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client
from temporalio.worker import Worker

from activities.approvals import ApprovalActivities
from activities.campaigns import build_campaign_activities
from activities.closing import ClosingActivities, build_stripe_client
from activities.crm import HubSpotCrm
from activities.deals import DealActivities, NoopActivities
from activities.docusign import DocuSignClient, SignatureActivities
from activities.handoff import HandoffActivities
from db.engine import make_engine, make_sessionmaker
from dealflow.faults import CrashPoints, FailurePoints
from dealflow.heartbeat import PulseInterceptor
from dealflow.logging import configure_logging
from dealflow.mailer import Mailer
from dealflow.rendering import DocumentRenderer
from dealflow.settings import Settings
from dealflow.temporal import connect
from workflows.approval_chain import ApprovalChainWorkflow
from workflows.campaign import CampaignWorkflow
from workflows.deal_closure import DealClosureWorkflow
from workflows.handoff import HandoffWorkflow
from workflows.noop import NoopWorkflow
from workflows.sequence import SequenceWorkflow
from workflows.signature import SignatureWorkflow

log = logging.getLogger("dealflow.worker")

WORKFLOWS: Sequence[type] = (
    DealClosureWorkflow,
    ApprovalChainWorkflow,
    SignatureWorkflow,
    NoopWorkflow,
    CampaignWorkflow,
    SequenceWorkflow,
    HandoffWorkflow,
)


def build_activities(settings: Settings, sessions: async_sessionmaker) -> list:
    crash_points = CrashPoints(
        settings.crash_at,
        settings.state_dir,
        failures=FailurePoints(settings.state_dir, enabled=settings.is_sandbox),
    )
    deals = DealActivities(
        settings=settings,
        sessions=sessions,
        renderer=DocumentRenderer(settings.templates_dir),
        crash_points=crash_points,
    )
    approvals = ApprovalActivities(
        settings=settings,
        sessions=sessions,
        slack=AsyncWebClient(
            token=settings.secret("slack_bot_token"), base_url=settings.slack_api_url
        ),
        mailer=Mailer.from_settings(settings),  # SMTP auth and STARTTLS as for campaigns
        crash_points=crash_points,
    )
    signature = SignatureActivities(
        settings=settings,
        sessions=sessions,
        docusign=DocuSignClient(settings),
        crash_points=crash_points,
    )
    closing = ClosingActivities(
        settings=settings,
        sessions=sessions,
        crm=HubSpotCrm.from_settings(settings),
        stripe_client=build_stripe_client(settings),
        crash_points=crash_points,
    )
    handoff = HandoffActivities(
        settings=settings,
        sessions=sessions,
        mailer=Mailer.from_settings(settings),
        slack=AsyncWebClient(
            token=settings.secret("slack_bot_token"), base_url=settings.slack_api_url
        ),
        crash_points=crash_points,
    )
    noop = NoopActivities()
    return [
        deals.load_deal,
        deals.price_quote,
        deals.render_documents,
        deals.plan_approvals,
        deals.record_stage,
        approvals.resolve_person,
        approvals.decision_stats,
        approvals.open_request,
        approvals.record_event,
        approvals.record_decision,
        approvals.withdraw_request,
        approvals.deliver,
        approvals.notify,
        signature.send_envelope,
        signature.envelope_state,
        signature.resend_envelope,
        signature.void_envelope,
        signature.store_signed_documents,
        closing.mark_crm_closed_won,
        closing.create_stripe_billing,
        closing.record_revenue_and_commission,
        closing.record_payment,
        noop.noop,
        handoff.start_handoff,
        handoff.load_package,
        handoff.assign_csm,
        handoff.send_message,
        handoff.send_kickoff,
        handoff.post_win,
        handoff.record_won,
        handoff.plan_onboarding,
        handoff.update_task,
        handoff.renewal_alert_task,
        handoff.move_items,
        handoff.mirror,
        handoff.cancel_tasks,
        handoff.open_crm_renewal,
        *build_campaign_activities(settings, sessions, crash_points),
    ]


def build_worker(client: Client, settings: Settings, sessions: async_sessionmaker) -> Worker:
    return Worker(
        client,
        task_queue=settings.task_queue,
        workflows=list(WORKFLOWS),
        activities=build_activities(settings, sessions),
        # Every running activity heartbeats: a killed worker is noticed in seconds.
        interceptors=[PulseInterceptor()],
        # Rendering runs in threads via asyncio.to_thread; this executor is for any sync activity.
        activity_executor=ThreadPoolExecutor(max_workers=8),
    )


async def main() -> None:
    configure_logging()
    settings = Settings()
    engine = make_engine(settings.require_database_url())
    client = await connect(settings)
    worker = build_worker(client, settings, make_sessionmaker(engine))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info("worker polling task queue %s at %s", settings.task_queue, settings.temporal_address)
    async with worker:
        await stop.wait()
        log.info("worker shutting down")
    await engine.dispose()


if __name__ == "__main__":
    asyncio.run(main())
