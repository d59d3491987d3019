"""The suite refuses to run on an incomplete dev install instead of skipping what is missing.

Every requirement of the ``dev`` extra in pyproject.toml (with the extras it asks for, e.g.
``jsonargparse[signatures]``) must be installed at a version the specifier accepts, and its
top-level modules must import. Otherwise pytest stops before collecting anything and prints the
``pip install`` command that fixes it, so a broken install fails CI rather than turning the
exactness oracle or the Hugging Face zoo into skips.
"""

from __future__ import annotations

import importlib
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the dev extra installs tomli on 3.10
    import tomli as tomllib

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def dev_requirements(pyproject: Path = PYPROJECT) -> list[Requirement]:
    """The ``dev`` extra's requirements that apply to this interpreter."""
    extras = tomllib.loads(pyproject.read_text("utf-8"))["project"]["optional-dependencies"]
    reqs = [Requirement(text) for text in extras["dev"]]
    return [r for r in reqs if r.marker is None or r.marker.evaluate()]


def _problems(req: Requirement, seen: set[str]) -> list[str]:
    """Why ``req`` (and the requirements its extras pull in) is not usable here; [] when it is."""
    key = req.name.lower()
    if key in seen:
        return []
    seen.add(key)
    try:
        dist = metadata.distribution(req.name)
    except metadata.PackageNotFoundError:
        return [f"{req} is not installed"]
    if req.specifier and not req.specifier.contains(dist.version, prereleases=True):
        return [f"{req} is required, {req.name} {dist.version} is installed"]
    problems = []
    for module in _top_level_modules(dist):
        try:
            importlib.import_module(module)
        except Exception as err:  # a broken install fails in many ways
            problems.append(f"{req.name} is installed but `import {module}` fails: {err!r}")
    for extra in req.extras:
        for text in dist.requires or []:
            sub = Requirement(text)
            if sub.marker is not None and sub.marker.evaluate({"extra": extra}):
                problems += _problems(Requirement(str(sub).split(";")[0]), seen)
    return problems


def _top_level_modules(dist: metadata.Distribution) -> list[str]:
    """Importable top-level names of an installed distribution (empty when it doesn't say)."""
    names = (dist.read_text("top_level.txt") or "").split()
    if not names:  # wheels without top_level.txt: the packages and modules their RECORD installs
        names = [
            f.parts[0].removesuffix(".py")
            for f in dist.files or ()
            if (len(f.parts) == 1 and f.suffix == ".py")
            or (len(f.parts) == 2 and f.parts[1] == "__init__.py")
        ]
    return sorted({n for n in names if n.isidentifier() and not n.startswith("_")})


def missing_dev_requirements(pyproject: Path = PYPROJECT) -> list[str]:
    """One line per unusable requirement of the dev extra."""
    seen: set[str] = set()
    return [line for req in dev_requirements(pyproject) for line in _problems(req, seen)]


def pytest_configure(config: pytest.Config) -> None:
    problems = missing_dev_requirements()
    if problems:
        raise pytest.UsageError(
            "the test suite needs the complete dev extra:\n  "
            + "\n  ".join(problems)
            + '\nrun: pip install -e ".[dev]"  (from the repository root)'
        )
