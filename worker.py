"""The dealflow worker: runs every workflow and activity on the ``dealflow`` task queue.

    python worker.py            # reads Settings from the environment (see README)

Activities are methods of small classes built here with their clients injected, so tests build
them the same way against the sandbox and production builds them against the real services.
"""

from __future__ import annotations

import asyncio
import importlib.abc
import importlib.machinery
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from types import CodeType

from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.approvals import ApprovalActivities
from activities.campaigns import CampaignActivities
from activities.closing import ClosingActivities
from activities.deals import DealActivities, NoopActivities
from activities.handoff import HandoffActivities
from activities.onboarding import OnboardingActivities
from activities.sequence import SequenceActivities
from activities.signature import SignatureActivities
from db.engine import make_engine, make_sessionmaker, sqlalchemy_url
from dealflow.faults import CrashPoints, FailurePoints
from dealflow.heartbeat import PulseInterceptor
from dealflow.logging import configure_logging
from dealflow.render_pool import RenderPool
from dealflow.settings import Settings
from dealflow.temporal import connect
from domain.campaign_email import EmailLayout
from integrations.crm import HubSpotCrm
from integrations.docusign import DocuSignClient
from integrations.slack import Slack
from integrations.smtp import Mailer
from integrations.stripe import build_stripe_client
from workflows.approval_chain import ApprovalChainWorkflow
from workflows.campaign import CampaignWorkflow
from workflows.deal_closure import DealClosureWorkflow
from workflows.handoff import HandoffWorkflow
from workflows.noop import NoopWorkflow
from workflows.noop_sequence import NoopSequenceWorkflow
from workflows.sequence import SequenceWorkflow
from workflows.signature import SignatureWorkflow

log = logging.getLogger("dealflow.worker")

WORKFLOWS: Sequence[type] = (
    DealClosureWorkflow,
    ApprovalChainWorkflow,
    SignatureWorkflow,
    NoopWorkflow,
    NoopSequenceWorkflow,
    CampaignWorkflow,
    SequenceWorkflow,
    HandoffWorkflow,
)


# How long a starting worker waits for its renderer processes before it polls anyway (a renderer
# is up in ~1.5 s on the 2-core machine, several times that under load; one that fails to start
# is retried by the first render).
RENDERERS_READY_SECONDS = 60.0

# Modules the workflow sandbox shares with the worker instead of importing them afresh for every
# workflow instance. Each is deterministic and side-effect free on import, does no I/O the
# workflows call, and holds no mutable global state a workflow reads: our message types and pure
# domain logic, and pure third-party libraries (pydantic, the stdlib and temporalio are passed
# through by default already). Left out on purpose: domain.tax, domain.approval_policy,
# domain.billing and domain.handoff (they read config files; only activities load them), db/,
# dealflow.settings and every client.
SANDBOX_PASSTHROUGH = (
    "domain.models",
    "domain.approval_inputs",
    "domain.documents",
    "domain.money",
    "domain.pricing",
    "domain.regions",
    "domain.replies",
    "domain.schedule",  # its lru_cache memoises a pure function: same answer either way
    "domain.validation",
    "domain.variants",
    "workflows.parking",  # RetryBudget and the park models: pure
    "messages",  # what workflows exchange: pure models
    "dateutil",
    "holidays",
)


class _WorkflowCodeCache(importlib.abc.MetaPathFinder):
    """Compile each workflow module's source once per worker process, not once per instance.

    The sandbox re-executes a workflow's module for every new workflow instance (that isolation
    is the point: each run gets fresh module globals and the restricted builtins). Executing it
    is cheap; compiling it is not, and with ``PYTHONDONTWRITEBYTECODE=1`` (set in the Dockerfile
    and on the dev machines) there is no ``.pyc`` to read, so every instance compiled ~700 lines
    of source: about 2/3 of ``SandboxedWorkflowRunner.create_instance`` in the campaign bench's
    profile. This finder hands the import system the same code object each time (code objects
    are immutable); a changed file (mtime or size) is compiled again. Only ``workflows.*``.
    """

    def __init__(self, package: str) -> None:
        self._package = package
        self._code: dict[tuple[str, int, int], CodeType] = {}
        self._lock = threading.Lock()

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self._package and not fullname.startswith(self._package + "."):
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is not None and type(spec.loader) is importlib.machinery.SourceFileLoader:
            spec.loader = _CachedCodeLoader(spec.loader.name, spec.loader.path, self)
        return spec

    def code_for(self, loader: _CachedCodeLoader, fullname: str) -> CodeType:
        st = os.stat(loader.path)
        key = (loader.path, st.st_mtime_ns, st.st_size)
        with self._lock:
            code = self._code.get(key)
        if code is None:
            code = importlib.machinery.SourceFileLoader.get_code(loader, fullname)
            with self._lock:
                self._code[key] = code
        return code


class _CachedCodeLoader(importlib.machinery.SourceFileLoader):
    def __init__(self, fullname: str, path: str, cache: _WorkflowCodeCache) -> None:
        super().__init__(fullname, path)
        self._cache = cache

    def get_code(self, fullname):
        return self._cache.code_for(self, fullname)


_CODE_CACHE = _WorkflowCodeCache("workflows")


def install_workflow_code_cache() -> None:
    """Idempotent: put the workflow code cache first on ``sys.meta_path``."""
    if _CODE_CACHE not in sys.meta_path:
        sys.meta_path.insert(0, _CODE_CACHE)


def workflow_runner() -> SandboxedWorkflowRunner:
    install_workflow_code_cache()
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(*SANDBOX_PASSTHROUGH)
    )


def build_activities(
    settings: Settings, sessions: async_sessionmaker, renderer: RenderPool | None = None
) -> list:
    crash_points = CrashPoints(
        settings.crash_at,
        settings.state_dir,
        failures=FailurePoints(settings.state_dir, enabled=settings.is_sandbox),
    )
    # One mailer (SMTP auth, STARTTLS and CA from the settings) for every message we send.
    mailer = Mailer.from_settings(settings)
    if renderer is None:
        renderer = RenderPool(settings.templates_dir, settings.render_processes)
        renderer.start()  # fonts loaded before the first deal needs a document
    deals = DealActivities(
        settings=settings,
        sessions=sessions,
        renderer=renderer,
        crash_points=crash_points,
    )
    slack = Slack.from_settings(settings)  # one client (and one user-id cache) for the worker
    approvals = ApprovalActivities(
        settings=settings,
        sessions=sessions,
        slack=slack,
        mailer=mailer,
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
        mailer=mailer,
        slack=slack.client,
        crash_points=crash_points,
    )
    campaigns = CampaignActivities(settings=settings, sessions=sessions, crash_points=crash_points)
    sequence = SequenceActivities(
        settings=settings,
        sessions=sessions,
        # The send's claims pool: two short transactions per send, never held across SMTP. No
        # pre-ping: a connection that died is an error the activity retries, not worth a round
        # trip each.
        claims=make_sessionmaker(
            create_async_engine(
                sqlalchemy_url(settings.require_database_url()), pool_size=8, max_overflow=8
            )
        ),
        mailer=mailer.transport,
        layout=EmailLayout(settings.templates_dir),
        slack=slack.client,
        crash_points=crash_points,
    )
    onboarding = OnboardingActivities(
        settings=settings, sessions=sessions, crash_points=crash_points
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
        handoff.mirror,
        onboarding.plan_onboarding,
        onboarding.update_task,
        onboarding.renewal_alert_task,
        onboarding.move_items,
        onboarding.cancel_tasks,
        onboarding.open_crm_renewal,
        campaigns.preflight,
        campaigns.enrol_batch,
        campaigns.broadcast_state,
        campaigns.campaign_progress,
        campaigns.check_bounce_rate,
        campaigns.finish_campaign,
        campaigns.record_attention,
        sequence.send_email,
        sequence.record_contact,
        sequence.create_task,
        sequence.complete_task,
        sequence.route_reply,
        sequence.notify_rep,
    ]


def build_worker(
    client: Client,
    settings: Settings,
    sessions: async_sessionmaker,
    renderer: RenderPool | None = None,
) -> Worker:
    return Worker(
        client,
        task_queue=settings.task_queue,
        workflows=list(WORKFLOWS),
        workflow_runner=workflow_runner(),
        max_cached_workflows=settings.workflow_cache_size,  # memory: see Settings
        activities=build_activities(settings, sessions, renderer),
        # Every running activity heartbeats: a killed worker is noticed in seconds.
        interceptors=[PulseInterceptor()],
        # Rendering runs in threads via asyncio.to_thread; this executor is for any sync activity.
        activity_executor=ThreadPoolExecutor(max_workers=8),
    )


async def main() -> None:
    configure_logging()
    settings = Settings()
    engine = make_engine(settings.require_database_url())
    # The renderers start while we connect; the worker polls once they are up (or have failed,
    # logged), so a fresh worker never takes a render it would do cold: a deploy or a restart
    # does not slow the first deals down, and a worker that dies young (killed, redeployed)
    # has not spent its short life starting renderers with a render waiting on them.
    renderer = RenderPool(settings.templates_dir, settings.render_processes)
    renderer.start()
    client = await connect(settings)
    worker = build_worker(client, settings, make_sessionmaker(engine), renderer)
    await renderer.ready(timeout=RENDERERS_READY_SECONDS)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info("worker polling task queue %s at %s", settings.task_queue, settings.temporal_address)
    async with worker:
        await stop.wait()
        log.info("worker shutting down")
    await renderer.close()
    await engine.dispose()


if __name__ == "__main__":
    asyncio.run(main())
