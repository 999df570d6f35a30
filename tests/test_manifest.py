"""``iii.worker.yaml``: what ``iii-sim serve --worker`` reads from a worker's manifest.

A manifest is checked whole before anything runs: every problem is reported in one
``ManifestError`` naming the file and each field, and what the engine decides
(its URL, the worker's name) cannot be overridden by the manifest's ``env``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine_sim._manifest import MANIFEST_FILE, ManifestError, load_worker

ROOT = Path(__file__).resolve().parent.parent


def _worker(tmp_path: Path, text: str) -> Path:
    (tmp_path / MANIFEST_FILE).write_text(text)
    return tmp_path


def test_the_shipped_example_is_a_valid_manifest() -> None:
    plan = load_worker(ROOT / "examples" / "math_worker")
    assert plan.name == "math-worker"
    assert plan.start == "python worker.py"
    assert plan.install == 'python -c "import iii_trio"'
    assert plan.directory == ROOT / "examples" / "math_worker"
    assert (plan.warnings, plan.notes) == ([], [])


def test_a_full_manifest_gives_its_scripts_env_and_notes(tmp_path: Path) -> None:
    plan = load_worker(
        _worker(
            tmp_path,
            "name: my-worker\ndescription: does things\nruntime:\n  base_image: oven/bun:1\n"
            "scripts:\n  setup: apt-get update\n  install: npm install\n  start: node a.js\n"
            "env:\n  FOO: bar\n  III_URL: ws://elsewhere\n"
            "dependencies:\n  iii-http: '^0.19'\nresources:\n  cpus: 2\n  memory: 2048\n"
            "iii: v1\ndeploy: image\nmanifest: package.json\ntags: [http]\n",
        )
    )
    assert (plan.name, plan.install, plan.start) == ("my-worker", "npm install", "node a.js")
    assert plan.env == {"FOO": "bar"}
    assert plan.manifest_path == tmp_path / MANIFEST_FILE
    assert plan.warnings == [
        "`scripts.setup` is not run by iii-sim (it provisions the real engine's sandbox); "
        "run it yourself if this machine needs it",
        "`env.III_URL` is ignored: the engine sets it",
    ]
    assert [note.split("`")[1] for note in plan.notes] == [
        "runtime.base_image",
        "resources",
        "dependencies",
    ]


def test_a_directory_path_or_the_manifest_file_itself_may_be_given(tmp_path: Path) -> None:
    _worker(tmp_path, "name: w\nscripts: {install: '', start: run}\n")
    assert load_worker(tmp_path / MANIFEST_FILE).name == "w"
    assert load_worker(str(tmp_path)).install is None  # "" says: nothing to install


def test_an_omitted_install_is_one_warning(tmp_path: Path) -> None:
    plan = load_worker(_worker(tmp_path, "name: w\nscripts:\n  start: run\n"))
    assert plan.install is None
    assert plan.warnings == [
        "`scripts.install` is not given: no dependencies are installed (write "
        '`install: ""` to say none are needed)'
    ]


def test_deprecated_keys_are_read_with_one_warning_and_infer_the_scripts(
    tmp_path: Path,
) -> None:
    plan = load_worker(
        _worker(
            tmp_path,
            "name: legacy\nruntime:\n  kind: python\n  package_manager: pip\n  entry: app\n",
        )
    )
    assert plan.install == "python3 -m venv .venv && .venv/bin/pip install -e ."
    assert plan.start == ".venv/bin/python -m app"
    assert plan.warnings == [
        "deprecated key(s) runtime.entry, runtime.kind, runtime.package_manager: still "
        "read, but define `scripts.install` and `scripts.start` instead (and move `config` "
        "to config.yaml)"
    ]


def test_explicit_scripts_win_over_the_deprecated_inference(tmp_path: Path) -> None:
    plan = load_worker(
        _worker(
            tmp_path,
            "name: w\nruntime: {kind: typescript, package_manager: npm, entry: src/i.ts}\n"
            "scripts: {install: npm ci, start: node dist/i.js}\n",
        )
    )
    assert (plan.install, plan.start) == ("npm ci", "node dist/i.js")
    plan = load_worker(
        _worker(tmp_path, "name: w\nruntime: {kind: typescript, package_manager: npm, entry: x.ts}")
    )
    assert (plan.install, plan.start) == ("npm install", "npx tsx x.ts")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty; at least `name` and `scripts.start` are required"),
        ("- a\n- b\n", "the top level must be a mapping of fields, e.g. `name: my-worker`"),
        ("scripts: {start: run}\n", "`name` is required"),
        ("name: ../up\nscripts: {start: run}\n", "`name` must not start with '.' nor contain '..'"),
        ("name: a b\nscripts: {start: run}\n", "`name` may hold only letters, digits, '-', '_'"),
        ("name: w\n", "no way to start the worker: add `scripts.start`"),
        ("name: w\nscripts: {start: '  '}\n", "no way to start the worker"),
        ("name: w\nscripts: {start: 5}\n", "`scripts.start` must be a string, got the number 5"),
        (
            "name: w\nscripts: {start: [a, b]}\n",
            "`scripts.start` must be a string, got a list (one command string; chain "
            "commands with `&&`)",
        ),
        (
            "name: w\nscripts: {start: run}\nenv: {PORT: 8080}\n",
            '`env.PORT` must be a string, got the number 8080 (quote it: `PORT: "..."`)',
        ),
        (
            "name: w\nscripts: {start: run}\nenv: {ON: true}\n",
            "`env.ON` must be a string, got the boolean true",
        ),
        (
            "name: w\nruntime: node\nscripts: {start: run}\n",
            "`runtime` must be a mapping of `key: value` fields, got a string",
        ),
        (
            "name: w\nscripts: {start: run, stop: x}\n",
            "`scripts.stop` is not a manifest field (the fields are name, description",
        ),
        ("name: w\nscript: {start: run}\n", "`script` is not a manifest field"),
        (
            "name: w\nscripts: {start: run}\nresources: {cpus: -1}\n",
            "`resources.cpus`: Input should be greater than or equal to 0",
        ),
        ("name: w\nscripts: {start: run}\ntags: http\n", "`tags` must be a list, got a string"),
        (
            "name: w\nname: v\nscripts: {start: run}\n",
            "not valid YAML: line 2, column 1: key 'name' is given twice",
        ),
        ("name: w\nruntime: {kind: cobol}\n", "`runtime.kind` 'cobol' is not one of typescript"),
        (
            "name: w\nruntime: {kind: javascript}\n",
            "`runtime.kind: javascript` needs `runtime.package_manager`",
        ),
    ],
)
def test_a_bad_manifest_is_one_error_naming_the_file_and_the_field(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(ManifestError) as raised:
        load_worker(_worker(tmp_path, text))
    assert str(raised.value).startswith(f"{tmp_path / MANIFEST_FILE}: "), raised.value
    assert message in str(raised.value)


def test_every_problem_is_in_the_one_error(tmp_path: Path) -> None:
    with pytest.raises(ManifestError) as raised:
        load_worker(_worker(tmp_path, "name: 7\nscripts: {start: 1}\nextra: x\n"))
    assert str(raised.value) == (
        f"{tmp_path / MANIFEST_FILE}: `name` must be a string, got the number 7; "
        "`scripts.start` must be a string, got the number 1; `extra` is not a manifest field "
        "(the fields are name, description, runtime.base_image, scripts.(setup|install|start), "
        "env, dependencies, resources.(cpus|memory), and the registry's iii, deploy, manifest, "
        "tags)"
    )


def test_a_hostile_key_is_not_echoed_raw(tmp_path: Path) -> None:
    with pytest.raises(ManifestError) as raised:
        load_worker(_worker(tmp_path, 'name: w\nscripts: {start: run}\n"a\\e]2;x\\a\\u202eb": 1\n'))
    assert "`a]2;xb` is not a manifest field" in str(raised.value)


def test_a_path_without_a_manifest_or_no_path_at_all_is_named(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"no iii\.worker\.yaml in that directory"):
        load_worker(tmp_path)
    with pytest.raises(ManifestError, match=f"^{tmp_path / 'nope'}: no such directory$"):
        load_worker(tmp_path / "nope")


def test_a_manifest_over_64_kib_is_refused_unread(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="over 65536 bytes, the manifest's limit"):
        load_worker(_worker(tmp_path, "name: w\n#" + "x" * 70_000 + "\n"))


def test_a_manifest_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    (tmp_path / MANIFEST_FILE).write_bytes(b"name: \xff\n")
    with pytest.raises(ManifestError, match="not UTF-8 text"):
        load_worker(tmp_path)
