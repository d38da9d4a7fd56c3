"""The toy for `omnideft plan` (family.plan_entry()): its config, its sizes counted on the meta device and a rough
activation model (what each block's layer norms, attention and feed-forward keep per token). The planner's numbers
for the toy are a smoke test of the interface, not a measured model."""

from __future__ import annotations

from omnideft.sizing.estimate import DTYPE_BYTES, Activations, Setup, Workload
from omnideft.sizing.shapes import ModelShapes, PlanFamily, adapted_linears, count_linears


def plan_entry() -> PlanFamily:
    # pixel-space patches, no time token, no input images
    return PlanFamily("toy", toy_configs, toy_shapes, workload={"time_tokens": 0})


def toy_configs(name: str) -> tuple[dict, str]:
    import json
    from pathlib import Path

    from tests.families.toy.model import ToyTransformer

    folder = Path(name) / "transformer" / "config.json"
    return {"transformer": json.loads(folder.read_text()) if folder.is_file() else ToyTransformer().config}, ""


def toy_shapes(configs: dict, spec) -> ModelShapes:
    import torch

    from omnideft.adapters import apply_adapter
    from tests.families.toy import FAMILY
    from tests.families.toy.model import ToyTransformer

    config = configs["transformer"]
    with torch.device("meta"):
        transformer = ToyTransformer(**config).requires_grad_(False)
        linear, other, buffers = count_linears(transformer)
        model = apply_adapter(transformer, spec, targets=FAMILY.target_modules)
    adapted = adapted_linears(model)
    return ModelShapes(hidden=config["hidden"], intermediate=2 * config["hidden"], heads=1, layers=config["blocks"],
                       linear_params=linear, other_params=other, buffers=buffers,
                       adapter_params=sum(p.numel() for p in model.parameters() if p.requires_grad),
                       adapted=tuple((m.in_features, m.out_features) for m in adapted), vae_params=0,
                       method=spec.method, activations=TOY_ACTIVATIONS)


class ToyActivations(Activations):
    def block(self, shapes: ModelShapes, setup: Setup, rank: int, tokens: int) -> float:
        # two layer norms' inputs, q/k/v/attention output, the feed-forward's input and hidden: ~ 8 H + 2 I values
        per_layer_adapters = len(shapes.adapted) // max(shapes.layers, 1)
        return tokens * (DTYPE_BYTES[setup.compute] * (8 * shapes.hidden + 2 * shapes.intermediate)
                         + 4 * per_layer_adapters * rank)

    def saved(self, shapes: ModelShapes, setup: Setup, work: Workload, rank: int, seq_len: int | None = None,
              output_tokens: int | None = None) -> float:
        tokens = work.batch * (seq_len or work.seq_len)
        if setup.checkpointing:
            return shapes.layers * tokens * shapes.hidden * setup.stream_bytes
        return shapes.layers * self.block(shapes, setup, rank, tokens)

    def batch(self, work: Workload) -> tuple[float, str]:
        return work.batch * 3 * 4 * work.image_size ** 2, "pixels, fp32"


TOY_ACTIVATIONS = ToyActivations()
