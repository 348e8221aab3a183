"""``python -m bench``: deal closure, approvals, signature vs a NoopWorkflow baseline, real stack.

    python -m bench                       # every scenario, 4 in flight
    python -m bench --scenario approvals --deals 10 --concurrency 2

``make bench`` runs this with DEALFLOW_TEMPORAL_BIN set. See bench/README.md for how to read it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import signal
import sys
import warnings
from datetime import UTC, datetime
from pathlib import Path

from bench import campaigns
from bench.common import BenchError, Config, machine, write_results
from bench.handoff import HandoffScenario
from bench.lists import ListsScenario
from bench.runner import SCENARIOS, Results, run_scenarios
from bench.stack import bench_stack
from bench.stats import ratios, summarize
from dealflow.stack import StackError

SCENARIOS[ListsScenario.name] = ListsScenario  # issue 9: the lists beside the live read
SCENARIOS[HandoffScenario.name] = HandoffScenario  # issue 8: closed-won -> package and CSM
RESULTS_DIR = Path(__file__).resolve().parent / "results"
DEFAULT_DEALS_ONE = 30
DEFAULT_DEALS_ALL = 20  # keeps `python -m bench` (all three) to about 4 minutes on 2 cores
# The campaign throughput run in `make bench`: small enough that the whole of `make bench` stays
# under ~10 minutes on 2 cores, large enough for a steady 5-95 % window of a few thousand sends.
CAMPAIGN_CONTACTS = 600
CAMPAIGN_REPLIES = 50
# Sequences left waiting for the memory figure: twice the worker's cache (Settings.
# workflow_cache_size), so half of them have been evicted and the bound shows; about 3 minutes.
# `python -m bench.campaigns --waiting 10000` is the full size (README, Benchmarks).
CAMPAIGN_WAITING = 2_000


def say(msg: str) -> None:
    print(msg, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument(
        "--scenario",
        choices=[*SCENARIOS, "campaigns", "all"],
        default="all",
        help="which scenario(s) to run against the baseline (default all)",
    )
    p.add_argument(
        "--deals",
        type=int,
        default=None,
        help=f"runs per scenario (default {DEFAULT_DEALS_ONE} for one scenario, "
        f"{DEFAULT_DEALS_ALL} each for all)",
    )
    p.add_argument("--concurrency", type=int, default=4, help="runs in flight (default 4)")
    p.add_argument(
        "--rounds",
        type=int,
        default=0,
        help="interleaved rounds (default: deals / (2 * concurrency), rounded up)",
    )
    p.add_argument(
        "--warmup", type=int, default=None, help="warm-up runs per scenario (default: concurrency)"
    )
    p.add_argument("--poll-ms", type=float, default=10.0, help="status query interval (default 10)")
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="where the JSON goes")
    p.add_argument(
        "--campaign-contacts",
        type=int,
        default=CAMPAIGN_CONTACTS,
        help=f"campaigns: contacts x 3 email steps (default {CAMPAIGN_CONTACTS})",
    )
    p.add_argument(
        "--campaign-replies",
        type=int,
        default=CAMPAIGN_REPLIES,
        help=f"campaigns: replies timed (default {CAMPAIGN_REPLIES})",
    )
    p.add_argument(
        "--campaign-waiting",
        type=int,
        default=CAMPAIGN_WAITING,
        help=f"campaigns: sequences left waiting, worker RSS then (default {CAMPAIGN_WAITING:,})",
    )
    p.add_argument(
        "--profile-seconds",
        type=float,
        default=0.0,
        help="campaigns: py-spy the worker this long during the campaign (0: off)",
    )
    p.add_argument(
        "--list-deals",
        type=int,
        default=ListsScenario.deals,
        help=f"lists: deals seeded in the database (default {ListsScenario.deals:,})",
    )
    p.add_argument(
        "--list-clients",
        type=int,
        default=ListsScenario.clients,
        help=f"lists: concurrent clients (default {ListsScenario.clients})",
    )
    args = p.parse_args(argv)
    args.campaigns = args.scenario in ("campaigns", "all")
    if args.scenario == "all":
        args.scenarios = list(SCENARIOS)
    else:  # campaigns alone runs no deal scenario
        args.scenarios = [] if args.campaigns else [args.scenario]
    if args.deals is None:
        args.deals = DEFAULT_DEALS_ALL if len(args.scenarios) > 1 else DEFAULT_DEALS_ONE
    if args.campaign_contacts < 1 or args.campaign_replies < 1 or args.campaign_waiting < 0:
        p.error("--campaign-contacts and --campaign-replies must be >= 1, --campaign-waiting >= 0")
    if args.deals < 1 or args.concurrency < 1 or args.rounds < 0 or args.poll_ms <= 0:
        p.error("--deals and --concurrency must be >= 1, --rounds >= 0, --poll-ms > 0")
    if args.warmup is None:
        args.warmup = args.concurrency
    if args.list_deals < 5 or args.list_clients < 1:
        p.error("--list-deals must be >= 5 and --list-clients >= 1")
    ListsScenario.deals, ListsScenario.clients = args.list_deals, args.list_clients
    return args


def _fmt(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.1f}"


LABEL = 44


def _row(name: str, s: dict) -> str:
    return f"{name:<{LABEL}}{s['n']:>9}" + "".join(
        f"{_fmt(s[c]):>9}" for c in ("median", "p90", "p99", "max")
    )


def report(results: Results, cfg: Config) -> dict:
    baseline = summarize(results.baseline_ms)
    summary: dict = {"baseline": baseline}
    cols = ("n", "median", "p90", "p99", "max")
    head = f"{'scenario':<{LABEL}}" + "".join(f"{c:>9}" for c in cols)
    say("")
    say(head + "   (ms)")
    say("-" * len(head))
    say(_row("baseline (NoopWorkflow)", baseline))
    ratio_rows = []
    for scenario in results.scenarios:
        batch = results.batches[scenario.name]
        part: dict = {}
        for m in scenario.metrics:
            s = summarize(batch.samples.get(m.key, []))
            part[m.key] = s
            say(_row(m.label, s))
            if m.headline:
                r = ratios(s, baseline)
                part[f"ratio_{m.key}_over_baseline"] = r
                ratio_rows.append((m.short or m.key, r))
        part["poll_round_trip"] = summarize(batch.poll_rtt_ms)
        part["polls_per_wait"] = summarize([float(x) for x in batch.polls])
        summary[scenario.name] = part
    say("-" * len(head))
    for label, r in ratio_rows:
        say(
            f"{label + ' / baseline':<{LABEL}}{'':>9}{'x' + _fmt(r['median']):>9}{'':>9}"
            f"{'x' + _fmt(r['p99']):>9}"
        )
    say("")
    say(
        f"polling resolution (every {cfg.poll_ms:g} ms; a figure marked seen is late by up to "
        "about one interval plus one round trip):"
    )
    for scenario in results.scenarios:
        rtt, polls = (
            summary[scenario.name]["poll_round_trip"],
            summary[scenario.name]["polls_per_wait"],
        )
        say(
            f"  {scenario.name}: {scenario.poll_what}, round trip median {_fmt(rtt['median'])} ms "
            f"(p99 {_fmt(rtt['p99'])}), up to ~{cfg.poll_ms + rtt['median']:.0f} ms; "
            f"{_fmt(polls['median'])} polls per wait (median)"
        )
    if cfg.deals < 100:
        say(f"p99 of {cfg.deals} samples is interpolated between the two largest: read it as ~max.")
    return summary


def write_json(path_dir: Path, cfg: Config, stack_info: dict, results: Results, summary: dict):
    path_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = path_dir / f"{stamp}.json"
    doc = {
        "timestamp": stamp,
        "config": {
            "deals": cfg.deals,
            "concurrency": cfg.concurrency,
            "rounds": len(cfg.round_sizes()),
            "round_sizes": cfg.round_sizes(),
            "warmup": cfg.warmup,
            "poll_ms": cfg.poll_ms,
            "scenarios": [sc.name for sc in results.scenarios],
        },
        "machine": machine(),
        "stack": stack_info,
        "summary_ms": summary,
        "rounds": results.rounds,
        "samples_ms": {
            "baseline": results.baseline_ms,
            **{
                name: {**batch.samples, "polls_per_wait": batch.polls}
                for name, batch in results.batches.items()
            },
        },
    }
    write_results(path, doc)
    return path


async def amain(args: argparse.Namespace) -> int:
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    assert main_task is not None
    loop.add_signal_handler(signal.SIGTERM, main_task.cancel)
    cfg = Config(
        deals=args.deals,
        concurrency=args.concurrency,
        rounds=args.rounds,
        warmup=args.warmup,
        poll_ms=args.poll_ms,
    )
    if args.scenarios:
        async with bench_stack(say) as stack:
            stack_info = {
                "database": stack.database,
                "temporal": "dev server (WorkflowEnvironment.start_local)",
                "worker": "separate process (python worker.py)",
                "api": "separate process (uvicorn)",
                "sandbox": "separate process (python -m sandbox)",
                "stripe": "stripe-mock, separate process",
            }
            results = await run_scenarios(stack, cfg, args.scenarios, say)
        summary = report(results, cfg)
        path = write_json(args.results_dir, cfg, stack_info, results, summary)
        say(f"results: {path}")
    if args.campaigns:
        # Its own stack (a fresh worker and dev server), with its own baseline of the same shape.
        say("\n==> campaigns: throughput against a NoopSequence baseline, then reply latency")
        return await campaigns.amain(
            campaigns.parse_args(
                [
                    f"--contacts={args.campaign_contacts}",
                    f"--replies={args.campaign_replies}",
                    f"--waiting={args.campaign_waiting}",
                    "--noops=20",
                    f"--poll-ms={args.poll_ms}",
                    f"--results-dir={args.results_dir}",
                    f"--profile-seconds={args.profile_seconds}",
                ]
            )
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Quiet the in-process pieces (sandbox, Temporal client); the worker and API log to files.
    logging.basicConfig(level=logging.WARNING)
    # pgserver's platformdirs warns about an unset XDG_RUNTIME_DIR (containers); harmless here.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    try:
        return asyncio.run(amain(args))
    except KeyboardInterrupt:
        say("\ninterrupted; the stack was stopped")
        return 130
    except asyncio.CancelledError:
        say("\nterminated; the stack was stopped")
        return 143
    except (StackError, BenchError) as err:
        say(f"error: {err}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
