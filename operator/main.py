"""`backup-operator operator`: run the Kopf operator (all handlers are registered here)."""

from __future__ import annotations

import logging
import random
from typing import Any

import kopf

from ..settings import Settings
from . import backupjobs, backupschedules, retentionpolicies  # noqa: F401  (registers handlers)
from .runtime import configure, shut_down


@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    configure(settings, memo)


@kopf.on.cleanup()
def cleanup(memo: kopf.Memo, **_: Any) -> None:
    shut_down(memo)


def run(
    settings: Settings,
    *,
    namespaces: list[str],
    standalone: bool,
    peering: str | None,
    liveness: str | None,
) -> None:
    """Watch `namespaces` (none: the whole cluster) until stopped."""
    logging.getLogger("kopf.objects").setLevel(logging.INFO)
    kopf_settings = kopf.OperatorSettings()
    # Watching named namespaces, Kopf needs no cluster-wide list of namespaces or CRDs
    # (the chart's Roles grant none); without this it asks, and is refused, at start.
    kopf_settings.scanning.disabled = bool(namespaces)
    kopf.run(
        settings=kopf_settings,
        clusterwide=not namespaces,
        namespaces=namespaces,
        standalone=standalone,
        # Kopf takes a peering name as a request for peering, even when standalone.
        peering_name=None if standalone else (peering or settings.operator_peering),
        priority=settings.operator_priority or random.randint(1, 1_000_000),
        liveness_endpoint=liveness,
    )
