"""The sandbox process: one HTTP app and the protocol servers that play outside parties.

`create_sandbox_app` builds the HTTP app; each outside party adds its router to it (mail
now; Slack under `/slack/api/...`, DocuSign and CRM later). `run_sandbox` runs the app and
the SMTP server together in the current event loop, for `python -m sandbox` and for tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from aiosmtpd.controller import Controller
from fastapi import FastAPI

from dealflow.settings import load_sandbox_file
from sandbox import crm as crm_sandbox
from sandbox.docusign import routes as docusign_sandbox
from sandbox.mail import (
    MAIL_LOG_FILENAME,
    MailCaptureHandler,
    MailStore,
    accept_any_login,
    create_mail_router,
)
from sandbox.slack.routes import create_slack_router
from sandbox.slack.store import SlackStore
from sandbox.slack.workspace import SLACK_LOG_FILENAME, SlackWorkspace
from sandbox.tls import ensure_self_signed_cert

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
# The name the SMTP server greets with. Setting it avoids aiosmtpd's default,
# socket.getfqdn(), which can stall start-up for seconds on machines with slow DNS.
SMTP_GREETING_NAME = "dealflow-sandbox"
# Between readiness probes. A poll interval, not a guess at how long start-up takes:
# the deadline (ready_timeout) is what bounds the wait.
_READY_POLL_INTERVAL = 0.02


class SandboxState:
    """Everything the sandbox has received, grouped by outside party, and where it lives.

    One object so that every router reads and writes the same stores, and so that a test
    can look at them directly without going through HTTP.
    """

    def __init__(self, *, state_dir: Path, mail: MailStore, slack: SlackStore) -> None:
        self.state_dir = state_dir
        self.mail = mail
        self.slack = slack

    @classmethod
    def open(
        cls, state_dir: str | Path, *, slack_workspace: SlackWorkspace | None = None
    ) -> SandboxState:
        """Load (or start) the stores kept under `state_dir`, creating it if needed.

        `slack_workspace` defaults to the org directory and config/sandbox.toml's secrets.
        """
        directory = Path(state_dir)
        directory.mkdir(parents=True, exist_ok=True)
        return cls(
            state_dir=directory,
            mail=MailStore(directory / MAIL_LOG_FILENAME),
            slack=SlackStore(
                directory / SLACK_LOG_FILENAME,
                slack_workspace if slack_workspace is not None else SlackWorkspace.load(),
            ),
        )


def create_sandbox_app(
    state: SandboxState,
    *,
    docusign_base_uri: str | None = None,
    connect_url: str | None = None,
    docusign_hmac_key: str | None = None,
) -> FastAPI:
    """Build the sandbox's HTTP app around `state`.

    DocuSign and the CRM keep their own stores (under the same state dir); they are attached to
    `app.state` as `docusign` and `crm` for tests that look at them directly.
    """
    app = FastAPI(
        title="dealflow sandbox",
        description="Local stand-ins for the outside parties dealflow talks to.",
    )
    app.state.sandbox = state
    app.include_router(create_mail_router(state.mail))
    app.include_router(create_slack_router(state.slack))
    docusign_options: dict[str, Any] = {}
    if docusign_base_uri:
        docusign_options["base_uri"] = docusign_base_uri
    app.state.docusign = docusign_sandbox.install(
        app,
        state.state_dir,
        connect_url=connect_url,
        hmac_key=docusign_hmac_key or load_sandbox_file()["secrets"]["docusign_connect_hmac_key"],
        **docusign_options,
    )
    app.state.crm = crm_sandbox.install(app, state.state_dir)

    @app.get("/_sandbox/healthz", tags=["sandbox"])
    async def healthz() -> dict[str, bool]:
        """Liveness, also what `run_sandbox` polls before it hands the sandbox over."""
        return {"ok": True}

    return app


@dataclass(frozen=True)
class RunningSandbox:
    """Where a running sandbox can be reached, and its stores."""

    http_url: str
    smtp_host: str
    smtp_port: int
    https_url: str  # the same app over TLS: DocuSign's SDK only does OAuth over https
    ca_cert_path: Path  # the self-signed certificate clients trust for `https_url`
    state: SandboxState


def _listening_socket(host: str, port: int) -> socket.socket:
    """Bind a TCP socket now, so port 0 becomes a real free port we hold until serving.

    Holding the bound socket (rather than asking for a free port, closing it and binding
    again) leaves no window in which another process could take the port.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        # Lets a restarted sandbox rebind its fixed port while old connections sit in
        # TIME_WAIT; it does not allow two live listeners on one port.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise OSError(error.errno, f"cannot listen on {host}:{port}: {error.strerror}") from error
    return sock


class _SocketController(Controller):
    """aiosmtpd's threaded Controller serving on a socket we already bound.

    aiosmtpd runs the SMTP server in its own thread and event loop; the store it writes
    to is thread-safe for that reason.
    """

    def __init__(self, handler: Any, *, sock: socket.socket, **kwargs: Any) -> None:
        host, port = sock.getsockname()[:2]
        super().__init__(handler, hostname=host, port=port, **kwargs)
        self._sock = sock

    def _create_server(self) -> Awaitable[asyncio.AbstractServer]:
        # The documented extension point for how the listener is created.
        return self.loop.create_server(self._factory_invoker, sock=self._sock, ssl=self.ssl_context)


class _EmbeddedUvicornServer(uvicorn.Server):
    """uvicorn.Server that leaves SIGINT/SIGTERM to whoever runs it.

    uvicorn's own handlers would stop only the HTTP side and then re-raise the signal,
    skipping the SMTP server's shutdown; in tests they would also take over pytest's Ctrl-C.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def _http_ready(client: httpx.AsyncClient, url: str) -> bool:
    try:
        response = await client.get(f"{url}/_sandbox/healthz")
    except httpx.TransportError:
        return False
    return response.status_code == 200


async def _smtp_ready(host: str, port: int) -> bool:
    """True once the SMTP server answers a connection with its 220 greeting."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 1.0)
    except (OSError, TimeoutError):
        return False
    try:
        greeting = await asyncio.wait_for(reader.readline(), 1.0)
        writer.write(b"QUIT\r\n")
        await writer.drain()
        return greeting.startswith(b"220")
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _wait_until_ready(
    sandbox: RunningSandbox, serve_task: asyncio.Task[None], *, deadline: float
) -> None:
    """Probe both servers until each has answered once, or fail at `deadline` (loop time)."""
    loop = asyncio.get_running_loop()
    http_ok = smtp_ok = False
    async with httpx.AsyncClient(trust_env=False, timeout=1.0) as client:
        while True:
            if serve_task.done():
                cause = None if serve_task.cancelled() else serve_task.exception()
                raise RuntimeError("the sandbox HTTP server stopped while starting") from cause
            http_ok = http_ok or await _http_ready(client, sandbox.http_url)
            smtp_ok = smtp_ok or await _smtp_ready(sandbox.smtp_host, sandbox.smtp_port)
            if http_ok and smtp_ok:
                return
            if loop.time() >= deadline:
                raise TimeoutError(
                    f"sandbox not ready in time (http ready: {http_ok}, smtp ready: {smtp_ok})"
                )
            await asyncio.sleep(_READY_POLL_INTERVAL)


async def _stop_http(server: uvicorn.Server, serve_task: asyncio.Task[None]) -> None:
    server.should_exit = True
    await serve_task


@contextlib.asynccontextmanager
async def run_sandbox(
    *,
    state_dir: str | Path,
    http_port: int = 0,
    smtp_port: int = 0,
    host: str = DEFAULT_HOST,
    ready_timeout: float = 10.0,
    interactions_url: str | None = None,
    slack_signing_secret: str | None = None,
    slack_bot_token: str | None = None,
    org_path: str | Path | None = None,
    https_port: int = 0,
    connect_url: str | None = None,
    docusign_hmac_key: str | None = None,
) -> AsyncIterator[RunningSandbox]:
    """Run the sandbox's HTTP and SMTP servers until the block exits.

    A port of 0 means any free port; the chosen ones are on the yielded `RunningSandbox`.
    Both servers accept connections before this yields; on exit both are stopped and
    their ports released. `interactions_url` is where Slack button clicks are posted; the
    Slack secrets default to config/sandbox.toml's and the users to config/org.toml.
    """
    state = SandboxState.open(
        state_dir,
        slack_workspace=SlackWorkspace.load(
            org_path=org_path,
            bot_token=slack_bot_token,
            signing_secret=slack_signing_secret,
            interactions_url=interactions_url,
        ),
    )
    deadline = asyncio.get_running_loop().time() + ready_timeout
    async with contextlib.AsyncExitStack() as stack:
        http_sock = _listening_socket(host, http_port)
        stack.callback(http_sock.close)
        smtp_sock = _listening_socket(host, smtp_port)
        stack.callback(smtp_sock.close)
        https_sock = _listening_socket(host, https_port)
        stack.callback(https_sock.close)
        tls = ensure_self_signed_cert(state.state_dir)
        reachable = "127.0.0.1" if host in ("0.0.0.0", "") else host  # noqa: S104 - a comparison
        http_url = f"http://{reachable}:{http_sock.getsockname()[1]}"
        https_url = f"https://{reachable}:{https_sock.getsockname()[1]}"

        controller = _SocketController(
            MailCaptureHandler(state.mail),
            sock=smtp_sock,
            ready_timeout=ready_timeout,
            server_hostname=SMTP_GREETING_NAME,
            authenticator=accept_any_login,
            auth_require_tls=False,
        )
        try:
            await asyncio.to_thread(controller.start)
        except BaseException:
            await asyncio.to_thread(controller.stop, no_assert=True)
            raise
        stack.push_async_callback(asyncio.to_thread, controller.stop)

        app = create_sandbox_app(
            state,
            docusign_base_uri=http_url,
            connect_url=connect_url,
            docusign_hmac_key=docusign_hmac_key,
        )
        config = uvicorn.Config(
            app,
            log_config=None,  # keep the process's logging configuration
            access_log=False,  # tests poll the mail endpoint; one line per poll is noise
        )
        server = _EmbeddedUvicornServer(config)
        serve_task = asyncio.create_task(server.serve(sockets=[http_sock]), name="sandbox-http")
        stack.push_async_callback(_stop_http, server, serve_task)
        tls_config = uvicorn.Config(
            app,
            log_config=None,
            access_log=False,
            ssl_certfile=str(tls.cert_path),
            ssl_keyfile=str(tls.key_path),
            # The SDK keeps idle keep-alive connections; do not wait on them at shutdown.
            timeout_graceful_shutdown=1,
        )
        tls_server = _EmbeddedUvicornServer(tls_config)
        tls_task = asyncio.create_task(tls_server.serve(sockets=[https_sock]), name="sandbox-https")
        stack.push_async_callback(_stop_http, tls_server, tls_task)

        # Bound to every interface (--host 0.0.0.0, in a container): clients on this
        # machine, and the readiness probes, still connect through loopback.
        sandbox = RunningSandbox(
            http_url=http_url,
            smtp_host=reachable,
            smtp_port=smtp_sock.getsockname()[1],
            https_url=https_url,
            ca_cert_path=tls.cert_path,
            state=state,
        )
        await _wait_until_ready(sandbox, serve_task, deadline=deadline)
        logger.info(
            "sandbox ready: http=%s smtp=%s:%d state_dir=%s",
            sandbox.http_url,
            sandbox.smtp_host,
            sandbox.smtp_port,
            state.state_dir,
        )
        yield sandbox
