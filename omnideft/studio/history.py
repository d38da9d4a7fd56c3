"""The studio's generations: their full settings, the images they wrote, and the equivalent `omnideft generate`
command lines (one per image: image k of a run of n is `--seed seed+k`; an orbit is one `--orbit` command)."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable


@dataclass
class Settings:
    """Everything that decides the pixels, as `omnideft generate` takes it."""

    model: str
    prompt: str
    adapters: list[tuple[str, float]] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    examples: list[tuple[str, str]] = field(default_factory=list)
    negative_prompt: str | None = None  # None: OmniGen's default
    seed: int = 0
    n: int = 1
    height: int = 1024
    width: int = 1024
    steps: int = 50
    guidance: float = 2.5
    image_guidance: float = 1.6
    max_input_image_size: int = 1024
    camera: str | None = None
    orbit: tuple[str, str] | None = None
    frames: int = 24
    fps: float = 8.0
    device: str = "auto"
    dtype: str = "auto"
    family: str | None = None  # the base's family (named on the command line: a preset alone means the default)
    options: dict = field(default_factory=dict)  # the family's own settings, by FamilyOption name


@dataclass
class Generation:
    number: int
    settings: Settings
    outputs: list[Path]
    seconds: float

    @property
    def kind(self) -> str:
        return "orbit" if self.settings.orbit else "image"

    def command_lines(self) -> list[str]:
        s = self.settings
        if s.orbit:
            return [command_line(s, f"studio-{self.number:04d}.gif", s.seed)]
        name = f"studio-{self.number:04d}"
        return [command_line(s, f"{name}.png" if s.n == 1 else f"{name}-{k + 1}.png", s.seed + k) for k in range(s.n)]


def command_line(s: Settings, out: str, seed: int) -> str:
    argv = ["omnideft", "generate", "--model", s.model]
    if s.family is not None:
        argv += ["--family", s.family]
    for path, weight in s.adapters:
        argv += ["--adapter", f"{path}:{weight!r}"]
    argv += ["--prompt", s.prompt]
    for path in s.images:
        argv += ["--image", str(path)]
    for a, b in s.examples:
        argv += ["--example", f"{a}={b}"]
    if s.negative_prompt is not None:
        argv += ["--negative-prompt", s.negative_prompt]
    argv += ["--out", out, "--seed", str(seed), "--height", str(s.height), "--width", str(s.width),
             "--steps", str(s.steps), "--guidance", repr(float(s.guidance)),
             "--image-guidance", repr(float(s.image_guidance)),
             "--max-input-image-size", str(s.max_input_image_size)]
    if s.orbit:
        argv += ["--orbit", *s.orbit, "--frames", str(s.frames), "--fps", repr(float(s.fps))]
    elif s.camera:
        argv += ["--camera", s.camera]
    for name, value in s.options.items():
        argv += [f"--{name.replace('_', '-')}", *map(str, value if isinstance(value, (list, tuple)) else [value])]
    if s.device != "auto":
        argv += ["--device", s.device]
    if s.dtype != "auto":
        argv += ["--dtype", s.dtype]
    return shlex.join(argv)


def history_markdown(entries: list[Generation], label: Callable[[str], str] = str) -> str:
    """A table of the generations, newest first; `label` names an adapter path."""
    if not entries:
        return "No generations yet."
    rows = ["| # | prompt | adapters | seed | settings |", "|---|---|---|---|---|"]
    for g in reversed(entries):
        s = g.settings
        adapters = ", ".join(f"{label(p)} × {w:g}" for p, w in s.adapters) or "base"
        seeds = str(s.seed) if s.n == 1 else f"{s.seed}–{s.seed + s.n - 1}"
        prompt = s.prompt if len(s.prompt) <= 60 else s.prompt[:57] + "..."
        what = f"orbit of {s.frames} frames, " if s.orbit else ""
        rows.append(f"| {g.number} | {_cell(prompt)} | {_cell(adapters)} | {seeds} | {what}{s.width}×{s.height}, "
                    f"{s.steps} steps, guidance {s.guidance:g} / {s.image_guidance:g}, {g.seconds:.1f} s |")
    return "\n".join(rows)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")
