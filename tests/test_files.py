"""The atomic-path helper behind every write-then-rename: a file or folder appears complete or not at all."""

import os

import pytest
import torch
from safetensors.torch import save_file

from omnideft.errors import UserError
from omnideft.files import (
    OWNER_FILE,
    TMP_PREFIX,
    atomic_path,
    check_output_folder,
    current_umask,
    write_text_atomic,
)


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


def test_a_folder_replaces_only_its_own_earlier_output(tmp_path):
    target = tmp_path / "out"
    for text in ("{}", "{\"second\": 1}"):  # the second write replaces the first: the same writer wrote it
        with atomic_path(target, writer="omnideft verb") as tmp:
            tmp.mkdir()
            (tmp / "model.json").write_text(text)
    assert (target / "model.json").read_text() == "{\"second\": 1}"
    assert sorted(os.listdir(target)) == [OWNER_FILE, "model.json"] and os.listdir(tmp_path) == ["out"]
    with pytest.raises(UserError, match="holds the output of `omnideft verb`"), \
            atomic_path(target, writer="omnideft other verb") as tmp:
        tmp.mkdir()
    assert sorted(os.listdir(target)) == [OWNER_FILE, "model.json"] and os.listdir(tmp_path) == ["out"]


def test_a_folder_never_replaces_files_nobody_recorded_unless_the_caller_owns_it(tmp_path):
    target = tmp_path / "out"
    (target / "mine").mkdir(parents=True)
    with pytest.raises(UserError, match=r"out holds files omnideft did not write \(mine, ...\)"), \
            atomic_path(target, writer="omnideft verb") as tmp:
        tmp.mkdir()
    assert os.listdir(target) == ["mine"] and os.listdir(tmp_path) == ["out"]
    with atomic_path(target, replace=True) as tmp:  # e.g. the trainer's base/ inside its locked run folder
        tmp.mkdir()
    assert os.listdir(target) == []


def test_a_file_and_a_folder_never_replace_each_other(tmp_path):
    (tmp_path / "file").write_text("kept")
    (tmp_path / "folder").mkdir()
    with pytest.raises(UserError, match="file is a file, not a folder"), \
            atomic_path(tmp_path / "file", writer="omnideft verb") as tmp:
        tmp.mkdir()
    with pytest.raises(UserError, match="folder is a folder, not a file"), atomic_path(tmp_path / "folder") as tmp:
        tmp.write_text("x")
    with pytest.raises(UserError, match="cannot create .*file/sub: .*file is a file, not a folder"):
        check_output_folder(tmp_path / "file" / "sub")
    assert (tmp_path / "file").read_text() == "kept" and sorted(os.listdir(tmp_path)) == ["file", "folder"]


def test_unique_temporaries_carry_the_process_id(tmp_path):
    with atomic_path(tmp_path / "m.json", unique=True) as tmp:
        assert tmp.name == f"{TMP_PREFIX}m.json.{os.getpid()}"
        tmp.write_text("{}")
    assert (tmp_path / "m.json").read_text() == "{}"


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_safetensors_files_get_the_mode_any_new_file_gets(tmp_path, umask):
    """safetensors >= 0.8 creates its files 0600 whatever the umask; what atomic_path puts in place is readable as
    the files beside it are (a file of another kind keeps the mode it was given)."""
    before = os.umask(umask)
    try:
        assert current_umask() == umask
        with atomic_path(tmp_path / "w.safetensors") as tmp:
            save_file({"a": torch.zeros(2)}, str(tmp))
        with atomic_path(tmp_path / "u.safetensors", unique=True) as tmp:  # the temporary name ends in the PID
            save_file({"a": torch.zeros(2)}, str(tmp))
        with atomic_path(tmp_path / "model") as tmp:
            (tmp / "sub").mkdir(parents=True)
            save_file({"a": torch.zeros(2)}, str(tmp / "sub" / "m.safetensors"))
            (tmp / "config.json").write_text("{}")
            (tmp / "private.key").write_text("x")
            (tmp / "private.key").chmod(0o600)
    finally:
        os.umask(before)
    want = 0o666 & ~umask
    assert (tmp_path / "w.safetensors").stat().st_mode & 0o777 == want
    assert (tmp_path / "u.safetensors").stat().st_mode & 0o777 == want
    assert (tmp_path / "model" / "sub" / "m.safetensors").stat().st_mode & 0o777 == want
    assert (tmp_path / "model" / "config.json").stat().st_mode & 0o777 == want
    assert (tmp_path / "model" / "private.key").stat().st_mode & 0o777 == 0o600
