"""Behaviour shared by every builder: --dry-run, one-line errors, the check of unmerged parts."""

import pytest

from data_builders import dreambooth, insdet, jsonl, sfm, visualcloze
from data_builders.check import main as check_main


def source_args(name, fx):
    return {
        "visualcloze": (visualcloze.main, ["--src", str(fx["graph200k_dir"])]),
        "insdet": (insdet.main, ["--src", str(fx["insdet_root"])]),
        "sfm": (sfm.main, ["--src", str(fx["colmap_project"] / "sparse" / "txt"), "--images",
                           str(fx["colmap_project"] / "images")]),
        "dreambooth": (dreambooth.main, ["--src", str(fx["dreambooth_root"]), "--subject", "dog6"]),
        "jsonl": (jsonl.main, ["--src", str(fx["jsonl_source"] / "toy.jsonl"), "--images",
                               str(fx["jsonl_source"] / "images")]),
    }[name]


@pytest.fixture
def sources(graph200k_dir, insdet_root, colmap_project, dreambooth_root, jsonl_source):
    return locals()


@pytest.mark.parametrize("name", ["visualcloze", "insdet", "sfm", "dreambooth", "jsonl"])
def test_dry_run_prints_plan_and_writes_nothing(name, sources, tmp_path, capsys):
    main, args = source_args(name, sources)
    assert main([*args, "--out", str(tmp_path / "o"), "--dry-run", "--shard-size", "2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("dry run: would build ") and f"  {name if name != 'jsonl' else 'omnigen'}/" in out
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("name", ["insdet", "sfm", "dreambooth", "jsonl"])
def test_missing_source_is_one_line(name, sources, tmp_path, capsys):
    main, args = source_args(name, sources)
    args = [a if a != args[1] else str(tmp_path / "nowhere") for a in args]
    assert main([*args, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "nowhere" in err[0]


def test_check_flags_unmerged_partition(sources, tmp_path, capsys):
    main, args = source_args("jsonl", sources)
    assert main([*args, "--out", str(tmp_path / "o"), "--partition", "0/2", "--shard-size", "3",
                 "--max-pixels", "5000", "--no-progress"]) == 0
    assert check_main([str(tmp_path / "o")]) == 2
    assert "no manifest.json (build unfinished, or parts not merged with build-merge)" in capsys.readouterr().out


def test_merge_refuses_parts_of_different_builds(sources, tmp_path, capsys):
    from data_builders.merge import main as merge_main

    main, args = source_args("jsonl", sources)
    common = [*args, "--shard-size", "3", "--max-pixels", "5000", "--no-progress"]
    assert main([*common, "--out", str(tmp_path / "a"), "--partition", "0/2"]) == 0
    assert main([*common, "--out", str(tmp_path / "b"), "--partition", "1/2", "--seed", "5"]) == 0
    part = "manifest.part-0001-of-0002.json"
    (tmp_path / "a" / "train" / part).write_bytes((tmp_path / "b" / "train" / part).read_bytes())
    assert merge_main([str(tmp_path / "a"), "--split", "train"]) == 2
    assert "part 1 was built with different arguments than part 0" in capsys.readouterr().err
    assert not (tmp_path / "a" / "train" / "manifest.json").exists()
