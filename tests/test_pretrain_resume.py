"""`omnideft pretrain` resumes exactly: a run stopped by a signal (with its checkpoint) or killed after a periodic
checkpoint, then continued with --resume, writes the same weight files and losses as the run never interrupted; a
stop is one line with the shell's exit code; an unfinished folder is not restarted by accident."""

import json
import os
import signal

import pytest

from omnideft.families.omnigen.pretrain import load_pretrain_recipe, pretrain
from omnideft.families.omnigen.pretrain.stop import PretrainingStopped
from omnideft.families.omnigen.pretrain.stream import ShapeTaskStream
from tests.helpers import REPO, assert_one_line_error, run_cli_here

RECIPE = str(REPO / "recipes" / "pretrain" / "small_base.yaml")
TINY = ["train.steps=6", "train.batch_size=2", "train.threads=1", "train.checkpoint_every=2", "vae.channels=4",
        "vae.fit_steps=2", "vae.fit_images=8", "model.hidden_size=32", "model.num_layers=1",
        "model.intermediate_size=64", "model.time_step_dim=32", "heldout.queries=0"]


def record(folder) -> dict:
    return json.loads((folder / "pretrain.json").read_text())


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    return record(pretrain(load_pretrain_recipe(RECIPE, TINY), tmp_path_factory.mktemp("ref") / "out", progress=False))


def on_batch(monkeypatch, call: int, action) -> None:
    """Run `action` when the task stream draws its `call`-th batch (1-based): a signal or a crash mid-run."""
    original, calls = ShapeTaskStream.batch, []

    def batch(self, n):
        calls.append(n)
        if len(calls) == call:
            action()
        return original(self, n)
    monkeypatch.setattr(ShapeTaskStream, "batch", batch)


def test_a_signal_stops_with_a_checkpoint_and_resume_is_bit_identical(tmp_path, monkeypatch, uninterrupted):
    recipe, out = load_pretrain_recipe(RECIPE, TINY), tmp_path / "out"
    on_batch(monkeypatch, 3, lambda: os.kill(os.getpid(), signal.SIGINT))  # Ctrl-C during step 3
    with pytest.raises(PretrainingStopped) as stopped:
        pretrain(recipe, out, progress=False)
    assert (stopped.value.step, stopped.value.exit_code) == (3, 130)
    assert json.loads((out / "checkpoint" / "state.json").read_text())["step"] == 3
    assert not (out / "pretrain.json").exists()
    monkeypatch.undo()

    pretrain(recipe, out, progress=False, resume=True)
    resumed = record(out)
    assert resumed["sha256"] == uninterrupted["sha256"]
    assert resumed["loss"] == uninterrupted["loss"] and len(resumed["loss"]) == 6
    assert resumed["resumed_at_steps"] == [3]
    assert not (out / "checkpoint").exists()  # the finished model replaced the whole folder


def test_a_crash_resumes_from_the_last_periodic_checkpoint_bit_identically(tmp_path, monkeypatch, uninterrupted):
    recipe, out = load_pretrain_recipe(RECIPE, TINY), tmp_path / "out"

    def crash():
        raise RuntimeError("the machine went away")
    on_batch(monkeypatch, 5, crash)  # after the checkpoint of step 4, during step 5
    with pytest.raises(RuntimeError):
        pretrain(recipe, out, progress=False)
    monkeypatch.undo()
    assert json.loads((out / "checkpoint" / "state.json").read_text())["step"] == 4

    pretrain(recipe, out, progress=False, resume=True)
    assert record(out)["sha256"] == uninterrupted["sha256"] and record(out)["loss"] == uninterrupted["loss"]


def test_sigterm_is_one_line_and_exit_143_and_the_folder_waits_for_resume(tmp_path, monkeypatch):
    out = str(tmp_path / "out")
    on_batch(monkeypatch, 2, lambda: os.kill(os.getpid(), signal.SIGTERM))
    proc = run_cli_here("pretrain", RECIPE, *TINY, "--no-progress", "--out", out)
    monkeypatch.undo()
    assert proc.returncode == 143, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "stopped by SIGTERM after step 2" in lines[0] and "--resume" in lines[0], proc.stderr

    assert_one_line_error(run_cli_here("pretrain", RECIPE, *TINY, "--no-progress", "--out", out),
                          out, "unfinished pretraining", "step 2", "--resume")
    assert_one_line_error(run_cli_here("pretrain", RECIPE, *TINY, "train.lr=0.1", "--resume", "--no-progress",
                                       "--out", out), "recipe differs", "train.lr")
    assert run_cli_here("pretrain", RECIPE, *TINY, "--resume", "--no-progress", "--out", out).returncode == 0
    assert record(tmp_path / "out")["resumed_at_steps"] == [2]
