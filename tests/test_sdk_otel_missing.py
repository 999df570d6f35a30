"""Without the ``iii-trio[otel]`` extra: iii_trio imports and runs, log export works, and
asking for tracing says what to install.

The missing packages are simulated the way Python itself reports a module that is
not there: ``sys.modules["opentelemetry"] = None`` makes every ``import
opentelemetry...`` raise ``ModuleNotFoundError``, in a fresh interpreter for the
import check and in this one (restored afterwards) for the worker tests.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import Any

import pytest
import trio
import trio.testing

import iii_trio
from engine_sim import Engine
from iii_trio import InitOptions, OtelConfig, OtelNotInstalled, tracing

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture
def without_opentelemetry(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(sys.modules):
        if name.startswith("opentelemetry") or name == "iii_trio._otel":
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    # ``from . import _otel`` finds a loaded submodule on its package first.
    monkeypatch.delattr(iii_trio, "_otel", raising=False)


def test_iii_trio_and_engine_sim_import_without_opentelemetry() -> None:
    script = textwrap.dedent(
        """
        import sys
        sys.modules["opentelemetry"] = None
        import iii_trio, iii_trio.sync, iii_trio.tracing, engine_sim
        loaded = sorted(m for m in sys.modules if m.startswith("opentelemetry."))
        print("loaded:", loaded)
        """
    )
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=120
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "loaded: []"


def options(otel: OtelConfig | None) -> InitOptions:
    return InitOptions(worker_name="plain", enable_metrics_reporting=False, env={}, otel=otel)


@pytest.mark.usefixtures("without_opentelemetry")
async def test_asking_for_tracing_names_the_extra_to_install(
    engine: Engine, autojump_clock: trio.testing.MockClock
) -> None:
    with pytest.raises(OtelNotInstalled) as raised:
        async with iii_trio.register_worker(
            options=options(OtelConfig()), transport=engine.transport
        ):
            pytest.fail("the worker started without OpenTelemetry")
    message = str(raised.value)
    assert "pip install 'iii-trio[otel]'" in message
    assert "OtelConfig(tracing=False)" in message
    assert isinstance(raised.value, ImportError)


@pytest.mark.usefixtures("without_opentelemetry")
async def test_a_worker_without_tracing_runs_and_exports_logs(
    engine: Engine, autojump_clock: trio.testing.MockClock
) -> None:
    seen: dict[str, Any] = {}
    async with iii_trio.register_worker(
        options=options(OtelConfig(tracing=False)), transport=engine.transport
    ) as worker:

        @worker.function("plain::f")
        async def f(data: Any) -> int:
            seen["trace"] = tracing.current_trace_id()
            worker.logger.info("no tracing here")
            with pytest.raises(OtelNotInstalled):
                tracing.get_baggage("tenant")
            with pytest.raises(OtelNotInstalled), tracing.span("step"):
                pass
            return 1

        await worker.ready()
        assert await worker.trigger("plain::f", {}, traceparent=TRACEPARENT) == 1
        worker_id = worker.worker_id
        assert worker_id is not None
        await engine.wait_for(
            lambda: any(
                isinstance(r.frame, bytes) and r.frame.startswith(b"LOGS")
                for r in engine.frames(worker_id)
            )
        )
    assert seen["trace"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert "opentelemetry.trace" not in sys.modules
