"""The `<cam>` special token: added to the tokenizer (tiny WordLevel or OmniGen's Phi-3 tokenizer alike) and given
a row in the transformer's token embedding, growing the table when the new id falls outside it.

OmniGen's table (32064 rows) already has spare rows past Phi-3's 32011 tokens, as the tiny preset's (rounded up
to a multiple of 64) does; the table only grows for a tokenizer that fills it.
"""

from __future__ import annotations

import torch
from tokenizers import AddedToken
from torch import nn

CAM_TOKEN = "<cam>"
ROW_MULTIPLE = 64  # grown tables are padded like OmniGen's (32064 = 501 * 64)


def add_camera_token(tokenizer) -> int:
    """Add `<cam>` (special: never split, matched before normalisation); return its id. Idempotent."""
    if CAM_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_tokens([AddedToken(CAM_TOKEN, special=True, normalized=False)], special_tokens=True)
    return int(tokenizer.convert_tokens_to_ids(CAM_TOKEN))


def ensure_embedding_row(transformer: nn.Module, token_id: int) -> nn.Embedding:
    """Grow `transformer.embed_tokens` so that `token_id` has a row (new rows = mean of the old ones, as
    transformers' resize_token_embeddings starts them) and record the new size in the config."""
    old = transformer.embed_tokens
    if token_id < old.num_embeddings:
        return old
    rows = -(-(token_id + 1) // ROW_MULTIPLE) * ROW_MULTIPLE
    new = nn.Embedding(rows, old.embedding_dim, padding_idx=old.padding_idx, device=old.weight.device,
                       dtype=old.weight.dtype)
    with torch.no_grad():
        new.weight[: old.num_embeddings] = old.weight
        new.weight[old.num_embeddings :] = old.weight.mean(dim=0)
    new.weight.requires_grad_(old.weight.requires_grad)
    transformer.embed_tokens = new
    transformer.register_to_config(vocab_size=rows)
    return new


def initial_row(embedding: nn.Embedding, token_id: int) -> torch.Tensor:
    """A neutral start for a new token: the mean embedding of the tokens before it."""
    with torch.no_grad():
        return embedding.weight[: max(token_id, 1)].float().mean(dim=0)
