"""``python -m bench``: deal closure latency against the NoopWorkflow baseline, on the real stack.

    python -m bench                       # 30 runs per scenario, 4 in flight
    python -m bench --deals 10 --concurrency 2

``make bench`` runs this with DEALFLOW_TEMPORAL_BIN set. See bench/README.md for how to read it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import platform
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path

import temporalio

from bench.closure import BenchError, Config, Results, run_scenarios
from bench.stack import StackError, bench_stack
from bench.stats import ratios, summarize

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def say(msg: str) -> None:
    print(msg, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--deals", type=int, default=30, help="runs per scenario (default 30)")
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
    args = p.parse_args(argv)
    if args.deals < 1 or args.concurrency < 1 or args.rounds < 0 or args.poll_ms <= 0:
        p.error("--deals and --concurrency must be >= 1, --rounds >= 0, --poll-ms > 0")
    if args.warmup is None:
        args.warmup = args.concurrency
    return args


def _fmt(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.1f}"


def report(results: Results, cfg: Config) -> dict:
    baseline = summarize(results.baseline_ms)
    deal = summarize([r.total_ms for r in results.deals])
    post = summarize([r.post_ms for r in results.deals])
    queries = [q for r in results.deals for q in r.query_ms]
    query = summarize(queries)
    polls = summarize([float(r.polls) for r in results.deals])
    ratio = ratios(deal, baseline)

    cols = ("n", "median", "p90", "p99", "max")
    head = f"{'scenario':<28}" + "".join(f"{c:>9}" for c in cols)
    say("")
    say(head + "   (ms)")
    say("-" * len(head))
    for name, s in (
        ("baseline (NoopWorkflow)", baseline),
        ("deal closure", deal),
        ("  of which POST ready-to-close", post),
    ):
        say(f"{name:<28}{s['n']:>9}" + "".join(f"{_fmt(s[c]):>9}" for c in cols[1:]))
    say("-" * len(head))
    say(
        f"{'deal / baseline':<28}{'':>9}{'x' + _fmt(ratio['median']):>9}{'':>9}"
        f"{'x' + _fmt(ratio['p99']):>9}"
    )
    say("")
    say(
        f"polling resolution: status query every {cfg.poll_ms:g} ms, query round trip median "
        f"{_fmt(query['median'])} ms (p99 {_fmt(query['p99'])}); deal figures are when the "
        f"stage was seen, up to ~{cfg.poll_ms + query['median']:.0f} ms after it was set "
        f"({_fmt(polls['median'])} polls per deal, median)."
    )
    if deal["n"] < 100:
        say(f"p99 of {deal['n']} samples is interpolated between the two largest: read it as ~max.")
    return {
        "baseline": baseline,
        "deal_closure": deal,
        "ready_to_close_post": post,
        "status_query": query,
        "polls_per_deal": polls,
        "ratio_deal_over_baseline": ratio,
    }


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
        },
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "temporalio": temporalio.__version__,
        },
        "stack": stack_info,
        "summary_ms": summary,
        "rounds": results.rounds,
        "samples_ms": {
            "baseline": results.baseline_ms,
            "deal_closure": [r.total_ms for r in results.deals],
            "ready_to_close_post": [r.post_ms for r in results.deals],
            "polls_per_deal": [r.polls for r in results.deals],
        },
    }
    path.write_text(json.dumps(_clean(doc), indent=1, allow_nan=False) + "\n")
    return path


def _clean(obj):
    """NaN -> None, so the JSON stays valid."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    return obj


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
    async with bench_stack(say) as stack:
        stack_info = {
            "database": stack.database,
            "temporal": "dev server (WorkflowEnvironment.start_local)",
            "worker": "separate process (python worker.py)",
            "api": "separate process (uvicorn)",
        }
        results = await run_scenarios(stack, cfg, say)
    summary = report(results, cfg)
    path = write_json(args.results_dir, cfg, stack_info, results, summary)
    say(f"results: {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Quiet the in-process pieces (sandbox, Temporal client); the worker and API log to files.
    logging.basicConfig(level=logging.WARNING)
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
