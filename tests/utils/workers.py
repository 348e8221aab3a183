"""Start a real ``python worker.py`` process against the test session's servers."""

from __future__ import annotations

import asyncio
import subprocess

from dealflow.settings import PROJECT_ROOT, Settings
from dealflow.stack import WORKER_ARGV, SandboxAddresses, service_env


def start_worker(
    settings: Settings,
    task_queue: str,
    crash_at: str = "",
    *,
    render_processes: int = 1,
    **extra_env: str,
) -> subprocess.Popen:
    """The environment is the launcher's (``dealflow/stack.py::service_env``), from ``settings``.

    One renderer process by default: a cold crash-test worker is polling sooner on 2 cores with
    the other test process busy; a test whose deals render side by side asks for more."""
    env = service_env(
        database_url=settings.require_database_url(),
        temporal_address=settings.temporal_address,
        state_dir=settings.state_dir,
        public_base_url=settings.public_base_url,
        sandbox=SandboxAddresses(
            http_url=settings.sandbox_url,
            https_url=f"https://{settings.docusign_oauth_host}",
            smtp_port=settings.smtp_port,
            ca_cert_path=str(settings.docusign_ca_cert or ""),
        ),
        stripe_url=settings.stripe_api_base,
        # The test's own, as given (service_env would derive them from the sandbox's address).
        DEALFLOW_SLACK_API_URL=settings.slack_api_url,
        DEALFLOW_CRM_API_URL=settings.crm_api_url,
        DEALFLOW_TASK_QUEUE=task_queue,
        DEALFLOW_CRASH_AT=crash_at,
        DEALFLOW_LOG_LEVEL="WARNING",
        DEALFLOW_RENDER_PROCESSES=str(render_processes),
        **extra_env,
    )
    if not settings.docusign_ca_cert:
        env.pop("DEALFLOW_DOCUSIGN_CA_CERT")  # an empty path is not "none"
    return subprocess.Popen(WORKER_ARGV, cwd=PROJECT_ROOT, env=env)


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
