"""DEFT through PEFT: W' = (I - P_proj) W + Q_P R. Projectors here: `relu` (P relu(P)^T) and `qr` (Q Q^T).

`init: identity` sets R = right^T W / s so the adapted model equals the base at step 0; `init: paper` keeps a random
R as the authors ran it. P and R sit in separate optimizer groups (P at p_lr_ratio x lr, 0.1 by default).
"""

from peft import DeftConfig

PROJECTORS = ("relu", "qr")


def build_config(spec, target_modules: list[str], para: bool = False) -> DeftConfig:
    projector = spec.projector or ("qr" if para else "relu")
    if projector not in PROJECTORS:
        from omnideft.errors import UserError

        raise UserError(f"adapter.projector {projector!r} is not one of {PROJECTORS}")
    return DeftConfig(
        r=spec.rank,
        decomposition_method=projector,
        alpha=spec.alpha,
        para=para,
        deft_dropout=spec.dropout,
        init_weights=spec.init == "identity",
        target_modules=target_modules,
    )


def trainable_groups(name: str) -> str:
    return "P" if "deft_P" in name else "R"
