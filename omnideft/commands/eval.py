"""omnideft eval: score image folders (--pred/--ref) or the held-out denoising loss of a base and its adapters
(docs/eval.md)."""

from __future__ import annotations

from pathlib import Path

from omnideft.commands.args import COUNT, SIDE, add_family_flag
from omnideft.commands.metric_flags import add_metric_flags, metric_options
from omnideft.errors import UserError


def add_parser(sub):
    e = sub.add_parser("eval", help="score images (--pred/--ref folders) or held-out denoising loss (--model/--shards)",
                       description="Two modes. Folder scoring: omnideft eval --pred DIR --ref DIR --metrics "
                                   "clip_i,dino_v1,... --out DIR (pairs matched by file name; docs/eval.md). "
                                   "Denoising: omnideft eval --model M --shards S --out STEM: held-out rectified-"
                                   "flow loss per task for the base and each adapter.")
    e.add_argument("--model", help="denoising mode: base hub id, diffusers folder, 'tiny' or 'small'")
    e.add_argument("--adapter", action="append", default=[], help="denoising mode: adapter folder (repeatable)")
    e.add_argument("--shards", action="append", help="denoising mode: held-out shard glob or directory (repeatable)")
    e.add_argument("--out", required=True, help="folder mode: output folder (scores.csv, summary.json, summary.md); "
                                                "denoising mode: output stem (OUT.csv, OUT.json, OUT.md)")
    e.add_argument("--samples", type=COUNT, default=64,
                   help="denoising mode: samples evaluated (first N in shard order)")
    e.add_argument("--repeats", type=COUNT, default=2, help="denoising mode: noise draws per sample")
    e.add_argument("--max-image-size", type=SIDE, default=1024, help="denoising mode: longest image side")
    add_family_flag(e)
    e.add_argument("--pred", metavar="DIR", help="folder mode: generated images")
    e.add_argument("--ref", metavar="DIR", help="folder mode: reference images, matched to --pred by file stem")
    e.add_argument("--cond", metavar="DIR", help="folder mode: condition images (edge/depth maps) for canny_f1 and "
                                                 "depth_rmse (default: derived from --ref)")
    e.add_argument("--prompts", metavar="FILE", help="folder mode: JSON object {image stem: prompt} for clip_t")
    e.add_argument("--metrics", help="folder mode: comma list, e.g. clip_i,dino_v1,ssim (see docs/eval.md)")
    add_metric_flags(e)
    return e


def run(args) -> int:
    if args.pred:
        from omnideft.eval.folders import run_folder_eval
        from omnideft.eval.metrics import parse_metrics

        if not args.metrics:
            raise UserError("--metrics is required with --pred (e.g. --metrics clip_i,dino_v1,ssim)")
        paths = run_folder_eval(args.pred, args.ref, parse_metrics(args.metrics), args.out, metric_options(args),
                                cond=args.cond, prompts=args.prompts, argv=args.argv, progress=not args.no_progress)
        print(Path(paths[-1]).read_text(), end="")
        return 0
    from omnideft.eval.run import run_eval

    if not args.model or not args.shards:
        raise UserError("eval needs --pred DIR (folder scoring) or --model and --shards (denoising loss)")
    results, paths = run_eval(args.model, args.adapter, args.shards, args.out, samples=args.samples,
                              max_image_size=args.max_image_size, repeats=args.repeats, family=args.family)
    print(Path(paths[-1]).read_text(), end="")
    return 0
