"""Generation: OmniGen's CFG sampler (with the condition KV cache), the Generator API, batch jobs, contact sheets,
orbits, validation renders, `omnideft generate` (docs/generate.md)."""

from omnideft.generate.generator import Generator
from omnideft.generate.sampler import OmniGenSampler

__all__ = ["Generator", "OmniGenSampler"]
