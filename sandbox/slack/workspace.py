"""The Slack sandbox's workspace: its fixed identities, the users (from the org directory), the
secrets, and Slack's request signature (`v0=` HMAC-SHA256 over `v0:<timestamp>:<body>`)."""

from __future__ import annotations

import hashlib
import hmac
import re
import string
import tomllib
from dataclasses import dataclass
from pathlib import Path

from dealflow.settings import CONFIG_DIR, load_sandbox_file

SLACK_LOG_FILENAME = "slack.jsonl"

# The sandbox workspace's fixed identities. They match the patterns Slack's spec gives IDs
# (T/B/A/U plus 8+ upper-case alphanumerics) so a client validating IDs accepts them.
TEAM_ID = "T0DEALFLOW1"
TEAM_DOMAIN = "dealflow-sandbox"
TEAM_NAME = "dealflow Inc."
APP_ID = "A0DEALFLOW1"
BOT_ID = "B0DEALBOT01"
BOT_USER_ID = "U0DEALBOT01"
BOT_USER_NAME = "dealflow"
# Slack still sends the deprecated verification token in every payload; apps must not rely
# on it (they verify the signature), but it is part of the documented payload.
VERIFICATION_TOKEN = "sandboxverificationtoken"  # noqa: S105 - a fixed, public payload field
# Slack shows the clicking user an error if the app does not answer within 3 seconds, and
# does not retry. The sandbox waits longer (a slow test machine is not a bug) but reports
# whether the service answered within Slack's deadline.
SLACK_ACK_DEADLINE_SECONDS = 3.0
DELIVERY_TIMEOUT_SECONDS = 10.0

_CONVERSATION_ID = re.compile(r"^[CGD][A-Z0-9]{8,}$")
_CHANNEL_NAME = re.compile(r"^#?([a-z0-9][a-z0-9_-]{0,79})$")
_ALNUM = string.ascii_letters + string.digits


# --------------------------------------------------------------------------------------
# The workspace: who exists and which secrets the sandbox uses.


@dataclass(frozen=True)
class SlackUser:
    """A member of the sandbox workspace, from the org directory."""

    id: str
    email: str
    name: str
    real_name: str
    title: str
    tz: str | None


@dataclass(frozen=True)
class SlackWorkspace:
    """The sandbox workspace: its members, the bot's token and the app's signing secret.

    `interactions_url` is the app's Request URL, where button clicks are posted.
    """

    bot_token: str
    signing_secret: str
    users: tuple[SlackUser, ...]
    interactions_url: str | None = None

    @classmethod
    def load(
        cls,
        *,
        org_path: str | Path | None = None,
        bot_token: str | None = None,
        signing_secret: str | None = None,
        interactions_url: str | None = None,
    ) -> SlackWorkspace:
        """Build the workspace; secrets not given come from config/sandbox.toml."""
        if bot_token is None or signing_secret is None:
            sandbox_secrets = load_sandbox_file()["secrets"]
            bot_token = bot_token or sandbox_secrets["slack_bot_token"]
            signing_secret = signing_secret or sandbox_secrets["slack_signing_secret"]
        path = Path(org_path) if org_path is not None else CONFIG_DIR / "org.toml"
        with path.open("rb") as handle:
            org = tomllib.load(handle)
        users = tuple(
            SlackUser(
                id=person["slack_user_id"],
                email=person["email"],
                name=person["email"].split("@", 1)[0],
                real_name=person.get("name", person["email"]),
                title=person.get("title", ""),
                tz=person.get("timezone"),
            )
            for person in org.get("people", [])
            if person.get("slack_user_id")
        )
        return cls(
            bot_token=bot_token,
            signing_secret=signing_secret,
            users=users,
            interactions_url=interactions_url,
        )

    def user_by_id(self, user_id: str) -> SlackUser | None:
        return next((u for u in self.users if u.id == user_id), None)

    def user_by_email(self, email: str) -> SlackUser | None:
        wanted = email.strip().lower()
        return next((u for u in self.users if u.email.lower() == wanted), None)


def sign_request(signing_secret: str, timestamp: str, body: str) -> str:
    """Slack's request signature: `v0=` + hex HMAC-SHA256 of `v0:<timestamp>:<body>`."""
    base = f"v0:{timestamp}:{body}".encode()
    return "v0=" + hmac.new(signing_secret.encode(), base, hashlib.sha256).hexdigest()
