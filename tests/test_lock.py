"""The lock (constraints.txt): what is tested is what ships. It pins every package that
pyproject.toml asks for, within what it asks; this test run installed exactly those
pins; and the image installs its dependencies from it, before its source."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^([A-Za-z0-9._-]+)==([^\s;#]+)")


def pins() -> dict[str, str]:
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    return {canonicalize_name(match[1]): match[2] for line in lines if (match := PIN.match(line))}


def asked() -> list[Requirement]:
    """Every requirement of the project, its extras' included (but the project itself)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    texts = project["dependencies"] + [
        text for extra in project["optional-dependencies"].values() for text in extra
    ]
    requirements = [Requirement(text) for text in texts]
    return [
        r for r in requirements if canonicalize_name(r.name) != canonicalize_name(project["name"])
    ]


def test_the_lock_pins_every_requirement_within_what_pyproject_asks() -> None:
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    # (a path or URL would hold only on the machine that wrote the lock)
    assert [line for line in lines if " @ " in line.split("#")[0]] == []
    locked = pins()
    unpinned = [str(r) for r in asked() if canonicalize_name(r.name) not in locked]
    assert unpinned == [], "not in constraints.txt (run `make lock`)"
    outside = [
        f"{r}: locked {locked[canonicalize_name(r.name)]}"
        for r in asked()
        if not r.specifier.contains(locked[canonicalize_name(r.name)], prereleases=True)
    ]
    assert outside == [], "pins outside pyproject.toml's bounds (run `make lock`)"


def test_this_run_installed_the_locked_versions() -> None:
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}
    drift = {
        name: f"installed {installed.get(name)}, locked {version}"
        for name, version in pins().items()
        if installed.get(name) != version
    }
    assert drift == {}, "installed without the lock (make test installs with it)"


def test_the_image_installs_its_dependencies_from_the_lock_before_its_source() -> None:
    build = (ROOT / "Dockerfile").read_text().split("\nFROM ")[1]
    dependencies = build.index("--constraint constraints.txt --requirement")
    assert dependencies < build.index("COPY backup_operator")
    project = build.index("pip install --no-deps --constraint constraints.txt .")
    assert project > build.index("COPY operator")
