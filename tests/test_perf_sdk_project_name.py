"""The announced ``project_name`` is parsed once per version of ``pyproject.toml``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from iii_trio._registrations import project_name as _project_name
from iii_trio._registrations import project_name_in as _project_name_in


def _write(path: Path, name: str, mtime_ns: int) -> None:
    path.write_text(f'[project]\nname = "{name}"\n')
    os.utime(path, ns=(mtime_ns, mtime_ns))


def test_the_project_name_follows_the_file_and_is_parsed_once_per_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert _project_name() is None  # no file
    project = tmp_path / "pyproject.toml"
    _write(project, "first", 1_000_000_000)
    _project_name_in.cache_clear()
    assert _project_name() == "first"
    assert _project_name() == "first"
    assert _project_name_in.cache_info().misses == 1
    _write(project, "second", 2_000_000_000)
    assert _project_name() == "second"
    project.write_text("not toml [")
    assert _project_name() is None
    project.unlink()
    assert _project_name() is None


def test_each_working_directory_has_its_own_project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        _write(tmp_path / name / "pyproject.toml", f"project-{name}", 1_000_000_000)
    monkeypatch.chdir(tmp_path / "a")
    assert _project_name() == "project-a"
    monkeypatch.chdir(tmp_path / "b")
    assert _project_name() == "project-b"
