"""docker-compose.yml: the production stack has the shape the design promises, and Debian's
docker-compose (the compose implementation from the package registry, installed by scripts/dev)
accepts it with every required variable set and refuses it without one."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from dealflow.ids import SEARCH_ATTRIBUTES
from dealflow.prodstack import CONFIG_DIR, SERVER_ENV_NAME
from dealflow.settings import SECRET_FIELDS
from dealflow.tools import TEMPORAL_SERVER_VERSION

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
REQUIRED_VARIABLES = (
    "POSTGRES_PASSWORD",
    "TEMPORAL_DB_PASSWORD",
    *REQUIRED_SECRETS,
    *REQUIRED_SETTINGS,
)
SERVER_CONFIG = CONFIG_DIR / f"{SERVER_ENV_NAME}.yaml"
# `{{ env "NAME" ... }}` in the server's config template.
TEMPLATE_VARIABLE = re.compile(r'env "(?P<name>[A-Z0-9_]+)"(?P<default>\s*\|\s*default)?')
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


def _compose_config(compose: str, env_file: Path, environment: dict[str, str]) -> Any:
    # An explicit, empty --env-file keeps a developer's .env from supplying values.
    return subprocess.run(
        [compose, "--env-file", str(env_file), "-f", str(COMPOSE_FILE), "config", "-q"],
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
        "temporal-schema",
        "temporal",
        "temporal-ui",
        "temporal-search-attributes",
        "api-lb",
        *OUR_SERVICES,
    } <= services.keys()

    # Official images, pinned; the server at the version prod-check builds, never auto-setup.
    server_version = TEMPORAL_SERVER_VERSION.removeprefix("v")
    assert services["postgresql"]["image"] == "postgres:16"
    assert services["temporal"]["image"] == f"temporalio/server:{server_version}"
    assert not any("auto-setup" in str(svc.get("image", "")) for svc in services.values())
    assert services["temporal-ui"]["image"].startswith("temporalio/ui:")
    for name in ("temporal-schema", "temporal-search-attributes"):
        assert services[name]["image"].startswith(f"temporalio/admin-tools:{server_version}-")
    for name, service in services.items():
        assert not str(service.get("image", "")).endswith(":latest"), name

    # PostgreSQL keeps its data in a named volume, says when it is ready, and creates the
    # temporal role on first start.
    postgresql = services["postgresql"]
    assert "postgresql-data:/var/lib/postgresql/data" in postgresql["volumes"]
    assert {"postgresql-data", "dealflow-state"} <= compose["volumes"].keys()
    assert "pg_isready" in " ".join(postgresql["healthcheck"]["test"])
    assert REQUIRED_FORM.match(_environment(postgresql)["POSTGRES_PASSWORD"])
    init = [v for v in postgresql["volumes"] if "/docker-entrypoint-initdb.d/" in v]
    assert len(init) == 1
    init_script = (PROJECT_ROOT / init[0].split(":")[0]).read_text(encoding="utf-8")
    assert "CREATE ROLE temporal LOGIN CREATEDB" in init_script

    # The schema job: Temporal's own tool, both databases, set up then migrated, once.
    schema = services["temporal-schema"]
    script = _command(schema)
    for step in ("create-database", "setup-schema -v 0.0", "update-schema -d"):
        assert f'temporal-sql-tool --db "$$db" {step}' in script, step
    assert "temporal:temporal temporal_visibility:visibility" in script
    assert "/etc/temporal/schema/postgresql/v12" in script
    schema_env = _environment(schema)
    assert schema_env["SQL_PLUGIN"] == "postgres12_pgx"
    assert schema_env["SQL_HOST"] == "postgresql"
    assert REQUIRED_FORM.match(schema_env["SQL_PASSWORD"])
    assert _depends_on(schema) == {"postgresql": "service_healthy"}
    assert schema["restart"] == "no"

    # The server: the very config prod-check starts it with, mounted, on PostgreSQL.
    temporal = services["temporal"]
    config_mount = f"./{CONFIG_DIR.relative_to(PROJECT_ROOT)}:/etc/temporal/config/dealflow:ro"
    assert config_mount in temporal["volumes"]
    assert (
        f"temporal-server --root /etc/temporal --config config/dealflow "
        f"--env {SERVER_ENV_NAME} start" in _command(temporal)
    )
    temporal_env = _environment(temporal)
    assert temporal_env["TEMPORAL_DB_HOST"] == "postgresql"
    assert REQUIRED_FORM.match(temporal_env["TEMPORAL_DB_PASSWORD"])
    template = SERVER_CONFIG.read_text(encoding="utf-8")
    assert template.startswith("# enable-template")
    assert "postgres12_pgx" in template and "visibilityStore: postgres-visibility" in template
    optional = set(re.findall(r'if env "([A-Z0-9_]+)"', template))  # blocks left out if unset
    for match in TEMPLATE_VARIABLE.finditer(template):
        if match["default"] is None and match["name"] not in optional:
            assert match["name"] in temporal_env, match["name"]  # no default: compose sets it
    dynamic = temporal_env["TEMPORAL_DYNAMIC_CONFIG"]
    assert dynamic.startswith("/etc/temporal/config/dealflow/")
    assert (CONFIG_DIR / dynamic.removeprefix("/etc/temporal/config/dealflow/")).is_file()
    assert _depends_on(temporal) == {"temporal-schema": "service_completed_successfully"}
    assert "healthcheck" in temporal

    ui = services["temporal-ui"]
    assert _environment(ui)["TEMPORAL_ADDRESS"] == "temporal:7233"
    assert any(str(port).endswith("8080:8080") for port in ui["ports"])

    # Namespace and search attributes: every one the UI filters on, once Temporal is up.
    registrar = services["temporal-search-attributes"]
    script = _command(registrar)
    assert "temporal operator cluster health --address temporal:7233" in script  # waits
    assert "temporal operator namespace create" in script
    assert "temporal operator search-attribute create" in script
    assert "--address temporal:7233" in script
    for key in SEARCH_ATTRIBUTES:  # the names the workflows upsert, defined once
        assert f"{key.name}:{CLI_TYPES[key.indexed_value_type.name]}" in script, key.name
    assert "already exists" in script  # a re-run must not fail
    assert _depends_on(registrar) == {"temporal": "service_healthy"}
    assert registrar["restart"] == "no"
    for name in ("temporal-schema", "temporal", "temporal-search-attributes"):
        # Every shell `$` is escaped, or compose would substitute it before the shell runs.
        assert "$" not in _command(services[name]).replace("$$", ""), name

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
    # Several workers and API replicas; the replicas are reached through the load balancer.
    assert services["worker"]["deploy"]["replicas"] >= 2
    assert services["api"]["deploy"]["replicas"] >= 2
    assert "ports" not in services["api"]  # replicas cannot share a host port
    lb = services["api-lb"]
    assert any(str(port).endswith("8000:8000") for port in lb["ports"])
    assert _depends_on(lb) == {"api": "service_healthy"}
    lb_conf = [v for v in lb["volumes"] if v.endswith("/etc/nginx/conf.d/default.conf:ro")]
    assert len(lb_conf) == 1
    assert "proxy_pass" in (PROJECT_ROOT / lb_conf[0].split(":")[0]).read_text(encoding="utf-8")
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

    # Compose's own validation, by Debian's docker-compose (scripts/dev installs it).
    docker_compose = shutil.which("docker-compose")
    assert docker_compose, "docker-compose is not installed (scripts/dev test installs it)"
    env_file = tmp_path / "empty.env"
    env_file.write_text("", encoding="utf-8")
    base = {k: v for k, v in os.environ.items() if k not in REQUIRED_VARIABLES}
    complete = base | {name: f"dummy-{name.lower()}" for name in REQUIRED_VARIABLES}
    valid = _compose_config(docker_compose, env_file, complete)
    assert valid.returncode == 0, valid.stderr

    for left_out in ("DEALFLOW_STRIPE_API_KEY", "TEMPORAL_DB_PASSWORD"):
        missing = {k: v for k, v in complete.items() if k != left_out}
        refused = _compose_config(docker_compose, env_file, missing)
        assert refused.returncode != 0
        assert left_out in refused.stderr
