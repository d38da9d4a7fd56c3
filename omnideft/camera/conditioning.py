"""Camera conditioning inside diffusers' OmniGenTransformer2DModel, whose forward signature stays untouched.

`attach_camera` adds `<cam>` to the tokenizer, gives it an embedding row and registers a CameraConditioning as the
transformer's submodule `camera_conditioning` (so DDP/DeepSpeed sync it and the optimizer finds its parameters by
requires_grad). Two hooks carry the camera through the unchanged forward:

* a forward pre-hook (with kwargs) on the transformer pops the extra `camera=` keyword ([B, 11] vectors);
* a forward hook on `embed_tokens` replaces the rows of the `<cam>` token by `token_embedding + encoder(camera)`.

Rows without `<cam>` (condition dropout, negative prompt, samples without a camera) are untouched, yet the encoder
always runs, so its parameters take part in every backward (DDP without find_unused_parameters).
With `encoding: text` the module holds no parameters and installs no hooks: it only records the setting so that
the adapter folder says how to prompt it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from omnideft.adapters.folder import read_json_config
from omnideft.camera.encoder import CameraEncoder
from omnideft.camera.prompt import CameraPrompt
from omnideft.camera.record import LAYOUT, VECTOR_SIZE
from omnideft.camera.spec import ENCODINGS, CameraSpec
from omnideft.camera.token import CAM_TOKEN, add_camera_token, ensure_embedding_row, initial_row
from omnideft.errors import UserError

CONFIG_FILE = "camera.json"
WEIGHTS_FILE = "camera_encoder.safetensors"
FORMAT = "omnideft.camera/1"
ATTRIBUTE = "camera_conditioning"


class CameraConditioning(nn.Module):
    def __init__(self, spec: CameraSpec, hidden_size: int, token_id: int | None = None,
                 token_row: torch.Tensor | None = None):
        super().__init__()
        if spec.encoding not in ENCODINGS:
            raise UserError(f"camera.encoding {spec.encoding!r} is not one of {list(ENCODINGS)}")
        self.spec = spec
        self.token_id = token_id
        self.hidden_size = hidden_size
        self._camera: torch.Tensor | None = None
        self._handles: list = []
        if spec.encoding == "learned":
            self.encoder = CameraEncoder(hidden_size, spec.encoder_hidden, spec.encoder_layers, spec.fourier_bands)
            row = token_row if token_row is not None else torch.zeros(hidden_size)
            self.token_embedding = nn.Parameter(row.detach().clone().float())

    @property
    def prompt(self) -> CameraPrompt:
        return CameraPrompt(self.spec.encoding, self.spec.text_decimals)

    def forward(self, embeds: torch.Tensor, input_ids: torch.Tensor, camera: torch.Tensor | None) -> torch.Tensor:
        """[B, L, D] token embeddings -> the same with every `<cam>` row replaced by its row's camera embedding."""
        batch = input_ids.shape[0]
        if camera is None:
            camera = torch.zeros(batch, VECTOR_SIZE)
        camera = torch.as_tensor(camera, dtype=torch.float32).to(self.token_embedding.device)
        if camera.dim() == 1:  # one camera for every row (the sampler's CFG rows)
            camera = camera.expand(batch, -1)
        if camera.shape != (batch, VECTOR_SIZE):
            raise ValueError(f"camera must be [{batch}, {VECTOR_SIZE}] for {batch} prompt rows, got "
                             f"{tuple(camera.shape)}")
        rows = (self.token_embedding + self.encoder(camera)).to(embeds.dtype)
        mask = (input_ids == self.token_id).unsqueeze(-1)
        return torch.where(mask, rows[:, None, :], embeds)

    # Hooks are bound methods (not closures), so a deepcopy of the model hooks into its own copy.
    def _take_camera(self, module, args, kwargs):
        self._camera = kwargs.pop("camera", None)
        return args, kwargs

    def _drop_camera(self, module, args, output):
        self._camera = None

    def _replace_rows(self, module, args, output):
        return self(output, args[0], self._camera)

    def install_hooks(self, transformer: nn.Module) -> None:
        self.remove_hooks()
        if self.spec.encoding != "learned":
            return
        self._handles = [
            transformer.register_forward_pre_hook(self._take_camera, with_kwargs=True),
            transformer.register_forward_hook(self._drop_camera, always_call=True),
            transformer.embed_tokens.register_forward_hook(self._replace_rows),
        ]

    def remove_hooks(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def config(self) -> dict:
        return {"format": FORMAT, "encoding": self.spec.encoding, "token": CAM_TOKEN, "token_id": self.token_id,
                "hidden_size": self.hidden_size, "vector_layout": LAYOUT, "spec": asdict(self.spec)}

    def save_adapter_files(self, folder: Path, state_dict: dict | None = None) -> None:
        """Called by adapters/folder.save_adapter: camera.json (+ camera_encoder.safetensors with the encoder and
        the `<cam>` row). `state_dict` is the whole model's (gathered under ZeRO-3) when the trainer passes one."""
        folder = Path(folder)
        (folder / CONFIG_FILE).write_text(json.dumps(self.config(), indent=2) + "\n")
        if self.spec.encoding != "learned":
            return
        if state_dict is not None:
            tensors = {k.split(ATTRIBUTE + ".", 1)[1]: v for k, v in state_dict.items() if ATTRIBUTE + "." in k}
        else:
            tensors = self.state_dict()
        save_file({k: v.detach().to("cpu", torch.float32).contiguous() for k, v in tensors.items()},
                  str(folder / WEIGHTS_FILE))


def attach_camera(transformer: nn.Module, tokenizer, spec: CameraSpec, trainable: bool = True) -> CameraConditioning:
    """Add `<cam>` (learned), register `transformer.camera_conditioning` and its hooks. Call it after the adapter is
    injected (PEFT freezes everything that is not an adapter) and before the optimizer is built. Attaching is the
    decision to use cameras, so `auto` means learned here (setup_camera is where `auto` may mean none)."""
    if spec.encoding == "auto":
        spec = replace(spec, encoding="learned")
    hidden = transformer.embed_tokens.embedding_dim
    existing = getattr(transformer, ATTRIBUTE, None)
    if existing is not None:
        existing.remove_hooks()
    token_id, row = None, None
    if spec.encoding == "learned":
        token_id = add_camera_token(tokenizer)
        embedding = ensure_embedding_row(transformer, token_id)
        row = initial_row(embedding, token_id)
        with torch.no_grad():
            embedding.weight[token_id] = row.to(embedding.weight.dtype)
    cond = CameraConditioning(spec, hidden, token_id, row).to(transformer.embed_tokens.weight.device)
    cond.requires_grad_(trainable)
    setattr(transformer, ATTRIBUTE, cond)
    cond.install_hooks(transformer)
    return cond


def setup_camera(transformer: nn.Module, tokenizer, spec: CameraSpec, has_cameras) -> CameraConditioning | None:
    """The trainer's one call with the recipe's `camera` section: resolve `auto` (asks `has_cameras()`, e.g. whether
    the shards carry camera records) and attach the conditioning; None when cameras are not used."""
    encoding = spec.encoding
    if encoding == "auto":
        encoding = "learned" if has_cameras() else "none"
    if encoding == "none":
        return None
    for key, low in (("encoder_hidden", 1), ("encoder_layers", 0), ("fourier_bands", 0), ("text_decimals", 0)):
        if getattr(spec, key) < low:
            raise UserError(f"recipe key camera.{key} must be >= {low}, got {getattr(spec, key)}")
    return attach_camera(transformer, tokenizer, replace(spec, encoding=encoding))


def read_camera_config(folder: str | Path) -> dict | None:
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        return None
    return read_json_config(path, FORMAT)


def load_camera(transformer: nn.Module, tokenizer, folder: str | Path) -> CameraConditioning | None:
    """Re-attach the camera conditioning saved in an adapter folder (None when it has none). Call before
    load_adapter: a grown embedding table is part of the base shape the adapter was saved with."""
    cfg = read_camera_config(folder)
    if cfg is None:
        return None
    spec = CameraSpec(**cfg["spec"])
    cond = attach_camera(transformer, tokenizer, spec, trainable=False)
    if spec.encoding != "learned":
        return cond
    if cond.token_id != cfg["token_id"]:
        raise UserError(f"adapter {folder}: {CAM_TOKEN} has id {cfg['token_id']} in the adapter but "
                        f"{cond.token_id} in this tokenizer (another tokenizer than the one it was trained with?)")
    path = Path(folder) / WEIGHTS_FILE
    if not path.is_file():
        raise UserError(f"adapter {folder} is missing {WEIGHTS_FILE} (its camera.json says encoding learned)")
    try:
        cond.load_state_dict(load_file(str(path)), strict=True)
    except Exception as exc:  # safetensors/torch errors on truncated or mismatched files
        raise UserError(f"cannot load {path}: {str(exc).splitlines()[0]}") from None
    with torch.no_grad():
        transformer.embed_tokens.weight[cond.token_id] = cond.token_embedding.to(transformer.embed_tokens.weight.dtype)
    return cond
