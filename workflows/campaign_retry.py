"""Retry policies the campaign and its sequences share, and their backoff as the API chose it
(``SequenceTiming``).

Beside the workflows that use them (``workflows/campaign.py``, ``workflows/sequence.py``); the
policies of one process only are written where that process calls its activities.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from temporalio.common import RetryPolicy

from messages.campaign import SequenceTiming

# Telling the rep (Slack) is worth a few tries, but a Slack outage must not retry forever:
# after 8 tries (~10 minutes) the campaign or sequence parks; the notice stays recorded unposted.
NOTIFY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=120),
    maximum_attempts=8,
)
# Recording a park on the campaign's or the contact's row: a few quick tries. Its failure is
# only logged: the park already shows in the workflow's status and search attribute.
ATTENTION_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=3,
)


def retry_budget(policy: RetryPolicy, timing: SequenceTiming) -> RetryPolicy:
    """``policy`` with the campaign's backoff: test mode shortens the intervals, never the
    attempt budget, so a spent budget parks within seconds in the tests."""
    if timing.retry_initial_seconds is None:
        return policy
    return dataclasses.replace(
        policy,
        initial_interval=timedelta(seconds=timing.retry_initial_seconds),
        maximum_interval=timedelta(
            seconds=max(timing.retry_initial_seconds, timing.retry_max_interval_seconds or 0)
        ),
    )
