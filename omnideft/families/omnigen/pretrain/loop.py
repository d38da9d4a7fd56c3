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
from omnideft.families.omnigen.pretrain import checkpoint as ckpt
from omnideft.families.omnigen.pretrain.recipe import PretrainRecipe
from omnideft.families.omnigen.pretrain.stop import PretrainingStopped, StopSignals
from omnideft.families.omnigen.pretrain.stream import ShapeTaskStream
from omnideft.families.omnigen.pretrain.vae_fit import fit_vae
from omnideft.families.omnigen.processor import OmniGenProcessor
from omnideft.files import OWNER_FILE, atomic_path, check_output_folder, write_text_atomic
from omnideft.flow.vae import encode_batch
from omnideft.model.tokenizer import build_tiny_tokenizer
from omnideft.progress import progress_bar
from omnideft.shapes import TASKS, VOCABULARY, make_sample

WRITER = "omnideft pretrain"  # recorded in the folder: a rerun may replace its own output, nothing else
WEIGHT_FILES = ("transformer/diffusion_pytorch_model.safetensors", "transformer/config.json",
                "vae/diffusion_pytorch_model.safetensors", "vae/config.json", "tokenizer/tokenizer.json")


def pretrain(recipe: PretrainRecipe, out_dir: str | Path, progress: bool = True, resume: bool = False) -> Path:
    """Train the recipe's model; write it to `out_dir` (renamed into place when complete). Returns the folder.

    Every `train.checkpoint_every` steps, and on SIGTERM or Ctrl-C (then PretrainingStopped is raised), the state
    goes to `out_dir/checkpoint/`; `resume` continues from it bit for bit (checkpoint.py), or starts afresh when
    there is none."""
    check_recipe(recipe)
    cfg, out, t_start = recipe.train, Path(out_dir), time.perf_counter()
    check_output_folder(out, WRITER)  # before the minutes of training, not after
    saved = ckpt.read_checkpoint(out)
    if saved and not resume:
        raise UserError(f"{out} holds an unfinished pretraining (checkpoint at step {saved[0]['step']}); continue it "
                        "with --resume, or name another --out")
    if saved:
        ckpt.check_same_recipe(ckpt.checkpoint_dir(out), saved[0]["recipe"], recipe.to_dict())
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    comps = build_components(recipe)
    model = comps.transformer
    stream = ShapeTaskStream(OmniGenProcessor(comps.tokenizer, max_image_size=recipe.data.image_size),
                             recipe.data.tasks, recipe.data.image_size, recipe.data.max_examples,
                             recipe.data.uncond_prob, recipe.data.image_only_prob, seed=cfg.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer,
                                                 warmup_cosine(cfg.warmup_steps, cfg.steps, cfg.min_lr_ratio))
    noise = torch.Generator().manual_seed(cfg.seed)
    if saved:
        state = ckpt.restore(*saved, model, comps.vae, optimizer, schedule, stream.rng, noise)
    else:
        vae_mse = fit_vae(comps.vae, vae_images(recipe), steps=recipe.vae.fit_steps, batch=recipe.vae.fit_batch,
                          lr=recipe.vae.fit_lr, min_lr_ratio=recipe.vae.fit_min_lr_ratio, seed=cfg.seed,
                          progress=progress)
        state = ckpt.LoopState(0, [], vae_mse, round(time.perf_counter() - t_start, 1), 0.0, [])
    t_mark = time.perf_counter()

    def checkpoint() -> Path:
        nonlocal t_mark
        state.seconds_train, t_mark = state.seconds_train + time.perf_counter() - t_mark, time.perf_counter()
        return ckpt.save_checkpoint(out, WRITER, recipe.to_dict(), state, model, comps.vae, optimizer, schedule,
                                    stream.rng, noise)

    mark_output_folder(out)
    model.requires_grad_(True).train()
    with StopSignals() as stop:
        if not saved:  # the fitted VAE is kept: a resume skips the fit
            checkpoint()
        bar = progress_bar(range(state.step + 1, cfg.steps + 1), desc="pretrain", disable=not progress,
                           initial=state.step, total=cfg.steps)
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
            state.step = step
            state.losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(state.losses[-50:]):.4f}")
            if not progress and cfg.log_every and step % cfg.log_every == 0:
                print(f"step {step}/{cfg.steps} loss {np.mean(state.losses[-cfg.log_every:]):.4f}", flush=True)
            if step == cfg.steps:  # done: the model itself is written below
                break
            if stop.received:
                raise PretrainingStopped(stop.received, step, checkpoint(), out)
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                checkpoint()
    state.seconds_train += time.perf_counter() - t_mark
    model.requires_grad_(False).eval()

    with atomic_path(out, writer=WRITER) as tmp:  # the folder appears whole, with its pretrain.json, or not at all
        save_base(comps, tmp)
        record = {
            "format": "omnideft.pretrain/1",
            "recipe": recipe.to_dict(),
            "parameters": sum(p.numel() for p in model.parameters()),
            "vae_reconstruction_mse": state.vae_mse,
            "seconds": {"vae_fit": state.seconds_vae, "total": round(state.seconds_vae + state.seconds_train, 1)},
            "resumed_at_steps": state.resumed_at,
            "loss": [round(x, 6) for x in state.losses],
            "sha256": {rel: file_sha256(tmp / rel) for rel in WEIGHT_FILES},
            "versions": {p: version(p) for p in ("omnideft", "torch", "diffusers", "transformers")},
            "torch_threads": torch.get_num_threads(),
        }
        write_text_atomic(tmp / "pretrain.json", json.dumps(record, indent=1) + "\n")
    return out


def mark_output_folder(out: Path) -> None:
    """OUT exists from the first checkpoint on, recorded as this verb's output, so the finished model (and a rerun)
    may replace it; a folder that holds an earlier finished model keeps it until then."""
    out.mkdir(parents=True, exist_ok=True)
    if not (out / OWNER_FILE).is_file():
        (out / OWNER_FILE).write_text(json.dumps({"written_by": WRITER}) + "\n")


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
            m.hidden_size, m.num_heads, m.num_layers, m.intermediate_size, len(tokenizer), m.time_step_dim,
            in_channels=recipe.vae.latent_channels))
        vae = AutoencoderKL(**tiny_vae_config(recipe.vae.channels, recipe.vae.latent_channels))
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
