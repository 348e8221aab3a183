"""docker-compose.yml: the production stack has the shape the design promises."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from dealflow.ids import SEARCH_ATTRIBUTES
from dealflow.settings import SECRET_FIELDS

PROJECT_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = PROJECT_ROOT / "docker-compose.yml"

OUR_SERVICES = ("migrate", "api", "worker")
# Every secret Settings refuses to start without in production (so the two cannot drift).
REQUIRED_SECRETS = tuple(f"DEALFLOW_{name.upper()}" for name in SECRET_FIELDS)
# Settings whose sandbox defaults would be wrong in production, so compose requires them.
REQUIRED_SETTINGS = (
    "DEALFLOW_PUBLIC_BASE_URL",
    "DEALFLOW_SMTP_HOST",
    "DEALFLOW_DOCUSIGN_INTEGRATION_KEY",
    "DEALFLOW_DOCUSIGN_USER_ID",
)
REQUIRED_VARIABLES = ("POSTGRES_PASSWORD", *REQUIRED_SECRETS, *REQUIRED_SETTINGS)
# The CLI's spelling of SearchAttributeKey.indexed_value_type.
CLI_TYPES = {"KEYWORD": "Keyword", "DOUBLE": "Double", "TEXT": "Text", "INT": "Int"}
# ${VAR:?message}: compose stops with the message when VAR is unset or empty.
REQUIRED_FORM = re.compile(r"^\$\{(?P<name>[A-Z0-9_]+):\?[^}]+\}$")
# Any interpolation compose would perform; `$$` is an escaped, literal dollar.
INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Za-z0-9_]+)(?P<rest>[^}]*)\}|\$(?P<bare>[A-Za-z_])")


def _environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as a dict, whichever of compose's two forms it uses."""
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        return dict(item.split("=", 1) for item in environment)
    return {key: str(value) for key, value in environment.items()}


def _depends_on(service: dict[str, Any]) -> dict[str, str]:
    """Dependency -> condition; the short list form means service_started."""
    depends = service.get("depends_on") or {}
    if isinstance(depends, list):
        return dict.fromkeys(depends, "service_started")
    return {name: spec.get("condition", "service_started") for name, spec in depends.items()}


def _command(service: dict[str, Any]) -> str:
    command = service.get("command")
    return " ".join(command) if isinstance(command, list) else str(command)


def _compose_plugin(docker: str | None) -> bool:
    if docker is None:
        return False
    try:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


def _compose_config(docker: str, env_file: Path, environment: dict[str, str]) -> Any:
    # An explicit, empty --env-file keeps a developer's .env from supplying values.
    return subprocess.run(
        [docker, "compose", "--env-file", str(env_file), "-f", str(COMPOSE_FILE), "config", "-q"],
        cwd=PROJECT_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_compose_runs_dealflow_on_official_images_and_refuses_to_start_without_secrets(
    tmp_path: Path,
) -> None:
    raw = COMPOSE_FILE.read_text(encoding="utf-8")
    compose = yaml.safe_load(raw)
    services: dict[str, dict[str, Any]] = compose["services"]

    assert {
        "postgresql",
        "temporal",
        "temporal-ui",
        "temporal-search-attributes",
        *OUR_SERVICES,
    } <= services.keys()

    # Official images, pinned.
    assert services["postgresql"]["image"] == "postgres:16"
    assert services["temporal"]["image"].startswith("temporalio/auto-setup:1.")
    assert services["temporal-ui"]["image"].startswith("temporalio/ui:")
    assert services["temporal-search-attributes"]["image"].startswith("temporalio/admin-tools:")
    for name in ("temporal", "temporal-ui", "temporal-search-attributes"):
        assert not services[name]["image"].endswith(":latest"), name

    # PostgreSQL keeps its data in a named volume and says when it is ready.
    postgresql = services["postgresql"]
    assert "postgresql-data:/var/lib/postgresql/data" in postgresql["volumes"]
    assert {"postgresql-data", "dealflow-state"} <= compose["volumes"].keys()
    assert "pg_isready" in " ".join(postgresql["healthcheck"]["test"])
    assert REQUIRED_FORM.match(_environment(postgresql)["POSTGRES_PASSWORD"])

    # Temporal persists to the postgresql service, once it is healthy.
    temporal = services["temporal"]
    temporal_env = _environment(temporal)
    assert temporal_env["DB"] == "postgres12"
    assert temporal_env["POSTGRES_SEEDS"] == "postgresql"
    assert temporal_env["DB_PORT"] == "5432"
    assert REQUIRED_FORM.match(temporal_env["POSTGRES_PWD"])
    assert _depends_on(temporal) == {"postgresql": "service_healthy"}
    assert "healthcheck" in temporal

    ui = services["temporal-ui"]
    assert _environment(ui)["TEMPORAL_ADDRESS"] == "temporal:7233"
    assert any(str(port).endswith("8080:8080") for port in ui["ports"])

    # Search attributes: every one the UI filters on, registered once Temporal is up.
    registrar = services["temporal-search-attributes"]
    script = _command(registrar)
    assert "temporal operator search-attribute create" in script
    assert "--address temporal:7233" in script
    for key in SEARCH_ATTRIBUTES:  # the names the workflows upsert, defined once
        assert f"{key.name}:{CLI_TYPES[key.indexed_value_type.name]}" in script, key.name
    assert "already exists" in script  # a re-run must not fail
    assert _depends_on(registrar) == {"temporal": "service_healthy"}
    assert registrar["restart"] == "no"
    # Every shell `$` is escaped, or compose would substitute it before the shell runs.
    assert "$" not in script.replace("$$", "")

    # dealflow's own services: our image, the production profile, every secret required.
    for name in OUR_SERVICES:
        service = services[name]
        assert service["build"] == ".", name
        assert service["image"].startswith("dealflow:"), name
        env = _environment(service)
        assert env["DEALFLOW_PROFILE"] == "production", name
        assert env["TEMPORAL_ADDRESS"] == "temporal:7233", name
        assert env["DATABASE_URL"].startswith("postgresql+psycopg://dealflow:"), name
        assert env["DATABASE_URL"].endswith("@postgresql:5432/dealflow"), name
        assert "${POSTGRES_PASSWORD:?" in env["DATABASE_URL"], name
        for secret in (*REQUIRED_SECRETS, *REQUIRED_SETTINGS):
            match = REQUIRED_FORM.match(env.get(secret, ""))
            assert match and match["name"] == secret, f"{name}: {secret} must be ${{{secret}:?...}}"
        assert env["DEALFLOW_STRIPE_API_BASE"] == "https://api.stripe.com", name
        assert env["DEALFLOW_SLACK_API_URL"] == "https://slack.com/api/", name
        # The worker writes documents that the API serves: one volume, one path.
        assert env["DEALFLOW_STATE_DIR"] == "/var/lib/dealflow", name
        assert "dealflow-state:/var/lib/dealflow" in service["volumes"], name

    assert _command(services["migrate"]) == "alembic upgrade head"
    assert _depends_on(services["migrate"]) == {"postgresql": "service_healthy"}
    assert services["migrate"]["restart"] == "no"
    assert _command(services["worker"]) == "python worker.py"
    assert _command(services["api"]).startswith("uvicorn api.app:create_app --factory")
    assert any(str(port).endswith("8000:8000") for port in services["api"]["ports"])
    for name in ("api", "worker"):
        assert _depends_on(services[name]) == {
            "migrate": "service_completed_successfully",
            "temporal": "service_healthy",
            "temporal-search-attributes": "service_completed_successfully",
        }, name

    # Nothing is interpolated silently: each variable is required or has a default.
    for match in INTERPOLATION.finditer(raw.replace("$$", "")):
        assert match["bare"] is None, f"unbraced ${match['bare']}... would be interpolated"
        rest = match["rest"]
        assert rest.startswith(":?") or rest.startswith(":-"), match.group(0)
        if rest.startswith(":-"):
            assert match["name"] not in REQUIRED_VARIABLES, match.group(0)

    # Compose's own validation, where the plugin is installed.
    docker = shutil.which("docker")
    if _compose_plugin(docker):
        assert docker is not None
        env_file = tmp_path / "empty.env"
        env_file.write_text("", encoding="utf-8")
        base = {k: v for k, v in os.environ.items() if k not in REQUIRED_VARIABLES}
        complete = base | {name: f"dummy-{name.lower()}" for name in REQUIRED_VARIABLES}
        valid = _compose_config(docker, env_file, complete)
        assert valid.returncode == 0, valid.stderr

        missing = {k: v for k, v in complete.items() if k != "DEALFLOW_STRIPE_API_KEY"}
        refused = _compose_config(docker, env_file, missing)
        assert refused.returncode != 0
        assert "DEALFLOW_STRIPE_API_KEY" in refused.stderr
