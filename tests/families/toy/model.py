"""The toy family's model: a pixel-space DiT of about 2k parameters. An RGB image in [-1, 1] is cut into 4x4
patches (pixels are the latents: no VAE), each patch a token; a timestep embedding and a bag-of-words prompt vector
(the mean embedding of the prompt's words in a fixed vocabulary) are added to every token; `BLOCKS` transformer
blocks of nn.Linear layers (so adapters have targets) predict the rectified-flow velocity noise - image."""

from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F
from torch import nn

PATCH = 4
GRID = 8  # rows and columns of the position tables: 32 px a side at most
SIZE = 16  # the native side
HIDDEN = 8
BLOCKS = 2
# The fixed vocabulary (built offline, saved beside the weights): the shape tasks' words; word 0 is the unknown word.
VOCABULARY = ("<unk>", "a", "an", "the", "at", "in", "of", "on", "draw", "red", "green", "blue", "yellow", "purple",
              "orange", "white", "black", "circle", "square", "triangle", "star", "cross", "diamond", "top", "bottom",
              "left", "right", "centre", "middle", "corner", "small", "large")


class Attention(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.query, self.key, self.value, self.out = (nn.Linear(hidden, hidden) for _ in range(4))

    def forward(self, x):
        mixed = F.scaled_dot_product_attention(self.query(x), self.key(x), self.value(x))
        return self.out(mixed)


class Block(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.attn = Attention(hidden)
        self.up, self.down = nn.Linear(hidden, 2 * hidden), nn.Linear(2 * hidden, hidden)

    def forward(self, x):
        x = x + self.attn(F.layer_norm(x, x.shape[-1:]))
        return x + self.down(F.gelu(self.up(F.layer_norm(x, x.shape[-1:]))))


class ToyTransformer(nn.Module):
    def __init__(self, patch: int = PATCH, grid: int = GRID, hidden: int = HIDDEN, blocks: int = BLOCKS,
                 vocab_size: int = len(VOCABULARY)):
        super().__init__()
        self.config = {"patch": patch, "grid": grid, "hidden": hidden, "blocks": blocks, "vocab_size": vocab_size}
        self.patch_in = nn.Linear(3 * patch * patch, hidden)
        self.time_in = nn.Linear(hidden, hidden)
        self.words = nn.Embedding(vocab_size, hidden)
        self.rows, self.cols = nn.Parameter(torch.zeros(grid, hidden)), nn.Parameter(torch.zeros(grid, hidden))
        self.blocks = nn.ModuleList(Block(hidden) for _ in range(blocks))
        self.patch_out = nn.Linear(hidden, 3 * patch * patch)

    @property
    def max_side(self) -> int:
        return self.config["grid"] * self.config["patch"]

    def forward(self, x: torch.Tensor, t: torch.Tensor, words: torch.Tensor) -> torch.Tensor:
        """x [B, 3, H, W], t [B] in [0, 1], words [B, L] word ids (-1: padding) -> velocity [B, 3, H, W]."""
        p, (h, w) = self.config["patch"], x.shape[-2:]
        tokens = self.patch_in(F.unfold(x, p, stride=p).transpose(1, 2))  # [B, N, 3 p p] -> [B, N, hidden]
        position = (self.rows[: h // p, None] + self.cols[None, : w // p]).reshape(-1, tokens.shape[-1])
        present = (words >= 0).to(tokens.dtype)
        bag = (self.words(words.clamp(min=0)) * present[..., None]).sum(1) / present.sum(1, keepdim=True).clamp(min=1)
        condition = self.time_in(timestep_features(t, tokens.shape[-1]).to(tokens.dtype)) + bag
        tokens = tokens + position + condition[:, None]
        for block in self.blocks:
            tokens = block(tokens)
        return F.fold(self.patch_out(tokens).transpose(1, 2), (h, w), p, stride=p)


def timestep_features(t: torch.Tensor, dim: int) -> torch.Tensor:
    freqs = torch.exp(-math.log(1000.0) * torch.arange(dim // 2, dtype=torch.float32) / (dim // 2))
    angles = t.float()[:, None] * 1000.0 * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def word_ids(prompts: list[str], vocabulary: tuple[str, ...]) -> torch.Tensor:
    """[B, L] ids of the prompts' words (unknown words: 0), padded with -1; an empty prompt has none."""
    index = {word: i for i, word in enumerate(vocabulary)}
    ids = [[index.get(word, 0) for word in re.findall(r"[a-z]+", p.lower())] for p in prompts]
    longest = max(1, *(len(i) for i in ids))
    return torch.tensor([i + [-1] * (longest - len(i)) for i in ids], dtype=torch.long)


def rectified_flow_loss(model, pixels: torch.Tensor, words: torch.Tensor, noise: torch.Generator, autocast):
    """Per-sample loss [B]: x_t = (1 - t) x + t e, the model predicts e - x; t and e drawn from `noise`."""
    t = torch.rand(pixels.shape[0], generator=noise)
    e = torch.randn(pixels.shape, generator=noise)
    device = next(model.parameters()).device
    pixels, t, e, words = pixels.to(device), t.to(device), e.to(device), words.to(device)
    x_t = (1 - t[:, None, None, None]) * pixels + t[:, None, None, None] * e
    with autocast():
        velocity = model(x_t, t, words)
    return ((velocity.float() - (e - pixels)) ** 2).mean(dim=(1, 2, 3))


@torch.no_grad()
def sample(transformer: ToyTransformer, vocabulary: tuple[str, ...], prompt: str, *, seed: int, height: int,
           width: int, steps: int, guidance: float, negative_prompt: str = "", shift: float = 1.0,
           on_step=None) -> torch.Tensor:
    """One image [3, H, W] in [0, 1]: Euler steps of the velocity from t = 1 (noise from `seed`) to t = 0, with text
    guidance against `negative_prompt`; `shift` > 1 spends more steps at high noise."""
    device = next(transformer.parameters()).device
    x = torch.randn((1, 3, height, width), generator=torch.Generator().manual_seed(seed)).to(device)
    words = word_ids([prompt, negative_prompt], vocabulary).to(device)
    ts = torch.linspace(1.0, 0.0, steps + 1)
    ts = shift * ts / (1 + (shift - 1) * ts)
    for i in range(steps):
        t = ts[i].repeat(2).to(device)
        cond, uncond = transformer(x.repeat(2, 1, 1, 1), t, words).chunk(2)
        x = x + (ts[i + 1] - ts[i]).item() * (uncond + guidance * (cond - uncond))
        if on_step is not None:
            on_step(i + 1, steps)
    return ((x[0].float().clamp(-1, 1) + 1) / 2).cpu()
