"""The studio's state and actions, free of Gradio: the loaded base (a Generator), the adapters found, the preset
catalog, camera views, the output folder and the history. The page (app.py) turns widgets into a `Request`.

Bad start-up input (a wrong model path, an empty adapters folder, unreadable shards) does not stop the app: it is
collected in `messages` and shown on the page; generating without a model then says why in one line.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from omnideft.errors import UserError
from omnideft.families.generator import FamilyGenerator as Generator
from omnideft.families.generator import family_options
from omnideft.generate.animation import write_orbit
from omnideft.generate.cameras import requested_cameras
from omnideft.images import save_image_atomic
from omnideft.studio.adapters import AdapterEntry, check_base, find_adapters
from omnideft.studio.catalog import ShardCatalog, recipe_shard_patterns
from omnideft.studio.history import Generation, Settings
from omnideft.studio.paths import shown_path
from omnideft.studio.presets import Preset, preset_from_example

log = logging.getLogger("omnideft.studio")


@dataclass
class Request:
    """One press of Generate (or Render orbit), as the page's widgets hold it."""

    prompt: str
    query: str | None = None  # <|image_1|>
    inputs: list[str] = field(default_factory=list)  # <|image_2|>, ...
    examples: list[tuple[str | None, str | None]] = field(default_factory=list)
    adapters: list[tuple[int, float]] = field(default_factory=list)  # (index into Studio.adapters, weight)
    negative_prompt: str | None = None
    seed: int = 0
    n: int = 1
    same_as_query: bool = True
    height: int | None = None  # None: the model's default (family.defaults), as the page starts from
    width: int | None = None
    steps: int | None = None
    guidance: float | None = None
    image_guidance: float | None = None
    max_input_image_size: int = 1024
    camera: str = ""
    options: dict = field(default_factory=dict)  # the family's own settings (family.generate_options) by name


def describe_error(exc: BaseException) -> str:
    """One line for the page: a UserError as it is, anything else as its type and first line (the traceback
    goes to the server's log)."""
    if isinstance(exc, UserError):
        return str(exc)
    log.error("generation failed:\n%s", "".join(traceback.format_exception(exc)))
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"generation failed: {type(exc).__name__}: {first}"


class Studio:
    def __init__(self, model: str, adapter_roots: list[str] = (), example_shards: list[str] = (),
                 outputs: str | None = None, device: str = "auto", dtype: str = "auto", family: str = "auto"):
        self.model_name = model
        self.device, self.dtype = device, dtype
        self.messages: list[str] = []
        self.generator: Generator | None = None
        try:
            self.generator = Generator.from_pretrained(model, device=device, dtype=dtype, family=family)
        except Exception as exc:  # the page says why; the app keeps serving
            self.messages.append(f"model {model} could not be loaded: {describe_error(exc)}")
        self.adapters, problems = find_adapters(list(adapter_roots))
        self.messages += problems
        if self.generator is not None:
            rows = self.generator.embedding_rows()
            for entry in self.adapters:
                check_base(entry, model, self.generator.fingerprint, rows)
        self.catalog = ShardCatalog(list(example_shards)) if example_shards else None
        if self.catalog is not None:
            self.messages += self.catalog.problems
        self.views = self._camera_views()
        self.outputs = Path(outputs) if outputs else Path(tempfile.mkdtemp(prefix="omnideft-studio-"))
        self.outputs.mkdir(parents=True, exist_ok=True)
        self.history: list[Generation] = []
        self._preset_counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def _camera_views(self) -> dict[str, str]:
        """Views of the camera adapters' training shards (their recipe's data.shards), then of --examples."""
        views: dict[str, str] = {}
        for entry in self.adapters:
            if entry.camera and entry.usable:
                patterns = recipe_shard_patterns(entry.recipe, entry.path)
                if patterns:
                    views.update(ShardCatalog(patterns).camera_views())
        if self.catalog is not None:
            views.update(self.catalog.camera_views())
        return views

    def adapter_label(self, path: str) -> str:
        """The page's name of the adapter folder `path` (as Settings hold it)."""
        return next((a.label for a in self.adapters if shown_path(a.path) == path), path)

    @property
    def camera_adapters(self) -> list[AdapterEntry]:
        return [a for a in self.adapters if a.camera and a.usable]

    # -- actions ----------------------------------------------------------------------------------------------
    def settings(self, req: Request) -> Settings:
        """The request as `omnideft generate` settings, checked; the output size resolved."""
        if self.generator is None:
            raise UserError(f"no model is loaded ({self.messages[0]})")
        examples = []
        for i, (a, b) in enumerate(req.examples):
            if a is None and b is None:
                continue
            if a is None or b is None:
                raise UserError(f"example {i + 1} needs both images (condition and result)")
            examples.append((shown_path(a), shown_path(b)))
        images = [shown_path(p) for p in ([req.query] if req.query else []) + list(req.inputs)]
        if not images and not req.prompt.strip():
            raise UserError("write a prompt or give a query image")
        adapters = []
        for index, weight in req.adapters:
            entry = self.adapters[index]
            if not entry.usable:
                raise UserError(f"adapter {entry.label}: {entry.problem}")
            adapters.append((entry, float(weight)))
        adapters.sort(key=lambda aw: aw[0].camera is None)  # the camera conditioning comes with the first adapter
        if req.camera.strip():
            self.generator.family.refuse("camera", "camera")
        defaults = self.generator.defaults
        sized = req.same_as_query and images
        height, width = self.generator.output_size(images, None if sized or req.height is None else int(req.height),
                                                   None if sized or req.width is None else int(req.width),
                                                   int(req.max_input_image_size))
        given = {**{o.name: o.default for o in self.generator.family.generate_options}, **req.options}
        return Settings(model=self.model_name, prompt=req.prompt, adapters=[(shown_path(e.path), w)
                                                                            for e, w in adapters],
                        images=images, examples=examples, negative_prompt=req.negative_prompt, seed=int(req.seed),
                        n=int(req.n), height=height, width=width,
                        steps=int(defaults.steps if req.steps is None else req.steps),
                        guidance=float(defaults.guidance if req.guidance is None else req.guidance),
                        image_guidance=float(defaults.image_guidance if req.image_guidance is None
                                             else req.image_guidance),
                        family=self.generator.family.name,
                        options=family_options(self.generator.family, given, flags=False),
                        max_input_image_size=int(req.max_input_image_size), camera=req.camera.strip() or None,
                        device=self.device, dtype=self.dtype)

    def generate(self, req: Request, on_step: Callable[[int, int], None] | None = None) -> Generation:
        settings = self.settings(req)
        cameras = requested_cameras(settings.camera, None, None, None, 1)
        with self._lock:
            start = time.perf_counter()
            images = self._render(settings, cameras[0] if cameras else None, settings.n, on_step)
            number = len(self.history) + 1
            name = f"studio-{number:04d}"
            paths = [save_image_atomic(img, self.outputs / (f"{name}.png" if len(images) == 1 else
                                                            f"{name}-{k + 1}.png"))
                     for k, img in enumerate(images)]
            return self._record(number, settings, paths, start)

    def orbit(self, req: Request, camera_a: str, camera_b: str, frames: int, fps: float,
              on_step: Callable[[int, int], None] | None = None) -> Generation:
        """Render one frame per camera from `camera_a` to `camera_b` (one seed): GIF + strip + frames."""
        settings = self.settings(req)
        settings.n, settings.camera = 1, None
        settings.orbit, settings.frames, settings.fps = (camera_a.strip(), camera_b.strip()), int(frames), float(fps)
        if not settings.fps > 0:
            raise UserError(f"fps {fps} must be > 0")
        cameras = requested_cameras(None, None, None, list(settings.orbit), settings.frames)
        with self._lock:
            start = time.perf_counter()
            total = len(cameras) * settings.steps
            rendered = []
            for i, vector in enumerate(cameras):
                step = None if on_step is None else (lambda done, _, i=i: on_step(i * settings.steps + done, total))
                rendered += self._render(settings, vector, 1, step)
            number = len(self.history) + 1
            written = write_orbit(rendered, self.outputs / f"studio-{number:04d}.gif", settings.fps)
            return self._record(number, settings, [written["gif"], written["strip"]], start)

    def _render(self, s: Settings, camera, n: int, on_step):
        self.generator.set_adapters(s.adapters)
        return self.generator(s.prompt, s.images, s.examples, seed=s.seed, n=n, height=s.height, width=s.width,
                              steps=s.steps, guidance=s.guidance, image_guidance=s.image_guidance,
                              negative_prompt=s.negative_prompt, camera=camera,
                              max_input_image_size=s.max_input_image_size, on_step=on_step, **s.options)

    def _record(self, number: int, settings: Settings, paths: list[Path], start: float) -> Generation:
        entry = Generation(number, settings, paths, time.perf_counter() - start)
        self.history.append(entry)
        return entry

    def preset(self, task: str) -> Preset:
        """The next held-out sample of `task` (each call moves on), split into the page's widgets."""
        if self.catalog is None:
            raise UserError("no example shards: start the studio with --examples SHARDS")
        k = self._preset_counts.get(task, 0)
        self._preset_counts[task] = k + 1
        return preset_from_example(self.catalog.example(task, k), self.outputs / "presets")
