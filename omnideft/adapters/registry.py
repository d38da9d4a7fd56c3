"""Method name -> module with `build_config(spec, targets)` and `trainable_groups(param_name)`. One line per method."""

from omnideft.adapters import deft, lora, para

METHODS = {
    "lora": lora,
    "deft": deft,
    "para": para,
}
