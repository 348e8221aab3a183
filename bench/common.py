"""What every scenario shares: configuration, batches, the baseline, the scenario interface.

Every scenario runs against the same stack as the NoopWorkflow baseline, interleaved in rounds
(a baseline batch, then a batch of each selected scenario, repeated) so that machine noise lands
on all alike. Each batch keeps ``concurrency`` runs in flight. Warm-up runs come first and are not
reported. Set-up a run needs but that is not what it measures (creating the deal, getting it to
the point where the timed step starts) happens before its batch's timed part, untimed.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import platform
import time
import tomllib
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import httpx
import temporalio
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from bench.stack import BenchStack
from dealflow.settings import SANDBOX_FILE
from dealflow.stack import StackError, until
from tests.utils.deals import deal_payload
from workflows.noop import NoopWorkflow

T = TypeVar("T")

# uvicorn closes a keep-alive connection after 5 s idle (--timeout-keep-alive); a client that
# reuses it at that very moment reads a closed socket (httpx.ReadError), a race that shows under
# load when rounds take longer. The load generator's connections expire sooner than the server's.
KEEPALIVE_EXPIRY_S = 2.0


def client_limits(connections: int = 100) -> httpx.Limits:
    """Connection pool limits for the bench's HTTP clients (see KEEPALIVE_EXPIRY_S)."""
    return httpx.Limits(
        max_connections=connections,
        max_keepalive_connections=connections,
        keepalive_expiry=KEEPALIVE_EXPIRY_S,
    )


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


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def ms_since(start: float, end: float) -> float:
    return (end - start) * 1000


@dataclass(frozen=True)
class Metric:
    key: str  # JSON key
    label: str  # table row
    headline: bool = False  # a measured end-to-end figure: compared to the baseline
    short: str = ""  # the headline's name in the ratio rows


@dataclass
class Batch:
    """One batch's samples (or a scenario's, merged over rounds)."""

    samples: dict[str, list[float]] = field(default_factory=dict)  # metric key -> ms per run
    poll_rtt_ms: list[float] = field(default_factory=list)  # round trip of each poll
    polls: list[int] = field(default_factory=list)  # polls per timed wait

    def add(self, key: str, ms: float) -> None:
        self.samples.setdefault(key, []).append(ms)

    def merge(self, other: Batch) -> None:
        for key, values in other.samples.items():
            self.samples.setdefault(key, []).extend(values)
        self.poll_rtt_ms += other.poll_rtt_ms
        self.polls += other.polls


class Api:
    """The API, as the people of config/org.toml (sandbox keys); the sandbox's control API."""

    def __init__(self, stack: BenchStack, http: httpx.AsyncClient, sandbox: httpx.AsyncClient):
        self.http = http
        self.sandbox = sandbox
        with SANDBOX_FILE.open("rb") as fh:
            self._keys = {k["email"]: k["key"] for k in tomllib.load(fh)["api_keys"]}

    def auth(self, email: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._keys[email]}"}

    async def create_deal(self, owner: str, **overrides: Any) -> str:
        """POST /v1/deals (not timed); the deal's id."""
        resp = await self.http.post(
            "/v1/deals", json=deal_payload(**overrides), headers=self.auth(owner)
        )
        if resp.status_code != 201:
            raise BenchError(f"POST /v1/deals answered {resp.status_code}: {resp.text}")
        return resp.json()["id"]

    async def get_deal(self, deal_id: str, as_: str) -> dict:
        resp = await self.http.get(f"/v1/deals/{deal_id}", headers=self.auth(as_))
        if resp.status_code != 200:
            raise BenchError(f"GET /v1/deals/{deal_id} answered {resp.status_code}: {resp.text}")
        return resp.json()

    async def settle_deliveries(self, deal_ids: Sequence[str], owner: str, timeout: float) -> None:
        """Untimed: wait until every pending approval request of these deals is in the sandbox,
        as a Slack DM (with its buttons) and as an email.

        A timed step may end before the worker has finished the work it set off (the email
        after the DM, the other approvers' requests after the stage change); waiting here keeps
        that trailing work out of the next batch's figures.
        """
        wanted: set[tuple[str, str]] = set()  # (recipient, step id)
        for deal_id in deal_ids:
            for a in (await self.get_deal(deal_id, owner))["approvals"]:
                if a["status"] == "pending":  # a decided one's DM has lost its buttons
                    recipient = a.get("delegate_email") or a.get("holder_email")
                    wanted.add((recipient or a["approver_email"], a["step_id"]))
        recipients = sorted({r for r, _ in wanted})

        async def delivered() -> bool | None:
            for recipient in recipients:
                steps = {s for r, s in wanted if r == recipient}
                slack = await self.sandbox.get(
                    "/_sandbox/slack/messages", params={"user_email": recipient}
                )
                mail = await self.sandbox.get("/_sandbox/mail/messages", params={"to": recipient})
                if slack.status_code != 200 or mail.status_code != 200:
                    raise BenchError(f"sandbox answered {slack.status_code}/{mail.status_code}")
                dms = {approve_step(m) for m in slack.json()["messages"]}
                texts = [m.get("text") or "" for m in mail.json()["messages"]]
                for step in steps:
                    if step not in dms or not any(f"Reference: {step}" in t for t in texts):
                        return None
            return True

        await wait_untimed("approval requests delivered", delivered, timeout, 0.1)


def approve_step(message: dict) -> str | None:
    """The step id on a request DM's Approve button (cf. tests/utils/approvals.py)."""
    for block in message.get("blocks") or []:
        if block.get("type") != "actions":
            continue
        for el in block.get("elements", []):
            if el.get("action_id") == "approve":
                return el.get("value")
    return None


class Scenario:
    """One scenario: ``batch(n)`` sets up and times ``n`` runs, ``concurrency`` in flight."""

    name: ClassVar[str]
    metrics: ClassVar[tuple[Metric, ...]]
    poll_what: ClassVar[str]  # what one poll is, for the polling-resolution line

    def __init__(self, stack: BenchStack, api: Api, cfg: Config) -> None:
        self.stack = stack
        self.api = api
        self.cfg = cfg

    async def batch(self, n: int) -> Batch:
        raise NotImplementedError

    async def poll_until(
        self,
        what: str,
        probe: Callable[[], Awaitable[T | None]],
        batch: Batch,
        started: float,
    ) -> tuple[T, float]:
        """Call ``probe`` every poll interval until it returns a value: (value, answered at).

        Each probe's round trip goes to ``batch.poll_rtt_ms``, the number of probes to
        ``batch.polls``. ``started`` (perf_counter) is the timed start, for the hang guard.
        """
        interval = self.cfg.poll_ms / 1000
        polls = 0
        while True:
            sent = time.perf_counter()
            try:
                value = await probe()
            except RPCError as err:
                # A query that outlived its RPC timeout (a worker busy replaying, say) is a
                # poll without an answer: its round trip shows in the polling figures, and the
                # hang guard below still bounds the wait.
                if err.status not in QUERY_TIMED_OUT:
                    raise
                value = None
            answered = time.perf_counter()
            polls += 1
            batch.poll_rtt_ms.append(ms_since(sent, answered))
            if value is not None:
                batch.polls.append(polls)
                return value, answered
            if answered - started > self.cfg.run_timeout:
                raise BenchError(
                    f"{what} not seen after {self.cfg.run_timeout:.0f}s; is the worker stuck? "
                    "(hang guard)"
                )
            await asyncio.sleep(interval)


# What a query that outlived its rpc_timeout raises (the client's own deadline is CANCELLED).
QUERY_TIMED_OUT = frozenset({RPCStatusCode.CANCELLED, RPCStatusCode.DEADLINE_EXCEEDED})


async def wait_untimed(
    what: str, probe: Callable[[], Awaitable[T | None]], timeout: float, interval: float = 0.05
) -> T:
    """Set-up waits (not measured): poll ``probe`` until it returns a value."""
    try:
        return await until(what, probe, timeout, interval=interval)
    except StackError as err:
        raise BenchError(str(err)) from err


def json_safe(obj: Any) -> Any:
    """NaN (a metric with no samples) -> None, so the results stay valid JSON."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [json_safe(v) for v in obj]
    return obj


def machine() -> dict[str, Any]:
    """What the figures were measured on, for the results file."""
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "temporalio": temporalio.__version__,
    }


def write_results(path: Path, doc: dict[str, Any]) -> None:
    path.write_text(json.dumps(json_safe(doc), indent=1, allow_nan=False) + "\n")
