"""Validation renders: fixed prompts (with their input images) at a fixed seed, so images compare across steps.

Built before any model loads, so a missing image, a bad placeholder or a bad camera string fails the run at once.
Called by the training loop as a hook on the main process with the unwrapped model; renders through the family's
generator (the one surface) on that model, without merging anything. A prompt's optional `camera` (11 numbers,
docs/camera.md) is passed when the model was trained to take one (its camera conditioning).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from omnideft.adapters.fingerprint import base_model_of
from omnideft.camera.parse import parse_camera
from omnideft.data.format.schema import tag_numbers
from omnideft.errors import UserError
from omnideft.families.registry import family_of_components
from omnideft.generate.contact_sheet import contact_sheet, stack_rows
from omnideft.images import load_image, save_image_atomic
from omnideft.prompts.tags import check_tags


class ValidationRenderer:
    def __init__(self, section, max_image_size: int):
        self.cfg = section
        self.max_image_size = max_image_size
        self.items = []
        for i, item in enumerate(section.prompts):
            if not isinstance(item, dict) or not isinstance(item.get("prompt"), str):
                raise UserError(f"validation.prompts[{i}] must be {{prompt: str, images: [paths]}}, got {item!r}")
            unknown = set(item) - {"prompt", "images", "height", "width", "camera"}
            if unknown:
                raise UserError(f"validation.prompts[{i}] has unknown keys {sorted(unknown)}")
            images = [load_image(p) for p in item.get("images", [])]
            try:
                check_tags(tag_numbers(item["prompt"]), len(images))
            except UserError as exc:
                raise UserError(f"validation.prompts[{i}]: {exc}") from None
            camera = parse_camera(str(item["camera"]), f"validation.prompts[{i}].camera") if "camera" in item \
                else None
            self.items.append((item["prompt"], images, item.get("height"), item.get("width"), camera))

    def due(self, step: int, last: bool) -> bool:
        return bool(self.items) and (last or (self.cfg.every > 0 and step % self.cfg.every == 0))

    def __call__(self, model, components, step: int, out_dir: Path, write: bool = True) -> Path | None:
        was_training = model.training
        model.eval()
        family = family_of_components(components)
        device = str(next(model.parameters()).device)
        generator = family.generator(replace(components, transformer=model), device=device)
        rows = []
        folder = out_dir / "validation" / f"step-{step:07d}"
        conditioning = getattr(base_model_of(model), "camera_conditioning", None)
        for i, (prompt, images, h, w, camera) in enumerate(self.items):
            img = generator(prompt, images, height=h or self.max_image_size, width=w or self.max_image_size,
                            steps=self.cfg.steps, guidance=self.cfg.guidance,
                            image_guidance=self.cfg.image_guidance, seed=self.cfg.seed,
                            camera=camera if conditioning is not None else None,
                            max_input_image_size=self.max_image_size)[0]
            if write:
                save_image_atomic(img, folder / f"{i:02d}.png")
            rows.append(contact_sheet([], images, img))
        model.train(was_training)
        return save_image_atomic(stack_rows(rows), folder.with_suffix(".png")) if write else None
