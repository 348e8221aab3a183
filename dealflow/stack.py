"""Pieces of the local stack shared by ``make run``, the tests and the benchmarks."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from alembic import command
from alembic.config import Config

from dealflow.settings import PROJECT_ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def wait_for_port(port: int, *, timeout: float, host: str = "127.0.0.1", what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not port_is_open(port, host):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what or 'service'} did not open {host}:{port} in {timeout:.0f}s")
        time.sleep(0.05)


def start_embedded_postgres(data_dir: Path):  # -> (pgserver.PostgresServer, url)
    """Real PostgreSQL from the pgserver wheel; data kept in ``data_dir``, stopped at exit."""
    import pgserver  # imported here: only the embedded path needs it

    data_dir.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(str(data_dir), cleanup_mode="stop")
    return server, server.get_uri()


def with_database(url: str, name: str) -> str:
    """The same server URL pointing at database ``name``, created if missing."""
    parts = urlsplit(url)
    with psycopg.connect(url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')
    return urlunsplit(parts._replace(path=f"/{name}"))


def drop_database(url: str, name: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def migrate(url: str) -> None:
    """Apply Alembic migrations up to head."""
    cfg = Config(str(PROJECT_ROOT / "alembic.ini"))
    cfg.attributes["database_url"] = url
    cfg.attributes["configure_logger"] = False
    command.upgrade(cfg, "head")
