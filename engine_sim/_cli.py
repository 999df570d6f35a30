"""``iii-sim``: run the simulated engine from a shell."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import random
import signal
import sys
from collections.abc import Sequence
from typing import Any

import trio

from ._config import DEFAULT_PORT, EngineConfig
from ._config_file import ConfigError, load_config
from ._engine import open_engine
from ._module_ports import ModulePortError

__all__ = ["main"]


#: ``EngineConfig``'s limits, each a ``serve`` flag of the same name (``EngineConfig``
#: checks the values).
_LIMITS = {
    "max_connections": "sockets held at once; one more is answered HTTP 503",
    "handshake_timeout_ms": "time to complete the WebSocket upgrade",
    "first_message_timeout_ms": "time a worker may stay silent after the upgrade",
    "send_buffer_bytes": "bytes that may wait for one worker before it is dropped",
    "write_timeout_ms": "drop a worker that accepts no byte for this long",
}


#: ``serve`` flags that set the ``EngineConfig`` field of the same name, each with
#: its help text. Each may also come from ``--config``; a flag given wins.
_SETTINGS = {
    "host": "interface to listen on",
    "port": "port, 0 for any",
    "namespace_grace_ms": "wait for a worker's namespace",
    "functions_poll_ms": "functions-available check period",
    **_LIMITS,
}


def _default(field: str) -> object:
    # EngineConfig's port default is "no listener", which a server never wants.
    return DEFAULT_PORT if field == "port" else getattr(EngineConfig, field)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="iii-sim", description="A simulated iii engine.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve workers over WebSocket until Ctrl-C")
    serve.add_argument(
        "--config",
        metavar="PATH",
        help="the real engine's config.yaml: modules, worker port (flags given here win)",
    )
    for field, text in _SETTINGS.items():
        # No argparse default: a flag not given must not override --config.
        serve.add_argument(
            "--" + field.replace("_", "-"),
            type=str if field == "host" else int,
            help=f"{text} (default {_default(field)})",
        )
    serve.add_argument(
        "--record",
        action="store_true",
        help="keep each connection's frames in memory (bounded; off by default)",
    )
    serve.add_argument("-v", "--verbose", action="store_true", help="also log every frame")
    chaos = commands.add_parser(
        "chaos",
        help="run seeded chaos scenarios (two iii_trio workers under faults) and check them",
    )
    chaos.add_argument("--seed", type=int, default=0, help="seed (default %(default)s)")
    chaos.add_argument(
        "--schedule",
        help="the fault schedule as JSON (from a failure report); default: drawn from the seed",
    )
    chaos.add_argument(
        "--runs", type=int, default=1, help="run seeds SEED .. SEED+RUNS-1 (default %(default)s)"
    )
    chaos.add_argument("--trace", action="store_true", help="print each run's trace")
    return parser


class _LogFormat(logging.Formatter):
    """``time name: message``; a warning or worse also says its level."""

    _PLAIN = "%(asctime)s.%(msecs)03d %(name)s: %(message)s"
    _LOUD = "%(asctime)s.%(msecs)03d %(levelname)s %(name)s: %(message)s"

    def __init__(self) -> None:
        super().__init__(self._PLAIN, datefmt="%H:%M:%S")
        self._loud = logging.Formatter(self._LOUD, datefmt="%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        if record.levelno >= logging.WARNING:
            return self._loud.format(record)
        return super().format(record)


def configure_logging(verbose: bool) -> None:
    """Readable lines on stderr: time, then what happened."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LogFormat())
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])
    if not verbose:
        logging.getLogger("trio-websocket").setLevel(logging.WARNING)


async def serve(config: EngineConfig) -> None:
    """Serve until SIGINT or SIGTERM, then close every connection (1001) and return."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with open_engine(config) as engine:
            print(f"iii-sim listening on {engine.url} (Ctrl-C stops)", flush=True)
            async for _ in signals:
                break
    logging.getLogger("engine_sim").info("stopped")


def chaos(seed: int, runs: int, schedule_json: str | None, show_trace: bool) -> int:
    """Run and check scenarios; print a report for each failing one. 1 if any failed."""
    from ._chaos import SCHEDULE_TARGETS, WORK, run_scenario
    from ._faults import Step, random_schedule, schedule_from_json
    from ._properties import rare_cases, violations

    given: list[Step] | None = None
    if schedule_json is not None:
        try:
            given = schedule_from_json(schedule_json)
        except ValueError as exc:
            print(f"iii-sim chaos: bad --schedule: {exc}", file=sys.stderr)
            return 2
    failed = 0
    for run_seed in range(seed, seed + runs):
        if given is not None:
            schedule = given
        else:
            schedule = random_schedule(
                random.Random(run_seed), targets=SCHEDULE_TARGETS, function_ids=[WORK]
            )
        result = run_scenario(run_seed, schedule)
        found = violations(result)
        reached = ", ".join(sorted(rare_cases(result))) or "none"
        if show_trace and not found:
            print(result.trace)
        if found:
            failed += 1
            print(result.report(found, limit=None))
        print(
            f"seed {run_seed}: {'FAILED' if found else 'ok'}; {len(schedule)} fault step(s); "
            f"rare cases reached: {reached}",
            flush=True,
        )
    return 1 if failed else 0


def _engine_config(args: argparse.Namespace) -> tuple[EngineConfig, list[str]]:
    """The engine ``serve`` runs: ``--config`` (or the defaults), then the flags given."""
    given: dict[str, Any] = {
        field: getattr(args, field) for field in _SETTINGS if getattr(args, field) is not None
    }
    # A long-running engine has no reader for frame logs: keep none unless asked.
    given["record_frames"] = args.record
    if args.config is None:
        return EngineConfig(**({"port": DEFAULT_PORT} | given)), []
    config, warnings = load_config(args.config)
    return dataclasses.replace(config, **given), warnings


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "chaos":
        logging.basicConfig(level=logging.CRITICAL)
        return chaos(args.seed, args.runs, args.schedule, args.trace)
    try:
        config, warnings = _engine_config(args)
    except ConfigError as exc:
        print(f"iii-sim serve: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        parser.error(f"serve: {exc}")
    configure_logging(args.verbose)
    for warning in warnings:
        logging.getLogger("engine_sim.config").warning("%s", warning)
    try:
        trio.run(serve, config)
    except ModulePortError as exc:
        logging.getLogger("engine_sim").error("iii-sim serve cannot start: %s", exc.strerror)
        return 2
    except OSError as exc:
        # The worker port: trio's message does not say which one.
        logging.getLogger("engine_sim").error(
            "iii-sim serve cannot listen for workers on %s:%s (%s); give another port "
            "with --port N (--port 0 takes any free one) or the iii-worker-manager entry "
            "of the config file",
            config.host,
            config.port,
            exc.strerror or exc,
        )
        return 2
    except Exception as exc:
        # No peer can get here (each connection is guarded); this is a port that
        # cannot be bound or an engine bug, logged whole rather than dumped raw.
        logging.getLogger("engine_sim").critical("iii-sim serve stopped: %s", exc, exc_info=True)
        return 1
    return 0
