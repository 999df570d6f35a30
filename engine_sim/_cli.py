"""``iii-sim``: run the simulated engine from a shell."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import random
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from typing import Any, get_args

import trio

from iii_trio import __version__

from ._config import DEFAULT_PORT, ENGINE_VERSION, EngineConfig, WebSocketStack
from ._config_file import ConfigError, load_config
from ._engine import open_engine
from ._manifest import ManifestError, WorkerPlan, load_worker
from ._module_ports import ModulePortError
from ._supervisor import WorkerSupervisor
from ._supervisor_output import LogWriter, WorkerConsole
from ._supervisor_policy import RESTART_MODES, RestartMode, RestartPolicy

__all__ = ["main"]

#: At stop, how long the workers' last lines may take to reach the terminal.
_OUTPUT_DRAIN_SECONDS = 1.0


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
    "seed": "seed for worker ids, tokens and invocation ids, repeatable run after run "
    "(predictable: never on an engine untrusted peers reach)",
    "max_message_bytes": "largest message a worker may send; bigger ones close it (1009)",
    "namespace_grace_ms": "wait for a worker's namespace",
    "functions_poll_ms": "functions-available check period",
    "trigger_ack_timeout_ms": "wait for a worker's verdict on a trigger of its type",
    "close_timeout_ms": "time a closing handshake may take",
    "rbac_call_timeout_ms": "with --config's rbac rules: time an auth function or "
    "registration hook may take",
    **_LIMITS,
    "frame_log_link_bytes": "with --record: bytes of frames kept per connection",
    "frame_log_bytes": "with --record: bytes of frames kept in all",
    "frame_log_closed_links": "with --record: closed connections whose frames are kept",
}
#: ``serve`` flags that pick one of a few values of the ``EngineConfig`` field of the
#: same name: the values, and the help text.
_CHOICES: dict[str, tuple[tuple[str, ...], str]] = {
    "websocket": (get_args(WebSocketStack), "the engine's WebSocket stack"),
}
#: ``EngineConfig`` fields with no flag of their own: ``record_frames`` is
#: ``--record``, ``features`` is ``--features`` (a list); the modules, the further
#: worker ports and their RBAC rules, and the observers' bounds (structured settings)
#: come from ``--config`` or their defaults.
_NOT_FLAGS = frozenset(
    (
        "record_frames",
        "features",
        "modules",
        "middleware_function_id",
        "rbac",
        "worker_ports",
        "observe",
    )
)


def _metavar(field: str) -> str:
    if field in ("host", "port"):
        return field.upper()
    return {"ms": "MS", "bytes": "BYTES"}.get(field.rsplit("_", 1)[-1], "N")


def _default(field: str) -> object:
    # EngineConfig's port default is "no listener", which a server never wants.
    if field == "port":
        return DEFAULT_PORT
    value = getattr(EngineConfig, field)
    return "none: unpredictable" if value is None else value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="iii-sim", description="A simulated iii engine.")
    parser.add_argument(
        "--version",
        action="version",
        version=f"iii-sim (iii-trio) {__version__}; simulates the iii engine, reported as "
        f"{ENGINE_VERSION}",
    )
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
            metavar=_metavar(field),
            help=f"{text} (default {_default(field)})",
        )
    for field, (choices, text) in _CHOICES.items():
        serve.add_argument(
            "--" + field.replace("_", "-"),
            choices=choices,
            help=f"{text} (default {_default(field)})",
        )
    serve.add_argument(
        "--features",
        metavar="LIST",
        help="the iii 0.25 features announced to workers, comma-separated; '' announces "
        "none, the pre-0.25 handshake (default "
        f"{','.join(EngineConfig().features)})",
    )
    serve.add_argument(
        "--record",
        action="store_true",
        help="keep each connection's frames in memory (bounded; off by default)",
    )
    serve.add_argument("-v", "--verbose", action="store_true", help="also log every frame")
    workers = serve.add_argument_group("workers started from their iii.worker.yaml")
    workers.add_argument(
        "--worker",
        metavar="PATH",
        action="append",
        default=[],
        help="a worker's directory holding iii.worker.yaml: run its scripts.install once, "
        "then its scripts.start with III_URL set to this engine (repeatable)",
    )
    workers.add_argument(
        "--no-install", action="store_true", help="do not run the workers' scripts.install"
    )
    workers.add_argument(
        "--restart",
        choices=RESTART_MODES,
        default="on-failure",
        help="start a worker again, with backoff, when it exits non-zero (default %(default)s)",
    )
    workers.add_argument(
        "--stop-grace-ms",
        type=int,
        metavar="MS",
        default=5000,
        help="at Ctrl-C, time a worker has after SIGTERM before SIGKILL (default %(default)s)",
    )
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
    """Readable lines on stderr: time, then what happened (written off the engine's
    loop, so a stderr nobody reads cannot stop it)."""
    handler = LogWriter(sys.stderr.fileno())
    handler.setFormatter(_LogFormat())
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])
    if not verbose:
        logging.getLogger("trio-websocket").setLevel(logging.WARNING)


@dataclasses.dataclass(frozen=True)
class WorkerOptions:
    """How ``serve`` runs the ``--worker`` manifests: install or not, restart policy,
    stop grace."""

    install: bool = True
    restart: RestartMode = "on-failure"
    stop_grace_ms: int = 5000


async def _hurry_on_signal(
    signals: AsyncIterator[int], running: Sequence[WorkerSupervisor]
) -> None:
    """A second Ctrl-C while the workers stop kills them at once."""
    async for _ in signals:
        logging.getLogger("engine_sim.workers").warning(
            "second signal: killing the workers still stopping"
        )
        for supervisor in running:
            supervisor.hurry()
        return


async def serve(
    config: EngineConfig,
    workers: Sequence[WorkerPlan] = (),
    options: WorkerOptions = WorkerOptions(),
) -> None:
    """Serve until SIGINT, SIGTERM or SIGHUP, then stop the ``workers`` started from their
    manifests (SIGTERM, then SIGKILL after the grace) and close every connection
    (1001), and return."""
    # SIGHUP too: the workers' own process groups do not get a closed terminal's
    # hangup, so an engine that died of it would leave them running, orphaned.
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async with open_engine(config) as engine, trio.open_nursery() as outer:
            assert engine.url is not None  # serve always listens
            print(f"iii-sim listening on {engine.url} (Ctrl-C stops)", flush=True)
            for port in config.worker_ports:
                # After the banner, which scripts read as the first line.
                rbac = " (rbac)" if port.rbac is not None else ""
                print(
                    f"iii-sim worker port {port.name} listening on "
                    f"{engine.worker_url(port.name)}{rbac}",
                    flush=True,
                )
            console = WorkerConsole([plan.name for plan in workers])
            outer.start_soon(console.run, name="worker output")
            running = [
                WorkerSupervisor(
                    plan,
                    url=engine.url,
                    emit=console.emit,
                    policy=RestartPolicy(options.restart),
                    install=options.install,
                    stop_grace=options.stop_grace_ms / 1000,
                )
                for plan in workers
            ]
            # The workers stop before the engine does, so they leave it cleanly.
            async with trio.open_nursery() as supervisors:
                for supervisor in running:
                    supervisors.start_soon(supervisor.run, name=f"worker {supervisor.plan.name}")
                async for _ in signals:
                    break
                supervisors.cancel_scope.cancel()
                if running:
                    outer.start_soon(_hurry_on_signal, signals, running)
            with trio.move_on_after(_OUTPUT_DRAIN_SECONDS):
                await console.close()
            outer.cancel_scope.cancel()
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
        field: getattr(args, field)
        for field in [*_SETTINGS, *_CHOICES]
        if getattr(args, field) is not None
    }
    if args.features is not None:
        given["features"] = tuple(name.strip() for name in args.features.split(",") if name.strip())
    # A long-running engine has no reader for frame logs: keep none unless asked.
    given["record_frames"] = args.record
    if args.config is None:
        return EngineConfig(**({"port": DEFAULT_PORT} | given)), []
    config, warnings = load_config(args.config)
    return dataclasses.replace(config, **given), warnings


def _worker_plans(paths: Sequence[str]) -> list[WorkerPlan]:
    """Each ``--worker``'s manifest; ``ManifestError`` for the first bad one."""
    plans: list[WorkerPlan] = []
    for path in paths:
        plan = load_worker(path)
        for other in plans:
            if other.name == plan.name:
                raise ManifestError(
                    f"{plan.manifest_path}: `name` {plan.name!r} is also the name in "
                    f"{other.manifest_path}; each worker needs its own"
                )
        plans.append(plan)
    return plans


def main(argv: Sequence[str] | None = None) -> int:
    """``iii-sim``'s entry point: the exit code (2 for input it cannot use)."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "chaos":
        logging.basicConfig(level=logging.CRITICAL)
        return chaos(args.seed, args.runs, args.schedule, args.trace)
    if args.stop_grace_ms < 0:
        parser.error("serve: --stop-grace-ms must not be negative")
    try:
        config, warnings = _engine_config(args)
        plans = _worker_plans(args.worker)
    except (ConfigError, ManifestError) as exc:
        print(f"iii-sim serve: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        parser.error(f"serve: {exc}")
    configure_logging(args.verbose)
    for warning in warnings:
        logging.getLogger("engine_sim.config").warning("%s", warning)
    for plan in plans:
        for warning in plan.warnings:
            logging.getLogger("engine_sim.workers").warning("%s: %s", plan.manifest_path, warning)
        for note in plan.notes:
            logging.getLogger("engine_sim.workers").info("%s: %s", plan.manifest_path, note)
    options = WorkerOptions(not args.no_install, args.restart, args.stop_grace_ms)
    try:
        trio.run(serve, config, plans, options)
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
