"""The real engines on CPU (gloo, DS_ACCELERATOR=cpu): DeepSpeed ZeRO-2/3 in 2 processes, a 2-node rendezvous on
localhost, exact resume after kill -9 (1 and 2 processes), a crash while writing a checkpoint, SIGTERM."""

import json
import os
import subprocess
import sys

import pytest
import yaml
from safetensors.torch import load_file

from omnideft.shapes.shards import write_task_shards
from tests.helpers import REPO, assert_one_line_error, assert_stock_peft_loaded, free_port, run_cli

pytestmark = pytest.mark.slow
ENV = {"DS_ACCELERATOR": "cpu"}
BASE = ["--no-progress", "model.name=tiny", "data.max_image_size=32", "data.num_workers=1",  # a loader worker
        "adapter.rank=4", "train.batch_size=2",
        "train.lr=1e-2", "train.warmup_steps=3", "train.max_steps=8", "train.checkpoint_every=2",
        "train.keep_checkpoints=2"]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_task_shards(tmp_path_factory.mktemp("eng"), ["fill"], n_samples=12, size=32, seed=0, shard_size=6,
                             n_examples=1)


def _launch(tmp_path, name: str, **ds_changes) -> str:
    """A shipped accelerate launch file on a free port; DeepSpeed JSON values overridden when given."""
    cfg = yaml.safe_load((REPO / "recipes" / "launch" / name).read_text())
    cfg["main_process_port"] = free_port()
    if ds_changes:
        ds_file = REPO / cfg["deepspeed_config"]["deepspeed_config_file"]
        ds = json.loads(ds_file.read_text())
        ds["zero_optimization"].update(ds_changes)
        path = tmp_path / ds_file.name
        path.write_text(json.dumps(ds))
        cfg["deepspeed_config"]["deepspeed_config_file"] = str(path)
    path = tmp_path / f"launch-{name}"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def _train(shards, out, *extra, env=None):
    proc = run_cli("train", *BASE, f"data.shards=[{shards}]", f"output.dir={out}", *extra, env={**ENV, **(env or {})})
    return proc


def _adapter(out):
    return load_file(out / "adapter" / "adapter_model.safetensors")


def _max_diff(a, b) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


def _relative_difference(a, b) -> float:
    """||a - b|| / ||b|| over every tensor of two adapters: how far apart two engines' adapters are as a whole. The
    bound between engines, rather than the largest single difference: Adam's first steps move a value by ~lr
    whatever the size of its gradient, so a value whose gradient is near 0 steps by the sign of the reduction-order
    noise, up to twice the learning rate per step (the largest difference has a heavy tail: measured 4e-4 on
    AVX-512 kernels, 1.8e-3 on AVX2 for the same runs, while this measure stays within 3e-4 to 5e-4)."""
    assert a.keys() == b.keys()
    diff = sum(float((a[k].double() - b[k].double()).square().sum()) for k in a)
    return (diff / sum(float(b[k].double().square().sum()) for k in b)) ** 0.5


@pytest.fixture(scope="module")
def zero2_run(shards, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("z2")
    proc = _train(shards, tmp / "run", f"launch.config={_launch(tmp, 'cpu_2proc_zero2.yaml')}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp / "run"


def _check_distributed_adapter(run, engine):
    summary = json.loads((run / "summary.json").read_text())
    assert summary["engine"] == engine and summary["world_size"] == 2
    digests = summary["adapter_sha256_per_rank"]
    assert len(digests) == 2 and digests[0] == digests[1]  # every rank holds the same adapter
    total, held = summary["adapter_numel"], summary["adapter_numel_held_per_rank"]
    if engine == "zero3":  # partitioned: each rank stored about half (DeepSpeed pads each tensor to the world size)
        assert all(n < 0.55 * total for n in held) and total <= sum(held) <= total + 2 * len(_adapter(run)), held
    else:  # ZeRO-1/2 partition optimizer state and gradients, not the parameters
        assert held == [total, total]
    tensors = _adapter(run)
    assert tensors and all(t.numel() > 0 for t in tensors.values())
    assert summary["adapter_bytes"] > 10_000
    # stock PEFT loads it onto the saved base
    from peft import PeftModel

    from omnideft.families.omnigen.model import load_omnigen

    base = load_omnigen(str(run / "base"))
    model = PeftModel.from_pretrained(base.transformer, str(run / "adapter"))
    assert_stock_peft_loaded(model, run / "adapter")  # every tensor, by name and value (not just a count)
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert ckpts == ["step-0000006", "step-0000008"]  # keep_checkpoints=2 pruned steps 2 and 4
    return tensors


def test_zero2_two_processes(zero2_run):
    _check_distributed_adapter(zero2_run, "zero2")


@pytest.mark.numeric
def test_zero3_two_processes_gathers_a_full_adapter(shards, zero2_run, tmp_path):
    # persistence threshold 0: every parameter, adapters included, is partitioned across the 2 ranks
    launch = _launch(tmp_path, "cpu_2proc_zero3.yaml", stage3_param_persistence_threshold=0)
    proc = _train(shards, tmp_path / "run", f"launch.config={launch}", "validation.every=4", "validation.steps=2",
                  "validation.prompts=[{prompt: 'a red circle', height: 32, width: 32}]")
    assert proc.returncode == 0, proc.stderr[-3000:]
    tensors = _check_distributed_adapter(tmp_path / "run", "zero3")
    # validation renders under ZeRO-3: every rank runs the sampler (sharded weights), rank 0 writes
    for step in (4, 8):
        assert (tmp_path / "run" / "validation" / f"step-{step:07d}" / "00.png").is_file()
    # same data, noise and math as ZeRO-2; only fp32 rounding differs (ZeRO-3 partitions weights, so the layers
    # take PEFT's forward instead of the fused one), so the gathered adapter is the trained one. Robust to the CPU
    # kernel family, thread count and reduction order: measured relative difference 4.3e-5 (AVX-512, 1 and 2
    # threads), 4.0e-5 and 4.2e-5 (AVX2 ATen/oneDNN/MKL, 1 and 2 threads); the bound is ~5x that.
    spread = _relative_difference(tensors, _adapter(zero2_run))
    assert spread < 2e-4, f"ZeRO-3 vs ZeRO-2: relative difference {spread:.2e}"


def test_kill_9_then_resume_latest_two_processes_is_bit_identical(shards, zero2_run, tmp_path):
    launch = _launch(tmp_path, "cpu_2proc_zero2.yaml")
    killed = _train(shards, tmp_path / "run", f"launch.config={launch}", env={"OMNIDEFT_FAULT": "kill@5"})
    assert killed.returncode != 0
    assert not (tmp_path / "run" / "adapter").exists()
    proc = _train(shards, tmp_path / "run", f"launch.config={launch}", "--resume", "latest")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "step-0000004 (step 4)" in proc.stderr
    assert _max_diff(_adapter(tmp_path / "run"), _adapter(zero2_run)) == 0.0
    losses = [json.loads(x)["loss"] for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    reference = [json.loads(x)["loss"] for x in (zero2_run / "metrics.jsonl").read_text().splitlines()]
    assert losses == reference


def test_two_nodes_on_localhost_torchrun_rendezvous(shards, tmp_path):
    """Two launchers (one per 'node'), nnodes=2, c10d rendezvous on 127.0.0.1, DeepSpeed ZeRO-2 from the recipe."""
    port = free_port()
    env = {**os.environ, **ENV, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1",
           "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=omnideft-test",
           "-m", "omnideft", "train", *BASE, f"data.shards=[{shards}]", f"output.dir={tmp_path / 'run'}",
           "launch.deepspeed=recipes/launch/ds_zero2.json", "train.max_steps=4"]
    nodes = [subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [n.communicate(timeout=600) for n in nodes]
    for n, (_, err) in zip(nodes, results):
        assert n.returncode == 0, err[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["engine"] == "zero2"
    assert len(set(summary["adapter_sha256_per_rank"])) == 1


@pytest.fixture(scope="module")
def single_run(shards, tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "run"
    proc = _train(shards, out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_kill_9_then_resume_latest_single_process_is_bit_identical(shards, single_run, tmp_path):
    out = tmp_path / "run"
    assert _train(shards, out, env={"OMNIDEFT_FAULT": "kill@5"}).returncode == -9
    proc = _train(shards, out, "--resume", "latest")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _max_diff(_adapter(out), _adapter(single_run)) == 0.0


def test_crash_while_writing_a_checkpoint_keeps_the_previous_one(shards, single_run, tmp_path):
    out = tmp_path / "run"
    assert _train(shards, out, env={"OMNIDEFT_FAULT": "kill-in-checkpoint@4"}).returncode == -9
    ckpts = out / "checkpoints"
    assert (ckpts / ".tmp-step-0000004").is_dir() and not (ckpts / "step-0000004").exists()
    proc = _train(shards, out, "--resume", "latest")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "step-0000002 (step 2)" in proc.stderr  # the partial step-4 checkpoint was ignored
    assert not (ckpts / ".tmp-step-0000004").exists()
    assert _max_diff(_adapter(out), _adapter(single_run)) == 0.0


def test_sigterm_checkpoints_and_exits_then_resumes(shards, single_run, tmp_path):
    out = tmp_path / "run"
    proc = _train(shards, out, "train.checkpoint_every=0", env={"OMNIDEFT_FAULT": "sigterm@3"})
    assert proc.returncode == 75, proc.stderr[-2000:]
    assert "stopped by SIGTERM at step 4" in proc.stderr and "--resume latest" in proc.stderr
    assert (out / "checkpoints" / "step-0000004" / "trainer" / "state.json").is_file()
    proc = _train(shards, out, "train.checkpoint_every=0", "--resume", "latest")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _max_diff(_adapter(out), _adapter(single_run)) == 0.0


def test_resume_refuses_another_recipe_and_keeps_checkpoints(shards, single_run):
    before = sorted(p.name for p in (single_run / "checkpoints").iterdir())
    proc = _train(shards, single_run, "train.lr=5e-3", "adapter.rank=8", "--resume", "latest")
    assert_one_line_error(proc, "different recipe", "adapter.rank", "train.lr")
    assert sorted(p.name for p in (single_run / "checkpoints").iterdir()) == before


def test_resume_latest_without_checkpoint_starts_at_step_0(shards, tmp_path):
    proc = _train(shards, tmp_path / "run", "train.max_steps=2", "--resume", "latest")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "no complete checkpoint" in proc.stderr and "starting from step 0" in proc.stderr


def test_deepspeed_batch_size_that_does_not_match_the_processes(shards, tmp_path):
    ds = json.loads((REPO / "recipes" / "launch" / "ds_zero2.json").read_text())
    ds["train_batch_size"] = 6
    path = tmp_path / "ds.json"
    path.write_text(json.dumps(ds))
    proc = _train(shards, tmp_path / "run", f"launch.deepspeed={path}")
    assert_one_line_error(proc, str(path), "train_batch_size 6", "1 processes")


@pytest.mark.parametrize("changes, needle", [
    ({"num_processes": 3, "num_machines": 2}, "not a multiple of num_machines 2"),
    ({"distributed_type": "NO"}, "needs a distributed_type"),
    ({"deepspeed_config": {"deepspeed_config_file": "nowhere/ds.json"}}, "nowhere/ds.json not found"),
])
def test_launch_config_that_does_not_fit_is_refused_before_launch(shards, tmp_path, changes, needle):
    cfg = yaml.safe_load((REPO / "recipes" / "launch" / "cpu_2proc_zero2.yaml").read_text())
    cfg.update(changes)
    path = tmp_path / "launch.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = _train(shards, tmp_path / "run", f"launch.config={path}")
    assert_one_line_error(proc, str(path), needle)
    assert not (tmp_path / "run").exists()


def test_resume_refuses_a_checkpoint_of_another_base(shards, single_run, tmp_path):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(single_run, out)
    latest = sorted((out / "checkpoints").iterdir())[-1]
    meta = json.loads((latest / "omnideft.json").read_text())
    meta["base"]["fingerprint"] = "sha256:0123456789abcdef"
    (latest / "omnideft.json").write_text(json.dumps(meta))
    # a checkpoint genuinely made on another base: its recorded sums match its files (else it is "damaged")
    import hashlib

    state = json.loads((latest / "trainer" / "state.json").read_text())
    state["files"]["omnideft.json"] = hashlib.sha256((latest / "omnideft.json").read_bytes()).hexdigest()
    (latest / "trainer" / "state.json").write_text(json.dumps(state))
    proc = _train(shards, out, "--resume", "latest")
    assert_one_line_error(proc, str(latest), "another base model")
    assert (latest / "trainer" / "state.json").is_file()
