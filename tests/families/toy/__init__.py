"""A toy third model family, the proof of the family interface (omnideft/families/family.py): a ~2k-parameter
pixel-space DiT (model.py) with a bag-of-words prompt, no VAE (pixels are the latents), trained with rectified flow
and sampled with Euler steps and text guidance. It is this folder plus one `register_family` line
(tests/conftest.py); the conformance suite (tests/test_families.py) runs it like every other family."""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn

from omnideft.errors import UserError
from omnideft.families.family import FamilyOption, GenerationDefaults, ModelFamily
from tests.families.toy.model import SIZE, VOCABULARY, ToyTransformer, rectified_flow_loss, sample, word_ids

WEIGHTS = "diffusion_pytorch_model.safetensors"


class PixelSpace(nn.Module):
    """The toy's "VAE": pixels are the latents (shared code may move it to a device or fingerprint it)."""

    def encode(self, pixels):
        return pixels

    def decode(self, latents):
        return latents


@dataclass
class ToyComponents:
    transformer: ToyTransformer
    name: str
    vocabulary: tuple[str, ...] = VOCABULARY
    vae: PixelSpace = field(default_factory=PixelSpace)


class Toy(ModelFamily):
    title = "Toy DiT"
    pipeline_classes = ("ToyPipeline",)
    subfolders = ("transformer", "vocabulary")
    presets = ("tiny",)
    hub_ids = False
    max_input_images = 0  # text to image only
    unsupported = {
        "camera": "has no camera conditioning",
        "quantize": "has nothing worth quantizing",
        "latents": "has no VAE: its latents are the pixels",
        "mllm_targets": "has no MLLM; leave it at none",
        "revision": "loads from a local folder or a preset, which have no hub revision",
    }
    export_formats = ("peft-lora", "merged")  # no published LoRA key layout to follow
    generate_options = (FamilyOption("shift", "toy-shift", 1.0, "timestep shift of the Euler schedule", type=float),)

    def defaults(self, name: str) -> GenerationDefaults:
        return GenerationDefaults(size=SIZE, steps=4, guidance=2.0, image_guidance=1.0)

    def load(self, name: str, *, dtype=None, seed: int = 0, revision: str | None = None, quantize=None):
        if revision:
            self.refuse("revision", f"model.revision={revision}")
        if quantize:
            self.refuse("quantize", f"quantize={quantize}")
        if name == "tiny":
            torch.manual_seed(seed)
            transformer = ToyTransformer()
            with torch.no_grad():  # visible position tables (zeros would make every patch alike)
                transformer.rows.normal_(std=0.5)
                transformer.cols.normal_(std=0.5)
            vocabulary = VOCABULARY
        else:
            folder = Path(name)
            if not self.owns_folder(folder):
                raise UserError(f"model {name!r} is neither 'tiny' nor a {self.title} folder")
            transformer = ToyTransformer(**json.loads((folder / "transformer" / "config.json").read_text()))
            transformer.load_state_dict(load_file(folder / "transformer" / WEIGHTS))
            vocabulary = tuple(json.loads((folder / "vocabulary" / "vocab.json").read_text()))
        return ToyComponents(transformer.to(dtype or torch.float32).eval().requires_grad_(False), name, vocabulary)

    def save(self, components: ToyComponents, folder: Path) -> None:
        folder = Path(folder)
        (folder / "transformer").mkdir(parents=True, exist_ok=True)
        (folder / "vocabulary").mkdir(exist_ok=True)
        transformer = components.transformer
        state = {k: v.detach().contiguous().cpu() for k, v in transformer.state_dict().items()}
        save_file(state, folder / "transformer" / WEIGHTS)
        (folder / "transformer" / "config.json").write_text(json.dumps(transformer.config))
        (folder / "vocabulary" / "vocab.json").write_text(json.dumps(list(components.vocabulary)))
        (folder / "model_index.json").write_text(json.dumps({"_class_name": "ToyPipeline",
                                                             "transformer": ["toy", "ToyTransformer"]}))

    def target_modules(self, transformer, preset, include_embedders: bool = False) -> list[str]:
        linears = [name for name, m in transformer.named_modules() if isinstance(m, nn.Linear)]
        if isinstance(preset, list):
            return [n for n in linears if any(n == s or n.endswith("." + s) for s in preset)]
        if preset not in ("attn", "all-linear"):
            raise UserError(f"adapter.targets {preset!r} is not a preset ('attn', 'all-linear') or a list of module "
                            "names")
        kinds = (".attn.",) if preset == "attn" else (".attn.", ".up", ".down")
        chosen = [n for n in linears if n.startswith("blocks.") and any(k in n for k in kinds)]
        return chosen + [n for n in linears if include_embedders and not n.startswith("blocks.")]

    def training(self, recipe) -> ToyTraining:
        return ToyTraining(self, recipe)

    def generator(self, components: ToyComponents, **settings) -> ToyGenerator:
        return ToyGenerator(self, components, **settings)

    def lora_keys(self, fmt: str):
        raise UserError(f"export format {fmt}: {self.title} exports peft-lora and merged weights only")


class ToyTraining:
    """The trainer's backend (family.TrainingBackend) for the toy."""

    def __init__(self, family: Toy, recipe):
        for feature, key, value in (("quantize", "model.quantize", recipe.model.quantize),
                                    ("latents", "data.latents", recipe.data.latents)):
            if value:
                family.refuse(feature, f"{key}={value}")
        if recipe.camera.encoding not in ("auto", "none"):
            family.refuse("camera", f"camera.encoding={recipe.camera.encoding}")
        if recipe.adapter.mllm_targets != "none":
            family.refuse("mllm_targets", f"adapter.mllm_targets={recipe.adapter.mllm_targets}")
        for i, item in enumerate(recipe.validation.prompts):
            images = item.get("images", []) if isinstance(item, dict) else []
            family.check_input_images(len(images), f"images in validation.prompts[{i}]")
        self.family, self.recipe = family, recipe

    def load(self, device) -> ToyComponents:
        components = self.family.load(self.recipe.model.name, seed=self.recipe.model.seed)
        components.vae.to(device)
        return components

    def after_adapter(self, components, spec) -> None:
        pass

    def batch_builder(self, components: ToyComponents, *, latents=None, camera=None) -> ToyBatches:
        return ToyBatches(components.vocabulary, self.recipe.data.condition_dropout, self.recipe.train.seed)

    def loss(self, model, components, batch, noise, autocast):
        return rectified_flow_loss(model, batch["pixels"], batch["words"], noise, autocast)

    def save_base(self, components, folder) -> None:
        self.family.save(components, folder)


class ToyBatches:
    """Examples -> {"pixels", "words", "tasks"}: every target at the native size (one bucket); a prompt is dropped
    (guidance's unconditional branch) by a draw seeded by the example's place in the training order."""

    def __init__(self, vocabulary, condition_dropout: float, seed: int):
        self.vocabulary, self.dropout, self.seed = vocabulary, condition_dropout, seed

    @staticmethod
    def output_size(example) -> tuple[int, int]:
        return SIZE, SIZE

    def __call__(self, examples) -> dict:
        prompts = [ex.instruction if zlib.crc32(f"{self.seed}:{ex.order_id}".encode()) % 1000 >= 1000 * self.dropout
                   else "" for ex in examples]
        pixels = [to_pixels(ex.output.convert("RGB").resize((SIZE, SIZE), Image.BICUBIC)) for ex in examples]
        return {"pixels": torch.stack(pixels), "words": word_ids(prompts, self.vocabulary),
                "tasks": [ex.task for ex in examples]}


def to_pixels(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)


class ToyGenerator:
    """The one Generator surface (family.Generator) on the toy: adapters are merged into the weights and swapped by
    restoring the bare base's weights kept at construction (the base is never read again)."""

    def __init__(self, family: Toy, components: ToyComponents, *, device: str = "cpu", dtype: str = "float32",
                 adapters=()):
        from omnideft.adapters.fingerprint import base_fingerprint

        self.family, self.components, self.model_name = family, components, components.name
        self.device, self.dtype = "cpu" if device == "auto" else device, dtype
        self.transformer = components.transformer.to(self.device)
        self.fingerprint = base_fingerprint(self.transformer)
        self._bare = {k: v.clone() for k, v in self.transformer.state_dict().items()}
        self.adapters: list[tuple[str, float]] = []
        self.set_adapters(adapters)

    def set_adapters(self, adapters) -> None:
        from omnideft.adapters.compose import merge_adapters
        from omnideft.generate.settings import as_adapter_list

        adapters = as_adapter_list(adapters)
        self.transformer.load_state_dict(self._bare)
        self.adapters = []
        if adapters:
            self.transformer = merge_adapters(self.transformer, adapters)
        self.adapters = adapters

    def output_size(self, images=(), height=None, width=None, max_input_image_size: int = 1024) -> tuple[int, int]:
        self.family.check_input_images(len(images))
        patch, top = self.transformer.config["patch"], self.transformer.max_side
        for label, side in (("height", height), ("width", width)):
            if side is not None and (side < patch or side % patch or side > top):
                raise UserError(f"{label} {side}: {self.family.title} makes sides of {patch} to {top} px in steps "
                                f"of {patch}")
        native = self.family.defaults(self.model_name).size
        return height or native, width or native

    def __call__(self, prompt: str, images=(), examples=(), *, seed: int = 0, n: int = 1, height=None, width=None,
                 steps=None, guidance=None, image_guidance=None, negative_prompt=None, max_input_image_size=1024,
                 progress=False, on_step=None, output_type="pil", shift: float = 1.0) -> list:
        if n < 1:
            raise UserError(f"number of images {n} must be at least 1")
        self.family.check_input_images(len(images) + 2 * len(examples))
        defaults = self.family.defaults(self.model_name)
        height, width = self.output_size(images, height, width, max_input_image_size)
        steps = defaults.steps if steps is None else steps
        if steps < 1:
            raise UserError(f"steps {steps} must be at least 1")
        out = []
        for k in range(n):
            step_done = None if on_step is None else (lambda i, total, k=k: on_step(k * total + i, n * total))
            image = sample(self.transformer, self.components.vocabulary, prompt, seed=seed + k, height=height,
                           width=width, steps=steps, guidance=defaults.guidance if guidance is None else guidance,
                           negative_prompt=negative_prompt or "", shift=shift, on_step=step_done)
            array = image.permute(1, 2, 0).numpy()
            out.append(Image.fromarray((array * 255).round().astype(np.uint8)) if output_type == "pil" else array)
        return out


FAMILY = Toy()
