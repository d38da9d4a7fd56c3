"""omnideft's OmniGen2 diffusion transformer, written from the published architecture and configuration.

Loads `transformer/` of an OmniGen2 folder (config.json + safetensors) with the published parameter names unchanged.
Flow of one call: the MLLM's hidden states are embedded and refined by `context_refiner` (no timestep); the noisy
latent's 2x2 patches by `x_embedder` + `noise_refiner`; each reference image's patches by `ref_image_patch_embedder`
+ `image_index_embedding[k]` + `ref_image_refiner`, one image at a time; then [caption, references, target] is
packed per sample (caption padding dropped) and run through `layers` with 3-axis RoPE (omnideft/families/omnigen2/model/
rope.py); `norm_out` projects the target tokens back to latent patches. Time runs from 0 (noise) to 1 (data) and the
output is the velocity data - noise.

Why not the published class: it is not in diffusers (its own package pins torch 2.6 / transformers 4.51), it picks
triton and flash-attn kernels when they are importable, and it carries TeaCache/TaylorSeer state in the forward.
This file is the plain CPU-safe path (SDPA, torch RMSNorm) and is pinned to the published outputs by
tests/test_omnigen2_exactness.py.
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn
from torch.utils.checkpoint import checkpoint

from omnideft.families.omnigen2.model import MAX_REFERENCE_IMAGES, check_reference_images
from omnideft.families.omnigen2.model.blocks import AdaLayerNormOut, OmniGen2Block, TimestepCaptionEmbedding
from omnideft.families.omnigen2.model.rope import check_positions, rotary_tables, rotations, sample_position_ids


def patchify(latent: torch.Tensor, p: int) -> torch.Tensor:
    """[C, H, W] -> [(H/p)(W/p), p*p*C], rows of patches, each patch (p1, p2, c)-ordered."""
    c, h, w = latent.shape
    return latent.reshape(c, h // p, p, w // p, p).permute(1, 3, 2, 4, 0).reshape((h // p) * (w // p), p * p * c)


def unpatchify(tokens: torch.Tensor, p: int, h: int, w: int) -> torch.Tensor:
    """Inverse of patchify: [(h/p)(w/p), p*p*C] -> [C, h, w]."""
    c = tokens.shape[-1] // (p * p)
    return tokens.reshape(h // p, w // p, p, p, c).permute(4, 0, 2, 1, 3).reshape(c, h, w)


def _pad_rows(rows: list[torch.Tensor]):
    """Stack variable-length [L_i, ...] tensors into [N, max L, ...] zeros-padded, with a [N, max L] bool mask."""
    longest = max(r.shape[0] for r in rows)
    out = rows[0].new_zeros((len(rows), longest, *rows[0].shape[1:]))
    mask = torch.zeros(len(rows), longest, dtype=torch.bool, device=rows[0].device)
    for i, r in enumerate(rows):
        out[i, : r.shape[0]] = r
        mask[i, : r.shape[0]] = True
    return out, mask


class OmniGen2Transformer(ModelMixin, ConfigMixin):
    """The published `OmniGen2Transformer2DModel` configuration keys; defaults are those of the released model
    (hidden 2520, 32 layers, 2 refiner layers, 21 heads / 7 KV heads, RoPE axes 40/40/40, text features 2048)."""

    _supports_gradient_checkpointing = True
    _no_split_modules = ["OmniGen2Block"]

    @register_to_config
    def __init__(self, patch_size: int = 2, in_channels: int = 16, out_channels: int | None = None,
                 hidden_size: int = 2520, num_layers: int = 32, num_refiner_layers: int = 2,
                 num_attention_heads: int = 21, num_kv_heads: int = 7, multiple_of: int = 256,
                 ffn_dim_multiplier: float | None = None, norm_eps: float = 1e-5,
                 axes_dim_rope: tuple[int, ...] = (40, 40, 40), axes_lens: tuple[int, ...] = (10000, 10000, 10000),
                 text_feat_dim: int = 2048, timestep_scale: float = 1000.0):
        super().__init__()
        if hidden_size // num_attention_heads != sum(axes_dim_rope):
            raise ValueError(f"hidden_size // num_attention_heads ({hidden_size // num_attention_heads}) must equal "
                             f"sum(axes_dim_rope) ({sum(axes_dim_rope)})")
        self.out_channels = out_channels or in_channels
        patch_dim = patch_size * patch_size * in_channels
        self.x_embedder = nn.Linear(patch_dim, hidden_size)
        self.ref_image_patch_embedder = nn.Linear(patch_dim, hidden_size)
        self.time_caption_embed = TimestepCaptionEmbedding(hidden_size, text_feat_dim, norm_eps, timestep_scale)

        def blocks(n: int, modulation: bool) -> nn.ModuleList:
            return nn.ModuleList(OmniGen2Block(hidden_size, num_attention_heads, num_kv_heads, multiple_of,
                                               ffn_dim_multiplier, norm_eps, modulation) for _ in range(n))

        self.noise_refiner = blocks(num_refiner_layers, True)
        self.ref_image_refiner = blocks(num_refiner_layers, True)
        self.context_refiner = blocks(num_refiner_layers, False)
        self.layers = blocks(num_layers, True)
        self.norm_out = AdaLayerNormOut(hidden_size, patch_size * patch_size * self.out_channels)
        self.image_index_embedding = nn.Parameter(torch.randn(MAX_REFERENCE_IMAGES, hidden_size) * 0.02)
        self.gradient_checkpointing = False
        self._rope_tables: list[torch.Tensor] | None = None

    def rope_tables(self) -> list[torch.Tensor]:
        if self._rope_tables is None:  # built on first use: ~10000 x 20 complex128 per axis, not a parameter
            self._rope_tables = rotary_tables(tuple(self.config.axes_dim_rope), tuple(self.config.axes_lens))
        return self._rope_tables

    def _run(self, block: nn.Module, *args):
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return checkpoint(block, *args, use_reentrant=False)
        return block(*args)

    def forward(self, hidden_states: torch.Tensor | list[torch.Tensor], timestep: torch.Tensor,
                text_hidden_states: torch.Tensor, text_attention_mask: torch.Tensor,
                ref_image_hidden_states: list[list[torch.Tensor] | None] | None = None):
        """Velocity for noisy latents `hidden_states` ([B, C, H, W], or a list of [C, H_i, W_i]) at `timestep` [B]
        (0 = noise, 1 = data), given MLLM hidden states [B, T, text_feat_dim] with their mask [B, T] (padding on
        the right) and, per sample, a list of reference latents [C, h, w] (at most 5) or None."""
        p = self.config.patch_size
        as_tensor = isinstance(hidden_states, torch.Tensor)
        latents = list(hidden_states)
        batch = len(latents)
        refs = list(ref_image_hidden_states) if ref_image_hidden_states is not None else [None] * batch
        refs = [r if r else [] for r in refs]
        for r in refs:
            check_reference_images(len(r))
        tables = self.rope_tables()
        dtype = latents[0].dtype

        temb, text = self.time_caption_embed(timestep, text_hidden_states, dtype)
        caption_lens = text_attention_mask.sum(dim=1).tolist()
        grids = [(x.shape[1] // p, x.shape[2] // p) for x in latents]
        ref_grids = [[(r.shape[1] // p, r.shape[2] // p) for r in rs] for rs in refs]
        ids = [sample_position_ids(c, rg, g).to(text.device) for c, rg, g in zip(caption_lens, ref_grids, grids)]
        check_positions(max(max(int(i.max()) for i in ids), text.shape[1] - 1), self.config.axes_lens)
        rot = [rotations(tables, i) for i in ids]

        # Caption refinement over the padded caption (its own mask); RoPE ids 0..T-1 on every axis.
        caption_ids = torch.arange(text.shape[1], device=text.device)[:, None].expand(-1, 3)
        caption_rot = rotations(tables, caption_ids).unsqueeze(0).expand(batch, -1, -1)
        for layer in self.context_refiner:
            text = self._run(layer, text, text_attention_mask, caption_rot)

        # Target patches: embedded, refined with the timestep.
        image_len = [g[0] * g[1] for g in grids]
        x, x_mask = _pad_rows([self.x_embedder(patchify(lat, p)) for lat in latents])
        x_rot, _ = _pad_rows([r[-n:] for r, n in zip(rot, image_len)])
        for layer in self.noise_refiner:
            x = self._run(layer, x, x_mask, x_rot, temb)

        # Reference patches: embedded + their index embedding, each image refined on its own.
        ref_tokens, ref_rot, ref_temb, owner = [], [], [], []
        for i, rs in enumerate(refs):
            start = caption_lens[i]
            for k, r in enumerate(rs):
                n = r.shape[1] // p * (r.shape[2] // p)
                ref_tokens.append(self.ref_image_patch_embedder(patchify(r, p)) + self.image_index_embedding[k])
                ref_rot.append(rot[i][start:start + n])
                ref_temb.append(temb[i])
                owner.append(i)
                start += n
        refined = [[] for _ in range(batch)]
        if ref_tokens:
            r, r_mask = _pad_rows(ref_tokens)
            r_rot, _ = _pad_rows(ref_rot)
            r_temb = torch.stack(ref_temb)
            for layer in self.ref_image_refiner:
                r = self._run(layer, r, r_mask, r_rot, r_temb)
            for j, (i, tokens) in enumerate(zip(owner, ref_tokens)):
                refined[i].append(r[j, : tokens.shape[0]])

        # Joint sequence per sample: caption (unpadded), references, target.
        joint = [torch.cat([text[i, : caption_lens[i]], *refined[i], x[i, : image_len[i]]]) for i in range(batch)]
        h, mask = _pad_rows(joint)
        h_rot, _ = _pad_rows(rot)
        for layer in self.layers:
            h = self._run(layer, h, mask, h_rot, temb)
        h = self.norm_out(h, temb)

        seq_len = mask.sum(dim=1).tolist()
        out = [unpatchify(h[i, seq_len[i] - image_len[i]: seq_len[i]], p, *latents[i].shape[1:])
               for i in range(batch)]
        return torch.stack(out) if as_tensor else out
