"""restic's `forget` policy semantics (restic 0.17), as a pure function.

Rules combine as a union. `keep_last/hourly/daily/weekly/monthly/yearly` count periods
that contain points, newest first (-1: unlimited); a count not used up also keeps the
oldest point. `keep_within*` durations are measured back from the newest point.
`keep_tags` keeps points carrying all tags of any listed set. Weeks are ISO weeks, in
the policy's timezone (UTC unless it names an IANA zone).

Each kept point comes with the reasons that kept it, worded as restic words them.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from operator import attrgetter
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .errors import Invalid

_DURATION = re.compile(r"(\d+)([ymdh])")


@dataclass(frozen=True)
class Duration:
    """restic's duration: years, months, days and hours, as in `1y2m3d4h`."""

    years: int = 0
    months: int = 0
    days: int = 0
    hours: int = 0

    @classmethod
    def parse(cls, text: str) -> Duration:
        if not text or _DURATION.sub("", text):
            raise ValueError(f"invalid duration {text!r}: use numbers with y, m, d, h (1y2m3d4h)")
        parts = {"y": 0, "m": 0, "d": 0, "h": 0}
        for number, unit in _DURATION.findall(text):
            parts[unit] += int(number)
        return cls(parts["y"], parts["m"], parts["d"], parts["h"])

    def __str__(self) -> str:
        return "".join(
            f"{value}{unit}"
            for value, unit in (
                (self.years, "y"),
                (self.months, "m"),
                (self.days, "d"),
                (self.hours, "h"),
            )
            if value
        )

    @property
    def zero(self) -> bool:
        return not (self.years or self.months or self.days or self.hours)

    def before(self, moment: datetime) -> datetime:
        """`moment` minus this duration, calendar-wise like Go's AddDate (which
        normalises overflowing days: 31 March minus one month is 3 March). A cut-off
        before year 1 is the earliest time: everything is within it (as restic)."""
        month_index = moment.year * 12 + (moment.month - 1) - self.years * 12 - self.months
        year, month = divmod(month_index, 12)
        try:
            first = moment.replace(year=year, month=month + 1, day=1)
            shifted = first + timedelta(days=moment.day - 1 - self.days)
            return shifted - timedelta(hours=self.hours)
        except (ValueError, OverflowError):  # the year, or a day count, out of range
            return datetime.min.replace(tzinfo=moment.tzinfo)


@dataclass(frozen=True)
class Policy:
    keep_last: int = 0
    keep_hourly: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0
    keep_yearly: int = 0
    keep_within: Duration = field(default_factory=Duration)
    keep_within_hourly: Duration = field(default_factory=Duration)
    keep_within_daily: Duration = field(default_factory=Duration)
    keep_within_weekly: Duration = field(default_factory=Duration)
    keep_within_monthly: Duration = field(default_factory=Duration)
    keep_within_yearly: Duration = field(default_factory=Duration)
    keep_tags: tuple[tuple[str, ...], ...] = ()
    timezone: str = "UTC"

    @classmethod
    def from_dict(cls, rules: dict[str, Any]) -> Policy:
        """Rules as restic names them; a bad one raises Invalid naming `rules.<name>`."""
        values: dict[str, Any] = {}
        known = {f.name for f in fields(cls)}
        for name, value in rules.items():
            where = f"rules.{name}"
            if name not in known:
                raise Invalid(f"unknown rule; known: {', '.join(sorted(known))}", field=where)
            if name.startswith("keep_within"):
                try:
                    values[name] = Duration.parse(str(value))
                except ValueError as error:
                    raise Invalid(str(error), field=where) from None
            elif name == "keep_tags":
                if not isinstance(value, list) or not all(
                    isinstance(tags, list) and tags and all(isinstance(t, str) for t in tags)
                    for tags in value
                ):
                    raise Invalid("must be a list of non-empty lists of tags", field=where)
                values[name] = tuple(tuple(tags) for tags in value)
            elif name == "timezone":
                try:
                    ZoneInfo(str(value))
                except (ZoneInfoNotFoundError, ValueError):
                    raise Invalid(f"unknown IANA timezone {value!r}", field=where) from None
                values[name] = str(value)
            else:
                if isinstance(value, bool) or not isinstance(value, int) or value < -1:
                    raise Invalid(
                        "must be a count: a whole number, or -1 for unlimited", field=where
                    )
                values[name] = value
        return cls(**values)

    @functools.cached_property
    def empty(self) -> bool:
        counts = (
            self.keep_last,
            self.keep_hourly,
            self.keep_daily,
            self.keep_weekly,
            self.keep_monthly,
            self.keep_yearly,
        )
        withins = (
            self.keep_within,
            self.keep_within_hourly,
            self.keep_within_daily,
            self.keep_within_weekly,
            self.keep_within_monthly,
            self.keep_within_yearly,
        )
        return not any(counts) and all(w.zero for w in withins) and not self.keep_tags

    @functools.cached_property
    def _compiled(self) -> _Compiled:
        return _compile(self)

    def reasons(
        self, times: Sequence[datetime], tags: Sequence[frozenset[str]] | None = None
    ) -> list[tuple[str, ...]]:
        """For points at `times`, newest first (and their tags, if any): the reasons each
        is kept, an empty tuple for a point removed. The bulk form of `apply_policy`."""
        if self.empty or not times:
            return [()] * len(times)
        return _reasons(self, self._compiled, times, tags)


class Point(NamedTuple):  # a tuple: plans hold millions
    id: int
    time: datetime
    tags: frozenset[str] = frozenset()


class Kept(NamedTuple):  # a tuple: plans hold millions
    point: Point
    reasons: tuple[str, ...]


Bucker = Callable[[datetime, int], int]


def _hour(t: datetime, _: int) -> int:
    return t.year * 1_000_000 + t.month * 10_000 + t.day * 100 + t.hour


def _day(t: datetime, _: int) -> int:
    return t.year * 10_000 + t.month * 100 + t.day


def _week(t: datetime, _: int) -> int:
    year, week, _weekday = t.isocalendar()
    return year * 100 + week


def _month(t: datetime, _: int) -> int:
    return t.year * 100 + t.month


def _year(t: datetime, _: int) -> int:
    return t.year


def _always(_: datetime, number: int) -> int:
    return number


def apply_policy(points: Sequence[Point], policy: Policy) -> tuple[list[Kept], list[Point]]:
    """Answer (kept with reasons, removed), both newest first. An empty policy keeps
    nothing here, as restic's; callers must refuse to act on one (restic's `forget`
    does: 'no policy was specified, no snapshots will be removed')."""
    ordered = sorted(points, key=attrgetter("time"), reverse=True)  # stable, like restic's
    verdicts = policy.reasons([p.time for p in ordered], [p.tags for p in ordered])
    kept = [Kept(p, why) for p, why in zip(ordered, verdicts, strict=True) if why]
    removed = [p for p, why in zip(ordered, verdicts, strict=True) if not why]
    return kept, removed


class _Compiled(NamedTuple):
    """What a policy evaluation needs, worked out once per policy, not once per object."""

    zone: ZoneInfo
    counts: list[tuple[int, Bucker, str]]
    withins: list[tuple[Duration, Bucker, str]]
    local_time: bool  # some rule buckets by calendar: points need the policy's timezone


def _compile(policy: Policy) -> _Compiled:
    # Only the rules in use, in restic's order (so the reasons come in restic's order).
    counts: list[tuple[int, Bucker, str]] = [
        rule
        for rule in (
            (policy.keep_last, _always, "last snapshot"),
            (policy.keep_hourly, _hour, "hourly snapshot"),
            (policy.keep_daily, _day, "daily snapshot"),
            (policy.keep_weekly, _week, "weekly snapshot"),
            (policy.keep_monthly, _month, "monthly snapshot"),
            (policy.keep_yearly, _year, "yearly snapshot"),
        )
        if rule[0] != 0
    ]
    withins: list[tuple[Duration, Bucker, str]] = [
        (duration, bucker, f"{label} {duration}")
        for duration, bucker, label in (
            (policy.keep_within_hourly, _hour, "hourly within"),
            (policy.keep_within_daily, _day, "daily within"),
            (policy.keep_within_weekly, _week, "weekly within"),
            (policy.keep_within_monthly, _month, "monthly within"),
            (policy.keep_within_yearly, _year, "yearly within"),
        )
        if not duration.zero
    ]
    local_time = bool(withins) or any(bucker is not _always for _, bucker, _ in counts)
    return _Compiled(ZoneInfo(policy.timezone), counts, withins, local_time)


def _reasons(
    policy: Policy,
    compiled: _Compiled,
    times: Sequence[datetime],
    tags: Sequence[frozenset[str]] | None,
) -> list[tuple[str, ...]]:
    zone, counts, within_rules, local_time = compiled
    remaining = [count for count, _, _ in counts]
    last_seen: list[int | None] = [None] * len(counts)
    latest = times[0].astimezone(zone)
    # Cut-offs computed once: points after them are within the duration.
    withins = [(d.before(latest), bucker, label) for d, bucker, label in within_rules]
    within_seen: list[int | None] = [None] * len(withins)
    within_all = None if policy.keep_within.zero else policy.keep_within.before(latest)
    keep_tags = policy.keep_tags if tags is not None else ()
    last = len(times) - 1
    answer: list[tuple[str, ...]] = []
    # With only counts, once every count is used up no older point can be kept (but the
    # oldest, by a count not used up): the rest are removed without looking at them.
    counts_only = not keep_tags and within_all is None and not withins
    for number, time in enumerate(times):
        if counts_only and not any(remaining):
            answer += [()] * (len(times) - number)
            break
        # Comparisons with cut-offs are absolute; only calendar buckets need local time.
        moment = time.astimezone(zone) if local_time else time
        oldest = number == last
        reasons: list[str] = []
        for wanted in keep_tags:
            if set(wanted) <= tags[number]:  # type: ignore[index]
                reasons.append(f"has tags [{' '.join(wanted)}]")
        if within_all is not None and moment > within_all:
            reasons.append(f"within {policy.keep_within}")
        for index, (_, bucker, reason) in enumerate(counts):
            if remaining[index] > 0 or remaining[index] == -1:
                value = bucker(moment, number)
                if value != last_seen[index] or oldest:
                    # Kept only for being the oldest while counts are left: said so.
                    reasons.append(reason if value != last_seen[index] else f"oldest {reason}")
                    last_seen[index] = value
                    if remaining[index] > 0:
                        remaining[index] -= 1
        for index, (cutoff, bucker, reason) in enumerate(withins):
            if moment > cutoff:
                value = bucker(moment, number)
                if value != within_seen[index] or oldest:
                    prefix = "" if value != within_seen[index] else "oldest "
                    within_seen[index] = value
                    reasons.append(f"{prefix}{reason}")
        answer.append(tuple(reasons))
    return answer
