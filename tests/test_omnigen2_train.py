"""The trainer on the tiny OmniGen2 (`model.family: omnigen2`): the same shards, recipes and adapter folders as v1;
stopping then resuming gives the adapter of an uninterrupted run, bit for bit (after kill -9, and under DeepSpeed
ZeRO-2 in two processes; in process: tests/test_families.py); the family's one-line errors."""

import hashlib
import json

import pytest
from safetensors.torch import load_file

from omnideft.errors import UserError
from omnideft.shapes.shards import write_task_shards
from omnideft.train.loop import train
from omnideft.train.recipe import load_recipe
from tests.helpers import assert_one_line_error, run_cli

OG2 = ["model.name=tiny", "model.family=omnigen2", "data.max_image_size=32", "adapter.rank=4",
       "train.batch_size=2", "train.lr=1e-2", "train.max_steps=4", "train.checkpoint_every=2"]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    # "fill" samples carry an in-context example: input images become OmniGen2 reference images
    return write_task_shards(tmp_path_factory.mktemp("og2shards"), ["fill"], n_samples=8, size=32, seed=0,
                             shard_size=4, n_examples=1)


def _recipe(shards, out, *extra):
    return load_recipe(None, [*OG2, f"data.shards=[{shards}]", f"output.dir={out}", *extra])


def _same(a, b) -> bool:
    ta, tb = load_file(a / "adapter_model.safetensors"), load_file(b / "adapter_model.safetensors")
    return ta.keys() == tb.keys() and all((ta[k] == tb[k]).all() for k in ta)


@pytest.fixture(scope="module")
def full(shards, tmp_path_factory):
    return train(_recipe(shards, tmp_path_factory.mktemp("og2full") / "run"), progress=False)


def test_trains_deft_on_every_linear_and_saves_the_published_base(full):
    run = full.parent
    meta = json.loads((full / "omnideft.json").read_text())
    assert meta["step"] == 4 and meta["recipe"]["model"]["family"] == "omnigen2"
    assert meta["base"]["family"] == "omnigen2"
    state = json.loads((run / "checkpoints" / "step-0000002" / "trainer" / "state.json").read_text())
    assert state["family"] == "omnigen2"  # a checkpoint records the family too (resume refuses another)
    tensors = load_file(full / "adapter_model.safetensors")
    assert len({k.rsplit(".", 1)[0] for k in tensors if k.endswith("deft_R")}) == 69  # every linear
    index = json.loads((run / "base" / "model_index.json").read_text())
    assert index["_class_name"] == "OmniGen2Pipeline"
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2, 3, 4] and all(x["loss"] > 0 for x in lines)
    from omnideft.adapters import load_adapter
    from omnideft.families.omnigen2.model.folder import load_omnigen2

    load_adapter(load_omnigen2(str(run / "base")).transformer, full)  # the adapter reloads on the saved base


def test_family_is_read_from_the_folder_and_a_mismatch_is_one_line(shards, full, tmp_path):
    base = str(full.parent / "base")
    recipe = _recipe(shards, tmp_path / "a", f"model.name={base}", "model.family=auto", "train.max_steps=1",
                     "train.checkpoint_every=0")
    adapter = train(recipe, progress=False)
    assert json.loads((adapter / "omnideft.json").read_text())["base"]["family"] == "omnigen2"
    with pytest.raises(UserError, match="is an OmniGen2 folder, but the family asked for is OmniGen \\(v1\\)"):
        train(_recipe(shards, tmp_path / "b", f"model.name={base}", "model.family=omnigen"), progress=False)


def test_shipped_recipe_with_bf16_checkpointing_and_validation_renders(shards, tmp_path):
    """recipes/omnigen2_deft_r32.yaml (bf16 autocast, gradient checkpointing, rank 32) on the tiny OmniGen2, with a
    validation prompt that has a reference image: the adapter stays fp32, the renders are written."""
    from PIL import Image

    from omnideft.generate.validation import ValidationRenderer
    from tests.helpers import REPO

    Image.new("RGB", (32, 32), (200, 30, 30)).save(tmp_path / "q.png")
    recipe = load_recipe(REPO / "recipes" / "omnigen2_deft_r32.yaml", [
        "model.name=tiny", f"data.shards=[{shards}]", "data.max_image_size=32", "train.max_steps=2",
        "train.batch_size=2", "train.checkpoint_every=0", f"output.dir={tmp_path / 'run'}", "validation.steps=2",
        f"validation.prompts=[{{prompt: 'flip <img><|image_1|></img>', images: [{tmp_path / 'q.png'}], "
        "height: 32, width: 48}]"])
    assert recipe.train.mixed_precision == "bf16" and recipe.train.gradient_checkpointing
    validate = ValidationRenderer(recipe.validation, recipe.data.max_image_size)
    adapter = train(recipe, progress=False, validate=validate)
    tensors = load_file(adapter / "adapter_model.safetensors")
    assert {str(t.dtype) for t in tensors.values()} == {"torch.float32"}
    assert Image.open(tmp_path / "run" / "validation" / "step-0000002" / "00.png").size == (48, 32)
    six = [str(tmp_path / "q.png")] * 6
    with pytest.raises(UserError, match="6 images in validation.prompts\\[0\\]; OmniGen2 takes at most 5"):
        train(_recipe(shards, tmp_path / "b", f"validation.prompts=[{{prompt: x, images: [{', '.join(six)}]}}]"),
              progress=False)


def test_cli_kill_9_then_resume_is_bit_identical(shards, full, tmp_path):
    args = ["train", "--no-progress", *OG2, f"data.shards=[{shards}]", f"output.dir={tmp_path}"]
    assert run_cli(*args, env={"OMNIDEFT_FAULT": "kill@3"}).returncode == -9
    proc = run_cli(*args, "--resume", "latest")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "step-0000002 (step 2)" in proc.stderr
    assert _same(tmp_path / "adapter", full)


def test_cli_folder_of_neither_family_is_one_line(shards, tmp_path):
    other = tmp_path / "flux"
    other.mkdir()
    (other / "model_index.json").write_text('{"_class_name": "FluxPipeline"}')
    proc = run_cli("train", f"model.name={other}", f"data.shards=[{shards}]", f"output.dir={tmp_path / 'run'}")
    assert_one_line_error(proc, "not a model folder of any family", "FluxPipeline")


@pytest.mark.slow
def test_deepspeed_zero2_two_processes_kill_9_then_resume_is_bit_identical(shards, tmp_path):
    from tests.test_engines import _launch

    def run(out, *extra, env=None):
        return run_cli("train", "--no-progress", *OG2, f"data.shards=[{shards}]", f"output.dir={out}",
                       f"launch.config={_launch(tmp_path, 'cpu_2proc_zero2.yaml')}", *extra,
                       env={"DS_ACCELERATOR": "cpu", **(env or {})})

    proc = run(tmp_path / "full")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "full" / "summary.json").read_text())
    assert summary["engine"] == "zero2" and summary["world_size"] == 2
    assert len(set(summary["adapter_sha256_per_rank"])) == 1  # both ranks hold the same adapter
    assert run(tmp_path / "cut", env={"OMNIDEFT_FAULT": "kill@3"}).returncode != 0
    proc = run(tmp_path / "cut", "--resume", "latest")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "step-0000002 (step 2)" in proc.stderr
    assert _same(tmp_path / "cut" / "adapter", tmp_path / "full" / "adapter")


def test_a_v1_checkpoint_from_before_model_family_still_resumes(shards, tmp_path):
    import yaml

    v1 = ["model.name=tiny", f"data.shards=[{shards}]", "data.max_image_size=32", "adapter.rank=2",
          "train.checkpoint_every=1", f"output.dir={tmp_path}"]
    train(load_recipe(None, [*v1, "train.max_steps=1"]), progress=False)
    saved = tmp_path / "checkpoints" / "step-0000001" / "recipe.yaml"
    old = yaml.safe_load(saved.read_text())
    del old["model"]["family"]  # as written before the key existed
    saved.write_text(yaml.safe_dump(old))
    # as such a checkpoint would be: its recorded sums match its files (else it is "damaged")
    state_path = tmp_path / "checkpoints" / "step-0000001" / "trainer" / "state.json"
    state = json.loads(state_path.read_text())
    state["files"]["recipe.yaml"] = hashlib.sha256(saved.read_bytes()).hexdigest()
    state_path.write_text(json.dumps(state))
    train(load_recipe(None, [*v1, "train.max_steps=2"]), progress=False, resume="latest")
    assert json.loads((tmp_path / "summary.json").read_text())["resumed_from"] == 1


@pytest.mark.slow
@pytest.mark.numeric
def test_deepspeed_zero3_two_processes_with_deft_on_every_linear(shards, tmp_path):
    """ZeRO-3 partitions the transformer (the frozen MLLM is built whole: transformers would partition it too) with
    DEFT on the default all-linear targets, biased linears included: the same loss curve as ZeRO-2 and the same
    adapter up to the reduction order of two engines. Robust to the CPU kernel family and thread count (measured
    on AVX-512 and AVX2 ATen/oneDNN/MKL kernels, 1 and 2 threads): losses at most 1.1e-6 relative apart, adapter
    relative difference 3.1e-4 (AVX-512) and 4.4e-4 (AVX2), largest single value 2.5e-4 and 1.5e-3 (see
    _relative_difference), on values up to 0.11 after two Adam steps at lr 1e-2."""
    from tests.test_engines import _launch, _relative_difference

    runs = {}
    for stage in ("zero3", "zero2"):
        out = tmp_path / stage
        proc = run_cli("train", "--no-progress", *OG2, "train.max_steps=2", f"data.shards=[{shards}]",
                       f"output.dir={out}", f"launch.config={_launch(tmp_path, f'cpu_2proc_{stage}.yaml')}",
                       env={"DS_ACCELERATOR": "cpu"})
        assert proc.returncode == 0, proc.stderr[-3000:]
        summary = json.loads((out / "summary.json").read_text())
        assert summary["engine"] == stage and len(set(summary["adapter_sha256_per_rank"])) == 1
        losses = [json.loads(x)["loss"] for x in (out / "metrics.jsonl").read_text().splitlines()]
        runs[stage] = losses, load_file(out / "adapter" / "adapter_model.safetensors")
    (loss3, adapter3), (loss2, adapter2) = runs["zero3"], runs["zero2"]
    assert len({k.rsplit(".", 1)[0] for k in adapter3 if k.endswith("deft_R")}) == 69  # every linear, gathered whole
    assert loss3 == pytest.approx(loss2, rel=1e-5)
    spread = _relative_difference(adapter3, adapter2)
    assert spread < 2e-3, f"ZeRO-3 vs ZeRO-2: relative difference {spread:.2e}"


def test_zero3_keeps_the_base_bias_of_every_deft_layer_gathered(shards, tmp_path):
    """The cause of the ZeRO-3 failure on biased linears: PEFT's DeftLinear reads `base_layer.bias` after the base
    layer's forward returned, when ZeRO-3 has released it; DEFT's before_zero3 registers each such bias (and the
    layer's own P and R, which sit in ParameterDict submodules) as an external parameter of its DEFT layer
    (DeepSpeed then gathers them for the whole DEFT forward)."""
    from peft.tuners.deft.layer import DeftLinear

    from omnideft.adapters import AdapterSpec, apply_adapter
    from omnideft.adapters.registry import get_method
    from omnideft.families.omnigen2.model.folder import load_omnigen2
    from omnideft.families.omnigen2.targets import target_modules as omnigen2_targets

    model = apply_adapter(load_omnigen2("tiny").transformer, AdapterSpec(method="deft", rank=4),
                          targets=omnigen2_targets)
    get_method("deft").before_zero3(model)
    layers = [m for m in model.modules() if isinstance(m, DeftLinear)]
    biased = sum(m.get_base_layer().bias is not None for m in layers)
    assert len(layers) == 69 and 0 < biased < 69
    for m in layers:
        external = {id(p) for p in getattr(m, "_external_params", {}).values()}
        bias = [m.get_base_layer().bias] if m.get_base_layer().bias is not None else []
        assert external == {id(p) for p in [*bias, m.deft_P["default"], m.deft_R["default"]]}, m


def test_eval_measures_the_run_on_its_base(shards, full, tmp_path):
    """`omnideft eval --model RUN/base --adapter RUN/adapter`: the denoising loss is the family's training loss (the
    same noise for the base and the adapter); refusing a latent cache (cache-latents, data.latents) from what OmniGen2
    declares: tests/test_families.py."""
    from omnideft.eval.run import run_eval

    results, paths = run_eval(str(full.parent / "base"), [str(full)], [str(shards)], str(tmp_path / "ev" / "scores"),
                              samples=4, max_image_size=32, repeats=1)
    assert set(results) == {"base", str(full)} and set(results["base"]) == {"shapes/a/fill", "all"}
    assert all(0 < t["all"] < float("inf") for t in results.values())
    assert results[str(full)]["all"] != results["base"]["all"]  # the adapter is loaded (not the bare base again)
    assert [p.suffix for p in paths] == [".csv", ".json", ".md"]
