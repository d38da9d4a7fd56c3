"""omnideft cache-latents SHARDS... --model M --out DIR: every image's VAE posterior, encoded once, for
`data.latents` (docs/memory.md)."""

from __future__ import annotations

from omnideft.commands.args import SIDE
from omnideft.families.registry import AUTO, family_names


def add_parser(sub):
    cl = sub.add_parser("cache-latents", help="encode every image of shards once into a latent cache (data.latents)",
                        description="omnideft cache-latents SHARDS... --model M --out DIR: each image's VAE posterior "
                                    "(mean, std) as safetensors, keyed by the image bytes' sha256, for this VAE and "
                                    "image size; training with data.latents=DIR then gives the same losses without "
                                    "encoding (docs/memory.md).")
    cl.add_argument("shards", nargs="+", help="shard globs or directories (as in data.shards)")
    cl.add_argument("--model", required=True, help="base whose VAE encodes: hub id, diffusers folder, 'tiny', 'small'")
    cl.add_argument("--out", required=True, help="new or empty folder, or a cache of this VAE and size (extended)")
    cl.add_argument("--max-image-size", type=SIDE, default=1024, help="the recipe's data.max_image_size (default 1024)")
    cl.add_argument("--seed", type=int, default=0, help="the recipe's model.seed (only for --model tiny)")
    cl.add_argument("--family", default=AUTO, choices=(AUTO, *family_names()),
                    help="the recipe's model.family (auto = read from the model folder)")
    cl.add_argument("--no-progress", action="store_true", help="no progress bar")
    return cl


def run(args) -> int:
    from omnideft.train.cache_latents import cache_latents

    meta = cache_latents(args.shards, args.model, args.out, args.max_image_size, seed=args.seed, family=args.family,
                         progress=not args.no_progress)
    print(f"latents: {args.out} ({meta['entries']} images; {meta['written']} encoded now)")
    return 0
