"""omnideft: DEFT adapters for OmniGen — shards, training, in-context generation, evaluation.

Importing the package is cheap: heavy modules (torch, diffusers) load only in the rooms that need them, and
`from omnideft import Generator` (the generation API, docs/generate.md) loads the families' generation surface on
first use.
"""

__version__ = "0.1.0"
__all__ = ["Generator"]


def __getattr__(name: str):
    if name == "Generator":
        from omnideft.families.generator import FamilyGenerator as Generator

        return Generator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
