"""What a park records about a failure, and the retry budgets the campaign workflows use."""

from __future__ import annotations

import datetime as dt
from datetime import timedelta

from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    RetryState,
    TimeoutError,
    TimeoutType,
)

from dealflow.ids import failure_key
from messages.campaign import SequenceTiming, attention_from
from workflows.campaign import CAMPAIGN_RETRY
from workflows.campaign_retry import ATTENTION_RETRY, NOTIFY_RETRY, retry_budget
from workflows.sequence_calls import SEND_RETRY

AT = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)


def _activity_error(cause: BaseException, state: RetryState) -> ActivityError:
    err = ActivityError(
        "Activity task failed",
        scheduled_event_id=5,
        started_event_id=6,
        identity="worker",
        activity_type="send_email",
        activity_id="1",
        retry_state=state,
    )
    err.__cause__ = cause
    return err


def test_a_non_retryable_application_error_is_recorded_with_its_type_and_message():
    cause = ApplicationError("campaign cmp_1 does not exist", type="CampaignNotFound")
    attention = attention_from(
        "enrol_batch", _activity_error(cause, RetryState.NON_RETRYABLE_FAILURE), AT, retries=2
    )
    assert attention.activity == "enrol_batch"
    assert attention.error == "campaign cmp_1 does not exist"
    assert attention.error_type == "CampaignNotFound"
    assert attention.retry_state == "NON_RETRYABLE_FAILURE"
    assert attention.since == AT and attention.retries == 2
    assert attention.reason == "enrol_batch failed: campaign cmp_1 does not exist"


def test_a_timeout_names_which_timeout_and_that_the_budget_was_spent():
    cause = TimeoutError(
        "activity timeout", type=TimeoutType.START_TO_CLOSE, last_heartbeat_details=[]
    )
    attention = attention_from(
        "send_email", _activity_error(cause, RetryState.MAXIMUM_ATTEMPTS_REACHED), AT, step=1
    )
    assert attention.error_type == "TimeoutError:START_TO_CLOSE"
    assert attention.retry_state == "MAXIMUM_ATTEMPTS_REACHED"
    assert attention.step == 1


def test_every_campaign_retry_policy_has_an_attempt_budget():
    for policy in (CAMPAIGN_RETRY, NOTIFY_RETRY, ATTENTION_RETRY, SEND_RETRY):
        assert policy.maximum_attempts > 0


def test_test_mode_shortens_the_intervals_but_keeps_the_budget():
    assert retry_budget(SEND_RETRY, SequenceTiming()) is SEND_RETRY
    fast = retry_budget(
        SEND_RETRY, SequenceTiming(retry_initial_seconds=0.1, retry_max_interval_seconds=0.5)
    )
    assert fast.initial_interval == timedelta(seconds=0.1)
    assert fast.maximum_interval == timedelta(seconds=0.5)
    assert fast.maximum_attempts == SEND_RETRY.maximum_attempts
    assert fast.non_retryable_error_types == SEND_RETRY.non_retryable_error_types


def test_failure_keys_are_the_campaign_or_the_contacts_sequence():
    assert failure_key("cmp_1") == "cmp_1"
    assert failure_key("cmp_1", " Ada@Acme.example ") == "campaign/cmp_1/contact/ada@acme.example"
