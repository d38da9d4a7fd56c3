"""omnideft demo: the offline end-to-end run of a family's demo preset (the default family's: new tasks taught to
the shipped `small` OmniGen with DEFT, measured)."""

from __future__ import annotations

from omnideft.adapters.registry import METHODS
from omnideft.commands.args import COUNT
from omnideft.families.registry import all_families, default_family, get_family
from omnideft.options import bounded


def add_parser(sub):
    with_demo = [f for f in all_families() if f.demo_preset is not None]
    d = sub.add_parser("demo", help="offline end-to-end run: teach the shipped small OmniGen new tasks with DEFT",
                       description="Writes shards of tasks the pretrained `small` model never saw, trains a rank-8 "
                                   "DEFT adapter on them (CPU, about 2.5 minutes), then scores base and base + DEFT on "
                                   "held-out queries of the new tasks and of the tasks the base knew: report.md, "
                                   "report.json, samples.png, retention.png, loss.png. Another --family runs its "
                                   "own demo preset (docs/models.md).")
    d.add_argument("--out", default="demo_out", help="output directory (default demo_out/)")
    d.add_argument("--family", default=default_family().name, choices=[f.name for f in all_families()],
                   help="whose demo preset runs (a family without one says so): "
                        + "; ".join(f"{f.name}: {f.demo_preset['demo']} demo" for f in with_demo))
    d.add_argument("--steps", type=COUNT, help="training steps (default: the family's demo preset)")
    d.add_argument("--samples", type=COUNT, help="training samples written as shards (default: the preset's)")
    d.add_argument("--queries", type=COUNT, help="held-out queries per new task (study demo)")
    d.add_argument("--retention-queries", type=bounded(int, ">= 0"), help="held-out queries per task the base knew "
                                                                          "(study demo)")
    d.add_argument("--replay", type=bounded(float, "[0, 1)"),
                   help="share of training samples drawn from the tasks the base knew (prior preservation, as "
                        "DreamBooth does; study demo; default 0: the new tasks only)")
    d.add_argument("--method", choices=sorted(METHODS),
                   help="adapter method (default deft; e.g. lora to compare the two on the same data)")
    d.add_argument("--compare", choices=[*sorted(METHODS), "none"],
                   help="a second method trained alike with the forgetting gauge on, drawn beside the first in "
                        "retention.png (study demo; default lora; none = the first alone, faster)")
    d.add_argument("--dinov2-model", help="DINOv2 folder or cached hub id: the forgetting gauge measures drift too "
                                          "(study demo; default: task scores only)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--no-progress", action="store_true", help="no progress bar")
    return d


def run(args) -> int:
    from omnideft.demo import run_family_demo

    kind, r = run_family_demo(args.family, args.out, steps=args.steps, samples=args.samples, queries=args.queries,
                              retention_queries=args.retention_queries, replay=args.replay, method=args.method,
                              compare=args.compare, dinov2_model=args.dinov2_model, seed=args.seed,
                              progress=not args.no_progress)
    if kind == "study":
        print(f"demo: {args.out}/ — new tasks: IoU {r['iou']['base']:.3f} -> {r['iou']['adapted']:.3f}, colour "
              f"error {r['colour_error']['base']:.1f} -> {r['colour_error']['adapted']:.1f}; known tasks: IoU "
              f"{r['retention']['iou']['base']:.3f} -> {r['retention']['iou']['adapted']:.3f}; right answers "
              f"{r['right_rows']['base']} -> {r['right_rows']['adapted']} of {r['right_rows']['rows']}; "
              f"{r['total_seconds']:.0f} s")
    else:
        print(f"demo (tiny {get_family(args.family).title}): {args.out}/ — training loss "
              f"{r['train_loss']['first_steps']:.3f} -> "
              f"{r['train_loss']['last_steps']:.3f}; fixed-noise loss on the training samples "
              f"{r['fixed_noise_loss']['base']:.3f} (base) -> {r['fixed_noise_loss']['adapted']:.3f} (adapted); "
              f"{r['total_seconds']:.0f} s")
    return 0
