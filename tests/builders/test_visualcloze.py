import json

import numpy as np
import pytest
from builder_sources import CELL, CORRUPT_ROW, decode, graph200k_columns, graph200k_rows, read_samples, shard_bytes

from data_builders.check import main as check_main
from data_builders.merge import main as merge_main
from data_builders.visualcloze import main
from data_builders.visualcloze_tasks import LOSSLESS_CELLS, REVERSE_SUFFIX, VARIANTS, cell_phrase, column_for
from omnideft.data.format.schema import TASK_RE, placeholder_numbers
from omnideft.data.format.writer import ShardWriter

N = 24
OLD_BEHAVIOUR = ("--no-shuffle-conditions", "--random-target-prob", "0")  # target last, canonical cell order
VARIANT_OF = {v.task: v for v in VARIANTS}


def build(src, out, *extra):
    return main(["--src", str(src), "--out", str(out), "--resolution", str(CELL), "--shard-size", "5",
                 "--max-samples", str(N), "--no-progress", *extra])


@pytest.fixture(scope="module")
def built(graph200k_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("vc") / "out"
    assert build(graph200k_dir, out) == 0
    return out / "train"


def variant_of(meta: dict):
    return VARIANT_OF[meta["task"].removesuffix(REVERSE_SUFFIX)]


def check_cells(meta: dict) -> tuple[list[str], int]:
    """The json's cell record is a permutation of the variant's cells with the output last, and agrees with the
    task name, the instruction and the members; returns (order, target)."""
    variant = variant_of(meta)
    order, target = meta["cells"]["order"], meta["cells"]["target"]
    assert TASK_RE.match(meta["task"])
    assert sorted(order) == sorted(variant.cells) and order[-1] == variant.cells[-1]
    assert 0 <= target < len(order)
    assert meta["task"].endswith(REVERSE_SUFFIX) == (target != len(order) - 1)
    produced = order[target]
    if "Each row outlines" in meta["instruction"]:
        assert f"to achieve {cell_phrase(produced, variant)}." in meta["instruction"]
    if meta["source"]["layout"] == "interleaved":
        assert meta["output"]["member"] == "out." + ("png" if produced in LOSSLESS_CELLS else "jpg")
    return order, target


class SourceImages:
    """Tells which Graph200K column of the fixture rows an output image came from (nearest by pixels)."""

    def __init__(self):
        data = graph200k_rows()
        self.columns = graph200k_columns()[1]
        self.rows = [{c: np.asarray(data[c][r].convert("RGB"), np.float32) for c in self.columns
                      if hasattr(data[c][r], "convert")} for r in range(len(data["target"]))]

    def column(self, img, row: int) -> str:
        arr = np.asarray(img.convert("RGB"), np.float32)
        return min(self.rows[row], key=lambda c: np.abs(self.rows[row][c] - arr).mean())

    def check(self, img, row: int, cell: str, variant) -> None:
        """`img` shows `cell` of source row `row` (derived cells - masked, degraded - are not checked)."""
        candidates = {column_for(cell, variant.style, k, k) for k in range(3)}
        if cell != "degraded" and all(len(cols) == 1 for cols in candidates):
            assert self.column(img, row) in {cols[0] for cols in candidates}, (cell, row)


@pytest.fixture(scope="module")
def source_images():
    return SourceImages()


def check_rows_follow_order(s: dict, images: SourceImages) -> None:
    """Every row shows the cells in the json's order: interleaved rows list the non-target cells, then the target
    (the query's target is `out`); the grid output has every row in order."""
    meta = s["meta"]
    order, target = check_cells(meta)
    variant, ids, cols = variant_of(meta), [int(i) for i in meta["source"]["ids"]], len(order)
    if meta["source"]["layout"] == "grid":
        full = decode(s[meta["output"]["member"]])
        for r, row in enumerate(ids):
            for c, cell in enumerate(order):
                images.check(full.crop((c * CELL, r * CELL, (c + 1) * CELL, (r + 1) * CELL)), row, cell, variant)
        return
    shown = order[:target] + order[target + 1:] + [order[target]]
    pictures = [decode(s[entry["member"]]) for entry in meta["inputs"]] + [decode(s[meta["output"]["member"]])]
    for r, row in enumerate(ids):
        for c, cell in enumerate(shown):
            images.check(pictures[r * cols + c], row, cell, variant)


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
        assert len(check_cells(meta)[0]) == cols
    assert rows_seen == {1, 2, 3}  # 0, 1 and 2 in-context examples all occur


def test_corrupt_row_counted_and_check_clean(built, capsys):
    manifest = json.loads((built / "manifest.json").read_text())
    assert [x.split(":")[0] for x in manifest["skipped"]["corrupt"]["examples"]] == [str(CORRUPT_ROW)]
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


def test_grid_layout(graph200k_dir, tmp_path, source_images):
    assert build(graph200k_dir, tmp_path / "g", "--layout", "grid", "--tasks", "dense_prediction") == 0
    targets = set()
    for s in read_samples(tmp_path / "g" / "train"):
        meta = s["meta"]
        rows = len(meta["source"]["ids"])
        assert meta["task"].startswith("visualcloze/dense_prediction/")
        assert len(meta["inputs"]) == 1 and "<|image_1|>" in meta["instruction"]
        assert (meta["output"]["width"], meta["output"]["height"]) == (2 * CELL, rows * CELL)
        check_rows_follow_order(s, source_images)
        target = meta["cells"]["target"]
        targets.add(target)
        query = decode(s["in0.png"]).convert("RGB")
        for c in range(2):  # only the chosen query cell is blank
            cell = query.crop((c * CELL, (rows - 1) * CELL, (c + 1) * CELL, rows * CELL))
            assert (cell.getextrema() == ((0, 0), (0, 0), (0, 0))) == (c == target)
        assert ("bottom-right" in meta["instruction"]) == (target == 1)
    assert targets == {0, 1}  # dense prediction and its reverse (predict the image from the map) both occur


def test_restoration_inputs_are_degraded_and_deterministic(graph200k_dir, tmp_path):
    assert build(graph200k_dir, tmp_path / "r", "--tasks", "restoration", "--rows-probs", "1,0,0",
                 *OLD_BEHAVIOUR) == 0
    samples = read_samples(tmp_path / "r" / "train")
    assert samples and all(s["meta"]["task"].startswith("visualcloze/restoration/") for s in samples)
    changed = [decode(s["in0.png"]).tobytes() != decode(s["out.jpg"]).convert("RGB").tobytes() for s in samples]
    assert all(changed)
    assert {s["meta"]["source"]["degradation"] for s in samples} == {s["meta"]["task"].split("/")[2] for s in samples}


def test_visualcloze_data_json_tree(visualcloze_tree, tmp_path):
    rc = main(["--src", str(visualcloze_tree), "--out", str(tmp_path / "t"), "--resolution", str(CELL),
               "--tasks", "conditional_generation/canny,conditional_generation/foreground,subject_extraction",
               "--max-samples", "8", "--no-progress", *OLD_BEHAVIOUR])
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


def test_random_target_prob_1_always_reverses(graph200k_dir, tmp_path, source_images):
    assert build(graph200k_dir, tmp_path / "rev", "--random-target-prob", "1", "--task-dropout", "0") == 0
    samples = read_samples(tmp_path / "rev" / "train")
    assert len(samples) >= N - 2
    for s in samples:
        meta = s["meta"]
        order, target = check_cells(meta)
        assert target < len(order) - 1 and meta["task"].endswith(REVERSE_SUFFIX)
        rows, n_in = len(meta["source"]["ids"]), len(meta["inputs"])
        assert n_in == rows * len(order) - 1 and placeholder_numbers(meta["instruction"]) == list(range(1, n_in + 1))
        assert sum(1 for name in s if name.startswith(("in", "out."))) == n_in + 1
        assert ("The missing image in the final row shows:" in meta["instruction"]) == (order[target] == "target")
        assert "The last image in the final row" not in meta["instruction"]
        check_rows_follow_order(s, source_images)


def test_reverse_restoration_outputs_the_degraded_cell(graph200k_dir, tmp_path):
    assert build(graph200k_dir, tmp_path / "r", "--tasks", "restoration", "--rows-probs", "1,0,0",
                 "--random-target-prob", "1", "--task-dropout", "0") == 0
    samples = read_samples(tmp_path / "r" / "train")
    assert samples
    for s in samples:
        assert s["meta"]["cells"] == {"order": ["degraded", "target"], "target": 0}
        assert s["meta"]["task"] == f"visualcloze/restoration/{s['meta']['source']['degradation']}{REVERSE_SUFFIX}"
        assert decode(s["in0.jpg"]).size == decode(s["out.png"]).size == (CELL, CELL)
        assert decode(s["out.png"]).convert("RGB").tobytes() != decode(s["in0.jpg"]).convert("RGB").tobytes()
        assert "to achieve a degraded image" in s["meta"]["instruction"]


def test_old_behaviour_flags_keep_target_last_and_canonical_order(graph200k_dir, tmp_path, source_images):
    assert build(graph200k_dir, tmp_path / "old", *OLD_BEHAVIOUR) == 0
    samples = read_samples(tmp_path / "old" / "train")
    assert len(samples) >= N - 2
    for s in samples:
        meta = s["meta"]
        variant = variant_of(meta)
        assert meta["task"] == variant.task
        assert meta["cells"] == {"order": list(variant.cells), "target": len(variant.cells) - 1}
        check_rows_follow_order(s, source_images)


def test_shuffle_is_one_permutation_for_all_rows(graph200k_dir, tmp_path, source_images):
    tasks = "style_transfer_with_condition,conditional_generation_with_reference,restoration_with_reference"
    for layout in ("interleaved", "grid"):
        out = tmp_path / layout
        assert build(graph200k_dir, out, "--tasks", tasks, "--rows-probs", "0,0,1", "--layout", layout) == 0
        samples = read_samples(out / "train")
        assert samples and all(len(s["meta"]["source"]["ids"]) == 3 for s in samples)
        for s in samples:
            check_rows_follow_order(s, source_images)
        orders = {tuple(s["meta"]["cells"]["order"]) != variant_of(s["meta"]).cells for s in samples}
        assert orders == {True, False}  # shuffled orders occur (and the canonical one by chance)


def test_defaults_mix_reverse_and_normal_samples(graph200k_dir, tmp_path):
    out = tmp_path / "mix"
    assert main(["--src", str(graph200k_dir), "--out", str(out), "--resolution", str(CELL), "--max-samples", "40",
                 "--no-progress"]) == 0
    samples = read_samples(out / "train")
    assert len(samples) >= 36
    reverse = sum(s["meta"]["task"].endswith(REVERSE_SUFFIX) for s in samples)
    assert 0.25 * len(samples) <= reverse <= 0.75 * len(samples)  # about half, as VisualCloze trains
    manifest = json.loads((out / "train" / "manifest.json").read_text())
    assert sum(n for t, n in manifest["tasks"].items() if t.endswith(REVERSE_SUFFIX)) == reverse
    assert main(["--src", str(graph200k_dir), "--out", str(out), "--resolution", str(CELL), "--max-samples", "40",
                 "--random-target-prob", "1.5"]) == 2


def test_query_only_samples_always_say_what_to_do(graph200k_dir, tmp_path):
    # every sample is a lone query row and the task sentence would always be dropped: it is kept all the same
    assert build(graph200k_dir, tmp_path / "q", "--rows-probs", "1,0,0", "--task-dropout", "1",
                 "--content-dropout", "1") == 0
    samples = read_samples(tmp_path / "q" / "train")
    assert samples and all(len(s["meta"]["source"]["ids"]) == 1 for s in samples)
    assert all("Each row outlines" in s["meta"]["instruction"] for s in samples)
    # the content text is left out of the instruction (dropout 1) but kept as the caption of target outputs
    for s in samples:
        order, target = s["meta"]["cells"]["order"], s["meta"]["cells"]["target"]
        row = int(s["meta"]["source"]["ids"][-1])
        expected = f"item{row} a thing number {row}" if order[target] == "target" else None
        assert s["meta"]["caption"] == expected and "shows:" not in s["meta"]["instruction"]
    assert any(s["meta"]["caption"] for s in samples)


def test_task_dropout_still_applies_with_examples(graph200k_dir, tmp_path):
    assert build(graph200k_dir, tmp_path / "e", "--rows-probs", "0,1,0", "--task-dropout", "1") == 0
    samples = read_samples(tmp_path / "e" / "train")
    assert samples and all(len(s["meta"]["source"]["ids"]) == 2 for s in samples)
    assert not any("Each row outlines" in s["meta"]["instruction"] for s in samples)
