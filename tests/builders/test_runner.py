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


def _slow_jsonl(root, n=600):
    """A JSONL source big enough that a 2-worker build is still running when the test interrupts it."""
    import json

    from builder_sources import noise_image

    (root / "images").mkdir(parents=True)
    noise_image(1, size=(256, 256)).save(root / "images" / "a.png")
    lines = [{"instruction": f"picture {i}", "input_images": [], "output_image": "a.png"} for i in range(n)]
    (root / "big.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    return root / "big.jsonl"


def _start_build(src, out):
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-m", "data_builders.jsonl", "--src", str(src), "--out", str(out),
                             "--workers", "2", "--shard-size", "50", "--no-progress"], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60  # wait until the workers are making samples (the first shard is open)
    while time.monotonic() < deadline and proc.poll() is None and not list((out / "train").glob(".tmp-*")):
        time.sleep(0.01)
    assert proc.poll() is None, "the build finished before it could be interrupted"
    return proc


def _children(pid):
    from pathlib import Path

    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_ctrl_c_stops_workers_quietly(tmp_path):
    import os
    import signal

    proc = _start_build(_slow_jsonl(tmp_path / "src"), tmp_path / "o")
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole process group
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert err.strip().splitlines() == ["interrupted: rerun the same command to resume"]


def test_workers_of_a_killed_builder_exit_quietly(tmp_path):
    import os
    import signal
    import time

    proc = _start_build(_slow_jsonl(tmp_path / "src"), tmp_path / "o")
    workers = _children(proc.pid)
    assert len(workers) == 2
    os.kill(proc.pid, signal.SIGKILL)  # the main process only (OOM killer, kill -9)
    proc.wait(timeout=30)
    deadline = time.monotonic() + 30
    alive = workers
    while alive and time.monotonic() < deadline:
        alive = [w for w in alive if os.path.exists(f"/proc/{w}") and
                 open(f"/proc/{w}/stat").read().split(")")[1].split()[0] != "Z"]
        time.sleep(0.01)
    assert alive == []
    assert proc.stderr.read() == ""
