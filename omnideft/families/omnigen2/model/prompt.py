"""OmniGen2's prompt encoding: the instruction in a system + user chat turn, tokenised (padding on the right), run
through the MLLM's language model; the last hidden state (after its final norm) is the transformer's text input.

As in the published text-to-image pipeline, the MLLM sees text only (reference images reach the transformer as VAE
latents). The negative prompt of classifier-free guidance goes through the same template.
"""

from __future__ import annotations

import torch

SYSTEM_PROMPT = "You are a helpful assistant that generates high-quality images based on user instructions."
# The published inference script's default negative prompt (its pipeline's own default is the empty string).
NEGATIVE_PROMPT = ("(((deformed))), blurry, over saturation, bad anatomy, disfigured, poorly drawn face, mutation, "
                   "mutated, (extra_limb), (ugly), (poorly drawn hands), fused fingers, messy drawing, broken legs "
                   "censor, censored, censor_bar")


def chat_prompt(tokenizer, instruction: str, system: str = SYSTEM_PROMPT) -> str:
    messages = [{"role": "system", "content": system}, {"role": "user", "content": instruction}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)


def encode_texts(mllm, tokenizer, texts: list[str], max_length: int | None = None,
                 device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(hidden states [B, T, text_feat_dim], attention mask [B, T]) of already chat-wrapped texts."""
    enc = tokenizer(texts, padding="longest", max_length=max_length, truncation=True, return_tensors="pt")
    ids, mask = enc.input_ids.to(device), enc.attention_mask.to(device)
    return mllm(ids, attention_mask=mask, output_hidden_states=True).hidden_states[-1], mask


def encode_prompts(mllm, tokenizer, instructions: list[str], max_length: int | None = None,
                   device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """encode_texts of the instructions in the chat template with OmniGen2's system prompt."""
    return encode_texts(mllm, tokenizer, [chat_prompt(tokenizer, s) for s in instructions], max_length, device)
