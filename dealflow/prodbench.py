"""The campaign benchmark (``bench.campaigns``) on the production-shaped stack of prod-check.

    python -m dealflow.prodbench --workers 1 --contacts 300
    python -m dealflow.prodbench --workers 2 --contacts 300

Every argument but ``--workers`` goes to ``bench.campaigns`` unchanged. The benchmark's own
stack (the dev server, one worker) is swapped for ``dealflow.prodstack`` (the real server on
PostgreSQL with SQL visibility, N workers, one API process): the same scenario, the same
figures, for the README's "How it scales" comparison.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import AsyncIterator, Callable

import bench.campaigns
from bench.stack import BenchStack
from dealflow.ids import TASK_QUEUE
from dealflow.prodstack import prod_stack


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dealflow.prodbench", add_help=False)
    p.add_argument("--workers", type=int, default=1)
    ours, rest = p.parse_known_args(argv)

    @contextlib.asynccontextmanager
    async def stack(say: Callable[[str], None] = print) -> AsyncIterator[BenchStack]:
        async with prod_stack(say, workers=ours.workers, apis=1) as prod:
            yield BenchStack(
                client=prod.client,
                api_url=prod.api_urls[0],
                sandbox_url=prod.sandbox_url,
                temporal_address=prod.temporal_address,
                task_queue=TASK_QUEUE,
                state_dir=prod.state_dir,
                database=f"{prod.database}; Temporal server, {ours.workers} worker(s)",
                logs={c.name: c.log_path for c in prod.children()},
            )

    # bench.campaigns opens its stack through this module-level name; nothing else changes.
    bench.campaigns.bench_stack = stack
    return bench.campaigns.main(rest)


if __name__ == "__main__":
    sys.exit(main())
