"""What a score table was made with (command line, library versions, device, time); the identity check that lets a
run resume only into its own output folder is omnideft/claims.py (re-exported here)."""

from __future__ import annotations

import platform
import shlex
import sys
import time
from importlib.metadata import PackageNotFoundError, version

from omnideft.claims import claim_output  # noqa: F401  (moved below the verbs: generate's jobs use it too)

PACKAGES = ("omnideft", "torch", "transformers", "diffusers", "peft", "torchmetrics", "opencv-python-headless",
            "numpy", "pillow")


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in PACKAGES:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def command_line(argv: list[str] | None) -> str:
    return shlex.join(["omnideft", *(sys.argv[1:] if argv is None else argv)])


def provenance(argv: list[str] | None, device: str) -> dict:
    return {"command": command_line(argv), "versions": library_versions(), "device": device,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
