"""``iii-sim serve``'s engine settings as flags, and ``iii-sim --version``.

Every ``EngineConfig`` option a user may want is a flag of the same name; a flag
given wins over the ``--config`` file's value and one not given leaves it alone.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest

from engine_sim import EngineConfig
from engine_sim._cli import _CHOICES, _NOT_FLAGS, _SETTINGS, _engine_config, _parser
from iii_trio import InitOptions
from iii_trio import sync as iii
from tests.served import Served


def _config(*argv: str) -> EngineConfig:
    config, _ = _engine_config(_parser().parse_args(["serve", *argv]))
    return config


def test_every_engine_setting_is_a_flag_or_said_why_not() -> None:
    fields = {field.name for field in dataclasses.fields(EngineConfig)}
    assert fields - _NOT_FLAGS == set(_SETTINGS) | set(_CHOICES)


def test_the_websocket_flag_picks_the_engines_stack_and_refuses_others(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert _config().websocket == "websockets"
    assert _config("--websocket", "trio-websocket").websocket == "trio-websocket"
    with pytest.raises(SystemExit):
        _config("--websocket", "tornado")
    assert "invalid choice: 'tornado'" in capsys.readouterr().err


@pytest.mark.parametrize("field", sorted(_SETTINGS))
def test_each_flag_sets_its_setting(field: str) -> None:
    value = "0.0.0.0" if field == "host" else "4321"
    config = _config("--" + field.replace("_", "-"), value)
    assert getattr(config, field) == (value if field == "host" else 4321)


def test_a_flag_not_given_keeps_the_default_and_the_seed_stays_unpredictable() -> None:
    config = _config()
    assert config.seed is None
    assert config.max_message_bytes == EngineConfig.max_message_bytes
    assert config.record_frames is False  # unless --record


def test_flags_given_win_over_the_config_file_and_the_others_keep_its_values(
    tmp_path: Path,
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "workers:\n  - name: iii-worker-manager\n"
        "    config: {port: 40001, handshake_timeout_ms: 1234}\n"
    )
    config = _config("--config", str(path), "--seed", "3", "--max-message-bytes", "2048")
    assert (config.port, config.handshake_timeout_ms) == (40001, 1234)
    assert (config.seed, config.max_message_bytes) == (3, 2048)
    config = _config("--config", str(path), "--handshake-timeout-ms", "99")
    assert config.handshake_timeout_ms == 99


def test_the_help_says_each_flags_default() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "engine_sim", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    text = " ".join(done.stdout.split())  # as if unwrapped
    assert "--max-message-bytes BYTES largest message a worker may send" in text
    assert f"(default {EngineConfig.max_message_bytes})" in text
    assert "--seed N seed for worker ids" in text
    assert "(default none: unpredictable)" in text
    assert "--worker PATH a worker's directory holding iii.worker.yaml" in text


def test_version_names_the_package_version() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "engine_sim", "--version"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert done.stdout.startswith(f"iii-sim (iii-trio) {importlib.metadata.version('iii-trio')}; ")


def _first_worker_id(seed: str) -> str | None:
    served = Served(["--seed", seed])
    try:
        with iii.register_worker(served.url, InitOptions(worker_name="w")) as worker:
            worker.ready(timeout=10)
            return worker.worker_id
    finally:
        assert served.stop() == 0


def test_a_seed_given_on_the_command_line_makes_ids_repeat_run_after_run() -> None:
    first = _first_worker_id("7")
    assert first is not None
    assert _first_worker_id("7") == first


def test_the_features_flag_sets_what_the_engine_announces_and_empty_announces_none() -> None:
    assert _config().features == ("observe.v1", "local-dispatch.v1", "large-messages.v1")
    assert _config("--features", "observe.v1").features == ("observe.v1",)
    assert _config("--features", "").features == ()
