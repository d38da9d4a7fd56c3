"""The memory planner: its prediction against the bytes a step really holds on this machine (saved tensors, params,
gradients, optimizer state of width-reduced OmniGens at several sequence lengths), the real OmniGen's plan from the
shipped config, the presets, and `omnideft plan`'s output and refusals."""

from __future__ import annotations

import pytest

from omnideft.adapters.spec import AdapterSpec
from omnideft.errors import UserError
from omnideft.families.omnigen.plan import measure_shapes, measure_step, model_configs, reduced_config
from omnideft.plan.presets import PRESETS, preset_plans, resolve_memory
from omnideft.sizing.estimate import GB, Setup, Workload, plan_memory
from omnideft.train.recipe import load_recipe
from tests.helpers import assert_one_line_error, run_cli_here

TOLERANCE = 0.10
SETUPS = {  # base storage, compute, checkpointing
    "fp32": Setup(base="fp32", compute="fp32", checkpointing=False),
    "bf16": Setup(base="bf16", compute="bf16", checkpointing=False),
    "fp32-autocast": Setup(base="fp32", compute="bf16", checkpointing=False),
    "bf16-checkpointed": Setup(base="bf16", compute="bf16", checkpointing=True),
    "int8": Setup(base="int8", compute="bf16", checkpointing=False),
}


@pytest.mark.parametrize("setup_name", list(SETUPS))
@pytest.mark.parametrize(("method", "width"), [("deft", (128, 4, 256)), ("deft", (192, 6, 512)),
                                               ("lora", (128, 4, 256))])
def test_plan_within_ten_percent_of_measured(method, setup_name, width):
    hidden, heads, intermediate = width
    spec = AdapterSpec(method=method, rank=8, targets="all-linear", projector="qr" if method == "deft" else None)
    worst = []
    for latent_side in (8, 16, 24):  # 3 sequence lengths: 97, 337, 737 tokens
        r = measure_step(reduced_config(hidden, heads, 2, intermediate), spec, SETUPS[setup_name], text_tokens=48,
                         input_images=2, latent_side=latent_side)
        measured, predicted = r["measured"], r["predicted"]
        for part in measured:
            ratio = predicted[part] / measured[part]
            worst.append(abs(ratio - 1))
            assert abs(ratio - 1) <= TOLERANCE, (part, r["seq_len"], predicted[part], measured[part])
        total = sum(predicted.values()) / sum(measured.values())
        assert abs(total - 1) <= TOLERANCE, (r["seq_len"], total)
    assert max(worst) > 0  # a real comparison, not the same number twice


def test_real_omnigen_config_counts_and_presets():
    recipe = load_recipe("recipes/omnigen_deft_r32.yaml", ["data.max_image_size=1024", "train.batch_size=1"])
    shapes = measure_shapes(*model_configs(recipe.model.name), recipe.adapter)
    assert shapes.base_params == 3_762_072_592  # the published parameter count
    assert shapes.buffers == 113_246_256 and shapes.layers == 32 and shapes.hidden == 3072
    work = Workload(batch=1, image_size=1024, input_images=2)
    assert work.seq_len == 128 + 3 * 4096 + 1
    plans = preset_plans(recipe, shapes, work)
    peaks = [plans[name].peak for name in PRESETS]
    assert peaks == sorted(peaks, reverse=True)  # each preset saves over the one before it
    for name, plan in plans.items():
        assert plan.peak <= PRESETS[name].gpu_bytes, (name, plan.peak / GB)  # every preset fits its own size
    # without checkpointing the activations dominate: more than 40 GB at 12k tokens, as no real 24 GB run manages
    assert plans["80gb"].part("activations (saved)") > 40 * GB
    # quantisation shrinks exactly the frozen base
    assert plans["16gb"].part("frozen base") < 0.55 * plans["24gb"].part("frozen base")
    assert plans["24gb"].part("VAE") == 0 < plans["48gb"].part("VAE")


def test_zero_partitions_optimizer_state_across_gpus():
    shapes = measure_shapes(*model_configs("tiny"), AdapterSpec(method="deft", rank=4, projector="qr"))
    work = Workload(image_size=64)
    one = plan_memory(shapes, Setup(zero_stage=2, gpus=1), work, 4)
    four = plan_memory(shapes, Setup(zero_stage=2, gpus=4), work, 4)
    assert four.part("optimizer state") == pytest.approx(one.part("optimizer state") / 4)
    assert four.part("adapter gradients") == pytest.approx(one.part("adapter gradients") / 4)
    assert four.part("frozen base") == one.part("frozen base")


def test_presets_switch_the_recipe():
    applied = resolve_memory(load_recipe(None, ["train.memory=16gb", "data.latents=cache"]), gpu_bytes=None)
    assert applied.train.gradient_checkpointing and applied.model.quantize == "int8"
    kept = resolve_memory(load_recipe(None, ["train.memory=48gb", "model.quantize=int8"]), None)
    assert kept.model.quantize == "int8"  # an explicit value that saves more stays
    assert resolve_memory(load_recipe(None, ["train.memory=auto"]), None).model.quantize is None  # no GPU: nothing
    with pytest.raises(UserError, match="data.latents"):
        resolve_memory(load_recipe(None, ["train.memory=16gb"]), None)
    cached = resolve_memory(load_recipe(None, ["train.memory=12gb", "data.latents=cache"]), None)
    assert cached.data.max_image_size == 768 and cached.model.quantize == "nf4"
    auto = resolve_memory(load_recipe(None, ["train.memory=auto", "train.batch_size=1"]), 24 * GB)
    assert auto.train.memory == "48gb"


def test_a_family_whose_trainer_refuses_a_presets_keys_is_refused_the_preset_by_name():
    for memory in ("48gb", "12gb"):
        with pytest.raises(UserError, match=rf"^train.memory={memory} sets model.quantize.* omnigen2 training"):
            resolve_memory(load_recipe(None, [f"train.memory={memory}", "model.family=omnigen2"]), None)
    with pytest.raises(UserError, match=r"^train.memory=auto: every preset sets model.quantize or data.latents"):
        resolve_memory(load_recipe(None, ["train.memory=auto", "model.family=omnigen2"]), 80 * GB)
    assert resolve_memory(load_recipe(None, ["model.family=omnigen2"]), 80 * GB).model.quantize is None


def test_train_refuses_a_preset_the_family_does_not_take_in_one_line_naming_it(tmp_path):
    proc = run_cli_here("train", "recipes/tiny_cpu.yaml", "model.family=omnigen2", "train.memory=48gb",
                        f"output.dir={tmp_path / 'run'}")
    assert_one_line_error(proc, "train.memory=48gb sets model.quantize", "omnigen2")
    assert not (tmp_path / "run").exists()


def test_plan_command_picks_a_preset_and_refuses_one_that_does_not_fit():
    ok = run_cli_here("plan", "recipes/omnigen_deft_r32.yaml", "data.max_image_size=1024", "train.batch_size=1",
                 "--gpu-memory", "24GB")
    assert ok.returncode == 0, ok.stderr
    assert "| frozen base | 15.50 |" in ok.stdout  # fp32 as the recipe loads it
    assert "cheapest preset that fits 24 GB: train.memory=48gb" in ok.stdout
    too_big = run_cli_here("plan", "recipes/omnigen_deft_r32.yaml", "train.memory=80gb", "data.max_image_size=1024",
                      "train.gradient_checkpointing=false",
                      "--gpu-memory", "24GB")
    assert_one_line_error(too_big, "train.memory=80gb needs", "24.0 GB")
    assert "| activations (saved) |" in too_big.stdout  # the table comes with the refusal
    assert_one_line_error(run_cli_here("plan", "recipes/omnigen_deft_r32.yaml", "--gpu-memory", "4GB"),
                          "no preset fits 4.0 GB")
    assert_one_line_error(run_cli_here("plan", "recipes/omnigen_deft_r32.yaml", "--gpu-memory", "lots"), "lots")
    tiny = run_cli_here("plan", "recipes/tiny_cpu.yaml")  # its shards' samples carry 3 input images
    assert tiny.returncode == 0 and "64x64 output + 3 input image(s)" in tiny.stdout, tiny.stderr
    assert "| frozen base | 0.000303 | 42,928 params at fp32 |" in tiny.stdout


def test_real_omnigen2_counts_on_the_meta_device():
    import time

    from transformers import Qwen2_5_VLForConditionalGeneration  # noqa: F401  (imports are not the build)

    from omnideft.families.omnigen2.model.transformer import OmniGen2Transformer  # noqa: F401
    from omnideft.families.registry import get_family

    started = time.perf_counter()
    shapes = get_family("omnigen2").plan_entry().shapes("OmniGen2/OmniGen2",
                                                        AdapterSpec(method="deft", rank=32, projector="qr"))
    assert time.perf_counter() - started < 5  # built on the meta device: no memory, no weights
    assert shapes.base_params == 3_967_161_400  # the published transformer, as its own code counts it
    assert shapes.prompt_encoder_params == 3_754_622_976  # Qwen2.5-VL-3B with its tied embedding counted once
    assert (shapes.hidden, shapes.layers, shapes.refiner_layers, shapes.heads, shapes.kv_heads) == (2520, 32, 2, 21, 7)
    assert shapes.vae_params == 83_819_683 and shapes.source == ""  # FLUX's VAE


@pytest.mark.parametrize(("setup_name", "latent_sides"), [
    ("fp32", (16,)), ("fp32-autocast", (16,)), ("bf16-checkpointed", (16,)),
    ("recipe", (16, 24))])  # the shipped recipe's set-up: fp32 base (as the trainer loads it), bf16, checkpointing
def test_omnigen2_plan_within_ten_percent_of_measured(setup_name, latent_sides):
    from omnideft.families.omnigen2.plan import measure_omnigen2_step, reduced_omnigen2_config

    setup = SETUPS.get(setup_name, Setup(base="fp32", compute="bf16", checkpointing=True))
    spec = AdapterSpec(method="deft", rank=8, targets="all-linear", projector="qr")
    for latent_side in latent_sides:  # 216 and 456 tokens: caption, two references, the target
        r = measure_omnigen2_step(reduced_omnigen2_config(), spec, setup, text_tokens=24, input_images=2,
                                  latent_side=latent_side)
        measured, predicted = r["measured"], r["predicted"]
        for part in measured:
            assert abs(predicted[part] / measured[part] - 1) <= TOLERANCE, (part, r["seq_len"], predicted[part],
                                                                           measured[part])
        assert predicted["saved"] != measured["saved"]  # a real comparison, not the same number twice


def test_plan_command_plans_omnigen2():
    real = run_cli_here("plan", "recipes/omnigen2_deft_r32.yaml", "--gpu-memory", "80GB")
    assert real.returncode == 0, real.stderr
    assert "| frozen base | 15.87 | 3,967,161,400 params at fp32 |" in real.stdout
    assert "| prompt encoder (MLLM) | 15.02 | 3,754,622,976 params fp32" in real.stdout
    assert "configs: models/OmniGen2 not found: the published OmniGen2/OmniGen2 configs" in real.stdout
    assert "1024x1024 output + 2 input image(s) of that size, 128 text tokens: 12416 tokens" in real.stdout
    assert "cheapest preset that fits" not in real.stdout  # every preset sets model.quantize, which it refuses
    assert "they are planned, not applied (train.memory is refused)" in real.stdout
    tiny = run_cli_here("plan", "recipes/tiny_cpu.yaml", "model.family=omnigen2")  # the OmniGen2 tiny, not v1's
    assert tiny.returncode == 0, tiny.stderr
    assert "# plan: tiny (omnigen2)" in tiny.stdout and "42,928" not in tiny.stdout
    assert "| prompt encoder (MLLM) |" in tiny.stdout
