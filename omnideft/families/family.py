"""The model-family interface, written down once: everything omnideft's verbs need to know about a model family.

A family is one folder `omnideft/families/<name>/` whose `__init__.py` holds a ModelFamily subclass instance, plus
one line in registry.py (or one `register_family` call). The verbs - train, generate, eval, bench, plan,
cache-latents, export, studio, demo - ask only what is below; they never name a family.

Declarations (class attributes, cheap: the registry reads them without loading torch):

  name                 the recipe's `model.family` and `--family` (given by the registry)
  title                for people: "OmniGen (v1)"
  pipeline_classes     `_class_name`s of a folder's model_index.json that mean this family
  subfolders           the folder layout that means it when model_index.json is absent
  presets              model names it builds itself (`tiny`: random, from the seed; `small`: shipped weights)
  hub_ids              whether a name that is neither a preset nor a local folder is a hub id it loads
  default              the family of a hub id or preset when nothing else says (one family has it)
  max_input_images     how many input images (references, example pairs counting two) one prompt may hold
  unsupported          feature -> why this family does not do it (refuse() turns it into the one-line error)
  generate_options     settings only this family's generator takes (FamilyOption: the CLI's flags are made
                       from them, help text naming the family)

Methods (the heavy work; each imports what it needs when called):

  defaults(name)       GenerationDefaults for a model: native size, steps, guidance (a preset may differ: the
                       `small` OmniGen is a 64 px model)
  load / save          the components (`.transformer`, `.vae`, `.name` and the family's own) from a preset, a
                       local folder or a hub id; save writes them into an existing empty folder (the caller
                       makes it atomic)
  target_modules       the module names an adapter preset (`attn`, `all-linear`) or list means on its transformer
  training(recipe)     the trainer's backend for this family (TrainingBackend below)
  generator(...)       a Generator (the one shared surface below) on loaded components
  lora_keys(fmt)       how exported LoRA files name a module of its transformer, per export format it offers
  demo_preset          the `omnideft demo` settings for this family, or None

Where a family lacks something, `unsupported` says so and `refuse(feature, what)` raises the one line: refusals are
generated from the declaration, not written at each call site.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from omnideft.errors import UserError


@dataclass(frozen=True)
class GenerationDefaults:
    """What every verb starts from when a setting is left unset (generate, jobs, bench, studio, validation)."""
    size: int  # output side without --height/--width and without a query image to take the size of
    steps: int
    guidance: float  # text classifier-free guidance
    image_guidance: float  # image guidance, with input images


@dataclass(frozen=True)
class FamilyOption:
    """A generation setting only one family's generator takes, e.g. OmniGen2's `scheduler`. The CLI adds
    `--<flag>` from it (help text names the family), jobs lines and the studio read it by `name`."""
    name: str  # the Generator keyword
    flag: str  # the CLI flag, without "--"
    default: Any
    help: str
    type: Callable = str
    choices: tuple | None = None
    nargs: int | None = None
    metavar: str | tuple | None = None  # the CLI's name(s) of the value(s), e.g. ("START", "END")


class TrainingBackend:
    """What the trainer (train/setup.py, train/step.py) asks a family for one run; eval's denoising loss and
    cache-latents use the same parts. `family.training(recipe)` makes one and refuses, in one line, the recipe keys
    the family does not take (before any model loads)."""

    def load(self, device):
        """The base's components: frozen parts (VAE, prompt encoder) on `device`; the transformer is the adapter's
        target (the engine moves it)."""
        raise NotImplementedError

    def after_adapter(self, components, spec) -> None:
        """Called once the adapter is on the transformer: extra adapter targets (OmniGen2: the MLLM's language
        layers, `adapter.mllm_targets`)."""

    def batch_builder(self, components, *, latents=None, camera=None):
        """The data loader's `build` (examples -> a batch dict with "tasks") with `output_size(example)`, the size
        bucket of an example."""
        raise NotImplementedError

    def loss(self, model, components, batch, noise, autocast):
        """Per-sample denoising loss [B] of `model` (the adapted transformer as the engine prepared it) on `batch`;
        every random draw from `noise` (the run's checkpointed generator); the transformer runs under `autocast`."""
        raise NotImplementedError

    def save_base(self, components, folder) -> None:
        """Write the base (a `tiny` run keeps its random base beside the adapter) into an empty `folder`."""
        raise NotImplementedError


class Generator:
    """The one generation surface every family's generator has (generate, --jobs, the studio, bench, validation
    renders and `from omnideft import Generator` use only this). A family adds its own keyword settings
    (`family.generate_options`) to `__call__`; everything else is the same for all families.

      family, model_name, components, device, dtype   what it runs
      adapters        [(path, weight)] applied now; `set_adapters` swaps them without reading the base again
      fingerprint     the bare base's shape fingerprint (adapters are checked against it)
      output_size(images, height, width, max_input_image_size) -> (height, width) an image will have
      __call__(prompt, images=(), examples=(), *, seed=0, n=1, height=None, width=None, steps=None,
               guidance=None, image_guidance=None, negative_prompt=None, max_input_image_size=1024,
               progress=False, on_step=None, output_type="pil", **family_options) -> n images;
               None means the family's default (family.defaults(model_name)); image k is the image of seed + k
    """


class ModelFamily:
    name: str = ""
    title: str = ""
    pipeline_classes: tuple[str, ...] = ()
    subfolders: tuple[str, ...] = ()
    presets: tuple[str, ...] = ("tiny",)
    hub_ids: bool = False
    default: bool = False
    max_input_images: int | None = None
    unsupported: dict[str, str] = {}
    generate_options: tuple[FamilyOption, ...] = ()
    demo_preset: dict | None = None

    # -- detection -------------------------------------------------------------------------------------------------

    def owns_folder(self, folder: Path) -> bool:
        """Whether a local folder holds this family: its model_index.json names one of `pipeline_classes`, or
        (without one) it has every folder of `subfolders`."""
        index = folder / "model_index.json"
        if index.is_file():
            try:
                name = json.loads(index.read_text()).get("_class_name")
            except (json.JSONDecodeError, AttributeError, UnicodeDecodeError):
                raise UserError(f"{index} is not a JSON object") from None
            return name in self.pipeline_classes
        return bool(self.subfolders) and all((folder / sub).is_dir() for sub in self.subfolders)

    # -- refusals --------------------------------------------------------------------------------------------------

    def supports(self, feature: str) -> bool:
        return feature not in self.unsupported

    def refuse(self, feature: str, what: str) -> None:
        """One line when this family does not do `feature`; `what` names what the user asked for (a flag, a recipe
        key and its value)."""
        if feature in self.unsupported:
            raise UserError(f"{what}: {self.title} {self.unsupported[feature]}")

    def check_input_images(self, count: int, what: str = "input images") -> None:
        if self.max_input_images is not None and count > self.max_input_images:
            raise UserError(f"{count} {what}; {self.title} takes at most {self.max_input_images}")

    # -- the heavy parts (each family implements them) --------------------------------------------------------------

    def defaults(self, name: str) -> GenerationDefaults:
        raise NotImplementedError

    def load(self, name: str, *, dtype=None, seed: int = 0, revision: str | None = None):
        raise NotImplementedError

    def save(self, components, folder: Path) -> None:
        raise NotImplementedError

    def target_modules(self, transformer, preset: str | list[str], include_embedders: bool = False) -> list[str]:
        raise NotImplementedError

    def training(self, recipe):
        raise NotImplementedError

    def generator(self, components, **settings):
        raise NotImplementedError

    def lora_keys(self, fmt: str):
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<family {self.name}>"
