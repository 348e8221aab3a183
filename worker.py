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

from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client
from temporalio.worker import Worker

from activities.deals import DealActivities, NoopActivities
from db.engine import make_engine, make_sessionmaker
from dealflow.faults import CrashPoints
from dealflow.logging import configure_logging
from dealflow.rendering import DocumentRenderer
from dealflow.settings import Settings
from dealflow.temporal import connect
from workflows.deal_closure import DealClosureWorkflow
from workflows.noop import NoopWorkflow

log = logging.getLogger("dealflow.worker")

WORKFLOWS: Sequence[type] = (DealClosureWorkflow, NoopWorkflow)


def build_activities(settings: Settings, sessions: async_sessionmaker) -> list:
    deals = DealActivities(
        settings=settings,
        sessions=sessions,
        renderer=DocumentRenderer(settings.templates_dir),
        crash_points=CrashPoints(settings.crash_at, settings.state_dir),
    )
    noop = NoopActivities()
    return [
        deals.load_deal,
        deals.price_quote,
        deals.render_documents,
        deals.plan_approvals,
        deals.record_stage,
        noop.noop,
    ]


def build_worker(client: Client, settings: Settings, sessions: async_sessionmaker) -> Worker:
    return Worker(
        client,
        task_queue=settings.task_queue,
        workflows=list(WORKFLOWS),
        activities=build_activities(settings, sessions),
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
