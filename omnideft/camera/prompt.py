"""How the target camera enters the instruction: `learned` appends the `<cam>` token (its embedding is replaced by
the CameraEncoder's output), `text` writes the 11 numbers, as the DEFT authors did, for comparison."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from omnideft.camera.record import VECTOR_FIELDS
from omnideft.camera.token import CAM_TOKEN


def camera_text(vector: Sequence[float], decimals: int = 3) -> str:
    """"f 0.625 cx 0.500 … tz 2.000": each field name followed by its value."""
    values = [f"{float(v):.{decimals}f}" for v in vector]
    values = [v[1:] if v.startswith("-") and float(v) == 0 else v for v in values]  # no "-0.000"
    return " ".join(f"{name} {v}" for name, v in zip(VECTOR_FIELDS, values))


@dataclass(frozen=True)
class CameraPrompt:
    encoding: str  # learned | text
    decimals: int = 3

    def instruction(self, instruction: str, vector: Sequence[float]) -> str:
        cam = CAM_TOKEN if self.encoding == "learned" else camera_text(vector, self.decimals)
        return f"{instruction.rstrip()} Target camera: {cam}."
