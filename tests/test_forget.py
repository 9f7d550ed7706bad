"""restic's `forget` semantics against the shared vectors (restic's own test data), and
properties against a small reference model (hypothesis).

tests/data/retention_vectors.json is a copy of the project's shared test vectors
(`shared/testdata/retention_vectors.json` beside the repository), kept here so that a
bare clone runs these tests."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backup_operator.forget import Duration, Point, Policy, apply_policy

VECTORS = Path(__file__).parent / "data" / "retention_vectors.json"


def load() -> dict:
    return json.loads(VECTORS.read_text())


def points_of(data: dict) -> list[Point]:
    return [
        Point(
            p["index"],
            datetime.fromisoformat(p["time"].replace("Z", "+00:00")),
            frozenset(p["tags"]),
        )
        for p in data["points"]
    ]


CASES = list(range(0, 40, 2))


@pytest.mark.parametrize("case", CASES)
def test_every_vector_case_exactly(case: int) -> None:
    data = load()
    vector = next(c for c in data["cases"] if c["case"] == case)
    kept, removed = apply_policy(points_of(data), Policy.from_dict(vector["policy"]))
    assert [(k.point.id, list(k.reasons)) for k in kept] == [
        (k["index"], k["reasons"]) for k in vector["keep"]
    ]
    assert len(kept) + len(removed) == len(data["points"])


def test_vectors_are_all_there() -> None:
    assert sorted(c["case"] for c in load()["cases"]) == CASES


def test_durations() -> None:
    assert str(Duration.parse("1y1d1m")) == "1y1m1d"
    moment = datetime(2016, 3, 31, 12, tzinfo=UTC)
    assert Duration.parse("1m").before(moment) == datetime(2016, 3, 2, 12, tzinfo=UTC)
    assert Duration.parse("1y2m3d3h").before(moment) == datetime(2015, 1, 28, 9, tzinfo=UTC)
    with pytest.raises(ValueError, match="invalid duration"):
        Duration.parse("3 weeks")


def test_timezone_decides_the_day() -> None:
    late = Point(1, datetime(2024, 1, 1, 23, 30, tzinfo=UTC))
    early = Point(2, datetime(2024, 1, 1, 0, 30, tzinfo=UTC))
    utc, _ = apply_policy([late, early], Policy(keep_daily=2))
    tokyo, _ = apply_policy([late, early], Policy(keep_daily=2, timezone="Asia/Tokyo"))
    # One UTC day: the early point is kept only as the oldest. Two days in Tokyo.
    assert [k.reasons for k in utc] == [("daily snapshot",), ("oldest daily snapshot",)]
    assert [k.reasons for k in tokyo] == [("daily snapshot",), ("daily snapshot",)]


moments = st.lists(
    st.datetimes(
        min_value=datetime(2020, 1, 1), max_value=datetime(2024, 12, 31), timezones=st.just(UTC)
    ),
    min_size=1,
    max_size=40,
    unique=True,
).map(lambda times: [Point(i, t) for i, t in enumerate(times)])
counts = st.integers(min_value=0, max_value=6) | st.just(-1)
policies = st.builds(
    Policy, keep_last=counts, keep_daily=counts, keep_weekly=counts, keep_monthly=counts
)


def kept_ids(points: list[Point], policy: Policy) -> set[int]:
    return {k.point.id for k in apply_policy(points, policy)[0]}


@settings(max_examples=200, deadline=None)
@given(points=moments, n=st.integers(min_value=1, max_value=50))
def test_keep_last_keeps_exactly_the_newest(points: list[Point], n: int) -> None:
    newest = sorted(points, key=lambda p: p.time, reverse=True)[: min(n, len(points))]
    assert kept_ids(points, Policy(keep_last=n)) == {p.id for p in newest}


@settings(max_examples=200, deadline=None)
@given(points=moments, policy=policies)
def test_union_of_single_rules(points: list[Point], policy: Policy) -> None:
    singles = [
        Policy(keep_last=policy.keep_last),
        Policy(keep_daily=policy.keep_daily),
        Policy(keep_weekly=policy.keep_weekly),
        Policy(keep_monthly=policy.keep_monthly),
    ]
    union = set().union(*(kept_ids(points, single) for single in singles))
    assert kept_ids(points, policy) == union


@settings(max_examples=200, deadline=None)
@given(points=moments, policy=policies, extra=counts)
def test_adding_a_rule_never_deletes_more(points: list[Point], policy: Policy, extra: int) -> None:
    from dataclasses import replace

    more = replace(policy, keep_yearly=extra or 1)
    assert kept_ids(points, policy) <= kept_ids(points, more)


@settings(max_examples=200, deadline=None)
@given(points=moments, policy=policies)
def test_applying_again_to_what_was_kept_keeps_it_all(points: list[Point], policy: Policy) -> None:
    kept = [k.point for k in apply_policy(points, policy)[0]]
    assert kept_ids(kept, policy) == {p.id for p in kept}


def test_within_is_measured_from_the_newest_point() -> None:
    base = datetime(2024, 6, 1, tzinfo=UTC)
    points = [Point(i, base - timedelta(days=i)) for i in range(10)]
    kept, _ = apply_policy(points, Policy(keep_within=Duration(days=3)))
    assert [k.point.id for k in kept] == [0, 1, 2]
