"""Generation: in-context instruction composition, OmniGen's CFG sampler, the Generator API, contact sheets."""

from omnideft.generate.compose import compose_in_context
from omnideft.generate.generator import Generator
from omnideft.generate.sampler import OmniGenSampler

__all__ = ["compose_in_context", "Generator", "OmniGenSampler"]
