"""The README's worker and test, and the docs' complete test examples, run as a user runs them.

A code block whose first line is ``# <file name>`` is that file: the README's ``calc.py``,
``test_calc.py`` and ``pyproject.toml`` are written to a fresh directory and run there with
pytest, and ``calc.py`` also serves a simulated engine over a real socket as its own process.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import iii_trio
from engine_sim import EngineConfig, ThreadedEngine, run_in_thread
from iii_trio import sync

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
TESTING_GUIDE = ROOT / "docs" / "guides" / "testing.md"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.DOTALL | re.MULTILINE)
NAMED = re.compile(r"# ([\w.]+\.(?:py|toml))\n")


def code_blocks(markdown: Path) -> list[tuple[str, str]]:
    """``(language, code)`` of each fenced block, in order."""
    return [(m.group(1), m.group(2)) for m in BLOCK.finditer(markdown.read_text("utf-8"))]


def named_files(markdown: Path) -> dict[str, str]:
    """The blocks that start with ``# <file name>``, by that name."""
    files = {}
    for _, code in code_blocks(markdown):
        if named := NAMED.match(code):
            files[named.group(1)] = code
    return files


def test_the_readme_names_its_worker_its_test_and_their_config() -> None:
    files = named_files(README)
    assert sorted(files) == ["calc.py", "pyproject.toml", "test_calc.py"]
    assert "trio_mode = true" in files["pyproject.toml"]
    assert "from calc import add" in files["test_calc.py"]
    # The README opens with what a user needs, before anything about this repository.
    text = README.read_text("utf-8")
    order = [
        "## Install",
        "pip install .",
        "# calc.py",
        "# test_calc.py",
        "./dev run",
        "./dev test",
    ]
    assert [text.index(marker) for marker in order] == sorted(text.index(m) for m in order)


def test_the_readme_test_passes_against_the_readme_worker(pytester: pytest.Pytester) -> None:
    for name, code in named_files(README).items():
        pytester.path.joinpath(name).write_text(code, encoding="utf-8")
    tests = named_files(README)["test_calc.py"].count("\nasync def test_")
    assert tests >= 1
    run = pytester.runpytest_subprocess("-q", "-W", "error", "-p", "no:cacheprovider")
    run.assert_outcomes(passed=tests)


def test_the_readme_test_fails_when_the_worker_is_wrong(pytester: pytest.Pytester) -> None:
    files = named_files(README)
    files["calc.py"] = files["calc.py"].replace('data["a"] + data["b"]', 'data["a"] - data["b"]')
    for name, code in files.items():
        pytester.path.joinpath(name).write_text(code, encoding="utf-8")
    pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider").assert_outcomes(failed=1)


@pytest.fixture
def listening_engine() -> Iterator[ThreadedEngine]:
    with run_in_thread(EngineConfig(port=0)) as engine:
        yield engine


def test_the_readme_worker_serves_an_engine_and_stops_on_ctrl_c(
    tmp_path: Path, listening_engine: ThreadedEngine
) -> None:
    engine = listening_engine
    calc = tmp_path / "calc.py"
    calc.write_text(named_files(README)["calc.py"], encoding="utf-8")
    env = {"PATH": "", "III_URL": engine.url, "PYTHONUNBUFFERED": "1"}
    worker = subprocess.Popen(
        [sys.executable, str(calc)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Python installs its Ctrl-C handler only when SIGINT is not ignored on start.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        engine.wait_for(lambda e: "math::add" in e.function_ids(), 30)
        options = iii_trio.InitOptions(worker_name="readme-caller", enable_metrics_reporting=False)
        with sync.register_worker(engine.url, options=options) as caller:
            caller.ready(timeout=30)
            assert caller.trigger("math::add", {"a": 2, "b": 3}) == 5
        [calc_worker] = [w for w in engine.call(lambda e: e.workers()) if w.name == "calc"]
        assert "math::add" in calc_worker.functions
        worker.send_signal(signal.SIGINT)
        _, err = worker.communicate(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.communicate()
    assert worker.returncode == 0, err
    assert "Traceback" not in err
    engine.wait_for(lambda e: "math::add" not in e.function_ids(), 30)


def test_the_testing_guides_complete_examples_pass(pytester: pytest.Pytester) -> None:
    examples = [code for lang, code in code_blocks(TESTING_GUIDE) if lang == "python"]
    complete = [code for code in examples if "\ndef test_" in code or "\nasync def test_" in code]
    assert len(complete) >= 3  # the README's test, the fault example, the official-SDK one
    files = named_files(README)
    pytester.path.joinpath("calc.py").write_text(files["calc.py"], encoding="utf-8")
    pytester.path.joinpath("pyproject.toml").write_text(files["pyproject.toml"], "utf-8")
    for index, code in enumerate(complete):
        pytester.path.joinpath(f"test_guide_{index}.py").write_text(code, encoding="utf-8")
    # The official SDK (a dev dependency here) warns of its own deprecations; not ours.
    run = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    run.assert_outcomes(passed=len(complete))
