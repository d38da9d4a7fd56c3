"""omnideft pretrain RECIPE --out DIR: every weight of a family's pretrain preset (OmniGen (v1)'s `small`) from
random, then scored on held-out queries (docs/models.md)."""

from __future__ import annotations

from omnideft.errors import UserError
from omnideft.families.registry import all_families, get_family


def add_parser(sub):
    builds = [f for f in all_families() if f.pretrain_preset is not None]
    what = ", ".join(f"{f.title} `{f.pretrain_preset}`" for f in builds)
    pt = sub.add_parser("pretrain", help=f"pretrain a small base ({what}) on the procedural shape tasks",
                        description="omnideft pretrain RECIPE [section.key=value ...] --out DIR: trains every weight "
                                    f"of a small base ({what}) from random (recipes/pretrain/small_base.yaml "
                                    "reproduces the shipped `small` model bit for bit on CPU), then scores it on "
                                    "held-out queries of its tasks (docs/models.md).")
    pt.add_argument("recipe", nargs="?", help="pretraining recipe YAML (recipes/pretrain/small_base.yaml)")
    pt.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. train.steps=100")
    pt.add_argument("--out", help="output folder (diffusers layout + pretrain.json + heldout.json)")
    pt.add_argument("--family", default=builds[0].name, choices=[f.name for f in builds],
                    help="whose pretrain preset to build (default: %(default)s)")
    pt.add_argument("--help-recipe", action="store_true", help="print every pretraining recipe key")
    pt.add_argument("--resume", action="store_true",
                    help="continue the unfinished pretraining in --out from its checkpoint, bit for bit (start "
                         "afresh when it has none); SIGTERM or Ctrl-C stop a run with a checkpoint")
    pt.add_argument("--no-progress", action="store_true", help="no progress bar")
    return pt


def run(args) -> int:
    from omnideft.options import options_help

    pretraining = get_family(args.family).pretraining()
    if args.help_recipe:
        print(options_help(pretraining.PretrainRecipe))
        return 0
    if not args.recipe or not args.out:
        raise UserError("pretrain needs a recipe YAML and --out DIR (or --help-recipe)")
    recipe = pretraining.load_pretrain_recipe(args.recipe, args.overrides)
    folder = pretraining.pretrain(recipe, args.out, progress=not args.no_progress, resume=args.resume)
    print(f"model: {folder}")
    if recipe.heldout.queries:
        h = recipe.heldout
        table = pretraining.write_heldout_scores(folder, recipe.data.tasks, h.queries, h.seed, recipe.data.image_size,
                                                 h.sampler_steps, h.guidance, h.image_guidance,
                                                 progress=not args.no_progress)
        print(f"held-out ({recipe.heldout.queries} per task): mean IoU {table['mean']['iou']:.3f}, "
              f"mean colour error {table['mean']['colour_error']:.1f}")
    return 0
