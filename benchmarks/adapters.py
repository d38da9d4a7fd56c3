"""Benchmark: adapter training-step cost on one OmniGen-width block, and merged-adapter inference.

One diffusers `OmniGenBlock` (hidden 3072, intermediate 8192, 32 heads), 256 tokens, batch 1, adapters on every
linear (to_q/k/v, to_out.0, gate_up_proj, down_proj), r = 32. A step is forward + backward (the block input needs a
gradient, as inside a real model) + AdamW. Variants: PEFT LoRA, PEFT DEFT (relu, qr, para), omnideft's fused DEFT
(relu, qr, para; default `auto` backward, which at 256 tokens < 3072 features keeps y), the fused relu layer
forced to its memory-lean backward (`deft_relu_lean`, what `auto` does at real sequence lengths), and SODA (svd;
random stand-in factors instead of the one-time SVDs), in fp32 and bf16, interleaved (A B C ... A B C ...);
medians. All variants share the same base weights. Memory = bytes of the distinct tensors saved for backward
(saved_tensors_hooks, parameters excluded) + adapter parameters + optimizer state. `merged_vs_base`: inference
forward of the block with a DEFT adapter merged into its weights against the plain block.

FLUX.2 [klein] (`klein_*` keys): one double-stream block and one single-stream block of diffusers'
Flux2Transformer2DModel at klein 4B's width (3072, 24 heads of 128, SwiGLU MLP ratio 3; 20 of klein 4B's 25 blocks
are single-stream), 256 image + 128 text tokens with RoPE, the timestep modulations as fixed inputs; adapters on every
linear of both blocks (what `all-linear` adapts there), r = 32, fp32; PEFT LoRA against omnideft's fused DEFT (relu,
qr), interleaved, medians, the same step and memory measures. No arguments; the last line is one JSON object.
"""

from __future__ import annotations

import copy
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from diffusers.models.transformers.transformer_flux2 import (  # noqa: E402
    Flux2PosEmbed,
    Flux2SingleTransformerBlock,
    Flux2TransformerBlock,
)
from diffusers.models.transformers.transformer_omnigen import OmniGenBlock  # noqa: E402
from peft import DeftConfig, LoraConfig, inject_adapter_in_model  # noqa: E402

from omnideft.adapters.fast_deft import use_fast_layers  # noqa: E402
from omnideft.adapters.optim import build_optimizer  # noqa: E402
from omnideft.adapters.spec import AdapterSpec  # noqa: E402
from omnideft.adapters.spectral import SpectralLinear, inject_spectral  # noqa: E402
from omnideft.families.omnigen.targets import target_modules as target_module_names  # noqa: E402

HIDDEN, INTER, HEADS, TOKENS, RANK = 3072, 8192, 32, 256, 32
TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "gate_up_proj", "down_proj"]
TIME_BUDGET_S = float(os.environ.get("OMNIDEFT_BENCH_SECONDS", "45"))  # per dtype, for the interleaved rounds
MIN_ROUNDS, MAX_ROUNDS = 3, 15


def base_block(dtype: torch.dtype) -> OmniGenBlock:
    torch.manual_seed(0)
    block = OmniGenBlock(HIDDEN, HEADS, HEADS, INTER, 1e-5)
    for p in block.parameters():
        p.data.normal_(0, 0.02)
        p.requires_grad_(False)
    return block.to(dtype)


def sharing(block: OmniGenBlock) -> OmniGenBlock:
    """A new block object whose base tensors are the same storage as `block`'s (no copy of 450 MB per variant)."""
    with torch.device("meta"):
        twin = OmniGenBlock(HIDDEN, HEADS, HEADS, INTER, 1e-5)
    twin.load_state_dict(block.state_dict(), assign=True)
    for p in twin.parameters():
        p.requires_grad_(False)
    return twin


def make_variant(name: str, block: OmniGenBlock, dtype: torch.dtype):
    torch.manual_seed(1)
    model = sharing(block)
    if name == "peft_lora":
        model = inject_adapter_in_model(LoraConfig(r=RANK, lora_alpha=RANK, target_modules=TARGETS), model)
    elif name.startswith(("peft_deft", "deft")) or name in ("peft_para", "para"):
        lean, name = name.endswith("_lean"), name.removesuffix("_lean")
        projector = "qr" if name.endswith(("qr", "para")) else "relu"
        cfg = DeftConfig(r=RANK, decomposition_method=projector, para=name.endswith("para"), target_modules=TARGETS)
        model = inject_adapter_in_model(cfg, model)
        if not name.startswith("peft"):
            use_fast_layers(model)
        if lean:  # never keep y: the memory-lean backward (default once N >= in)
            for m in model.modules():
                if hasattr(m, "keep_base_output"):
                    m.keep_base_output = False
    elif name == "soda":  # step time does not depend on the factor values: skip the one-time SVDs (minutes on CPU)
        original, SpectralLinear.decompose = SpectralLinear.decompose, _random_factors
        try:
            inject_spectral(model, target_module_names(model, TARGETS), "soda")
        finally:
            SpectralLinear.decompose = original
    model.to(dtype)
    params = [p for p in model.parameters() if p.requires_grad]
    soda = AdapterSpec(method="soda")
    opt = build_optimizer(model, soda, lr=1e-4) if name == "soda" else torch.optim.AdamW(params, lr=1e-4)
    return model, opt


def _random_factors(layer) -> None:
    """Stand-ins with the shapes and dtypes of SpectralLinear.decompose's U, sigma, Vh^T (timing only)."""
    w = layer.base_layer.weight
    k = min(w.shape)
    layer.register_buffer("left", torch.randn(w.shape[0], k).div(k**0.5).to(w.dtype), persistent=False)
    layer.register_buffer("right", torch.randn(w.shape[1], k).div(k**0.5).to(w.dtype), persistent=False)
    layer.register_buffer("sigma", torch.rand(k), persistent=False)


def rope(dtype: torch.dtype):
    dim = HIDDEN // HEADS
    inv = 1.0 / (10000 ** (torch.arange(0, dim, 2).float() / dim))
    freqs = torch.outer(torch.arange(TOKENS).float(), inv)
    emb = torch.cat([freqs, freqs], -1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def inputs(dtype: torch.dtype):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, TOKENS, HIDDEN, generator=g).to(dtype)
    grad_out = torch.randn(1, TOKENS, HIDDEN, generator=g).to(dtype)
    return x, grad_out, rope(dtype)


def train_step(model, opt, x, grad_out, rot) -> float:
    t0 = time.perf_counter()
    xin = x.detach().requires_grad_()
    out = model(xin, attention_mask=None, image_rotary_emb=rot)
    out.backward(grad_out)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return time.perf_counter() - t0


def saved_bytes(model, opt, x, grad_out, rot) -> int:
    """Distinct storages saved for backward during one training step (also the warm-up step that creates the
    optimizer state); parameters excluded (adapter ones are counted by state_bytes)."""
    frozen = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        if isinstance(t, torch.Tensor) and t.device.type != "meta":
            ptr = t.untyped_storage().data_ptr()
            if ptr not in frozen:
                seen[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(x.detach().requires_grad_(), attention_mask=None, image_rotary_emb=rot)
    out.backward(grad_out)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return sum(seen.values())


def state_bytes(model, opt) -> int:
    params = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    state = sum(v.numel() * v.element_size() for s in opt.state.values() for v in s.values()
                if isinstance(v, torch.Tensor) and v.dim() > 0)
    return params + state


def infer_time(model, x, rot) -> float:
    with torch.no_grad():
        t0 = time.perf_counter()
        model(x, attention_mask=None, image_rotary_emb=rot)
        return time.perf_counter() - t0


def run_dtype(dtype: torch.dtype, variants: list[str]) -> dict:
    block = base_block(dtype)
    x, grad_out, rot = inputs(dtype)
    models = {v: make_variant(v, block, dtype) for v in variants}
    mem = {}
    for v, (model, opt) in models.items():
        mem[v] = saved_bytes(model, opt, x, grad_out, rot) + state_bytes(model, opt)
    times: dict[str, list[float]] = {v: [] for v in variants}
    t_start = time.perf_counter()
    for r in range(MAX_ROUNDS):
        for v, (model, opt) in models.items():
            times[v].append(train_step(model, opt, x, grad_out, rot))
        if r + 1 >= MIN_ROUNDS and time.perf_counter() - t_start > TIME_BUDGET_S:
            break
    merged = copy.deepcopy(make_variant("deft_relu", block, dtype)[0])  # own weights: merging writes into them
    for m in merged.modules():
        if hasattr(m, "merge") and hasattr(m, "deft_P"):
            m.merge()
    plain = sharing(block)
    infer = {"base": [], "merged": []}
    for _ in range(max(3, len(times[variants[0]]))):
        infer["base"].append(infer_time(plain, x, rot))
        infer["merged"].append(infer_time(merged, x, rot))
    med = {v: statistics.median(t) for v, t in times.items()}
    return {"median_s": med, "mem_bytes": mem, "rounds": len(times[variants[0]]),
            "infer_median_s": {k: statistics.median(t) for k, t in infer.items()}}


def ratios(r: dict, suffix: str) -> dict:
    m, mem = r["median_s"], r["mem_bytes"]
    out = {
        "deft_relu_vs_peft_lora": m["deft_relu"] / m["peft_lora"],
        "deft_qr_vs_peft_lora": m["deft_qr"] / m["peft_lora"],
        "para_vs_peft_lora": m["para"] / m["peft_lora"],
        "deft_relu_vs_peft_deft_relu": m["deft_relu"] / m["peft_deft_relu"],
        "deft_qr_vs_peft_deft_qr": m["deft_qr"] / m["peft_deft_qr"],
        "para_vs_peft_para": m["para"] / m["peft_para"],
        "soda_vs_peft_lora": m["soda"] / m["peft_lora"],
        "deft_relu_lean_vs_peft_lora": m["deft_relu_lean"] / m["peft_lora"],
        "mem_deft_relu_vs_peft_lora": mem["deft_relu"] / mem["peft_lora"],
        "mem_deft_relu_lean_vs_peft_lora": mem["deft_relu_lean"] / mem["peft_lora"],
        "mem_deft_qr_vs_peft_lora": mem["deft_qr"] / mem["peft_lora"],
        "mem_peft_deft_relu_vs_peft_lora": mem["peft_deft_relu"] / mem["peft_lora"],
        "merged_vs_base": r["infer_median_s"]["merged"] / r["infer_median_s"]["base"],
    }
    return {k + suffix: round(v, 4) for k, v in out.items()}


# -- FLUX.2 [klein] ----------------------------------------------------------------------------------------------------

KLEIN_HEADS, KLEIN_HEAD_DIM, KLEIN_IMAGE, KLEIN_TEXT = 24, 128, 256, 128
KLEIN_HIDDEN = KLEIN_HEADS * KLEIN_HEAD_DIM
KLEIN_VARIANTS = ["peft_lora", "deft_relu", "deft_qr"]


class KleinBlocks(torch.nn.Module):
    """A double-stream then a single-stream block, wired as Flux2Transformer2DModel wires them."""

    def __init__(self):
        super().__init__()
        self.double_stream = Flux2TransformerBlock(KLEIN_HIDDEN, KLEIN_HEADS, KLEIN_HEAD_DIM, mlp_ratio=3.0)
        self.single_stream = Flux2SingleTransformerBlock(KLEIN_HIDDEN, KLEIN_HEADS, KLEIN_HEAD_DIM, mlp_ratio=3.0)

    def forward(self, img, txt, mods, rot):
        txt, img = self.double_stream(img, txt, mods[0], mods[1], image_rotary_emb=rot)
        return self.single_stream(img, txt, mods[2], image_rotary_emb=rot)


def klein_base() -> KleinBlocks:
    torch.manual_seed(0)
    blocks = KleinBlocks()
    for p in blocks.parameters():
        p.data.normal_(0, 0.02)
        p.requires_grad_(False)
    return blocks


def klein_variant(name: str, base: KleinBlocks):
    torch.manual_seed(1)
    with torch.device("meta"):
        model = KleinBlocks()
    model.load_state_dict(base.state_dict(), assign=True)  # shared storage, as `sharing` does for OmniGen
    model.requires_grad_(False)
    targets = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    if name == "peft_lora":
        cfg = LoraConfig(r=RANK, lora_alpha=RANK, target_modules=targets)
    else:
        cfg = DeftConfig(r=RANK, decomposition_method=name.removeprefix("deft_"), target_modules=targets)
    model = inject_adapter_in_model(cfg, model)
    if name != "peft_lora":
        use_fast_layers(model)
    return model, torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)


def klein_inputs():
    g = torch.Generator().manual_seed(2)
    img = torch.randn(1, KLEIN_IMAGE, KLEIN_HIDDEN, generator=g)
    txt = torch.randn(1, KLEIN_TEXT, KLEIN_HIDDEN, generator=g)
    mods = [torch.randn(1, KLEIN_HIDDEN * n, generator=g) * 0.1 for n in (6, 6, 3)]
    ids = torch.zeros(KLEIN_TEXT + KLEIN_IMAGE, 4)  # text positions first, as the model concatenates them
    ids[:KLEIN_TEXT, 3] = torch.arange(KLEIN_TEXT)
    side = int(KLEIN_IMAGE ** 0.5)
    ids[KLEIN_TEXT:, 1] = torch.arange(KLEIN_IMAGE) // side
    ids[KLEIN_TEXT:, 2] = torch.arange(KLEIN_IMAGE) % side
    rot = Flux2PosEmbed(theta=2000, axes_dim=[32, 32, 32, 32])(ids)
    grad_out = torch.randn(1, KLEIN_TEXT + KLEIN_IMAGE, KLEIN_HIDDEN, generator=g)
    return img, txt, mods, rot, grad_out


def klein_step(model, opt, inputs, pack=None) -> float:
    img, txt, mods, rot, grad_out = inputs
    t0 = time.perf_counter()
    if pack is None:
        out = model(img.detach().requires_grad_(), txt.detach().requires_grad_(), mods, rot)
    else:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = model(img.detach().requires_grad_(), txt.detach().requires_grad_(), mods, rot)
    out.backward(grad_out)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return time.perf_counter() - t0


def run_klein() -> dict:
    base = klein_base()
    inputs = klein_inputs()
    models = {v: klein_variant(v, base) for v in KLEIN_VARIANTS}
    mem = {}
    for v, (model, opt) in models.items():
        frozen = {p.untyped_storage().data_ptr() for p in model.parameters()}
        seen: dict[int, int] = {}

        def pack(t, seen=seen, frozen=frozen):
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in frozen:
                seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        klein_step(model, opt, inputs, pack)  # also the warm-up that creates the optimizer state
        mem[v] = sum(seen.values()) + state_bytes(model, opt)
    times: dict[str, list[float]] = {v: [] for v in KLEIN_VARIANTS}
    t_start = time.perf_counter()
    for r in range(MAX_ROUNDS):
        for v, (model, opt) in models.items():
            times[v].append(klein_step(model, opt, inputs))
        if r + 1 >= MIN_ROUNDS and time.perf_counter() - t_start > TIME_BUDGET_S:
            break
    return {"median_s": {v: statistics.median(t) for v, t in times.items()}, "mem_bytes": mem,
            "rounds": len(times[KLEIN_VARIANTS[0]])}


def klein_ratios(r: dict) -> dict:
    m, mem = r["median_s"], r["mem_bytes"]
    out = {"klein_deft_relu_vs_peft_lora": m["deft_relu"] / m["peft_lora"],
           "klein_deft_qr_vs_peft_lora": m["deft_qr"] / m["peft_lora"],
           "klein_mem_deft_relu_vs_peft_lora": mem["deft_relu"] / mem["peft_lora"],
           "klein_mem_deft_qr_vs_peft_lora": mem["deft_qr"] / mem["peft_lora"]}
    return {k: round(v, 4) for k, v in out.items()}


def main() -> int:
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", min(2, os.cpu_count() or 1))))
    variants = ["peft_lora", "peft_deft_relu", "peft_deft_qr", "peft_para", "deft_relu", "deft_qr", "para",
                "deft_relu_lean", "soda"]
    result = {}
    for dtype, suffix in ((torch.float32, ""), (torch.bfloat16, "_bf16")):
        r = run_dtype(dtype, variants)
        print(f"{dtype}: rounds {r['rounds']}, median step s "
              + ", ".join(f"{k} {v:.3f}" for k, v in r["median_s"].items())
              + "; MB " + ", ".join(f"{k} {v / 2**20:.1f}" for k, v in r["mem_bytes"].items())
              + "; infer s " + ", ".join(f"{k} {v:.3f}" for k, v in r["infer_median_s"].items()), file=sys.stderr)
        result.update(ratios(r, suffix))
        result[f"rounds{suffix}"] = r["rounds"]
    klein = run_klein()
    print("klein fp32: rounds {}, median step s {}; MB {}".format(
        klein["rounds"], ", ".join(f"{k} {v:.3f}" for k, v in klein["median_s"].items()),
        ", ".join(f"{k} {v / 2**20:.1f}" for k, v in klein["mem_bytes"].items())), file=sys.stderr)
    result.update(klein_ratios(klein))
    result["klein_rounds"] = klein["rounds"]
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
