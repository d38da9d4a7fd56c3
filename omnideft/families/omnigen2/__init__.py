"""OmniGen2: a Qwen2.5-VL prompt encoder (frozen MLLM) beside omnideft's own Lumina2-style diffusion transformer and
a 16-channel VAE, in the published folder layout (`OmniGen2/OmniGen2`: transformer/, vae/, mllm/, processor/,
scheduler/); preset `tiny` (random). docs/omnigen2.md."""

from __future__ import annotations

from pathlib import Path

from omnideft.families.family import FamilyOption, GenerationDefaults, ModelFamily

V1_ONLY = "does not take it yet (docs/omnigen2.md)"


class OmniGen2(ModelFamily):
    title = "OmniGen2"
    pipeline_classes = ("OmniGen2Pipeline",)
    subfolders = ("transformer", "vae", "mllm", "processor", "scheduler")
    presets = ("tiny",)
    hub_ids = False
    max_input_images = 5  # rows of the published transformer's image_index_embedding
    unsupported = {
        "camera": "has no camera conditioning (cameras are OmniGen (v1) only)",
        "quantize": V1_ONLY,
        "latents": V1_ONLY,
        "revision": "loads from a local folder or a preset, which have no hub revision",
    }
    generate_options = (
        FamilyOption("scheduler", "scheduler", "euler", "sampler", choices=("euler", "dpmsolver++")),
        FamilyOption("cfg_range", "cfg-range", (0.0, 1.0), "guidance on the steps in this fraction of the schedule",
                     type=float, nargs=2, metavar=("START", "END")),
    )

    def defaults(self, name: str) -> GenerationDefaults:
        return GenerationDefaults(size=1024, steps=50, guidance=5.0, image_guidance=2.0)  # the published script's

    def load(self, name: str, *, dtype=None, seed: int = 0, revision: str | None = None, quantize=None):
        import torch

        from omnideft.model.omnigen2.folder import load_omnigen2

        if revision:
            self.refuse("revision", f"model.revision={revision}")
        if quantize:
            self.refuse("quantize", f"quantize={quantize}")
        return load_omnigen2(name, dtype=dtype or torch.float32, seed=seed)

    def save(self, components, folder: Path) -> None:
        from omnideft.model.omnigen2.folder import save_omnigen2

        save_omnigen2(components, folder, overwrite=True)

    def target_modules(self, transformer, preset, include_embedders: bool = False) -> list[str]:
        from omnideft.model.targets import target_module_names

        return target_module_names(transformer, preset, include_embedders)


FAMILY = OmniGen2()
