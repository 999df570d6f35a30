"""What installing iii-trio gives a user: one version, a license, extras by audience."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

import iii_trio

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
EXTRAS = PYPROJECT["project"]["optional-dependencies"]


def names(extra: str) -> set[str]:
    return {Requirement(spec).name for spec in EXTRAS[extra]}


def test_the_strategies_without_hypothesis_say_which_extra_to_install() -> None:
    blocked = (
        "import sys\n"
        "sys.modules['hypothesis'] = None  # as if Hypothesis were not installed\n"
        "import engine_sim.strategies\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", blocked], capture_output=True, text=True, timeout=60, check=False
    )
    assert run.returncode == 1
    last = run.stderr.strip().splitlines()[-1]
    assert last == (
        "ModuleNotFoundError: engine_sim.strategies needs Hypothesis, which iii-trio installs "
        "only for tests: pip install 'iii-trio[testing]'"
    )


def test_the_version_is_written_once() -> None:
    assert "version" not in PYPROJECT["project"]
    assert PYPROJECT["project"]["dynamic"] == ["version"]
    assert PYPROJECT["tool"]["hatch"]["version"]["path"] == "iii_trio/_version.py"
    assert importlib.metadata.version("iii-trio") == iii_trio.__version__


def test_the_license_is_mit_and_shipped() -> None:
    assert PYPROJECT["project"]["license"] == "MIT"
    assert (ROOT / "LICENSE").read_text(encoding="utf-8").startswith("MIT License\n")
    assert "LICENSE" in PYPROJECT["project"]["license-files"]


def test_the_testing_extra_holds_what_a_users_suite_needs_and_no_dev_tools() -> None:
    assert names("testing") == {"pytest", "pytest-trio", "hypothesis"}
    # Working on iii-trio itself needs the testing extra and the project's own tools.
    assert {"iii-trio", "mypy", "ruff", "iii-sdk"} <= names("dev")
    assert {"mkdocs", "mkdocs-material", "mkdocstrings"} <= names("docs")
    assert "testing" in Requirement(next(s for s in EXTRAS["dev"] if "iii-trio" in s)).extras
