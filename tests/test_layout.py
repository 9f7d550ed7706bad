"""One import package: `operator` stays the standard library's, `api` is not top-level."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import backup_operator.api
import backup_operator.operator

ROOT = Path(__file__).resolve().parents[1]


def run(code: str, *flags: str) -> subprocess.CompletedProcess[str]:
    # From the repository root, where the folders `operator/` and `api/` are.
    return subprocess.run(
        [sys.executable, *flags, "-c", code], cwd=ROOT, capture_output=True, text=True
    )


def test_stdlib_operator_wins_even_from_the_repository_root() -> None:
    result = run("import runpy, collections, operator; assert operator.itemgetter, operator")
    assert result.returncode == 0, result.stderr
    result = subprocess.run(
        [sys.executable, "-m", "backup_operator", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


def test_api_is_only_reachable_inside_the_package() -> None:
    result = run("import importlib.util as u; assert u.find_spec('api') is None", "-I")
    assert result.returncode == 0, result.stderr
    assert Path(backup_operator.api.__path__[0]).resolve() == ROOT / "api"
    assert Path(backup_operator.operator.__path__[0]).resolve() == ROOT / "operator"
