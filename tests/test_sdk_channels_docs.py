"""The complete examples of docs/guides/channels-and-http.md, run as a user runs them:
each block whose first line is ``# <file name>`` is written to a fresh directory and
the tests among them run there with pytest (and the engine_sim pytest plugin)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_docs_examples import named_files

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "guides" / "channels-and-http.md"
PYPROJECT = "[tool.pytest.ini_options]\ntrio_mode = true\n"


def test_the_guide_names_its_workers_and_their_tests() -> None:
    assert sorted(named_files(GUIDE)) == ["api.py", "files.py", "test_api.py", "test_files.py"]


def test_the_guides_examples_pass(pytester: pytest.Pytester) -> None:
    files = named_files(GUIDE)
    for name, code in files.items():
        pytester.path.joinpath(name).write_text(code, encoding="utf-8")
    pytester.path.joinpath("pyproject.toml").write_text(PYPROJECT, encoding="utf-8")
    tests = sum(
        code.count("\nasync def test_") for name, code in files.items() if name.startswith("test_")
    )
    assert tests == 5
    run = pytester.runpytest_subprocess("-q", "-W", "error", "-p", "no:cacheprovider")
    run.assert_outcomes(passed=tests)
