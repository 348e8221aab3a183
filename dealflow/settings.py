"""The one configuration object, read from the environment (prefix ``DEALFLOW_``).

Two profiles:

* ``production`` (the default, so a deployment that forgets ``DEALFLOW_PROFILE`` fails closed):
  every secret must come from the environment, must not be a placeholder or a value copied from
  the sandbox file, and must be strong enough (see ``secret_strength_problem``); the service
  refuses to start otherwise, naming the variable. The ``/_sandbox`` routes answer 404.
* ``sandbox`` (set explicitly by ``make run``, ``make test``, ``make bench`` and the test suite):
  every secret that is not set comes from the committed dev-only file ``config/sandbox.toml``, and
  the sandbox servers stand in for Slack, DocuSign, Stripe (stripe-mock), the CRM and SMTP.
"""

from __future__ import annotations

import os
import tomllib
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from dealflow.ids import TASK_QUEUE

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
    "docusign_private_key",
    "crm_api_token",
)
# Refused anywhere in a secret (long enough never to occur by chance in a real key)...
_PLACEHOLDER_MARKERS = ("changeme", "change-me", "placeholder", "sandbox")
# ...and refused as the whole value.
_PLACEHOLDER_VALUES = frozenset(
    {"secret", "password", "xxx", "todo", "dummy", "test", "example", "none", "null"}
)
# Minimum strength of a production secret. 32 characters is the shortest real value among the
# vendors' secrets (a Slack signing secret is 32 hex digits = 128 bits; DocuSign Connect keys,
# Stripe webhook secrets and API keys, Slack and HubSpot tokens are longer), and 128 bits is
# what an HMAC key needs. Our own keys (link signing, mail webhook) should be
# `secrets.token_urlsafe(32)` (43 characters). A random value of that length has far more than
# 8 distinct characters; fewer means a typed pattern ("aaaa...", "abab...").
MIN_SECRET_LENGTH = 32
MIN_SECRET_DISTINCT_CHARS = 8


def secret_strength_problem(value: str) -> str | None:
    """Why ``value`` is too weak for a production secret, or None when it is acceptable.

    Refused: shorter than MIN_SECRET_LENGTH characters (surrounding whitespace not counted),
    fewer than MIN_SECRET_DISTINCT_CHARS distinct characters, or one short unit repeated
    ("abcabcabc..."). The message never contains the value.
    """
    raw = value.strip()
    if len(raw) < MIN_SECRET_LENGTH:
        return f"is too short ({len(raw)} characters; at least {MIN_SECRET_LENGTH} required)"
    if len(set(raw)) < MIN_SECRET_DISTINCT_CHARS:
        return (
            f"has only {len(set(raw))} distinct characters (at least "
            f"{MIN_SECRET_DISTINCT_CHARS} required): use a random value"
        )
    # A string is a repetition of a shorter unit iff it occurs in itself rotated.
    if (raw + raw).find(raw, 1) < len(raw):
        return "is one short sequence repeated: use a random value"
    return None


def load_sandbox_file(path: Path = SANDBOX_FILE) -> dict:
    with path.open("rb") as fh:
        return tomllib.load(fh)


def default_render_processes() -> int:
    """One renderer per core the process may run on, less one, and at least one.

    WeasyPrint keeps a core busy for the whole of a render. With a renderer on every core, a few
    deals rendering at once take the whole host and the orchestration waits behind them: the
    worker's own event loop (workflow tasks, every other activity), and on a small host the
    Temporal server and the API. Measured with `python -m bench` on the 2-core machine, two runs
    of each in a row: every stage-0 approver asked, p99 4.1 s with two renderers and 2.4 s with
    one (medians 2.8 and 2.0 s); Connect completed -> closed_won p99 4.5 and 3.9 s. The price:
    on 2 cores a package renders its documents one after another (ready-to-close ->
    awaiting_approval p99 4.0 -> 4.7 s), which no approver waits for, since they are asked while
    the contract renders. The cores counted are those of the CPU affinity mask: in a container
    with a CPU quota but no cpuset, set DEALFLOW_RENDER_PROCESSES to the quota less one."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 2
    return max(1, min(16, cores - 1))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DEALFLOW_", extra="ignore", populate_by_name=True)

    # Production unless told otherwise: forgetting DEALFLOW_PROFILE must never serve the sandbox
    # secrets and API keys (/_sandbox/config) or run with the committed dev-only secrets.
    profile: Literal["sandbox", "production"] = "production"
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
    task_queue: str = TASK_QUEUE  # the name is defined once, in dealflow/ids.py

    # The API's public base URL, used in links we hand out (document URLs, approval links).
    public_base_url: str = "http://127.0.0.1:8000"

    # Configuration files (versioned, hashed where their content drives decisions).
    org_directory_path: Path = CONFIG_DIR / "org.toml"
    tax_table_path: Path = CONFIG_DIR / "tax_jurisdictions.toml"
    approval_policy_path: Path = CONFIG_DIR / "approval_policy.toml"
    commission_policy_path: Path = CONFIG_DIR / "commission.toml"
    onboarding_config_path: Path = CONFIG_DIR / "onboarding.toml"  # the handoff's plans
    templates_dir: Path = PROJECT_ROOT / "templates"
    # Renderer processes per worker (dealflow/render_pool.py): documents render side by side,
    # off the worker's event loop. About 70 MB each. The default leaves one core to everything
    # else (see default_render_processes).
    render_processes: int = Field(default_factory=lambda: default_render_processes(), ge=1, le=16)
    # Workflows the worker keeps in memory between their tasks (the SDK's sticky cache). A
    # cached workflow's next task runs without replaying its history; an evicted one is replayed
    # when it next wakes. Campaign sequences sleep for days between steps, so most need not stay
    # cached: the cache, not the number of live workflows, bounds the worker's memory (bench:
    # `make bench`, "memory", 10,000 waiting sequences). Sized for the deals and sequences that
    # are busy at once on one worker, with room to spare.
    workflow_cache_size: int = Field(default=1000, ge=0, le=100_000)

    # Who we are, as printed on contracts.
    seller_name: str = "dealflow Inc."
    seller_address: str = "100 Market Street, Suite 300, San Francisco, CA 94105, USA"

    # Activity timing. Short values make crash tests fast: after a worker dies, an activity it
    # held is retried only once its start-to-close timeout has passed.
    activity_timeout_seconds: float = 30.0

    # Approvals. When set, every approval SLA is this many wall-clock seconds instead of the
    # policy's hours (short-SLA tests and demos of reminders and escalation).
    approval_sla_override_seconds: float | None = None
    mail_from_name: str = "dealflow"
    mail_from_address: str = "approvals@dealflow.example"

    # Outside services. In the sandbox profile these point at the local sandbox servers.
    sandbox_url: str = "http://127.0.0.1:8090"
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 2525
    stripe_api_base: str = "http://127.0.0.1:12111"
    slack_api_url: str = "http://127.0.0.1:8090/slack/api/"
    # The CRM's REST API (HubSpot CRM v3; production: https://api.hubapi.com). The token is a
    # HubSpot private-app token, a secret like the others (production must set it).
    crm_api_url: str = "http://127.0.0.1:8090"
    crm_api_token: SecretStr | None = None  # a secret: see SECRET_FIELDS
    crm_timeout_seconds: float = 10.0

    slack_bot_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    docusign_connect_hmac_key: SecretStr | None = None
    stripe_api_key: SecretStr | None = None
    stripe_webhook_secret: SecretStr | None = None
    mail_webhook_secret: SecretStr | None = None
    link_signing_key: SecretStr | None = None
    docusign_private_key: SecretStr | None = None  # RSA PEM for the JWT grant

    # DocuSign (JWT grant). Sandbox: the sandbox's HTTPS port and its self-signed certificate;
    # production: account.docusign.com (or account-d for the demo environment) and no CA file.
    docusign_oauth_host: str = "127.0.0.1:8443"
    docusign_ca_cert: Path | None = None
    docusign_integration_key: str = "00000000-0000-4000-8000-00000000d0c5"
    docusign_user_id: str = "00000000-0000-4000-8000-0000000005e1"

    # Signature tracking. DocuSign asks integrations to poll an envelope at most every 15
    # minutes; Connect webhooks are the fast path and polling only catches lost ones.
    signature_poll_seconds: float = 900.0
    signature_reminder_business_days: int = 2
    signature_not_opened_alert_hours: float = 48.0
    signature_expire_days: int = 30
    payment_grace_days: float = 7.0  # after the due date, before the rep and finance are told
    # Tests and demos: every signature timer in seconds (poll, remind, alert, expire).
    signature_timing_override: str | None = None  # "poll=1,remind=3,alert=5,expire=30"
    # Tests and demos: a plan business day, the reminder lead and the renewal alert spacing in
    # seconds (activities/handoff.py::handoff_timing).
    handoff_timing_override: str | None = None  # "day=2,remind=1,renewal=3"

    # Campaigns (issue 5). The postal address is printed in every campaign email's footer
    # (CAN-SPAM and most anti-spam laws require one); unsubscribe links use public_base_url.
    campaign_postal_address: str = (
        "dealflow Inc., 100 Market Street, Suite 300, San Francisco, CA 94105, USA"
    )
    # Sender domains campaigns may send as (the ones our SPF/DKIM cover); the preflight refuses
    # a sender outside them.
    campaign_sender_domains: list[str] = ["dealflow.example"]
    # Daily sends allowed per week since a mailbox's first send (the warm-up ramp); the
    # mailbox's own daily limit applies once the ramp is over, and always caps it.
    campaign_warmup: list[int] = [20, 40, 80, 150, 300]
    campaign_auto_reply_default_pause_days: int = 7  # an out-of-office with no return date
    campaign_auto_reply_max_pause_days: int = 30
    campaign_pause_company_on_reply: bool = True  # a colleague's reply pauses the company
    campaign_company_pause_days: int = 14
    campaign_reply_window_days: int = 14  # a sequence stays open for replies after its last step
    campaign_task_timeout_hours: float = 72.0  # a LinkedIn/call task not marked done by then
    campaign_hard_bounce_threshold: float = 0.05  # pause the campaign above this hard-bounce rate
    campaign_hard_bounce_min_sends: int = 50  # ... once it has sent at least this many
    campaign_ab_min_sample: int = 100  # sends per variant before a winner can be declared
    campaign_ab_alpha: float = 0.05
    campaign_enrol_batch_size: int = 200
    campaign_batches_per_run: int = 20  # enrolment batches before the campaign continues-as-new
    campaign_progress_interval_seconds: float = 60.0
    campaign_slack_enabled: bool = True  # post rep notifications to Slack (always recorded)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = False
    # STARTTLS verifies the relay's certificate against the system CAs, or against this file
    # (a relay with a private CA; the tests' self-signed relay).
    smtp_ca_cert: Path | None = None

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
            if (
                raw in sandbox_values
                or raw.strip().lower() in _PLACEHOLDER_VALUES
                or any(m in raw.lower() for m in _PLACEHOLDER_MARKERS)
            ):
                raise ValueError(f"{var} holds a placeholder or sandbox value; set the real secret")
            problem = secret_strength_problem(raw)
            if problem is not None:
                raise ValueError(f"{var} {problem}")
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
