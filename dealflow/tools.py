"""The Go-built tools the stack needs: the Temporal CLI (dev server) and stripe-mock, and for
``make prod-check`` the real Temporal server and its SQL schema tool.

A binary already on PATH or already built into ``.tools/bin`` is used as is; otherwise it is
built with ``go install`` into ``.tools/bin``. These versions are the newest whose go.mod allows a
plain ``go install`` (later Temporal CLI tags carry replace directives that forbid it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from dealflow.settings import PROJECT_ROOT

TOOLS_BIN = PROJECT_ROOT / ".tools" / "bin"


@dataclass(frozen=True)
class GoTool:
    binary: str
    module: str
    version: str
    env_var: str  # an explicit path wins over everything else
    # False for binaries with generic names (`go install` names them after the package: the
    # server is `server`, the schema tool `sql`), which must not be taken from PATH.
    on_path: bool = True
    first_build: str = "~5 min for temporal on 2 cores"  # what the progress line promises


TEMPORAL = GoTool(
    "temporal", "github.com/temporalio/cli/cmd/temporal", "v1.5.1", "DEALFLOW_TEMPORAL_BIN"
)
STRIPE_MOCK = GoTool(
    "stripe-mock", "github.com/stripe/stripe-mock", "v0.197.0", "DEALFLOW_STRIPE_MOCK_BIN"
)
# The real server (frontend, history, matching and worker services in one process) and
# temporal-sql-tool, for `make prod-check`; the same version as the compose images.
TEMPORAL_SERVER_VERSION = "v1.29.1"
TEMPORAL_SERVER = GoTool(
    "server",
    "go.temporal.io/server/cmd/server",
    TEMPORAL_SERVER_VERSION,
    "DEALFLOW_TEMPORAL_SERVER_BIN",
    on_path=False,
    first_build="~2.5 min on 2 cores with the CLI's build cache warm",
)
TEMPORAL_SQL_TOOL = GoTool(
    "sql",
    "go.temporal.io/server/cmd/tools/sql",
    TEMPORAL_SERVER_VERSION,
    "DEALFLOW_TEMPORAL_SQL_TOOL_BIN",
    on_path=False,
    first_build="seconds once the server is built",
)


class ToolError(RuntimeError):
    pass


def find_tool(tool: GoTool) -> Path | None:
    explicit = os.environ.get(tool.env_var)
    if explicit and Path(explicit).is_file():
        return Path(explicit)
    local = TOOLS_BIN / tool.binary
    if local.is_file() and os.access(local, os.X_OK):
        return local
    on_path = shutil.which(tool.binary) if tool.on_path else None
    return Path(on_path) if on_path else None


def ensure_tool(tool: GoTool, *, out=sys.stderr) -> Path:
    """Find the tool, or build it with ``go install``, printing progress while Go works."""
    found = find_tool(tool)
    if found:
        return found
    go = shutil.which("go")
    if go is None:
        raise ToolError(
            f"{tool.binary} is not on PATH nor in .tools/bin, and Go is not installed "
            "to build it.\n"
            f"Install Go 1.22 or newer (Debian/Ubuntu: apt-get install golang-go), or put a "
            f"{tool.binary} binary on PATH, then run this again."
        )
    TOOLS_BIN.mkdir(parents=True, exist_ok=True)
    target = f"{tool.module}@{tool.version}"
    print(f"==> building {tool.binary} ({target}) into .tools/bin", file=out, flush=True)
    print(
        f"    first build takes a while (measured: {tool.first_build})",
        file=out,
        flush=True,
    )
    env = dict(
        os.environ, GOBIN=str(TOOLS_BIN), GOFLAGS=os.environ.get("GOFLAGS", "-buildvcs=false")
    )
    started = time.monotonic()
    proc = subprocess.Popen(
        [go, "install", "-v", target],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    done = threading.Event()

    def tick() -> None:
        while not done.wait(15):
            compiled = sum(1 for line in lines if not line.startswith("go: "))
            print(
                f"    ... {tool.binary}: {compiled} packages compiled, "
                f"{time.monotonic() - started:.0f}s",
                file=out,
                flush=True,
            )

    ticker = threading.Thread(target=tick, daemon=True)
    ticker.start()
    assert proc.stderr is not None
    for line in proc.stderr:
        lines.append(line.rstrip())
    code = proc.wait()
    done.set()
    if code != 0:
        tail = "\n".join(lines[-20:])
        raise ToolError(f"go install {target} failed (exit {code}):\n{tail}")
    print(f"    built {tool.binary} in {time.monotonic() - started:.0f}s", file=out, flush=True)
    return TOOLS_BIN / tool.binary


def temporal_schema_dir(version: str = TEMPORAL_SERVER_VERSION) -> Path:
    """The server's PostgreSQL schema files (``temporal/``, ``visibility/``), from Go's module
    cache, where ``go install`` of the server put its source."""
    go = shutil.which("go")
    if go is None:
        raise ToolError("Go is not installed: the Temporal schema files come from its module cache")
    modcache = subprocess.run(
        [go, "env", "GOMODCACHE"], capture_output=True, text=True, check=True
    ).stdout.strip()
    schema = Path(modcache) / f"go.temporal.io/server@{version}" / "schema/postgresql/v12"
    if not (schema / "temporal" / "versioned").is_dir():
        # Only the source is needed; `go mod download` fetches it without building anything.
        subprocess.run([go, "mod", "download", f"go.temporal.io/server@{version}"], check=True)
    if not (schema / "temporal" / "versioned").is_dir():
        raise ToolError(f"Temporal schema files not found under {schema}")
    return schema
