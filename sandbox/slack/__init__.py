"""Slack sandbox: the Web API methods dealflow calls, and Slack's side of interactivity.

The worker talks to Slack through `slack_sdk` exactly as in production; here its `base_url`
points at `/slack/api/` on the sandbox. The sandbox answers the way Slack's Web API does
(HTTP 200 with `{"ok": false, "error": ...}` for auth and argument errors) so the project's
error handling is exercised too.

What the sandbox implements is declared once, in `METHODS`: the verb and content types the
published spec gives each method, the arguments it requires (with the error Slack returns
when one is missing) and the optional ones it reads. The server validates requests from that
table and handlers can only read the arguments it declares, and the tests check the table
against Slack's OpenAPI description, so the sandbox cannot quietly drift from the real API.

The control API (`/_sandbox/slack/...`) plays the person in Slack: list what was posted and
click a button, which posts a `block_actions` payload to the service signed with the app's
signing secret, as Slack does. Everything is kept in memory and appended to
`<state_dir>/slack.jsonl` (an event log replayed at start), so a restart keeps it.

The package: `workspace` (identities, users, secrets, the request signature), `methods` (the
declared method table), `store` (`SlackStore`: the event log), `web_api` (the methods'
handlers), `routes` (the routers, the control API, interaction deliveries).
"""
