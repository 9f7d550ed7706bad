"""Retention rules, evaluated as a union: a version is kept if any rule keeps it.

This is the simple form (newest N versions; versions younger than D days). A policy
with no rules keeps everything and says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class Rules:
    keep_last: int | None = None
    max_age_days: int | None = None

    @property
    def empty(self) -> bool:
        return self.keep_last is None and self.max_age_days is None


@dataclass(frozen=True)
class Decision:
    version_id: int  # catalog id
    keep: bool
    reasons: tuple[str, ...]


def decide(rules: Rules, created: Sequence[tuple[int, datetime]], now: datetime) -> list[Decision]:
    """`created` lists one object's live versions as (catalog id, created at)."""
    newest_first = sorted(created, key=lambda item: (item[1], item[0]), reverse=True)
    decisions = []
    for rank, (version_id, created_at) in enumerate(newest_first):
        reasons = []
        if rules.empty:
            reasons.append("policy has no rules: nothing is deleted")
        if rules.keep_last is not None and rank < rules.keep_last:
            reasons.append(f"keep_last {rules.keep_last}: newest #{rank + 1}")
        if rules.max_age_days is not None:
            age = now - created_at
            if age < timedelta(days=rules.max_age_days):
                reasons.append(f"max_age_days {rules.max_age_days}: {age.days} days old")
        if reasons:
            decisions.append(Decision(version_id, True, tuple(reasons)))
            continue
        why = []
        if rules.keep_last is not None:
            why.append(f"beyond the newest {rules.keep_last}")
        if rules.max_age_days is not None:
            why.append(f"older than {rules.max_age_days} days")
        decisions.append(Decision(version_id, False, tuple(why)))
    return decisions
