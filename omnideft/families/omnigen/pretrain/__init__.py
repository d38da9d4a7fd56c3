"""Pretraining the `small` base OmniGen in full on the procedural shape tasks: `omnideft pretrain RECIPE --out DIR`.

recipe.py names every setting; stream.py draws the training batches; vae_fit.py fits the VAE first; loop.py is the
loop; heldout.py scores the result. Single process and seeded throughout, so one command reproduces the shipped
weights bit for bit on CPU. The family's `pretraining()` hands this package to the command (families/family.py).
"""

from omnideft.families.omnigen.pretrain.heldout import write_heldout_scores
from omnideft.families.omnigen.pretrain.loop import pretrain
from omnideft.families.omnigen.pretrain.recipe import PretrainRecipe, load_pretrain_recipe

__all__ = ["PretrainRecipe", "load_pretrain_recipe", "pretrain", "write_heldout_scores"]
