"""The logging and tracing guide's complete example runs as a user runs it.

The guide's block that starts ``# test_traced_checkout.py`` is written to a fresh
directory with a ``trio_mode`` pytest configuration and run by pytest in its own
process (with warnings as errors); a copy with the baggage left out must fail, so
the example's assertions are shown to test something.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "guides" / "logging-and-tracing.md"
BLOCK = re.compile(r"^```python\n(# ([\w.]+\.py)\n.*?)^```", re.DOTALL | re.MULTILINE)
CONFIG = "[tool.pytest.ini_options]\ntrio_mode = true\n"


def example() -> tuple[str, str]:
    [(code, name)] = BLOCK.findall(GUIDE.read_text("utf-8"))
    return name, code


def run(pytester: pytest.Pytester, code: str) -> pytest.RunResult:
    name, _ = example()
    pytester.path.joinpath("pyproject.toml").write_text(CONFIG, encoding="utf-8")
    pytester.path.joinpath(name).write_text(code, encoding="utf-8")
    return pytester.runpytest_subprocess("-q", "-W", "error", "-p", "no:cacheprovider")


def test_the_guides_traced_example_passes(pytester: pytest.Pytester) -> None:
    name, code = example()
    assert name == "test_traced_checkout.py"
    run(pytester, code).assert_outcomes(passed=1)


def test_the_guides_example_fails_when_the_baggage_is_not_set(pytester: pytest.Pytester) -> None:
    _, code = example()
    broken = code.replace('with tracing.baggage(tenant="acme"):', "if True:")
    assert broken != code
    run(pytester, broken).assert_outcomes(failed=1)
