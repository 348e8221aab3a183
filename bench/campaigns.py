"""``python -m bench.campaigns``: campaign throughput and reply latency, on the real stack.

    python -m bench.campaigns                          # 10,000 contacts x 3 email steps
    python -m bench.campaigns --contacts 1000 --replies 50

(``DEALFLOW_TEMPORAL_BIN=.tools/bin/temporal`` if the CLI is not on PATH.) Starts its own stack
(``bench.stack``: PostgreSQL, the Temporal dev server, the sandbox, the worker and the API as
separate processes) and reports:

* **sends per hour**: one campaign of N contacts x S email steps with zero waits (test mode),
  through the real SMTP sandbox, timed by the SMTP server's own receipt times;
* **per-send cost**: the ``send_email`` activity's schedule-to-completion time (from sampled
  sequence histories), as a ratio to a no-op activity's round trip measured the same way in
  the same run: quiet (before) and under the same load (no-op probes during the campaign);
* **baseline, same shape, same run**: before the campaign, one ``NoopSequenceWorkflow`` per
  contact running as many no-op activities as the campaign has steps, with the same waits
  (none); its steps per hour (steady 5-95 %, from the workflows' own completion times) and the
  campaign's sends per hour as a ratio of it (what our send costs over Temporal's own);
* **reply -> sequence stopped**: a second campaign whose step 2 waits; each contact replies
  through the signed inbound webhook, timed until the webhook answered (the stop is then in
  the database: no further send can happen) and until the sequence's status query shows it
  stopped. Median and p99.

Nothing here asserts on time: it reports, and writes the samples to bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import math
import os
import random
import shutil
import signal
import sys
import time
import tomllib
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
from temporalio.client import Client

from bench import memory
from bench.common import machine, write_results
from bench.stack import bench_stack
from bench.stats import summarize
from dealflow.ids import message_id_for, sequence_workflow_id
from dealflow.settings import SANDBOX_FILE
from dealflow.stack import StackError
from tests.utils.campaigns import signed_headers
from tests.utils.deals import REP
from workflows.noop import NoopWorkflow
from workflows.noop_sequence import NoopSequenceInput, NoopSequenceWorkflow
from workflows.sequence import SequenceWorkflow

RESULTS_DIR = Path(__file__).resolve().parent / "results"
ZONES = ("America/New_York", "America/Los_Angeles", "Europe/Berlin", "Europe/London", "Asia/Tokyo")


def say(msg: str) -> None:
    print(msg, flush=True)


@dataclass
class Run:
    contacts: int
    steps: int
    campaign_id: str = ""
    launched_at: float = 0.0
    finished_at: float = 0.0
    progress: list[tuple[float, int]] = field(default_factory=list)
    smtp_times: list[float] = field(default_factory=list)  # SMTP receipt times (epoch s)
    duplicates: int = 0
    send_activity_ms: list[float] = field(default_factory=list)
    noop_quiet_ms: list[float] = field(default_factory=list)
    noop_loaded_ms: list[float] = field(default_factory=list)
    reply_ack_ms: list[float] = field(default_factory=list)
    reply_stop_ms: list[float] = field(default_factory=list)
    baseline_times: list[float] = field(default_factory=list)  # no-op step completions (epoch s)
    baseline_wall: float = 0.0
    profile: dict = field(default_factory=dict)


def _headers() -> dict[str, str]:
    with SANDBOX_FILE.open("rb") as fh:
        keys = {k["email"]: k["key"] for k in tomllib.load(fh)["api_keys"]}
    return {"Authorization": f"Bearer {keys[REP]}"}


def _payload(n: int, steps: list[dict], tag: str, **extra) -> dict:
    return {
        "name": f"bench {tag}",
        "sender": {
            "email": f"maya.chen+{tag}@dealflow.example",
            "name": "Maya Chen",
            "daily_limit": 1_000_000,
            "timezone": "America/Los_Angeles",
        },
        "steps": steps,
        "contacts": [
            {
                "email": f"c{i}.{tag}@bench{i % 97}.example",
                "first_name": f"C{i}",
                "company": f"Bench {i % 97}",
                "timezone": ZONES[i % len(ZONES)],
                "country": "US",
            }
            for i in range(n)
        ],
        "pause_company_on_reply": False,
        **extra,
    }


async def _read_campaign(http: httpx.AsyncClient, campaign_id: str) -> dict:
    """GET the campaign; a slow or failing answer under load is retried, not fatal."""
    for attempt in range(30):
        try:
            resp = await http.get(f"/v1/campaigns/{campaign_id}", headers=_headers())
            if resp.status_code == 200:
                return resp.json()
            say(f"    GET campaign answered {resp.status_code}: {resp.text[:200]}")
        except httpx.HTTPError as err:
            say(f"    GET campaign failed: {err!r}")
        await asyncio.sleep(min(10.0, 0.5 * 2**attempt))
    raise StackError(f"GET /v1/campaigns/{campaign_id} kept failing")


async def _until(what: str, check, interval: float, guard: float):
    """Poll ``check`` until it returns something (with a hang guard, not a timing guess)."""
    deadline = time.monotonic() + guard
    while (result := await check()) is None:
        if time.monotonic() > deadline:
            raise StackError(f"{what}: not reached in {guard:.0f} s (hang guard)")
        await asyncio.sleep(interval)
    return result


def _step(i: int, wait_days: int = 0) -> dict:
    return {
        "channel": "email",
        "wait_days": wait_days,
        "subject": "Quick question, {{ first_name }}" if i == 0 else None,
        "body": f"Hi {{{{ first_name }}}}, note {i + 1} about {{{{ company }}}}.",
    }


async def _activity_latencies(client: Client, workflow_id: str, activity: str) -> list[float]:
    """Schedule-to-completion of each ``activity`` in a workflow's history, in ms."""
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    scheduled: dict[int, float] = {}
    out = []
    for e in history.events:
        kind = e.WhichOneof("attributes")
        at = e.event_time.ToMicroseconds() / 1000
        if kind == "activity_task_scheduled_event_attributes":
            if e.activity_task_scheduled_event_attributes.activity_type.name == activity:
                scheduled[e.event_id] = at
        elif kind == "activity_task_completed_event_attributes":
            sid = e.activity_task_completed_event_attributes.scheduled_event_id
            if sid in scheduled:
                out.append(at - scheduled[sid])
    return out


async def _noop(client: Client, task_queue: str) -> float:
    workflow_id = f"bench-noop-{uuid.uuid4().hex}"
    await client.execute_workflow(NoopWorkflow.run, id=workflow_id, task_queue=task_queue)
    return (await _activity_latencies(client, workflow_id, "noop"))[0]


# Started the way the campaign enrols its sequences (activities/campaigns.py, enrol_batch):
# batches of the enrolment batch size one after another, 32 starts in flight within a batch.
BASELINE_BATCH = 200  # Settings.campaign_enrol_batch_size's default
BASELINE_FANOUT = 32  # activities.campaigns._FANOUT


async def _baseline(client: Client, task_queue: str, run: Run) -> None:
    """One NoopSequenceWorkflow per contact, started as the campaign enrols its contacts."""
    tag = uuid.uuid4().hex[:6]
    gate = asyncio.Semaphore(BASELINE_FANOUT)
    waits = [0.0] * run.steps  # the campaign's steps wait 0 days (test mode, zero waits)

    async def start(i: int):
        async with gate:
            return await client.start_workflow(
                NoopSequenceWorkflow.run,
                NoopSequenceInput(waits=waits),
                id=f"bench-noop-sequence-{tag}-{i}",
                task_queue=task_queue,
            )

    began = time.time()
    handles = []
    for lo in range(0, run.contacts, BASELINE_BATCH):
        batch = range(lo, min(lo + BASELINE_BATCH, run.contacts))
        handles += await asyncio.gather(*(start(i) for i in batch))
    for done in await asyncio.gather(*(h.result() for h in handles)):
        run.baseline_times += done
    run.baseline_wall = time.time() - began


def _py_spy() -> str | None:
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


# Leaves where a sampled thread waits rather than computes (idle pool threads, the selector,
# a blocking socket read): left out of the CPU shares.
IDLE_LEAVES = ("_worker (concurrent/futures/thread.py", "Condition.wait", "EpollSelector.select")
BLOCKED_LEAVES = ("SocketIO.readinto", "socket.recv")
PROFILE_KEYS = {
    "sandbox create_instance": "SandboxedWorkflowRunner.create_instance",
    "of which compiling source": "source_to_code",
    "smtplib": "smtplib",
    "psycopg": "psycopg",
    "sqlalchemy": "sqlalchemy",
    "workflow activations": "_handle_activation",
}


def profile_shares(raw: Path) -> dict:
    """Shares of the worker's busy samples (py-spy raw: one ``frame;frame;... count`` a line)."""
    busy = blocked = 0
    hits: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        leaf = stack.rsplit(";", 1)[-1]
        if leaf.startswith(IDLE_LEAVES):
            continue
        if leaf.startswith(BLOCKED_LEAVES):
            blocked += int(n)
            continue
        busy += int(n)
        for label, key in PROFILE_KEYS.items():
            if key in stack:
                hits[label] += int(n)
    return {
        "busy_samples": busy,
        "blocked_in_socket_reads_samples": blocked,
        "share_of_busy": {k: hits[k] / busy if busy else math.nan for k in PROFILE_KEYS},
    }


async def _profile_worker(stack, run: Run, seconds: float, out: Path) -> None:
    """py-spy the worker for ``seconds`` once the campaign is sending (if py-spy is installed)."""
    spy = _py_spy()
    if spy is None:
        say("    (no py-spy: install it into the venv to profile the worker)")
        return

    async def sending():
        return True if len(run.smtp_times) >= run.contacts * run.steps * 0.1 else None

    await _until("10 % of the sends", sending, 1.0, 6 * 3600)
    out.parent.mkdir(parents=True, exist_ok=True)
    proc = await asyncio.create_subprocess_exec(
        spy, "record", "-p", str(stack.pids["worker"]), "-d", str(int(seconds)), "-r", "50",
        "-f", "raw", "-o", str(out),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await proc.communicate()
    try:
        if proc.returncode:
            raise OSError(err.decode(errors="replace")[-300:])
        run.profile = {"raw": str(out), **await asyncio.to_thread(profile_shares, out)}
    except OSError as exc:
        say(f"    py-spy failed: {exc}")


async def _watch_smtp(http: httpx.AsyncClient, sandbox_url: str, run: Run, stop: asyncio.Event):
    """Page through the SMTP capture as it grows: receipt times, and any Message-ID twice."""
    since = 0
    seen: collections.Counter[str] = collections.Counter()
    while True:
        done = stop.is_set()
        resp = await http.get(f"{sandbox_url}/_sandbox/mail/messages", params={"since": since})
        messages = resp.json()["messages"]
        for m in messages:
            if m.get("headers") and any(
                k.lower() == "x-dealflow-campaign" and v == run.campaign_id for k, v in m["headers"]
            ):
                run.smtp_times.append(datetime.fromisoformat(m["received_at"]).timestamp())
                seen[m["message_id"]] += 1
        since += len(messages)
        if done:
            run.duplicates = sum(n - 1 for n in seen.values() if n > 1)
            return
        await asyncio.sleep(1.0)


async def _campaign(
    http: httpx.AsyncClient,
    stack,
    run: Run,
    profile_s: float = 0.0,
    profile_out: Path | None = None,
) -> None:
    headers = _headers()
    tag = uuid.uuid4().hex[:6]
    payload = _payload(
        run.contacts,
        [_step(i) for i in range(run.steps)],
        tag,
        test_mode={"wait_day_seconds": 0, "reply_window_seconds": 0},
    )
    resp = await http.post("/v1/campaigns", json=payload, headers=headers, timeout=300)
    resp.raise_for_status()
    run.campaign_id = resp.json()["id"]
    stop_probes = asyncio.Event()
    stop_smtp = asyncio.Event()
    smtp = asyncio.create_task(_watch_smtp(http, stack.sandbox_url, run, stop_smtp))

    async def probes() -> None:
        while not stop_probes.is_set():
            run.noop_loaded_ms.append(await _noop(stack.client, stack.task_queue))
            await asyncio.sleep(0.5)

    probe = asyncio.create_task(probes())
    spy = None
    if profile_s > 0 and profile_out is not None:
        spy = asyncio.create_task(_profile_worker(stack, run, profile_s, profile_out))
    try:
        run.launched_at = time.time()
        resp = await http.post(f"/v1/campaigns/{run.campaign_id}/launch", headers=headers)
        resp.raise_for_status()
        total = run.contacts * run.steps
        last_print = 0.0

        async def finished():
            nonlocal last_print
            body = await _read_campaign(http, run.campaign_id)
            sent = body["counts"]["sent"]
            now = time.time()
            run.progress.append((now - run.launched_at, sent))
            if now - last_print > 10:
                elapsed = now - run.launched_at
                say(f"    {elapsed:6.0f}s  sent {sent:>7}/{total}  ({body['status']})")
                last_print = now
            if body["status"] in ("failed", "cancelled"):
                raise StackError(f"the campaign ended {body['status']}: {body['status_reason']}")
            return True if body["status"] == "completed" and sent >= total else None

        await _until("the campaign completes", finished, 2.0, 6 * 3600)
        run.finished_at = time.time()
        if spy is not None:
            await spy
    finally:
        stop_probes.set()
        stop_smtp.set()
        if spy is not None:
            spy.cancel()
        await asyncio.gather(probe, smtp, *([spy] if spy else []), return_exceptions=True)
    say(f"==> sampling send_email activity times from {min(300, run.contacts)} sequences")
    sample = random.sample(range(run.contacts), min(300, run.contacts))
    for i in sample:
        email = payload["contacts"][i]["email"]
        run.send_activity_ms += await _activity_latencies(
            stack.client, sequence_workflow_id(run.campaign_id, email), "send_email"
        )


async def _replies(
    http: httpx.AsyncClient, stack, run: Run, n: int, concurrency: int, poll_ms: float
):
    headers = _headers()
    tag = uuid.uuid4().hex[:6]
    payload = _payload(
        n,
        [_step(0), _step(1, wait_days=1)],
        tag,
        test_mode={"wait_day_seconds": 3600, "reply_window_seconds": 0},
    )
    resp = await http.post("/v1/campaigns", json=payload, headers=headers, timeout=120)
    resp.raise_for_status()
    campaign_id = resp.json()["id"]
    (await http.post(f"/v1/campaigns/{campaign_id}/launch", headers=headers)).raise_for_status()

    async def step_one_out():
        return True if (await _read_campaign(http, campaign_id))["counts"]["sent"] >= n else None

    await _until("step 1 of the reply campaign", step_one_out, 0.5, 3600)
    sender = payload["sender"]["email"]
    queue: asyncio.Queue[dict] = asyncio.Queue()
    for c in payload["contacts"]:
        queue.put_nowait(c)

    async def lane() -> None:
        while not queue.empty():
            c = queue.get_nowait()
            mid = message_id_for(campaign_id, c["email"], 0, sender)
            body = json.dumps(
                {
                    "from": c["email"],
                    "to": sender,
                    "subject": f"Re: Quick question, {c['first_name']}",
                    "text": "Not interested, thanks.",
                    "headers": {"Message-ID": f"<{uuid.uuid4().hex}@bench.example>"},
                    "in_reply_to": f"<{mid}>",
                }
            ).encode()
            handle = stack.client.get_workflow_handle_for(
                SequenceWorkflow.run, sequence_workflow_id(campaign_id, c["email"])
            )
            started = time.perf_counter()
            resp = await http.post(
                "/v1/webhooks/email/inbound", content=body, headers=signed_headers(body)
            )
            acked = time.perf_counter()
            resp.raise_for_status()

            async def is_stopped(handle=handle):
                state = (await handle.query(SequenceWorkflow.status)).state
                return True if state == "stopped" else None

            await _until("the sequence stops", is_stopped, poll_ms / 1000, 300)
            stopped = time.perf_counter()
            run.reply_ack_ms.append((acked - started) * 1000)
            run.reply_stop_ms.append((stopped - started) * 1000)

    await asyncio.gather(*(lane() for _ in range(concurrency)))
    await http.post(f"/v1/campaigns/{campaign_id}/cancel", headers=headers)


async def _memory(http: httpx.AsyncClient, stack, n: int) -> dict:
    """Worker memory with N sequences waiting on their next step (bench/memory.py)."""
    mem = memory.Memory(sequences=n)
    pid = stack.pids["worker"]
    mem.idle = memory.resident(pid)
    say(f"==> memory: baseline, {n:,} NoopSequence workflows waiting on a timer")
    await memory.baseline(stack.client, stack.task_queue, pid, mem)

    async def create(count: int) -> str:
        # The first email waits a test-mode day (an hour): every sequence records its schedule
        # and sleeps, as a real campaign's contacts do between steps.
        payload = _payload(
            count,
            [_step(0, wait_days=1), _step(1)],
            uuid.uuid4().hex[:6],
            test_mode={"wait_day_seconds": 3600, "reply_window_seconds": 0},
        )
        resp = await http.post("/v1/campaigns", json=payload, headers=_headers(), timeout=600)
        resp.raise_for_status()
        campaign_id = resp.json()["id"]
        launched = await http.post(f"/v1/campaigns/{campaign_id}/launch", headers=_headers())
        launched.raise_for_status()
        return campaign_id

    say(f"==> memory: a campaign of {n:,} contacts, until every sequence waits")
    await memory.ours(http, stack.database_url, pid, mem, create, say)
    return memory.report(mem, say)


def _rate_per_hour(times: list[float]) -> tuple[float, float]:
    """(overall, steady) sends per hour from receipt times; steady = between 5 % and 95 %."""
    if len(times) < 2:
        return math.nan, math.nan
    ordered = sorted(times)
    overall = (len(ordered) - 1) / max(ordered[-1] - ordered[0], 1e-9) * 3600
    lo, hi = int(len(ordered) * 0.05), int(len(ordered) * 0.95)
    steady = (hi - lo) / max(ordered[hi] - ordered[lo], 1e-9) * 3600
    return overall, steady


def _fmt(x: float) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:,.1f}"


def report(run: Run, args: argparse.Namespace) -> dict:
    overall, steady = _rate_per_hour(run.smtp_times)
    send = summarize(run.send_activity_ms)
    quiet = summarize(run.noop_quiet_ms)
    loaded = summarize(run.noop_loaded_ms)
    ack = summarize(run.reply_ack_ms)
    stop = summarize(run.reply_stop_ms)
    wall = run.finished_at - run.launched_at
    say("")
    say(f"campaign: {run.contacts} contacts x {run.steps} email steps, zero waits (test mode)")
    sent = len(run.smtp_times)
    say(f"  sent (SMTP capture)          {sent:>10}   Message-ID twice: {run.duplicates}")
    say(f"  launch -> campaign completed {wall:>10.1f} s")
    say(f"  sends per hour, overall      {_fmt(overall):>10}")
    say(f"  sends per hour, steady 5-95% {_fmt(steady):>10}")
    b_overall, b_steady = _rate_per_hour(run.baseline_times)
    ratio = steady / b_steady if b_steady and not math.isnan(b_steady) else math.nan
    say(
        f"baseline: {run.contacts} NoopSequence workflows x {run.steps} no-op activities, "
        "same waits, same run"
    )
    say(f"  steps per hour, steady 5-95% {_fmt(b_steady):>10}   ({run.baseline_wall:.1f} s)")
    say(f"  campaign sends / baseline steps per hour (steady): x{ratio:.2f}")
    if run.profile:
        say(f"worker profile (py-spy, {run.profile['busy_samples']} busy samples):")
        for label, share in run.profile["share_of_busy"].items():
            say(f"  {label:<28} {share * 100:5.1f} %")
    say("")
    head = f"{'activity schedule -> completion (ms)':<40}{'n':>7}{'median':>9}{'p99':>9}{'max':>9}"
    say(head)
    say("-" * len(head))
    for label, s in (
        ("send_email (during the campaign)", send),
        ("no-op activity, quiet (before)", quiet),
        ("no-op activity, same load (during)", loaded),
    ):
        say(f"{label:<40}{s['n']:>7}{_fmt(s['median']):>9}{_fmt(s['p99']):>9}{_fmt(s['max']):>9}")
    ratio_loaded = send["median"] / loaded["median"] if loaded["n"] else math.nan
    ratio_quiet = send["median"] / quiet["median"] if quiet["n"] else math.nan
    say(
        f"per-send cost / no-op round trip (median): x{_fmt(ratio_loaded)} under the same load, "
        f"x{_fmt(ratio_quiet)} vs quiet"
    )
    say("")
    say(f"reply -> sequence stopped ({args.replies} replies, {args.reply_concurrency} in flight)")
    for label, s in (
        ("webhook answered (stop in the DB)", ack),
        ("status query shows stopped", stop),
    ):
        say(f"  {label:<36} median {_fmt(s['median'])} ms  p99 {_fmt(s['p99'])} ms")
    return {
        "sends_per_hour": {"overall": overall, "steady_5_95": steady},
        "baseline_steps_per_hour": {"overall": b_overall, "steady_5_95": b_steady},
        "baseline_wall_s": run.baseline_wall,
        "ratio_sends_over_baseline_steps": ratio,
        "worker_profile": run.profile,
        "campaign_wall_s": wall,
        "sent": len(run.smtp_times),
        "duplicate_message_ids": run.duplicates,
        "send_email_activity_ms": send,
        "noop_activity_quiet_ms": quiet,
        "noop_activity_loaded_ms": loaded,
        "ratio_send_over_noop": {"loaded": ratio_loaded, "quiet": ratio_quiet},
        "reply_ack_ms": ack,
        "reply_to_stopped_ms": stop,
    }


async def amain(args: argparse.Namespace) -> int:
    # SIGTERM (and Ctrl-C) cancel the main task, so the stack below stops in order.
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    # The sender is a brand-new mailbox: switch the warm-up ramp off (its own 1,000,000/day
    # limit applies), as for a mailbox that finished warming up long ago. Children inherit it.
    os.environ["DEALFLOW_CAMPAIGN_WARMUP"] = "[]"
    run = Run(contacts=args.contacts, steps=args.steps)
    async with (
        bench_stack(say) as stack,
        httpx.AsyncClient(base_url=stack.api_url, timeout=60) as http,
    ):
        say(f"==> no-op baseline: {args.noops} NoopWorkflows, one at a time")
        for _ in range(args.noops):
            run.noop_quiet_ms.append(await _noop(stack.client, stack.task_queue))
        say(f"==> baseline: {args.contacts} NoopSequence workflows x {args.steps} no-ops")
        await _baseline(stack.client, stack.task_queue, run)
        say(f"==> campaign: {args.contacts} contacts x {args.steps} email steps")
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        await _campaign(
            http, stack, run, args.profile_seconds, args.results_dir / f"worker-{stamp}.pyspy"
        )
        say(f"==> replies: {args.replies} contacts reply while their step 2 waits")
        await _replies(http, stack, run, args.replies, args.reply_concurrency, args.poll_ms)
        summary = report(run, args)
        if args.waiting:
            summary["memory"] = await _memory(http, stack, args.waiting)
        stack_info = {
            "database": stack.database,
            "logs": {k: str(v) for k, v in stack.logs.items()},
        }
    args.results_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = args.results_dir / f"campaigns-{stamp}.json"
    doc = {
        "timestamp": stamp,
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": machine(),
        "stack": stack_info,
        "summary": summary,
        "samples": {
            "progress": run.progress,
            "send_email_activity_ms": run.send_activity_ms,
            "noop_quiet_ms": run.noop_quiet_ms,
            "noop_loaded_ms": run.noop_loaded_ms,
            "reply_ack_ms": run.reply_ack_ms,
            "reply_stop_ms": run.reply_stop_ms,
            "baseline_step_times": run.baseline_times,
        },
    }
    write_results(path, doc)
    say(f"\nresults: {path}")
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The standalone bench's options (``python -m bench`` passes its campaign options here)."""
    p = argparse.ArgumentParser(
        prog="python -m bench.campaigns", description=__doc__.splitlines()[0]
    )
    p.add_argument("--contacts", type=int, default=10_000)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--replies", type=int, default=200)
    p.add_argument("--reply-concurrency", type=int, default=4)
    p.add_argument("--noops", type=int, default=50, help="quiet no-op round trips (default 50)")
    p.add_argument("--poll-ms", type=float, default=10.0)
    p.add_argument(
        "--waiting",
        type=int,
        default=10_000,
        help="memory: sequences left waiting on their next step, worker RSS then (0: skip)",
    )
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    p.add_argument(
        "--profile-seconds",
        type=float,
        default=0.0,
        help="py-spy the worker this long once 10 %% of the sends are out (0: off)",
    )
    args = p.parse_args(argv)
    if min(args.contacts, args.steps, args.replies, args.reply_concurrency, args.noops) < 1:
        p.error("every count must be at least 1")
    if args.waiting < 0:
        p.error("--waiting must not be negative")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return asyncio.run(amain(args))
    except StackError as err:
        say(f"error: {err}")
        return 1
    except (KeyboardInterrupt, asyncio.CancelledError):
        return 130


if __name__ == "__main__":
    sys.exit(main())
