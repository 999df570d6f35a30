"""The key-value store shared by the state and stream modules: upstream's data
model (indexes of ordered key → value maps) in memory and in a SQLite file that a
new store instance opens again."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest
from pydantic import JsonValue

from engine_sim.modules._kv import (
    DEFAULT_FILE_PATH,
    SQLITE_FILE_NAME,
    KvConfig,
    KvFullError,
    KvStore,
    open_kv_store,
)
from engine_sim.modules._update_ops import MISSING, IncrementOp, SetOp

LOG = logging.getLogger("test_kv")


def file_store(tmp_path: Path, sub: str = "data") -> KvStore:
    return open_kv_store(
        KvConfig(store_method="file_based", file_path=sub), lambda p: tmp_path / p, LOG
    )


def test_set_get_delete_report_the_old_value_and_missing() -> None:
    kv = KvStore()
    assert kv.get("s", "k") is MISSING
    assert kv.set("s", "k", {"a": 1}) is MISSING
    assert kv.set("s", "k", {"a": 2}) == {"a": 1}
    assert kv.get("s", "k") == {"a": 2}
    assert kv.delete("s", "k") == {"a": 2}
    assert kv.delete("s", "k") is MISSING
    assert kv.get("s", "k") is MISSING


def test_a_stored_null_is_not_missing() -> None:
    kv = KvStore()
    kv.set("s", "k", None)
    assert kv.get("s", "k") is None
    assert kv.set("s", "k", 1) is None


def test_reads_are_copies() -> None:
    kv = KvStore()
    inner: list[JsonValue] = [1]
    kv.set("s", "k", {"list": inner})
    inner.append(2)
    got = kv.get("s", "k")
    assert got == {"list": [1]}
    assert isinstance(got, dict)
    got["list"] = "changed"
    assert kv.get("s", "k") == {"list": [1]}


def test_values_keep_insertion_order_and_a_reset_key_keeps_its_place() -> None:
    kv = KvStore()
    for key in ("b", "a", "c"):
        kv.set("s", key, key)
    kv.set("s", "b", "B")
    kv.delete("s", "a")
    kv.set("s", "a", "A")
    assert kv.values("s") == ["B", "c", "A"]
    assert kv.items("s") == [("b", "B"), ("c", "c"), ("a", "A")]
    assert kv.values("nothing") == []


def test_groups_and_prefixes_and_an_emptied_index_stays_listed() -> None:
    kv = KvStore()
    kv.set("stream:chat:room1", "m", 1)
    kv.set("stream:chat:room2", "m", 1)
    kv.set("users", "u", 1)
    kv.get("never-written", "k")
    assert kv.list_groups() == ["stream:chat:room1", "stream:chat:room2", "users"]
    assert kv.list_keys_with_prefix("stream:chat:") == ["stream:chat:room1", "stream:chat:room2"]
    kv.delete("users", "u")
    assert "users" in kv.list_groups()


def test_update_applies_ops_and_always_writes() -> None:
    kv = KvStore()
    old, new, errors = kv.update("s", "k", [IncrementOp("n", 2)])
    assert (old, new, errors) == (MISSING, {"n": 2}, [])
    old, new, errors = kv.update("s", "k", [SetOp("m", "x"), IncrementOp("m", 1)])
    assert old == {"n": 2}
    assert new == {"n": 2, "m": "x"}
    assert [e.code for e in errors] == ["increment.not_number"]
    assert kv.get("s", "k") == new
    # Even an empty op list stores the starting {} for a missing key, as upstream.
    kv.update("s", "fresh", [])
    assert kv.get("s", "fresh") == {}


def test_the_store_is_bounded_in_bytes() -> None:
    kv = KvStore(max_bytes=40)
    kv.set("s", "k", "x" * 10)
    with pytest.raises(KvFullError, match="limit of 40"):
        kv.set("s", "k2", "y" * 40)
    assert kv.get("s", "k2") is MISSING
    # Replacing a value counts only the difference; deleting frees its bytes.
    kv.set("s", "k", "z" * 20)
    kv.delete("s", "k")
    assert kv.size_bytes == 0
    kv.set("s", "k2", "y" * 30)
    assert kv.get("s", "k2") == "y" * 30


def test_in_memory_is_the_default_and_unknown_methods_fall_back(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    assert not open_kv_store(None, lambda p: tmp_path / p, LOG).persistent
    assert not open_kv_store(KvConfig(), lambda p: tmp_path / p, LOG).persistent
    with caplog.at_level(logging.WARNING, logger="test_kv"):
        kv = open_kv_store(KvConfig(store_method="file-based"), lambda p: tmp_path / p, LOG)
    assert not kv.persistent
    assert "unknown store_method 'file-based', defaulting to in_memory" in caplog.text
    assert list(tmp_path.iterdir()) == []


def test_file_based_data_survives_a_new_instance_in_order(tmp_path: Path) -> None:
    kv = file_store(tmp_path)
    assert kv.persistent
    kv.set("s", "b", {"v": 1})
    kv.set("s", "a", [1, 2.5, "é", None, True])
    kv.set("s", "b", {"v": 2})
    kv.update("t", "n", [IncrementOp("", 5)])
    kv.set("gone", "x", 1)
    kv.delete("gone", "x")
    kv.close()

    again = file_store(tmp_path)
    assert again.items("s") == [("b", {"v": 2}), ("a", [1, 2.5, "é", None, True])]
    assert again.get("t", "n") == 5
    # The emptied index is not listed after reopening (upstream drops its file).
    assert again.list_groups() == ["s", "t"]
    assert again.size_bytes == kv.size_bytes
    again.set("s", "c", 3)
    assert again.values("s") == [{"v": 2}, [1, 2.5, "é", None, True], 3]
    again.close()
    assert (tmp_path / "data" / SQLITE_FILE_NAME).is_file()


def test_file_based_default_path_is_upstreams_directory(tmp_path: Path) -> None:
    kv = open_kv_store(KvConfig(store_method="file_based"), lambda p: tmp_path / p, LOG)
    kv.set("s", "k", 1)
    kv.close()
    assert (tmp_path / DEFAULT_FILE_PATH / SQLITE_FILE_NAME).is_file()


def test_a_store_that_cannot_open_its_file_logs_and_keeps_memory(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / SQLITE_FILE_NAME).write_bytes(b"this is not a database" * 100)
    with caplog.at_level(logging.ERROR, logger="test_kv"):
        kv = file_store(tmp_path)
    assert not kv.persistent
    assert "cannot open the file-based store" in caplog.text
    kv.set("s", "k", 1)
    assert kv.get("s", "k") == 1


def test_rows_that_are_not_json_values_are_skipped_with_an_error_and_overwritable(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    # A file edited by hand or by another tool: one row is not JSON, one is bytes.
    kv = file_store(tmp_path)
    kv.set("s", "good", 1)
    kv.close()
    db = sqlite3.connect(tmp_path / "data" / SQLITE_FILE_NAME)
    with db:
        db.execute("INSERT INTO kv VALUES ('s', 'bad', '{not json', 10)")
        db.execute("INSERT INTO kv VALUES ('s', 'bytes', x'00ff', 11)")
        db.execute("INSERT INTO kv VALUES ('t', 'seq', '1', 'not a number')")
    db.close()
    with caplog.at_level(logging.ERROR, logger="test_kv"):
        again = file_store(tmp_path)
    assert again.persistent
    assert "3 rows of" in caplog.text
    assert "are not JSON values" in caplog.text
    assert again.values("s") == [1]
    assert again.get("s", "bad") is MISSING
    again.set("s", "bad", 2)  # replaces the unreadable row
    again.close()
    assert file_store(tmp_path).items("s") == [("good", 1), ("bad", 2)]


def test_close_keeps_answering_from_memory(tmp_path: Path) -> None:
    kv = file_store(tmp_path)
    kv.set("s", "k", 1)
    kv.close()
    kv.close()
    assert kv.get("s", "k") == 1
    kv.set("s", "k", 2)  # no longer persisted
    reopened = file_store(tmp_path)
    assert reopened.get("s", "k") == 1
    reopened.close()
