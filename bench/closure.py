"""The scenarios: the NoopWorkflow baseline and a deal closure up to ``awaiting_approval``.

Both run in the same process against the same stack, interleaved in rounds (a baseline batch,
then a deal batch, repeated) so that machine noise lands on both alike. Each batch keeps
``concurrency`` runs in flight. Warm-up runs of each scenario come first and are not reported.
"""

from __future__ import annotations

import asyncio
import math
import time
import tomllib
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import httpx
from temporalio.client import Client
from temporalio.service import RPCError

from bench.stack import BenchStack
from dealflow.ids import deal_closure_workflow_id
from dealflow.settings import SANDBOX_FILE

# The committed valid deal the integration tests use (reaches awaiting_approval: its discount
# and size ask for approval). One definition, so the benchmark measures the deal the tests check.
from tests.utils.deals import REP, deal_payload
from workflows.deal_closure import DealClosureWorkflow
from workflows.noop import NoopWorkflow

T = TypeVar("T")
TARGET_STAGE = "awaiting_approval"
# Stages the closure passes through before TARGET_STAGE; anything else means the deal did not
# go the expected way (e.g. a changed test payload now needs no approval) and the run stops.
EN_ROUTE_STAGES = frozenset({"quoting"})


class BenchError(RuntimeError):
    pass


@dataclass
class Config:
    deals: int = 30
    concurrency: int = 4
    rounds: int = 0  # 0: ceil(deals / (2 * concurrency))
    warmup: int = 4
    poll_ms: float = 10.0
    run_timeout: float = 120.0  # hang guard per run, not a performance expectation

    def round_sizes(self) -> list[int]:
        rounds = self.rounds or max(1, math.ceil(self.deals / (2 * self.concurrency)))
        rounds = min(rounds, self.deals)
        base, extra = divmod(self.deals, rounds)
        return [base + (1 if i < extra else 0) for i in range(rounds)]


@dataclass
class DealRun:
    total_ms: float  # POST ready-to-close sent -> status query shows awaiting_approval
    post_ms: float  # POST ready-to-close round trip (part of total_ms)
    polls: int
    query_ms: list[float] = field(default_factory=list)  # round trip of each status query


@dataclass
class Results:
    baseline_ms: list[float] = field(default_factory=list)
    deals: list[DealRun] = field(default_factory=list)
    rounds: list[dict] = field(default_factory=list)


async def run_batch(
    items: Sequence[T], run: Callable[[T], Awaitable[object]], concurrency: int
) -> list:
    """Run ``run`` over ``items`` keeping up to ``concurrency`` in flight; results in order."""
    results: list = [None] * len(items)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(len(items)):
        queue.put_nowait(i)

    async def lane() -> None:
        while not queue.empty():
            i = queue.get_nowait()
            results[i] = await run(items[i])

    async with asyncio.TaskGroup() as tg:
        for _ in range(min(concurrency, len(items))):
            tg.create_task(lane())
    return results


async def noop_once(client: Client, task_queue: str) -> float:
    """NoopWorkflow start -> result through the Temporal client, in ms."""
    workflow_id = f"bench-noop-{uuid.uuid4().hex}"
    started = time.perf_counter()
    await client.execute_workflow(NoopWorkflow.run, id=workflow_id, task_queue=task_queue)
    return (time.perf_counter() - started) * 1000


class DealDriver:
    def __init__(self, stack: BenchStack, http: httpx.AsyncClient, cfg: Config) -> None:
        self.client = stack.client
        self.http = http
        self.cfg = cfg
        with SANDBOX_FILE.open("rb") as fh:
            keys = {k["email"]: k["key"] for k in tomllib.load(fh)["api_keys"]}
        self.headers = {"Authorization": f"Bearer {keys[REP]}"}

    async def create(self) -> str:
        """POST /v1/deals (not timed); the deal's id."""
        resp = await self.http.post("/v1/deals", json=deal_payload(), headers=self.headers)
        if resp.status_code != 201:
            raise BenchError(f"POST /v1/deals answered {resp.status_code}: {resp.text}")
        return resp.json()["id"]

    async def close(self, deal_id: str) -> DealRun:
        """Time POST ready-to-close until the status query shows awaiting_approval."""
        handle = self.client.get_workflow_handle_for(
            DealClosureWorkflow.run, deal_closure_workflow_id(deal_id)
        )
        interval = self.cfg.poll_ms / 1000
        started = time.perf_counter()
        resp = await self.http.post(f"/v1/deals/{deal_id}/ready-to-close", headers=self.headers)
        posted = time.perf_counter()
        if resp.status_code != 202:
            raise BenchError(f"ready-to-close answered {resp.status_code}: {resp.text}")
        query_ms: list[float] = []
        while True:
            sent = time.perf_counter()
            try:
                stage = (await handle.query(DealClosureWorkflow.status)).stage
            except RPCError:
                stage = None  # e.g. not yet answerable right after the start; poll again
            answered = time.perf_counter()
            query_ms.append((answered - sent) * 1000)
            if stage == TARGET_STAGE:
                return DealRun(
                    total_ms=(answered - started) * 1000,
                    post_ms=(posted - started) * 1000,
                    polls=len(query_ms),
                    query_ms=query_ms,
                )
            if stage is not None and stage not in EN_ROUTE_STAGES:
                raise BenchError(
                    f"deal {deal_id} reached stage {stage!r} instead of {TARGET_STAGE!r}; "
                    "the benchmark payload (tests/utils/deals.py) no longer needs approval?"
                )
            if answered - started > self.cfg.run_timeout:
                raise BenchError(
                    f"deal {deal_id} not at {TARGET_STAGE!r} after {self.cfg.run_timeout:.0f}s "
                    f"(last stage {stage!r}); is the worker stuck? (hang guard)"
                )
            await asyncio.sleep(interval)

    async def batch(self, n: int) -> list[DealRun]:
        # Deals are created before the timed part, so creation never overlaps a timed closure.
        ids = [await self.create() for _ in range(n)]
        return await run_batch(ids, self.close, self.cfg.concurrency)


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


async def run_scenarios(
    stack: BenchStack, cfg: Config, say: Callable[[str], None] = print
) -> Results:
    results = Results()
    sizes = cfg.round_sizes()
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=30) as http:
        deals = DealDriver(stack, http, cfg)

        async def baseline(n: int) -> list[float]:
            return await run_batch(
                range(n), lambda _: noop_once(stack.client, stack.task_queue), cfg.concurrency
            )

        if cfg.warmup:
            say(f"==> warm-up: {cfg.warmup} baseline + {cfg.warmup} deal runs (not reported)")
            await baseline(cfg.warmup)
            await deals.batch(cfg.warmup)

        say(
            f"==> {cfg.deals} runs per scenario in {len(sizes)} rounds, "
            f"concurrency {cfg.concurrency}, status polled every {cfg.poll_ms:g} ms"
        )
        t0 = time.monotonic()
        for i, n in enumerate(sizes, 1):
            b = await baseline(n)
            d = await deals.batch(n)
            results.baseline_ms += b
            results.deals += d
            row = {
                "round": i,
                "n": n,
                "baseline_median_ms": _median(b),
                "deal_median_ms": _median([r.total_ms for r in d]),
            }
            results.rounds.append(row)
            say(
                f"    round {i}/{len(sizes)}  n={n}  baseline median "
                f"{row['baseline_median_ms']:7.1f} ms  |  deal median "
                f"{row['deal_median_ms']:7.1f} ms  [{time.monotonic() - t0:5.1f}s]"
            )
    return results
