"""One import package: `operator` stays the standard library's, `api` is not top-level."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_operator_and_api_live_inside_the_package() -> None:
    code = (
        "import operator, importlib.util, backup_operator.api, backup_operator.operator;"
        "assert hasattr(operator, 'itemgetter'), operator.__file__;"
        "assert importlib.util.find_spec('api') is None"
    )
    # From the repository root, where the folders `operator/` and `api/` are.
    result = subprocess.run(
        [sys.executable, "-I", "-c", code], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    import backup_operator.api

    assert Path(backup_operator.api.__file__).parent == ROOT / "api"
