"""Predicted peak memory per GPU of one training step, by component, from the model's shapes alone: the frozen
base, the adapter, its gradients and optimizer state, the activations (the family's activation model,
shapes.activations: families/<name>/plan.py, held to within 10 % of measurement by tests/test_plan.py), the batch,
a separate prompt encoder, the VAE.

Terms no hook can measure on a CPU (backward workspace, the VAE's encode workspace, the CUDA context) are estimates
and say so in their note.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from omnideft.sizing.shapes import ModelShapes

FUSED_DEFT = ("deft", "para")  # methods trained through omnideft/adapters/fast_deft.py
GB = 1e9
GIB = 2**30
DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
# Storage bytes per linear weight of a quantised base: 1 byte (int8, fp8) plus one bf16 scale per output row
# (optimum-quanto's per-channel weight scales), 0.5 byte plus one fp32 absmax per block of 64 (bitsandbytes nf4).
QUANT_BYTES = {"int8": 1.0, "fp8": 1.0, "nf4": 0.5 + 4 / 64}
CUDA_CONTEXT = 0.75 * GIB  # CUDA context + cuBLAS workspace; an estimate, as is the allocator slack below
ALLOCATOR_SLACK = 0.05


@dataclass(frozen=True)
class Workload:
    """One step's batch: B samples, each with `text_tokens` text tokens, `input_images` condition images and one
    output image, all `image_size` pixels square (the recipe's largest bucket)."""
    batch: int = 1
    image_size: int = 1024
    input_images: int = 2
    text_tokens: int = 128
    time_tokens: int = 1  # OmniGen v1's time token in the sequence; a family fixes it (its plan_entry().workload)
    # Pixel budget of each input image by their count (the last entry beyond); empty: inputs at image_size
    input_pixels: tuple[int, ...] = ()

    @property
    def image_tokens(self) -> int:
        return (self.image_size // 16) ** 2  # 8x VAE, then 2x2 patches

    @property
    def input_size(self) -> int:
        """Side of each (square) input image: image_size, or less within its pixel budget, floored to 16 px."""
        if not self.input_pixels or not self.input_images:
            return self.image_size
        budget = self.input_pixels[min(self.input_images, len(self.input_pixels)) - 1]
        return min(self.image_size, int(budget ** 0.5)) // 16 * 16

    @property
    def input_tokens(self) -> int:
        return (self.input_size // 16) ** 2

    @property
    def seq_len(self) -> int:
        return self.text_tokens + self.input_images * self.input_tokens + self.time_tokens + self.image_tokens


@dataclass(frozen=True)
class Setup:
    """How the step runs: storage of the frozen base (fp32/bf16/fp16 or int8/fp8/nf4), compute dtype, gradient
    checkpointing, whether the VAE encodes on this GPU, DeepSpeed ZeRO stage and optimizer offload, GPUs."""
    base: str = "bf16"
    compute: str = "bf16"
    checkpointing: bool = True
    vae_on_gpu: bool = True
    zero_stage: int = 0
    offload_optimizer: bool = False
    gpus: int = 1

    @property
    def stream_bytes(self) -> int:
        """Bytes per value of the residual stream: the dtype the unquantised parameters are stored in."""
        return DTYPE_BYTES.get(self.base, DTYPE_BYTES[self.compute])


@dataclass
class Line:
    component: str
    bytes: float
    note: str = ""


@dataclass
class Plan:
    workload: Workload
    setup: Setup
    lines: list[Line] = field(default_factory=list)

    @property
    def peak(self) -> float:
        return sum(line.bytes for line in self.lines)

    def part(self, component: str) -> float:
        return sum(line.bytes for line in self.lines if line.component == component)


def base_weight_bytes(shapes: ModelShapes, setup: Setup) -> float:
    s = setup.stream_bytes
    if setup.base in QUANT_BYTES:
        linear = shapes.linear_params * QUANT_BYTES[setup.base]
        if setup.base != "nf4":
            linear += _linear_rows(shapes) * 2  # per-output-row scales
    else:
        linear = shapes.linear_params * s
    return linear + (shapes.other_params + shapes.buffers) * s


def _linear_rows(shapes: ModelShapes) -> int:
    # every block has qkv (3H rows), out (H), gate_up (2I), down (H); the embedders' few rows are negligible
    return shapes.layers * (5 * shapes.hidden + 2 * shapes.intermediate)


class Activations:
    """A family's activation model, what `plan_memory` asks (shapes.activations; families/<name>/plan.py)."""

    def saved(self, shapes: ModelShapes, setup: Setup, work: Workload, rank: int, seq_len: int | None = None,
              output_tokens: int | None = None) -> float:
        """What autograd holds at the end of the forward pass (what saved_tensors_hooks see)."""
        raise NotImplementedError

    def block(self, shapes: ModelShapes, setup: Setup, rank: int, tokens: int) -> float:
        """Bytes autograd keeps for one block's backward, for `tokens` rows."""
        raise NotImplementedError

    def batch(self, work: Workload) -> tuple[float, str]:
        """The batch's tensors on the GPU, in bytes, and what they are."""
        raise NotImplementedError


def activations_of(shapes: ModelShapes) -> Activations:
    """The activation model of the family `shapes` was counted for."""
    if shapes.activations is None:
        raise ValueError("ModelShapes without an activation model: the family's count sets `activations`")
    return shapes.activations


def plan_memory(shapes: ModelShapes, setup: Setup, work: Workload, rank: int) -> Plan:
    """The per-GPU peak of one step as lines; `rank` is the adapter rank (the size of its per-token activation)."""
    n = max(setup.gpus, 1)
    plan = Plan(work, setup)
    add = plan.lines.append
    activations = activations_of(shapes)
    c = DTYPE_BYTES[setup.compute]
    tokens = work.batch * work.seq_len
    base = base_weight_bytes(shapes, setup)
    stage = setup.zero_stage if n > 1 else 0
    add(Line("frozen base", base / (n if stage == 3 else 1),
             f"{shapes.base_params:,} params at {setup.base}" + (f", ZeRO-3 / {n}" if stage == 3 else "")))
    adapter = shapes.adapter_params * 4
    add(Line("adapter weights", adapter / (n if stage == 3 else 1), _count(shapes.adapter_params) + " fp32"))
    add(Line("adapter gradients", adapter / (n if stage >= 2 else 1), "fp32"))
    optimizer = 0.0 if setup.offload_optimizer else 2 * adapter / (n if stage >= 1 else 1)
    add(Line("optimizer state", optimizer, "AdamW m, v fp32" + (" (offloaded to CPU)" if setup.offload_optimizer
                                                                   else f", ZeRO-{stage} / {n}" if stage else "")))
    saved = activations.saved(shapes, setup, work, rank)
    add(Line("activations (saved)", saved,
             f"L={work.seq_len} tokens x B={work.batch}, " + ("checkpointed: block inputs" if setup.checkpointing
                                                              else "every block's saved tensors")))
    if setup.checkpointing:
        add(Line("activations (recompute)", activations.block(shapes, setup, rank, tokens),
                 "one block rebuilt in backward"))
    # Backward of a block holds the incoming gradient, the gradient of the MLP's 2I-wide output and of its
    # I-wide product at once; attention gradients (4 H) are smaller. An estimate, not measured by a hook.
    add(Line("backward workspace", tokens * (shapes.hidden + 3 * shapes.intermediate) * c, "estimate"))
    add(Line("batch", *activations.batch(work)))
    if shapes.prompt_encoder_params:
        # A separate frozen prompt encoder (an MLLM) is kept as loaded (fp32) beside the transformer; it
        # encodes without gradients before the forward, so only its weights overlap with the activations.
        encode = work.batch * work.text_tokens * shapes.prompt_encoder_bytes_per_token
        add(Line("prompt encoder (MLLM)", shapes.prompt_encoder_params * 4 + max(encode - saved, 0),
                 f"{shapes.prompt_encoder_params:,} params fp32 (frozen) + encode workspace (estimate)"))
    if setup.vae_on_gpu:
        # The encoder at full resolution (SDXL's and FLUX's VAE alike): its 128-channel fp32 feature maps, about
        # three alive at once (estimate); encoding runs before the forward, so only the weights overlap with the
        # activations.
        encode = 3 * 128 * work.image_size ** 2 * 4 * work.batch
        add(Line("VAE", shapes.vae_params * 4 + max(encode - saved, 0), "fp32 weights + encode workspace (estimate)"))
    else:
        add(Line("VAE", 0.0, "latents cached (data.latents): no VAE on the GPU"))
    subtotal = plan.peak
    add(Line("CUDA context + allocator", CUDA_CONTEXT + ALLOCATOR_SLACK * subtotal, "estimate"))
    return plan


def _count(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M" if n >= 1e5 else f"{n:,}"


def measured_parts(shapes: ModelShapes, setup: Setup, work: Workload, rank: int, seq_len: int,
                   output_tokens: int) -> dict:
    """The parts of the plan that `omnideft.sizing.measure` measures on the CPU: saved activations, parameters
    (base + adapter + buffers), gradients and optimizer state."""
    adapter = shapes.adapter_params * 4
    return {"saved": activations_of(shapes).saved(shapes, setup, work, rank, seq_len, output_tokens),
            "params": base_weight_bytes(shapes, setup) + adapter,
            "grads": adapter, "optimizer": 2 * adapter}
