"""omnideft bench: a benchmark protocol (generate with fixed seeds, score, tables) or a comparison of finished runs
(docs/eval.md)."""

from __future__ import annotations

from pathlib import Path

from omnideft.commands.args import COUNT, SCALE, SIDE, add_family_flag
from omnideft.commands.metric_flags import add_metric_flags, metric_options
from omnideft.errors import UserError


def add_parser(sub):
    b = sub.add_parser("bench", help="benchmark protocol: generate with fixed seeds, score, tables; or --compare runs",
                       description="omnideft bench PROTOCOL --model M [--adapter A ...] --shards TEST_SHARDS --out DIR "
                                   "(protocols: visualcloze, subject, retention; resumable), or omnideft bench "
                                   "--compare DIR_A DIR_B ... --out DIR (paper-style table and bar chart).")
    b.add_argument("protocol", nargs="?", help="visualcloze | subject | retention")
    b.add_argument("--compare", nargs="+", metavar="DIR", help="compare finished runs (their summary.json)")
    b.add_argument("--model", help="base: hub id, diffusers folder, 'tiny' or 'small' (default: the adapter's base)")
    b.add_argument("--adapter", action="append", default=[], metavar="PATH[:WEIGHT]",
                   help="adapter folder, optionally weighted; repeatable: several are merged into the base")
    b.add_argument("--label", help="name of this run in comparisons (default: adapter folder name, or base)")
    b.add_argument("--shards", action="append", default=[], help="test shard glob or directory (repeatable)")
    b.add_argument("--prompts", metavar="FILE", help="retention: prompt list, one per line (default: built in)")
    b.add_argument("--metrics", help="subject / retention: comma list replacing the protocol's metrics")
    b.add_argument("--images-per-prompt", type=COUNT, default=1, help="subject / retention: seeds per prompt")
    b.add_argument("--limit", type=COUNT, help="only the first N jobs (a quick look; resumes into the full run)")
    b.add_argument("--out", required=True, help="output folder")
    b.add_argument("--seed", type=int, default=0, help="job i is generated with seed SEED + i")
    b.add_argument("--steps", type=COUNT, help="sampling steps (default: the model family's own)")
    b.add_argument("--guidance", type=SCALE, help="text CFG scale (default: the model family's own)")
    b.add_argument("--image-guidance", type=SCALE, help="image CFG scale, with input images (default: the family's)")
    b.add_argument("--height", type=SIDE, help="text-only jobs: output height (default: the model's native size; "
                                               "in-context jobs use their target's size)")
    b.add_argument("--width", type=SIDE, help="text-only jobs: output width (default: the model's native size)")
    b.add_argument("--max-input-image-size", type=SIDE, default=1024)
    b.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    add_family_flag(b)
    add_metric_flags(b)
    return b


def run(args) -> int:
    if args.compare:
        from omnideft.bench.compare import run_compare

        if args.protocol:
            raise UserError("give either a PROTOCOL to run or --compare DIR ..., not both")
        paths = run_compare(args.compare, args.out)
        print(Path(paths[0]).read_text(), end="")
        print(f"chart: {paths[-1]}")
        return 0
    if not args.protocol:
        raise UserError("bench needs a PROTOCOL (visualcloze, subject, retention) or --compare DIR ...")
    from omnideft.bench.protocols import protocol_class

    protocol_class(args.protocol)  # an unknown protocol fails before torch and the models load
    from omnideft.bench.generator import GenerationSettings
    from omnideft.bench.protocol import ProtocolInputs
    from omnideft.bench.run import BenchRequest, run_bench
    from omnideft.eval.metrics import parse_metrics

    if args.images_per_prompt < 1:
        raise UserError(f"--images-per-prompt {args.images_per_prompt} must be >= 1")
    options = metric_options(args)
    generation = GenerationSettings(model=args.model, adapters=args.adapter, steps=args.steps,
                                    guidance=args.guidance, image_guidance=args.image_guidance, height=args.height,
                                    width=args.width, max_input_image_size=args.max_input_image_size,
                                    device=args.device, dtype=args.dtype, family=args.family)
    inputs = ProtocolInputs(shards=args.shards, prompts=args.prompts,
                            metrics=parse_metrics(args.metrics) if args.metrics else None,
                            images_per_prompt=args.images_per_prompt)
    req = BenchRequest(protocol=args.protocol, out=args.out, generation=generation, inputs=inputs, options=options,
                       seed=args.seed, limit=args.limit, label=args.label, progress=not args.no_progress)
    paths = run_bench(req, argv=args.argv)
    print(Path(paths[-1]).read_text(), end="")
    return 0
