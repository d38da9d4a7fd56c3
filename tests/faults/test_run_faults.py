"""Faults around a training run: a second run into the same folder, stale locks, a fresh run over a finished one,
bad values, runs that go non-finite, NaN gradients under DeepSpeed."""

import json
import math
import os
import socket
import subprocess
import sys

import pytest
import torch

from omnideft.errors import UserError
from omnideft.train.faults import Faults
from omnideft.train.loop import train
from omnideft.train.recipe import load_recipe
from tests.faults.conftest import BASE, adapter_tensors, copy_run, read_metrics, train_cli
from tests.helpers import REPO, assert_one_line_error


def test_a_second_run_into_a_locked_folder_stops_naming_the_holder(fault_shards, tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from omnideft.locks import FolderLock\n"
         f"lock = FolderLock({str(out)!r}, 'output.dir').acquire(); print('locked', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)))
    try:
        assert holder.stdout.readline().strip() == "locked"  # the lock is held from here on
        proc = train_cli(fault_shards, out)
        assert_one_line_error(proc, f"output.dir {out} is in use by pid {holder.pid} on host {socket.gethostname()}")
        assert sorted(p.name for p in out.iterdir()) == [".omnideft.lock"]  # the refused run wrote nothing
    finally:
        holder.communicate("", timeout=60)


def test_a_lock_left_by_a_dead_process_is_taken_over(fault_shards, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (out / ".omnideft.lock").write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname(),
                                                    "since": "2026-01-01T00:00:00Z"}))
    proc = train_cli(fault_shards, out, "train.max_steps=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "adapter" / "adapter_model.safetensors").is_file() and not (out / ".omnideft.lock").exists()


def test_a_fresh_run_over_a_finished_run_needs_overwrite(fault_shards, finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path / "run")
    kept = {p: p.read_bytes() for p in (run / "adapter").iterdir()} | {run / "metrics.jsonl":
                                                                       (run / "metrics.jsonl").read_bytes()}
    proc = train_cli(fault_shards, run, "train.lr=5e-3")
    assert_one_line_error(proc, "already holds a run", "adapter/", "checkpoints/step-0000006", "--overwrite")
    assert all(p.read_bytes() == data for p, data in kept.items())
    proc = train_cli(fault_shards, run, "train.lr=5e-3", "train.max_steps=2", "--overwrite")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [r["step"] for r in read_metrics(run)] == [1, 2]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-0000002"]
    assert json.loads((run / "adapter" / "omnideft.json").read_text())["step"] == 2


@pytest.mark.parametrize("override, needle", [
    ("adapter.rank=0", "adapter.rank is 0; allowed: >= 1"),
    ("train.lr=.nan", "train.lr is nan; it must be a finite number > 0"),
    ("train.lr=-1e-3", "train.lr is -0.001; allowed: > 0"),
    ("train.max_steps=0", "train.max_steps is 0; allowed: >= 1"),
    ("train.batch_size=0", "train.batch_size is 0; allowed: >= 1"),
    ("adapter.dropout=1.0", "adapter.dropout is 1.0; allowed: [0, 1)"),
    ("train.betas=[0.9, 1.5]", "train.betas is 1.5; allowed: [0, 1)"),
    ("data.max_image_size=40", "data.max_image_size is 40; allowed: a multiple of 16"),
    ("validation.guidance=.inf", "validation.guidance is inf; it must be a finite number"),
    ("adapter.targets=[no_such_layer]", "matches no nn.Linear"),  # found only once the model is loaded
])
def test_a_bad_value_is_one_line_and_writes_nothing(fault_shards, tmp_path, override, needle):
    proc = train_cli(fault_shards, tmp_path / "run", override)
    assert_one_line_error(proc, needle)
    assert not (tmp_path / "run").exists()


def test_a_recipe_that_is_not_utf8_is_one_line(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_bytes("model:\n  name: tiny\n# caf\u00e9\n".encode("latin-1"))
    from tests.helpers import run_cli

    assert_one_line_error(run_cli("train", str(recipe)), str(recipe), "not UTF-8")


def _recipe(shards, out, *extra):
    flags = [x for x in BASE if "=" in x]
    return load_recipe(None, [*flags, f"data.shards=[{shards}]", f"output.dir={out}", *extra])


def test_a_run_whose_adapter_goes_non_finite_is_not_saved(fault_shards, tmp_path):
    recipe = _recipe(fault_shards, tmp_path / "run", "train.max_steps=1", "train.checkpoint_every=0")
    recipe.train.lr = math.nan  # past the recipe check, as a bug or a library could make it
    with pytest.raises(UserError, match="training diverged: adapter tensor .* is not finite at step 1"):
        train(recipe, progress=False)
    assert not (tmp_path / "run" / "adapter").exists() and not (tmp_path / "run" / ".omnideft.lock").exists()


def test_a_run_where_every_step_was_bad_is_not_saved(fault_shards, tmp_path):
    recipe = _recipe(fault_shards, tmp_path / "run", "train.max_steps=1", "train.checkpoint_every=0")
    with pytest.raises(UserError, match="every step from 1 to 1 had a non-finite loss or gradient"):
        train(recipe, progress=False, faults=Faults.parse("nan-loss@1"))
    assert not (tmp_path / "run" / "adapter").exists()


@pytest.mark.parametrize("engine", ["single", "zero2"])
def test_a_nan_gradient_with_a_finite_loss_skips_the_step(fault_shards, tmp_path, engine):
    extra = ["launch.deepspeed=recipes/launch/ds_zero2.json"] if engine == "zero2" else []
    out = tmp_path / "run"
    proc = train_cli(fault_shards, out, "train.max_steps=3", "train.checkpoint_every=0", *extra,
                     env={"OMNIDEFT_FAULT": "nan-grad@2", "DS_ACCELERATOR": "cpu"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = read_metrics(out)
    assert [r["skipped_step"] for r in records] == [False, True, False]
    assert records[1]["loss"] is None and not math.isfinite(records[1]["grad_norm"])  # nan, or inf from DeepSpeed
    assert json.loads((out / "summary.json").read_text())["engine"] == engine
    assert all(bool(torch.isfinite(t).all()) for t in adapter_tensors(out).values())


@pytest.mark.parametrize("args, needle", [
    (["demo", "--steps", "0"], "argument --steps: '0' is 0; allowed: >= 1"),
    (["eval", "--max-image-size", "40", "--model", "tiny", "--shards", "x", "--out", "o"],
     "argument --max-image-size: '40' is 40; allowed: a multiple of 16"),
    (["bench", "--guidance", "nan"], "argument --guidance: 'nan' is nan; it must be a finite number >= 0"),
])
def test_a_bad_number_option_names_the_option_and_its_range(args, needle):
    from tests.helpers import run_cli

    proc = run_cli(*args)
    assert proc.returncode == 2 and needle in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
