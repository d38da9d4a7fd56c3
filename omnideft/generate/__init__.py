"""Generation: OmniGen's CFG sampler, contact sheets, orbits, validation renders, `omnideft generate`."""

from omnideft.generate.sampler import OmniGenSampler

__all__ = ["OmniGenSampler"]
