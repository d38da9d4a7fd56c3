"""Generation: OmniGen's CFG sampler, the Generator API, contact sheets, orbits, validation renders,
`omnideft generate`."""

from omnideft.generate.generator import Generator
from omnideft.generate.sampler import OmniGenSampler

__all__ = ["Generator", "OmniGenSampler"]
