"""FLUX.2 [klein] against diffusers itself: omnideft's generator gives diffusers' Flux2KleinPipeline's pixels (text
only, with reference images, with in-context examples), its refusals are one line, its diffusers LoRA export loads
with the pipeline's `load_lora_weights` as exactly the merged weights, its merged export is a pipeline folder, and the
planner's count of the published klein-base-4B equals diffusers' on the meta device. The family conformance suite
(tests/test_families.py) runs the rest."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from diffusers import Flux2KleinPipeline
from PIL import Image

from omnideft.errors import UserError
from omnideft.families.registry import get_family
from tests.helpers import REPO, assert_one_line_error, run_cli_here

PROMPT = "draw a red circle"


@pytest.fixture(scope="module")
def family():
    return get_family("flux2")


@pytest.fixture(scope="module")
def base(family, tmp_path_factory):
    """The tiny klein base saved in the diffusers layout."""
    folder = tmp_path_factory.mktemp("flux2") / "base"
    folder.mkdir()
    family.save(family.load("tiny", seed=1), folder)
    return folder


@pytest.fixture(scope="module")
def pipe(base):
    """diffusers' own pipeline, loaded by diffusers from the folder (not omnideft's modules)."""
    pipe = Flux2KleinPipeline.from_pretrained(str(base))
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def generator(family, base):
    return family.generator(family.load(str(base)), device="cpu")


def _noise_image(seed: int, size: int = 64) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))


def _levels(image) -> np.ndarray:
    return np.round(np.asarray(image, dtype=np.float64) * 255).astype(int)


def _reference(pipe, prompt: str, seed: int, **kw) -> np.ndarray:
    out = pipe(prompt=prompt, num_inference_steps=2, guidance_scale=4.0, output_type="np",
               generator=torch.Generator().manual_seed(seed), **kw)
    return out.images[0]


def test_text_only_generation_is_the_pipelines(generator, pipe):
    ours = generator(PROMPT, seed=3, height=32, width=32, steps=2, guidance=4.0, output_type="np")[0]
    theirs = _reference(pipe, PROMPT, 3, height=32, width=32)
    assert ours.shape == theirs.shape == (32, 32, 3)
    assert np.abs(_levels(ours) - _levels(theirs)).max() <= 1
    assert _levels(theirs).std() > 1  # a picture, not a constant
    negative = generator(PROMPT, seed=3, height=32, width=32, steps=2, guidance=4.0, output_type="np",
                         negative_prompt="blurry")[0]
    theirs = _reference(pipe, PROMPT, 3, height=32, width=32, negative_prompt_embeds=pipe.encode_prompt("blurry")[0])
    assert np.abs(_levels(negative) - _levels(theirs)).max() <= 1
    assert np.abs(_levels(negative) - _levels(ours)).max() > 1  # the negative prompt is the unconditional row


def test_reference_images_and_examples_are_the_pipelines_references(generator, pipe):
    """Query images are the pipeline's references (the output takes the first one's size); in-context examples come
    before them, and the placeholders read "image k"."""
    a, b, query = _noise_image(1), _noise_image(2), _noise_image(3)
    ours = generator("put <img><|image_1|></img> beside <img><|image_2|></img>", images=[a, b], seed=4, steps=2,
                     guidance=4.0, output_type="np")[0]
    theirs = _reference(pipe, "put image 1 beside image 2", 4, image=[a, b])
    assert ours.shape == theirs.shape == (64, 64, 3)
    assert np.abs(_levels(ours) - _levels(theirs)).max() <= 1
    text_only = _reference(pipe, "put image 1 beside image 2", 4, height=64, width=64)
    assert np.abs(_levels(theirs) - _levels(text_only)).max() > 1  # the references change the picture
    ours = generator("make it blue", images=[query], examples=[(a, b)], seed=5, steps=2, guidance=4.0,
                     output_type="np")[0]
    theirs = _reference(pipe, "example 1: image 1 becomes image 2. make it blue image 3", 5, image=[a, b, query],
                        height=64, width=64)
    assert np.abs(_levels(ours) - _levels(theirs)).max() <= 1
    # a reference below the pipeline's 64 px minimum is enlarged to it (Lanczos), as the trainer's batches are
    small = _noise_image(7, 32)
    ours = generator("make <img><|image_1|></img> red", images=[small], seed=6, steps=2, guidance=4.0,
                     output_type="np")[0]
    theirs = _reference(pipe, "make image 1 red", 6, image=[small.resize((64, 64), Image.Resampling.LANCZOS)])
    assert ours.shape == (64, 64, 3) and np.abs(_levels(ours) - _levels(theirs)).max() <= 1


def test_the_cli_renders_the_pipelines_pixels_with_references(base, pipe, tmp_path):
    a = _noise_image(6)
    a.save(tmp_path / "a.png")
    proc = run_cli_here("generate", "--model", str(base), "--prompt", "make <img><|image_1|></img> red",
                        "--image", str(tmp_path / "a.png"), "--steps", "2", "--guidance", "4", "--seed", "2",
                        "--no-progress", "--out", str(tmp_path / "out.png"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    theirs = _reference(pipe, "make image 1 red", 2, image=[a])
    got = np.asarray(Image.open(tmp_path / "out.png").convert("RGB")).astype(int)
    assert np.abs(got - _levels(theirs)).max() <= 1


def test_what_klein_does_not_take_is_one_line(generator, base, tmp_path):
    images = [_noise_image(k) for k in range(5)]
    with pytest.raises(UserError, match=r"^5 reference images .*FLUX\.2 \[klein\] takes at most 4$"):
        generator("x", images=images, steps=1)
    with pytest.raises(UserError, match=r"^6 reference images .*takes at most 4$"):
        generator("x", images=images[:2], examples=[(images[2], images[3]), (images[4], images[0])], steps=1)
    with pytest.raises(UserError, match=r"^image guidance 2: FLUX\.2 \[klein\] has no separate image guidance"):
        generator("x", images=images[:1], image_guidance=2.0, steps=1)
    narrow = Image.new("RGB", (64, 600))
    with pytest.raises(UserError, match=r"^reference image 2: Aspect ratio too extreme: 64×600"):
        generator("x", images=[images[0], narrow], steps=1, height=32, width=32)
    for path, image in (("a.png", images[0]), ("narrow.png", narrow)):
        image.save(tmp_path / path)
    args = ["generate", "--model", str(base), "--prompt", "x", "--steps", "1", "--out", str(tmp_path / "o.png")]
    assert_one_line_error(run_cli_here(*args, *[f"--image={tmp_path / 'a.png'}"] * 5), "takes at most 4")
    assert_one_line_error(run_cli_here(*args, "--image", str(tmp_path / "a.png"), "--image-guidance", "2"),
                          "has no separate image guidance")
    assert_one_line_error(run_cli_here(*args, "--image", str(tmp_path / "narrow.png")), "Aspect ratio too extreme")
    (tmp_path / "partial" / "transformer").mkdir(parents=True)
    (tmp_path / "partial" / "model_index.json").write_text('{"_class_name": "Flux2KleinPipeline"}')
    args[2] = str(tmp_path / "partial")
    assert_one_line_error(run_cli_here(*args), "not a complete FLUX.2 [klein] folder: missing vae/, text_encoder/")
    assert not (tmp_path / "o.png").exists()


def test_the_distilled_klein_refuses_guidance(family, tmp_path):
    components = family.load("tiny")
    components.is_distilled = True
    (tmp_path / "distilled").mkdir()
    family.save(components, tmp_path / "distilled")
    assert family.defaults(str(tmp_path / "distilled")).guidance == 1.0
    assert family.defaults("black-forest-labs/FLUX.2-klein-4B").steps == 4
    assert family.defaults("black-forest-labs/FLUX.2-klein-base-4B").guidance == 4.0
    generator = family.generator(family.load(str(tmp_path / "distilled")), device="cpu")
    assert generator.components.is_distilled
    with pytest.raises(UserError, match="step-distilled FLUX.2 \\[klein\\], which takes no guidance"):
        generator("x", guidance=4.0, steps=1, height=32, width=32)
    assert generator("x", steps=1, height=32, width=32, output_type="np")[0].shape == (32, 32, 3)


@pytest.fixture(scope="module")
def exports(family, tmp_path_factory):
    """One DEFT adapter on every linear of the tiny klein, exported in every format the family offers."""
    from omnideft.adapters import AdapterSpec, apply_adapter, save_adapter
    from omnideft.export.run import run_export

    tmp = tmp_path_factory.mktemp("flux2_exports")
    torch.manual_seed(0)
    model = apply_adapter(family.load("tiny").transformer, AdapterSpec(method="deft", rank=3, init="paper"),
                          targets=family.target_modules)
    adapter = save_adapter(model, tmp / "adapter", base_name="tiny", family="flux2")
    for fmt in family.export_formats:
        run_export(str(adapter), fmt, "tiny", str(tmp / fmt))
    (tmp / "base").mkdir()
    family.save(family.load("tiny"), tmp / "base")
    return tmp


def _state(module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_the_diffusers_export_loads_with_load_lora_weights_as_the_merged_weights(exports):
    """diffusers' Flux2 LoRA loader reads every tensor of the file onto the module it names (no key left over, every
    linear of the transformer adapted), and the pipeline's fused weights are omnideft's merged export's."""
    from peft.tuners.tuners_utils import BaseTunerLayer
    from safetensors.torch import load_file

    tensors = load_file(exports / "diffusers" / "pytorch_lora_weights.safetensors")
    named = {k.removeprefix("transformer.").removesuffix(".lora_A.weight") for k in tensors if "lora_A" in k}
    assert len(tensors) == 2 * len(named) and all(k.startswith("transformer.") for k in tensors)
    pipe = Flux2KleinPipeline.from_pretrained(str(exports / "base"))
    bare = _state(pipe.transformer)
    pipe.load_lora_weights(str(exports / "diffusers"))
    adapted = {n for n, m in pipe.transformer.named_modules() if isinstance(m, BaseTunerLayer)}
    linears = {n for n, m in Flux2KleinPipeline.from_pretrained(str(exports / "base")).transformer.named_modules()
               if isinstance(m, torch.nn.Linear)}
    assert adapted == named == linears
    pipe.fuse_lora()
    pipe.unload_lora_weights()
    fused = _state(pipe.transformer)
    merged = _state(Flux2KleinPipeline.from_pretrained(str(exports / "merged")).transformer)
    assert fused.keys() == merged.keys() == bare.keys()
    assert all(torch.allclose(fused[k], merged[k], atol=1e-6) for k in merged)
    assert sum(not torch.equal(merged[k], bare[k]) for k in bare) == len(linears)  # every linear changed


def test_the_merged_export_is_a_diffusers_pipeline_folder(family, exports):
    from omnideft.adapters.compose import merge_adapters
    from omnideft.families.registry import family_of_folder

    assert family_of_folder(exports / "merged") is family
    pipe = Flux2KleinPipeline.from_pretrained(str(exports / "merged"))
    want = _state(merge_adapters(family.load("tiny").transformer, [(str(exports / "adapter"), 1.0)]))
    got = _state(pipe.transformer)
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)


# -- ComfyUI (its rules: tests/clients/comfyui_flux2_facts.json) ------------------------------------------------------

COMFYUI = json.loads((REPO / "tests" / "clients" / "comfyui_flux2_facts.json").read_text())


def _swap_halves(w):
    first, second = w.chunk(2, dim=0)
    return torch.cat([second, first])


def _comfyui_layout(state: dict, config) -> dict:
    """A diffusers FLUX.2 transformer's linear weights as ComfyUI's model holds them, by diffusers' conversion rules
    in reverse (KeyError if a rule names a module the transformer lacks)."""
    rules, prefix = COMFYUI["diffusers_to_comfyui"], COMFYUI["model"]["state_dict_prefix"]
    out = {}
    for name, comfy in rules["model"].items():
        if f"{name}.weight" in state:
            w = state[f"{name}.weight"]
            out[f"{prefix}{comfy}.weight"] = _swap_halves(w) if name in rules["swap_halves"] else w
    for key, count in (("double_blocks", config.num_layers), ("single_blocks", config.num_single_layers)):
        for i in range(count):
            src, dst = rules[key]["from"].format(i=i), rules[key]["to"].format(i=i)
            for name, comfy in rules[key]["renamed"].items():
                out[f"{prefix}{dst}.{comfy}.weight"] = state[f"{src}.{name}.weight"]
            for comfy, parts in rules[key].get("fused_rows", {}).items():
                out[f"{prefix}{dst}.{comfy}.weight"] = torch.cat([state[f"{src}.{p}.weight"] for p in parts])
    return out


def _comfyui_linears(config) -> set:
    """The linear weights of ComfyUI's FLUX.2 model for a transformer config, as its model file builds them."""
    linear, prefix = COMFYUI["model"]["linear_modules"], COMFYUI["model"]["state_dict_prefix"]
    names = set(linear["model"]) | (set(linear["with_guidance_embed"]) if config.guidance_embeds else set())
    for key, count in (("double_blocks", config.num_layers), ("single_blocks", config.num_single_layers)):
        names |= {f"{key}.{i}.{m}" for i in range(count) for m in linear[key]}
    return {f"{prefix}{n}.weight" for n in names}


def _comfyui_key_map(weights: dict, hidden: int) -> dict:
    """model_lora_keys_unet for a Flux2 model: stem -> (state-dict key, row slice or None, function or None)."""
    rules, prefix = COMFYUI["lora_key_map"], COMFYUI["model"]["state_dict_prefix"]
    key_map = {}
    for key in weights:
        path = key.removeprefix(prefix).removesuffix(".weight")
        for rule in rules["every_model"]["rules"]:
            key_map[rule.format(path=path, path_underscored=path.replace(".", "_"))] = (key, None, None)
    flux = rules["flux_class"]
    targets = {name: (f"{prefix}{comfy}.weight", None, None) for name, comfy in flux["model"].items()}
    targets |= {name: (f"{prefix}{comfy}.weight", None, _swap_halves) for name, comfy in flux["model_swapped"].items()}
    paths = [k.removeprefix(prefix).split(".") for k in weights]
    for key in ("double_blocks", "single_blocks"):  # ComfyUI's depth and depth_single_blocks: the blocks it has
        for i in range(max([int(p[1]) + 1 for p in paths if p[0] == key] + [0])):
            src, dst = flux[key]["from"].format(i=i), f"{prefix}{flux[key]['to'].format(i=i)}"
            targets |= {f"{src}.{n}": (f"{dst}.{c}.weight", None, None) for n, c in flux[key]["renamed"].items()}
            targets |= {f"{src}.{n}": (f"{dst}.{c}.weight", (start * hidden, length * hidden), None)
                        for n, (c, start, length) in flux[key]["row_slices"].items()}
    for name, target in targets.items():
        for rule in flux["prefixes"]:
            key_map[rule.format(name=name, name_underscored=name.replace(".", "_"))] = target
    return key_map


def _comfyui_load(lora: dict, weights: dict, hidden: int) -> tuple[dict, set]:
    """ComfyUI's load_lora_for_models on a FLUX.2 model whose state dict is `weights`, strength 1: (the patched
    weights, the file's keys it did not apply: unmatched, or matched to a weight the model lacks)."""
    out, used = dict(weights), set()
    for stem, (key, rows, function) in _comfyui_key_map(weights, hidden).items():
        for up, down in (tuple(t.format(stem=stem) for t in pair) for pair in COMFYUI["lora_pairs"]["pairs"]):
            if up not in lora:
                continue
            if key in weights:  # add_patches drops a patch for a key the model does not have ("NOT LOADED")
                alpha = COMFYUI["lora_pairs"]["alpha"].format(stem=stem)
                scale = lora[alpha].item() / lora[down].shape[0] if alpha in lora else 1.0
                w = out[key].clone()
                view = w if rows is None else w.narrow(0, *rows)
                delta = scale * (lora[up].flatten(1) @ lora[down].flatten(1)).reshape(view.shape)
                view += delta if function is None else function(delta)
                out[key] = w
                used |= {up, down, alpha} & set(lora)
            break
    return out, set(lora) - used


@pytest.fixture(scope="module")
def comfyui_weights(exports):
    """The bare and the merged tiny klein transformers as ComfyUI holds them; with its width and config."""
    from diffusers import Flux2Transformer2DModel

    bare = Flux2Transformer2DModel.from_pretrained(str(exports / "base"), subfolder="transformer")
    merged = Flux2Transformer2DModel.from_pretrained(str(exports / "merged"), subfolder="transformer")
    config = bare.config
    return {"bare": _comfyui_layout(_state(bare), config), "merged": _comfyui_layout(_state(merged), config),
            "hidden": config.num_attention_heads * config.attention_head_dim, "config": config,
            "linears": sum(isinstance(m, torch.nn.Linear) for m in bare.modules())}


def test_comfyui_reads_every_key_of_the_comfyui_export_exactly(exports, comfyui_weights):
    """Every key of the `comfyui` file lands on a weight of ComfyUI's FLUX.2 model, and the weights ComfyUI builds
    are the merged export's (the double blocks' q/k/v adapters as one fused qkv LoRA, the output norm's halves
    swapped)."""
    from safetensors.torch import load_file

    bare, merged = comfyui_weights["bare"], comfyui_weights["merged"]
    assert set(bare) == _comfyui_linears(comfyui_weights["config"])  # the rules reach every ComfyUI linear
    lora = load_file(str(exports / "comfyui" / "flux2_lora_comfyui.safetensors"))
    patched, unused = _comfyui_load(lora, bare, comfyui_weights["hidden"])
    assert unused == set()  # ComfyUI would log "lora key not loaded" for each
    assert sum(not torch.equal(patched[k], bare[k]) for k in bare) == len(bare) == 19  # 23 diffusers linears fused
    for key, want in merged.items():
        torch.testing.assert_close(patched[key], want, rtol=0, atol=1e-6 * want.abs().max().item(), msg=key)


def test_comfyui_reads_the_diffusers_export_only_in_part(exports, comfyui_weights):
    """Why the `comfyui` file exists: ComfyUI maps FLUX.1's diffusers names onto FLUX.2, so of the `diffusers` file it
    reads the double blocks' attention (q/k/v as row slices of the fused qkv) and the embedders, output projection
    and output norm (its halves swapped) exactly, and leaves the MLPs, single blocks, time embedder and shared
    modulations unread."""
    from safetensors.torch import load_file

    bare, merged = comfyui_weights["bare"], comfyui_weights["merged"]
    lora = load_file(str(exports / "diffusers" / "pytorch_lora_weights.safetensors"))
    patched, unused = _comfyui_load(lora, bare, comfyui_weights["hidden"])
    unread = {k.removeprefix("transformer.").split(".lora_")[0] for k in unused}
    assert unread == {"time_guidance_embed.timestep_embedder.linear_1",
                      "time_guidance_embed.timestep_embedder.linear_2", "double_stream_modulation_img.linear",
                      "double_stream_modulation_txt.linear",
                      "single_stream_modulation.linear", "transformer_blocks.0.ff.linear_in",
                      "transformer_blocks.0.ff.linear_out", "transformer_blocks.0.ff_context.linear_in",
                      "transformer_blocks.0.ff_context.linear_out", "single_transformer_blocks.0.attn.to_qkv_mlp_proj",
                      "single_transformer_blocks.0.attn.to_out"}
    prefix = COMFYUI["model"]["state_dict_prefix"]
    read = {f"{prefix}{n}.weight" for n in ("img_in", "txt_in", "final_layer.linear", "final_layer.adaLN_modulation.1",
                                            "double_blocks.0.img_attn.qkv", "double_blocks.0.img_attn.proj",
                                            "double_blocks.0.txt_attn.qkv", "double_blocks.0.txt_attn.proj")}
    assert {k for k in bare if not torch.equal(patched[k], bare[k])} == read
    for key in read:
        want = merged[key]
        torch.testing.assert_close(patched[key], want, rtol=0, atol=1e-6 * want.abs().max().item(), msg=key)


def test_the_plan_counts_the_published_klein_base_4b_as_diffusers_does():
    """The shipped configs are klein 4B's (diffusers' conversion script; Qwen3-4B): the planner's counts equal the
    parameters of diffusers' and transformers' own classes built on the meta device."""
    from diffusers import AutoencoderKLFlux2, Flux2Transformer2DModel
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from omnideft.adapters import AdapterSpec
    from omnideft.families.flux2.plan import PUBLISHED_ID, flux2_configs

    shapes = get_family("flux2").plan_entry().shapes(PUBLISHED_ID, AdapterSpec(method="deft", rank=32,
                                                                               projector="qr"))
    configs, source = flux2_configs(PUBLISHED_ID)
    with torch.device("meta"):
        transformer = Flux2Transformer2DModel.from_config(configs["transformer"])
        text_encoder = Qwen3ForCausalLM(Qwen3Config(**configs["text_encoder"]))
        vae = AutoencoderKLFlux2()
    assert shapes.base_params == sum(p.numel() for p in transformer.parameters()) == 3_875_544_576
    assert shapes.prompt_encoder_params == sum(p.numel() for p in text_encoder.parameters()) == 4_022_468_096
    assert shapes.vae_params == sum(p.numel() for p in vae.parameters()) == 84_046_115
    assert (shapes.hidden, shapes.heads, shapes.layers, source) == (3072, 24, 25, "")
    assert len(shapes.adapted) == sum(isinstance(m, torch.nn.Linear) for m in transformer.modules())  # all-linear


def test_training_on_in_context_shards_uses_the_references_and_learns(family, tmp_path):
    """The trainer's backend on shards whose samples carry an example pair and a query image (three references): a
    batch holds one token layout, the loss draws only from the generator handed in, the references change it, and a
    LoRA on it learns."""
    import contextlib

    from omnideft.adapters import AdapterSpec, apply_adapter
    from omnideft.adapters.apply import param_groups
    from omnideft.data.loader import ResumableBatches, index_sources
    from omnideft.data.sources import resolve_sources
    from omnideft.shapes.shards import write_task_shards
    from omnideft.train.recipe import load_recipe

    shards = write_task_shards(tmp_path / "s", ["fill"], n_samples=4, size=32, shard_size=2, n_examples=1)
    recipe = load_recipe(None, ["model.name=tiny", "model.family=flux2", f"data.shards=[{shards}]",
                                "data.max_image_size=32"])
    backend = family.training(recipe)
    components = backend.load("cpu")
    spec = AdapterSpec(method="lora", rank=2, targets=family.target_modules(components.transformer, "all-linear"))
    model = apply_adapter(components.transformer, spec)
    builder = backend.batch_builder(components)
    sources = resolve_sources([str(shards)])
    batch, _ = next(iter(ResumableBatches(sources, index_sources(sources), seed=0, batch_size=2,
                                          size_of=builder.output_size, build=builder).loader()))
    klein = batch["flux2"]
    assert len(klein.references) == 3 and klein.targets.shape == (2, 3, 32, 32)
    assert all(r.shape == (2, 3, 64, 64) for r in klein.references)  # the pipeline's smallest reference
    assert all("image 3" in p and "<|image" not in p for p in klein.prompts)

    def loss(b=batch):
        return backend.loss(model, components, b, torch.Generator().manual_seed(0), contextlib.nullcontext)

    first = loss()
    assert first.shape == (2,) and torch.equal(first, loss())  # every draw from the generator handed in
    blank = dict(batch, flux2=type(klein)(klein.prompts, klein.targets, [r * 0 for r in klein.references]))
    assert not torch.allclose(loss(blank), first)
    optimizer = torch.optim.Adam(param_groups(model, spec, lr=1e-2))
    for _ in range(15):
        optimizer.zero_grad()
        loss().mean().backward()
        optimizer.step()
    assert loss().mean() < 0.9 * first.mean()


def test_the_shipped_recipe_trains_with_bf16_checkpointing_and_validation_renders(tmp_path):
    """recipes/flux2_klein_deft_r32.yaml (DEFT r32 QR, bf16 autocast, gradient checkpointing) on the tiny klein, with
    a validation prompt holding a reference image; `omnideft plan` plans the published klein-base-4B from it."""
    from safetensors.torch import load_file

    from omnideft.generate.validation import ValidationRenderer
    from omnideft.shapes.shards import write_task_shards
    from omnideft.train.loop import train
    from omnideft.train.recipe import load_recipe
    from tests.helpers import REPO

    shards = write_task_shards(tmp_path / "s", ["fill"], n_samples=4, size=32, shard_size=2, n_examples=1)
    _noise_image(0).save(tmp_path / "q.png")
    recipe = load_recipe(REPO / "recipes" / "flux2_klein_deft_r32.yaml", [
        "model.name=tiny", f"data.shards=[{shards}]", "data.max_image_size=32", "train.max_steps=2",
        "train.batch_size=2", "train.checkpoint_every=0", f"output.dir={tmp_path / 'run'}", "validation.steps=2",
        f"validation.prompts=[{{prompt: 'flip <img><|image_1|></img>', images: [{tmp_path / 'q.png'}], "
        "height: 32, width: 48}]"])
    assert recipe.train.mixed_precision == "bf16" and recipe.train.gradient_checkpointing
    assert recipe.adapter.method == "deft" and recipe.adapter.rank == 32 and recipe.adapter.projector == "qr"
    adapter = train(recipe, progress=False, validate=ValidationRenderer(recipe.validation, recipe.data.max_image_size))
    assert {str(t.dtype) for t in load_file(adapter / "adapter_model.safetensors").values()} == {"torch.float32"}
    assert Image.open(tmp_path / "run" / "validation" / "step-0000002" / "00.png").size == (48, 32)
    plan = run_cli_here("plan", "recipes/flux2_klein_deft_r32.yaml", "--gpu-memory", "80GB")  # klein's 512 tokens
    assert plan.returncode == 0, plan.stderr
    assert "| frozen base | 15.50 | 3,875,544,576 params at fp32 |" in plan.stdout
    assert "4,022,468,096 params fp32" in plan.stdout and "512 text tokens" in plan.stdout


@pytest.mark.parametrize("method", ["deft", "lora"])
def test_the_plan_is_within_ten_percent_of_a_measured_step(method):
    """The activation model against the bytes a step of diffusers' Flux2Transformer2DModel keeps on the CPU
    (every linear adapted, text and references in the sequence), in fp32, bf16, fp32 under autocast and
    checkpointed."""
    from omnideft.adapters import AdapterSpec
    from omnideft.families.flux2.plan import measure_flux2_step, reduced_flux2_config
    from omnideft.sizing.estimate import Setup

    spec = AdapterSpec(method=method, rank=8, targets="all-linear", projector="qr" if method == "deft" else None)
    setups = [Setup(base="fp32", compute="fp32", checkpointing=False), Setup(base="bf16", compute="bf16"),
              Setup(base="fp32", compute="bf16"), Setup(base="fp32", compute="bf16", checkpointing=True)]
    for setup in setups:
        for heads, latent_side, refs in ((3, 8, 2), (6, 12, 1)):  # 216 and 312 tokens
            r = measure_flux2_step(reduced_flux2_config(heads=heads), spec, setup, text_tokens=24, input_images=refs,
                                   latent_side=latent_side)
            measured, predicted = r["measured"], r["predicted"]
            for part in measured:
                assert abs(predicted[part] / measured[part] - 1) <= 0.10, (setup, part, r["seq_len"],
                                                                          predicted[part], measured[part])
            assert predicted["saved"] != measured["saved"]  # a real comparison, not the same number twice
