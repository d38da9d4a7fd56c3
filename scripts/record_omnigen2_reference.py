"""Record the published OmniGen2 package's outputs for the tiny OmniGen2 preset into
tests/data/omnigen2_reference.safetensors; tests/test_omnigen2_exactness.py asserts omnideft reproduces them.

Needs the official code (github.com/VectorSpaceLab/OmniGen2, Apache-2.0) importable as `omnigen2`, e.g. a checkout
on PYTHONPATH for this one run; it is not a dependency of omnideft. It runs on CPU without flash-attn or triton
(the package then uses torch RMSNorm and SDPA, the path omnideft implements).

    PYTHONPATH=.:/path/to/OmniGen2 python scripts/record_omnigen2_reference.py

What is recorded, all from the tiny preset with seed 0 saved in the published layout and loaded back by the
official classes (OmniGen2Transformer2DModel, FlowMatchEulerDiscreteScheduler, OmniGen2Pipeline) plus diffusers'
AutoencoderKL and transformers' Qwen2_5_VLForConditionalGeneration:
- `forward/*`: one transformer call on a batch of two (padded captions; two reference images of different sizes in
  the first sample, none in the second) and its output;
- `forward_bf16/output`: the same call with the model and the inputs in bfloat16;
- `t2i/*`: a whole text-to-image generation (4 steps, text guidance 4) as float pixels and 8-bit pixels;
- `t2i_dpm/*`: the same with the published DPM-Solver++ scheduler (5 steps, the settings of its inference.py);
- `edit/*`: a generation with one reference image (text guidance 4, image guidance 2, guidance range [0, 0.5]);
- metadata `transformer_keys`: the official model's parameter names and shapes;
- `train/*`: the training loss of the published `transport` (lognorm times with the v1 dynamic shift, linear path)
  for two targets of different sizes, one with reference images, and the times it drew.
The transport module imports torchdiffeq (for its ODE samplers, not used here); when it is missing a stand-in
module is registered for this run only.
"""

from __future__ import annotations

import copy
import json
import sys
import tempfile
import types
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

REPO = Path(__file__).resolve().parents[1]
TRAIN_SEED = 7
OUT = REPO / "tests" / "data" / "omnigen2_reference.safetensors"
SEED = 0
GENERATIONS = {
    "t2i": dict(prompt="a red cat on a blue table", input_images=None, height=64, width=48, num_inference_steps=4,
                text_guidance_scale=4.0, image_guidance_scale=1.0, cfg_range=(0.0, 1.0)),
    "t2i_dpm": dict(prompt="a green bird", input_images=None, height=48, width=64, num_inference_steps=5,
                    text_guidance_scale=3.0, image_guidance_scale=1.0, cfg_range=(0.0, 1.0)),
    "edit": dict(prompt="make the sky green", input_images="reference", num_inference_steps=4,
                 text_guidance_scale=4.0, image_guidance_scale=2.0, cfg_range=(0.0, 0.5)),
}


def forward_inputs() -> dict[str, torch.Tensor]:
    """Fixed transformer inputs (their own seed), shared with the test."""
    g = torch.Generator().manual_seed(1)
    text_mask = torch.ones(2, 9, dtype=torch.long)
    text_mask[1, 6:] = 0
    return {
        "latents": torch.randn(2, 16, 8, 12, generator=g),
        "timestep": torch.tensor([0.25, 0.8]),
        "text": torch.randn(2, 9, 32, generator=g),
        "text_mask": text_mask,
        "ref0": torch.randn(16, 8, 8, generator=g),
        "ref1": torch.randn(16, 4, 6, generator=g),
    }


def train_inputs() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    return {"x1_0": torch.randn(16, 8, 8, generator=g), "x1_1": torch.randn(16, 12, 8, generator=g),
            "text": torch.randn(2, 6, 32, generator=g), "text_mask": torch.tensor([[1] * 6, [1] * 4 + [0] * 2]),
            "ref": torch.randn(16, 4, 8, generator=g)}


def reference_image() -> Image.Image:
    """A 64x48 RGB image from a seed (a multiple of 16 px: the pipeline does not resample it)."""
    rng = np.random.default_rng(3)
    return Image.fromarray(rng.integers(0, 256, size=(48, 64, 3), dtype=np.uint8))


def main() -> None:
    warnings.filterwarnings("ignore")
    from diffusers import AutoencoderKL
    from omnigen2.models.transformers.repo import OmniGen2RotaryPosEmbed
    from omnigen2.models.transformers.transformer_omnigen2 import OmniGen2Transformer2DModel
    from omnigen2.pipelines.omnigen2.pipeline_omnigen2 import OmniGen2Pipeline
    from omnigen2.schedulers.scheduling_dpmsolver_multistep import DPMSolverMultistepScheduler
    from omnigen2.schedulers.scheduling_flow_match_euler_discrete import FlowMatchEulerDiscreteScheduler
    from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration

    from omnideft.families.omnigen2.model.folder import load_omnigen2, save_omnigen2

    tensors: dict[str, torch.Tensor] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_omnigen2(load_omnigen2("tiny", seed=SEED), Path(tmp) / "tiny-omnigen2")
        transformer = OmniGen2Transformer2DModel.from_pretrained(folder / "transformer").eval()
        vae = AutoencoderKL.from_pretrained(folder / "vae").eval()
        mllm = Qwen2_5_VLForConditionalGeneration.from_pretrained(folder / "mllm").eval()
        tokenizer = AutoTokenizer.from_pretrained(folder / "processor")
        scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(folder / "scheduler")

    x = forward_inputs()
    freqs = OmniGen2RotaryPosEmbed.get_freqs_cis(transformer.config.axes_dim_rope, transformer.config.axes_lens,
                                                 theta=10000)
    with torch.no_grad():
        out = transformer(x["latents"], x["timestep"], x["text"], freqs, x["text_mask"],
                          ref_image_hidden_states=[[x["ref0"], x["ref1"]], None])
    tensors.update({f"forward/{k}": v for k, v in x.items()})
    tensors["forward/output"] = out
    bf16 = {k: v.to(torch.bfloat16) if v.is_floating_point() and k != "timestep" else v for k, v in x.items()}
    with torch.no_grad():
        out = copy.deepcopy(transformer).to(torch.bfloat16)(
            bf16["latents"], bf16["timestep"], bf16["text"], freqs, bf16["text_mask"],
            ref_image_hidden_states=[[bf16["ref0"], bf16["ref1"]], None])
    tensors["forward_bf16/output"] = out.float()  # the same inputs in bf16 (timestep stays fp32)

    # The plain pipeline reads only `processor.tokenizer`; Qwen2_5_VLProcessor itself needs torchvision for its
    # video half, so a holder with a module name (diffusers registers every component by its module) stands in.
    processor = types.new_class("TokenizerHolder")()
    processor.tokenizer = tokenizer
    pipe = OmniGen2Pipeline(transformer=transformer, vae=vae, scheduler=scheduler, mllm=mllm, processor=processor)
    pipe.set_progress_bar_config(disable=True)
    euler = pipe.scheduler
    dpm = DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_type="midpoint", solver_order=2,
                                      prediction_type="flow_prediction")  # as the published inference.py builds it
    for name, settings in GENERATIONS.items():
        pipe.scheduler = dpm if name.endswith("_dpm") else euler
        kw = dict(settings)
        if kw["input_images"] == "reference":
            kw["input_images"] = [reference_image()]
            tensors[f"{name}/reference"] = torch.from_numpy(np.array(kw["input_images"][0]))  # [H, W, 3] uint8
        torch.manual_seed(SEED)  # the pipeline draws reference-image VAE samples from the global RNG
        result = pipe(**kw, generator=torch.Generator().manual_seed(SEED), output_type="pt").images
        tensors[f"{name}/pixels"] = result.float().contiguous()  # [1, 3, H, W] in [0, 1]
        tensors[f"{name}/uint8"] = (result * 255).round().to(torch.uint8).contiguous()
    if "torchdiffeq" not in sys.modules:
        try:
            import torchdiffeq  # noqa: F401
        except ImportError:
            sys.modules["torchdiffeq"] = types.ModuleType("torchdiffeq")
            sys.modules["torchdiffeq"].odeint = None
    from omnigen2.transport import create_transport

    transport = create_transport("Linear", "velocity", None, None, None, snr_type="lognorm", do_shift=True,
                                 seq_len=1024 * 1024 // 16 // 16, dynamic_time_shift=True, time_shift_version="v1")
    x = train_inputs()
    torch.manual_seed(TRAIN_SEED)  # the transport draws noise, then times, from the global RNG
    with torch.no_grad():
        terms = transport.training_losses(transformer, [x["x1_0"], x["x1_1"]], dict(
            text_hidden_states=x["text"], freqs_cis=freqs, text_attention_mask=x["text_mask"],
            ref_image_hidden_states=[[x["ref"]], None]))
    tensors.update({f"train/{k}": v for k, v in x.items()})
    tensors["train/t"] = terms["t"]
    tensors["train/loss"] = terms["loss"]

    OUT.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(OUT),
              metadata={"source": "VectorSpaceLab/OmniGen2 OmniGen2Pipeline", "preset": "tiny", "seed": str(SEED),
                        "train_seed": str(TRAIN_SEED),
                        # the published parameter names (and shapes) of the tiny configuration
                        "transformer_keys": json.dumps({k: list(v.shape) for k, v in transformer.state_dict().items()}),
                        "torch": torch.__version__})
    print(f"wrote {OUT.relative_to(REPO)}: {', '.join(f'{k} {tuple(v.shape)}' for k, v in tensors.items())}")


if __name__ == "__main__":
    sys.exit(main())
