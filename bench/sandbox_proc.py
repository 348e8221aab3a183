"""The sandbox as the benchmark's child process: ``python -m bench.sandbox_proc``.

Like ``python -m sandbox``, but every port is chosen by the system (no window in which another
process could take a port picked as free) and, once both servers answer, their addresses are
written as JSON to ``--ready-file`` (written whole, then renamed), which the benchmark waits for.
Runs until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
from pathlib import Path

from sandbox.server import run_sandbox


async def serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with run_sandbox(
        state_dir=args.state_dir,
        interactions_url=args.interactions_url,
        connect_url=args.connect_url,
    ) as sb:
        ready = {
            "http_url": sb.http_url,
            "https_url": sb.https_url,
            "smtp_port": sb.smtp_port,
            "ca_cert_path": str(sb.ca_cert_path),
        }
        tmp = args.ready_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(ready))
        tmp.rename(args.ready_file)
        await stop.wait()


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.sandbox_proc")
    p.add_argument("--state-dir", type=Path, required=True)
    p.add_argument("--ready-file", type=Path, required=True)
    p.add_argument("--interactions-url", required=True)
    p.add_argument("--connect-url", required=True)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
