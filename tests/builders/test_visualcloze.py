import json

import pytest
from builder_sources import CELL, CORRUPT_ROW, decode, read_samples, shard_bytes

from data_builders.check import main as check_main
from data_builders.merge import main as merge_main
from data_builders.shard_writer import ShardWriter
from data_builders.visualcloze import main
from omnideft.data.schema import placeholder_numbers

N = 24


def build(src, out, *extra):
    return main(["--src", str(src), "--out", str(out), "--resolution", str(CELL), "--shard-size", "5",
                 "--max-samples", str(N), "--no-progress", *extra])


@pytest.fixture(scope="module")
def built(graph200k_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("vc") / "out"
    assert build(graph200k_dir, out) == 0
    return out / "train"


def test_contents_placeholders_and_rows(built):
    samples = read_samples(built)
    manifest = json.loads((built / "manifest.json").read_text())
    assert len(samples) == manifest["samples"] > 0
    assert manifest["samples"] + manifest["skipped"]["corrupt"]["count"] == N
    rows_seen = set()
    for s in samples:
        meta = s["meta"]
        assert meta["task"].startswith("visualcloze/")
        n_in = len(meta["inputs"])
        assert placeholder_numbers(meta["instruction"]) == list(range(1, n_in + 1))
        for i, entry in enumerate(meta["inputs"]):
            assert decode(s[entry["member"]]).size == (CELL, CELL)
        assert decode(s[meta["output"]["member"]]).size == (CELL, CELL)
        rows = len(meta["source"]["ids"])
        rows_seen.add(rows)
        cols = (n_in + 1) // rows
        assert n_in == rows * cols - 1  # every cell but the query's output is an input
        assert [i["role"] for i in meta["inputs"]][-(cols - 1):] == ["query_condition"] * (cols - 1)
    assert rows_seen == {1, 2, 3}  # 0, 1 and 2 in-context examples all occur


def test_corrupt_row_counted_and_check_clean(built, capsys):
    manifest = json.loads((built / "manifest.json").read_text())
    assert manifest["skipped"]["corrupt"]["examples"] == [str(CORRUPT_ROW)]
    assert sum(manifest["tasks"].values()) == manifest["samples"]
    assert check_main([str(built)]) == 0


def test_rebuild_and_two_workers_are_byte_identical(graph200k_dir, built, tmp_path):
    assert build(graph200k_dir, tmp_path / "again") == 0
    assert build(graph200k_dir, tmp_path / "w2", "--workers", "2") == 0
    reference = shard_bytes(built)
    assert shard_bytes(tmp_path / "again" / "train") == reference
    assert shard_bytes(tmp_path / "w2" / "train") == reference


def test_resume_after_kill_is_byte_identical(graph200k_dir, built, tmp_path, monkeypatch):
    calls = {"n": 0}
    original = ShardWriter.add_encoded

    def dying(self, sample):
        calls["n"] += 1
        if calls["n"] == 13:  # in the middle of the third shard
            raise KeyboardInterrupt
        original(self, sample)

    monkeypatch.setattr(ShardWriter, "add_encoded", dying)
    assert build(graph200k_dir, tmp_path / "k") == 130
    split = tmp_path / "k" / "train"
    assert not (split / "manifest.json").exists()
    assert any(p.name.startswith(".tmp-") for p in split.iterdir())
    monkeypatch.setattr(ShardWriter, "add_encoded", original)
    (split / "shard-000000.tar").write_bytes(b"partial garbage")  # a damaged complete shard is redone too
    assert build(graph200k_dir, tmp_path / "k") == 0
    assert shard_bytes(split) == shard_bytes(built)
    assert not any(p.name.startswith(".tmp-") for p in split.iterdir())


def test_partition_and_merge_equal_single_build(graph200k_dir, built, tmp_path, capsys):
    out = tmp_path / "parts"
    assert build(graph200k_dir, out, "--partition", "1/2") == 0
    assert merge_main([str(out / "train")]) == 2
    assert "parts [0] of 2 are missing" in capsys.readouterr().err
    assert build(graph200k_dir, out, "--partition", "0/2") == 0
    assert merge_main([str(out / "train")]) == 0
    assert shard_bytes(out / "train") == shard_bytes(built)
    merged = json.loads((out / "train" / "manifest.json").read_text())
    single = json.loads((built / "manifest.json").read_text())
    for key in ("shards", "samples", "tasks", "skipped"):
        assert merged[key] == single[key]
    assert check_main([str(out / "train")]) == 0


def test_grid_layout(graph200k_dir, tmp_path):
    assert build(graph200k_dir, tmp_path / "g", "--layout", "grid", "--tasks", "dense_prediction") == 0
    for s in read_samples(tmp_path / "g" / "train"):
        meta = s["meta"]
        rows = len(meta["source"]["ids"])
        assert meta["task"].startswith("visualcloze/dense_prediction/")
        assert len(meta["inputs"]) == 1 and "<|image_1|>" in meta["instruction"]
        assert (meta["output"]["width"], meta["output"]["height"]) == (2 * CELL, rows * CELL)
        blank = decode(s["in0.png"]).convert("RGB").crop((CELL, (rows - 1) * CELL, 2 * CELL, rows * CELL))
        assert blank.getextrema() == ((0, 0), (0, 0), (0, 0))


def test_restoration_inputs_are_degraded_and_deterministic(graph200k_dir, tmp_path):
    assert build(graph200k_dir, tmp_path / "r", "--tasks", "restoration", "--rows-probs", "1,0,0") == 0
    samples = read_samples(tmp_path / "r" / "train")
    assert samples and all(s["meta"]["task"].startswith("visualcloze/restoration/") for s in samples)
    changed = [decode(s["in0.png"]).tobytes() != decode(s["out.jpg"]).convert("RGB").tobytes() for s in samples]
    assert all(changed)
    assert {s["meta"]["source"]["degradation"] for s in samples} == {s["meta"]["task"].split("/")[2] for s in samples}


def test_visualcloze_data_json_tree(visualcloze_tree, tmp_path):
    rc = main(["--src", str(visualcloze_tree), "--out", str(tmp_path / "t"), "--resolution", str(CELL),
               "--tasks", "conditional_generation/canny,conditional_generation/foreground,subject_extraction",
               "--max-samples", "8", "--no-progress"])
    assert rc == 0
    tasks = {s["meta"]["task"] for s in read_samples(tmp_path / "t" / "train")}
    assert tasks <= {"visualcloze/conditional_generation/canny", "visualcloze/conditional_generation/foreground",
                     "visualcloze/subject_extraction"} and len(tasks) >= 2


def test_bad_layout_one_line_exit_2(tmp_path, capsys):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "random.txt").write_text("x")
    assert main(["--src", str(tmp_path / "src"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --src") and "dataset_dict.json" in err[0]
    assert "random.txt" in err[0]
    assert main(["--src", str(tmp_path / "src"), "--out", str(tmp_path / "o"), "--tasks", "nope"]) == 2


def test_different_build_refused_same_build_resumes(graph200k_dir, tmp_path, capsys):
    out = tmp_path / "o"
    assert build(graph200k_dir, out) == 0
    assert build(graph200k_dir, out, "--seed", "3") == 2
    err = capsys.readouterr().err
    assert "different build" in err and "--seed" in err and "--overwrite" in err
    assert build(graph200k_dir, out) == 0
    assert "resuming: 5 complete shard(s) kept, 0 to build" in capsys.readouterr().err
    assert build(graph200k_dir, out, "--seed", "3", "--overwrite") == 0
    assert json.loads((out / "train" / "manifest.json").read_text())["args"]["seed"] == 3


def test_dry_run_writes_nothing(graph200k_dir, tmp_path, capsys):
    assert build(graph200k_dir, tmp_path / "d", "--dry-run") == 0
    out = capsys.readouterr().out
    assert f"would build {N} of {N} planned samples in 5 shards" in out and "visualcloze/" in out
    assert not (tmp_path / "d").exists()


def test_offline_hub_id_is_one_line_error(tmp_path, capsys):
    assert main(["--src", "VisualCloze/NoSuchDataset", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --src VisualCloze/NoSuchDataset")


def test_hub_id_goes_through_load_dataset(graph200k_dir, built, tmp_path, monkeypatch):
    import datasets

    seen = []

    def fake_load_dataset(hub_id, split):
        seen.append((hub_id, split))
        return datasets.load_from_disk(str(graph200k_dir))[split]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    assert main(["--src", "VisualCloze/Graph200K", "--out", str(tmp_path / "h"), "--resolution", str(CELL),
                 "--shard-size", "5", "--max-samples", str(N), "--no-progress"]) == 0
    assert seen == [("VisualCloze/Graph200K", "train")]
    assert shard_bytes(tmp_path / "h" / "train") == shard_bytes(built)


def test_real_kill_then_rerun_is_byte_identical(graph200k_dir, tmp_path):
    """SIGKILL a 2-worker build once its first shard exists; the rerun must equal an uninterrupted build."""
    import os
    import signal
    import subprocess
    import sys
    import time

    args = ["--src", str(graph200k_dir), "--resolution", str(CELL), "--shard-size", "20", "--max-samples", "400",
            "--workers", "2", "--no-progress"]
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "data_builders.visualcloze", *args, "--out", str(out)],
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None and not (out / "train" / "shard-000000.tar").exists():
        time.sleep(0.01)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert main([*args, "--out", str(out)]) == 0
    assert main([*args, "--out", str(tmp_path / "clean")]) == 0
    assert shard_bytes(out / "train") == shard_bytes(tmp_path / "clean" / "train")
    assert len(shard_bytes(out / "train")) == 20


def test_data_json_from_another_machine_is_relocated(visualcloze_tree, tmp_path):
    """processing.py writes absolute paths; a moved tree is found again as <data.json dir>/<folder>/<file>."""
    import shutil

    moved = tmp_path / "moved"
    shutil.copytree(visualcloze_tree, moved)
    data = json.loads((moved / "train" / "data.json").read_text())
    for entry in data:
        entry["condition"] = {k: v.replace(str(visualcloze_tree), "/elsewhere/vc") if isinstance(v, str) else v
                              for k, v in entry["condition"].items()}
    (moved / "train" / "data.json").write_text(json.dumps(data))
    assert main(["--src", str(moved), "--out", str(tmp_path / "t"), "--resolution", str(CELL),
                 "--tasks", "subject_extraction", "--max-samples", "4", "--no-progress"]) == 0
    assert len(read_samples(tmp_path / "t" / "train")) == 4
