"""Runs the baseline and the selected scenarios, interleaved in rounds (see bench/common.py)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import httpx

from bench.approvals import ApprovalsScenario
from bench.closure import ClosureScenario
from bench.common import Api, Batch, Config, Scenario, client_limits, median, noop_once, run_batch
from bench.signature import SignatureScenario
from bench.stack import BenchStack

SCENARIOS: dict[str, type[Scenario]] = {
    s.name: s for s in (ClosureScenario, ApprovalsScenario, SignatureScenario)
}


@dataclass
class Results:
    scenarios: list[Scenario]
    baseline_ms: list[float] = field(default_factory=list)
    batches: dict[str, Batch] = field(default_factory=dict)  # scenario name -> all its samples
    rounds: list[dict] = field(default_factory=list)


async def run_scenarios(
    stack: BenchStack, cfg: Config, names: Sequence[str], say: Callable[[str], None] = print
) -> Results:
    sizes = cfg.round_sizes()
    async with (
        httpx.AsyncClient(base_url=stack.api_url, timeout=30, limits=client_limits()) as http,
        httpx.AsyncClient(
            base_url=stack.sandbox_url, timeout=30, limits=client_limits()
        ) as sandbox,
    ):
        api = Api(stack, http, sandbox)
        results = Results(scenarios=[SCENARIOS[name](stack, api, cfg) for name in names])
        results.batches = {s.name: Batch() for s in results.scenarios}

        async def baseline(n: int) -> list[float]:
            return await run_batch(
                range(n), lambda _: noop_once(stack.client, stack.task_queue), cfg.concurrency
            )

        if cfg.warmup:
            say(
                f"==> warm-up: {cfg.warmup} runs of the baseline and of each scenario "
                f"({', '.join(names)}; not reported)"
            )
            await baseline(cfg.warmup)
            for scenario in results.scenarios:
                await scenario.batch(cfg.warmup)

        say(
            f"==> {cfg.deals} runs per scenario ({', '.join(names)}) in {len(sizes)} rounds, "
            f"concurrency {cfg.concurrency}, polled every {cfg.poll_ms:g} ms"
        )
        t0 = time.monotonic()
        for i, n in enumerate(sizes, 1):
            b = await baseline(n)
            results.baseline_ms += b
            row: dict = {"round": i, "n": n, "baseline_median_ms": median(b)}
            parts = [f"baseline {row['baseline_median_ms']:.1f}"]
            for scenario in results.scenarios:
                batch = await scenario.batch(n)
                results.batches[scenario.name].merge(batch)
                for m in scenario.metrics:
                    if m.headline:
                        row[f"{m.key}_median_ms"] = median(batch.samples[m.key])
                        parts.append(f"{m.key} {row[f'{m.key}_median_ms']:.1f}")
            results.rounds.append(row)
            say(
                f"    round {i}/{len(sizes)}  n={n}  medians (ms): {'  '.join(parts)}  "
                f"[{time.monotonic() - t0:5.1f}s]"
            )
    return results
