"""The forgetting gauge: while an adapter trains, how far its answers to probes the base already handles drift from
the base's own answers (drift.py: PEFT's definition), and how well it still does the probes' tasks where their
answers are known (the shape world's IoU and colour error).

The trainer (train/loop.py, train/retention.py) drives it through five calls:

  prepare(components, device, out, resuming)   main process, before the adapter is injected: the base's answers,
                  read back from `<out>/retention/base/` when a resumed run kept them for the same probes, seeds and
                  sampler settings, else rendered now on the bare base (the RNG state is restored afterwards, so
                  training draws what it would without the gauge)
  begin(out, start)   main process, once every check of the run has passed: writes the base's answers, keeps the
                  history of validations up to `start` (a resumed run) and the last adapter within the limit
  due(step, last)     at every validation: validation.every and the last step
  measure(model, components, step, out, write)   the adapted model answers the same probes with the same seeds
                  (every rank that renders calls it; `write` on the main process only, which scores and returns the
                  record logged to metrics.jsonl and TensorBoard; a grid base | adapted per validation)
  keep(step, drift) / stop(record)   main process: the adapter of `step` was saved as the last within
                  retention.max_drift / the run stopped over it

`<out>/retention.json` and `<out>/retention.png` (drift and task scores per validation) are rewritten after each
validation, so they are there at the end and while the run goes.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import replace
from pathlib import Path

import torch
from PIL import Image

from omnideft.errors import UserError
from omnideft.eval.retention.drift import DEFINITION, PEFT_SOURCE, cosines, drift, load_encoder
from omnideft.eval.retention.probes import load_probes
from omnideft.eval.retention.report import answer_grid, plot
from omnideft.families.registry import family_of_components, resolve_family
from omnideft.files import atomic_path, remove_path, write_text_atomic
from omnideft.images import load_image, save_image_atomic
from omnideft.shapes.metrics import colour_error, shape_iou

FOLDER = "retention"  # <out>/retention/: base/ (the base's answers), step-NNNNNNN.png grids, within-limit/
WITHIN_LIMIT = "within-limit"  # the trainer's copy of the adapter of the last validation within retention.max_drift


class RetentionGauge:
    def __init__(self, recipe):
        """Every check that needs no model, before anything is written: the probes (file, keys, images, the
        family's image limit), the seeds, the DINOv2 folder (loaded here, so every process fails alike)."""
        cfg = self.cfg = recipe.retention
        self.validation, self.max_image_size = recipe.validation, recipe.data.max_image_size
        family = resolve_family(recipe.model.name, recipe.model.family)
        defaults = family.defaults(recipe.model.name)
        self.size = min(defaults.size, recipe.data.max_image_size)
        self.source = cfg.probes or defaults.probes
        self.probes = load_probes(self.source, self.size)
        for i, probe in enumerate(self.probes):
            family.check_input_images(len(probe.images), f"images in retention probe {i} of {self.source}")
        if not cfg.seeds:
            raise UserError("retention.seeds is empty: give at least one sampler seed")
        self.seeds = list(dict.fromkeys(cfg.seeds))
        self.pairs = [(i, seed) for i in range(len(self.probes)) for seed in self.seeds]
        # no DINOv2 (dinov2_model null): the task scores alone, which need probes with targets
        if cfg.dinov2_model is None and not any(p.target is not None for p in self.probes):
            raise UserError(f"retention.dinov2_model is null, so the gauge measures task scores only, but the probes "
                            f"of {self.source} have no targets: name a DINOv2 model or probes with targets (shapes)")
        if cfg.dinov2_model is None and cfg.max_drift is not None:
            raise UserError("retention.max_drift needs the drift: set retention.dinov2_model (it is null)")
        self.encoder = load_encoder(cfg.dinov2_model) if cfg.dinov2_model is not None else None
        self.max_drift = cfg.max_drift
        self.base_images: list[Image.Image] | None = None
        self.rendered = False  # the base's answers were rendered by this process (begin writes them)
        self.base_embeddings: torch.Tensor | None = None
        self.base_scores: dict | None = None
        self.history: list[dict] = []
        self.kept: dict | None = None  # {"step", "drift"} of <out>/retention/within-limit/
        self.stopped: dict | None = None

    # -- the trainer's calls ---------------------------------------------------------------------------------------

    def prepare(self, components, device, out: Path, resuming: bool) -> None:
        folder = Path(out) / FOLDER / "base"
        if resuming and self._stored_fingerprint(folder) == self.fingerprint():
            self.base_images = [load_image(folder / f"{k:03d}.png") for k in range(len(self.pairs))]
            return
        with torch.random.fork_rng(devices=[device] if torch.device(device).type == "cuda" else []):
            self.base_images = self._render(components, components.transformer, device)
        self.rendered = True

    def begin(self, out: Path, start: int) -> None:
        out = Path(out)
        folder = out / FOLDER
        if self.rendered:
            with atomic_path(folder / "base", replace=True) as tmp:
                tmp.mkdir()
                for k, image in enumerate(self.base_images):
                    image.save(tmp / f"{k:03d}.png")
                (tmp / "answers.json").write_text(json.dumps({"fingerprint": self.fingerprint(),
                                                              **self._settings()}, indent=2) + "\n")
        previous = _read_json(out / "retention.json") if start and not self.rendered else {}
        self.history = [r for r in previous.get("validations", []) if r["step"] <= start]
        kept = previous.get("within_limit")
        within = self.kept_folder(out)
        if (kept and kept["step"] <= start and self.max_drift is not None and kept["drift"] <= self.max_drift
                and within.is_dir()):
            self.kept = kept
        else:  # a later step's (the run went on past its checkpoint), or a limit since lowered
            remove_path(within)
        self._score_base()

    def due(self, step: int, last: bool) -> bool:
        return last or (self.validation.every > 0 and step % self.validation.every == 0)

    def measure(self, model, components, step: int, out: Path, write: bool = True) -> dict | None:
        t0 = time.perf_counter()
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        try:
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                answers = self._render(replace(components, transformer=model), model, device)
        finally:
            model.train(was_training)
        if not write:
            return None
        record: dict = {"step": step, "drift": None}
        per_pair = [{"probe": i, "seed": seed, "drift": None} for i, seed in self.pairs]
        if self.encoder is not None:
            embeddings = self.encoder.images(answers)
            record["drift"] = drift(self.base_embeddings, embeddings)
            for pair, c in zip(per_pair, cosines(self.base_embeddings, embeddings).tolist()):
                pair["drift"] = (1 - c) / 2.0
        scores = self._scores(answers)
        if scores:
            record.update(iou=scores["iou"], colour_error=scores["colour_error"])
        grid = answer_grid(self.base_images, answers, [self.probes[i] for i, _ in self.pairs],
                           [p["drift"] for p in per_pair], step)
        save_image_atomic(grid, Path(out) / FOLDER / f"step-{step:07d}.png")
        record["seconds"] = time.perf_counter() - t0
        self.history = [r for r in self.history if r["step"] < step] + [{**record, "pairs": per_pair}]
        self.report(out)
        return {**record, "grid": str(Path(out) / FOLDER / f"step-{step:07d}.png")}

    def kept_folder(self, out: Path) -> Path:
        """Where the trainer saves the adapter of the last validation within retention.max_drift."""
        return Path(out) / FOLDER / WITHIN_LIMIT

    def keep(self, step: int, drift_value: float, out: Path) -> None:
        self.kept = {"step": step, "drift": drift_value}
        self.report(out)

    def stop(self, record: dict, out: Path) -> None:
        self.stopped = {"step": record["step"], "drift": record["drift"], "max_drift": self.max_drift,
                        "adapter_step": self.kept["step"] if self.kept else None}
        self.report(out)

    def report(self, out: Path) -> None:
        """retention.json and retention.png, rewritten whole (atomically) after every change."""
        out = Path(out)
        report = {"definition": DEFINITION, "source": PEFT_SOURCE, **self._settings(), "base": self.base_scores,
                  "max_drift": self.max_drift, "within_limit": self.kept, "stopped": self.stopped,
                  "validations": self.history}
        write_text_atomic(out / "retention.json", json.dumps(report, indent=2) + "\n")
        save_image_atomic(plot(self.history, self.max_drift), out / "retention.png")

    # -- the parts -------------------------------------------------------------------------------------------------

    def _render(self, components, transformer, device) -> list[Image.Image]:
        """Every (probe, seed) answered by `components` with `transformer` on `device`, the validation's sampler
        settings, through the family's generator (the one surface every family has)."""
        family = family_of_components(components)
        generator = family.generator(replace(components, transformer=transformer), device=str(device))
        v = self.validation
        return [generator(self.probes[i].prompt, self.probes[i].images, height=self.probes[i].height or self.size,
                          width=self.probes[i].width or self.size, steps=v.steps, guidance=v.guidance,
                          image_guidance=v.image_guidance, seed=seed, max_input_image_size=self.max_image_size)[0]
                for i, seed in self.pairs]

    def _score_base(self) -> None:
        if self.encoder is not None:
            self.base_embeddings = self.encoder.images(self.base_images)
        self.base_scores = self._scores(self.base_images)

    def _scores(self, answers: list[Image.Image]) -> dict | None:
        """Mean IoU and colour error over the (probe, seed) pairs whose probe has a target (None when none has)."""
        ious, errors = [], []
        for (i, _), answer in zip(self.pairs, answers):
            probe = self.probes[i]
            if probe.target is None:
                continue
            ious.append(shape_iou(answer, probe.target, probe.kind))
            if probe.colour is not None:
                errors.append(colour_error(answer, probe.target, probe.colour, probe.kind))
        if not ious:
            return None
        return {"iou": sum(ious) / len(ious), "colour_error": sum(errors) / len(errors) if errors else None}

    def _settings(self) -> dict:
        v = self.validation
        return {"probes": self.source, "prompts": [p.prompt for p in self.probes], "seeds": self.seeds,
                "size": self.size, "steps": v.steps, "guidance": v.guidance, "image_guidance": v.image_guidance,
                "dinov2_model": self.cfg.dinov2_model}

    def fingerprint(self) -> str:
        """What the base's answers depend on besides the base: the probes (their images' pixels too), the seeds,
        the sampler settings."""
        h = hashlib.sha256(json.dumps({k: v for k, v in self._settings().items() if k != "dinov2_model"},
                                      sort_keys=True).encode())
        for probe in self.probes:
            h.update(json.dumps([probe.height, probe.width]).encode())
            for image in probe.images:
                h.update(image.tobytes())
        return "sha256:" + h.hexdigest()

    def _stored_fingerprint(self, folder: Path) -> str | None:
        return _read_json(folder / "answers.json").get("fingerprint")


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return value if isinstance(value, dict) else {}
