"""FLUX.2 [klein]'s LoRA key rules for export (family.lora_keys). `comfyui`: ComfyUI runs FLUX.2 on Black Forest
Labs' own module names (comfy/ldm/flux/), and its LoRA loader reads every model weight by its state-dict name,
`diffusion_model.<path>` (comfy/lora.py model_lora_keys_unet). diffusers' names map to those by the rules of
diffusers' own conversion script (scripts/convert_flux2_to_diffusers.py, read in reverse): renamed modules, the double
blocks' separate q/k/v projections stacked into one fused `qkv` (rows q, k, v) and the output norm's rows swapped
(BFL: shift then scale; diffusers: scale then shift). tests/clients/comfyui_flux2_facts.json records both."""

from __future__ import annotations

import torch

RENAMED = {
    "x_embedder": "img_in",
    "context_embedder": "txt_in",
    "time_guidance_embed.timestep_embedder.linear_1": "time_in.in_layer",
    "time_guidance_embed.timestep_embedder.linear_2": "time_in.out_layer",
    "time_guidance_embed.guidance_embedder.linear_1": "guidance_in.in_layer",
    "time_guidance_embed.guidance_embedder.linear_2": "guidance_in.out_layer",
    "double_stream_modulation_img.linear": "double_stream_modulation_img.lin",
    "double_stream_modulation_txt.linear": "double_stream_modulation_txt.lin",
    "single_stream_modulation.linear": "single_stream_modulation.lin",
    "proj_out": "final_layer.linear",
    "norm_out.linear": "final_layer.adaLN_modulation.1",
}
SWAPPED_HALVES = {"norm_out.linear"}
DOUBLE_BLOCK = {
    "attn.to_out.0": "img_attn.proj",
    "attn.to_add_out": "txt_attn.proj",
    "ff.linear_in": "img_mlp.0",
    "ff.linear_out": "img_mlp.2",
    "ff_context.linear_in": "txt_mlp.0",
    "ff_context.linear_out": "txt_mlp.2",
}
DOUBLE_BLOCK_FUSED = {
    "img_attn.qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
    "txt_attn.qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"),
}
SINGLE_BLOCK = {"attn.to_qkv_mlp_proj": "linear1", "attn.to_out": "linear2"}
COMFYUI_PREFIX = "diffusion_model."


def lora_keys(fmt: str, factors: dict, transformer) -> dict:
    if fmt != "comfyui":
        return dict(factors)
    return comfyui_factors(factors, transformer)


def comfyui_name(name: str) -> str:
    """A diffusers module's name in ComfyUI's FLUX.2 model (KeyError for a module fused there or unknown)."""
    if name in RENAMED:
        return RENAMED[name]
    stack, index, rest = name.split(".", 2)
    table, blocks = {"transformer_blocks": (DOUBLE_BLOCK, "double_blocks"),
                     "single_transformer_blocks": (SINGLE_BLOCK, "single_blocks")}[stack]
    return f"{blocks}.{index}.{table[rest]}"


def comfyui_factors(factors: dict, transformer) -> dict:
    """(B, A) per ComfyUI module. A fused qkv gets one LoRA of the summed rank: A the projections' A stacked, B
    block-diagonal, so B A is exactly [B_q A_q; B_k A_k; B_v A_v] (a projection without an adapter adds zero rows)."""
    modules = dict(transformer.named_modules())
    out, fused = {}, {}
    for name, (b, a) in factors.items():
        stack, index, rest = (name.split(".", 2) + ["", ""])[:3]
        qkv = next((q for q, parts in DOUBLE_BLOCK_FUSED.items() if rest in parts), None)
        if stack == "transformer_blocks" and qkv:
            fused.setdefault(f"double_blocks.{index}.{qkv}", {})[f"{stack}.{index}.{rest}"] = (b, a)
            continue
        if name in SWAPPED_HALVES:
            first, second = b.chunk(2, dim=0)
            b = torch.cat([second, first])
        out[COMFYUI_PREFIX + comfyui_name(name)] = (b, a)
    for target, parts in fused.items():
        block = target.split(".")[1]
        names = [f"transformer_blocks.{block}.{p}" for p in DOUBLE_BLOCK_FUSED[target.split(".", 2)[2]]]
        pieces = [parts.get(n) for n in names]
        some_a = next(p[1] for p in pieces if p is not None)
        rows = [modules[n].out_features for n in names]
        ranks = [0 if p is None else p[0].shape[1] for p in pieces]
        b = some_a.new_zeros(sum(rows), sum(ranks))
        a = some_a.new_zeros(sum(ranks), some_a.shape[1])
        row = col = 0
        for piece, height, rank in zip(pieces, rows, ranks):
            if piece is not None:
                b[row:row + height, col:col + rank] = piece[0]
                a[col:col + rank] = piece[1]
            row, col = row + height, col + rank
        out[COMFYUI_PREFIX + target] = (b, a)
    return out
