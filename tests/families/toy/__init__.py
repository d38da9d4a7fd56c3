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
from omnideft.families.family import (
    ExportClient,
    FamilyOption,
    GenerationDefaults,
    ModelFamily,
    TrainingBackend,
    TrainingSettings,
)
from omnideft.families.generator import FamilyGenerator, check_sides
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
        "kv_cache": "has no key/value cache",
        "separate_cfg": "runs its guidance branches as one batch",
        "offload": "is small enough to stay on one device",
    }
    export_formats = {  # no published LoRA key layout to follow
        "peft-lora": (ExportClient("PEFT", "PeftModel.from_pretrained(transformer, folder)", "peft==0.21.2",
                                   "tests/test_families.py::test_export_round_trips_to_the_exact_merged_weights[toy]"),),
        "merged": (ExportClient("omnideft", "Toy.load(folder)", "this repository",
                                "tests/test_families.py::test_export_round_trips_to_the_exact_merged_weights[toy]"),),
    }
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

    def training_backend(self, settings: TrainingSettings) -> ToyTraining:
        return ToyTraining(self, settings)

    def generator_class(self) -> type[ToyGenerator]:
        return ToyGenerator

    def owns_components(self, components) -> bool:
        return isinstance(components, ToyComponents)

    def plan_entry(self):
        from tests.families.toy.plan import plan_entry

        return plan_entry()


class ToyTraining(TrainingBackend):
    """The trainer's backend (family.TrainingBackend) for the toy; `family.training(recipe)` has refused what the toy
    declares unsupported before it is made."""

    def load(self, device) -> ToyComponents:
        components = self.family.load(self.settings.model, seed=self.settings.model_seed)
        components.vae.to(device)
        return components

    def batch_builder(self, components: ToyComponents, *, latents=None, camera=None) -> ToyBatches:
        return ToyBatches(components.vocabulary, self.settings.condition_dropout, self.settings.seed)

    def loss(self, model, components, batch, noise, autocast):
        return rectified_flow_loss(model, batch["pixels"], batch["words"], noise, autocast)

    def load_adapter(self, components, folder):
        from omnideft.adapters import load_adapter

        return load_adapter(components.transformer, folder, family=self.family), None


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


class ToyGenerator(FamilyGenerator):
    """The one Generator surface (families/generator.py) on the toy: the shared code swaps adapters and checks the
    settings; the toy adds its output-size rule and its Euler sampler."""

    def __init__(self, family: Toy, components: ToyComponents, *, device: str = "auto", dtype: str = "auto",
                 merge: bool = True):
        super().__init__(family, components, device=device, dtype=dtype, merge=merge)
        components.transformer.to(self.device)

    def max_side(self) -> int:
        return self.transformer.max_side

    def output_size(self, images=(), height=None, width=None, max_input_image_size: int = 1024) -> tuple[int, int]:
        check_sides(height, width, self.transformer.config["patch"], self.max_side(), self.model_name)
        return height or self.defaults.size, width or self.defaults.size

    def _sample(self, instruction, images, *, height, width, steps, guidance, image_guidance, seed, negative_prompt,
                camera, max_input_image_size, progress, on_step, shift):
        image = sample(self.transformer, self.components.vocabulary, instruction, seed=seed, height=height,
                       width=width, steps=steps, guidance=guidance, negative_prompt=negative_prompt or "", shift=shift,
                       on_step=None if on_step is None else (lambda i, total: on_step(i)))
        return image.permute(1, 2, 0).numpy()


FAMILY = Toy()
