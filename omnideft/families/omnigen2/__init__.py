"""OmniGen2: a Qwen2.5-VL prompt encoder (frozen MLLM) beside omnideft's own Lumina2-style diffusion transformer and
a 16-channel VAE, in the published folder layout (`OmniGen2/OmniGen2`: transformer/, vae/, mllm/, processor/,
scheduler/); preset `tiny` (random). docs/omnigen2.md."""

from __future__ import annotations

from pathlib import Path

from omnideft.families.family import ExportClient, FamilyOption, GenerationDefaults, ModelFamily

V1_ONLY = "does not take it yet (docs/omnigen2.md)"
OFFICIAL = "VectorSpaceLab/OmniGen2@0f72fa9"  # the official code the facts were read from (tests/clients/)
COMFYUI = "source read at pollockjj/ComfyUI@618b803 (tracks comfyanonymous/ComfyUI)"


class OmniGen2(ModelFamily):
    title = "OmniGen2"
    pipeline_classes = ("OmniGen2Pipeline",)
    subfolders = ("transformer", "vae", "mllm", "processor", "scheduler")
    layout = "OmniGen2 published layout"
    presets = ("tiny",)
    hub_ids = False
    max_input_images = 5  # rows of the published transformer's image_index_embedding
    demo_preset = {"demo": "tiny-run", "steps": 30, "samples": 8}  # a small run on the tiny OmniGen2 (demo/tiny_run.py)
    unsupported = {
        "camera": "has no camera conditioning (cameras are OmniGen (v1) only)",
        "quantize": V1_ONLY,
        "latents": V1_ONLY,
        "kv_cache": V1_ONLY,
        "separate_cfg": V1_ONLY,
        "offload": V1_ONLY,
        "revision": "loads from a local folder or a preset, which have no hub revision",
    }
    # What loads each export, as tested (docs/export.md; the clients' rules are recorded from their source in
    # tests/clients/). ComfyUI uses no key of the peft-lora and diffusers files; the official pipeline's loader applies
    # nothing of the peft-lora, kohya and comfyui files.
    export_formats = {
        "peft-lora": (ExportClient(
            "PEFT", "PeftModel.from_pretrained(transformer, folder)", "peft==0.21.2",
            "tests/test_export_clients.py::test_peft_loads_the_omnigen2_export_on_the_published_names",
            "on omnideft's transformer; the official OmniGen2Transformer2DModel has the same parameter names "
            "(recorded), not run"),),
        "diffusers": (ExportClient(
            "official OmniGen2 pipeline", "OmniGen2Pipeline.load_lora_weights(folder)",
            f"{OFFICIAL} with diffusers 0.33.1 (scripts/check_official_omnigen2_lora.py); its loader's steps with "
            "diffusers==0.42.1",
            "tests/test_export_clients.py::test_official_omnigen2_loader_reads_the_diffusers_export_exactly",
            "works with diffusers 0.33.x; the official loader crashes on any file with diffusers >= 0.34 (its "
            "lora_pipeline.py takes _fetch_state_dict's new (state_dict, metadata) tuple for the state dict) - not "
            "this file"),),
        "comfyui": (ExportClient(
            "ComfyUI", "load_lora_for_models (LoraLoaderModelOnly) on load_diffusion_model's OmniGen2", COMFYUI,
            "tests/test_export_clients.py::test_comfyui_reads_every_key_of_the_omnigen2_export_exactly[comfyui]",
            "its key rules and LoRA math, read from its source, applied in the test; ComfyUI not run"),),
        "kohya": (ExportClient(
            "ComfyUI", "load_lora_for_models (LoraLoaderModelOnly) on load_diffusion_model's OmniGen2", COMFYUI,
            "tests/test_export_clients.py::test_comfyui_reads_every_key_of_the_omnigen2_export_exactly[kohya]",
            "kohya's sd-scripts has no OmniGen2 model; ComfyUI reads kohya's lora_unet_ names"),),
        "merged": (ExportClient(
            "omnideft", "omnideft generate --model folder", "this repository",
            "tests/test_families.py::test_export_round_trips_to_the_exact_merged_weights[omnigen2]"),
            ExportClient(
            "official OmniGen2 code", "OmniGen2Transformer2DModel.from_pretrained(folder/transformer), each part so",
            OFFICIAL, "tests/test_export_clients.py::test_omnigen2_merged_folder_has_the_published_parameter_names",
            "the layout and parameter names the official classes loaded when the reference outputs were recorded "
            "(scripts/record_omnigen2_reference.py); not run in the tests")),
    }
    generate_options = (
        FamilyOption("scheduler", "scheduler", "euler", "sampler", choices=("euler", "dpmsolver++")),
        FamilyOption("cfg_range", "cfg-range", (0.0, 1.0), "guidance on the steps in this fraction of the schedule",
                     type=float, nargs=2, metavar=("START", "END")),
    )

    parts = {  # ModelFamily.parts: imported when first asked
        "target_modules": ".targets:target_modules",
        "plan_entry": ".plan:plan_entry",
        "lora_keys": ".export:lora_keys",
        "training": ".training:OmniGen2Training",
        "generator": ".generator:OmniGen2Generator",
        "components": ".model.folder:OmniGen2Components",
    }

    def defaults(self, name: str) -> GenerationDefaults:
        from omnideft.families.omnigen2.model.prompt import NEGATIVE_PROMPT

        return GenerationDefaults(size=1024, steps=50, guidance=5.0, image_guidance=2.0,  # the published script's
                                  negative_prompt=NEGATIVE_PROMPT)

    def load(self, name: str, *, dtype=None, seed: int = 0, revision: str | None = None, quantize=None):
        import torch

        from omnideft.families.omnigen2.model.folder import load_omnigen2

        if revision:
            self.refuse("revision", f"model.revision={revision}")
        if quantize:
            self.refuse("quantize", f"quantize={quantize}")
        return load_omnigen2(name, dtype=dtype or torch.float32, seed=seed)

    def save(self, components, folder: Path) -> None:
        from omnideft.families.omnigen2.model.folder import save_omnigen2

        save_omnigen2(components, folder, overwrite=True)

    def adapter_extras(self, folder) -> str | None:
        from omnideft.families.omnigen2.mllm import has_mllm_adapter

        # adapter.mllm_targets: an adapter on the MLLM's language layers too
        return "the MLLM part (mllm_adapter.*)" if has_mllm_adapter(folder) else None

    def merge_adapter_extras(self, components, folder) -> str:
        from omnideft.families.omnigen2.mllm import has_mllm_adapter, merge_mllm_adapters

        if not has_mllm_adapter(folder):
            return ""
        components.mllm = merge_mllm_adapters(components.mllm, [(str(folder), 1.0)])
        return "its MLLM part folded into the MLLM"


FAMILY = OmniGen2()
