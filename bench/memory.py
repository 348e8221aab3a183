"""Worker memory with many live sequences waiting on their next step (issue 10, "memory at scale").

Run by ``bench.campaigns`` on its stack after the throughput and reply phases:

* **idle**: the worker's resident set (``VmRSS`` of ``python worker.py``; its renderer processes
  are reported apart) before this phase;
* **baseline, same shape, same run**: N ``NoopSequenceWorkflow`` started as the campaign enrols
  its contacts, each waiting on a one-hour timer before its first no-op: what Temporal's own
  workflows cost the worker to keep;
* **ours**: a campaign of N contacts whose first email waits a (test-mode) day, launched through
  the API, until every sequence is ``waiting`` in the database: each has run its first workflow
  task and activity and sleeps on its timer. Enrolled sequences per second, and the resident set
  then and at its peak (``VmHWM``), as a ratio of the baseline's growth over idle.

A waiting workflow stays in the worker's sticky cache until it is evicted to make room
(``Settings.workflow_cache_size``); past that it costs the worker nothing until its timer fires
(then it is replayed from its history). So the resident set follows the cache size, not N.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text
from temporalio.client import Client

from db.engine import make_engine
from dealflow.settings import Settings
from workflows.noop_sequence import NoopSequenceInput, NoopSequenceWorkflow

MB = 1024 * 1024
# The baseline is started in batches like the campaign's enrolment (see bench.campaigns).
BATCH, FANOUT = 200, 32
WAIT_SECONDS = 3600.0  # longer than the bench: nothing wakes during the measurement


@dataclass
class Memory:
    sequences: int
    cache_size: int = field(default_factory=lambda: Settings().workflow_cache_size)
    idle: dict[str, int] = field(default_factory=dict)
    baseline: dict[str, int] = field(default_factory=dict)
    ours: dict[str, int] = field(default_factory=dict)
    baseline_wall_s: float = 0.0
    ours_wall_s: float = 0.0


def _status_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (kB) of a process, from /proc."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids += [int(p) for p in (task / "children").read_text().split()]
    return kids


def resident(pid: int) -> dict[str, int]:
    """The worker's resident set and peak, and its child processes' (the renderers), in bytes."""
    me = _status_kb(pid)
    kids = [_status_kb(k).get("VmRSS", 0) for k in _children(pid)]
    return {
        "rss": me["VmRSS"] * 1024,
        "peak_rss": me["VmHWM"] * 1024,
        "renderers_rss": sum(kids) * 1024,
        "renderers": len(kids),
    }


async def _until(what: str, check: Callable[[], Awaitable[bool]], guard: float) -> None:
    deadline = time.monotonic() + guard
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not reached in {guard:.0f} s (hang guard)")
        await asyncio.sleep(0.5)


async def baseline(client: Client, task_queue: str, pid: int, mem: Memory) -> None:
    """N NoopSequenceWorkflows, each after one no-op waiting on its timer before the next: the
    shape of a sequence whose first step is scheduled (one activity records it), then waits."""
    tag = uuid.uuid4().hex[:6]
    gate = asyncio.Semaphore(FANOUT)
    ids = [f"bench-waiting-noop-{tag}-{i}" for i in range(mem.sequences)]

    async def start(workflow_id: str) -> None:
        async with gate:
            await client.start_workflow(
                NoopSequenceWorkflow.run,
                NoopSequenceInput(waits=[0.0, WAIT_SECONDS]),
                id=workflow_id,
                task_queue=task_queue,
            )

    async def waits(workflow_id: str) -> bool:
        events = client.get_workflow_handle(workflow_id).fetch_history_events()
        return any([e.HasField("timer_started_event_attributes") async for e in events])

    began = time.monotonic()
    for lo in range(0, mem.sequences, BATCH):
        await asyncio.gather(*(start(i) for i in ids[lo : lo + BATCH]))
    pending = list(ids)

    async def all_waiting() -> bool:
        # Every workflow's history, a batch at a time, each until its timer has started.
        nonlocal pending
        batch, rest = pending[:BATCH], pending[BATCH:]
        done = await asyncio.gather(*(waits(w) for w in batch))
        pending = [w for w, ok in zip(batch, done, strict=True) if not ok] + rest
        return not pending

    await _until("the baseline's timers", all_waiting, 1800)
    mem.baseline_wall_s = time.monotonic() - began
    mem.baseline = resident(pid)


async def ours(
    http: httpx.AsyncClient,
    database_url: str,
    pid: int,
    mem: Memory,
    create: Callable[[int], Awaitable[str]],
    say: Callable[[str], None],
) -> None:
    """A campaign of N contacts launched through the API, until every sequence waits."""
    campaign_id = await create(mem.sequences)
    engine = make_engine(database_url)
    peak = 0
    began = time.monotonic()
    last_print = 0.0
    try:

        async def all_waiting() -> bool:
            nonlocal peak, last_print
            peak = max(peak, resident(pid)["rss"])
            async with engine.connect() as conn:
                waiting = await conn.scalar(
                    text(
                        "SELECT count(*) FROM campaign_contacts "
                        "WHERE campaign_id = :c AND status = 'waiting'"
                    ),
                    {"c": campaign_id},
                )
            if time.monotonic() - last_print > 10:
                say(f"    {time.monotonic() - began:6.0f}s  waiting {waiting:>7}/{mem.sequences}")
                last_print = time.monotonic()
            return (waiting or 0) >= mem.sequences

        await _until("every sequence waiting", all_waiting, 3600)
    finally:
        await engine.dispose()
    mem.ours_wall_s = time.monotonic() - began
    mem.ours = resident(pid) | {"peak_rss_sampled": peak}


def report(mem: Memory, say: Callable[[str], None]) -> dict[str, Any]:
    grow_base = mem.baseline["rss"] - mem.idle["rss"]
    grow_ours = mem.ours["rss"] - mem.idle["rss"]
    ratio = grow_ours / grow_base if grow_base > 0 else float("nan")
    say("")
    say(
        f"memory: {mem.sequences:,} sequences waiting on their next step "
        f"(worker cache {mem.cache_size:,} workflows)"
    )
    rows = (
        ("idle worker (before)", mem.idle, None),
        (f"{mem.sequences:,} NoopSequence waiting (baseline)", mem.baseline, mem.baseline_wall_s),
        (f"{mem.sequences:,} campaign sequences waiting", mem.ours, mem.ours_wall_s),
    )
    for label, r, wall in rows:
        rate = f"  started {mem.sequences / wall:,.0f}/s" if wall else ""
        say(
            f"  {label:<44} RSS {r['rss'] / MB:7.0f} MB  peak {r['peak_rss'] / MB:7.0f} MB"
            f"  renderers {r['renderers_rss'] / MB:5.0f} MB{rate}"
        )
    say(f"  growth over idle, ours / baseline: x{ratio:.2f}")
    return {
        "sequences": mem.sequences,
        "workflow_cache_size": mem.cache_size,
        "idle": mem.idle,
        "baseline": mem.baseline,
        "ours": mem.ours,
        "baseline_wall_s": mem.baseline_wall_s,
        "ours_wall_s": mem.ours_wall_s,
        "ours_sequences_per_s": mem.sequences / mem.ours_wall_s if mem.ours_wall_s else None,
        "ratio_growth_ours_over_baseline": ratio,
    }
