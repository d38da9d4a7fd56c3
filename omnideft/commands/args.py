"""Number options shared by the verbs, checked when parsed, naming the option and the allowed range
(omnideft/options.py)."""

from omnideft.options import bounded

COUNT, SIDE, SCALE = bounded(int, ">= 1"), bounded(int, ">= 16", multiple=16), bounded(float, ">= 0")
