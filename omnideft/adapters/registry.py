"""Method name -> module with `build_config(spec, targets)` (PEFT) or `inject(transformer, spec, targets, name)`
(own injection), and `trainable_groups(param_name)`. One line per method."""

from omnideft.adapters import deft, lora, para, soda, svdiff

METHODS = {
    "lora": lora,
    "deft": deft,
    "para": para,
    "soda": soda,
    "svdiff": svdiff,
}
