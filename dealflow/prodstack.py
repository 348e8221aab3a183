"""The production-shaped stack on one machine, for ``make prod-check`` (``dealflow/prodcheck.py``).

    async with prod_stack(say) as stack:
        stack.client            # Temporal client on the real server (pydantic data converter)
        stack.api_urls          # two API processes
        await stack.stop_temporal(); await stack.start_temporal()
        await stack.kill_worker(0); await stack.kill_api(1); await stack.start_api(1)

In order:

1. PostgreSQL: DATABASE_URL's server (then with fresh, suffixed database names, dropped at the
   end), or a throw-away cluster in a temp dir from the system's PostgreSQL (Debian's
   ``postgresql`` package, which scripts/dev installs), listening on 127.0.0.1 like a real one.
   Not pgserver: its build has no contrib extensions, and Temporal's SQL visibility schema
   (v1.2 on) needs ``btree_gin`` for its search-attribute indexes.
2. ``temporal-sql-tool`` (``sql``, built from the server's Go module) creates the ``temporal`` and
   ``temporal_visibility`` databases, ``setup-schema -v 0.0`` and ``update-schema -d`` each from
   the module's ``schema/postgresql/v12/{temporal,visibility}/versioned`` (what compose's
   ``temporal-schema`` job runs with the admin-tools image).
3. The real Temporal server (``server start``, all four services in one process) with
   ``config/temporal/production.yaml``: PostgreSQL persistence, SQL visibility. The values that
   differ from compose (ports, the socket, the database names) are environment variables.
4. The namespace (``RegisterNamespace``) and the search attributes of ``dealflow.ids``
   (``OperatorService.AddSearchAttributes``), idempotently.
5. The sandbox, stripe-mock, dealflow's own database (Alembic), **two workers** and **two API
   processes** (uvicorn, each on its own port), as separate processes, each started by the one
   launcher in ``dealflow/stack.py`` (``Child``, ``start_sandbox``, ``start_stripe_mock``,
   ``service_env``, ``start_api``); what is here is only what differs from the dev stack.

What does not depend on each other starts side by side, to keep the check cheap enough for CI:
the sandbox and stripe-mock start first and come up during the rest, dealflow's Alembic
migration runs beside Temporal's schema tool, and the API processes start together.

The faults the check injects are methods here, so the check reads as a story.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.api.workflowservice.v1 import (
    DescribeNamespaceRequest,
    RegisterNamespaceRequest,
)
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from dealflow.ids import SEARCH_ATTRIBUTES
from dealflow.settings import PROJECT_ROOT
from dealflow.stack import (
    Child,
    StackError,
    bind_api_socket,
    drop_database,
    free_port,
    migrate,
    port_is_open,
    service_env,
    start_api,
    start_sandbox,
    start_stripe_mock,
    start_worker,
    until,
    wait_worker_ready,
    with_database,
)
from dealflow.temporal import DATA_CONVERTER
from dealflow.tools import (
    STRIPE_MOCK,
    TEMPORAL_SERVER,
    TEMPORAL_SQL_TOOL,
    ensure_tool,
    temporal_schema_dir,
)

CONFIG_DIR = PROJECT_ROOT / "config" / "temporal"
DYNAMIC_CONFIG = CONFIG_DIR / "dynamicconfig" / "production.yaml"
SERVER_ENV_NAME = "production"  # `--env`: the server reads config/temporal/production.yaml
NAMESPACE = "default"
# Closed workflows stay queryable (and replayable in the UI) this long; compose uses the same.
RETENTION = timedelta(days=30)
# Hang guards for start-up, not performance expectations: the server's first start creates
# its shards and system workflows; on a loaded 2-core machine that is tens of seconds.
START_TIMEOUT = 180.0
INDEXED_TYPES = {key.name: key.indexed_value_type for key in SEARCH_ATTRIBUTES}


@dataclass
class Postgres:
    """Where PostgreSQL is, in the shapes its three clients want."""

    server_url: str  # libpq URL of the server's maintenance database (psycopg, Alembic)
    host: str
    port: int
    user: str
    password: str
    socket_dir: str | None  # pgserver listens on a Unix socket only

    @classmethod
    def from_url(cls, url: str) -> Postgres:
        parts = urlsplit(url)
        socket_dir = parse_qs(parts.query).get("host", [None])[0]
        return cls(
            server_url=url,
            host=parts.hostname or "localhost",
            port=parts.port or 5432,
            user=unquote(parts.username or "postgres"),
            password=unquote(parts.password or ""),
            socket_dir=socket_dir,
        )

    def sql_tool_args(self) -> list[str]:
        args = [
            "--plugin",
            "postgres12_pgx",
            "--ep",
            self.host,
            "--port",
            str(self.port),
            "--user",
            self.user,
            "--password",
            self.password,
        ]
        if self.socket_dir:
            args += ["--connect-attributes", f"host={self.socket_dir}"]
        return args


def system_postgres_bindir() -> Path:
    """The newest installed PostgreSQL (Debian layout) whose contrib has btree_gin."""
    found = []
    for bindir in Path("/usr/lib/postgresql").glob("*/bin"):
        version = bindir.parent.name
        share = Path("/usr/share/postgresql") / version / "extension"
        if (bindir / "initdb").is_file() and (share / "btree_gin.control").is_file():
            found.append((int(version) if version.isdigit() else 0, bindir))
    if not found:
        raise StackError(
            "prod-check needs a PostgreSQL with the btree_gin extension (Temporal's SQL "
            "visibility): install Debian's `postgresql` package (scripts/dev does, as root), "
            "or set DATABASE_URL to such a server"
        )
    return max(found)[1]


def _as_postgres_user(argv: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root; setpriv execs (no extra process between us and it,
    # so our SIGTERM is its SIGTERM: a fast, clean shutdown).
    if os.geteuid() != 0:
        return argv
    return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", *argv]


def _make_data_dir(data_dir: Path) -> None:
    data_dir.mkdir(parents=True)
    if os.geteuid() == 0:
        import pwd  # POSIX only, like PostgreSQL's own layout here

        pw = pwd.getpwnam("postgres")
        os.chown(data_dir, pw.pw_uid, pw.pw_gid)
        # The temp dir above it is 0700 (root's): postgres must be able to traverse it.
        os.chmod(data_dir.parent, 0o711)  # noqa: S103 - traverse only, no listing


async def start_system_postgres(data_dir: Path, log_dir: Path) -> tuple[Child, str]:
    """initdb a fresh cluster in ``data_dir`` and run it on a free 127.0.0.1 port."""
    bindir = system_postgres_bindir()
    await asyncio.to_thread(_make_data_dir, data_dir)
    await _run(
        _as_postgres_user(
            [str(bindir / "initdb"), "-D", str(data_dir), "-U", "postgres", "--auth=trust"]
        ),
        "initdb",
        log_dir / "initdb.log",
    )
    port = free_port()
    child = await Child.start(
        "postgresql",
        _as_postgres_user(
            [
                str(bindir / "postgres"),
                "-D",
                str(data_dir),
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-k",
                str(data_dir),
                # Temporal opens up to maxConns per store per service (4 services), dealflow a
                # pool per process: more than the default 100.
                "-c",
                "max_connections=300",
            ]
        ),
        dict(os.environ),
        log_dir,
    )

    async def accepting() -> bool | None:
        return True if await asyncio.to_thread(port_is_open, port) else None

    await until("PostgreSQL", accepting, START_TIMEOUT, (child,))
    url = f"postgresql://postgres@127.0.0.1:{port}/postgres"

    async def connectable() -> bool | None:
        try:
            await asyncio.to_thread(with_database, url, "postgres")
        except Exception:  # noqa: BLE001 - starting up: "the database system is starting up"
            return None
        return True

    await until("PostgreSQL accepting sessions", connectable, START_TIMEOUT, (child,))
    return child, url


_taken: set[int] = set()


def free_server_port() -> int:
    """A free port below 32768: the server stores its services' ports in SMALLINT columns
    (cluster_membership), so the kernel's ephemeral range (32768+) makes it fail to start."""
    while True:
        port = 20000 + secrets.randbelow(12768)
        if port in _taken:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _taken.add(port)
        return port


@dataclass
class ServerPorts:
    frontend: int = field(default_factory=free_server_port)
    frontend_http: int = field(default_factory=free_server_port)
    frontend_membership: int = field(default_factory=free_server_port)
    history: int = field(default_factory=free_server_port)
    history_membership: int = field(default_factory=free_server_port)
    matching: int = field(default_factory=free_server_port)
    matching_membership: int = field(default_factory=free_server_port)
    worker: int = field(default_factory=free_server_port)
    worker_membership: int = field(default_factory=free_server_port)

    def env(self) -> dict[str, str]:
        return {
            "TEMPORAL_FRONTEND_PORT": str(self.frontend),
            "TEMPORAL_FRONTEND_HTTP_PORT": str(self.frontend_http),
            "TEMPORAL_FRONTEND_MEMBERSHIP_PORT": str(self.frontend_membership),
            "TEMPORAL_HISTORY_PORT": str(self.history),
            "TEMPORAL_HISTORY_MEMBERSHIP_PORT": str(self.history_membership),
            "TEMPORAL_MATCHING_PORT": str(self.matching),
            "TEMPORAL_MATCHING_MEMBERSHIP_PORT": str(self.matching_membership),
            "TEMPORAL_WORKER_PORT": str(self.worker),
            "TEMPORAL_WORKER_MEMBERSHIP_PORT": str(self.worker_membership),
        }


@dataclass
class ProdStack:
    client: Client
    temporal_address: str
    api_urls: list[str]
    sandbox_url: str
    state_dir: Path
    log_dir: Path
    database: str  # where PostgreSQL is, for the report
    build_seconds: dict[str, float]
    # internals used by the fault methods
    _server_argv: list[str] = field(repr=False, default_factory=list)
    _server_env: dict[str, str] = field(repr=False, default_factory=dict)
    _child_env: dict[str, str] = field(repr=False, default_factory=dict)
    _api_ports: list[int] = field(repr=False, default_factory=list)
    server: Child | None = None
    workers: list[Child | None] = field(default_factory=list)
    apis: list[Child | None] = field(default_factory=list)
    others: list[Child] = field(default_factory=list)
    _starts: dict[str, int] = field(default_factory=dict)

    def children(self) -> tuple[Child, ...]:
        found = [self.server, *self.workers, *self.apis, *self.others]
        return tuple(c for c in found if c is not None)

    def _log_name(self, name: str) -> str:
        # A restarted process logs to a new file: the first run's log stays readable.
        n = self._starts.get(name, 0)
        self._starts[name] = n + 1
        return name if n == 0 else f"{name}.{n}"

    # --- the Temporal server -------------------------------------------------------------

    async def start_temporal(self) -> None:
        self.server = await Child.start(
            self._log_name("temporal-server"), self._server_argv, self._server_env, self.log_dir
        )
        await until(
            "Temporal frontend serving", self._frontend_serving, START_TIMEOUT, (self.server,)
        )

    async def _frontend_serving(self) -> bool | None:
        try:
            await self.client.workflow_service.describe_namespace(
                DescribeNamespaceRequest(namespace=NAMESPACE), timeout=timedelta(seconds=3)
            )
            return True
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                return True  # serving; the namespace is registered next
            return None
        except RuntimeError:  # the lazy client's first connection: not listening yet
            return None

    async def stop_temporal(self, *, kill: bool = False) -> None:
        assert self.server is not None
        if kill:
            self.server.proc.kill()
            await self.server.proc.wait()
        await self.server.stop()
        self.server = None

    # --- workers and API processes ---------------------------------------------------------

    async def start_worker(self, i: int) -> None:
        child = await start_worker(self._child_env, self.log_dir, self._log_name(f"worker-{i}"))
        while len(self.workers) <= i:
            self.workers.append(None)
        self.workers[i] = child

    async def kill_worker(self, i: int) -> None:
        """SIGKILL: no graceful shutdown, its activities in flight are abandoned mid-way."""
        child = self.workers[i]
        assert child is not None
        child.proc.send_signal(signal.SIGKILL)
        await child.proc.wait()
        await child.stop()
        self.workers[i] = None

    def freeze_worker(self, i: int) -> None:
        """SIGSTOP: the worker holds its connections but does nothing until thawed."""
        child = self.workers[i]
        assert child is not None
        child.proc.send_signal(signal.SIGSTOP)

    def thaw_worker(self, i: int) -> None:
        child = self.workers[i]
        assert child is not None
        child.proc.send_signal(signal.SIGCONT)

    async def start_api(self, i: int) -> None:
        # The same port every time, so the check's client keeps its two addresses.
        sock = bind_api_socket(self._api_ports[i])
        while len(self.apis) <= i:
            self.apis.append(None)
        self.apis[i] = await start_api(
            self._child_env, self.log_dir, sock, self._log_name(f"api-{i}"), ready_path="/healthz"
        )

    async def kill_api(self, i: int) -> None:
        child = self.apis[i]
        assert child is not None
        child.proc.send_signal(signal.SIGKILL)
        await child.proc.wait()
        await child.stop()
        self.apis[i] = None

    def check_alive(self) -> None:
        for child in self.children():
            child.check_alive()


def _tail(log: Path, lines: int = 15) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


async def _run(argv: list[str], what: str, log: Path, env: dict[str, str] | None = None) -> None:
    with log.open("ab") as out:
        out.write(f"$ {' '.join(argv)}\n".encode())
        out.flush()
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=out, stderr=asyncio.subprocess.STDOUT, env=env, cwd=PROJECT_ROOT
        )
        code = await proc.wait()
    if code != 0:
        tail = await asyncio.to_thread(_tail, log)
        raise StackError(f"{what} failed (exit {code}); {log}:\n{tail}")


async def setup_temporal_schema(
    sql_tool: Path, pg: Postgres, databases: dict[str, str], log: Path
) -> None:
    """create-database, setup-schema -v 0.0, update-schema to the newest version, per database:
    exactly the steps of compose's temporal-schema job. Re-running on a migrated database is a
    no-op (create tolerates an existing database, update finds nothing newer)."""
    schema = temporal_schema_dir()
    base = [str(sql_tool), *pg.sql_tool_args()]
    for kind, name in databases.items():  # kind: "temporal" or "visibility"
        db = [*base, "--db", name]
        await _run([*db, "create-database"], f"create-database {name}", log)
        await _run([*db, "setup-schema", "-v", "0.0"], f"setup-schema {name}", log)
        versioned = schema / kind / "versioned"
        await _run([*db, "update-schema", "-d", str(versioned)], f"update-schema {name}", log)


async def register_namespace_and_search_attributes(client: Client) -> None:
    """Idempotent: an existing namespace or attribute (of the same type) is fine."""
    try:
        await client.workflow_service.register_namespace(
            RegisterNamespaceRequest(
                namespace=NAMESPACE, workflow_execution_retention_period=RETENTION
            )
        )
    except RPCError as err:
        if err.status != RPCStatusCode.ALREADY_EXISTS:
            raise

    async def namespace_known() -> bool | None:
        try:
            await client.workflow_service.describe_namespace(
                DescribeNamespaceRequest(namespace=NAMESPACE)
            )
            return True
        except RPCError:
            return None

    await until("namespace registered", namespace_known, START_TIMEOUT)

    async def listed() -> dict[str, int]:
        resp = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=NAMESPACE)
        )
        return dict(resp.custom_attributes)

    async def listed_once_known() -> dict[str, int] | None:
        # The namespace registry of each service refreshes every few seconds: NOT_FOUND
        # right after registering means "not yet".
        try:
            return await listed()
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                return None
            raise

    have = await until("namespace in the registry", listed_once_known, START_TIMEOUT)
    for name, kind in INDEXED_TYPES.items():
        if name in have and have[name] != int(kind):
            raise StackError(f"search attribute {name} exists with another type ({have[name]})")
    missing = {name: int(kind) for name, kind in INDEXED_TYPES.items() if name not in have}
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=NAMESPACE, search_attributes=missing)
        )

    # Every service caches namespaces (refreshed every few seconds): wait until a query by each
    # attribute is accepted, so the first workflow's upsert does not meet a stale cache.
    async def queryable() -> bool | None:
        have = await listed_once_known() or {}
        if not set(INDEXED_TYPES) <= have.keys():
            return None
        try:
            for name in INDEXED_TYPES:
                await client.count_workflows(f"{name} IS NOT NULL")
        except RPCError:
            return None
        return True

    await until("search attributes queryable", queryable, START_TIMEOUT, interval=0.5)


@contextlib.asynccontextmanager
async def prod_stack(
    say: Callable[[str], None] = print, *, workers: int = 2, apis: int = 2
) -> AsyncIterator[ProdStack]:
    build_seconds: dict[str, float] = {}
    for tool in (TEMPORAL_SERVER, TEMPORAL_SQL_TOOL, STRIPE_MOCK):
        started = time.monotonic()
        path = await asyncio.to_thread(ensure_tool, tool, out=sys.stdout)
        build_seconds[tool.binary] = time.monotonic() - started
        say(f"==> {tool.binary}: {path}")
    server_bin = ensure_tool(TEMPORAL_SERVER)
    sql_bin = ensure_tool(TEMPORAL_SQL_TOOL)

    async with contextlib.AsyncExitStack() as stack:
        # Removed when the block ends cleanly; kept (logs, the database) when it fails.
        state_dir = Path(tempfile.mkdtemp(prefix="dealflow-prod-"))

        def cleanup(exc_type, exc, tb) -> bool:  # noqa: ANN001
            if exc_type is None:
                shutil.rmtree(state_dir, ignore_errors=True)
            else:
                say(f"    kept {state_dir} (logs under logs/)")
            return False

        stack.push(cleanup)
        log_dir = state_dir / "logs"
        log_dir.mkdir()
        say(f"    logs in {log_dir}")

        # 1. PostgreSQL
        server_url = os.environ.get("DATABASE_URL")
        suffix = ""
        if server_url:
            where = "DATABASE_URL's server, temporary databases"
            suffix = f"_{uuid.uuid4().hex[:8]}"
        else:
            bindir = system_postgres_bindir()
            where = f"a fresh cluster of {bindir.parent.parent.name} {bindir.parent.name}"
            say(f"==> PostgreSQL: {where} in a temp dir, on 127.0.0.1")
            pg_child, server_url = await start_system_postgres(state_dir / "pg", log_dir)
            stack.push_async_callback(pg_child.stop)
        if suffix:
            say(f"==> PostgreSQL: {where}")
        pg = Postgres.from_url(server_url.replace("postgresql+psycopg://", "postgresql://"))
        temporal_db, visibility_db = f"temporal{suffix}", f"temporal_visibility{suffix}"
        dealflow_db = f"dealflow{suffix}"
        if suffix:

            def drop_all() -> None:
                for name in (temporal_db, visibility_db, dealflow_db):
                    with contextlib.suppress(Exception):
                        drop_database(pg.server_url, name)

            stack.callback(drop_all)

        # The sandbox and stripe-mock need nothing of the rest: they start now and come up while
        # the schemas are migrated (the sandbox's readiness is awaited below, before the workers).
        api_ports = [free_port() for _ in range(apis)]
        api_urls = [f"http://127.0.0.1:{p}" for p in api_ports]
        # Slack clicks and DocuSign Connect go to the first API (a load balancer's job in
        # production; the check kills the second one).
        sandbox, sandbox_ready = await start_sandbox(state_dir, log_dir, api_urls[0])
        stack.push_async_callback(sandbox.stop)
        stripe, stripe_url = await start_stripe_mock(log_dir)
        stack.push_async_callback(stripe.stop)

        # 2. Temporal's schema, by its own tool, and dealflow's (Alembic) side by side
        say(f"==> temporal-sql-tool: create and migrate {temporal_db}, {visibility_db}")
        say(f"==> dealflow database {dealflow_db}: alembic upgrade head (meanwhile)")

        async def dealflow_schema() -> str:
            url = await asyncio.to_thread(with_database, pg.server_url, dealflow_db)
            await asyncio.to_thread(migrate, url)
            return url

        # Both run to their end; then the first failure is raised as it is (a StackError is the
        # check's "stack broke", exit 2).
        done = await asyncio.gather(
            setup_temporal_schema(
                sql_bin,
                pg,
                {"temporal": temporal_db, "visibility": visibility_db},
                log_dir / "schema.log",
            ),
            dealflow_schema(),
            return_exceptions=True,
        )
        for outcome in done:
            if isinstance(outcome, BaseException):
                raise outcome
        database_url = done[1]
        assert isinstance(database_url, str)

        # 3. The real server
        ports = ServerPorts()
        server_env = dict(
            os.environ,
            **ports.env(),
            TEMPORAL_DB_HOST=pg.host,
            TEMPORAL_DB_PORT=str(pg.port),
            TEMPORAL_DB_USER=pg.user,
            TEMPORAL_DB_PASSWORD=pg.password,
            TEMPORAL_DB_NAME=temporal_db,
            TEMPORAL_VISIBILITY_DB_NAME=visibility_db,
            TEMPORAL_BIND_IP="127.0.0.1",
            TEMPORAL_BROADCAST_ADDRESS="127.0.0.1",
            TEMPORAL_DYNAMIC_CONFIG=str(DYNAMIC_CONFIG),
            TEMPORAL_LOG_LEVEL="warn",
            # 4 services x 2 stores x this, within max_connections above.
            TEMPORAL_DB_MAX_CONNS="10",
        )
        if pg.socket_dir:
            server_env["TEMPORAL_DB_SOCKET_DIR"] = pg.socket_dir
        server_argv = [
            str(server_bin),
            "--root",
            str(PROJECT_ROOT),
            "--config",
            str(CONFIG_DIR.relative_to(PROJECT_ROOT)),
            "--env",
            SERVER_ENV_NAME,
            "start",
        ]
        temporal_address = f"127.0.0.1:{ports.frontend}"
        client = await Client.connect(
            temporal_address, namespace=NAMESPACE, data_converter=DATA_CONVERTER, lazy=True
        )

        prod = ProdStack(
            client=client,
            temporal_address=temporal_address,
            api_urls=api_urls,
            sandbox_url="",
            state_dir=state_dir,
            log_dir=log_dir,
            database=where,
            build_seconds=build_seconds,
            _server_argv=server_argv,
            _server_env=server_env,
            _api_ports=api_ports,
        )

        async def stop_all() -> None:
            for child in reversed(prod.children()):
                with contextlib.suppress(Exception):
                    await child.stop()

        stack.push_async_callback(stop_all)

        say(f"==> Temporal server {TEMPORAL_SERVER.version} on {temporal_address} (PostgreSQL)")
        started = time.monotonic()
        await prod.start_temporal()
        say(f"    serving after {time.monotonic() - started:.1f}s")
        say(f"==> namespace {NAMESPACE!r} and search attributes (operator API)")
        await register_namespace_and_search_attributes(client)

        # 5. The rest, as in bench.stack (the sandbox and stripe-mock were started above)
        say("==> sandbox, stripe-mock")
        sb = await sandbox_ready()
        prod.sandbox_url = sb.http_url
        prod.others += [sandbox, stripe]
        prod._child_env = service_env(
            database_url=database_url,
            temporal_address=temporal_address,
            state_dir=state_dir,
            public_base_url=api_urls[0],
            sandbox=sb,
            stripe_url=stripe_url,
            DEALFLOW_TEMPORAL_NAMESPACE=NAMESPACE,
        )
        say(f"==> {workers} worker process(es), {apis} API process(es)")
        for i in range(workers):
            await prod.start_worker(i)
        # The API processes import and come up side by side (each waits for its /healthz).
        await asyncio.gather(*(prod.start_api(i) for i in range(apis)))

        await wait_worker_ready(client, prod.children(), "prod")
        yield prod
        prod.check_alive()
        say("==> stopping the stack")
