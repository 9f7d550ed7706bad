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

from .forget import Duration, Point, Policy, apply_policy


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


class Decision(NamedTuple):  # a tuple: plans hold millions
    version_id: int  # catalog id
    keep: bool
    reasons: tuple[str, ...]


def decide(rules: Rules, created: Sequence[tuple[int, datetime]], now: datetime) -> list[Decision]:
    """`created` lists one object's live versions as (catalog id, created at); the
    answer is newest first."""
    newest_first = sorted(created, key=lambda item: (item[1], item[0]), reverse=True)
    by_forget: dict[int, tuple[str, ...]] = {}
    if not rules.forget.empty:
        kept, _ = apply_policy([Point(vid, at) for vid, at in newest_first], rules.forget)
        by_forget = {k.point.id: k.reasons for k in kept}
    decisions = []
    empty = rules.empty
    too_old = rules.max_age.before(now) if rules.max_age is not None else None
    for rank, (version_id, created_at) in enumerate(newest_first):
        reasons = list(by_forget.get(version_id, ()))
        if empty:
            reasons.append("policy has no rules: nothing is deleted")
        if rules.keep_last is not None and rank < rules.keep_last:
            reasons.append(f"keep_last {rules.keep_last}: newest #{rank + 1}")
        if rules.max_age_days is not None:
            age = now - created_at
            if age < timedelta(days=rules.max_age_days):
                reasons.append(f"max_age_days {rules.max_age_days}: {age.days} days old")
        capped = too_old is not None and created_at < too_old
        if capped:
            reasons = []  # older than max_age: whatever kept it, it goes
        if rules.min_versions is not None and rank < rules.min_versions:
            reasons.append(f"min_versions {rules.min_versions}: newest #{rank + 1}")
        if reasons:
            decisions.append(Decision(version_id, True, tuple(reasons)))
        else:
            why = f"older than max_age {rules.max_age}" if capped else "no rule keeps it"
            decisions.append(Decision(version_id, False, (why,)))
    return decisions
