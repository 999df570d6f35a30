"""The engine's modules as a whole: which run, how discovery shows them, config.yaml,
and what a call to a built-in engine_sim does not simulate answers."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import pytest
import trio
from trio.testing import MockClock

from engine_sim import EngineConfig, open_engine
from engine_sim.faults import RestartEngine
from engine_sim.modules import DEFAULT_MODULES, MODULES, ModuleConfigError, ModuleSpec
from iii_trio.protocol import RegisterTrigger
from tests.raw_worker import raw_workers


def test_every_default_module_exists() -> None:
    names = {cls.name for cls in MODULES}
    assert set(DEFAULT_MODULES) <= names
    assert DEFAULT_MODULES == ("iii-state", "iii-stream", "iii-pubsub", "iii-queue", "iii-cron")


async def test_by_default_the_engine_runs_state_streams_pubsub_queues_and_cron(
    autojump_clock: MockClock,
) -> None:
    async with open_engine() as engine, raw_workers(engine) as connect:
        w = await connect("w")
        await w.ok("state::set", {"scope": "s", "key": "k", "value": 1})
        assert await w.ok("state::get", {"scope": "s", "key": "k"}) == 1
        listing = await w.ok("engine::functions::list")
        by_id = {f["function_id"]: f["worker_name"] for f in listing["functions"]}
        assert by_id["state::set"] == "iii-state"
        assert by_id["stream::set"] == "iii-stream"
        assert by_id["publish"] == "iii-pubsub"
        assert by_id["engine::queue::enqueue"] == "iii-queue"
        types = await w.ok("engine::triggers::list")
        providers = {t["id"]: t["worker_name"] for t in types["triggers"]}
        assert providers["cron"] == "iii-cron"
        assert providers["state"] == "iii-state"
        assert providers["durable:subscriber"] == "iii-queue"


async def test_each_module_is_an_in_process_worker_in_the_workers_list(
    autojump_clock: MockClock,
) -> None:
    config = EngineConfig(modules=(ModuleSpec("iii-state"), ModuleSpec("iii-cron")))
    async with open_engine(config) as engine, raw_workers(engine) as connect:
        w = await connect("w")
        workers = {e["name"]: e for e in (await w.ok("engine::workers::list"))["workers"]}
        assert set(workers) == {"w", "iii-engine-functions", "iii-state", "iii-cron"}
        state = workers["iii-state"]
        assert state["id"] == "iii-state"
        assert state["runtime"] == "engine"
        assert state["isolation"] == "in-process"
        assert "state::set" in state["functions"]
        assert "state::set" not in workers["iii-engine-functions"]["functions"]
        info = await w.ok("engine::workers::info", {"name": "iii-cron"})
        assert info["worker"]["internal"] is False
        assert info["functions"] == []
        assert [t["id"] for t in info["trigger_types"]] == ["cron"]
        own = await w.ok("engine::workers::info", {"name": "iii-engine-functions"})
        assert own["worker"]["internal"] is True
        assert all(f["function_id"].startswith("engine::") for f in own["functions"])


async def test_a_module_left_out_answers_function_not_found_as_upstream(
    autojump_clock: MockClock,
) -> None:
    async with open_engine(EngineConfig(modules=())) as engine, raw_workers(engine) as connect:
        w = await connect("w")
        answer = await w.result("state::set", {"scope": "s", "key": "k", "value": 1})
        assert answer.error is not None
        assert answer.error.code == "function_not_found"


@pytest.mark.parametrize(
    ("function_id", "module"),
    [("engine::traces::clear", "iii-observability"), ("engine::traces::list", None)],
)
async def test_a_builtin_engine_sim_does_not_simulate_says_so(
    autojump_clock: MockClock, function_id: str, module: str | None
) -> None:
    async with open_engine() as engine, raw_workers(engine) as connect:
        w = await connect("w")
        answer = await w.result(function_id, {})
        assert answer.error is not None
        assert answer.error.code == "not_simulated"
        assert "engine_sim has no " in answer.error.message
        assert "docs/guides/engine-simulator.md" in answer.error.message
        if module is not None:
            assert f"engine_sim has no {module};" in answer.error.message


async def test_from_yaml_reads_a_real_engine_config(
    autojump_clock: MockClock,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STATE_FILE", str(tmp_path / "state.db"))
    path = tmp_path / "config.yaml"
    path.write_text(
        "workers:\n"
        "  - name: iii-worker-manager\n"
        "    config:\n"
        "      port: ${WORKER_PORT:49555}\n"
        "  - name: iii-state\n"
        "    config:\n"
        "      adapter:\n"
        "        name: kv\n"
        "        config:\n"
        "          store_method: file_based\n"
        "          file_path: ${STATE_FILE}\n"
        "  - name: iii-exec\n"
        "    config:\n"
        "      watch: []\n",
        encoding="utf-8",
    )
    with caplog.at_level(logging.WARNING, "engine_sim.config"):
        config = EngineConfig.from_yaml(path)
    assert config.port == 49555
    assert [spec.name for spec in config.modules or ()] == ["iii-state"]
    warnings = [r.getMessage() for r in caplog.records if r.name == "engine_sim.config"]
    assert len(warnings) == 1
    assert "iii-exec" in warnings[0]
    async with (
        open_engine(dataclasses.replace(config, port=None)) as engine,
        raw_workers(engine) as connect,
    ):
        w = await connect("w")
        await w.ok("state::set", {"scope": "s", "key": "k", "value": "kept"})
    assert (tmp_path / "state.db").exists()
    async with (
        open_engine(dataclasses.replace(config, port=None)) as engine,
        raw_workers(engine) as connect,
    ):
        w = await connect("w")
        assert await w.ok("state::get", {"scope": "s", "key": "k"}) == "kept"


async def test_wall_time_does_not_go_back_when_the_engine_restarts(
    autojump_clock: MockClock,
) -> None:
    # Modules read wall time (cron's scheduled_time, connected_at_ms); a restarted core
    # anchored anew would see it jump back by the virtual time that passed, and cron
    # would fire the same ticks again.
    async with open_engine() as engine:
        await trio.sleep(3600)
        before = engine.core.wall_time(trio.current_time())
        engine.faults.inject(RestartEngine())
        after = engine.core.wall_time(trio.current_time())
    assert after == before


@pytest.mark.parametrize(
    ("modules", "message"),
    [
        (("iii-state",), r"modules\[0\]: .* got 'iii-state' \(write ModuleSpec\('iii-state'\)\)"),
        ((ModuleSpec("iii-state", None),), r"modules\[0\]: expected a ModuleSpec with a mapping"),  # type: ignore[arg-type]
    ],
)
def test_modules_that_are_not_module_specs_are_a_clear_error(
    modules: tuple[object, ...], message: str
) -> None:
    with pytest.raises(ModuleConfigError, match=message):
        EngineConfig(modules=modules)  # type: ignore[arg-type]


async def test_a_trigger_loop_through_built_ins_is_cut_and_the_engine_goes_on(
    autojump_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    # Two subscribe bindings that call publish on their own topic double the calls at
    # each level of the payload: 2**20 built-in calls from one message, without a bound.
    async with open_engine() as engine, raw_workers(engine) as connect:
        w = await connect("w")
        for binding in ("loop-1", "loop-2"):
            await w.send(
                RegisterTrigger(
                    id=binding,
                    trigger_type="subscribe",
                    function_id="publish",
                    config={"topic": "t"},
                )
            )
        await engine.wait_for(lambda: len(engine.bindings()) == 2)
        data: Any = None
        for _ in range(20):
            data = {"topic": "t", "data": data}
        with caplog.at_level(logging.WARNING, "engine_sim"):
            assert await w.ok("publish", data) is None
        assert "over 10000 built-in calls followed from one message" in caplog.text
        await w.ok("state::set", {"scope": "s", "key": "k", "value": 1})
        assert await w.ok("state::get", {"scope": "s", "key": "k"}) == 1
