"""`adapter.mllm_targets: language` on the tiny OmniGen2: the same DEFT also on the MLLM's language layers (never its
vision tower), trained with the transformer, saved beside the transformer's stock PEFT files, resumed bit for bit,
and loaded by generation (as is and merged) to the image the trained in-memory model renders."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from omnideft.errors import UserError
from omnideft.shapes.shards import write_task_shards
from omnideft.train.loop import train
from omnideft.train.recipe import load_recipe

OG2 = ["model.name=tiny", "model.family=omnigen2", "data.max_image_size=32", "adapter.rank=4",
       "train.batch_size=2", "train.lr=1e-2", "train.max_steps=4", "train.checkpoint_every=2",
       "adapter.mllm_targets=language"]
PROMPT = "a red square"
# the validation render after the last step is the in-memory model's image; generation repeats its settings
VALIDATION = [f"validation.prompts=[{{prompt: '{PROMPT}', height: 32, width: 32}}]", "validation.steps=2",
              "validation.guidance=4.0", "validation.image_guidance=1.0", "validation.seed=3"]
SETTINGS = dict(height=32, width=32, steps=2, seed=3, guidance=4.0, image_guidance=1.0, max_input_image_size=32)
LANGUAGE_LINEARS = 2 * 7  # tiny Qwen2.5-VL: 2 decoder layers x q/k/v/o, gate/up/down


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_task_shards(tmp_path_factory.mktemp("og2mllm_shards"), ["fill"], n_samples=8, size=32, seed=0,
                             shard_size=4, n_examples=1)


def _recipe(shards, out, *extra):
    return load_recipe(None, [*OG2, f"data.shards=[{shards}]", f"output.dir={out}", *extra])


@pytest.fixture(scope="module")
def full(shards, tmp_path_factory):
    from omnideft.generate.validation import ValidationRenderer

    recipe = _recipe(shards, tmp_path_factory.mktemp("og2mllm_full") / "run", *VALIDATION)
    return train(recipe, progress=False, validate=ValidationRenderer(recipe.validation, 32))


def _pixels(image) -> torch.Tensor:
    return torch.from_numpy(np.array(image.convert("RGB"))).float()


def test_language_layers_get_adapter_tensors_that_train(full):
    mllm_tensors = load_file(full / "mllm_adapter.safetensors")
    layers = {k.rsplit(".", 1)[0] for k in mllm_tensors}
    assert len(layers) == LANGUAGE_LINEARS and {k.rsplit(".", 1)[1] for k in mllm_tensors} == {"deft_P", "deft_R"}
    assert all(".language_model.layers." in k and "visual" not in k for k in layers)
    config = json.loads((full / "mllm_adapter.json").read_text())
    assert config["spec"]["method"] == "deft" and len(config["target_modules"]) == LANGUAGE_LINEARS
    # the transformer's part is unchanged: every linear, stock PEFT names, no MLLM tensor among them
    tensors = load_file(full / "adapter_model.safetensors")
    assert len({k.rsplit(".", 1)[0] for k in tensors if k.endswith("deft_R")}) == 69
    assert not any("mllm" in k or "language_model" in k for k in tensors)
    # they change during training: step 2's checkpoint holds other values than the final adapter
    step2 = load_file(full.parent / "checkpoints" / "step-0000002" / "mllm_adapter.safetensors")
    moved = max(float((mllm_tensors[k] - step2[k]).abs().max()) for k in mllm_tensors)
    assert moved > 1e-4, moved


def test_the_prompt_features_change_and_unloading_restores_them(full):
    from omnideft.adapters.export import unload
    from omnideft.families.omnigen2.mllm import load_mllm_adapter
    from omnideft.families.omnigen2.model.folder import load_omnigen2
    from omnideft.families.omnigen2.model.prompt import encode_prompts

    comps = load_omnigen2(str(full.parent / "base"))
    with torch.no_grad():
        before, _ = encode_prompts(comps.mllm, comps.tokenizer, [PROMPT])
        wrapper = load_mllm_adapter(comps.mllm, full)
        adapted, _ = encode_prompts(comps.mllm, comps.tokenizer, [PROMPT])
        unload(wrapper)
        after, _ = encode_prompts(comps.mllm, comps.tokenizer, [PROMPT])
    assert float((adapted - before).abs().max()) > 1e-3
    assert after.equal(before)
    # an MLLM of other weights is refused in one line
    other = load_omnigen2("tiny", seed=1).mllm
    with pytest.raises(UserError, match="MLLM part was trained on an MLLM with other weights"):
        load_mllm_adapter(other, full)


def test_stop_then_resume_gives_the_uninterrupted_adapter_and_mllm_part(shards, full, tmp_path):
    train(_recipe(shards, tmp_path, "train.max_steps=2"), progress=False)
    resumed = train(_recipe(shards, tmp_path), resume="latest", progress=False)
    for name in ("adapter_model.safetensors", "mllm_adapter.safetensors"):
        a, b = load_file(full / name), load_file(resumed / name)
        assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a), name


def test_generate_with_the_saved_adapter_renders_the_in_memory_image(full, tmp_path):
    from omnideft.families.omnigen2.generator import OmniGen2Generator

    in_memory = _pixels(Image.open(full.parent / "validation" / "step-0000004" / "00.png"))
    g = OmniGen2Generator.from_pretrained(adapters=[str(full)])
    loaded = _pixels(g(PROMPT, **SETTINGS)[0])
    assert (loaded - in_memory).abs().max() <= 1
    g.set_adapters([(str(full), 1.0), (str(full), 0.0)])  # merged into the transformer and the MLLM
    assert (_pixels(g(PROMPT, **SETTINGS)[0]) - in_memory).abs().max() <= 1
    # the MLLM part matters: the transformer's part alone renders another image
    alone = tmp_path / "transformer_only"
    alone.mkdir()
    for f in full.iterdir():
        if not f.name.startswith("mllm_adapter"):
            (alone / f.name).write_bytes(f.read_bytes())
    g.set_adapters([str(alone)])
    assert (_pixels(g(PROMPT, **SETTINGS)[0]) - in_memory).abs().max() > 1
    g.set_adapters([])  # unloading the MLLM part: the base's prompt features again
    from omnideft.families.omnigen2.model.folder import load_omnigen2
    from omnideft.families.omnigen2.model.prompt import encode_prompts

    fresh = load_omnigen2(str(full.parent / "base"))
    with torch.no_grad():
        ours, _ = encode_prompts(g.components.mllm, g.components.tokenizer, [PROMPT])
        base, _ = encode_prompts(fresh.mllm, fresh.tokenizer, [PROMPT])
    assert ours.equal(base)


def test_export_merged_folds_the_mllm_part_and_lora_formats_say_they_drop_it(full, tmp_path):
    from omnideft.export.run import run_export
    from omnideft.families.omnigen2.generator import OmniGen2Generator

    base = str(full.parent / "base")
    report = run_export(str(full), "merged", base, str(tmp_path / "merged"))
    assert "its MLLM part folded into the MLLM" in report
    in_memory = _pixels(Image.open(full.parent / "validation" / "step-0000004" / "00.png"))
    merged = OmniGen2Generator.from_pretrained(str(tmp_path / "merged"))
    assert (_pixels(merged(PROMPT, **SETTINGS)[0]) - in_memory).abs().max() <= 1
    assert "the MLLM part (mllm_adapter.*) is not in this format" in run_export(str(full), "comfyui", base,
                                                                             str(tmp_path / "comfy"))


@pytest.mark.slow
@pytest.mark.numeric
def test_zero2_and_zero3_two_processes_train_the_mllm_part(shards, tmp_path):
    """Two processes: DeepSpeed ZeRO-2 (measured bit-identical to DDP on one machine; DDP left out to keep the suite
    short) and ZeRO-3 (the MLLM partitioned with the transformer) the same up to the reduction order; every rank
    the same adapter. Robust to the CPU kernel family and thread count (measured on AVX-512 and AVX2
    ATen/oneDNN/MKL kernels, 1 and 2 threads): losses at most 4.2e-7 relative apart; relative difference of the
    transformer part 3.2e-4 (AVX-512) to 5.0e-4 (AVX2, 2 threads), of the MLLM part 1.6e-4 to 1.8e-4, on values up
    to 0.11 after two Adam steps at lr 1e-2. Not the largest single value (see _relative_difference): 4.0e-4 on
    AVX-512, 1.8e-3 on AVX2 with 2 threads, 1.2e-3 on an AVX2 machine."""
    from tests.helpers import run_cli
    from tests.test_engines import _launch, _relative_difference

    runs = {}
    for engine in ("zero2", "zero3"):
        out = tmp_path / engine
        proc = run_cli("train", "--no-progress", *OG2, "train.max_steps=2", f"data.shards=[{shards}]",
                       f"output.dir={out}", f"launch.config={_launch(tmp_path, f'cpu_2proc_{engine}.yaml')}",
                       env={"DS_ACCELERATOR": "cpu"})
        assert proc.returncode == 0, proc.stderr[-3000:]
        summary = json.loads((out / "summary.json").read_text())
        assert summary["engine"] == engine and len(set(summary["adapter_sha256_per_rank"])) == 1
        losses = [json.loads(x)["loss"] for x in (out / "metrics.jsonl").read_text().splitlines()]
        runs[engine] = losses, [load_file(out / "adapter" / f) for f in ("adapter_model.safetensors",
                                                                          "mllm_adapter.safetensors")]
    assert len(runs["zero2"][1][1]) == 2 * LANGUAGE_LINEARS
    assert runs["zero3"][0] == pytest.approx(runs["zero2"][0], rel=1e-5)
    for part, a, b in zip(("transformer", "MLLM"), runs["zero3"][1], runs["zero2"][1]):
        spread = _relative_difference(a, b)
        assert spread < 2e-3, f"{part} part, ZeRO-3 vs ZeRO-2: relative difference {spread:.2e}"
