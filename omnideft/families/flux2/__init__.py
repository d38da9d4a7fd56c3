"""FLUX.2 [klein]: diffusers' Flux2Transformer2DModel with a Qwen3 text encoder and the FLUX.2 VAE
(AutoencoderKLFlux2), run through diffusers' own Flux2KleinPipeline; loaded from a diffusers folder in the published
layout (`black-forest-labs/FLUX.2-klein-base-4B`: model_index.json naming Flux2KleinPipeline, transformer/, vae/,
text_encoder/, tokenizer/, scheduler/) or a hub id; preset `tiny` (random). docs/flux2.md."""

from __future__ import annotations

import json
from pathlib import Path

from omnideft.families.family import ExportClient, GenerationDefaults, ModelFamily
from omnideft.families.flux2.prompt import MAX_REFERENCE_IMAGES

NOT_YET = "does not take it yet (docs/flux2.md)"
DIFFUSERS = "diffusers==0.42.1"
LOAD_LORA_TEST = "tests/test_flux2.py::test_the_diffusers_export_loads_with_load_lora_weights_as_the_merged_weights"
COMFYUI = "source read at pollockjj/ComfyUI@618b803 (tracks comfyanonymous/ComfyUI)"


class Flux2Klein(ModelFamily):
    title = "FLUX.2 [klein]"
    pipeline_classes = ("Flux2KleinPipeline",)
    subfolders = ("transformer", "vae", "text_encoder", "tokenizer", "scheduler")
    layout = "diffusers layout (Flux2KleinPipeline)"
    presets = ("tiny",)
    hub_ids = True
    max_input_images = MAX_REFERENCE_IMAGES  # klein 4B / 9B: up to four reference images (BFL's documentation)
    unsupported = {
        "camera": "has no camera conditioning (cameras are OmniGen (v1) only)",
        "quantize": NOT_YET,
        "latents": NOT_YET,
        "kv_cache": "has no exact key/value cache of its references: they attend to the noisy tokens and are "
                    "modulated by the timestep in every block (docs/flux2.md)",
        "separate_cfg": "runs diffusers' Flux2KleinPipeline, which runs its guidance branches one after the other",
        "offload": NOT_YET,
        "mllm_targets": "has a Qwen3 text encoder, not an MLLM; leave adapter.mllm_targets at none",
        "image_guidance": "has no separate image guidance: its reference images are guided with the prompt by "
                          "--guidance",
    }
    export_formats = {
        "peft-lora": (ExportClient(
            "PEFT", "PeftModel.from_pretrained(transformer, folder)", "peft==0.21.2",
            "tests/test_families.py::test_export_round_trips_to_the_exact_merged_weights[flux2]",
            "on diffusers' Flux2Transformer2DModel (the module names are diffusers')"),),
        "diffusers": (ExportClient(
            "diffusers", "Flux2KleinPipeline.load_lora_weights(folder)", f"{DIFFUSERS}, peft==0.21.2", LOAD_LORA_TEST,
            "every tensor applied; the adapted transformer equals the merged export"),),
        "comfyui": (ExportClient(
            "ComfyUI", "load_lora_for_models (LoraLoaderModelOnly) on a FLUX.2 diffusion model", COMFYUI,
            "tests/test_flux2.py::test_comfyui_reads_every_key_of_the_comfyui_export_exactly",
            "its key rules and LoRA math, read from its source, applied in the test; ComfyUI not run; the double "
            "blocks' q/k/v are one fused qkv LoRA of rank 3r"),),
        "merged": (ExportClient(
            "omnideft", "omnideft generate --model folder", "this repository",
            "tests/test_families.py::test_export_round_trips_to_the_exact_merged_weights[flux2]"),
            ExportClient(
            "diffusers", "Flux2KleinPipeline.from_pretrained(folder)", DIFFUSERS,
            "tests/test_flux2.py::test_the_merged_export_is_a_diffusers_pipeline_folder")),
    }

    parts = {  # ModelFamily.parts: imported when first asked
        "target_modules": ".targets:target_modules",
        "plan_entry": ".plan:plan_entry",
        "lora_keys": ".export:lora_keys",
        "training": ".training:Flux2Training",
        "generator": ".generator:Flux2Generator",
        "components": ".model:Flux2Components",
    }

    def defaults(self, name: str) -> GenerationDefaults:
        """The base models: 50 steps at guidance 4 (their model cards and the pipeline's default); the step-distilled
        klein: 4 steps without guidance. A folder says which in its model_index.json (`is_distilled`); a hub id by
        its name (the base models' ids hold "base")."""
        if _is_distilled(name):
            return GenerationDefaults(size=1024, steps=4, guidance=1.0, image_guidance=1.0)
        return GenerationDefaults(size=1024, steps=50, guidance=4.0, image_guidance=1.0)

    def load(self, name: str, *, dtype=None, seed: int = 0, revision: str | None = None, quantize=None):
        import torch

        from omnideft.families.flux2.model import load_flux2

        if quantize:
            self.refuse("quantize", f"quantize={quantize}")
        return load_flux2(name, dtype=dtype or torch.float32, seed=seed, revision=revision)

    def save(self, components, folder: Path) -> None:
        from omnideft.families.flux2.model import save_flux2

        save_flux2(components, folder)


def _is_distilled(name: str) -> bool:
    index = Path(name).expanduser() / "model_index.json"
    if index.is_file():
        try:
            return bool(json.loads(index.read_text()).get("is_distilled", False))
        except (json.JSONDecodeError, AttributeError, UnicodeDecodeError, OSError):
            return False  # loading names the broken file
    lowered = name.lower()
    return "klein" in lowered and "base" not in lowered and "/" in name


FAMILY = Flux2Klein()
