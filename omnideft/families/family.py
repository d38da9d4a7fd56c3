"""The model-family interface, written down once: everything omnideft's verbs need to know about a model family.

A family is one folder `omnideft/families/<name>/` whose `__init__.py` holds a ModelFamily subclass instance, plus
one line in registry.py (or one `register_family` call). The verbs - train, generate, eval, bench, plan,
cache-latents, export, studio, demo - ask only what is below; they never name a family.

Declarations (class attributes, cheap: the registry reads them without loading torch):

  name                 the recipe's `model.family` and `--family` (given by the registry)
  title                for people: "OmniGen (v1)"
  pipeline_classes     `_class_name`s of a folder's model_index.json that mean this family
  subfolders           the folder layout that means it when model_index.json is absent
  layout               what `save` writes, for people ("diffusers layout"; export's report names it)
  presets              model names it builds itself (`tiny`: random, from the seed; `small`: shipped weights)
  hub_ids              whether a name that is neither a preset nor a local folder is a hub id it loads
  default              the family of a hub id or preset when nothing else says (one family has it)
  max_input_images     how many input images (references, example pairs counting two) one prompt may hold
  unsupported          feature -> why this family does not do it (refuse() turns it into the one-line error)
  generate_options     settings only this family's generator takes (FamilyOption: the CLI's flags are made
                       from them, help text naming the family)
  pretrain_preset      the preset `omnideft pretrain` builds from random (OmniGen (v1): `small`), or None
  export_formats       {`omnideft export --format`: (ExportClient, ...)}: the formats it writes, each with the
                       programs that load it as tested (a format no program loads for this family is not offered:
                       export refuses it in one line naming those that are; `omnideft export` names each file's
                       clients; docs/export.md's matrix is generated from it). LoRA files in family-named keys need
                       `lora_keys(fmt)`; peft-lora, diffusers and merged need nothing of the family but load/save
  peft_layout_formats  those of its export_formats written in PEFT's folder layout keyed by `lora_keys(fmt)` (its
                       original code's module names) with a config every PEFT since 0.9 reads: what a tool loading
                       the family's original model class with `PeftModel.from_pretrained` reads (OmniGen (v1):
                       `omnigen`, the official package's `merge_lora`)
  parts                where the heavy parts live: {part: ".module:attribute"}, relative to the family's package
                       and imported when first asked (`part(name)`), so a method that only hands over to its module
                       is a line of this table, not a method. The parts (the methods below that use them):
                         target_modules   function (transformer, preset, include_embedders) -> module names
                         plan_entry       function () -> PlanFamily
                         lora_keys        function (fmt, factors, transformer) -> {key: tensor}
                         training         the TrainingBackend subclass (made as cls(family, settings))
                         generator        the Generator class (FamilyGenerator subclassed)
                         components       the class of what `load` returns
                         pretraining      the module `omnideft pretrain` runs (optional)
                         convert_original function (src, out) -> folder (optional)
                       A family may write any of these methods instead (tests/families/toy does).

Methods (the heavy work; each imports what it needs when called):

  defaults(name)       GenerationDefaults for a model: native size, steps, guidance, negative prompt (a preset may
                       differ: the `small` OmniGen is a 64 px model)
  load / save          the components (`.transformer`, `.vae`, `.name` and the family's own) from a preset, a
                       local folder or a hub id; save writes them into an existing empty folder (the caller
                       makes it atomic)
  target_modules       the module names an adapter preset (`attn`, `all-linear`) or list means on its transformer
                       (families/<name>/targets.py; the verbs pass it to apply_adapter as `targets=`)
  check_adapter        one line when an adapter folder was recorded for another family (load_adapter calls it
                       when the verb passes `family=`)
  training(recipe)     the trainer's backend for this family (TrainingBackend below), after refusing in one line
                       each recipe key the family declares unsupported (model.quantize, data.latents,
                       camera.encoding, adapter.mllm_targets, cameras and too many images in validation prompts)
  training_backend(settings)  the same backend from TrainingSettings alone (eval's denoising loss, cache-latents:
                       commands with flags, not a recipe)
  generator_class()    its Generator class (families/generator.py's FamilyGenerator subclassed); `check` of the
                       class runs before a model loads
  generator(c, **kw)   a Generator (the one shared surface below) on loaded components
  owns_components(c)   whether loaded components are this family's (validation renders on the trainer's model)
  lora_keys(fmt, factors, transformer)
                       the LoRA factors {module: (B, A)} keyed as ComfyUI / kohya files (and its PEFT-layout
                       formats) name this family's modules
                       (families/<name>/export.py; adapters/export.py adds each format's suffixes)
  adapter_extras(folder)   what an adapter holds beyond the transformer's layers ("the MLLM part (...)"), or None
  merge_adapter_extras(components, folder)
                       fold those parts into `components` (a merged export); returns the report's note
  demo_preset          `omnideft demo --family NAME`: {"demo": which demo runs (omnideft.demo.DEMOS), and its
                       default settings}; None when the family has no demo (the demo refuses in one line)
  pretraining()        `omnideft pretrain` of `pretrain_preset`: a module with PretrainRecipe (its options),
                       load_pretrain_recipe(path, overrides), pretrain(recipe, out, progress) -> folder and
                       write_heldout_scores(folder, tasks, queries, seed, size, steps, guidance, image_guidance,
                       progress)
  convert_original(src, out)
                       `omnideft convert-original`: a checkpoint in the family's original, pre-diffusers format
                       written as a folder `load` reads; one line for a family without one
  plan_entry()         what `omnideft plan` counts and models for it (sizing.shapes.PlanFamily: configs by model name,
                       the meta-device count with its activation model; families/<name>/plan.py)

Where a family lacks something, `unsupported` says so and `refuse(feature, what)` raises the one line: refusals are
generated from the declaration, not written at each call site.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from omnideft.errors import UserError

# recipe key -> the feature (ModelFamily.unsupported) a family declares when its trainer does not take that key
RECIPE_FEATURES = {"model.quantize": "quantize", "data.latents": "latents", "camera.encoding": "camera",
                   "adapter.mllm_targets": "mllm_targets"}


@dataclass(frozen=True)
class GenerationDefaults:
    """What every verb starts from when a setting is left unset (generate, jobs, bench, studio, validation)."""
    size: int  # output side without --height/--width and without a query image to take the size of
    steps: int
    guidance: float  # text classifier-free guidance
    image_guidance: float  # image guidance, with input images
    # the text of the guidance's unconditional row when none is given (the studio's negative-prompt box starts from
    # it); None: the family has no default negative prompt (its generator runs the empty one)
    negative_prompt: str | None = None
    # the forgetting gauge's probes when the recipe names none (retention.probes): "shapes" for a base that was
    # pretrained on the shape world (it knows family A, with answers to score), else "generic"
    probes: str = "generic"


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


@dataclass(frozen=True)
class ExportClient:
    """A program that loads one export format of one family, as tested: the row of the client matrix
    (docs/export.md) and the line `omnideft export` prints for each file it writes."""
    name: str  # the program: "PEFT", "ComfyUI", "diffusers"
    call: str  # how it loads the export: "PeftModel.from_pretrained(transformer, folder)"
    versions: str  # what was tested: pip packages as `name==version` (the pins of requirements/constraints.txt the
    # tests run with; the conformance suite holds them to it), a program read from source by its repository and commit
    test: str  # the pytest node id that proves it (tests/...py::test_name[param]); the conformance suite collects it
    note: str = ""  # what does not work, or is not ours (e.g. a client version whose own loader fails)


@dataclass(frozen=True)
class TrainingSettings:
    """What a TrainingBackend reads: the recipe's keys (`from_recipe`) for train, a command's flags for eval and
    cache-latents."""
    model: str  # model.name: a preset, a local folder or a hub id
    model_seed: int = 0  # model.seed: the random `tiny` base
    revision: str | None = None  # model.revision (hub ids)
    max_image_size: int = 1024  # data.max_image_size
    condition_dropout: float = 0.0  # data.condition_dropout
    seed: int = 0  # train.seed: the condition-dropout decisions
    mllm_targets: str = "none"  # adapter.mllm_targets

    @classmethod
    def from_recipe(cls, recipe) -> TrainingSettings:
        return cls(recipe.model.name, recipe.model.seed, recipe.model.revision, recipe.data.max_image_size,
                   recipe.data.condition_dropout, recipe.train.seed, recipe.adapter.mllm_targets)


class TrainingBackend:
    """What the trainer (train/setup.py, train/step.py) asks a family for one run; eval's denoising loss and
    cache-latents use the same parts. `family.training(recipe)` makes one and refuses, in one line, the recipe keys
    the family does not take (before any model loads); `family.training_backend(settings)` makes one from settings.
    Every random draw comes from the generator handed in (`noise`), so a resumed run draws what an uninterrupted one
    would."""

    def __init__(self, family: ModelFamily, settings: TrainingSettings):
        self.family, self.settings = family, settings

    def load(self, device):
        """The base's components (`family.load`): the frozen parts the loss needs on `device` (a VAE that a latent
        cache may replace can stay on the CPU: the trainer moves it when it needs it); the transformer is the
        adapter's target (the engine moves it)."""
        raise NotImplementedError

    def after_adapter(self, components, spec) -> None:
        """Called once the adapter is on the transformer: extra adapter targets (OmniGen2: the MLLM's language
        layers, `adapter.mllm_targets`)."""

    def camera(self, components, spec, has_cameras):
        """The recipe's `camera` section (`spec`; `has_cameras()` says whether the shards carry camera records) made
        into the transformer's trainable camera conditioning, attached after the adapter, the quantization and
        before the optimizer; None when cameras are not used (always, for a family without them: `unsupported`
        refused every explicit camera setting before)."""
        return None

    def batch_builder(self, components, *, latents=None, camera=None):
        """The data loader's `build` (examples -> a batch dict with "tasks") with `output_size(example)`, the size
        bucket of an example. `latents`: a flow.latents.LatentCache (data.latents); `camera`: the conditioning that
        `camera()` attached or camera.conditioning.load_camera re-attached."""
        raise NotImplementedError

    def to_device(self, batch: dict, device) -> dict:
        """A built batch with the tensors the loss reads first moved to `device` (the trainer's loop, outside the
        step's timing); unchanged when the loss moves its own inputs."""
        return batch

    def loss(self, model, components, batch, noise, autocast):
        """Per-sample denoising loss [B] of `model` (the adapted transformer as the engine prepared it) on `batch`;
        every random draw from `noise` (the run's checkpointed generator); the transformer runs under `autocast()`
        (a context manager factory: the engine's, or contextlib.nullcontext)."""
        raise NotImplementedError

    def load_adapter(self, components, folder):
        """(the transformer of `components` with the saved adapter `folder` loaded, every part of it: OmniGen v1 its
        camera conditioning, OmniGen2 the MLLM part into `components.mllm`; the camera conditioning for
        `batch_builder`, or None). Eval's denoising loss of a saved adapter."""
        raise NotImplementedError

    def save_base(self, components, folder) -> None:
        """Write the base (a `tiny` run keeps its random base beside the adapter) into an empty `folder`."""
        self.family.save(components, folder)

    def cache_latents(self, components, examples, out, shards, progress=None) -> dict:
        """`omnideft cache-latents`: every image of `examples` through the VAE once into the latent cache `out`
        (flow/latents.py), for families that support `latents`; returns the cache's meta."""
        raise NotImplementedError


class Generator:
    """The one generation surface every family's generator has (generate, --jobs, the studio, bench, validation
    renders and `from omnideft import Generator` use only this). A family adds its own keyword settings
    (`family.generate_options`) to `__call__`; everything else is the same for all families.

      family, model_name, components, device, dtype   what it runs
      adapters        [(path, weight)] applied now; `set_adapters` swaps them without reading the base again
      defaults        family.defaults(model_name)
      fingerprint     the bare base's shape fingerprint (adapters are checked against it)
      merge           adapters merged (default) or one at weight 1 kept separate
      output_size(images, height, width, max_input_image_size) -> (height, width) an image will have
      embedding_rows()  rows of the prompt's embedding table a camera token may grow, or None
      __call__(prompt, images=(), examples=(), *, seed=0, n=1, height=None, width=None, steps=None,
               guidance=None, image_guidance=None, negative_prompt=None, camera=None,
               max_input_image_size=1024, progress=False, on_step=None, output_type="pil", **family_options)
               -> n images; None means the family's default (family.defaults(model_name)); image k is the image
               of seed + k; a camera where the family declares "camera" unsupported is one line
      from_pretrained(model, adapters, *, family="auto", device, dtype, merge, kv_cache, separate_cfg, offload,
               offload_kv_cache, quantize, camera_encoding): the family resolved, the settings it declares
               unsupported refused in one line (families/generator.py SETTINGS)
    """


class ModelFamily:
    name: str = ""
    title: str = ""
    pipeline_classes: tuple[str, ...] = ()
    subfolders: tuple[str, ...] = ()
    layout: str = ""
    presets: tuple[str, ...] = ("tiny",)
    hub_ids: bool = False
    default: bool = False
    max_input_images: int | None = None
    unsupported: dict[str, str] = {}
    generate_options: tuple[FamilyOption, ...] = ()
    export_formats: dict[str, tuple[ExportClient, ...]] = {}
    peft_layout_formats: tuple[str, ...] = ()
    demo_preset: dict | None = None
    pretrain_preset: str | None = None
    parts: dict[str, str] = {}

    def part(self, name: str):
        """The object `parts[name]` names (".module:attribute", or ".module" for the module), imported now."""
        if name not in self.parts:
            raise NotImplementedError(f"{self.title} declares no part {name!r} (ModelFamily.parts)")
        module, _, attribute = self.parts[name].partition(":")
        found = importlib.import_module(module, package=type(self).__module__)
        return getattr(found, attribute) if attribute else found

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

    def check_export_format(self, fmt: str) -> tuple[ExportClient, ...]:
        """The clients of `fmt`; one line naming the formats this family offers when it does not offer `fmt`."""
        if fmt not in self.export_formats:
            offered = ", ".join(self.export_formats) or "nothing"
            raise UserError(f"--format {fmt}: {self.title} exports {offered} only (no program loads its {fmt} export; "
                            "docs/export.md)")
        return self.export_formats[fmt]

    def check_adapter(self, folder, base: dict) -> None:
        """One line naming both families when the adapter at `folder` (`base`: its omnideft.json's base record)
        was trained on another family than this one."""
        from omnideft.families.registry import family_of_record

        trained_on = family_of_record(base.get("family"))
        if trained_on.name != self.name:
            raise UserError(f"adapter {folder} was trained on {trained_on.title} ({base.get('name')}); this base is "
                            f"{self.title}: an adapter works only on the family it was trained on")

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
        return self.part("target_modules")(transformer, preset, include_embedders)

    def training(self, recipe) -> TrainingBackend:
        """The trainer's backend for `recipe`, after one line for the first recipe key this family declares
        unsupported (train.memory presets may set model.quantize and data.latents: docs/memory.md)."""
        camera, mllm = recipe.camera.encoding, recipe.adapter.mllm_targets
        asked = {"model.quantize": recipe.model.quantize, "data.latents": recipe.data.latents,
                 "camera.encoding": camera not in ("auto", "none") and camera,  # auto: the data says
                 "adapter.mllm_targets": mllm != "none" and mllm}
        for key, value in asked.items():
            if value:
                self.refuse(RECIPE_FEATURES[key], f"{key}={value}")
        for i, item in enumerate(recipe.validation.prompts):
            if isinstance(item, dict):
                if "camera" in item:
                    self.refuse("camera", f"validation.prompts[{i}].camera")
                self.check_input_images(len(item.get("images", [])), f"images in validation.prompts[{i}]")
        return self.training_backend(TrainingSettings.from_recipe(recipe))

    def training_backend(self, settings: TrainingSettings) -> TrainingBackend:
        return self.part("training")(self, settings)

    def generator_class(self):
        return self.part("generator")

    def generator(self, components, **settings):
        return self.generator_class()(self, components, **settings)

    def owns_components(self, components) -> bool:
        return isinstance(components, self.part("components"))

    def lora_keys(self, fmt: str, factors: dict, transformer) -> dict:
        return self.part("lora_keys")(fmt, factors, transformer)

    def plan_entry(self):
        return self.part("plan_entry")()

    def pretraining(self):
        if "pretraining" not in self.parts:
            raise UserError(f"pretrain: {self.title} has no pretraining from random")
        return self.part("pretraining")

    def convert_original(self, src: str, out: str) -> Path:
        if "convert_original" not in self.parts:
            raise UserError(f"convert-original: {self.title} has no original checkpoint format to convert from")
        return self.part("convert_original")(src, out)

    def adapter_extras(self, folder) -> str | None:
        return None

    def merge_adapter_extras(self, components, folder) -> str:
        return ""

    def __repr__(self) -> str:
        return f"<family {self.name}>"
