"""The state-and-streams guide's examples run as a user runs them: each ``# test_*.py``
block is written to a fresh directory and run by pytest with the plugin's fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_docs_examples import code_blocks, named_files

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "guides" / "state-and-streams.md"


def test_the_guides_examples_pass(pytester: pytest.Pytester) -> None:
    files = {name: code for name, code in named_files(GUIDE).items() if name.startswith("test_")}
    assert sorted(files) == [
        "test_custom_stream.py",
        "test_state.py",
        "test_stream_hooks.py",
        "test_streams.py",
    ]
    pytester.path.joinpath("pyproject.toml").write_text(
        "[tool.pytest.ini_options]\ntrio_mode = true\n", encoding="utf-8"
    )
    for name, code in files.items():
        pytester.path.joinpath(name).write_text(code, encoding="utf-8")
    run = pytester.runpytest_subprocess("-q", "-W", "error", "-p", "no:cacheprovider")
    run.assert_outcomes(passed=len(files))


def test_every_python_block_of_the_guide_is_one_of_its_tests() -> None:
    python = [code for lang, code in code_blocks(GUIDE) if lang == "python"]
    assert all(code.startswith("# test_") for code in python)
