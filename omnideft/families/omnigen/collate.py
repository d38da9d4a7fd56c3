"""OmniGen (v1)'s collator: left padding, running position ids, the [B, L, L] 0/1 attention mask.

L = padded text length + 1 (time token) + output tokens. Text+time rows are causal and never see output tokens;
output rows see everything; each input-image span is bidirectional; pad columns are 0 and pad rows 1 (no all-masked
softmax rows). One output size per batch (diffusers' transformer takes a single output tensor).
"""

from __future__ import annotations

import torch

from omnideft.families.omnigen.processor import PIXELS_PER_TOKEN, EncodedPrompt


def collate_prompts(prompts: list[EncodedPrompt], output_hw: tuple[int, int], pad_token_id: int = 2) -> dict:
    n_out = output_hw[0] * output_hw[1] // PIXELS_PER_TOKEN // PIXELS_PER_TOKEN
    text_len = max(len(p.input_ids) for p in prompts)
    seq_len = text_len + 1 + n_out
    input_ids = torch.full((len(prompts), text_len), pad_token_id, dtype=torch.long)
    position_ids = torch.zeros((len(prompts), seq_len), dtype=torch.long)
    mask = torch.zeros((len(prompts), seq_len, seq_len))
    spans: dict[int, list[list[int]]] = {}
    pixel_values: list[torch.Tensor] = []
    for b, p in enumerate(prompts):
        n = len(p.input_ids)
        pad = text_len - n
        input_ids[b, pad:] = torch.tensor(p.input_ids, dtype=torch.long)
        position_ids[b, pad:] = torch.arange(seq_len - pad)
        real = slice(pad, seq_len)
        mask[b, pad:, pad : text_len + 1] = torch.tril(torch.ones(n + 1 + n_out, n + 1))  # causal text + time
        mask[b, text_len + 1 :, real] = 1  # output rows see every real token
        mask[b, :pad, :] = 1  # pad rows attend everywhere (avoids NaN rows)
        for s, e in p.image_spans:
            spans.setdefault(b, []).append([s + pad, e + pad])
            mask[b, s + pad : e + pad, s + pad : e + pad] = 1
        pixel_values.extend(pv.unsqueeze(0) for pv in p.pixel_values)
    return {
        "input_ids": input_ids,
        "attention_mask": mask,
        "position_ids": position_ids,
        "input_pixel_values": pixel_values,
        "input_image_sizes": spans,
    }
