"""Retries on outages: how long they wait, that workers do not retry in lockstep, and
what is raised when an outage outlasts them. Time is the one thing stood in for here
(a recorded `sleep`): the real outages are in test_outages.py."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from backup_operator.errors import Unavailable
from backup_operator.retry import RetriesExhausted, retrying, tries_within


def outage_of(failures: int) -> tuple[list[float], Callable[[], str]]:
    """An operation failing `failures` times with an outage, then answering "done"."""
    slept: list[float] = []
    calls = iter(range(failures + 1))

    def operation() -> str:
        if next(calls) < failures:
            raise Unavailable("the object store", "connection refused")
        return "done"

    return slept, operation


def test_an_outage_within_the_tries_is_ridden_out_with_doubling_jittered_delays() -> None:
    slept, operation = outage_of(4)
    answer = retrying(operation, what="upload", attempts=5, sleep=slept.append)
    assert answer == "done"
    assert len(slept) == 4
    for delay, base in zip(slept, [0.5, 1.0, 2.0, 4.0], strict=True):
        assert base <= delay <= base + 0.5


def test_workers_that_met_one_outage_retry_at_different_instants() -> None:
    schedules = []
    for _ in range(8):
        slept, operation = outage_of(3)
        retrying(operation, what="upload", attempts=4, sleep=slept.append)
        schedules.append(tuple(slept))
    assert len(set(schedules)) == len(schedules)


def test_delays_stop_doubling_at_the_cap_and_cover_the_outage_they_were_sized_for() -> None:
    tries = tries_within(60)
    slept, operation = outage_of(tries - 1)
    retrying(operation, what="upload", attempts=tries, sleep=slept.append)
    assert max(slept) <= 8.0 + 0.5
    assert sum(slept) >= 60 - 8.0  # the last delay short of 60 s is the cap at most


def test_an_outage_outlasting_the_tries_names_what_failed_and_why() -> None:
    slept, operation = outage_of(10)
    with pytest.raises(RetriesExhausted) as raised:
        retrying(operation, what="job 7: uploading a batch", attempts=3, sleep=slept.append)
    assert str(raised.value) == (
        "job 7: uploading a batch failed 3 times: "
        "the object store is unavailable: connection refused"
    )
    assert isinstance(raised.value.__cause__, Unavailable)
    assert len(slept) == 2


def test_an_error_that_is_no_outage_is_raised_at_once() -> None:
    slept: list[float] = []

    def operation() -> None:
        raise ValueError("bad input")

    with pytest.raises(ValueError, match="bad input"):
        retrying(operation, what="upload", sleep=slept.append)
    assert slept == []
