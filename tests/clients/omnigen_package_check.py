"""Run the official OmniGen (v1) package's own loader on `omnideft export --format omnigen` folders.

Runs with the python of the package's environment (scripts/omnigen_client_env.sh), never omnideft's: it imports only
the package and what the package pins (PEFT 0.9.0, transformers 4.45.2, diffusers 0.30.3), so it does not import
omnideft. Argument: a JSON file
  {"base": ORIGINAL-LAYOUT BASE FOLDER, "render": true|false,
   "adapters": [{"name": ..., "lora": EXPORT FOLDER, "reference": MERGED WEIGHTS IN THE ORIGINAL LAYOUT}, ...]}
Prints one line per measurement and, last, one JSON line with the numbers (tests/clients/test_omnigen_package.py
reads it). For each adapter:
  - loading: PeftModel.from_pretrained, the call merge_lora makes: LoRA tensors in the file, and how many of them
    the PEFT model holds, equal to the file's (PEFT 0.9 drops a tensor whose module it did not wrap in silence);
  - merging: the package's `OmniGenPipeline.merge_lora(path)` on an fp32 model: the modules whose weights changed and
    max |dW| of every weight against omnideft's merged export (the reference);
  - the same merge at the pipeline's default bf16 (informational: bf16 rounding of W + BA);
  - with "render": one 64 px image of 2 steps from the merged pipeline, and whether it differs from the bare base's.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import sys
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402
import peft  # noqa: E402
import torch  # noqa: E402
from diffusers import AutoencoderKL  # noqa: E402
from OmniGen import OmniGen, OmniGenPipeline, OmniGenProcessor  # noqa: E402
from OmniGen import pipeline as package_pipeline  # noqa: E402
from OmniGen.model import TimestepEmbedder  # noqa: E402
from peft import PeftModel  # noqa: E402
from peft.utils import get_peft_model_state_dict  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from transformers import Phi3Config  # noqa: E402
from transformers.utils import is_torch_npu_available  # noqa: E402

# OmniGen 1.0.3's pipeline.py calls is_torch_npu_available() without importing it, so on a machine with neither
# CUDA nor MPS its constructor stops with a NameError: the check supplies the function (transformers') it meant.
package_pipeline.is_torch_npu_available = is_torch_npu_available

PACKAGE_GRID = 192  # OmniGen.from_pretrained builds pos_embed for a 192 x 192 patch grid
PACKAGE_FREQUENCIES = 256  # and timestep embedders reading 256 sinusoid frequencies


def build_pipeline(base: Path, weights: dict, report: dict) -> OmniGenPipeline:
    """The package's pipeline on `base`: OmniGenPipeline.from_pretrained when the checkpoint has the package's fixed
    sizes; else the same parts built by hand from the package's classes at the checkpoint's sizes (OmniGen(config,
    pos_embed_max_size=...), its TimestepEmbedder(hidden, frequency_embedding_size=...)), since from_pretrained
    takes no other."""
    grid = math.isqrt(weights["pos_embed"].shape[1])
    frequencies = weights["time_token.mlp.0.weight"].shape[1]
    report["pos_embed_grid"], report["timestep_frequencies"] = grid, frequencies
    if (grid, frequencies) == (PACKAGE_GRID, PACKAGE_FREQUENCIES):
        report["built_by"] = "OmniGenPipeline.from_pretrained"
        return OmniGenPipeline.from_pretrained(str(base))
    model = OmniGen(Phi3Config.from_pretrained(str(base)), in_channels=weights["x_embedder.proj.weight"].shape[1],
                    pos_embed_max_size=grid)
    hidden = model.llm.config.hidden_size
    model.time_token = TimestepEmbedder(hidden, frequency_embedding_size=frequencies)
    model.t_embedder = TimestepEmbedder(hidden, frequency_embedding_size=frequencies)
    model.load_state_dict(weights, strict=True)
    report["built_by"] = (f"OmniGenPipeline(vae, OmniGen(config, pos_embed_max_size={grid}) with "
                          f"TimestepEmbedder(frequency_embedding_size={frequencies}), processor)")
    return OmniGenPipeline(AutoencoderKL.from_pretrained(str(base / "vae")), model,
                           OmniGenProcessor.from_pretrained(str(base)))


def fp32(pipe: OmniGenPipeline, weights: dict) -> OmniGenPipeline:
    """The pipeline casts its model to bf16; back to the checkpoint's exact fp32 weights."""
    pipe.model.to(torch.float32)
    pipe.model.load_state_dict(weights, strict=True)
    return pipe


def lora_loading(model, lora: Path) -> dict:
    """What PeftModel.from_pretrained (merge_lora's first call) takes of the file."""
    in_file = load_file(str(lora / "adapter_model.safetensors"))
    peft_model = PeftModel.from_pretrained(copy.deepcopy(model), str(lora))
    held = get_peft_model_state_dict(peft_model)
    applied = [k for k, v in in_file.items() if k in held and torch.equal(held[k].float(), v.float())]
    wrapped = [n for n, m in peft_model.named_modules() if hasattr(m, "lora_A") and "default" in m.lora_A]
    return {"tensors_in_file": len(in_file), "tensors_applied": len(applied), "modules_wrapped": len(wrapped),
            "not_applied": sorted(set(in_file) - set(applied))[:5]}


def merged_weights(pipe: OmniGenPipeline, lora: Path) -> dict:
    pipe.merge_lora(str(lora))
    return {k: v.detach().clone() for k, v in pipe.model.get_base_model().state_dict().items()}


def compare(before: dict, after: dict, reference: dict) -> dict:
    changed = sorted({k.rsplit(".", 1)[0] for k in before if not torch.equal(before[k], after[k])})
    assert set(after) == set(reference), sorted(set(after) ^ set(reference))[:5]
    diffs = {k: (after[k].float() - reference[k].float()).abs().max().item() for k in reference}
    worst = max(diffs, key=diffs.get)
    return {"modules_changed": len(changed), "changed": changed, "max_abs_dW": diffs[worst],
            "worst_key": worst if diffs[worst] else None}


def render(pipe: OmniGenPipeline) -> np.ndarray:
    image = pipe("a red circle", height=64, width=64, num_inference_steps=2, guidance_scale=2.5,
                 dtype=torch.float32, seed=0)[0]
    return np.asarray(image)


def main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    base = Path(spec["base"])
    weights = load_file(str(base / "model.safetensors"))
    report: dict = {"peft": peft.__version__, "torch": torch.__version__, "adapters": {}}
    try:  # what the package's own from_pretrained does with this folder
        OmniGen.from_pretrained(str(base))
        report["omnigen_from_pretrained"] = "ok"
    except Exception as exc:  # noqa: BLE001 - reported, then built by hand
        mismatched = re.findall(r"size mismatch for ([\w.]+)", str(exc))
        report["omnigen_from_pretrained"] = (f"{type(exc).__name__}: size mismatch for {', '.join(mismatched)}"
                                             if mismatched else f"{type(exc).__name__}: {str(exc)[:200]}")
    print(f"OmniGen.from_pretrained(base): {report['omnigen_from_pretrained']}")
    bare_image = render(fp32(build_pipeline(base, weights, report), weights)) if spec.get("render") else None
    print(f"pipeline: {report['built_by']} (peft {peft.__version__}, torch {torch.__version__})")
    for item in spec["adapters"]:
        lora, reference = Path(item["lora"]), load_file(item["reference"])
        pipe = fp32(build_pipeline(base, weights, report), weights)
        out = lora_loading(pipe.model, lora)
        before = {k: v.detach().clone() for k, v in pipe.model.state_dict().items()}
        out.update(compare(before, merged_weights(pipe, lora), reference))
        if bare_image is not None:
            image = render(pipe)
            out["rendered"] = list(image.shape)
            out["render_differs_from_base"] = bool((image != bare_image).any())
        bf16 = build_pipeline(base, weights, report)  # as the package runs by default
        bf16_before = {k: v.detach().clone() for k, v in bf16.model.state_dict().items()}
        out["bf16_max_abs_dW"] = compare(bf16_before, merged_weights(bf16, lora), reference)["max_abs_dW"]
        # the scale of bf16 itself: rounding the reference's own weights to bf16
        out["bf16_rounding_of_reference"] = max((v.bfloat16().float() - v.float()).abs().max().item()
                                                for v in reference.values())
        report["adapters"][item["name"]] = out
        print(f"{item['name']}: LoRA tensors in file {out['tensors_in_file']}, applied {out['tensors_applied']} "
              f"({out['modules_wrapped']} modules wrapped); modules changed by merge_lora {out['modules_changed']}; "
              f"max |dW| vs omnideft merged export {out['max_abs_dW']:.3g} (fp32), {out['bf16_max_abs_dW']:.3g} "
              f"(bf16, the pipeline's default dtype; bf16 rounding of the reference alone "
              f"{out['bf16_rounding_of_reference']:.3g})" + (f"; rendered {out['rendered']}, differs from the bare "
                                                          f"base: {out['render_differs_from_base']}"
                                                          if "rendered" in out else ""))
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
