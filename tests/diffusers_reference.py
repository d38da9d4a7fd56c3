"""Run diffusers' own OmniGen processor/pipeline as the reference, even where torchvision is absent.

diffusers' processor uses exactly three torchvision transforms (Lambda, ToTensor, Normalize inside Compose). When
torchvision is not importable we hand it a minimal equivalent of those three, so the comparison still exercises
diffusers' tokenisation, collation, CFG and sampling code rather than being skipped.
"""

from __future__ import annotations

import types

import numpy as np
import torch


def _torchvision_shim():
    class Compose:
        def __init__(self, fs):
            self.fs = fs

        def __call__(self, x):
            for f in self.fs:
                x = f(x)
            return x

    class Lambda:
        def __init__(self, f):
            self.f = f

        def __call__(self, x):
            return self.f(x)

    class ToTensor:
        def __call__(self, pil):
            return torch.from_numpy(np.asarray(pil, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()

    class Normalize:
        def __init__(self, mean, std, inplace=False):
            self.mean = torch.tensor(mean).view(-1, 1, 1)
            self.std = torch.tensor(std).view(-1, 1, 1)

        def __call__(self, x):
            return (x - self.mean) / self.std

    return types.SimpleNamespace(Compose=Compose, Lambda=Lambda, ToTensor=ToTensor, Normalize=Normalize)


def diffusers_processor_module():
    from diffusers.pipelines.omnigen import processor_omnigen

    if not hasattr(processor_omnigen, "transforms"):
        processor_omnigen.transforms = _torchvision_shim()
    return processor_omnigen


def diffusers_pipeline_class():
    """diffusers' OmniGenPipeline, its processor importable."""
    mod = diffusers_processor_module()
    from diffusers.pipelines.omnigen import pipeline_omnigen

    if not hasattr(pipeline_omnigen, "OmniGenMultiModalProcessor"):
        pipeline_omnigen.OmniGenMultiModalProcessor = mod.OmniGenMultiModalProcessor
    return pipeline_omnigen.OmniGenPipeline


def diffusers_pipeline(components):
    return diffusers_pipeline_class()(
        transformer=components.transformer, scheduler=components.scheduler, vae=components.vae,
        tokenizer=components.tokenizer,
    )
