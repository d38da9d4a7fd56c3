"""omnideft demo: the offline end-to-end run (new tasks taught to the shipped `small` OmniGen with DEFT, measured),
or a small run on the tiny OmniGen2."""

from __future__ import annotations

from omnideft.adapters.registry import METHODS
from omnideft.commands.args import COUNT
from omnideft.demo import DEFAULTS as DEMO
from omnideft.demo import DEFAULTS_OMNIGEN2 as DEMO_OMNIGEN2
from omnideft.errors import UserError
from omnideft.options import bounded


def add_parser(sub):
    d = sub.add_parser("demo", help="offline end-to-end run: teach the shipped small OmniGen new tasks with DEFT",
                       description="Writes shards of tasks the pretrained `small` model never saw, trains a rank-8 "
                                   "DEFT adapter on them (CPU, about a minute), then scores base and base + DEFT on "
                                   "held-out queries of the new tasks and of the tasks the base knew: report.md, "
                                   "report.json, samples.png, retention.png, loss.png.")
    d.add_argument("--out", default="demo_out", help="output directory (default demo_out/)")
    d.add_argument("--steps", type=COUNT, help=f"training steps (default {DEMO['steps']}; "
                   f"--family omnigen2: {DEMO_OMNIGEN2['steps']})")
    d.add_argument("--samples", type=COUNT, help=f"training samples written as shards (default {DEMO['samples']}; "
                   f"--family omnigen2: {DEMO_OMNIGEN2['samples']})")
    d.add_argument("--family", default="omnigen", choices=["omnigen", "omnigen2"],
                   help="omnigen2: a small run on the tiny OmniGen2 instead (docs/omnigen2.md): trains a DEFT adapter "
                        "on an in-context task, writes loss.png, samples.png and report.json (the loss falls)")
    d.add_argument("--queries", type=COUNT, default=DEMO["queries"], help="held-out queries per new task")
    d.add_argument("--retention-queries", type=bounded(int, ">= 0"), default=DEMO["retention_queries"],
                   help="held-out queries per task the base knew")
    d.add_argument("--replay", type=bounded(float, "[0, 1)"), default=DEMO["replay"],
                   help="share of training samples drawn from the tasks the base knew (prior preservation, as "
                        f"DreamBooth does; default {DEMO['replay']}; 0 = the new tasks only)")
    d.add_argument("--method", default="deft", choices=sorted(METHODS),
                   help="adapter method (default deft; e.g. lora to compare the two on the same data)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--no-progress", action="store_true", help="no progress bar")
    return d


def run(args) -> int:
    from omnideft.demo.run import run_demo

    if args.family == "omnigen2":  # OmniGen2 backend (demo/omnigen2.py)
        return _demo_omnigen2(args)
    args.steps = DEMO["steps"] if args.steps is None else args.steps
    args.samples = DEMO["samples"] if args.samples is None else args.samples
    if not 0.0 <= args.replay < 1.0:
        raise UserError(f"--replay {args.replay}: give a share in [0, 1)")

    r = run_demo(args.out, steps=args.steps, samples=args.samples, queries=args.queries,
                 retention_queries=args.retention_queries, seed=args.seed, method=args.method, replay=args.replay,
                 progress=not args.no_progress)
    print(f"demo: {args.out}/ — new tasks: IoU {r['iou']['base']:.3f} -> {r['iou']['adapted']:.3f}, colour error "
          f"{r['colour_error']['base']:.1f} -> {r['colour_error']['adapted']:.1f}; known tasks: IoU "
          f"{r['retention']['iou']['base']:.3f} -> {r['retention']['iou']['adapted']:.3f}; {r['total_seconds']:.0f} s")
    return 0


def _demo_omnigen2(args) -> int:
    from omnideft.demo.omnigen2 import run_omnigen2_demo

    r = run_omnigen2_demo(args.out, steps=DEMO_OMNIGEN2["steps"] if args.steps is None else args.steps,
                          samples=DEMO_OMNIGEN2["samples"] if args.samples is None else args.samples,
                          seed=args.seed, progress=not args.no_progress)
    print(f"demo (tiny OmniGen2): {args.out}/ — training loss {r['train_loss']['first_steps']:.3f} -> "
          f"{r['train_loss']['last_steps']:.3f}; fixed-noise loss on the training samples "
          f"{r['fixed_noise_loss']['base']:.3f} (base) -> {r['fixed_noise_loss']['adapted']:.3f} (base + DEFT); "
          f"{r['total_seconds']:.0f} s")
    return 0
