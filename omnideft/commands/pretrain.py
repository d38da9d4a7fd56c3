"""omnideft pretrain RECIPE --out DIR: every weight of a small OmniGen from random, then scored on held-out queries
(docs/models.md)."""

from __future__ import annotations

from omnideft.errors import UserError


def add_parser(sub):
    pt = sub.add_parser("pretrain", help="pretrain the small base OmniGen on the procedural shape tasks",
                        description="omnideft pretrain RECIPE [section.key=value ...] --out DIR: trains every weight "
                                    "of a small OmniGen from random (recipes/pretrain/small_base.yaml reproduces "
                                    "the shipped `small` model bit for bit on CPU), then scores it on held-out "
                                    "queries of its tasks (docs/models.md).")
    pt.add_argument("recipe", nargs="?", help="pretraining recipe YAML (recipes/pretrain/small_base.yaml)")
    pt.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. train.steps=100")
    pt.add_argument("--out", help="output folder (diffusers layout + pretrain.json + heldout.json)")
    pt.add_argument("--help-recipe", action="store_true", help="print every pretraining recipe key")
    pt.add_argument("--no-progress", action="store_true", help="no progress bar")
    return pt


def run(args) -> int:
    from omnideft.options import options_help
    from omnideft.pretrain.recipe import PretrainRecipe, load_pretrain_recipe

    if args.help_recipe:
        print(options_help(PretrainRecipe))
        return 0
    if not args.recipe or not args.out:
        raise UserError("pretrain needs a recipe YAML and --out DIR (or --help-recipe)")
    recipe = load_pretrain_recipe(args.recipe, args.overrides)
    from omnideft.pretrain.heldout import write_heldout_scores
    from omnideft.pretrain.loop import pretrain

    folder = pretrain(recipe, args.out, progress=not args.no_progress)
    print(f"model: {folder}")
    if recipe.heldout.queries:
        h = recipe.heldout
        table = write_heldout_scores(folder, recipe.data.tasks, h.queries, h.seed, recipe.data.image_size,
                                     h.sampler_steps, h.guidance, h.image_guidance, progress=not args.no_progress)
        print(f"held-out ({recipe.heldout.queries} per task): mean IoU {table['mean']['iou']:.3f}, "
              f"mean colour error {table['mean']['colour_error']:.1f}")
    return 0
