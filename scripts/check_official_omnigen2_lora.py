"""Run the official OmniGen2 pipeline's LoRA loader on each OmniGen2 export of one adapter, with the diffusers that is
importable: the `measured` record of tests/clients/omnigen2_facts.json (docs/export.md).

Needs a checkout of the official code (github.com/VectorSpaceLab/OmniGen2, Apache-2.0); only its
`omnigen2/pipelines/lora_pipeline.py` is loaded (it imports diffusers only). To try another diffusers, put it first on
the path for this run (e.g. `pip install --no-deps --target DIR diffusers==0.33.1`, then `PYTHONPATH=DIR:.`):

    PYTHONPATH=. python scripts/check_official_omnigen2_lora.py /path/to/OmniGen2 OUT_DIR

The pipeline object is a stand-in holding omnideft's tiny OmniGen2 transformer given diffusers' PeftAdapterMixin (as
the official OmniGen2Transformer2DModel has it; the module names are the same) and the two attributes of a
DiffusionPipeline the loader reads. Prints, per format, what the loader did: the weights it changed and their largest
difference from the merged export, "applied nothing", or the exception and the line it came from.
"""

from __future__ import annotations

import importlib.util
import sys
import traceback
from pathlib import Path

import diffusers
import torch
from diffusers.loaders import PeftAdapterMixin
from peft.tuners.tuners_utils import BaseTunerLayer

from omnideft.adapters import AdapterSpec, apply_adapter, save_adapter
from omnideft.adapters.compose import merge_adapters
from omnideft.export.run import run_export
from omnideft.families.omnigen2.model.folder import load_omnigen2
from omnideft.families.omnigen2.targets import target_modules


def official_loader(checkout: Path):
    spec = importlib.util.spec_from_file_location("official_lora_pipeline",
                                                  checkout / "omnigen2" / "pipelines" / "lora_pipeline.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.OmniGen2LoraLoaderMixin


def main(checkout: str, out_dir: str) -> None:
    mixin, out = official_loader(Path(checkout)), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = apply_adapter(load_omnigen2("tiny", seed=0).transformer, AdapterSpec(method="deft", rank=3, init="paper"),
                          targets=target_modules)
    adapter = save_adapter(model, out / "adapter", base_name="tiny", family="omnigen2", replace=True)
    want = merge_adapters(load_omnigen2("tiny", seed=0).transformer, [(str(adapter), 1.0)]).state_dict()
    bare = load_omnigen2("tiny", seed=0).transformer.state_dict()
    print(f"diffusers {diffusers.__version__}")
    for fmt in ("diffusers", "peft-lora", "kohya", "comfyui"):
        run_export(str(adapter), fmt, "tiny", str(out / fmt))
        transformer = load_omnigen2("tiny", seed=0).transformer
        transformer.__class__ = type("WithPublishedBases", (PeftAdapterMixin, type(transformer)), {})
        pipe = type("Pipeline", (mixin,), {})()
        pipe.transformer, pipe.hf_device_map, pipe.components = transformer, None, {"transformer": transformer}
        weights = next((out / fmt).glob("*.safetensors")).name
        try:
            pipe.load_lora_weights(str(out / fmt), weight_name=weights)
        except Exception as exc:  # what the official loader raises is the finding
            where = traceback.extract_tb(exc.__traceback__)[-1]
            print(f"{fmt}: {type(exc).__name__}: {exc} ({Path(where.filename).name}:{where.lineno})")
            continue
        if not hasattr(transformer, "peft_config"):
            print(f"{fmt}: applied nothing")
            continue
        for layer in transformer.modules():
            if isinstance(layer, BaseTunerLayer):
                layer.merge()
        got = {k.replace(".base_layer", ""): v for k, v in transformer.state_dict().items() if ".lora_" not in k}
        changed = sum(not torch.equal(got[k], bare[k]) for k in bare)
        err = max((got[k] - want[k]).abs().max().item() for k in want)
        print(f"{fmt}: {changed} weights changed, max |loaded - merged export| = {err:.3g}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
