import json

import pytest
from safetensors.torch import load_file

from omnideft.adapters.registry import METHODS
from omnideft.errors import UserError
from omnideft.shapes.shards import write_task_shards
from omnideft.train.loop import train
from omnideft.train.recipe import load_recipe
from tests.helpers import assert_one_line_error, assert_stock_peft_loaded, run_cli


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_task_shards(tmp_path_factory.mktemp("shards"), ["fill"], n_samples=12, size=32, seed=0, shard_size=6,
                             n_examples=1)


def _recipe(shards, out, *extra):
    return load_recipe(None, ["model.name=tiny", f"data.shards=[{shards}]", "data.max_image_size=32",
                              "adapter.rank=4", "train.max_steps=6", "train.batch_size=2", "train.lr=1e-2",
                              "train.checkpoint_every=3", f"output.dir={out}", *extra])


def test_train_writes_contract_2_adapter_and_tiny_base(shards, tmp_path):
    adapter = train(_recipe(shards, tmp_path), progress=False)
    assert adapter == tmp_path / "adapter"
    for f in ("adapter_config.json", "adapter_model.safetensors", "omnideft.json", "recipe.yaml"):
        assert (adapter / f).is_file(), f
    meta = json.loads((adapter / "omnideft.json").read_text())
    assert meta["step"] == 6 and meta["base"]["fingerprint"].startswith("sha256:")
    assert meta["recipe"]["adapter"]["rank"] == 4
    tensors = load_file(adapter / "adapter_model.safetensors")
    assert any(k.endswith("deft_P") for k in tensors) and any(k.endswith("deft_R") for k in tensors)
    for sub in ("transformer", "vae", "tokenizer", "scheduler"):
        assert (tmp_path / "base" / sub).is_dir()
    assert (tmp_path / "checkpoints" / "step-0000003" / "adapter_model.safetensors").is_file()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 6 and all(json.loads(x)["loss"] > 0 for x in lines)


def test_p_and_r_learning_rates(shards, tmp_path):
    from omnideft.adapters.apply import AdapterSpec, apply_adapter, param_groups
    from omnideft.families.omnigen.model import load_omnigen
    from omnideft.families.omnigen.targets import target_modules as omnigen_targets

    model = apply_adapter(load_omnigen("tiny").transformer, AdapterSpec(rank=4, p_lr_ratio=0.25),
                          targets=omnigen_targets)
    groups = {g["name"]: g for g in param_groups(model, AdapterSpec(rank=4, p_lr_ratio=0.25), lr=1e-3)}
    assert groups["P"]["lr"] == pytest.approx(2.5e-4) and groups["R"]["lr"] == pytest.approx(1e-3)
    assert all(p.requires_grad for g in groups.values() for p in g["params"])


def test_same_seed_same_adapter(shards, tmp_path):
    a = train(_recipe(shards, tmp_path / "a", "train.checkpoint_every=0"), progress=False)
    b = train(_recipe(shards, tmp_path / "b", "train.checkpoint_every=0"), progress=False)
    ta, tb = load_file(a / "adapter_model.safetensors"), load_file(b / "adapter_model.safetensors")
    assert ta.keys() == tb.keys() and all((ta[k] == tb[k]).all() for k in ta)


def test_bad_glob_fails_before_model_load(tmp_path):
    with pytest.raises(UserError, match="matches no .tar"):
        train(load_recipe(None, ["model.name=does/not-exist", f"data.shards=[{tmp_path}/nothing-*.tar]"]))


def test_recipe_errors_name_the_key(tmp_path):
    bad = tmp_path / "r.yaml"
    bad.write_text("train:\n  max_stepz: 3\n")
    assert_one_line_error(run_cli("train", str(bad)), "train.max_stepz", "allowed")
    bad.write_text("train:\n  max_steps: three\n")
    assert_one_line_error(run_cli("train", str(bad)), "train.max_steps", "int")
    bad.write_text("train:\n  max_steps: 3\n")
    assert_one_line_error(run_cli("train", str(bad), "adapter.method=dora"), "adapter.method", "lora, deft, para")


def test_offline_unknown_model_is_one_line(shards, tmp_path):
    proc = run_cli("train", f"data.shards=[{shards}]", "model.name=someone/missing-model", f"output.dir={tmp_path}")
    assert_one_line_error(proc, "someone/missing-model", "network")


def test_corrupt_member_is_skipped_and_counted(shards, tmp_path):
    import shutil
    import tarfile

    src = sorted(shards.glob("*.tar"))[0]
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    with tarfile.open(src) as tin, tarfile.open(bad_dir / "bad-000000.tar", "w") as tout:
        for m in tin.getmembers():
            data = tin.extractfile(m).read()
            if m.name.endswith(".out.png") and "000001" in m.name:
                data = b"not a png"
            m.size = len(data)
            import io

            tout.addfile(m, io.BytesIO(data))
    shutil.copy(sorted(shards.glob("*.tar"))[1], bad_dir / "bad-000001.tar")
    train(_recipe(str(bad_dir), tmp_path / "run", "train.checkpoint_every=0"),
          progress=False)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert sum(summary["skipped_samples"].values()) >= 1


def test_cli_train_under_accelerate_launch(shards, tmp_path):
    import subprocess
    import sys

    from tests.helpers import REPO

    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--cpu", "-m", "omnideft", "train",
           "--no-progress", "model.name=tiny", f"data.shards=[{shards}]", "data.max_image_size=32",
           "adapter.rank=4", "train.max_steps=3", "train.checkpoint_every=0", f"output.dir={tmp_path}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO,
                          env={**__import__("os").environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()


def _launch_config_with_free_port(tmp_path):
    """The shipped 2-process launch file, on a port that is free right now (CI machines run other jobs)."""
    import yaml

    from tests.helpers import REPO, free_port

    cfg = yaml.safe_load((REPO / "recipes" / "launch" / "cpu_2proc_ddp.yaml").read_text())
    cfg["main_process_port"] = free_port()
    path = tmp_path / "launch.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_launch_config_relaunches_two_ddp_processes_with_validation(shards, metric_models, tmp_path):
    """Two DDP processes with validation renders and the forgetting gauge (its limit met: every rank gathers the
    adapter it keeps)."""
    import yaml
    from PIL import Image


    cond = tmp_path / "cond.png"
    Image.new("RGB", (40, 40), (200, 30, 30)).save(cond)
    recipe = {
        "model": {"name": "tiny"}, "adapter": {"rank": 4},
        "data": {"shards": [str(shards)], "max_image_size": 32},
        "train": {"max_steps": 4, "batch_size": 2, "checkpoint_every": 0, "log_every": 2},
        "validation": {"every": 2, "steps": 2, "prompts": [
            {"prompt": "a red circle"},
            {"prompt": "like this <img><|image_1|></img>", "images": [str(cond)], "height": 32, "width": 48}]},
        "retention": {"enabled": True, "probes": "generic", "seeds": [0], "max_drift": 1.0,
                      "dinov2_model": str(metric_models["dinov2"])},
        "launch": {"config": str(_launch_config_with_free_port(tmp_path))},
        "output": {"dir": str(tmp_path / "run")},
    }
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    proc = run_cli("train", str(path), "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "step 4/4 loss" in proc.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["world_size"] == 2
    for step in (2, 4):
        assert Image.open(tmp_path / "run" / "validation" / f"step-{step:07d}" / "01.png").size == (48, 32)
        assert (tmp_path / "run" / "validation" / f"step-{step:07d}.png").is_file()
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "retention/drift" in r] == [2, 4]
    kept = json.loads((tmp_path / "run" / "retention" / "within-limit" / "omnideft.json").read_text())
    assert kept["step"] == 4


def test_validation_prompt_errors_fail_before_training(shards, tmp_path):
    proc = run_cli("train", "model.name=tiny", f"data.shards=[{shards}]", f"output.dir={tmp_path}",
                   "validation.prompts=[{prompt: 'x <img><|image_1|></img>', images: [missing.png]}]")
    assert_one_line_error(proc, "missing.png")
    assert not (tmp_path / "adapter").exists()


def test_condition_dropout_replaces_instruction_and_images(tiny, shards):
    from omnideft.eval.denoising import load_examples
    from omnideft.families.omnigen.batch import BatchBuilder
    from omnideft.families.omnigen.processor import CFG_PROMPT, OmniGenProcessor

    examples = load_examples([str(shards)], 4)
    proc = OmniGenProcessor(tiny.tokenizer, max_image_size=32)
    dropped = BatchBuilder(proc, condition_dropout=1.0, seed=0)(examples)
    kept = BatchBuilder(proc, condition_dropout=0.0, seed=0)(examples)
    cfg_ids = proc.encode(CFG_PROMPT).input_ids
    assert dropped["input_pixel_values"] == [] and dropped["input_image_sizes"] == {}
    assert all(row[-len(cfg_ids):].tolist() == cfg_ids for row in dropped["input_ids"])
    assert len(kept["input_pixel_values"]) == sum(len(e.inputs) for e in examples)


def test_bf16_autocast_with_gradient_checkpointing_keeps_fp32_adapter(shards, tmp_path):
    from safetensors.torch import load_file

    adapter = train(_recipe(shards, tmp_path, "train.mixed_precision=bf16", "train.gradient_checkpointing=true",
                            "train.checkpoint_every=0"), progress=False)
    tensors = load_file(adapter / "adapter_model.safetensors")
    assert {t.dtype for t in tensors.values()} == {__import__("torch").float32}
    losses = [json.loads(x)["loss"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 6 and all(0 < v < 10 for v in losses)


def test_nan_loss_skips_the_step_then_stops_after_max_bad_steps(shards, tmp_path):
    from omnideft.train.faults import Faults

    nan_at_3 = Faults.parse("nan-loss@3")
    adapter = train(_recipe(shards, tmp_path / "a", "train.checkpoint_every=0"), progress=False, faults=nan_at_3)
    records = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [r["skipped_step"] for r in records] == [False, False, True, False, False, False]
    assert records[2]["loss"] is None and records[3]["loss"] > 0
    assert all(t.isfinite().all() for t in load_file(adapter / "adapter_model.safetensors").values())
    with pytest.raises(UserError, match="1 steps in a row had a non-finite loss"):
        train(_recipe(shards, tmp_path / "b", "train.checkpoint_every=0", "train.max_bad_steps=1"), progress=False,
              faults=nan_at_3)


def test_ema_adapter_beside_the_adapter_and_tensorboard_scalars(shards, tmp_path):
    from peft import PeftModel
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from omnideft.families.omnigen.model import load_omnigen

    adapter = train(_recipe(shards, tmp_path, "train.ema_decay=0.5", "train.log_every=3"), progress=False)
    final = load_file(adapter / "adapter_model.safetensors")
    ema = load_file(adapter / "ema" / "adapter_model.safetensors")
    assert final.keys() == ema.keys() and any(not (final[k] == ema[k]).all() for k in final)
    assert_stock_peft_loaded(PeftModel.from_pretrained(load_omnigen(str(tmp_path / "base")).transformer,
                                                       str(adapter / "ema")), adapter / "ema")
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/grad_norm", "train/samples_per_s"} <= tags
    assert any(t.startswith("task_loss/") for t in tags)
    assert len(events.Scalars("train/loss")) == 6
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["realised_proportions"] == {str(shards): 1.0}


def test_wandb_without_the_package_is_one_line(shards, tmp_path):
    # wandb is not a dependency; without it the error must say so instead of a traceback. A `wandb` module that fails
    # to import stands in for "not installed", also on machines that have it.
    from tests.helpers import REPO

    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "wandb.py").write_text("raise ImportError('wandb hidden by the test')\n")
    proc = run_cli("train", "model.name=tiny", f"data.shards=[{shards}]", "data.max_image_size=32",
                   "train.max_steps=1", "output.wandb_project=x", f"output.dir={tmp_path / 'run'}",
                   env={"PYTHONPATH": f"{hide}{__import__('os').pathsep}{REPO}"})
    assert_one_line_error(proc, "wandb")


@pytest.mark.parametrize("method", [f"adapter.method={name}" for name in METHODS] + ["adapter.projector=nmf"])
def test_every_method_trains_saves_loads_and_resumes_exactly(shards, tmp_path, method):
    """Every registered method (SODA with its Stiefel optimizer, methods outside PEFT, a non-PEFT projector) goes
    through the same trainer: the adapter reloads onto the base, and stopping at step 2 then resuming gives the same
    adapter."""
    from omnideft.adapters import load_adapter
    from omnideft.families.omnigen.model import load_omnigen

    full = train(_recipe(shards, tmp_path / "full", method, "train.checkpoint_every=2"), progress=False)
    train(_recipe(shards, tmp_path / "cut", method, "train.checkpoint_every=2", "train.max_steps=2"), progress=False)
    resumed = train(_recipe(shards, tmp_path / "cut", method, "train.checkpoint_every=2"), progress=False,
                    resume="latest")
    assert json.loads((tmp_path / "cut" / "summary.json").read_text())["resumed_from"] == 2
    a, b = load_file(full / "adapter_model.safetensors"), load_file(resumed / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    load_adapter(load_omnigen(str(tmp_path / "full" / "base")).transformer, full)


def test_a_file_that_is_not_a_tar_is_one_line_naming_it(shards, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(shards, bad)
    (bad / "zz-broken.tar").write_bytes(b"this is not a tar file" * 40)
    proc = run_cli("train", "model.name=tiny", f"data.shards=[{bad}]", f"output.dir={tmp_path / 'run'}")
    assert_one_line_error(proc, "zz-broken.tar", "not a readable tar")
    assert not (tmp_path / "run").exists()
