"""The atomic-path helper behind every write-then-rename: a file or folder appears complete or not at all."""

import os

import pytest

from omnideft.files import TMP_PREFIX, atomic_path, write_text_atomic


def test_a_file_replaces_the_old_one_only_when_complete(tmp_path):
    target = tmp_path / "sub" / "a.txt"
    write_text_atomic(target, "old")
    with atomic_path(target) as tmp:
        tmp.write_text("new")
        assert target.read_text() == "old"  # readers see the old version while the new one is written
    assert target.read_text() == "new"
    assert os.listdir(target.parent) == ["a.txt"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash while writing")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["a.txt"]


def test_a_folder_replaces_a_folder(tmp_path):
    target = tmp_path / "out"
    (target / "stale").mkdir(parents=True)
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "model.json").write_text("{}")
    assert sorted(os.listdir(target)) == ["model.json"]
    assert os.listdir(tmp_path) == ["out"]


def test_unique_temporaries_carry_the_process_id(tmp_path):
    with atomic_path(tmp_path / "m.json", unique=True) as tmp:
        assert tmp.name == f"{TMP_PREFIX}m.json.{os.getpid()}"
        tmp.write_text("{}")
    assert (tmp_path / "m.json").read_text() == "{}"
