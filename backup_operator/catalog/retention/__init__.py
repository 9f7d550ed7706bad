"""Retention in the catalog, one module per job: the policies themselves, which policy
governs which object, plans (what a run would keep and delete, and why), the locks
policies put on new versions, the rows of real runs (services.retention makes them),
and their audit. Callers import from here."""

from .audit import get_run, list_runs, run_deletions
from .governance import attach, detach, govern_job, governed_objects
from .immutability import lock_for, locking_policies
from .planning import Plan, PlannedJob, PlannedVersion, dry_run, plan
from .policies import (
    create_policy,
    delete_policy,
    get_policy,
    list_policies,
    put_policy,
    update_policy,
)

__all__ = [
    "Plan",
    "PlannedJob",
    "PlannedVersion",
    "attach",
    "create_policy",
    "delete_policy",
    "detach",
    "dry_run",
    "get_policy",
    "get_run",
    "govern_job",
    "governed_objects",
    "list_policies",
    "list_runs",
    "lock_for",
    "locking_policies",
    "plan",
    "put_policy",
    "run_deletions",
    "update_policy",
]
