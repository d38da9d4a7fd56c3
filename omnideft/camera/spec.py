"""CameraSpec: how the target camera conditions the model, and the recipe's `camera:` section (every option with
its one default, its help and its allowed values). Light to import: the recipe validates against it."""

from __future__ import annotations

from dataclasses import dataclass

from omnideft.options import option

ENCODINGS = ("learned", "text")  # what a CameraConditioning can be; the recipe's `auto` and `none` are resolved first


@dataclass
class CameraSpec:
    encoding: str = option("auto", "how the target camera conditions the model (docs/camera.md): learned = `<cam>` "
                           "token + CameraEncoder, text = the 11 numbers written into the instruction, none = ignore "
                           "cameras, auto = learned when the shards carry camera records, else none",
                           ("auto", *ENCODINGS, "none"))
    encoder_hidden: int = option(256, "CameraEncoder MLP width", bounds=">= 1")
    encoder_layers: int = option(2, "CameraEncoder hidden layers", bounds=">= 0")
    fourier_bands: int = option(4, "sin/cos frequency bands per camera feature (0 = raw features only)", bounds=">= 0")
    text_decimals: int = option(3, "decimals per number with encoding text", bounds=">= 0")
