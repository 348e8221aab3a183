"""The declared surface of the Slack sandbox: which Web API methods exist here, with the verb,
content types and arguments Slack's spec gives each (checked against that spec by the tests)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

# --------------------------------------------------------------------------------------
# The declared surface: which Web API methods exist here and which arguments they take.


@dataclass(frozen=True)
class MethodSpec:
    """One Web API method as the sandbox implements it, in the terms of Slack's spec.

    `http` and `json_body` restate the spec (its verb, and whether it `consumes`
    application/json); `required` maps each argument the spec requires to the error Slack
    returns without it; `optional` are the spec's optional arguments the handler reads;
    `one_of` must have at least one non-empty member (Slack's "text, blocks or attachments"
    rule). `extensions` are arguments Slack accepts today that the published spec predates,
    each with the reason; the tests keep them out of the spec-checked sets.
    """

    http: Literal["GET", "POST"]
    json_body: bool
    required: Mapping[str, str]
    optional: frozenset[str] = frozenset()
    one_of: frozenset[str] = frozenset()
    one_of_error: str = ""
    extensions: Mapping[str, str] = field(default_factory=dict)

    @property
    def verbs(self) -> frozenset[str]:
        """The verbs accepted: the spec's, plus POST for every method, as Slack does.

        slack_sdk's sync client relies on that: it sends every method as a POST.
        """
        return frozenset({self.http, "POST"})

    @property
    def reads(self) -> frozenset[str]:
        """Every argument name a handler may read."""
        return frozenset(self.required) | self.optional | self.one_of | frozenset(self.extensions)


METHODS: Mapping[str, MethodSpec] = MappingProxyType(
    {
        "auth.test": MethodSpec(http="GET", json_body=True, required={"token": "not_authed"}),
        "chat.postMessage": MethodSpec(
            http="POST",
            json_body=True,
            required={"token": "not_authed", "channel": "channel_not_found"},
            optional=frozenset({"text", "blocks", "thread_ts"}),
            one_of=frozenset({"text", "blocks"}),
            one_of_error="no_text",
            extensions={
                "metadata": "message metadata (2022) is newer than the published OpenAPI spec",
            },
        ),
        "chat.update": MethodSpec(
            http="POST",
            json_body=True,
            required={
                "token": "not_authed",
                "channel": "channel_not_found",
                "ts": "message_not_found",
            },
            optional=frozenset({"text", "blocks"}),
            one_of=frozenset({"text", "blocks"}),
            one_of_error="no_text",
        ),
        "users.lookupByEmail": MethodSpec(
            http="GET",
            json_body=False,
            required={"token": "not_authed", "email": "users_not_found"},
        ),
    }
)


class SlackApiError(Exception):
    """A Web API failure, answered as Slack does: HTTP 200, `{"ok": false, "error": code}`."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class CallArgs:
    """A request's arguments, readable only by the names its `MethodSpec` declares.

    Reading an undeclared name raises at once, so a handler cannot start depending on an
    argument the spec-conformance tests never looked at.
    """

    def __init__(self, method: str, spec: MethodSpec, raw: Mapping[str, Any]) -> None:
        self._method = method
        self._spec = spec
        self._raw = raw

    def get(self, name: str) -> Any:
        """The argument's value, or None when absent or empty (Slack treats both alike)."""
        if name not in self._spec.reads:
            raise KeyError(f"{self._method} reads {name!r}, which METHODS does not declare")
        value = self._raw.get(name)
        return None if value is None or value == "" else value
