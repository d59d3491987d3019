"""The dev-extra check in tests/conftest.py: an incomplete install stops the suite, naming the fix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PYPROJECT, missing_dev_requirements

ROOT = Path(__file__).resolve().parents[1]


def pyproject_with_dev(tmp_path: Path, dev: list[str]) -> Path:
    path = tmp_path / "pyproject.toml"
    lines = ", ".join(f'"{r}"' for r in dev)
    path.write_text(f'[project]\nname = "x"\n[project.optional-dependencies]\ndev = [{lines}]\n')
    return path


def test_this_install_has_the_whole_dev_extra():
    assert PYPROJECT.parent == ROOT
    assert missing_dev_requirements() == []


def test_missing_outdated_broken_and_extra_requirements_are_each_named(tmp_path, monkeypatch):
    site = tmp_path / "site"  # a distribution that installs but doesn't import, with one extra
    (site / "lamfake-1.0.dist-info").mkdir(parents=True)
    (site / "lamfake-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: lamfake\nVersion: 1.0\n"
        "Provides-Extra: fast\nRequires-Dist: lam-no-such-dist-16>=2; extra == 'fast'\n"
    )
    (site / "lamfake-1.0.dist-info" / "top_level.txt").write_text("lamfake\n")
    (site / "lamfake.py").write_text("raise ImportError('broken on purpose')\n")
    monkeypatch.syspath_prepend(str(site))
    pyproject = pyproject_with_dev(
        tmp_path,
        ["lam-no-such-dist-15", "pytest>=999", "lamfake[fast]>=1", "hypothesis; python_version < '3'"],
    )
    assert missing_dev_requirements(pyproject) == [
        "lam-no-such-dist-15 is not installed",
        f"pytest>=999 is required, pytest {pytest.__version__} is installed",
        "lamfake is installed but `import lamfake` fails: ImportError('broken on purpose')",
        "lam-no-such-dist-16>=2 is not installed",
    ]


def test_an_incomplete_install_stops_pytest_with_the_pip_command(tmp_path):
    """pytest run on a copy of the suite whose dev extra names a package that isn't installed."""
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "conftest.py").write_text((ROOT / "tests" / "conftest.py").read_text())
    (tmp_path / "tests" / "test_nothing.py").write_text("def test_nothing():\n    pass\n")
    pyproject_with_dev(tmp_path, ["pytest>=8", "lam-no-such-dist-15>=1"])
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 4, out  # pytest's usage error: nothing was collected or skipped
    assert "lam-no-such-dist-15>=1 is not installed" in out
    assert 'pip install -e ".[dev]"' in out
    assert "passed" not in out and "skipped" not in out
