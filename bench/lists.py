"""Scenario ``lists`` (issue 9): the lists under load, beside the live workflow read.

Set-up, once and untimed: ``--list-deals`` deals (10,000 by default) are inserted straight into
PostgreSQL (one set-based INSERT each for deals, their quote, and a pending approval step for
every fifth deal, spread over four approvers), then ANALYZE; a few real deals are taken through
ready-to-close to ``awaiting_approval``, so a closure workflow answers their ``status`` query.

A run: each of ``--list-clients`` clients (50 by default) sends one request of each kind, in
its own shuffled order, all clients at once, so every request meets the others' load:

* ``GET /v1/deals?limit=50`` — alternately as a rep (half the deals are theirs) and as ops
  (all of them); each client follows its own ``next_cursor`` page after page (and starts over
  at the end), so deep pages are measured as often as the first;
* ``GET /v1/approvals?status=pending`` — as the Finance Director (a quarter of the pending
  steps), the first page;
* ``GET /v1/deals/{id}`` — a live deal, read through the closure workflow's ``status`` query.

Each figure is one request's round trip as this process sees it (no polling). The ratios are
to the NoopWorkflow baseline measured in the same run.
"""

from __future__ import annotations

import asyncio
import random
import time

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from bench.common import (
    Batch,
    BenchError,
    Metric,
    Scenario,
    client_limits,
    ms_since,
    wait_untimed,
)
from db.engine import sqlalchemy_url
from tests.utils.deals import CFO, FINANCE, LEGAL, OPS, OTHER_REP, REP, SALES_VP

LIVE_DEALS = 4
STAGES = ("draft", "awaiting_approval", "awaiting_signature", "closed_won", "needs_attention")
APPROVERS = (FINANCE, LEGAL, SALES_VP, CFO)

DEALS_SQL = """
INSERT INTO deals (id, owner_email, name, currency, term_months, billing_frequency,
                   payment_terms_days, discount_pct, account_name, account_domain,
                   account_country, account_region, stage, revision, created_at, updated_at)
SELECT 'deal_bench' || lpad(g::text, 10, '0'),
       CASE WHEN g % 2 = 0 THEN :rep ELSE :other_rep END,
       'Bench deal ' || g, 'USD', 12, 'annual', 30, 5,
       'Bench Customer ' || (g % 500), 'bench' || (g % 500) || '.example', 'US', 'NY',
       (CAST(:stages AS text[]))[1 + g % 5], 1,
       now() - make_interval(secs => g), now() - make_interval(secs => g)
FROM generate_series(1, :n) AS g
"""
QUOTES_SQL = """
INSERT INTO quote_versions (deal_id, version, deal_revision, terms, terms_sha256, quote,
                            currency, subtotal, discount, tax, total, tax_table_version)
SELECT 'deal_bench' || lpad(g::text, 10, '0'), 1, 1, '{}'::jsonb, repeat('0', 64),
       '{}'::jsonb, 'USD', 1000 + g, 0, 0, 1000 + g, 'bench'
FROM generate_series(1, :n) AS g
"""
STEPS_SQL = """
INSERT INTO approval_requests (step_id, deal_id, quote_version, workflow_id, stage, role,
                               approver_email, holder_email, reason, inputs_sha256, status,
                               requested_at, due_at, escalation_level)
SELECT d || '.v1.s0.bench', d, 1, 'bench', 0, 'finance_director',
       (CAST(:approvers AS text[]))[1 + (g / 5) % 4], (CAST(:approvers AS text[]))[1 + (g / 5) % 4],
       'bench: total over the threshold', repeat('0', 64), 'pending',
       now(), now() + make_interval(mins => g), 0
FROM (SELECT g, 'deal_bench' || lpad(g::text, 10, '0') AS d
      FROM generate_series(5, :n, 5) AS g) AS s
"""


class ListsScenario(Scenario):
    name = "lists"
    metrics = (
        Metric("list_deals", "lists: GET /v1/deals (page)", headline=True, short="deals list"),
        Metric("list_approvals", "lists: GET /v1/approvals (inbox)", headline=True, short="inbox"),
        Metric(
            "deal_live_read",
            "  beside: GET /v1/deals/{id} (live query)",
            headline=True,
            short="deal read",
        ),
        Metric("deal_read_fell_back", "  GET /v1/deals/{id} answered from the DB"),
    )
    poll_what = "no polling (each figure is one request's round trip)"
    # Set from the command line (bench/__main__.py): the database size and the load.
    deals = 10_000
    clients = 50

    def __init__(self, stack, api, cfg) -> None:  # noqa: ANN001 - as Scenario
        super().__init__(stack, api, cfg)
        self._ready = False
        self._live: list[str] = []
        self._cursors: dict[int, str | None] = {}
        self._http: httpx.AsyncClient | None = None

    async def _setup(self) -> None:
        if not self.stack.database_url:
            raise BenchError("the lists scenario needs the stack's database URL")
        engine = create_async_engine(sqlalchemy_url(self.stack.database_url))
        try:
            async with engine.begin() as conn:
                params = {"n": self.deals}
                await conn.execute(
                    text(DEALS_SQL),
                    {**params, "rep": REP, "other_rep": OTHER_REP, "stages": list(STAGES)},
                )
                await conn.execute(text(QUOTES_SQL), params)
                await conn.execute(text(STEPS_SQL), {**params, "approvers": list(APPROVERS)})
                # Fresh statistics, as autovacuum would soon have: plans as in steady state.
                await conn.execute(text("ANALYZE deals, quote_versions, approval_requests"))
        finally:
            await engine.dispose()
        for _ in range(LIVE_DEALS):
            deal_id = await self.api.create_deal(REP)
            resp = await self.api.http.post(
                f"/v1/deals/{deal_id}/ready-to-close", headers=self.api.auth(REP)
            )
            if resp.status_code != 202:
                raise BenchError(f"ready-to-close answered {resp.status_code}: {resp.text}")
            self._live.append(deal_id)
        for deal_id in self._live:

            async def waiting(deal_id: str = deal_id) -> bool | None:
                body = await self.api.get_deal(deal_id, REP)
                return True if body["live"] and body["stage"] == "awaiting_approval" else None

            await wait_untimed(f"deal {deal_id} awaiting approval", waiting, self.cfg.run_timeout)
        self._ready = True

    async def _get(self, path: str, as_: str, params: dict | None = None) -> tuple[dict, float]:
        assert self._http is not None
        started = time.perf_counter()
        resp = await self._http.get(path, params=params, headers=self.api.auth(as_))
        took = ms_since(started, time.perf_counter())
        if resp.status_code != 200:
            raise BenchError(f"GET {path} answered {resp.status_code}: {resp.text[:300]}")
        return resp.json(), took

    async def _client(self, i: int, batch: Batch, rng: random.Random) -> None:
        kinds = ["deals", "approvals", "deal"]
        rng.shuffle(kinds)
        for kind in kinds:
            if kind == "deals":
                who = REP if i % 2 == 0 else OPS
                cursor = self._cursors.get(i)
                params = {"limit": 50, **({"cursor": cursor} if cursor else {})}
                body, ms = await self._get("/v1/deals", who, params)
                self._cursors[i] = body["next_cursor"]
                batch.add("list_deals", ms)
            elif kind == "approvals":
                body, ms = await self._get("/v1/approvals", FINANCE, {"status": "pending"})
                if not body["items"]:
                    raise BenchError("the Finance Director's inbox is empty: set-up went wrong")
                batch.add("list_approvals", ms)
            else:
                deal_id = self._live[i % len(self._live)]
                body, ms = await self._get(f"/v1/deals/{deal_id}", REP)
                # No worker answered the query within the API's 5 s: not a live read; counted
                # apart so it shows instead of hiding in the live figures.
                batch.add("deal_live_read" if body["live"] else "deal_read_fell_back", ms)

    async def batch(self, n: int) -> Batch:
        if not self._ready:
            await self._setup()
        batch = Batch()
        rng = random.Random(n)
        limits = client_limits(self.clients)
        async with httpx.AsyncClient(
            base_url=self.stack.api_url, timeout=self.cfg.run_timeout, limits=limits
        ) as self._http:
            for _ in range(n):
                async with asyncio.TaskGroup() as tg:
                    for i in range(self.clients):
                        tg.create_task(self._client(i, batch, rng))
        self._http = None
        return batch
