"""Retention rules for an object's versions, evaluated as a union: a version is kept if
any rule keeps it, and the newest `min_versions` are kept whatever the rules say.

Rules: restic's `forget` rules (`forget.Policy`: keep_last/hourly/daily/weekly/monthly/
yearly, keep_within*, keep_tags, timezone) over the versions' times, and the simple
forms of the first API (`keep_last`, and `max_age_days`: versions younger than D days
from now). A policy with no rules keeps everything and says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import NamedTuple

from .forget import Duration, Policy


@dataclass(frozen=True)
class Rules:
    keep_last: int | None = None
    max_age_days: int | None = None
    forget: Policy = field(default_factory=Policy)
    min_versions: int | None = None
    max_age: Duration | None = None  # a cap: older versions go, but the newest min_versions

    @property
    def empty(self) -> bool:
        return (
            self.keep_last is None
            and self.max_age_days is None
            and self.forget.empty
            and self.min_versions is None
            and self.max_age is None
        )


class Decision(NamedTuple):
    version_id: int  # catalog id
    keep: bool
    reasons: tuple[str, ...]


def decide(rules: Rules, created: Sequence[tuple[int, datetime]], now: datetime) -> list[Decision]:
    """`created` lists one object's live versions as (catalog id, created at); the
    answer is newest first."""
    newest_first = sorted(created, key=lambda item: (item[1], item[0]), reverse=True)
    return [
        Decision(version_id, keep, reasons)
        for (version_id, _), (keep, reasons) in zip(
            newest_first, verdicts(rules, [at for _, at in newest_first], now), strict=True
        )
    ]


def verdicts(
    rules: Rules, newest_first: Sequence[datetime], now: datetime
) -> list[tuple[bool, tuple[str, ...]]]:
    """(keep, reasons) for each of one object's versions, given their times newest first
    (ties broken by catalog id, newest first). Plain tuples: a plan holds millions."""
    by_forget = rules.forget.reasons(newest_first)
    if rules.empty:
        return [(True, ("policy has no rules: nothing is deleted",))] * len(newest_first)
    answer: list[tuple[bool, tuple[str, ...]]] = []
    too_old = rules.max_age.before(now) if rules.max_age is not None else None
    young = _days_before(now, rules.max_age_days) if rules.max_age_days is not None else None
    keep_last, min_versions = rules.keep_last, rules.min_versions
    for rank, created_at in enumerate(newest_first):
        reasons = by_forget[rank]
        if keep_last is not None and rank < keep_last:
            reasons += (f"keep_last {keep_last}: newest #{rank + 1}",)
        if young is not None and created_at > young:
            age = now - created_at
            reasons += (f"max_age_days {rules.max_age_days}: {age.days} days old",)
        capped = too_old is not None and created_at < too_old
        if capped:
            reasons = ()  # older than max_age: whatever kept it, it goes
        if min_versions is not None and rank < min_versions:
            reasons += (f"min_versions {min_versions}: newest #{rank + 1}",)
        if reasons:
            answer.append((True, reasons))
        else:
            why = f"older than max_age {rules.max_age}" if capped else "no rule keeps it"
            answer.append((False, (why,)))
    return answer


def _days_before(now: datetime, days: int) -> datetime:
    """`days` before `now`; a span reaching before year 1 keeps everything (as restic)."""
    try:
        return now - timedelta(days=days)
    except OverflowError:
        return datetime.min.replace(tzinfo=now.tzinfo)
