"""The official Python SDK's own integration tests against ``iii-sim serve``, run by hand or CI.

    .venv/bin/python benchmarks/official_suite.py                 # issue 12's five files
    .venv/bin/python benchmarks/official_suite.py --issue14       # issue 14's seven files
    .venv/bin/python benchmarks/official_suite.py --issue16       # issue 16's observe files
    .venv/bin/python benchmarks/official_suite.py --all           # every file of the suite
    .venv/bin/python benchmarks/official_suite.py --files test_state.py test_pubsub.py
    .venv/bin/python benchmarks/official_suite.py --write         # also results/official_suite.md
    .venv/bin/python benchmarks/official_suite.py --issue14 --sdist iii_sdk-0.25.0.tar.gz --keep

The tests are not ours and are never kept in this repository: at run time the script
downloads the ``iii-sdk==0.25.0`` sdist from PyPI (``pip download --no-binary :all:``;
``--sdist`` names a local copy instead), extracts its ``tests/`` folder into a temporary
directory (at ``sdk/packages/python/iii/tests``, as in upstream's repository, next to a
seeded stand-in for ``sdk/test-assets/handbook.pdf``, which the sdist lacks and three
HTTP tests stream), installs ``pytest-asyncio`` (the suite's test runner plugin) and,
when a chosen file imports it, ``aiohttp`` into that directory too, starts ``iii-sim
serve`` as a subprocess and runs pytest on each chosen file, one file at a time, with
the official SDK installed in this environment as the client.

The engine's config mirrors upstream's ``sdk/fixtures/config-test.yaml``: two
``iii-worker-manager`` entries (the main port, and the RBAC port with its auth,
middleware and registration hook functions and ``expose_functions``), ``iii-stream``,
``iii-state`` (file-based stores under the temporary directory, the engine's working
directory), ``iii-http`` (``default_timeout: 30000``), ``iii-pubsub``,
``iii-observability``, ``iii-http-functions`` (allow-list ``localhost``/``127.0.0.1``,
private IPs and plain HTTP allowed) and ``iii-cron``. Every port is a free one instead
of upstream's fixed 49199 / 49135 / 3199 / 3112, and every host is 127.0.0.1 instead
of 0.0.0.0; the tests find them in the environment variables they read: ``III_URL``
(main worker port), ``III_RBAC_WORKER_URL`` (RBAC port), ``III_HTTP_URL`` (the HTTP
module) and ``STREAMS_PORT`` (upstream's ``${STREAMS_PORT:3112}`` substitution); an
engine that exits while starting (a port taken meanwhile) is started again on other
free ports, up to three times. An ``iii-sim`` without ``--config`` is run with
``--port`` only. ``--keep`` keeps the directory: ``config.yaml``, ``engine.log`` and
each file's ``pytest-<file>.log``.

Ctrl-C or SIGTERM stops the file's pytest and the engine and removes the temporary
directory (unless ``--keep``) before the script exits.

Prints passed / failed / error / skipped counts per file, a total, and which of the
configured ports accepted a connection. Exit code 0 when every collected test passed,
1 when some did not, 3 when the setup failed (PyPI unreachable, the engine did not
start), 2 for bad arguments. ``--json FILE`` writes the counts and the ids of the tests
that did not pass, for ``tests/test_official_suite.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.metadata
import json
import os
import platform
import queue
import random
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

SDK_VERSION = "0.25.0"
SDK_REQUIREMENT = f"iii-sdk=={SDK_VERSION}"
#: The suite's pytest plugin, pinned to the version upstream's uv.lock has for 0.25.0.
PYTEST_ASYNCIO = "pytest-asyncio==1.3.0"
#: Installed too when a chosen file imports it (the HTTP tests' client).
EXTRAS = ("aiohttp",)
#: The files issue 12 asks to pass in full.
TARGET_FILES = (
    "test_bridge.py",
    "test_trigger_type_lifecycle.py",
    "test_state.py",
    "test_streams.py",
    "test_pubsub.py",
)
#: The files issue 14 names (HTTP, HTTP-invoked functions, channels, RBAC port).
ISSUE14_FILES = (
    "test_api_triggers.py",
    "test_healthcheck.py",
    "test_data_channels.py",
    "test_http_external_functions_integration.py",
    "test_middleware.py",
    "test_rbac_workers.py",
    "test_handshake_token.py",
)
#: The files issue 16 names: observe against a real engine (routed, then local dispatch,
#: reports and owner delivery).
ISSUE16_FILES = (
    "test_observe_e2e_routed.py",
    "test_observe_e2e_local.py",
)
OUTCOMES = ("passed", "failed", "error", "skipped")
#: Where the tests live in upstream's repository (their paths to assets are relative).
TESTS_IN_MONOREPO = Path("sdk/packages/python/iii/tests")
#: The size of the stand-in ``handbook.pdf`` (``write_test_assets``).
STAND_IN_PDF_BYTES = 9 * 1024 * 1024

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results" / "official_suite.md"
III_SIM = Path(sys.executable).parent / "iii-sim"


class SetupError(Exception):
    """Something the run needs is missing (PyPI, the engine): nothing was measured."""


class EngineExited(SetupError):
    """The engine ended while starting (a port it was given was taken, a bad config)."""


@dataclass
class FileResult:
    """One test file's counts, and the ids of its tests that did not pass."""

    name: str
    passed: int = 0
    failed: int = 0
    error: int = 0
    skipped: int = 0
    seconds: float = 0.0
    #: Why the file has no counts of its own (pytest timed out, could not collect...).
    problem: str | None = None
    not_passed: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.passed + self.failed + self.error + self.skipped


@dataclass
class SuiteRun:
    """The whole run: how the engine was started and each file's result."""

    mode: str
    engine_command: list[str]
    files: list[FileResult]
    #: Each configured port and whether it accepted a connection once the engine was up.
    ports: dict[str, bool] = field(default_factory=dict)

    def totals(self) -> dict[str, int]:
        return {o: sum(getattr(f, o) for f in self.files) for o in OUTCOMES}

    @property
    def all_passed(self) -> bool:
        return all(
            f.problem is None and f.failed == f.error == 0 and f.passed > 0 for f in self.files
        )


def _run(command: Sequence[str], timeout: float, what: str) -> subprocess.CompletedProcess[str]:
    """Run a setup command; a failure or a timeout becomes a ``SetupError`` naming ``what``."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise SetupError(f"{what}: no answer within {timeout:.0f} s") from exc
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-6:])
        raise SetupError(f"{what} failed (exit {done.returncode}):\n{tail}")
    return done


def download_tests(workdir: Path, sdist: Path | None, timeout: float) -> Path:
    """The sdist's ``tests/`` folder, extracted under ``workdir``; downloads the sdist
    from PyPI unless ``sdist`` names a local copy."""
    if sdist is None:
        dest = workdir / "sdist"
        _run(
            [
                sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps",
                "--disable-pip-version-check", "--timeout", "30", "-d", str(dest),
                SDK_REQUIREMENT,
            ],
            timeout,
            f"downloading the {SDK_REQUIREMENT} sdist from PyPI (is PyPI reachable?)",
        )  # fmt: skip
        found = sorted(dest.glob("*.tar.gz"))
        if not found:
            raise SetupError(f"pip download left no .tar.gz for {SDK_REQUIREMENT} in {dest}")
        sdist = found[0]
    # Where upstream's monorepo keeps them, so the paths the tests build from their own
    # location (sdk/test-assets, sdk/fixtures) stay inside the run's directory.
    tests = workdir / TESTS_IN_MONOREPO
    tests.mkdir(parents=True)
    with tarfile.open(sdist) as archive:
        for member in archive.getmembers():
            parts = Path(member.name).parts
            # <project>-<version>/tests/<path>: only regular files, no links, no "..".
            if len(parts) < 3 or parts[1] != "tests" or not member.isfile() or ".." in parts:
                continue
            source = archive.extractfile(member)
            assert source is not None  # a regular file always has content
            target = tests.joinpath(*parts[2:])
            target.parent.mkdir(parents=True, exist_ok=True)
            with source, target.open("wb") as out:
                shutil.copyfileobj(source, out)
    if not (tests / "conftest.py").is_file():
        raise SetupError(f"{sdist.name} has no tests/conftest.py")
    # The suite's own pytest settings (coverage addopts) stay out; these are what it needs.
    (tests / "pytest.ini").write_text(
        "[pytest]\nasyncio_mode = strict\nasyncio_default_fixture_loop_scope = function\n"
    )
    return tests


def needs_extras(tests: Path, files: Sequence[str]) -> bool:
    """Whether a chosen file imports one of ``EXTRAS``."""
    return any(
        f"import {extra}" in (tests / name).read_text(errors="replace")
        for name in files
        for extra in EXTRAS
    )


def install_runner_deps(workdir: Path, extras: bool, timeout: float) -> Path:
    """``pytest-asyncio`` (and with ``extras``, aiohttp) in a folder of its own, put on
    PYTHONPATH for the pytest runs only: this environment is left as it is."""
    target = workdir / "deps"
    # --no-deps: its dependency is pytest, which must stay this environment's own.
    _run(
        [
            sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
            "--no-deps", "--target", str(target), PYTEST_ASYNCIO,
        ],
        timeout,
        f"installing {PYTEST_ASYNCIO} from PyPI (is PyPI reachable?)",
    )  # fmt: skip
    if extras:
        _run(
            [
                sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                "--target", str(target), *EXTRAS,
            ],
            timeout,
            f"installing {', '.join(EXTRAS)} from PyPI",
        )  # fmt: skip
    return target


def free_port() -> int:
    """A port nothing listens on right now (the engine binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def has_config_flag() -> bool:
    """Whether this ``iii-sim serve`` reads a config.yaml (``--config``)."""
    done = _run([str(III_SIM), "serve", "--help"], 60, "iii-sim serve --help")
    return "--config" in done.stdout


@dataclass(frozen=True)
class Ports:
    """The free ports the run uses in place of upstream's fixed ones."""

    worker: int
    rbac: int
    http: int
    stream: int

    @classmethod
    def free(cls) -> Ports:
        """Four distinct ports nothing listens on right now."""
        chosen: list[int] = []
        while len(chosen) < 4:
            port = free_port()
            if port not in chosen:
                chosen.append(port)
        return cls(*chosen)

    def env(self) -> dict[str, str]:
        """The environment variables the official tests read for each address."""
        return {
            "III_URL": f"ws://127.0.0.1:{self.worker}",
            "III_RBAC_WORKER_URL": f"ws://127.0.0.1:{self.rbac}",
            "III_HTTP_URL": f"http://127.0.0.1:{self.http}",
            "STREAMS_PORT": str(self.stream),
        }

    def by_name(self) -> dict[str, int]:
        return {"worker": self.worker, "rbac": self.rbac, "http": self.http, "stream": self.stream}


#: upstream's sdk/fixtures/config-test.yaml with the ports as placeholders and hosts on
#: loopback. ``${NAME:default}`` is upstream's own substitution syntax, kept as it is.
CONFIG_TEMPLATE = """\
workers:
  - name: iii-worker-manager
    config:
      host: 127.0.0.1
      port: {worker}

  - name: iii-worker-manager
    config:
      host: 127.0.0.1
      port: {rbac}
      middleware_function_id: test::rbac-worker::middleware
      rbac:
        auth_function_id: test::rbac-worker::auth
        on_function_registration_function_id: test::rbac-worker::on-function-reg
        on_trigger_registration_function_id: test::rbac-worker::on-trigger-reg
        on_trigger_type_registration_function_id: test::rbac-worker::on-trigger-type-reg
        expose_functions:
          - match("test::ew::public::*")
          - match("engine::functions::list")
          - metadata:
              ew_public: true

  - name: iii-stream
    config:
      port: ${{STREAMS_PORT:{stream}}}
      host: 127.0.0.1
      adapter:
        name: kv
        config:
          store_method: file_based
          file_path: ./data/stream_store

  - name: iii-state
    config:
      adapter:
        name: kv
        config:
          store_method: file_based
          file_path: ./data/state_store.db

  - name: iii-http
    config:
      host: 127.0.0.1
      port: {http}
      default_timeout: 30000

  - name: iii-pubsub
    config:
      adapter:
        name: local

  - name: iii-observability
    config:
      enabled: ${{OTEL_ENABLED:true}}
      service_name: ${{OTEL_SERVICE_NAME:iii-test}}
      service_version: ${{SERVICE_VERSION:0.2.0}}
      exporter: ${{OTEL_EXPORTER_TYPE:memory}}
      endpoint: ${{OTEL_EXPORTER_OTLP_ENDPOINT:http://localhost:4317}}
      sampling_ratio: 1.0
      memory_max_spans: ${{OTEL_MEMORY_MAX_SPANS:10000}}
      metrics_enabled: true
      metrics_exporter: ${{OTEL_METRICS_EXPORTER:memory}}
      metrics_retention_seconds: 3600
      metrics_max_count: 10000
      logs_enabled: ${{OTEL_LOGS_ENABLED:true}}
      logs_exporter: ${{OTEL_LOGS_EXPORTER:memory}}
      logs_max_count: ${{OTEL_LOGS_MAX_COUNT:1000}}
      logs_retention_seconds: ${{OTEL_LOGS_RETENTION_SECONDS:3600}}
      logs_sampling_ratio: ${{OTEL_LOGS_SAMPLING_RATIO:1.0}}
      logs_console_output: ${{OTEL_LOGS_CONSOLE_OUTPUT:false}}

  - name: iii-http-functions
    config:
      security:
        url_allowlist:
          - localhost
          - 127.0.0.1
        block_private_ips: false
        require_https: false

  - name: iii-cron
    config:
      adapter:
        name: kv
"""


def write_config(path: Path, ports: Ports) -> None:
    """Upstream's test config (``CONFIG_TEMPLATE``) with this run's ports."""
    path.write_text(CONFIG_TEMPLATE.format(**ports.by_name()))


class Engine:
    """``iii-sim serve`` as a subprocess: started, waited for, always stopped."""

    def __init__(self, command: list[str], log_path: Path) -> None:
        self.command = command
        self.log_path = log_path
        self._log = log_path.open("w")
        # The config's file-based stores (./data/...) land in the run's directory.
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=self._log, text=True,
            start_new_session=True, cwd=log_path.parent,
        )  # fmt: skip
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def wait_ready(self, port: int, timeout: float) -> str:
        """The engine's URL once its banner is out and its port accepts a connection."""
        deadline = time.monotonic() + timeout
        url = None
        while url is None:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise SetupError(f"iii-sim printed no banner within {timeout:.0f} s") from None
            if line is None:
                raise EngineExited(f"iii-sim exited ({self.process.wait()}):\n{self.log_tail()}")
            if "listening on ws://" in line:
                url = line.split("listening on ", 1)[1].split()[0]
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                return url
            if time.monotonic() > deadline:
                raise SetupError(f"{url} accepted no connection within {timeout:.0f} s")
            time.sleep(0.05)

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """Ctrl-C, then kill if it has not stopped within 10 s."""
        try:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGINT)
                try:
                    self.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(timeout=10)
        finally:
            self._log.close()
            # The reader sees the end of the pipe once the engine is gone.
            self._reader.join(timeout=5)
            if self.process.stdout is not None and not self._reader.is_alive():
                self.process.stdout.close()


def listening(port: int, timeout: float) -> bool:
    """Whether something accepts a connection on ``port`` within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


#: Engine starts tried, each on fresh ports: a port found free can be taken by someone
#: else before the engine binds it.
START_ATTEMPTS = 3


@contextlib.contextmanager
def running_engine(workdir: Path, timeout: float) -> Iterator[tuple[Engine, str, Ports]]:
    """Start ``iii-sim serve`` (``--config`` when it has it) on free ports, again on
    other ports if it exits while starting (a port taken meanwhile), and stop it on
    the way out."""
    with_config = has_config_flag()
    for attempt in range(1, START_ATTEMPTS + 1):
        ports = Ports.free()
        if with_config:
            config = workdir / "config.yaml"
            write_config(config, ports)
            command = [str(III_SIM), "serve", "--config", str(config)]
            mode = "--config"
        else:
            command = [str(III_SIM), "serve", "--port", str(ports.worker)]
            mode = "--port (no --config in this iii-sim)"
        engine = Engine(command, workdir / "engine.log")
        try:
            engine.wait_ready(ports.worker, timeout)
        except EngineExited as exc:
            engine.stop()
            if attempt == START_ATTEMPTS:
                raise
            print(f"{exc}\n(again on other ports)", file=sys.stderr)
            continue
        except BaseException:
            engine.stop()
            raise
        break
    try:
        yield engine, mode, ports
    finally:
        engine.stop()


def parse_junit(path: Path, result: FileResult) -> None:
    """Count each test case's outcome from pytest's JUnit XML report."""
    root = ET.parse(path).getroot()
    for case in root.iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        if case.find("skipped") is not None:
            result.skipped += 1
        elif case.find("error") is not None:
            result.error += 1
            result.not_passed.append(f"{name} (error)")
        elif case.find("failure") is not None:
            result.failed += 1
            result.not_passed.append(name)
        else:
            result.passed += 1


def write_test_assets(workdir: Path) -> None:
    """A stand-in for ``sdk/test-assets/handbook.pdf``, which the sdist lacks: the HTTP
    tests only stream its bytes (the first 8 MiB for uploads, all of it for the
    download) and compare them, so any file over 8 MiB does; this one is 9 MiB of
    seeded random bytes behind a PDF header, the same on every run."""
    assets = workdir / "sdk" / "test-assets"
    assets.mkdir(parents=True, exist_ok=True)
    body = random.Random(14).randbytes(STAND_IN_PDF_BYTES - 16)
    (assets / "handbook.pdf").write_bytes(b"%PDF-1.4\n" + body + b"\n%%EOF\n")


def run_file(tests: Path, deps: Path, name: str, env: dict[str, str], timeout: float) -> FileResult:
    """pytest on one file, in its own process group, killed after ``timeout`` seconds."""
    result = FileResult(name)
    logs = tests.parents[len(TESTS_IN_MONOREPO.parts) - 1]
    report = logs / f"junit-{name}.xml"
    output = logs / f"pytest-{name}.log"
    command = [
        sys.executable, "-m", "pytest", name, "-q", "-p", "no:cacheprovider",
        # Our own plugins stay out of the way: this is upstream's suite as upstream runs it.
        "-p", "no:trio", "-p", "no:engine_sim", f"--junitxml={report}",
    ]  # fmt: skip
    run_env = {**env, "PYTHONPATH": os.pathsep.join([str(deps), env.get("PYTHONPATH", "")])}
    started = time.monotonic()
    with output.open("w") as log:
        process = subprocess.Popen(
            command, cwd=tests, env=run_env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            result.problem = f"pytest did not finish within {timeout:.0f} s"
        finally:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
    result.seconds = time.monotonic() - started
    if report.is_file():
        parse_junit(report, result)
    if result.problem is None and result.total == 0:
        tail = "\n".join(output.read_text(errors="replace").splitlines()[-8:])
        result.problem = f"pytest exit {process.returncode}, no test reported:\n{tail}"
    return result


def run_suite(args: argparse.Namespace, workdir: Path) -> SuiteRun:
    """Download, set up, serve and run; raises ``SetupError`` if nothing could be measured."""
    tests = download_tests(workdir, args.sdist, args.setup_timeout)
    if args.all:
        files = sorted(p.name for p in tests.glob("test_*.py"))
    elif args.issue14:
        files = list(ISSUE14_FILES)
    elif args.issue16:
        files = list(ISSUE16_FILES)
    else:
        files = list(args.files or TARGET_FILES)
    missing = [f for f in files if not (tests / f).is_file()]
    if missing:
        raise SetupError(f"not in the sdist's tests/: {', '.join(missing)}")
    deps = install_runner_deps(workdir, needs_extras(tests, files), args.setup_timeout)
    write_test_assets(workdir)
    results = []
    with running_engine(workdir, args.engine_timeout) as (engine, mode, ports):
        env = {**os.environ, **ports.env()}
        # The main port is up; the others may take a moment more, or not be served.
        listens = {name: listening(port, 2.0) for name, port in ports.by_name().items()}
        print(
            "ports: " + ", ".join(
                f"{name} {port} {'listening' if listens[name] else 'NOT listening'}"
                for name, port in ports.by_name().items()
            ),
            flush=True,
        )  # fmt: skip
        for name in files:
            if not engine.alive():
                results.append(FileResult(name, problem="iii-sim had exited"))
                continue
            result = run_file(tests, deps, name, env, args.file_timeout)
            results.append(result)
            print(_row(result), flush=True)
        if not engine.alive():
            print(f"iii-sim exited during the run:\n{engine.log_tail()}", file=sys.stderr)
        command = [Path(engine.command[0]).name, *engine.command[1:]]
        return SuiteRun(mode, command, results, listens)


def _row(f: FileResult) -> str:
    counts = " ".join(f"{getattr(f, o):>7}" for o in OUTCOMES)
    note = f"  ({f.problem.splitlines()[0]})" if f.problem else ""
    return f"{f.name:<48} {counts} {f.seconds:>7.1f}{note}"


def report_text(run: SuiteRun) -> str:
    """The per-file table and the total, as printed."""
    header = f"{'file':<48} " + " ".join(f"{o:>7}" for o in OUTCOMES) + f" {'seconds':>7}"
    totals = run.totals()
    total = " ".join(f"{totals[o]:>7}" for o in OUTCOMES)
    seconds = sum(f.seconds for f in run.files)
    lines = [header, *(_row(f) for f in run.files), f"{'total':<48} {total} {seconds:>7.1f}"]
    return "\n".join(lines)


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _commit() -> str:
    """HEAD's short hash, with ``+changes`` when engine_sim or iii_trio differ from it."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=30, check=False
        )
        return done.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + ("+changes" if git("status", "--porcelain", "engine_sim", "iii_trio") else "")


RESULTS_TITLE = "# The official Python SDK's own tests against iii-sim serve"
RESULTS_INTRO = """\
`benchmarks/official_suite.py` downloads the `iii-sdk==0.25.0` sdist from PyPI, runs the
integration files of its `tests/` folder (not kept in this repository) against
`iii-sim serve`, and counts each file's outcomes. Newest run first; each `--write` adds one."""


def markdown(run: SuiteRun, command: str) -> str:
    """One run's section of ``results/official_suite.md``: date, command, versions, the
    table, what did not pass."""
    totals = run.totals()
    now = datetime.datetime.now(datetime.UTC)
    lines = [
        f"## {now:%Y-%m-%d %H:%M} UTC: {totals['passed']} passed of "
        f"{sum(totals.values())} in {len(run.files)} file(s)",
        "",
        f"`{command}` on {platform.node()} (CPython {platform.python_version()}, "
        f"{platform.machine()}); iii-trio {_commit()}, {SDK_REQUIREMENT}, "
        f"pytest {_version('pytest')}, {PYTEST_ASYNCIO}. The engine ran as "
        f"`{' '.join(run.engine_command[:3])} ...` ({run.mode}); the tests ran from "
        "`sdk/packages/python/iii/tests` beside a seeded stand-in for "
        "`sdk/test-assets/handbook.pdf`, which the sdist lacks.",
        *(
            [
                "Ports listening once the engine was up: "
                + ", ".join(f"{n} {'yes' if up else 'no'}" for n, up in run.ports.items())
                + "."
            ]
            if run.ports
            else []
        ),
        "",
        "| file | passed | failed | error | skipped | seconds |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for f in run.files:
        note = f" ({f.problem.splitlines()[0]})" if f.problem else ""
        lines.append(
            f"| {f.name}{note} | {f.passed} | {f.failed} | {f.error} | {f.skipped} "
            f"| {f.seconds:.1f} |"
        )
    lines.append(
        f"| **total** | {totals['passed']} | {totals['failed']} | {totals['error']} "
        f"| {totals['skipped']} | {sum(f.seconds for f in run.files):.1f} |"
    )
    failing = [t for f in run.files for t in f.not_passed]
    if failing:
        lines += ["", "Not passing:", "", *(f"- `{t}`" for t in failing)]
    return "\n".join(lines) + "\n"


def write_results(section: str) -> None:
    """Put ``section`` first in ``results/official_suite.md``, keeping the earlier runs."""
    earlier = ""
    if RESULTS.is_file():
        text = RESULTS.read_text()
        start = text.find("\n## ")
        earlier = text[start + 1 :] if start >= 0 else ""
    parts = [RESULTS_TITLE, RESULTS_INTRO, section.rstrip("\n")]
    if earlier:
        parts.append(earlier.rstrip("\n"))
    RESULTS.write_text("\n\n".join(parts) + "\n")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n", 1)[0].replace("``", "")
        + " With no choice of files it runs issue 12's: "
        + ", ".join(TARGET_FILES)
        + ".",
        epilog=(
            "Ports: free ones, passed to the tests as III_URL (main worker port), "
            "III_RBAC_WORKER_URL (RBAC port), III_HTTP_URL (iii-http) and STREAMS_PORT. "
            "The engine runs upstream's sdk/fixtures/config-test.yaml with those ports "
            "(--keep shows it). Exit: 0 all passed, 1 some did not, 2 bad arguments, "
            "3 setup failed."
        ),
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--all", action="store_true", help="run every test_*.py of the suite")
    which.add_argument(
        "--issue14", action="store_true", help=f"run issue 14's files: {', '.join(ISSUE14_FILES)}"
    )
    which.add_argument(
        "--issue16", action="store_true", help=f"run issue 16's files: {', '.join(ISSUE16_FILES)}"
    )
    which.add_argument("--files", nargs="+", metavar="FILE", help="run these files of the suite")
    parser.add_argument("--write", action="store_true", help=f"write {RESULTS.relative_to(REPO)}")
    parser.add_argument("--json", type=Path, help="also write the results as JSON to this file")
    parser.add_argument("--sdist", type=Path, help="a local iii_sdk-0.25.0.tar.gz (no download)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument(
        "--file-timeout", type=float, default=300, help="seconds per file (default %(default)s)"
    )
    parser.add_argument(
        "--setup-timeout",
        type=float,
        default=300,
        help="seconds per download or install (default %(default)s)",
    )
    parser.add_argument(
        "--engine-timeout",
        type=float,
        default=30,
        help="seconds for iii-sim to start listening (default %(default)s)",
    )
    return parser


def _stop_on_sigterm(signum: int, frame: object) -> None:
    # SIGTERM (a CI job's timeout, ``kill``) unwinds like Ctrl-C: the ``finally``
    # blocks stop pytest and the engine (each in a session of its own, so a signal to
    # this process alone never reaches them) and remove the temporary directory.
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="iii-official-suite-"))
    previous = signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        try:
            run = run_suite(args, workdir)
        except SetupError as exc:
            print(f"official_suite: {exc}", file=sys.stderr)
            return 3
        print(report_text(run))
        verdict = "every test passed" if run.all_passed else "NOT every test passed"
        print(f"{verdict}; engine: {run.mode}")
        if args.json is not None:
            args.json.write_text(
                json.dumps({"mode": run.mode, "files": [asdict(f) for f in run.files]}, indent=2)
            )
        if args.write:
            # Local paths (--sdist, --json) are shown by their file name only.
            shown = " ".join(
                ["benchmarks/official_suite.py"]
                + [Path(a).name if os.sep in a else a for a in (argv or sys.argv[1:])]
            )
            write_results(markdown(run, shown))
        return 0 if run.all_passed else 1
    finally:
        signal.signal(signal.SIGTERM, previous)
        if args.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
