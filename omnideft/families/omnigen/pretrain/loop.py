"""`omnideft pretrain`: the small base OmniGen trained in full, from random weights, on the shape-world tasks.

One process, seeded: the VAE is fitted first (so latents decode to legible shapes), then every transformer weight
trains on the rectified-flow objective with AdamW, linear warm-up and cosine decay. The folder written is a diffusers
OmniGen folder (what `model.name=small` ships) plus `pretrain.json` (recipe, per-step losses, time, file sums).
"""

from __future__ import annotations

import json
import math
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, OmniGenTransformer2DModel

from omnideft.data.format.writer import file_sha256
from omnideft.errors import UserError
from omnideft.families.omnigen.loss import rectified_flow_loss
from omnideft.families.omnigen.model.loading import OmniGenComponents, save_base
from omnideft.families.omnigen.model.tiny import flow_scheduler, omnigen_config, tiny_vae_config
from omnideft.families.omnigen.pretrain.recipe import PretrainRecipe
from omnideft.families.omnigen.pretrain.stream import ShapeTaskStream
from omnideft.families.omnigen.pretrain.vae_fit import fit_vae
from omnideft.families.omnigen.processor import OmniGenProcessor
from omnideft.files import atomic_path, check_output_folder, write_text_atomic
from omnideft.flow.vae import encode_batch
from omnideft.model.tokenizer import build_tiny_tokenizer
from omnideft.progress import progress_bar
from omnideft.shapes import TASKS, VOCABULARY, make_sample

WRITER = "omnideft pretrain"  # recorded in the folder: a rerun may replace its own output, nothing else
WEIGHT_FILES = ("transformer/diffusion_pytorch_model.safetensors", "transformer/config.json",
                "vae/diffusion_pytorch_model.safetensors", "vae/config.json", "tokenizer/tokenizer.json")


def pretrain(recipe: PretrainRecipe, out_dir: str | Path, progress: bool = True) -> Path:
    """Train the recipe's model; write it to `out_dir` (renamed into place when complete). Returns the folder."""
    check_recipe(recipe)
    check_output_folder(out_dir, WRITER)  # before the minutes of training, not after
    cfg, out, t_start = recipe.train, Path(out_dir), time.perf_counter()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    comps = build_components(recipe)
    vae_mse = fit_vae(comps.vae, vae_images(recipe), steps=recipe.vae.fit_steps, batch=recipe.vae.fit_batch,
                      lr=recipe.vae.fit_lr, seed=cfg.seed, progress=progress)
    t_vae = time.perf_counter() - t_start

    model = comps.transformer.requires_grad_(True).train()
    stream = ShapeTaskStream(OmniGenProcessor(comps.tokenizer, max_image_size=recipe.data.image_size),
                             recipe.data.tasks, recipe.data.image_size, recipe.data.max_examples,
                             recipe.data.uncond_prob, recipe.data.image_only_prob, seed=cfg.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer,
                                                 warmup_cosine(cfg.warmup_steps, cfg.steps, cfg.min_lr_ratio))
    noise = torch.Generator().manual_seed(cfg.seed)
    losses: list[float] = []
    bar = progress_bar(range(1, cfg.steps + 1), desc="pretrain", disable=not progress)
    for step in bar:
        batch = stream.batch(cfg.batch_size)
        x1, cond = encode_batch(comps.vae, batch, noise)
        loss = rectified_flow_loss(model, x1, cond, noise).mean()
        if not torch.isfinite(loss):
            raise UserError(f"pretraining loss became {loss.item()} at step {step}; lower train.lr")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
        if not progress and cfg.log_every and step % cfg.log_every == 0:
            print(f"step {step}/{cfg.steps} loss {np.mean(losses[-cfg.log_every:]):.4f}", flush=True)
    model.requires_grad_(False).eval()

    with atomic_path(out, writer=WRITER) as tmp:  # the folder appears whole, with its pretrain.json, or not at all
        save_base(comps, tmp)
        record = {
            "format": "omnideft.pretrain/1",
            "recipe": recipe.to_dict(),
            "parameters": sum(p.numel() for p in model.parameters()),
            "vae_reconstruction_mse": vae_mse,
            "seconds": {"vae_fit": round(t_vae, 1), "total": round(time.perf_counter() - t_start, 1)},
            "loss": [round(x, 6) for x in losses],
            "sha256": {rel: file_sha256(tmp / rel) for rel in WEIGHT_FILES},
            "versions": {p: version(p) for p in ("omnideft", "torch", "diffusers", "transformers")},
            "torch_threads": torch.get_num_threads(),
        }
        write_text_atomic(tmp / "pretrain.json", json.dumps(record, indent=1) + "\n")
    return out


def check_recipe(recipe: PretrainRecipe) -> None:
    size = recipe.data.image_size
    if size <= 0 or size % 16:
        raise UserError(f"data.image_size {size} must be a positive multiple of 16")
    if recipe.model.hidden_size % recipe.model.num_heads:
        raise UserError(f"model.hidden_size {recipe.model.hidden_size} is not divisible by model.num_heads "
                        f"{recipe.model.num_heads}")
    if not 0 <= recipe.data.uncond_prob + recipe.data.image_only_prob <= 1:
        raise UserError("data.uncond_prob + data.image_only_prob must lie in [0, 1]")
    if recipe.train.steps < 1 or recipe.train.batch_size < 1:
        raise UserError("train.steps and train.batch_size must be >= 1")


def build_components(recipe: PretrainRecipe) -> OmniGenComponents:
    """Random transformer and VAE from the recipe's sizes (seeded), the word tokenizer with the tasks' words."""
    tokenizer = build_tiny_tokenizer(extra_words=VOCABULARY)
    m = recipe.model
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(m.seed)
        transformer = OmniGenTransformer2DModel(**omnigen_config(
            m.hidden_size, m.num_heads, m.num_layers, m.intermediate_size, len(tokenizer), m.time_step_dim))
        vae = AutoencoderKL(**tiny_vae_config(recipe.vae.channels))
    return OmniGenComponents(transformer, vae, tokenizer, flow_scheduler(), "small")


def vae_images(recipe: PretrainRecipe) -> list:
    """Every kind of image the tasks show (inputs and targets), from a stream apart from the training one."""
    rng = np.random.default_rng(recipe.train.seed + 7)
    names = recipe.data.tasks
    images: list = []
    while len(images) < recipe.vae.fit_images:
        sample = make_sample(TASKS[names[len(images) % len(names)]], rng, recipe.data.image_size, 0)
        images += [*sample.images, sample.target]
    return images[: recipe.vae.fit_images]


def warmup_cosine(warmup: int, total: int, floor: float):
    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    return factor
