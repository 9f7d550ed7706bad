"""Prometheus metrics read from the catalog at scrape time, so that every replica of the
API and of the operator tells the same story, across restarts.

Labels are `namespace`, `source` and `schedule` (jobs) and `policy` (retention). Their
cardinality is bounded: past `max_series` label sets, the least active are folded into
`source="other"` / `policy="other"`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from .storage import ObjectStore

logger = logging.getLogger(__name__)

PREFIX = "minio_backup"
DURATION_BUCKETS = (10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 3 * 3600.0, 6 * 3600.0)
JOB_LABELS = ["namespace", "source", "schedule"]

# Every metric this module exports (alerts and dashboards may use only these).
EXPORTED = {
    f"{PREFIX}_jobs_finished_total": "Backup jobs that ended, by outcome",
    f"{PREFIX}_jobs_running": "Backup jobs running now",
    f"{PREFIX}_job_heartbeat_age_seconds": "Seconds since the oldest running job's last heartbeat",
    f"{PREFIX}_duration_seconds": "Duration of finished backups",
    f"{PREFIX}_last_success_timestamp_seconds": "When the last successful backup ended",
    f"{PREFIX}_bytes_total": "Bytes of finished backups: read, uploaded, saved by deduplication",
    f"{PREFIX}_files_total": "Files of finished backups, by outcome",
    f"{PREFIX}_retention_runs_total": "Retention runs, finished or interrupted",
    f"{PREFIX}_retention_versions_deleted_total": "Object versions retention deleted",
    f"{PREFIX}_retention_bytes_freed_total": "Bytes retention freed",
    f"{PREFIX}_catalog_rows": "Rows in the catalog's main tables (estimate)",
    f"{PREFIX}_bucket_bytes": "Bytes of a bucket: stored (its live versions, packs "
    "included) and logical (the distinct contents they hold)",
    f"{PREFIX}_object_store_up": "1 when the object store answers, else 0",
}

# Per duration bucket, how many finished jobs took at most that long: counted in SQL, so
# a scrape reads a few numbers per label set, not every job's duration.
_WITHIN = ", ".join(f"count(*) FILTER (WHERE took <= {bound})" for bound in DURATION_BUCKETS)

_JOBS = text(f"""
    SELECT coalesce(namespace, '') AS namespace, source_system AS source,
           coalesce(schedule, '') AS schedule, status,
           count(*) AS jobs,
           max(completed_at) FILTER (WHERE status = 'completed') AS last_success,
           coalesce(sum((stats->>'bytes_read')::bigint), 0) AS bytes_read,
           coalesce(sum((stats->>'bytes_uploaded')::bigint), 0) AS bytes_uploaded,
           coalesce(sum((stats->>'bytes_saved')::bigint), 0) AS bytes_saved,
           -- (JobStats: one shape for directory and registered jobs)
           coalesce(sum((stats->>'files_seen')::bigint - (stats->>'unchanged')::bigint
                        - (stats->>'duplicate')::bigint - (stats->>'pending_upload')::bigint),
                    0) AS files_stored,
           coalesce(sum((stats->>'unchanged')::bigint), 0) AS files_unchanged,
           coalesce(sum((stats->>'duplicate')::bigint), 0) AS files_duplicate,
           coalesce(sum((stats->>'failed_files')::bigint), 0) AS files_failed,
           max(extract(epoch FROM now() - heartbeat_at))
               FILTER (WHERE status = 'running') AS heartbeat_age,
           array[{_WITHIN}] AS within,
           count(took) AS timed,
           coalesce(sum(took), 0) AS seconds
    FROM (SELECT *, extract(epoch FROM completed_at - started_at) AS took
          FROM backup_jobs WHERE status <> 'pending') AS jobs
    GROUP BY 1, 2, 3, 4
""")

_RUNS = text("""
    SELECT policy_name AS policy,
           count(*) FILTER (WHERE finished_at IS NOT NULL) AS finished,
           -- stopped (an outage, its deadline), or unfinished for an hour (its
           -- process died): interrupted; a later run finishes the work
           count(*) FILTER (WHERE finished_at IS NULL
                              AND (error IS NOT NULL
                                   OR started_at < now() - interval '1 hour')) AS interrupted,
           coalesce(sum(deleted), 0) AS deleted,
           coalesce(sum(bytes_freed), 0) AS bytes_freed
    FROM retention_runs GROUP BY 1
""")

# Per bucket, what its live versions weigh, and the distinct contents they hold: the
# difference is the packs' index and the contents no kept file references yet.
_BUCKET_BYTES = text("""
    SELECT b.name AS bucket,
           coalesce((SELECT sum(v.size) FROM object_versions v
                     JOIN backup_objects o ON o.id = v.object_id
                     WHERE o.bucket_id = b.id AND v.deleted_at IS NULL), 0) AS stored,
           coalesce((SELECT sum(f.size) FROM files f
                     JOIN object_versions v ON v.id = f.object_version_id
                     WHERE f.bucket_id = b.id AND NOT f.is_duplicate
                       AND v.deleted_at IS NULL), 0) AS logical
    FROM buckets b
""")

_ROWS = text("""
    SELECT relname, greatest(reltuples, 0)::bigint FROM pg_class
    WHERE relname IN ('backup_jobs', 'files', 'backup_objects', 'object_versions')
""")


class CatalogCollector(Collector):
    def __init__(
        self,
        sessions: sessionmaker[Session],
        store: ObjectStore,
        *,
        max_series: int = 500,
        max_age: float = 0.0,
    ) -> None:
        """`max_age`: seconds the catalog's figures are served from the last scrape's
        (several scrapers, or replicas behind one, do not each aggregate the catalog)."""
        self.sessions = sessions
        self.store = store
        self.max_series = max_series
        self.max_age = max_age
        self.cached: tuple[float, list[Metric]] | None = None
        self.lock = threading.Lock()

    def describe(self) -> list[Metric]:
        return []  # collected on demand: no describe-time queries

    def collect(self) -> Iterator[Metric]:
        yield self._store_up()
        with self.lock:  # concurrent scrapes wait for one aggregation
            now = time.monotonic()
            if self.cached is None or now - self.cached[0] >= self.max_age:
                try:
                    self.cached = (now, list(self._catalog()))
                except Exception as error:  # the catalog is down: log it, export the rest
                    logger.warning("metrics: catalog unavailable: %s", error)
                    self.cached = None
                    return
            yield from self.cached[1]

    def _catalog(self) -> Iterator[Metric]:
        with self.sessions() as session:
            jobs = session.execute(_JOBS).all()
            runs = session.execute(_RUNS).all()
            rows = session.execute(_ROWS).all()
            sizes = session.execute(_BUCKET_BYTES).all()
        yield from self._jobs(jobs)
        yield from self._runs(runs)
        catalog = GaugeMetricFamily(
            f"{PREFIX}_catalog_rows", EXPORTED[f"{PREFIX}_catalog_rows"], labels=["table"]
        )
        for table, count in rows:
            catalog.add_metric([table], count)
        yield catalog
        name = f"{PREFIX}_bucket_bytes"
        size = GaugeMetricFamily(name, EXPORTED[name], labels=["bucket", "kind"])
        for row in sizes:
            size.add_metric([row.bucket, "stored"], float(row.stored))
            size.add_metric([row.bucket, "logical"], float(row.logical))
        yield size

    def _store_up(self) -> Metric:
        try:
            self.store.ping()
            up = 1.0
        except Exception:
            up = 0.0
        name = f"{PREFIX}_object_store_up"
        return GaugeMetricFamily(name, EXPORTED[name], value=up)

    def _bounded(self, weight: dict[tuple[str, ...], float]) -> set[tuple[str, ...]]:
        """The label sets kept as they are: the most active `max_series`."""
        ranked = sorted(weight, key=lambda key: weight[key], reverse=True)
        return set(ranked[: self.max_series])

    def _jobs(self, rows: Sequence[Any]) -> Iterator[Metric]:
        def family(kind: type, short: str, labels: list[str]) -> Any:
            name = f"{PREFIX}_{short}"
            return kind(name, EXPORTED.get(name) or EXPORTED[f"{name}_total"], labels=labels)

        weight: dict[tuple[str, ...], float] = defaultdict(float)
        for row in rows:
            weight[(row.namespace, row.source, row.schedule)] += row.jobs
        kept = self._bounded(weight)

        def labels_of(row: Any) -> tuple[str, ...]:
            key = (row.namespace, row.source, row.schedule)
            return key if key in kept else (row.namespace, "other", row.schedule)

        finished = family(CounterMetricFamily, "jobs_finished", [*JOB_LABELS, "outcome"])
        running = family(GaugeMetricFamily, "jobs_running", JOB_LABELS)
        heartbeat = family(GaugeMetricFamily, "job_heartbeat_age_seconds", JOB_LABELS)
        last = family(GaugeMetricFamily, "last_success_timestamp_seconds", JOB_LABELS)
        data = family(CounterMetricFamily, "bytes", [*JOB_LABELS, "kind"])
        files = family(CounterMetricFamily, "files", [*JOB_LABELS, "outcome"])
        sums: dict[tuple[Any, ...], float] = defaultdict(float)
        latest: dict[tuple[str, ...], float] = {}
        oldest_beat: dict[tuple[str, ...], float] = {}
        # Per label set: jobs at most as long as each bucket bound, all timed, seconds.
        durations: dict[tuple[str, ...], list[float]] = defaultdict(
            lambda: [0.0] * (len(DURATION_BUCKETS) + 2)
        )
        for row in rows:
            key = labels_of(row)
            if row.status == "running":
                sums[("running", *key)] += row.jobs
                if row.heartbeat_age is not None:
                    age = float(row.heartbeat_age)
                    oldest_beat[key] = max(oldest_beat.get(key, 0.0), age)
                continue
            sums[("finished", *key, row.status)] += row.jobs
            for kind, value in (
                ("read", row.bytes_read),
                ("uploaded", row.bytes_uploaded),
                ("deduplicated", row.bytes_saved),
            ):
                sums[("bytes", *key, kind)] += float(value)
            for outcome, value in (
                ("stored", row.files_stored),
                ("unchanged", row.files_unchanged),
                ("duplicate", row.files_duplicate),
                ("failed", row.files_failed),
            ):
                sums[("files", *key, outcome)] += float(value)
            if row.last_success is not None:
                latest[key] = max(latest.get(key, 0.0), row.last_success.timestamp())
            counted = durations[key]
            for index, value in enumerate([*row.within, row.timed, row.seconds]):
                counted[index] += float(value)
        targets = {"running": running, "finished": finished, "bytes": data, "files": files}
        for (what, *labels), value in sorted(sums.items()):
            targets[what].add_metric(labels, value)
        for key, age in oldest_beat.items():
            heartbeat.add_metric(list(key), age)
        for key, when in latest.items():
            last.add_metric(list(key), when)
        histogram = family(HistogramMetricFamily, "duration_seconds", JOB_LABELS)
        for key, (*within, timed, seconds) in durations.items():
            buckets = [(str(bound), n) for bound, n in zip(DURATION_BUCKETS, within, strict=True)]
            histogram.add_metric(list(key), [*buckets, ("+Inf", timed)], sum_value=seconds)
        yield from (finished, running, heartbeat, histogram, last, data, files)

    def _runs(self, rows: Sequence[Any]) -> Iterator[Metric]:
        weight: dict[tuple[str, ...], float] = {
            (row.policy,): float(row.finished + row.interrupted) for row in rows
        }
        kept = self._bounded(weight)
        runs = CounterMetricFamily(
            f"{PREFIX}_retention_runs",
            EXPORTED[f"{PREFIX}_retention_runs_total"],
            labels=["policy", "outcome"],
        )
        deleted = CounterMetricFamily(
            f"{PREFIX}_retention_versions_deleted",
            EXPORTED[f"{PREFIX}_retention_versions_deleted_total"],
            labels=["policy"],
        )
        freed = CounterMetricFamily(
            f"{PREFIX}_retention_bytes_freed",
            EXPORTED[f"{PREFIX}_retention_bytes_freed_total"],
            labels=["policy"],
        )
        sums: dict[tuple[str, ...], float] = defaultdict(float)
        for row in rows:
            policy = row.policy if (row.policy,) in kept else "other"
            sums[("runs", policy, "finished")] += float(row.finished)
            sums[("runs", policy, "interrupted")] += float(row.interrupted)
            sums[("deleted", policy)] += float(row.deleted)
            sums[("freed", policy)] += float(row.bytes_freed)
        targets = {"runs": runs, "deleted": deleted, "freed": freed}
        for (what, *labels), value in sorted(sums.items()):
            targets[what].add_metric(labels, value)
        yield from (runs, deleted, freed)
