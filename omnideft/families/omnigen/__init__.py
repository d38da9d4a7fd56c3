"""OmniGen (v1): one Phi-3 transformer reading text and image tokens, diffusers' `OmniGenTransformer2DModel`, a
4-channel VAE; hub id `Shitao/OmniGen-v1-diffusers` or a local folder in diffusers layout; presets `tiny` (random)
and `small` (pretrained at toy scale, shipped: a 64 px model)."""

from __future__ import annotations

from pathlib import Path

from omnideft.families.family import ExportClient, GenerationDefaults, ModelFamily


class OmniGen(ModelFamily):
    title = "OmniGen (v1)"
    pipeline_classes = ("OmniGenPipeline",)
    subfolders = ("transformer", "vae", "tokenizer", "scheduler")
    layout = "diffusers layout"
    presets = ("tiny", "small")
    hub_ids = True
    default = True
    # the shape-world study on the pretrained `small` (demo/run.py)
    pretrain_preset = "small"
    demo_preset = {"demo": "study", "steps": 420, "samples": 256, "queries": 16, "retention_queries": 4,
                   "replay": 0.0, "compare": "lora"}
    # `omnigen`: PEFT's layout in the original module names, which the official package's merge_lora (PEFT 0.9) reads
    peft_layout_formats = ("omnigen",)
    unsupported = {
        "mllm_targets": "has no separate MLLM (its adapter already covers the prompt's layers); leave it at none",
    }
    # What loads each export, as tested (docs/export.md). No diffusers LoRA loader exists for OmniGen, and neither
    # ComfyUI nor kohya's sd-scripts has an OmniGen (v1) model: those formats have no consumer here. The official
    # OmniGen package's merge_lora takes the original module names: the `omnigen` format.
    export_formats = {
        "peft-lora": (ExportClient("PEFT", "PeftModel.from_pretrained(OmniGenTransformer2DModel, folder)",
                                   "peft==0.21.2, diffusers==0.42.1",
                                   "tests/test_export.py::test_peft_lora_export_loads_in_stock_peft_and_matches"),),
        "omnigen": (ExportClient("the official OmniGen package", "OmniGenPipeline.merge_lora(folder)",
                                 "omnigen==1.0.3, peft==0.9.0, transformers==4.45.2, diffusers==0.30.3 (CPU torch: "
                                 "scripts/omnigen_client_env.sh)",
                                 "tests/clients/test_omnigen_package.py::"
                                 "test_the_official_package_merges_the_omnigen_export_exactly"),),
        "merged": (ExportClient("diffusers", "OmniGenPipeline.from_pretrained(folder)", "diffusers==0.42.1",
                                "tests/test_export_clients.py::test_omnigen_merged_folder_loads_in_diffusers_pipeline"),
                   ExportClient("omnideft", "omnideft generate --model folder", "this repository",
                                "tests/test_families.py::test_export_round_trips_to_the_exact_merged_weights[omnigen]")),
    }

    parts = {  # ModelFamily.parts: imported when first asked
        "target_modules": ".targets:target_modules",
        "plan_entry": ".plan:plan_entry",
        "lora_keys": ".export:lora_keys",
        "training": ".training:OmniGenTraining",
        "generator": ".generator:OmniGenGenerator",
        "components": ".model.loading:OmniGenComponents",
        "pretraining": ".pretrain",
        "convert_original": ".model.convert:convert_original_checkpoint",
    }

    def defaults(self, name: str) -> GenerationDefaults:
        from omnideft.families.omnigen.processor import NEGATIVE_PROMPT

        if name == "small":  # pretrained at 64 px, sampled with 20 steps (docs/models.md)
            return GenerationDefaults(64, 20, 2.5, 1.6, negative_prompt=NEGATIVE_PROMPT, probes="shapes")
        return GenerationDefaults(1024, 50, 2.5, 1.6, negative_prompt=NEGATIVE_PROMPT)

    def load(self, name: str, *, dtype=None, seed: int = 0, revision: str | None = None, quantize=None):
        import torch

        from omnideft.families.omnigen.model.loading import load_omnigen

        return load_omnigen(name, revision=revision, dtype=dtype or torch.float32, seed=seed, quantize=quantize)

    def save(self, components, folder: Path) -> None:
        from omnideft.families.omnigen.model.loading import save_base

        save_base(components, folder, overwrite=True)


FAMILY = OmniGen()
