"""Start a real ``python worker.py`` process against the test session's servers."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

from dealflow.settings import PROJECT_ROOT, Settings


def start_worker(
    settings: Settings, task_queue: str, crash_at: str = "", **extra_env: str
) -> subprocess.Popen:
    env = dict(
        os.environ,
        DEALFLOW_PROFILE="sandbox",  # explicit: the settings default to production
        DATABASE_URL=settings.require_database_url(),
        TEMPORAL_ADDRESS=settings.temporal_address,
        DEALFLOW_TASK_QUEUE=task_queue,
        DEALFLOW_STATE_DIR=str(settings.state_dir),
        DEALFLOW_PUBLIC_BASE_URL=settings.public_base_url,
        DEALFLOW_SLACK_API_URL=settings.slack_api_url,
        DEALFLOW_SMTP_PORT=str(settings.smtp_port),
        DEALFLOW_DOCUSIGN_OAUTH_HOST=settings.docusign_oauth_host,
        DEALFLOW_STRIPE_API_BASE=settings.stripe_api_base,
        DEALFLOW_CRM_API_URL=getattr(settings, "crm_api_url", ""),
        DEALFLOW_CRASH_AT=crash_at,
        DEALFLOW_LOG_LEVEL="WARNING",
    )
    env.update(extra_env)
    if settings.docusign_ca_cert:
        env["DEALFLOW_DOCUSIGN_CA_CERT"] = str(settings.docusign_ca_cert)
    return subprocess.Popen([sys.executable, "worker.py"], cwd=PROJECT_ROOT, env=env)


async def wait_exit(proc: subprocess.Popen, timeout: float = 60) -> int:
    deadline = asyncio.get_running_loop().time() + timeout
    while proc.poll() is None:
        if asyncio.get_running_loop().time() > deadline:
            proc.kill()
            raise AssertionError("the worker did not reach its crash point")
        await asyncio.sleep(0.05)
    return proc.returncode


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
