"""Scenario ``approvals`` (issue 3): approval requests reaching approvers in Slack.

A deal needing Finance Director + Legal (stage 0) and CFO (stage 1): the integration tests'
``BIG_DEAL`` (600 x 450 USD, net 45). Two timed steps per deal, each its own batch:

* **requested**: POST ready-to-close sent -> the Slack sandbox shows the DM (with the Approve
  button for the deal's step) for every stage-0 approver.
* **next stage**: with Finance already approved (untimed, before the batch), Legal's approval
  ``POST /v1/approvals/{step}/decision`` sent -> the Slack sandbox shows the CFO's DM.

One poller serves every run in flight: each interval it lists the Slack messages of each approver
someone is waiting for (``GET /_sandbox/slack/messages?user_email=``), so the polling load does
not grow with the concurrency. A DM is "seen" when the listing that first contains it answers.
The sandbox stamps each message ``ts`` with its own clock (same machine) when the worker posts
it: "posted (sandbox ts)" has no polling error.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

from bench.common import (
    Batch,
    BenchError,
    Metric,
    Scenario,
    approve_step,
    ms_since,
    run_batch,
)
from tests.integration.test_approval_chain import BIG_DEAL
from tests.utils.deals import CFO, FINANCE, LEGAL, REP

# (role, stage) -> approver, as config/approval_policy.toml and config/org.toml plan BIG_DEAL;
# checked against the deal's planned approvals after each batch.
PLAN = {("finance_director", 0): FINANCE, ("legal", 0): LEGAL, ("cfo", 1): CFO}
STAGE0 = [(role, email) for (role, stage), email in PLAN.items() if stage == 0]


def step_id(deal_id: str, stage: int, role: str) -> str:
    return f"{deal_id}.v1.s{stage}.{role}"


@dataclass
class Sighting:
    seen: float  # perf_counter when the listing that first showed it answered
    posted_wall: float  # the message's ts: when the sandbox received the post (epoch seconds)
    polls: int  # listings of this approver's DMs since the wait began


class SlackWatch:
    """One Slack-sandbox poller for every wait in flight (see the module docstring)."""

    def __init__(self, scenario: Scenario, batch: Batch) -> None:
        self.sandbox = scenario.api.sandbox
        self.interval = scenario.cfg.poll_ms / 1000
        self.timeout = scenario.cfg.run_timeout
        self.batch = batch
        self.waiting: dict[tuple[str, str], list[tuple[asyncio.Future, int]]] = {}
        self.cycles = 0
        self._wake = asyncio.Event()

    async def __aenter__(self) -> SlackWatch:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def seen(self, email: str, step: str) -> Sighting:
        fut: asyncio.Future[Sighting] = asyncio.get_running_loop().create_future()
        self.waiting.setdefault((email, step), []).append((fut, self.cycles))
        self._wake.set()
        try:
            return await asyncio.wait_for(fut, self.timeout)
        except TimeoutError:
            raise BenchError(
                f"no Slack DM for {step} to {email} after {self.timeout:.0f}s; is the worker "
                "stuck? (hang guard)"
            ) from None

    async def _run(self) -> None:
        try:
            while True:
                if not self.waiting:
                    self._wake.clear()
                    await self._wake.wait()
                self.cycles += 1
                emails = sorted({email for email, _ in self.waiting})
                await asyncio.gather(*(self._list(email) for email in emails))
                await asyncio.sleep(self.interval)
        except Exception as err:  # hand it to every waiter rather than let them hang
            for waiters in self.waiting.values():
                for fut, _ in waiters:
                    if not fut.done():
                        fut.set_exception(err)
            self.waiting.clear()

    async def _list(self, email: str) -> None:
        sent = time.perf_counter()
        resp = await self.sandbox.get("/_sandbox/slack/messages", params={"user_email": email})
        answered = time.perf_counter()
        self.batch.poll_rtt_ms.append(ms_since(sent, answered))
        if resp.status_code != 200:
            raise BenchError(f"Slack sandbox answered {resp.status_code}: {resp.text}")
        for message in resp.json()["messages"]:
            waiters = self.waiting.pop((email, approve_step(message) or ""), None)
            for fut, since in waiters or ():
                polls = max(1, self.cycles - since)
                self.batch.polls.append(polls)
                if not fut.done():
                    fut.set_result(Sighting(answered, float(message["ts"]), polls))


class ApprovalsScenario(Scenario):
    name = "approvals"
    metrics = (
        Metric(
            "stage0_requested",
            "approvals: stage-0 DMs (seen)",
            headline=True,
            short="stage-0 requested",
        ),
        Metric("stage0_ready_to_close_post", "  of which POST ready-to-close"),
        Metric("stage0_posted_sandbox_clock", "  last DM posted (sandbox ts)"),
        Metric(
            "next_stage_requested",
            "approvals: decision -> CFO DM (seen)",
            headline=True,
            short="next stage requested",
        ),
        Metric("next_stage_decision_post", "  of which POST decision"),
        Metric("next_stage_posted_sandbox_clock", "  DM posted (sandbox ts)"),
    )
    poll_what = "Slack sandbox listing (one per approver waited for)"

    async def batch(self, n: int) -> Batch:
        ids = [await self.api.create_deal(REP, **BIG_DEAL) for _ in range(n)]
        batch = Batch()
        c = self.cfg.concurrency
        async with SlackWatch(self, batch) as watch:
            await run_batch(ids, lambda deal_id: self.request(deal_id, watch, batch), c)
        for deal_id in ids:
            await self.check_plan(deal_id)
        await self.api.settle_deliveries(ids, REP, self.cfg.run_timeout)
        # Untimed: Finance approves first, so Legal's approval timed below completes stage 0.
        await run_batch(ids, lambda deal_id: self.decide(deal_id, "finance_director"), c)
        async with SlackWatch(self, batch) as watch:
            await run_batch(ids, lambda deal_id: self.next_stage(deal_id, watch, batch), c)
        await self.api.settle_deliveries(ids, REP, self.cfg.run_timeout)
        return batch

    async def request(self, deal_id: str, watch: SlackWatch, batch: Batch) -> None:
        wall_started = time.time()
        started = time.perf_counter()
        resp = await self.api.http.post(
            f"/v1/deals/{deal_id}/ready-to-close", headers=self.api.auth(REP)
        )
        posted = time.perf_counter()
        if resp.status_code != 202:
            raise BenchError(f"ready-to-close answered {resp.status_code}: {resp.text}")
        seen = await asyncio.gather(
            *(watch.seen(email, step_id(deal_id, 0, role)) for role, email in STAGE0)
        )
        batch.add("stage0_requested", ms_since(started, max(s.seen for s in seen)))
        batch.add("stage0_ready_to_close_post", ms_since(started, posted))
        batch.add(
            "stage0_posted_sandbox_clock",
            (max(s.posted_wall for s in seen) - wall_started) * 1000,
        )

    async def check_plan(self, deal_id: str) -> None:
        """Untimed. The approvers are asked while the contract renders: the deal shows
        awaiting_approval once its documents are stored, so wait for the render here."""
        deadline = time.perf_counter() + self.cfg.run_timeout
        deal = await self.api.get_deal(deal_id, REP)
        while deal["stage"] == "quoting" and time.perf_counter() < deadline:
            await asyncio.sleep(self.cfg.poll_ms / 1000)
            deal = await self.api.get_deal(deal_id, REP)
        plan = {(a["role"], a["stage"]): a["approver_email"] for a in deal["approvals"]}
        if plan != PLAN or deal["stage"] != "awaiting_approval":
            raise BenchError(
                f"deal {deal_id} at {deal['stage']!r} planned {sorted(plan.items())}, expected "
                f"{sorted(PLAN.items())} (BIG_DEAL in tests/integration/test_approval_chain.py "
                "or the approval policy changed?)"
            )

    async def decide(self, deal_id: str, role: str) -> float:
        """POST the approver's approval of the deal's stage-0 step; its round trip (ms)."""
        sent = time.perf_counter()
        resp = await self.api.http.post(
            f"/v1/approvals/{step_id(deal_id, 0, role)}/decision",
            json={"decision": "approve"},
            headers=self.api.auth(PLAN[(role, 0)]),
        )
        if resp.status_code != 200:
            raise BenchError(f"{role} decision answered {resp.status_code}: {resp.text}")
        return ms_since(sent, time.perf_counter())

    async def next_stage(self, deal_id: str, watch: SlackWatch, batch: Batch) -> None:
        wall_started = time.time()
        started = time.perf_counter()
        cfo = asyncio.ensure_future(watch.seen(CFO, step_id(deal_id, 1, "cfo")))
        try:
            post_ms = await self.decide(deal_id, "legal")
        except BaseException:
            cfo.cancel()
            raise
        seen = await cfo
        batch.add("next_stage_requested", ms_since(started, seen.seen))
        batch.add("next_stage_decision_post", post_ms)
        batch.add("next_stage_posted_sandbox_clock", (seen.posted_wall - wall_started) * 1000)
