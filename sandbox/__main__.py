"""`python -m sandbox`: run the local stand-ins for dealflow's outside parties.

    python -m sandbox --http-port 8090 --smtp-port 2525 --state-dir .state/sandbox

Runs until SIGINT or SIGTERM, then stops both servers and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
from collections.abc import Sequence
from pathlib import Path

from sandbox.files import write_atomically
from sandbox.server import DEFAULT_HOST, RunningSandbox, run_sandbox

logger = logging.getLogger("sandbox")


class _DropLoginDataDeprecation(logging.Filter):
    """Drop aiosmtpd 1.4's warning about Session.login_data.

    aiosmtpd sets that attribute itself on every successful AUTH, so the warning fires for
    every logged-in send and says nothing about this process.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "Session.login_data is deprecated" not in record.getMessage()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox",
        description="Local SMTP and HTTP servers that play dealflow's outside parties.",
    )
    parser.add_argument("--http-port", type=int, default=8090, help="HTTP port (0: any free)")
    parser.add_argument("--smtp-port", type=int, default=2525, help="SMTP port (0: any free)")
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=Path(".state/sandbox"),
        help="where captured traffic is kept across restarts",
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help="address both servers bind to")
    parser.add_argument(
        "--interactions-url",
        help="where Slack button clicks are posted, e.g. "
        "http://127.0.0.1:8000/v1/webhooks/slack/interactions",
    )
    parser.add_argument("--slack-signing-secret", help="default: config/sandbox.toml [secrets]")
    parser.add_argument("--slack-bot-token", help="default: config/sandbox.toml [secrets]")
    parser.add_argument(
        "--org-path",
        type=Path,
        default=None,
        help="org directory: the Slack users (default config/org.toml)",
    )
    parser.add_argument(
        "--https-port", type=int, default=8443, help="HTTPS port for DocuSign OAuth (0: any free)"
    )
    parser.add_argument(
        "--connect-url",
        help="where DocuSign Connect events are posted, e.g. "
        "http://127.0.0.1:8000/v1/webhooks/docusign",
    )
    parser.add_argument(
        "--ready-file",
        type=Path,
        help="once both servers answer, write their addresses here as JSON (written whole, then "
        "renamed): how dealflow/stack.py learns the ports the system chose",
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    """Run the sandbox until SIGINT or SIGTERM."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    handled = (signal.SIGINT, signal.SIGTERM)
    for signum in handled:
        loop.add_signal_handler(signum, stop.set)
    try:
        async with run_sandbox(
            http_port=args.http_port,
            smtp_port=args.smtp_port,
            state_dir=args.state_dir,
            host=args.host,
            interactions_url=args.interactions_url,
            slack_signing_secret=args.slack_signing_secret,
            slack_bot_token=args.slack_bot_token,
            org_path=args.org_path,
            https_port=args.https_port,
            connect_url=args.connect_url,
        ) as sb:
            if args.ready_file is not None:
                _write_ready(args.ready_file, sb)
            await stop.wait()
            logger.info("stopping")
    finally:
        for signum in handled:
            loop.remove_signal_handler(signum)


def _write_ready(path: Path, sb: RunningSandbox) -> None:
    ready = {
        "http_url": sb.http_url,
        "https_url": sb.https_url,
        "smtp_port": sb.smtp_port,
        "ca_cert_path": str(sb.ca_cert_path),
    }
    write_atomically(path, json.dumps(ready).encode())


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # aiosmtpd logs every connection and SMTP command at INFO, httpx every readiness
    # probe; our own line per captured message says what matters.
    smtp_log = logging.getLogger("mail.log")
    smtp_log.setLevel(logging.WARNING)
    smtp_log.addFilter(_DropLoginDataDeprecation())
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        asyncio.run(serve(args))
    except OSError as error:
        # Almost always a port already taken; the message says which, a traceback adds nothing.
        logger.error("sandbox stopped: %s", error)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
