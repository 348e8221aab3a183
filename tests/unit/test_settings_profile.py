"""The default profile is production, and production secrets have a minimum strength."""

from __future__ import annotations

import os
import secrets

import pytest
from pydantic import ValidationError

from dealflow.settings import (
    MIN_SECRET_LENGTH,
    SECRET_FIELDS,
    Settings,
    default_render_processes,
    secret_strength_problem,
)

# Realistic shapes and lengths of each vendor's secret (none is a real one).
STRONG = {
    "slack_bot_token": "xoxb-7261937104-4418290113-Qm3vX9kTzR2bLw8yNc5dHf1J",
    "slack_signing_secret": "8f14e45fceea167a5a36dedd4bea2543",  # 32 hex digits, as Slack's
    "docusign_connect_hmac_key": "Yx3q8ZkP1vN7mR2tW9bL4cF6hJ0sD5gA+eQ/uK8iO1M=",
    "stripe_api_key": "sk_live_51HxYzQ8vN2kLm4Rt7Wp9Xc3Bd6Fg1Hj5Ks0Lq2Mn8Pr4St",
    "stripe_webhook_secret": "whsec_45c48cce2e2d7fbdea1afc51c7c6ad26",
    "mail_webhook_secret": secrets.token_urlsafe(32),
    "link_signing_key": secrets.token_urlsafe(32),
    "crm_api_token": "pat-na1-3f2a9c1e-7b6d-4e11-9a0c-5d8e2f4b1a77",
    "docusign_private_key": "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n"
    "-----END PRIVATE KEY-----\n",
}


@pytest.fixture
def production_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Every secret set to a strong value, no DEALFLOW_PROFILE (the test suite sets sandbox)."""
    monkeypatch.delenv("DEALFLOW_PROFILE", raising=False)
    monkeypatch.setenv("DATABASE_URL", "postgresql://db/dealflow")
    for name in SECRET_FIELDS:
        monkeypatch.setenv(f"DEALFLOW_{name.upper()}", STRONG[name])
    return monkeypatch


def test_no_profile_in_the_environment_means_production(production_env):
    settings = Settings()
    assert settings.profile == "production"
    assert not settings.is_sandbox
    assert settings.sandbox_file == {}  # what /_sandbox/config would serve: nothing


def test_no_profile_and_no_secrets_refuses_to_start(production_env):
    for name in SECRET_FIELDS:
        production_env.delenv(f"DEALFLOW_{name.upper()}")
    with pytest.raises(ValidationError, match="DEALFLOW_SLACK_BOT_TOKEN must be set"):
        Settings()


@pytest.mark.parametrize("name", SECRET_FIELDS)
def test_a_short_secret_is_refused_naming_the_variable(production_env, name):
    production_env.setenv(f"DEALFLOW_{name.upper()}", "Qm3vX9kTzR2bLw8yNc5dHf1")  # 23 chars
    with pytest.raises(ValidationError, match=f"DEALFLOW_{name.upper()} is too short") as err:
        Settings()
    assert "Qm3vX9kTzR2bLw8yNc5dHf1" not in str(err.value.errors()[0]["msg"])


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("a" * 64, "distinct characters"),
        ("ab" * 40, "distinct characters"),
        ("abcdefgh" * 6, "repeated"),
        ("x9K!pQ7z-M" * 5, "repeated"),
        ("  short-but-padded-with-spaces-" + " " * 10, "too short"),
    ],
    ids=["one-char", "two-chars", "eight-char-unit", "ten-char-unit", "padded"],
)
def test_weak_patterns_are_refused(value, problem):
    found = secret_strength_problem(value)
    assert found is not None and problem in found


def test_strong_values_pass():
    for value in STRONG.values():
        assert secret_strength_problem(value) is None, value
    assert secret_strength_problem(secrets.token_hex(16)) is None  # exactly MIN_SECRET_LENGTH
    assert len(secrets.token_hex(16)) == MIN_SECRET_LENGTH


def test_a_repeated_secret_is_refused_in_production(production_env):
    production_env.setenv("DEALFLOW_LINK_SIGNING_KEY", "k" * 48)
    with pytest.raises(ValidationError, match="DEALFLOW_LINK_SIGNING_KEY has only 1 distinct"):
        Settings()


def test_the_sandbox_profile_is_only_used_when_asked(production_env):
    production_env.setenv("DEALFLOW_PROFILE", "sandbox")
    assert Settings().is_sandbox


@pytest.mark.parametrize(("cores", "renderers"), [(1, 1), (2, 1), (4, 3), (64, 16)])
def test_renderers_leave_one_core_to_the_orchestration(monkeypatch, cores, renderers):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)))
    monkeypatch.delenv("DEALFLOW_RENDER_PROCESSES", raising=False)
    assert default_render_processes() == renderers
    assert Settings(profile="sandbox").render_processes == renderers
