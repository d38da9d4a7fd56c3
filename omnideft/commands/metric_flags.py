"""The metric models and settings eval and bench both take (omnideft/eval/metrics): hub ids or local folders / files."""

from __future__ import annotations

import argparse

from omnideft.commands.args import COUNT
from omnideft.errors import UserError


def add_metric_flags(p: argparse.ArgumentParser) -> None:
    """Models and settings of the metrics (omnideft/eval/metrics): hub ids or local folders / files."""
    p.add_argument("--clip-model", default="openai/clip-vit-base-patch32", help="clip_i / clip_t model")
    p.add_argument("--dino-model", default="facebook/dino-vits8", help="dino_v1 model (transformers ViT)")
    p.add_argument("--dinov2-model", default="facebook/dinov2-small", help="dino_v2 model")
    p.add_argument("--depth-model", default="depth-anything/Depth-Anything-V2-Small-hf", help="depth_rmse model")
    p.add_argument("--aesthetic-model", metavar="FILE", help="aesthetic: LAION aesthetic MLP (.safetensors)")
    p.add_argument("--aesthetic-clip-model", default="openai/clip-vit-large-patch14", help="aesthetic: CLIP L/14")
    p.add_argument("--fid-weights", metavar="FILE", help="fid: FID Inception-v3 weights (.safetensors)")
    p.add_argument("--fid-features", default="inception", choices=["inception", "dinov2"],
                   help="fid feature network (dinov2: Fréchet distance of --dinov2-model features)")
    p.add_argument("--canny-thresholds", default="100,200", metavar="LOW,HIGH", help="canny_f1 Canny thresholds")
    p.add_argument("--batch-size", type=COUNT, default=16, help="images per metric forward")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def metric_options(args):
    import torch

    from omnideft.eval.metrics import MetricOptions

    try:
        low, high = (int(x) for x in args.canny_thresholds.split(","))
    except ValueError:
        raise UserError(f"--canny-thresholds {args.canny_thresholds!r}: expected two integers LOW,HIGH") from None
    if args.batch_size < 1:
        raise UserError(f"--batch-size {args.batch_size} must be >= 1")
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    return MetricOptions(device=device, batch_size=args.batch_size, clip_model=args.clip_model,
                         dino_model=args.dino_model, dinov2_model=args.dinov2_model, depth_model=args.depth_model,
                         aesthetic_model=args.aesthetic_model, aesthetic_clip_model=args.aesthetic_clip_model,
                         fid_weights=args.fid_weights, fid_features=args.fid_features, canny_thresholds=(low, high))
