"""Generation: in-context instruction composition, OmniGen's CFG sampler, contact sheets."""

from omnideft.generate.compose import compose_in_context
from omnideft.generate.sampler import OmniGenSampler

__all__ = ["compose_in_context", "OmniGenSampler"]
