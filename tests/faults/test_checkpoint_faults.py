"""Damaged, unreadable and partly written checkpoints: resume verifies every file's sha256 and every tensor's
finiteness, falls back to the newest good checkpoint, and stops with one line when none is good."""

import json

import pytest
import torch
from safetensors.torch import save_file

from omnideft.train.checkpoint import prune, verify_checkpoint
from tests.faults.conftest import (
    adapter_tensors,
    copy_run,
    flip_tensor_bytes,
    tmp_leftovers,
    train_cli,
)
from tests.helpers import assert_one_line_error


def test_flipped_optimizer_bytes_fall_back_to_the_newest_good_checkpoint(fault_shards, finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path / "run")
    flip_tensor_bytes(run / "checkpoints" / "step-0000006" / "trainer" / "optimizer.safetensors")
    proc = train_cli(fault_shards, run, "--resume", "latest")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "skipping damaged checkpoint" in proc.stderr and "step-0000006" in proc.stderr
    assert "trainer/optimizer.safetensors is damaged" in proc.stderr
    assert "step-0000004 (step 4)" in proc.stderr
    a, b = adapter_tensors(run), adapter_tensors(finished_run)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # steps 5-6 redone exactly


def test_flipped_adapter_bytes_in_the_named_checkpoint_stop_with_one_line(fault_shards, finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path / "run")
    checkpoint = run / "checkpoints" / "step-0000004"
    flip_tensor_bytes(checkpoint / "trainer" / "params.safetensors")
    before = (run / "adapter" / "adapter_model.safetensors").read_bytes()
    proc = train_cli(fault_shards, run, "--resume", str(checkpoint))
    assert_one_line_error(proc, "damaged checkpoint", "trainer/params.safetensors", "sha256")
    assert (run / "adapter" / "adapter_model.safetensors").read_bytes() == before


def test_every_checkpoint_damaged_is_one_line(fault_shards, finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path / "run")
    for step in (2, 4, 6):
        flip_tensor_bytes(run / "checkpoints" / f"step-{step:07d}" / "adapter_model.safetensors")
    proc = train_cli(fault_shards, run, "--resume", "latest")
    assert_one_line_error(proc, "no usable checkpoint", "step-0000002: adapter_model.safetensors is damaged")
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-0000002", "step-0000004",
                                                                      "step-0000006"]


@pytest.mark.parametrize("damage, needle", [
    (lambda c: (c / "trainer" / "rank-0.json").unlink(), "trainer/rank-0.json is missing"),
    (lambda c: (c / "trainer" / "state.json").write_bytes(b"\xff\xfe{"), "cannot read trainer/state.json"),
    (lambda c: (c / "recipe.yaml").write_text("model: [unclosed"), "recipe.yaml is damaged"),
])
def test_a_missing_or_unreadable_checkpoint_file_is_one_line(fault_shards, finished_run, tmp_path, damage, needle):
    run = copy_run(finished_run, tmp_path / "run")
    checkpoint = run / "checkpoints" / "step-0000006"
    damage(checkpoint)
    proc = train_cli(fault_shards, run, "--resume", str(checkpoint))
    assert_one_line_error(proc, str(checkpoint), needle)


def test_pruning_never_deletes_the_last_verified_checkpoint(finished_run, tmp_path):
    root = copy_run(finished_run, tmp_path / "run") / "checkpoints"
    for step in (4, 6):  # the two newest go bad (bit rot, or a run that diverged after step 2)
        flip_tensor_bytes(root / f"step-{step:07d}" / "trainer" / "params.safetensors")
    prune(root, keep=1)
    assert sorted(p.name for p in root.iterdir()) == ["step-0000002", "step-0000006"]
    assert verify_checkpoint(root / "step-0000002") is None


def test_a_non_finite_tensor_fails_verification_even_without_recorded_sums(finished_run, tmp_path):
    """Checkpoints written before the sha256 record existed are still checked for finite tensors."""
    checkpoint = copy_run(finished_run, tmp_path / "run") / "checkpoints" / "step-0000004"
    state_path = checkpoint / "trainer" / "state.json"
    state = json.loads(state_path.read_text())
    state.pop("files")
    state_path.write_text(json.dumps(state))
    assert verify_checkpoint(checkpoint) is None
    params = checkpoint / "trainer" / "params.safetensors"
    from safetensors.torch import load_file

    tensors = load_file(params)
    name = sorted(tensors)[0]
    tensors[name][0] = float("nan")
    save_file(tensors, params)
    assert verify_checkpoint(checkpoint) == f"trainer/params.safetensors: tensor {name} is not finite"


def test_disk_full_while_checkpointing_is_one_line_and_keeps_the_previous_checkpoint(fault_shards, finished_run,
                                                                                       tmp_path):
    run = tmp_path / "run"
    proc = train_cli(fault_shards, run, env={"OMNIDEFT_FAULT": "disk-full-in-checkpoint@4"})
    assert_one_line_error(proc, str(run / "checkpoints" / "step-0000004"), "No space left on device",
                          "it needs more than", "free there")
    assert tmp_leftovers(run) == []
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step-0000002"]
    assert verify_checkpoint(run / "checkpoints" / "step-0000002") is None
    assert not (run / "adapter").exists() and not (run / ".omnideft.lock").exists()
    proc = train_cli(fault_shards, run, "--resume", "latest")
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = adapter_tensors(run), adapter_tensors(finished_run)
    assert all(torch.equal(a[k], b[k]) for k in b)
