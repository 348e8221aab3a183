"""The one configuration object, read from the environment (prefix ``DEALFLOW_``).

Two profiles:

* ``sandbox`` (default for ``make run`` and ``make test``): every secret that is not set comes from
  the committed dev-only file ``config/sandbox.toml``, and the sandbox servers stand in for Slack,
  DocuSign, Stripe (stripe-mock), the CRM and SMTP.
* ``production``: every secret must come from the environment and must not be a placeholder or a
  value copied from the sandbox file; the service refuses to start otherwise, naming the variable.
  The ``/_sandbox`` routes answer 404.
"""

from __future__ import annotations

import tomllib
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = PROJECT_ROOT / "config"
SANDBOX_FILE = CONFIG_DIR / "sandbox.toml"

# The secrets the service holds, by field name. Each is refused in production when missing or a
# placeholder. The sandbox file provides a dev-only value for each one.
SECRET_FIELDS = (
    "slack_bot_token",
    "slack_signing_secret",
    "docusign_connect_hmac_key",
    "stripe_api_key",
    "stripe_webhook_secret",
    "mail_webhook_secret",
    "link_signing_key",
)
_PLACEHOLDER_MARKERS = ("changeme", "change-me", "placeholder", "sandbox", "example", "xxx", "todo")


def load_sandbox_file(path: Path = SANDBOX_FILE) -> dict:
    with path.open("rb") as fh:
        return tomllib.load(fh)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DEALFLOW_", extra="ignore", populate_by_name=True)

    profile: Literal["sandbox", "production"] = "sandbox"
    state_dir: Path = PROJECT_ROOT / ".state"

    # Persistence. Unset in the sandbox profile: the dev stack starts an embedded PostgreSQL
    # (pgserver) and passes its URL down to every process it starts.
    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "DEALFLOW_DATABASE_URL")
    )

    # Temporal
    temporal_address: str = Field(
        default="127.0.0.1:7233",
        validation_alias=AliasChoices("TEMPORAL_ADDRESS", "DEALFLOW_TEMPORAL_ADDRESS"),
    )
    temporal_namespace: str = "default"
    task_queue: str = "dealflow"

    # The API's public base URL, used in links we hand out (document URLs, approval links).
    public_base_url: str = "http://127.0.0.1:8000"

    # Configuration files (versioned, hashed where their content drives decisions).
    org_directory_path: Path = CONFIG_DIR / "org.toml"
    tax_table_path: Path = CONFIG_DIR / "tax_jurisdictions.toml"
    approval_policy_path: Path = CONFIG_DIR / "approval_policy.toml"
    templates_dir: Path = PROJECT_ROOT / "templates"

    # Who we are, as printed on contracts.
    seller_name: str = "dealflow Inc."
    seller_address: str = "100 Market Street, Suite 300, San Francisco, CA 94105, USA"

    # Activity timing. Short values make crash tests fast: after a worker dies, an activity it
    # held is retried only once its start-to-close timeout has passed.
    activity_timeout_seconds: float = 30.0

    # Outside services. In the sandbox profile these point at the local sandbox servers.
    sandbox_url: str = "http://127.0.0.1:8090"
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 2525
    stripe_api_base: str = "http://127.0.0.1:12111"
    slack_api_url: str = "http://127.0.0.1:8090/slack/api/"

    slack_bot_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    docusign_connect_hmac_key: SecretStr | None = None
    stripe_api_key: SecretStr | None = None
    stripe_webhook_secret: SecretStr | None = None
    mail_webhook_secret: SecretStr | None = None
    link_signing_key: SecretStr | None = None

    # Fault injection for crash tests: comma-separated checkpoint names at which the worker
    # process exits abruptly, once. Refused outside the sandbox profile.
    crash_at: str = ""

    @model_validator(mode="after")
    def _secrets_for_profile(self) -> Settings:
        if self.profile == "sandbox":
            sandbox_secrets = load_sandbox_file()["secrets"]
            for name in SECRET_FIELDS:
                if getattr(self, name) is None:
                    setattr(self, name, SecretStr(sandbox_secrets[name]))
            return self
        sandbox_values = set(load_sandbox_file()["secrets"].values())
        for name in SECRET_FIELDS:
            var = f"DEALFLOW_{name.upper()}"
            value = getattr(self, name)
            if value is None or not value.get_secret_value().strip():
                raise ValueError(f"{var} must be set in the production profile")
            raw = value.get_secret_value()
            if raw in sandbox_values or any(m in raw.lower() for m in _PLACEHOLDER_MARKERS):
                raise ValueError(f"{var} holds a placeholder or sandbox value; set the real secret")
        if not self.database_url:
            raise ValueError("DATABASE_URL must be set in the production profile")
        if self.crash_at:
            raise ValueError("DEALFLOW_CRASH_AT is a test hook and is refused in production")
        return self

    @property
    def is_sandbox(self) -> bool:
        return self.profile == "sandbox"

    @property
    def document_dir(self) -> Path:
        return self.state_dir / "documents"

    @cached_property
    def sandbox_file(self) -> dict:
        """The committed dev-only file: people's API keys and secrets (sandbox profile only)."""
        return load_sandbox_file() if self.is_sandbox else {}

    def require_database_url(self) -> str:
        if not self.database_url:
            raise RuntimeError(
                "DATABASE_URL is not set: start the stack with `make run`, or point DATABASE_URL "
                "at a PostgreSQL database"
            )
        return self.database_url

    def secret(self, name: str) -> str:
        value = getattr(self, name)
        assert value is not None, name  # the validator guarantees it
        return value.get_secret_value()
