"""The plugin's fixtures are hermetic: the shell's ``III_*`` variables do not reach them.

A developer whose shell has ``III_WORKER_NAME=prod-name`` (or a namespace, a token,
a URL) for running workers used to get a fixture worker renamed after it.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

import iii_trio
from engine_sim import Engine

SHELL = {
    "III_URL": "ws://prod.example:49134",
    "III_WORKER_NAME": "prod-name",
    "III_NAMESPACE": "prod",
    "III_TOKEN": "prod-secret",
}


@pytest.fixture
def shell_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The shell of a developer who also runs production workers from it.

    A sync fixture, so it is set before pytest-trio starts the Trio fixtures.
    """
    for key, value in SHELL.items():
        monkeypatch.setenv(key, value)


async def test_the_worker_and_engine_fixtures_ignore_the_shell(
    shell_env: None,
    iii_clock: trio.testing.MockClock,
    iii_engine: Engine,
    iii_worker: iii_trio.Worker,
) -> None:
    # The environment is in force: a worker made without the plugin takes it.
    assert iii_trio.InitOptions(worker_name="w").resolved_name() == "prod-name"
    assert iii_trio.resolve_url(None) == SHELL["III_URL"]

    assert iii_worker.name == "test-worker"
    assert iii_worker.namespace is None
    assert iii_worker.url == iii_trio.DEFAULT_ENGINE_URL
    assert iii_worker.options.resolved_headers() == {}
    # What the engine sees: the fixture's name, in the default namespace.
    [seen] = [w for w in iii_engine.workers() if w.id == iii_worker.worker_id]
    assert (seen.name, seen.namespace) == ("test-worker", "default")


def test_env_replaces_the_environment_for_every_iii_variable(shell_env: None) -> None:
    blank = iii_trio.InitOptions(worker_name="w", env={})
    assert (blank.resolved_name(), blank.resolved_namespace(), blank.resolved_headers()) == (
        "w",
        None,
        {},
    )
    assert iii_trio.resolve_url(None, blank.env) == iii_trio.DEFAULT_ENGINE_URL
    given = iii_trio.InitOptions(
        env={"III_WORKER_NAME": "n", "III_TOKEN": "t", "III_NAMESPACE": "x"}
    )
    assert (given.resolved_name(), given.resolved_namespace(), given.resolved_headers()) == (
        "n",
        "x",
        {"Authorization": "Bearer t"},
    )
    assert "prod-secret" not in repr(iii_trio.InitOptions(env=dict(SHELL)))
