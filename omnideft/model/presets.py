"""The preset name every family's loader builds itself: `tiny`, randomly initialised from the recipe's seed (the
tests' model). It wins over a folder of the same name. (`small`, OmniGen's shipped pretrained preset: small.py.)"""

TINY = "tiny"
